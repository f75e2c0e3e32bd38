//! The second pass and decode attention against the CPU twin on a real GPU:
//!   * attention_probs.cu `attn_probs_f32_w<f32|f16>` (lse from the SIMT f32 prefill) vs the recorder's weight
//!     rows, sink / prev / self / group mass, received sums and distance buckets;
//!   * attention_decode.cu split-K partial + combine vs `attention::attention` with q_start = n_keys − n_q,
//!     with fixed splits and with the engine's plan.
//!
//! Without a CUDA device every test prints `SKIP: no CUDA device (...)` and passes, unless
//! `ATTNSCOPE_REQUIRE_GPU=1`. `ATTNSCOPE_GPU_SMALL=1` (compute-sanitizer runs) shrinks the grids.

mod gpu_common;

use attnscope_core::capture::{CaptureSpec, RowStats, WeightBuffer, WeightsDtype};
use gpu_common::attention::{
    F32_STATS, Path, Problem, Reference, RowOutputs, Shape, Vis, decode_slots, rounded_out_tol,
    run_prefill, shape, slots,
};
use gpu_common::runs::{
    ProbsCase, ProbsOut, run_decode, run_decode_batch, run_decode_engine, run_probs,
};
use gpu_common::{Elem, Gpu, assert_close, gpu_or_skip, max_rel_err, round_to, small};

// ---------------------------------------------------------------------------------------------------------
// attention_probs.cu
// ---------------------------------------------------------------------------------------------------------

#[test]
fn attention_probs_match_recorder() {
    let Some(gpu) = gpu_or_skip() else { return };
    for c in &probs_cases() {
        check_probs(&gpu, c);
    }
}

fn probs_cases() -> Vec<ProbsCase> {
    let w32 = Some(WeightsDtype::F32);
    let mut cases = vec![
        // Several z-blocks of 128 keys accumulate received / distance / group mass.
        ProbsCase {
            s: shape(300, 0, 64, (4, 2), (false, None)),
            decode_q: 0,
            heads: &[0, 2],
            key_split: 128,
            weights: w32,
        },
        // Chunked, isolated, windowed; heads out of order; weights written from row q_start of [T, T].
        ProbsCase {
            s: shape(300, 100, 64, (4, 2), (true, Some(40))),
            decode_q: 0,
            heads: &[3, 1],
            key_split: 128,
            weights: w32,
        },
        // f16 weights, every head.
        ProbsCase {
            s: shape(200, 0, 64, (4, 2), (true, None)),
            decode_q: 0,
            heads: &[0, 1, 2, 3],
            key_split: 128,
            weights: Some(WeightsDtype::F16),
        },
        // Statistics only: blocks cut their keys to the causal bound and the window.
        ProbsCase {
            s: shape(1000, 0, 80, (4, 4), (false, Some(100))),
            decode_q: 0,
            heads: &[1],
            key_split: 128,
            weights: None,
        },
    ];
    if !small() {
        cases.push(ProbsCase {
            s: shape(1000, 0, 128, (8, 1), (true, None)),
            decode_q: 0,
            heads: &[0, 5, 7],
            key_split: 256,
            weights: None,
        });
        // Decode rows (a parallel set of 8) against a long cache, spread over blocks of 1024 keys.
        cases.push(ProbsCase {
            s: shape(4133, 4125, 64, (4, 2), (true, None)),
            decode_q: 8,
            heads: &[0, 2],
            key_split: 1024,
            weights: w32,
        });
    }
    cases
}

/// The problem and the capture spec (weights when the case asks for them, statistics always) of a probs case.
fn probs_problem(c: &ProbsCase) -> (Problem, CaptureSpec) {
    let s = c.s;
    let slot_info = if c.decode_q > 0 {
        decode_slots(s.n_keys, c.decode_q)
    } else {
        slots(s.n_keys)
    };
    let spec = CaptureSpec {
        stats: true,
        weights: c.weights.is_some(),
        weights_dtype: c.weights.unwrap_or(WeightsDtype::F32),
        layers: None,
        heads: None,
    };
    (Problem::new(s, slot_info, |x| x.to_vec()), spec)
}

