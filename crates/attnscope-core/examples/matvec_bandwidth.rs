//! Weight-streaming bandwidth of decode's linear layers against the machine's streaming read bandwidth:
//! the row-major mat-vec (`model::matvec::project_few_rows`, which serves bf16/f16 weights and row-major f32),
//! the f32 weights in row panels as the engine stores them (`model::panel_gemm::project_panels`), and the
//! previous implementation (the baseline below, a copy kept only here), side by side in the same run.
//!
//!   cargo run --release -p attnscope-core --example matvec_bandwidth [RUNS]
//!
//! (a) a rayon sum over a 1 GiB f32 array (all of rayon's threads); (b) for each weight shape `[out, in]` and
//! t = 1 and 8 input rows: GB/s of weight bytes streamed, the median (and range) of RUNS runs (default 9),
//! old, rows and panels (f32 weights) and rows with bf16 weights, alternated. Each run passes over enough copies of the matrix (≥ 1 GiB in all, like the
//! layers of a model; the L3 of the machine measured holds 260 MiB) that the weights come from memory, not
//! from the caches. Other processes on the machine show up in the ranges; the load average is printed.

use attnscope_core::model::matvec::project_few_rows;
use attnscope_core::model::ops::project;
use attnscope_core::weights::{StorageDtype, WeightMatrix};
use rayon::prelude::*;
use std::time::Instant;

/// The baseline: `project_few_rows` as it was in `ops.rs` before `matvec.rs` (auto-vectorised dot with eight
/// scalar accumulators, one weight row at a time, a transposed thread-local buffer for t > 1).
mod baseline {
    use rayon::prelude::*;

    pub fn project_few_rows(
        x: &[f32],
        t: usize,
        weight: &[f32],
        in_dim: usize,
        out_dim: usize,
        out: &mut [f32],
    ) {
        const BLOCK: usize = 64;
        let dot_rows = |b: usize, chunk: &mut [f32]| {
            for (i, cell) in chunk.chunks_mut(t).enumerate() {
                let o = b * BLOCK + i;
                let w = &weight[o * in_dim..(o + 1) * in_dim];
                for (r, c) in cell.iter_mut().enumerate() {
                    *c = dot(w, &x[r * in_dim..(r + 1) * in_dim]);
                }
            }
        };
        if t == 1 {
            out.par_chunks_mut(BLOCK)
                .enumerate()
                .for_each(|(b, chunk)| dot_rows(b, chunk));
            return;
        }
        thread_local! {
            static TRANSPOSED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let mut fill = |transposed: &mut Vec<f32>| {
            transposed.clear();
            transposed.resize(out_dim * t, 0.0);
            transposed
                .par_chunks_mut(BLOCK * t)
                .enumerate()
                .for_each(|(b, chunk)| dot_rows(b, chunk));
            for o in 0..out_dim {
                for r in 0..t {
                    out[r * out_dim + o] = transposed[o * t + r];
                }
            }
        };
        TRANSPOSED.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => fill(&mut buf),
            Err(_) => fill(&mut Vec::new()),
        });
    }

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for l in 0..8 {
                acc[l] += x[l] * y[l];
            }
        }
        let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
        acc.iter().sum::<f32>() + tail
    }
}

