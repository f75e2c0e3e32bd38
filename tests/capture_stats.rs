//! Statistics captured in the forward pass agree with recomputing them from the captured weights
//! (tolerance 1e-5; entropy 1e-4 since the forward pass uses lse − Σ p·s instead of −Σ p ln p).

mod common;

use attnscope_core::model::Model;
use attnscope_core::slots::Visibility;
use attnscope_io::tables::{StatsSource, stats_tables};
use attnscope_io::{ColumnData, Table};
use common::*;
use std::collections::HashMap;

fn col<'a>(t: &'a Table, name: &str) -> &'a ColumnData {
    &t.columns
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("column {name}"))
        .data
}
fn i32s(t: &Table, name: &str) -> Vec<i32> {
    match col(t, name) {
        ColumnData::I32(v) => v.clone(),
        _ => panic!("{name} is not i32"),
    }
}
fn f64s(t: &Table, name: &str) -> Vec<f64> {
    match col(t, name) {
        ColumnData::F32(v) => v.iter().map(|&x| x as f64).collect(),
        ColumnData::F64(v) => v.clone(),
        _ => panic!("{name} is not float"),
    }
}

/// Independent visibility rule (causal, sliding window, isolated groups).
fn visible(case: &Case, window: Option<usize>, q: usize, k: usize) -> bool {
    k <= q
        && window.is_none_or(|w| q - k < w)
        && !(case.visibility == Visibility::Isolated
            && k != q
            && case.groups[q] >= 0
            && case.groups[q] == case.groups[k])
}

fn bucket(d: i64) -> i32 {
    if d < 0 {
        0
    } else if d == 0 {
        1
    } else {
        2 + (63 - d.leading_zeros() as i32)
    }
}

fn check(model: &Model, case: &Case) {
    let run = prefill(model, case, &full_spec());
    let t = case.ids.len();
    let window = model.cfg.sliding_window;
    let sources = [StatsSource {
        seq: 0,
        slots: run.cache.slots(),
        visibility: case.visibility,
        sliding_window: window,
        result: &run.capture,
    }];
    let tables = stats_tables(&sources);
    let (stats, received, distance) = (tables.stats, tables.received, tables.distance);

    // stats: (layer, head, slot, metric) -> value
    let metric_names = match col(&stats, "metric") {
        ColumnData::Utf8(v) => v.clone(),
        _ => panic!(),
    };
    let (sl, sh, ss, sv) = (
        i32s(&stats, "layer"),
        i32s(&stats, "head"),
        i32s(&stats, "slot"),
        f64s(&stats, "value"),
    );
    let mut got: HashMap<(i32, i32, i32, String), f64> = HashMap::new();
    for i in 0..sv.len() {
        got.insert((sl[i], sh[i], ss[i], metric_names[i].clone()), sv[i]);
    }
    let (rl, rh, rs, rsum, rmean, rrows) = (
        i32s(&received, "layer"),
        i32s(&received, "head"),
        i32s(&received, "slot"),
        f64s(&received, "received_sum"),
        f64s(&received, "received_mean"),
        i32s(&received, "visible_rows"),
    );
    let (dl, dh, db, dsum, dmean) = (
        i32s(&distance, "layer"),
        i32s(&distance, "head"),
        i32s(&distance, "bucket"),
        f64s(&distance, "mass_sum"),
        f64s(&distance, "mass_mean"),
    );

    for l in 0..model.cfg.n_layers {
        for h in 0..model.cfg.n_heads {
            let w = head_weights(&run.capture, l, h);
            let (li, hi) = (l as i32, h as i32);
            let mut col_sum = vec![0.0f64; t];
            let mut buckets: HashMap<i32, f64> = HashMap::new();
            for q in 0..t {
                let row = &w[q * t..(q + 1) * t];
                for k in 0..t {
                    if !visible(case, window, q, k) {
                        assert_eq!(row[k], 0.0, "hidden key must have weight 0");
                    }
                    col_sum[k] += row[k] as f64;
                    if k <= q {
                        *buckets
                            .entry(bucket(case.positions[q] - case.positions[k]))
                            .or_default() += row[k] as f64;
                    }
                }
                let entropy: f64 = row
                    .iter()
                    .filter(|&&p| p > 0.0)
                    .map(|&p| -(p as f64) * (p as f64).ln())
                    .sum();
                let (mut amax, mut wmax) = (0usize, f32::NEG_INFINITY);
                for (k, &p) in row.iter().enumerate() {
                    if p > wmax {
                        (amax, wmax) = (k, p);
                    }
                }
                let g = case.groups[q];
                let group_mass: f64 = (0..t)
                    .filter(|&k| k != q && g >= 0 && case.groups[k] == g)
                    .map(|k| row[k] as f64)
                    .sum();
                let key = |m: &str| (li, hi, q as i32, m.to_string());
                let expect = [
                    ("entropy", entropy, 1e-4),
                    ("max_weight", wmax as f64, 1e-6),
                    ("argmax_slot", amax as f64, 0.0),
                    ("sink_mass", row[0] as f64, 1e-6),
                    (
                        "prev_mass",
                        if q > 0 { row[q - 1] as f64 } else { 0.0 },
                        1e-6,
                    ),
                    ("self_mass", row[q] as f64, 1e-6),
                ];
                for (m, want, tol) in expect {
                    let v = got[&key(m)];
                    assert!(
                        (v - want).abs() <= tol,
                        "L{l} H{h} slot {q} {m}: {v} vs {want}"
                    );
                }
                match got.get(&key("group_mass")) {
                    Some(v) => assert!(
                        g >= 0 && (v - group_mass).abs() <= 1e-6,
                        "group_mass {v} vs {group_mass}"
                    ),
                    None => assert!(g < 0, "group_mass missing for grouped slot {q}"),
                }
            }
            for i in (0..rsum.len()).filter(|&i| rl[i] == li && rh[i] == hi) {
                let k = rs[i] as usize;
                let rows = (0..t).filter(|&q| visible(case, window, q, k)).count();
                assert_eq!(rrows[i] as usize, rows);
                assert!((rsum[i] - col_sum[k]).abs() <= 1e-5, "received_sum");
                assert!(
                    (rmean[i] - col_sum[k] / rows as f64).abs() <= 1e-5,
                    "received_mean"
                );
            }
            let mut seen = 0.0;
            for i in (0..dsum.len()).filter(|&i| dl[i] == li && dh[i] == hi) {
                let want = buckets.get(&db[i]).copied().unwrap_or(0.0);
                assert!(
                    (dsum[i] - want).abs() <= 1e-5,
                    "distance bucket {}: {} vs {want}",
                    db[i],
                    dsum[i]
                );
                assert!((dmean[i] - want / t as f64).abs() <= 1e-5);
                seen += dsum[i];
            }
            assert!(
                (seen - t as f64).abs() <= 1e-4,
                "distance mass covers every row once: {seen}"
            );
        }
    }
}

