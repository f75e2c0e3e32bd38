//! The tiled attention against an independent reference: a direct f64 softmax over `allows`, per head and
//! row, with no tiles. Small block and tile sizes cut the diagonal, the window edge and the groups in
//! every way; the recorders fed tile by tile must agree with the same recorders fed whole rows.

use super::*;
use crate::capture::{CaptureSpec, HeadStats, WeightBuffer, WeightsDtype};
use crate::rng::uniform_values as values;
use crate::slots::SlotKind;

struct Problem {
    q: Vec<f32>,
    keys: Vec<f32>,
    values: Vec<f32>,
    slots: Vec<SlotInfo>,
    shape: AttentionShape,
}

/// `t` slots with runs of groups (some rows generation steps), GQA 6 / 2 heads of `hd`.
fn problem(t: usize, hd: usize) -> Problem {
    let (n_heads, n_kv_heads) = (6, 2);
    let slots = (0..t)
        .map(|i| {
            // Positions repeat (parallel sets) and, past slot 40, step back now and then (explicit
            // positions), so tiles come with both monotone and non-monotone key positions.
            let dip = if i > 40 && i % 9 == 4 { 5 } else { 0 };
            let mut s = SlotInfo::prompt(0, (i as i64) - (i as i64 / 7) - dip, -1);
            if i % 13 >= 5 {
                s.group = (i / 4) as i32 % 5;
            }
            if i > t / 2 {
                s.step = (i - t / 2) as u32;
                s.kind = if s.group >= 0 {
                    SlotKind::Parallel
                } else {
                    SlotKind::Generated
                };
            }
            s
        })
        .collect();
    Problem {
        // Scores of a few units, so the softmax is far from uniform.
        q: values(t * n_heads * hd, 1)
            .iter()
            .map(|v| v * 3.0)
            .collect(),
        keys: values(t * n_kv_heads * hd, 2),
        values: values(t * n_kv_heads * hd, 3),
        slots,
        shape: AttentionShape {
            n_heads,
            n_kv_heads,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
        },
    }
}

impl Problem {
    fn input<'a>(&'a self, mask: AttentionMask<'a>, q_start: usize) -> AttentionInput<'a> {
        let width = self.shape.q_dim();
        AttentionInput {
            q: &self.q[q_start * width..],
            keys: &self.keys,
            values: &self.values,
            q_start,
            n_new: self.slots.len() - q_start,
            shape: self.shape,
            mask,
        }
    }

    /// Direct f64 attention: outputs `[n_new, q_dim]` and probabilities per (head, new row, key).
    fn reference(&self, inp: &AttentionInput) -> (Vec<f64>, Vec<Vec<f64>>) {
        let AttentionShape {
            n_heads,
            n_kv_heads,
            head_dim: hd,
            scale,
        } = self.shape;
        let kv_dim = n_kv_heads * hd;
        let mut out = vec![0.0; inp.n_new * n_heads * hd];
        let mut probs = Vec::new();
        for h in 0..n_heads {
            let kvh = h / (n_heads / n_kv_heads);
            for i in 0..inp.n_new {
                let q = inp.q_start + i;
                let qv = &inp.q[i * n_heads * hd + h * hd..][..hd];
                let s: Vec<f64> = (0..=q)
                    .map(|k| {
                        let kv = &self.keys[k * kv_dim + kvh * hd..][..hd];
                        let dot: f64 = qv.iter().zip(kv).map(|(a, b)| *a as f64 * *b as f64).sum();
                        dot * scale as f64
                    })
                    .collect();
                let visible = |k: usize| inp.mask.allows(q, k);
                let m = (0..=q)
                    .filter(|&k| visible(k))
                    .map(|k| s[k])
                    .fold(f64::MIN, f64::max);
                let z: f64 = (0..=q)
                    .filter(|&k| visible(k))
                    .map(|k| (s[k] - m).exp())
                    .sum();
                let p: Vec<f64> = (0..=q)
                    .map(|k| {
                        if visible(k) {
                            (s[k] - m).exp() / z
                        } else {
                            0.0
                        }
                    })
                    .collect();
                for (k, &pk) in p.iter().enumerate() {
                    let v = &self.values[k * kv_dim + kvh * hd..][..hd];
                    for d in 0..hd {
                        out[i * n_heads * hd + h * hd + d] += pk * v[d] as f64;
                    }
                }
                probs.push(p);
            }
        }
        (out, probs)
    }
}

fn spec() -> CaptureSpec {
    CaptureSpec {
        stats: true,
        weights: true,
        weights_dtype: WeightsDtype::F32,
        ..CaptureSpec::default()
    }
}

/// Runs the tiled attention with recorders; returns outputs and each head's weights and statistics.
fn run(inp: &AttentionInput, sizes: TileSizes) -> (Vec<f32>, Vec<(Vec<f32>, HeadStats)>) {
    let t = inp.mask.slots.len();
    let mut recs: Vec<HeadRecorder> = (0..inp.shape.n_heads)
        .map(|_| HeadRecorder::new(&spec(), t))
        .collect();
    let mut out = vec![0.0; inp.n_new * inp.shape.q_dim()];
    attention_tiled(
        inp,
        &mut out,
        Some(&mut recs),
        &mut AttentionScratch::default(),
        sizes,
    );
    let heads = recs
        .into_iter()
        .map(|r| match r.finish(t) {
            (Some(WeightBuffer::F32(w)), Some(s)) => (w, s),
            _ => panic!("weights and stats"),
        })
        .collect();
    (out, heads)
}