/// A sum with 32 independent lanes, so that it runs at the speed of the loads (vectorised, not bound by the
/// latency of one chain of additions).
fn sum_lanes(c: &[f32]) -> f32 {
    let mut acc = [0.0f32; 32];
    let chunks = c.chunks_exact(32);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Median, min and max.
fn summary(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(9)
        .max(1);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "matvec_bandwidth: {} rayon threads, {runs} runs each; load average {}",
        rayon::current_num_threads(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    // (a) Streaming read bandwidth.
    {
        let data: Vec<f32> = vec![1.0; (1 << 30) / 4];
        let mut gbs = Vec::new();
        for _ in 0..runs {
            let start = Instant::now();
            let sum: f32 = data.par_chunks(1 << 16).map(sum_lanes).sum();
            let s = start.elapsed().as_secs_f64();
            assert!(sum > 0.0);
            gbs.push((1u64 << 30) as f64 / s / 1e9);
        }
        let (med, lo, hi) = summary(gbs);
        println!(
            "streaming read (rayon sum over 1 GiB f32): {med:.1} GB/s (range {lo:.1}–{hi:.1})"
        );
    }

    // (b) On llama-100m-like and tinyllama shapes: old, rows and panels with f32 weights, and rows with
    // bf16 weights (GB/s of the bf16 bytes streamed; "bf16 ×" is the speed-up in time over f32 panels).
    println!(
        "{:>12} {:>3} {:>20} {:>20} {:>20} {:>7} {:>20} {:>7}",
        "[out, in]",
        "t",
        "old f32 GB/s",
        "rows f32 GB/s",
        "panels f32 GB/s",
        "pan/row",
        "rows bf16 GB/s",
        "bf16 ×"
    );
    for (out_dim, in_dim) in [
        (768, 768),
        (2048, 768),
        (768, 2048),
        (32000, 768),
        (2048, 2048),
        (5632, 2048),
    ] {
        let elements = out_dim * in_dim;
        let copies = (1usize << 30).div_ceil(elements * 4).max(2);
        let f32_weights: Vec<WeightMatrix> = (0..copies)
            .map(|c| {
                (0..elements)
                    .map(|i| ((i * 7 + c) % 23) as f32 / 23.0 - 0.5)
                    .collect::<Vec<f32>>()
                    .into()
            })
            .collect();
        let panel_weights: Vec<WeightMatrix> = f32_weights
            .iter()
            .map(|w| w.clone().into_panels(out_dim, in_dim))
            .collect();
        let bf16_weights: Vec<WeightMatrix> = (0..2 * copies)
            .map(|c| {
                let v = (0..elements).map(|i| ((i * 7 + c) % 23) as f32 / 23.0 - 0.5);
                WeightMatrix::from_f32(v.collect(), StorageDtype::Bf16)
            })
            .collect();
        for t in [1usize, 8] {
            let x: Vec<f32> = (0..t * in_dim).map(|i| (i % 13) as f32 / 13.0).collect();
            let mut out = vec![0.0f32; t * out_dim];
            let mut panel_out = Vec::new();
            let mut time = |which: usize| {
                let weights = match which {
                    2 => &panel_weights,
                    3 => &bf16_weights,
                    _ => &f32_weights,
                };
                let start = Instant::now();
                for w in weights {
                    match (which, w.as_f32()) {
                        (0, Some(w)) => {
                            baseline::project_few_rows(&x, t, w, in_dim, out_dim, &mut out)
                        }
                        (2, _) => project(&x, t, w, in_dim, out_dim, None, &mut panel_out),
                        _ => project_few_rows(&x, t, w, in_dim, out_dim, &mut out),
                    }
                }
                let bytes: usize = weights.iter().map(WeightMatrix::stored_bytes).sum();
                bytes as f64 / start.elapsed().as_secs_f64() / 1e9
            };
            let mut gbs = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
            for round in 0..=runs {
                for (which, g) in gbs.iter_mut().enumerate() {
                    let v = time(which);
                    if round > 0 {
                        g.push(v); // round 0 warms up
                    }
                }
            }
            let [old, rows, panels, bf16] = gbs.map(summary);
            let cell = |(m, l, h): (f64, f64, f64)| format!("{m:.1} ({l:.1}–{h:.1})");
            println!(
                "{:>12} {t:>3} {:>20} {:>20} {:>20} {:>6.2}× {:>20} {:>6.2}×",
                format!("[{out_dim}, {in_dim}]"),
                cell(old),
                cell(rows),
                cell(panels),
                panels.0 / rows.0,
                cell(bf16),
                // time per matrix: f32 bytes / f32 GB/s over bf16 bytes / bf16 GB/s
                2.0 * panels.0.recip() / bf16.0.recip()
            );
        }
    }
}
