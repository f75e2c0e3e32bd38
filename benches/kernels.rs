//! CPU kernels of the forward pass, to catch regressions (f32, llama-100m / GPT-2-small widths).
//!
//! - `matmul/256x768x768` and `matmul/1x768x3072`: `ops::matmul` of row-major operands (prefill- and
//!   decode-shaped).
//! - `linear/256x768->2048`: `ops::linear` (weight stored `[out, in]`, with bias).
//! - `norm/rms_256x768`, `norm/layer_256x768`: `ops::norm` over 256 rows of 768.
//! - `rope/256x12x64`: `rope::Rope::apply` on 256 rows of 12 heads × 64 (llama-100m's RoPE).
//! - `attention/12h_t256_d64/{none,stats}`: `attention::attention` for a 256-slot causal prefill, 12 query
//!   heads over 4 KV heads of 64, without recorders and with stats recorders on every head.
//!
//! A full decoder step is covered by benches/prefill.rs. Run: `cargo bench --bench kernels` (~40 s).

use attnscope_core::capture::{CaptureSpec, HeadRecorder};
use attnscope_core::config::{NormKind, PositionEncoding};
use attnscope_core::model::attention::{AttentionInput, attention};
use attnscope_core::model::ops::{MatRef, linear, matmul, norm};
use attnscope_core::model::random::named_config;
use attnscope_core::model::rope::Rope;
use attnscope_core::rng::uniform_values as values;
use attnscope_core::slots::SlotInfo;
use attnscope_core::weights::{Linear, Norm};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;

fn configure<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g
}

fn matmuls(c: &mut Criterion) {
    let mut g = configure(c, "matmul");
    for (m, k, n) in [(256, 768, 768), (1, 768, 3072)] {
        let a = values(m * k, 1);
        let b = values(k * n, 2);
        let mut dst = vec![0.0f32; m * n];
        g.bench_function(format!("{m}x{k}x{n}"), |bench| {
            bench.iter(|| {
                matmul(
                    &mut dst,
                    n,
                    MatRef::row_major(black_box(&a), m, k),
                    MatRef::row_major(black_box(&b), k, n),
                    1.0,
                    true,
                );
                black_box(&dst);
            })
        });
    }
    g.finish();

    let mut g = configure(c, "linear");
    let lin = Linear {
        weight: values(2048 * 768, 3).into(),
        bias: Some(values(2048, 4)),
        in_dim: 768,
        out_dim: 2048,
    };
    let x = values(256 * 768, 5);
    let mut out = Vec::new();
    g.bench_function("256x768->2048", |b| {
        b.iter(|| {
            linear(black_box(&x), 256, &lin, &mut out);
            black_box(&out);
        })
    });
    g.finish();
}

fn norms_and_rope(c: &mut Criterion) {
    let x = values(256 * 768, 6);
    let mut out = Vec::new();
    let mut g = configure(c, "norm");
    for (name, kind, bias) in [
        ("rms_256x768", NormKind::RmsNorm, None),
        (
            "layer_256x768",
            NormKind::LayerNorm,
            Some(vec![0.1f32; 768]),
        ),
    ] {
        let n = Norm {
            weight: vec![1.0f32; 768],
            bias,
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                norm(black_box(&x), &n, kind, 1e-5, &mut out);
                black_box(&out);
            })
        });
    }
    g.finish();

    let cfg = named_config("llama-100m").expect("llama-100m");
    let PositionEncoding::Rope(rope_cfg) = &cfg.position else {
        panic!("llama-100m uses RoPE");
    };
    let rope = Rope::new(rope_cfg);
    let positions: Vec<i64> = (0..256).collect();
    let mut q = values(256 * 12 * 64, 7);
    let mut g = configure(c, "rope");
    g.bench_function("256x12x64", |b| {
        b.iter(|| {
            rope.apply(black_box(&mut q), &positions, 12, 64);
        })
    });
    g.finish();
}

fn attention_bench(c: &mut Criterion) {
    const T: usize = 256;
    let (heads, kv_heads, hd) = (12, 4, 64);
    let q = values(T * heads * hd, 8);
    let keys = values(T * kv_heads * hd, 9);
    let vals = values(T * kv_heads * hd, 10);
    let slots: Vec<SlotInfo> = (0..T).map(|i| SlotInfo::prompt(0, i as i64, -1)).collect();
    let input = AttentionInput::causal_prefill(&q, &keys, &vals, (heads, kv_heads, hd), &slots);
    let mut out = vec![0.0f32; T * heads * hd];
    let spec = CaptureSpec::default(); // stats only
    let mut g = configure(c, "attention/12h_t256_d64");
    g.bench_function("none", |b| {
        b.iter(|| {
            attention(black_box(&input), &mut out, None);
            black_box(&out);
        })
    });
    g.bench_function("stats", |b| {
        b.iter(|| {
            let mut recs: Vec<HeadRecorder> =
                (0..heads).map(|_| HeadRecorder::new(&spec, T)).collect();
            attention(black_box(&input), &mut out, Some(&mut recs));
            black_box(&recs);
        })
    });
    g.finish();
}

criterion_group!(kernels, matmuls, norms_and_rope, attention_bench);
criterion_main!(kernels);