fn masks(slots: &[SlotInfo]) -> Vec<AttentionMask<'_>> {
    let mut v = Vec::new();
    for visibility in [Visibility::Visible, Visibility::Isolated] {
        for sliding_window in [None, Some(1), Some(9), Some(40)] {
            v.push(AttentionMask {
                slots,
                visibility,
                sliding_window,
            });
        }
    }
    v
}

#[test]
fn tiled_outputs_and_probabilities_match_the_direct_softmax() {
    let p = problem(75, 16);
    for mask in masks(&p.slots) {
        for q_start in [0, 40, 74] {
            let inp = p.input(mask, q_start);
            let (want_out, want_p) = p.reference(&inp);
            for sizes in [
                TileSizes { q: 1, k: 1 },
                TileSizes { q: 7, k: 5 },
                TileSizes { q: 16, k: 32 },
                TILE_SIZES,
            ] {
                let ctx = format!("{mask:?} q_start {q_start} {sizes:?}");
                let mut plain = vec![0.0; want_out.len()];
                let mut scratch = AttentionScratch::default();
                attention_tiled(&inp, &mut plain, None, &mut scratch, sizes);
                let (recorded, heads) = run(&inp, sizes);
                for ((a, b), want) in plain.iter().zip(&recorded).zip(&want_out) {
                    assert!(
                        (*a as f64 - want).abs() < 2e-6,
                        "online {a} vs {want}: {ctx}"
                    );
                    assert!(
                        (*b as f64 - want).abs() < 2e-6,
                        "recorded {b} vs {want}: {ctx}"
                    );
                }
                let t = p.slots.len();
                for (h, (w, _)) in heads.iter().enumerate() {
                    for i in 0..inp.n_new {
                        let q = q_start + i;
                        let want = &want_p[h * inp.n_new + i];
                        for k in 0..t {
                            let pk = w[q * t + k] as f64;
                            let wk = want.get(k).copied().unwrap_or(0.0);
                            assert!(
                                (pk - wk).abs() < 1e-6,
                                "p[{h}][{q}][{k}] {pk} vs {wk}: {ctx}"
                            );
                            if wk == 0.0 {
                                assert_eq!(pk, 0.0, "hidden key {k} of row {q}: {ctx}");
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn recorders_fed_by_tile_agree_with_recorders_fed_whole_rows() {
    let p = problem(90, 8);
    for mask in masks(&p.slots) {
        let inp = p.input(mask, 0);
        // One row per block and every key in one tile: the recorder sees whole rows.
        let (_, whole) = run(&inp, TileSizes { q: 1, k: 1 << 20 });
        let (_, tiled) = run(&inp, TileSizes { q: 8, k: 6 });
        for ((_, a), (_, b)) in whole.iter().zip(&tiled) {
            let ctx = format!("{mask:?}");
            for (x, y) in a.rows.iter().zip(&b.rows) {
                assert_eq!(x.argmax, y.argmax, "{ctx}");
                for (u, v) in [
                    (x.entropy, y.entropy),
                    (x.max_weight, y.max_weight),
                    (x.sink_mass, y.sink_mass),
                    (x.prev_mass, y.prev_mass),
                    (x.self_mass, y.self_mass),
                    (x.group_mass.unwrap_or(-1.0), y.group_mass.unwrap_or(-1.0)),
                ] {
                    assert!((u - v).abs() < 1e-6, "{u} vs {v}: {ctx}");
                }
            }
            let close = |u: &[f64], v: &[f64]| u.iter().zip(v).all(|(u, v)| (u - v).abs() < 1e-6);
            assert!(close(&a.received_sum, &b.received_sum), "{ctx}");
            assert!(close(&a.received_decode, &b.received_decode), "{ctx}");
            assert!(close(&a.distance_mass, &b.distance_mass), "{ctx}");
            assert_eq!(a.steps.len(), b.steps.len(), "{ctx}");
            for (x, y) in a.steps.iter().zip(&b.steps) {
                assert_eq!(
                    (x.slot, x.n_prompt, x.n_generated, x.n_parallel),
                    (y.slot, y.n_prompt, y.n_generated, y.n_parallel)
                );
                assert!(
                    (x.mass_prompt - y.mass_prompt).abs() < 1e-6
                        && (x.mass_parallel - y.mass_parallel).abs() < 1e-6
                );
            }
            assert_eq!(a.step_groups.len(), b.step_groups.len(), "{ctx}");
            for (x, y) in a.step_groups.iter().zip(&b.step_groups) {
                assert_eq!(
                    (x.slot, x.group, x.n_slots),
                    (y.slot, y.group, y.n_slots),
                    "{ctx}"
                );
                assert!((x.mass - y.mass).abs() < 1e-6, "{ctx}");
            }
        }
    }
}