fn parallel_case(t: usize, visibility: Visibility) -> Case {
    // slots 3,4,5 share one position (group 0); slots 8,9 share one (group 1)
    let mut positions = Vec::new();
    let mut groups = Vec::new();
    let mut pos = 0;
    for s in 0..t {
        let g = match s {
            3..=5 => 0,
            8..=9 => 1,
            _ => -1,
        };
        if s > 0 && !(g >= 0 && groups.last() == Some(&g)) {
            pos += 1;
        }
        positions.push(pos);
        groups.push(g);
    }
    Case {
        name: "par".into(),
        ids: (0..t as u32).map(|i| 3 + (i * 7) % 90).collect(),
        positions,
        groups,
        visibility,
    }
}

#[test]
fn stats_agree_with_weights_across_architectures() {
    for name in ["llama_gqa", "mistral", "gpt2", "gpt_neox_parallel", "qwen3"] {
        let model = Model::load(&repo().join("tests/fixtures").join(name)).unwrap();
        for vis in [Visibility::Visible, Visibility::Isolated] {
            check(&model, &parallel_case(14, vis));
        }
        eprintln!("ok: {name}");
    }
}

#[test]
fn stats_cover_generated_rows_on_stories260k() {
    let Some(shared) = shared("models/stories260K") else {
        return;
    };
    let model = Model::load(&shared.join("models/stories260K")).unwrap();
    let case = parallel_case(40, Visibility::Isolated);
    check(&model, &case);
    // Stepwise decode must give the same weights as one prefill.
    let a = prefill(&model, &case, &full_spec());
    let b = stepwise(&model, &case, &full_spec());
    for l in 0..model.cfg.n_layers {
        for h in 0..model.cfg.n_heads {
            let d = max_abs_diff(
                &head_weights(&a.capture, l, h),
                &head_weights(&b.capture, l, h),
            );
            assert!(d <= 1e-5, "layer {l} head {h}: prefill vs stepwise {d}");
        }
    }
}