fn check_probs(gpu: &Gpu, c: &ProbsCase) {
    let (p, spec) = probs_problem(c);
    let r = p.reference(&spec);
    // First pass on the GPU for lse (checked here too, so a probs failure is not a prefill failure).
    let first = run_prefill::<f32>(gpu, Path::Simt, &p, false);
    let label = format!("probs {:?} heads {:?} split {}", c.s, c.heads, c.key_split);
    p.check_stats(&label, &r, &first, &F32_STATS);
    let got = run_probs(gpu, &p, c, &first.lse);
    compare_probs(&label, &p, &r, c, &got);
}

/// Compares a probs pass with the CPU recorders of the selected heads.
fn compare_probs(label: &str, p: &Problem, r: &Reference, c: &ProbsCase, got: &ProbsOut) {
    let (n_keys, n_new, q_start) = (p.s.n_keys, p.n_new, p.s.q_start);
    let tt = n_keys * n_keys;
    for (si, &h) in c.heads.iter().enumerate() {
        let h = h as usize;
        let st = r.stats[h].as_ref().expect("stats recorded");
        let lab = format!("{label} head {h}");
        let got_w = || &got.weights[si * tt..(si + 1) * tt];
        match (c.weights, &r.weights[h]) {
            (Some(WeightsDtype::F32), Some(WeightBuffer::F32(want))) => {
                assert_close(&format!("{lab} weights"), got_w(), want, |_| 1e-5);
            }
            (Some(WeightsDtype::F16), Some(WeightBuffer::F16(want))) => {
                let want: Vec<f32> = want.iter().map(|x| x.to_f32()).collect();
                // Nearly equal f32 probabilities may round to neighbouring f16 values: one ulp ≤ 2^-10·|x|.
                assert_close(&format!("{lab} f16 weights"), got_w(), &want, |w| {
                    1e-5 + w.abs() / 1024.0
                });
            }
            (None, None) => {}
            _ => panic!("{lab}: weights dtype mismatch"),
        }
        let rows = &st.rows[q_start..];
        let sel = |all: &[f32]| all[si * n_new..(si + 1) * n_new].to_vec();
        let want = |f: fn(&RowStats) -> f32| rows.iter().map(f).collect::<Vec<_>>();
        let abs = |t: f32| move |_: f32| t;
        assert_close(
            &format!("{lab} sink"),
            &sel(&got.sink),
            &want(|x| x.sink_mass),
            abs(1e-5),
        );
        assert_close(
            &format!("{lab} prev"),
            &sel(&got.prev),
            &want(|x| x.prev_mass),
            abs(1e-5),
        );
        assert_close(
            &format!("{lab} self"),
            &sel(&got.self_mass),
            &want(|x| x.self_mass),
            abs(1e-5),
        );
        // No group: the CPU says None and the kernel leaves the zero the host wrote.
        let want_group = want(|x| x.group_mass.unwrap_or(0.0));
        assert_close(
            &format!("{lab} group"),
            &sel(&got.group_mass),
            &want_group,
            abs(2e-5),
        );
        let stride = got.recv_stride;
        let recv = &got.received[si * stride..(si + 1) * stride];
        let as_f32 = |x: &[f64]| x.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let rel = |w: f32| 1e-5 * (1.0 + w.abs());
        let want_recv = as_f32(&st.received_sum);
        assert_close(
            &format!("{lab} received"),
            &as_f32(&recv[..n_keys]),
            &want_recv,
            rel,
        );
        assert!(
            recv[n_keys..].iter().all(|&x| x == 0.0),
            "{lab}: received written past n_keys"
        );
        let dist = &got.distance[si * 65..(si + 1) * 65];
        assert_close(
            &format!("{lab} distance"),
            &as_f32(dist),
            &as_f32(&st.distance_mass),
            rel,
        );
        // Every row's mass is 1: the buckets sum to the number of rows.
        let total: f64 = dist.iter().sum();
        assert!(
            (total - n_new as f64).abs() < 1e-3 * n_new as f64,
            "{lab}: distance mass {total}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// attention_decode.cu
// ---------------------------------------------------------------------------------------------------------

fn check_decode<E: Elem>(gpu: &Gpu, s: Shape, split_len: usize) {
    let p = Problem::new(
        s,
        decode_slots(s.n_keys, s.n_keys - s.q_start),
        round_to::<E>,
    );
    let r = p.reference(&CaptureSpec::default());
    let got = run_decode::<E>(gpu, &p, split_len);
    compare_decode::<E>(
        &format!("decode {} {s:?} split {split_len}", E::SUFFIX),
        &p,
        &r,
        &got,
    );
}

/// f32: max relative error 1e-5 (as the SIMT prefill); 16-bit outputs: `rounded_out_tol` (P stays f32).
fn compare_decode<E: Elem>(label: &str, p: &Problem, r: &Reference, got: &RowOutputs) {
    if E::UNIT == 0.0 {
        let err = max_rel_err(&got.out, &r.out);
        assert!(err < 1e-5, "{label}: output error {err}");
    } else {
        assert_close(label, &got.out, &r.out, rounded_out_tol::<E>);
    }
    p.check_stats(label, r, got, &F32_STATS);
}

/// (shape with q_start = n_keys − n_q, split_len, element type)
fn decode_cases() -> Vec<(Shape, usize, &'static str)> {
    let n_keys: &[usize] = if small() {
        &[8, 300]
    } else {
        &[8, 256, 1000, 4096 + 37]
    };
    let mut cases = Vec::new();
    for hd in [64, 128] {
        for heads in [(4, 4), (8, 2)] {
            for &t in n_keys {
                for n_q in [1, 3, 8] {
                    cases.push((shape(t, t - n_q, hd, heads, (true, None)), 256, "f32"));
                }
                // Parallel rows that see each other (causally).
                cases.push((shape(t, t - 8, hd, heads, (false, None)), 256, "f32"));
            }
        }
    }
    let t = *n_keys.last().expect("sizes");
    // Sliding window: whole splits see nothing (m = −inf, argmax −1) and the combine skips them.
    cases.push((shape(t, t - 8, 64, (4, 2), (true, Some(300))), 256, "f32"));
    cases.push((shape(t, t - 3, 80, (6, 1), (false, Some(200))), 128, "f32"));
    cases.push((shape(t, t - 3, 256, (4, 2), (true, None)), 256, "f32"));
    for n_q in [1, 8] {
        cases.push((shape(t, t - n_q, 128, (8, 2), (true, None)), 256, "bf16"));
    }
    cases.push((shape(t, t - 3, 64, (4, 2), (true, None)), 256, "f16"));
    cases
}

#[test]
fn attention_decode_matches_cpu() {
    let Some(gpu) = gpu_or_skip() else { return };
    for (s, split, dtype) in decode_cases() {
        match dtype {
            "f32" => check_decode::<f32>(&gpu, s, split),
            "bf16" => check_decode::<half::bf16>(&gpu, s, split),
            _ => check_decode::<half::f16>(&gpu, s, split),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// attention_decode.cu with the engine's plan (issue #10, capture cost): splits chosen from the context
// length and the SM count, one block per kv head for all its query heads (GQA), partials sized once for
// the cache capacity.
// ---------------------------------------------------------------------------------------------------------

/// (shape with q_start = n_keys − n_q, element type, cache capacity ≥ n_keys)
fn decode_engine_cases() -> Vec<(Shape, &'static str, usize)> {
    let ts: &[usize] = if small() {
        &[1, 7, 64]
    } else {
        &[1, 7, 64, 512, 4096 + 37]
    };
    let mut cases = Vec::new();
    // n_heads / n_kv_heads = 1, 4 and 8.
    for heads in [(4, 4), (8, 2), (16, 2)] {
        for hd in [64, 128] {
            for &t in ts {
                for n_q in [1, 3, 8].into_iter().filter(|&n| n <= t) {
                    cases.push((shape(t, t - n_q, hd, heads, (true, None)), "f32", t));
                }
                if t >= 8 {
                    // Parallel rows that see each other; a capacity larger than the context.
                    cases.push((shape(t, t - 8, hd, heads, (false, None)), "f32", 2 * t));
                }
            }
        }
    }
    let t = *ts.last().expect("sizes");
    cases.push((shape(t, t - 8, 64, (8, 2), (true, Some(300))), "f32", t));
    cases.push((shape(t, t - 3, 256, (16, 2), (true, None)), "f32", t));
    cases.push((shape(t, t - 3, 80, (6, 1), (false, Some(200))), "f32", t));
    for n_q in [1, 8] {
        cases.push((shape(t, t - n_q, 128, (16, 2), (true, None)), "bf16", t));
        cases.push((shape(t, t - n_q, 64, (8, 2), (true, None)), "f16", t));
    }
    cases
}

fn check_decode_engine<E: Elem>(gpu: &Gpu, s: Shape, capacity: usize) {
    let p = Problem::new(
        s,
        decode_slots(s.n_keys, s.n_keys - s.q_start),
        round_to::<E>,
    );
    let r = p.reference(&CaptureSpec::default());
    let got = run_decode_engine::<E>(gpu, &p, capacity);
    let label = format!(
        "decode (engine plan) {} {s:?} capacity {capacity}",
        E::SUFFIX
    );
    compare_decode::<E>(&label, &p, &r, &got);
}

#[test]
fn attention_decode_engine_plan_matches_cpu() {
    let Some(gpu) = gpu_or_skip() else { return };
    for (s, dtype, capacity) in decode_engine_cases() {
        match dtype {
            "f32" => check_decode_engine::<f32>(&gpu, s, capacity),
            "bf16" => check_decode_engine::<half::bf16>(&gpu, s, capacity),
            _ => check_decode_engine::<half::f16>(&gpu, s, capacity),
        }
    }
}

/// Several sequences' decode calls in one batched launch (`attn_decode_*_batch_<T>`, as the engine's
/// `Backend::attention_done` issues them): different contexts (one of 1 key, several splits), single tokens
/// and parallel sets, isolated and windowed, each against its CPU twin.
#[test]
fn attention_decode_batched_launch_matches_cpu() {
    let Some(gpu) = gpu_or_skip() else { return };
    let long = if small() { 300 } else { 2100 };
    let cases: [(usize, usize, Vis); 5] = [
        (1, 1, (false, None)),
        (long, 1, (true, None)),
        (64, 8, (true, None)),
        (517, 3, (true, Some(100))),
        (9, 2, (false, None)),
    ];
    for heads in [(8, 2), (4, 4)] {
        let problems: Vec<Problem> = cases
            .iter()
            .map(|&(n_keys, n_q, vis)| {
                let s = shape(n_keys, n_keys - n_q, 64, heads, vis);
                Problem::new(s, decode_slots(n_keys, n_q), round_to::<half::bf16>)
            })
            .collect();
        let got = run_decode_batch::<half::bf16>(&gpu, &problems);
        for (p, g) in problems.iter().zip(&got) {
            let r = p.reference(&CaptureSpec::default());
            compare_decode::<half::bf16>(&format!("batched decode {:?}", p.s), p, &r, g);
        }
    }
}

/// The second pass with several 16-row tiles per row group (received summed in the block across tiles,
/// then over row groups by `attn_probs_received_f32`), statistics only and with weights.
#[test]
fn attention_probs_row_groups_match_recorder() {
    let Some(gpu) = gpu_or_skip() else { return };
    let all8: &'static [i32] = &[0, 1, 2, 3, 4, 5, 6, 7];
    let t = if small() { 1000 } else { 4096 };
    let mut cases = vec![ProbsCase {
        s: shape(t, 0, 64, (8, 2), (false, None)),
        decode_q: 0,
        heads: all8,
        key_split: 128,
        weights: None,
    }];
    if !small() {
        cases.push(ProbsCase {
            s: shape(2048, 0, 64, (8, 2), (true, Some(700))),
            decode_q: 0,
            heads: &[6, 1, 4],
            key_split: 1024,
            weights: Some(WeightsDtype::F16),
        });
    }
    for c in &cases {
        check_probs(&gpu, c);
    }
}
