//! Random-weight Llama models at real head dims (64 and 128, the tensor-core path of the prefill and the
//! decode kernel at the sizes users run) with GQA, on the GPU against the CPU reference: prefill with
//! statistics and weights, and the same sequence one slot at a time through the device KV cache (decode).
//!
//! * GPU f32 against CPU f32: weights and statistics to 1e-4 (as tests/gpu_model.rs).
//! * GPU bf16 against CPU f32: weights are rounded to bf16 and every activation is bf16, so a score s moves
//!   by ~1e-2 at most and a probability p by ~p·|Δs|: weights and statistics to 5%·|ref| + 1e-3. The exact
//!   check of the bf16 tensor-core kernel is tests/gpu_attention.rs; this one catches what the kernel tests
//!   cannot (strides of real layers, the KV cache, GQA head mapping, capture plumbing) at these head dims.
//!
//! Without a CUDA device every test prints `SKIP: no CUDA device (...)` and passes, unless
//! `ATTNSCOPE_REQUIRE_GPU=1`.

mod common;

use attnscope_core::config::ModelConfig;
use attnscope_core::model::Model;
use attnscope_core::model::random::random_model;
use attnscope_core::slots::Visibility;
use attnscope_cuda::GpuDtype;
use common::gpu::{Close, assert_stats_close, gpu_present, long_case, on_gpu};
use common::*;
use std::path::Path;

/// A two-layer Llama with `n_heads` query heads of `head_dim` over `n_kv_heads` KV heads.
fn llama(head_dim: usize, n_heads: usize, n_kv_heads: usize) -> ModelConfig {
    let text = format!(
        r#"{{"architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": {hidden}, "intermediate_size": {inter}, "num_hidden_layers": 2,
            "num_attention_heads": {n_heads}, "num_key_value_heads": {n_kv_heads}, "head_dim": {head_dim},
            "vocab_size": 512, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": false}}"#,
        hidden = n_heads * head_dim,
        inter = 2 * n_heads * head_dim,
    );
    ModelConfig::from_json_str(Path::new("gpu_model_head_dims"), &text)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Elementwise |got − want| ≤ abs + rel·|want| over every captured head's weights.
fn weights_close(got: &Prefill, want: &Prefill, model: &Model, tol: Close, label: &str) {
    for l in 0..model.cfg.n_layers {
        for h in 0..model.cfg.n_heads {
            let (g, w) = (
                head_weights(&got.capture, l, h),
                head_weights(&want.capture, l, h),
            );
            assert_eq!(g.len(), w.len(), "{label} layer {l} head {h}");
            for (i, (x, y)) in g.iter().zip(&w).enumerate() {
                let ok = ((x - y).abs() as f64) <= tol.abs + tol.rel * y.abs() as f64;
                assert!(ok, "{label} layer {l} head {h} element {i}: {x} vs {y}");
            }
        }
    }
}

fn check(head_dim: usize, heads: (usize, usize), dtype: GpuDtype, tol: Close) {
    let cfg = llama(head_dim, heads.0, heads.1);
    let cpu = random_model(cfg.clone(), 7);
    let mut gpu = random_model(cfg, 7);
    on_gpu(&mut gpu, dtype);
    for vis in [Visibility::Visible, Visibility::Isolated] {
        let case = long_case(&cpu, vis);
        let label = format!("hd {head_dim} heads {heads:?} {dtype:?} {vis:?}");
        let want = prefill(&cpu, &case, &full_spec());
        let got = prefill(&gpu, &case, &full_spec());
        assert_stats_close(
            &got.capture,
            &want.capture,
            tol,
            &format!("{label} prefill"),
        );
        weights_close(&got, &want, &cpu, tol, &format!("{label} prefill"));
        // One slot at a time through the device cache: the decode kernel at this head dim.
        let step = stepwise(&gpu, &case, &full_spec());
        weights_close(&step, &want, &cpu, tol, &format!("{label} decode"));
        assert_stats_close(
            &step.capture,
            &want.capture,
            tol,
            &format!("{label} decode"),
        );
    }
}

const F32: Close = Close {
    abs: 1e-4,
    rel: 0.0,
};
const BF16: Close = Close {
    abs: 1e-3,
    rel: 0.05,
};

#[test]
fn head_dim_64_gqa_matches_cpu_on_gpu() {
    if gpu_present() {
        check(64, (8, 2), GpuDtype::F32, F32);
        check(64, (8, 2), GpuDtype::Bf16, BF16);
    }
}

#[test]
fn head_dim_128_gqa_matches_cpu_on_gpu() {
    if gpu_present() {
        check(128, (4, 1), GpuDtype::F32, F32);
        check(128, (4, 1), GpuDtype::Bf16, BF16);
    }
}

/// Runs without a GPU: the configs parse to what the GPU tests expect and the case runs on the CPU, so the
/// first GPU window does not spend its minutes on a broken fixture.
#[test]
fn head_dim_models_build_and_run_on_cpu() {
    for (hd, heads) in [(64, (8, 2)), (128, (4, 1))] {
        let cfg = llama(hd, heads.0, heads.1);
        assert_eq!(
            (cfg.head_dim, cfg.n_heads, cfg.n_kv_heads),
            (hd, heads.0, heads.1)
        );
        let cpu = random_model(cfg, 7);
        let case = long_case(&cpu, Visibility::Isolated);
        let run = prefill(&cpu, &case, &full_spec());
        let w = head_weights(&run.capture, 1, heads.0 - 1);
        assert_eq!(w.len(), case.ids.len() * case.ids.len());
        assert!(w.iter().all(|x| x.is_finite()));
    }
}
