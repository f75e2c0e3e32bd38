//! GEMM throughput of the linear layers as the engine runs them (`model::ops::project`), in GFLOP/s, with
//! the f32 weight row-major (gemm repacks it at every call) and in row panels laid out once at load (the
//! engine's layout, `weights::PanelMatrix`), alternated in one run, on the shapes of a prefill (llama-100m
//! and tinyllama-1.1b) and of decode.
//!
//!   cargo run --release -p attnscope-core --example linear_packing [REPEATS] [T,T,...]
//!
//! (best of REPEATS, default 7, after one warm-up; T defaults to 1,8,128,512,2048). Warm caches: the same
//! matrices every repeat, so decode's figures here are not its streaming bandwidth (see matvec_bandwidth).

use attnscope_core::model::ops::project;
use attnscope_core::weights::WeightMatrix;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let repeats: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(7).max(1);
    let ts: Vec<usize> = args
        .next()
        .map(|a| a.split(',').filter_map(|t| t.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 8, 128, 512, 2048]);
    println!(
        "linear_packing: {} rayon threads, best of {repeats}",
        rayon::current_num_threads()
    );
    println!(
        "{:>5} {:>12} {:>14} {:>14} {:>8}",
        "t", "[out, in]", "rows GFLOP/s", "panels GFLOP/s", "pan/row"
    );
    for &t in &ts {
        // (in, out): llama-100m's q/o, gate/up, down; tinyllama's q/o, gate/up, down.
        for (in_dim, out_dim) in [
            (768, 768),
            (768, 2048),
            (2048, 768),
            (2048, 2048),
            (2048, 5632),
            (5632, 2048),
        ] {
            let w: Vec<f32> = (0..in_dim * out_dim)
                .map(|v| ((v % 97) as f32 - 48.0) / 97.0)
                .collect();
            let x: Vec<f32> = (0..t * in_dim)
                .map(|v| ((v % 89) as f32 - 44.0) / 89.0)
                .collect();
            let rows = WeightMatrix::from(w);
            let panels = rows.clone().into_panels(out_dim, in_dim);
            let mut out = Vec::new();
            let mut time = |weight: &WeightMatrix| {
                let start = Instant::now();
                project(&x, t, weight, in_dim, out_dim, None, &mut out);
                start.elapsed().as_secs_f64()
            };
            time(&rows);
            time(&panels);
            let (mut best_rows, mut best_panels) = (f64::INFINITY, f64::INFINITY);
            for _ in 0..repeats {
                best_rows = best_rows.min(time(&rows));
                best_panels = best_panels.min(time(&panels));
            }
            let flop = 2.0 * (t * in_dim * out_dim) as f64;
            println!(
                "{t:>5} {:>12} {:>14.1} {:>14.1} {:>7.2}×",
                format!("[{out_dim}, {in_dim}]"),
                flop / best_rows / 1e9,
                flop / best_panels / 1e9,
                best_rows / best_panels
            );
        }
    }
}
