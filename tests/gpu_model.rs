//! Whole models on the GPU: the Hugging Face goldens (every fixture + stories260K, prefill and stepwise,
//! greedy tokens) in f32 and bf16, and the GPU against the CPU reference for what the capture produces
//! (statistics over the device-reduction route and the rows route, weights), parallel generation with its
//! per-step tables, and KV-cache ablation.
//!
//! Tolerances (issue #3): attention probabilities ≤ 1e-4 in f32 and ≤ 2e-3 in bf16 against transformers'
//! f32 eager attention; logits ≤ 1e-3 in f32 (cuBLAS sums in another order than the CPU; not compared in
//! bf16, where the greedy tokens are); statistics against the CPU ≤ 1e-4 (f32).
//!
//! Without a CUDA device every test prints `SKIP: no CUDA device (...)` and passes, unless
//! `ATTNSCOPE_REQUIRE_GPU=1` (scripts/gpu-validate.sh), which turns the skip into a failure.

mod common;

use attnscope_core::capture::CaptureSpec;
use attnscope_core::input::SequenceInput;
use attnscope_core::model::Model;
use attnscope_core::run::ablation::{Ablation, AblationMode, score_targets};
use attnscope_core::run::parallel::{ParallelOptions, SetDistribution};
use attnscope_core::run::{GenerateOptions, run_sequence};
use attnscope_core::slots::Visibility;
use attnscope_cuda::GpuDtype;
use common::batch::batched_matches_single;
use common::golden::{Tolerance, check_fixtures, check_stories260k};
use common::gpu::{assert_stats_close, cpu_and_gpu, gpu_present, long_case, on_gpu};
use common::*;

const F32: Tolerance = Tolerance {
    attention: 1e-4,
    logits: Some(1e-3),
};
const BF16: Tolerance = Tolerance {
    attention: 2e-3,
    logits: None,
};

#[test]
fn fixtures_match_transformers_on_gpu_f32() {
    if gpu_present() {
        check_fixtures(&|m| on_gpu(m, GpuDtype::F32), F32);
    }
}

#[test]
fn fixtures_match_transformers_on_gpu_bf16() {
    if gpu_present() {
        check_fixtures(&|m| on_gpu(m, GpuDtype::Bf16), BF16);
    }
}

#[test]
fn stories260k_matches_transformers_on_gpu() {
    if gpu_present() {
        check_stories260k(&|m| on_gpu(m, GpuDtype::F32), F32);
        check_stories260k(&|m| on_gpu(m, GpuDtype::Bf16), BF16);
    }
}

#[test]
fn gpu_statistics_match_cpu() {
    if !gpu_present() {
        return;
    }
    let (cpu, gpu) = cpu_and_gpu("llama_gqa", GpuDtype::F32);
    let stats_only = CaptureSpec {
        stats: true,
        ..CaptureSpec::default()
    };
    for vis in [Visibility::Visible, Visibility::Isolated] {
        let case = long_case(&cpu, vis);
        // Stats only over a long prefill: the device-reduction route.
        let want = prefill(&cpu, &case, &stats_only);
        let got = prefill(&gpu, &case, &stats_only);
        assert_stats_close(
            &got.capture,
            &want.capture,
            1e-4,
            &format!("{vis:?} reduced"),
        );
        // Weights + stats: the rows route; weights against the CPU too.
        let want = prefill(&cpu, &case, &full_spec());
        let got = prefill(&gpu, &case, &full_spec());
        assert_stats_close(&got.capture, &want.capture, 1e-4, &format!("{vis:?} rows"));
        for l in 0..cpu.cfg.n_layers {
            for h in 0..cpu.cfg.n_heads {
                let d = max_abs_diff(
                    &head_weights(&got.capture, l, h),
                    &head_weights(&want.capture, l, h),
                );
                assert!(d <= 1e-4, "{vis:?} layer {l} head {h}: weights diff {d}");
            }
        }
        // Stepwise through the device cache (decode kernel) against the CPU's prefill.
        let step = stepwise(&gpu, &case, &full_spec());
        for l in 0..cpu.cfg.n_layers {
            for h in 0..cpu.cfg.n_heads {
                let d = max_abs_diff(
                    &head_weights(&step.capture, l, h),
                    &head_weights(&want.capture, l, h),
                );
                assert!(d <= 1e-4, "{vis:?} stepwise layer {l} head {h}: diff {d}");
            }
        }
    }
}

