//! Cost of attention capture in the CPU reference engine.
//!
//! Model: the random-weight "llama-100m" shape (768 hidden, 12 layers, 12 heads over 4 KV heads, MLP 2048,
//! vocab 32000, ~100M parameters, f32), built in memory by `attnscope_core::model::random` (no download).
//!
//! - `prefill_llama100m_t256/{none,stats,weights}`: one prefill of T = 256 random token ids at positions
//!   0..T-1, logits of the last row only. Each iteration allocates a fresh `KvCache` (capacity T) and, when
//!   capturing, a fresh `SequenceCapture` (all layers, all heads; weights in f32), runs `Model::forward` and
//!   calls `SequenceCapture::finish`, so allocating and collecting the results is part of the cost.
//! - `decode_llama100m/{none,stats}`: one decode step (1 new token at position 256) after a 256-token prefill.
//!   The prefilled cache is cloned and a fresh capture allocated in untimed setup (a real run keeps its
//!   capture across steps); only the forward step is timed.
//!
//! Run: `cargo bench --bench prefill` (about 75 s on 2 idle cores).

use attnscope_core::capture::{CaptureSpec, SequenceCapture, WeightsDtype};
use attnscope_core::model::random::named_model;
use attnscope_core::model::{KvCache, LogitRows, Model};
use attnscope_core::rng::Rng;
use attnscope_core::slots::SlotInfo;
use attnscope_core::slots::Visibility;
use criterion::{BatchSize, Criterion, SamplingMode, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;

/// Prompt length.
const T: usize = 256;

/// `n` pseudo-random token ids below `vocab` at positions `start..start + n` (the seeded `Rng`).
fn random_slots(n: usize, start: usize, vocab: usize, seed: u64) -> Vec<SlotInfo> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| SlotInfo::prompt(rng.below(vocab as u64) as u32, (start + i) as i64, -1))
        .collect()
}

/// Capture spec for a bench id: `none` → no capture, `stats`, or `weights` (f32), all layers and heads.
fn spec(kind: &str) -> Option<CaptureSpec> {
    let (stats, weights) = match kind {
        "none" => return None,
        "stats" => (true, false),
        "weights" => (false, true),
        other => panic!("unknown capture kind {other}"),
    };
    Some(CaptureSpec {
        stats,
        weights,
        weights_dtype: WeightsDtype::F32,
        layers: None,
        heads: None,
    })
}

/// One prefill of `slots` into a fresh cache, with the capture `spec` asks for, results collected.
fn prefill(model: &Model, slots: &[SlotInfo], spec: Option<&CaptureSpec>) -> usize {
    let mut cache = KvCache::new(&model.cfg, slots.len(), Visibility::Visible);
    let mut cap = spec.map(|s| SequenceCapture::new(s, &model.cfg, slots.len()));
    let logits = model
        .forward(&mut cache, slots, cap.as_mut(), LogitRows::Last)
        .expect("prefill");
    let captured = cap.map_or(0, |c| c.finish(cache.slots()).layers.len());
    black_box(&logits);
    logits.len() + captured
}

fn benches(c: &mut Criterion) {
    let model = named_model("llama-100m", 0).expect("llama-100m");
    let vocab = model.cfg.vocab_size;
    let prompt = random_slots(T, 0, vocab, 1);

    let mut group = c.benchmark_group("prefill_llama100m_t256");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    for kind in ["none", "stats", "weights"] {
        let s = spec(kind);
        group.bench_function(kind, |b| {
            b.iter(|| prefill(&model, black_box(&prompt), s.as_ref()))
        });
    }
    group.finish();

    // Decode: one token after the 256-token prompt.
    let mut prefilled = KvCache::new(&model.cfg, T + 1, Visibility::Visible);
    model
        .forward(&mut prefilled, &prompt, None, LogitRows::None)
        .expect("prefill for decode");
    let next = random_slots(1, T, vocab, 2);
    let mut group = c.benchmark_group("decode_llama100m");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for kind in ["none", "stats"] {
        let s = spec(kind);
        group.bench_function(kind, |b| {
            b.iter_batched(
                || {
                    let cap = s
                        .as_ref()
                        .map(|s| SequenceCapture::new(s, &model.cfg, T + 1));
                    (prefilled.try_clone().expect("host cache"), cap)
                },
                |(mut cache, mut cap)| {
                    let logits = model
                        .forward(&mut cache, &next, cap.as_mut(), LogitRows::Last)
                        .expect("decode");
                    (logits, cache, cap)
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(prefill_benches, benches);
criterion_main!(prefill_benches);
