//! The prefill attention kernels against the CPU twin on a real GPU: attention_prefill.cu (tensor-core
//! reference path `attn_prefill_<bf16|f16>_hd<HD>`, and the SIMT bf16 path once) and
//! attention_prefill_fa2.cu (the fast path, with and without statistics) vs `attention::attention` +
//! `HeadRecorder` row statistics, on inputs rounded to the 16-bit type, and vs the emulation of the
//! kernels' rounding of P (tests/gpu_common/tc_reference.rs). The second pass and decode:
//! tests/gpu_probs_decode.rs.
//!
//! Without a CUDA device every test prints `SKIP: no CUDA device (...)` and passes, unless
//! `ATTNSCOPE_REQUIRE_GPU=1`. `ATTNSCOPE_GPU_SMALL=1` (compute-sanitizer runs) shrinks the grids.

mod gpu_common;

use attnscope_core::capture::CaptureSpec;
use gpu_common::attention::{
    F32_STATS, Path, Problem, Shape, StatTol, VIS, rounded_out_tol, run_prefill, shape, slots,
};
use gpu_common::tc_reference::{Arith, Fault, tile_walk};
use gpu_common::{Elem, Gpu, assert_close, gpu_or_skip, round_to, small};

/// Tensor-core statistics: l and Σp·s accumulate in f32 per thread (the SIMT path uses f64), and the scores
/// come from mma with f32 accumulation in another order than the CPU's gemm.
const TC_STATS: StatTol = StatTol {
    lse: 1e-4,
    entropy: 2e-4,
    max_weight: 5e-5,
    tie: 2e-5,
};

/// Tensor-core output tolerance, |got − ref| ≤ u·(1 + |ref|) + 2e-4 with u the unit roundoff of E (2^-8
/// bf16, 2^-11 f16). The brief's 2e-3·(1 + |ref|) is too tight for bf16 by construction: the output itself
/// is rounded to bf16 (≤ u·|ref|), and P is rounded to bf16 before P·V as in FlashAttention-2 (≤ u·Σp|v|/l
/// ≤ u, since |v| < 1); the 2e-4 covers f32 accumulation order and f16 subnormal P on long rows.
fn tc_out_tol<E: Elem>(want: f32) -> f32 {
    E::UNIT * (1.0 + want.abs()) + 2e-4
}

fn check_tc<E: Elem>(gpu: &Gpu, s: Shape, with_stats: bool) {
    let p = Problem::new(s, slots(s.n_keys), round_to::<E>);
    let r = p.reference(&CaptureSpec::default());
    // Both tensor-core kernels: the reference one and the fast one (kernels/attention_prefill_fa2.cu),
    // whose instance without statistics is a kernel of its own. Each against the CPU twin (P unrounded),
    // then against the emulation of its rounding of P in its own key tiles, whose bound is tight enough to
    // catch a fragment-layout error (tests/tc_reference_check.rs).
    let mut runs = vec![(Path::Tensor, with_stats), (Path::Fast, with_stats)];
    if with_stats {
        runs.push((Path::Fast, false));
    }
    let mut emulated = Vec::new();
    for (path, stats) in runs {
        let got = run_prefill::<E>(gpu, path, &p, stats);
        let label = format!("tensor-core {path:?} stats {stats} {} {s:?}", E::SUFFIX);
        assert_close(&label, &got.out, &r.out, tc_out_tol::<E>);
        // The emulation of each kernel's walk, computed once.
        let walk = tile_walk(path, s.head_dim);
        let k = match emulated.iter().position(|(w, _)| *w == walk) {
            Some(k) => k,
            None => {
                emulated.push((walk, p.tc_emulated::<E>(walk, Fault::None, Arith::F64)));
                emulated.len() - 1
            }
        };
        if let Err(e) = emulated[k].1.check(&got.out) {
            panic!("{label}: against the emulated rounding of P: {e}");
        }
        p.check_stats(&label, &r, &got, &TC_STATS);
    }
}

/// The grid of one 16-bit type; `full` adds the long and odd cases.
fn tc_grid<E: Elem>(full: bool) {
    let Some(gpu) = gpu_or_skip() else { return };
    let small = small();
    let ts: &[usize] = if small {
        &[1, 17, 65, 129]
    } else if full {
        &[1, 17, 64, 65, 129, 1000]
    } else {
        &[17, 129, 1000]
    };
    let hds: &[usize] = if full { &[64, 80, 128] } else { &[64, 128] };
    let gqa: &[(usize, usize)] = if full && !small {
        &[(4, 4), (4, 2), (8, 1)]
    } else {
        &[(4, 2), (6, 1)]
    };
    for &hd in hds {
        for &heads in gqa {
            for &t in ts {
                for vis in VIS {
                    check_tc::<E>(&gpu, shape(t, 0, hd, heads, vis), true);
                }
            }
        }
    }
    // The other head sizes (HD 256 uses 32-key tiles).
    for hd in [32, 96, 256] {
        for vis in VIS {
            check_tc::<E>(&gpu, shape(129, 0, hd, (4, 2), vis), true);
        }
    }
    // Chunked prefill: the first q_start slots are already in the cache (q_start not a tile multiple).
    check_tc::<E>(&gpu, shape(129, 64, 64, (4, 2), (true, Some(40))), true);
    check_tc::<E>(&gpu, shape(300, 150, 256, (4, 4), (false, None)), true);
    // Optional statistics as null pointers: outputs and lse still written.
    check_tc::<E>(&gpu, shape(129, 0, 80, (4, 2), (true, None)), false);
    if !small {
        check_tc::<E>(&gpu, shape(1000, 333, 128, (8, 1), (true, None)), true);
        if full {
            check_tc::<E>(&gpu, shape(4096, 0, 64, (4, 2), (true, None)), true);
            check_tc::<E>(&gpu, shape(4096, 0, 64, (4, 2), (false, Some(100))), true);
        }
    }
}

#[test]
fn attention_prefill_tensor_core_bf16_matches_cpu() {
    tc_grid::<half::bf16>(true);
}

#[test]
fn attention_prefill_tensor_core_f16_matches_cpu() {
    tc_grid::<half::f16>(false);
}

#[test]
fn attention_prefill_simt_bf16_matches_cpu() {
    let Some(gpu) = gpu_or_skip() else { return };
    for s in [
        shape(129, 0, 80, (4, 2), (true, None)),
        shape(300, 100, 128, (6, 1), (false, Some(100))),
    ] {
        let p = Problem::new(s, slots(s.n_keys), round_to::<half::bf16>);
        let r = p.reference(&CaptureSpec::default());
        let got = run_prefill::<half::bf16>(&gpu, Path::Simt, &p, true);
        let label = format!("simt bf16 {s:?}");
        assert_close(&label, &got.out, &r.out, rounded_out_tol::<half::bf16>);
        p.check_stats(&label, &r, &got, &F32_STATS);
    }
}
