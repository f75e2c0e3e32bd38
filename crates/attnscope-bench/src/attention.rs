//! `attnscope bench-attention`: the attention kernel alone, on random q/k/v of a model's attention shape
//! (default Llama-3.2-1B: 32 query heads, 8 KV heads, head_dim 64), causal, batch 1 — the attnscope side of
//! the comparison with torch `scaled_dot_product_attention` (scripts/bench_sdpa.py writes the same
//! "attnscope-attn-bench/1" JSON; scripts/attn_bench_compare.py merges the two).
//!
//! Implementations timed per T (GPU):
//!   prefill              fused prefill kernel: output + lse only (what a forward without capture runs)
//!   prefill_stats        the same kernel also writing entropy, max weight and argmax per row
//!   prefill_probs_stats  plus the second pass reducing sink/prev/self/group mass, received, distance
//!   prefill_weights      plus the second pass writing exact f32 weights of every head ([H, T, T])
//!   prefill_reference, prefill_stats_reference
//!                        prefill / prefill_stats on the reference tensor-core kernel (the others run the
//!                        one ATTNSCOPE_PREFILL_KERNEL selects, the fast kernel by default)
//! On the CPU (`--device cpu`) only `prefill` is timed, with the f32 reference `model::attention`.
//! FLOPs (causal, as in scripts/bench_sdpa.py) = 4 · n_heads · head_dim · T(T+1)/2.

use attnscope_core::Result;
use attnscope_core::model::attention::{AttentionInput, attention};
use attnscope_core::rng::uniform_values as values;
use attnscope_core::slots::SlotInfo;
use attnscope_cuda::DeviceRequest;
use attnscope_cuda::GpuContext;
use attnscope_cuda::bench::{AttentionBenchShape, time_attention};
use serde::Serialize;

/// Schema tag of the JSON.
pub const SCHEMA: &str = "attnscope-attn-bench/1";
/// The FLOP count used for TFLOP/s.
pub const FLOPS_FORMULA: &str = "4 * n_heads * head_dim * T*(T+1)/2 (causal; QK^T and PV, batch 1)";

/// What to measure: the attention shape and timing settings (shared with the GPU timing in
/// `attnscope_cuda::bench`), the lengths, and the device.
#[derive(Clone, Debug)]
pub struct AttentionBenchSettings {
    pub lengths: Vec<usize>,
    pub shape: AttentionBenchShape,
    pub device: DeviceRequest,
}

/// One timed implementation at one length.
#[derive(Clone, Debug, Serialize)]
pub struct AttentionBenchRow {
    #[serde(rename = "impl")]
    pub implementation: &'static str,
    pub batch: usize,
    pub t: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub dtype: String,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub tflops: f64,
}

/// Causal attention FLOPs of one call.
pub fn attention_flops(n_heads: usize, head_dim: usize, t: usize) -> f64 {
    4.0 * n_heads as f64 * head_dim as f64 * (t as f64 * (t as f64 + 1.0) / 2.0)
}

/// A row from millisecond samples.
fn row(
    s: &AttentionBenchSettings,
    implementation: &'static str,
    t: usize,
    dtype: &str,
    ms: &[f64],
) -> AttentionBenchRow {
    use attnscope_analyze::stats::percentile;
    let mut ms = ms.to_vec();
    ms.sort_by(f64::total_cmp);
    let ms = &ms[..];
    let median = percentile(ms, 50.0);
    AttentionBenchRow {
        implementation,
        batch: 1,
        t,
        n_heads: s.shape.n_heads,
        n_kv_heads: s.shape.n_kv_heads,
        head_dim: s.shape.head_dim,
        dtype: dtype.to_string(),
        median_ms: median,
        p10_ms: percentile(ms, 10.0),
        p90_ms: percentile(ms, 90.0),
        tflops: attention_flops(s.shape.n_heads, s.shape.head_dim, t) / (median / 1e3) / 1e12,
    }
}

/// Times the CPU reference (f32) at each length.
pub fn run_cpu(s: &AttentionBenchSettings) -> Vec<AttentionBenchRow> {
    let (nh, nkv, hd) = (s.shape.n_heads, s.shape.n_kv_heads, s.shape.head_dim);
    let mut rows = Vec::new();
    for &t in &s.lengths {
        let q = values(t * nh * hd, s.shape.seed);
        let k = values(t * nkv * hd, s.shape.seed + 1);
        let v = values(t * nkv * hd, s.shape.seed + 2);
        let slots: Vec<SlotInfo> = (0..t).map(|i| SlotInfo::prompt(0, i as i64, -1)).collect();
        let inp = AttentionInput::causal_prefill(&q, &k, &v, (nh, nkv, hd), &slots);
        let mut out = vec![0.0f32; t * nh * hd];
        let mut ms = Vec::new();
        for r in 0..s.shape.warmup + s.shape.repeats {
            let t0 = std::time::Instant::now();
            attention(&inp, &mut out, None);
            if r >= s.shape.warmup {
                ms.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        rows.push(row(s, "prefill", t, "f32", &ms));
    }
    rows
}

/// Times the GPU kernels at each length (the launches live in `cuda::bench`); lengths whose `[H, T, T]` f32
/// weights exceed `max_weights_bytes` skip `prefill_weights` (listed in the returned notes).
pub fn run_gpu(
    g: &GpuContext,
    s: &AttentionBenchSettings,
    max_weights_bytes: usize,
) -> Result<(Vec<AttentionBenchRow>, Vec<String>)> {
    let shape = s.shape;
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for &t in &s.lengths {
        let (timings, note) = time_attention(g, &shape, t, max_weights_bytes)?;
        notes.extend(note);
        for timing in &timings {
            let dtype = s.shape.dtype.as_str();
            rows.push(row(s, timing.implementation, t, dtype, &timing.samples_ms));
        }
    }
    Ok((rows, notes))
}