/// Several sequences in one forward pass on the GPU (prefill, then one decode step each through the
/// device caches) against each sequence alone on the CPU.
#[test]
fn gpu_batched_prefill_and_decode_match_cpu() {
    if !gpu_present() {
        return;
    }
    for name in ["llama_gqa", "gpt2"] {
        let (cpu, gpu) = cpu_and_gpu(name, GpuDtype::F32);
        // With capture: one decode launch per sequence; without: the batched decode launch.
        batched_matches_single(
            &gpu,
            &cpu,
            true,
            1e-3,
            1e-4,
            &format!("{name} GPU batch vs CPU"),
        );
        let label = format!("{name} GPU batched decode launch vs CPU");
        batched_matches_single(&gpu, &cpu, false, 1e-3, 1e-4, &label);
    }
}

#[test]
fn gpu_parallel_generation_matches_cpu() {
    if !gpu_present() {
        return;
    }
    let (cpu, gpu) = cpu_and_gpu("llama_gqa", GpuDtype::F32);
    for vis in [Visibility::Visible, Visibility::Isolated] {
        for next in [SetDistribution::Last, SetDistribution::Mean] {
            let mut seq = SequenceInput::from_tokens(vec![1, 5, 9, 13, 2, 7]);
            seq.visibility = vis;
            let generation = GenerateOptions {
                max_new_tokens: 10,
                stop_at_eos: false,
                parallel: Some(ParallelOptions {
                    threshold: 0.05,
                    max_set: 3,
                    next,
                }),
                ..GenerateOptions::default()
            };
            let run = |m: &Model| run_sequence(m, &seq, &full_spec(), &generation, &mut || Ok(()));
            let want = run(&cpu).unwrap();
            let got = run(&gpu).unwrap();
            let label = format!("{vis:?} {next:?}");
            assert_eq!(got.slots, want.slots, "{label}: generated slots");
            let (g, w) = (got.capture.unwrap(), want.capture.unwrap());
            assert_stats_close(&g, &w, 1e-4, &label);
        }
    }
}

#[test]
fn gpu_ablation_matches_cpu() {
    if !gpu_present() {
        return;
    }
    let (cpu, gpu) = cpu_and_gpu("llama_gqa", GpuDtype::F32);
    let prompt = SequenceInput::from_tokens(vec![3, 8, 1, 4, 9, 2, 6]);
    let targets = [5u32, 7, 1];
    for mode in [
        AblationMode::Zero,
        AblationMode::Mean,
        AblationMode::Replace(1),
    ] {
        let ab = Ablation {
            slots: vec![2, 4],
            layers: vec![0, 1],
            mode,
        };
        let want = score_targets(&cpu, &prompt, &targets, Some(&ab), 4).unwrap();
        let got = score_targets(&gpu, &prompt, &targets, Some(&ab), 4).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-3, "{mode:?}: log-prob {g} vs {w}");
        }
    }
}

#[test]
fn caches_of_the_other_backend_are_refused() {
    if !gpu_present() {
        return;
    }
    let (cpu, gpu) = cpu_and_gpu("llama_gqa", GpuDtype::Bf16);
    let slots = [attnscope_core::slots::SlotInfo::prompt(1, 0, -1)];
    let mut device_cache = gpu.new_cache(4, Visibility::Visible).unwrap();
    let err = cpu
        .forward(
            &mut device_cache,
            &slots,
            None,
            attnscope_core::model::LogitRows::Last,
        )
        .expect_err("a CPU model must refuse a device cache");
    assert!(err.to_string().contains("GPU"), "{err}");
    let mut host_cache = cpu.new_cache(4, Visibility::Visible).unwrap();
    let err = gpu
        .forward(
            &mut host_cache,
            &slots,
            None,
            attnscope_core::model::LogitRows::Last,
        )
        .expect_err("a GPU model must refuse a host cache");
    assert!(err.to_string().contains("KV cache"), "{err}");
}
