//! GEMM throughput of the engine's `ops::matmul` (the gemm crate as the CPU backend calls it), in GFLOP/s,
//! for the 2048³ reference product and the linear-layer shapes of a prefill. Build it twice to compare the
//! AVX-512 kernels with the AVX2/FMA ones on the same machine, and alternate the two binaries:
//!
//!   cargo build --release -p attnscope-core --example gemm_peak                         # AVX-512 where present
//!   cargo build --release -p attnscope-core --example gemm_peak --no-default-features \
//!       --target-dir target/no-avx512                                                    # AVX2/FMA only
//!
//! usage: gemm_peak [REPEATS]   (best of REPEATS, default 5, after one warm-up)

use attnscope_core::model::ops::{MatRef, matmul};
use std::time::Instant;

fn main() {
    let repeats: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    #[cfg(target_arch = "x86_64")]
    let simd = if cfg!(feature = "avx512") && std::is_x86_feature_detected!("avx512f") {
        "avx512 kernels (feature on, CPU has AVX-512F)"
    } else if std::is_x86_feature_detected!("fma") {
        "avx2/fma kernels"
    } else {
        "scalar/sse kernels"
    };
    #[cfg(not(target_arch = "x86_64"))]
    let simd = "the target's kernels";
    println!(
        "gemm_peak: {simd}; threads {}",
        rayon::current_num_threads()
    );
    // (m, k, n): the reference product, then q/k/v- and MLP-like products of a T = 512 prefill.
    for (m, k, n) in [
        (2048, 2048, 2048),
        (512, 768, 768),
        (512, 768, 3072),
        (512, 3072, 768),
    ] {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i % 97) as f32 - 48.0) / 97.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i % 89) as f32 - 44.0) / 89.0)
            .collect();
        let mut c = vec![0.0f32; m * n];
        let run = |c: &mut [f32]| {
            let (ar, br) = (
                MatRef {
                    data: &a,
                    rows: m,
                    cols: k,
                    row_stride: k,
                    col_stride: 1,
                },
                MatRef {
                    data: &b,
                    rows: k,
                    cols: n,
                    row_stride: n,
                    col_stride: 1,
                },
            );
            let t = Instant::now();
            matmul(c, n, ar, br, 1.0, true);
            t.elapsed().as_secs_f64()
        };
        run(&mut c);
        let best = (0..repeats)
            .map(|_| run(&mut c))
            .fold(f64::INFINITY, f64::min);
        let gflops = 2.0 * (m * k * n) as f64 / best / 1e9;
        println!(
            "{m}x{k}x{n}: {gflops:.1} GFLOP/s (best of {repeats}, {:.2} ms)",
            best * 1e3
        );
    }
}
