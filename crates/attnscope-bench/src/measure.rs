//! One timed measurement: a prefill or a run of decode steps with the capture of one [`Mode`].

use crate::Mode;
use crate::memory::with_peak;
use attnscope_core::Result;
use attnscope_core::config::ModelConfig;
use attnscope_core::model::forward::BatchItem;
use attnscope_core::model::{KvCache, LogitRows, Model};
use attnscope_core::rng::Rng;
use attnscope_core::sampling::argmax;
use attnscope_core::slots::Visibility;
use attnscope_core::slots::{SlotInfo, SlotKind};
use std::hint::black_box;
use std::time::Instant;

/// The outcome of one measurement.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Seconds of the timed part (for decode: all steps together).
    pub seconds: f64,
    /// Peak resident memory of the process during the measurement, when known.
    pub peak_bytes: Option<u64>,
}

/// `n` pseudo-random prompt slots with token ids below `vocab` at positions `0..n` (the seeded `Rng`).
pub fn random_prompt(n: usize, vocab: usize, seed: u64) -> Vec<SlotInfo> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| SlotInfo::prompt(rng.below(vocab as u64) as u32, i as i64, -1))
        .collect()
}

/// The `batch` prompts of `context` tokens of a decode measurement: prompt `b` is [`random_prompt`] with
/// seed `seed + 1 + b`.
pub fn decode_prompts(
    cfg: &ModelConfig,
    batch: usize,
    context: usize,
    seed: u64,
) -> Vec<Vec<SlotInfo>> {
    (0..batch)
        .map(|b| random_prompt(context, cfg.vocab_size, seed + 1 + b as u64))
        .collect()
}

/// One prefill of `prompt`: a fresh `KvCache` (capacity T) and the mode's `SequenceCapture` are allocated,
/// `Model::forward` computes the logits of the last row, and `SequenceCapture::finish` collects the
/// results, all inside the timed region.
pub fn prefill(model: &Model, prompt: &[SlotInfo], mode: Mode) -> Result<Sample> {
    let (result, peak_bytes) = with_peak(|| -> Result<f64> {
        let start = Instant::now();
        let t = prompt.len();
        let mut cache = model.new_cache(t, Visibility::Visible)?;
        let mut capture = mode.capture(&model.cfg, t);
        let logits = model.forward(&mut cache, prompt, capture.as_mut(), LogitRows::Last)?;
        let captured = capture.map(|c| c.finish(cache.slots()));
        let seconds = start.elapsed().as_secs_f64();
        black_box((&logits, &captured));
        Ok(seconds)
    });
    Ok(Sample {
        seconds: result?,
        peak_bytes,
    })
}

/// Batched greedy decode: `prompts.len()` sequences are prefilled (untimed, with capture), then `steps`
/// steps of `Model::forward_batch` with one new token per sequence (argmax of its last logits) are timed.
/// Each sequence has its own cache and capture of capacity context + steps. The peak memory covers the
/// untimed prefill too, since the caches and captures live through both.
pub fn decode(
    model: &Model,
    prompts: &[Vec<SlotInfo>],
    steps: usize,
    mode: Mode,
) -> Result<Sample> {
    let (result, peak_bytes) = with_peak(|| -> Result<f64> {
        let capacity = prompts.iter().map(Vec::len).max().unwrap_or(0) + steps;
        let mut caches: Vec<KvCache> = prompts
            .iter()
            .map(|_| model.new_cache(capacity, Visibility::Visible))
            .collect::<Result<_>>()?;
        let mut captures: Vec<_> = prompts
            .iter()
            .map(|_| mode.capture(&model.cfg, capacity))
            .collect();
        let mut logits = {
            let mut items: Vec<BatchItem> = caches
                .iter_mut()
                .zip(captures.iter_mut())
                .zip(prompts)
                .map(|((cache, capture), p)| BatchItem {
                    cache,
                    new: p,
                    capture: capture.as_mut(),
                })
                .collect();
            model.forward_batch(&mut items, LogitRows::Last)?
        };
        let start = Instant::now();
        for step in 0..steps {
            let next: Vec<[SlotInfo; 1]> = logits
                .iter()
                .zip(&caches)
                .map(|(l, cache)| {
                    [SlotInfo {
                        token: argmax(l),
                        position: cache.len() as i64,
                        group: -1,
                        step: step as u32 + 1,
                        kind: SlotKind::Generated,
                        ablated: false,
                    }]
                })
                .collect();
            let mut items: Vec<BatchItem> = caches
                .iter_mut()
                .zip(captures.iter_mut())
                .zip(&next)
                .map(|((cache, capture), new)| BatchItem {
                    cache,
                    new,
                    capture: capture.as_mut(),
                })
                .collect();
            logits = model.forward_batch(&mut items, LogitRows::Last)?;
        }
        let seconds = start.elapsed().as_secs_f64();
        black_box((&logits, &captures));
        Ok(seconds)
    });
    Ok(Sample {
        seconds: result?,
        peak_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use attnscope_core::model::random::random_model;
    use std::path::Path;

    fn tiny() -> Model {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/fixtures/llama_gqa/config.json"),
        )
        .unwrap();
        random_model(
            ModelConfig::from_json_str(Path::new("tiny"), &text).unwrap(),
            0,
        )
    }

    #[test]
    fn prompts_are_deterministic_and_in_range() {
        let a = random_prompt(50, 192, 3);
        assert_eq!(a, random_prompt(50, 192, 3));
        assert_ne!(a, random_prompt(50, 192, 4));
        assert!(a.iter().all(|s| s.token < 192));
        assert_eq!(a[49].position, 49);
    }

    #[test]
    fn prefill_and_decode_run_in_every_mode() {
        let model = tiny();
        let prompt = random_prompt(9, model.cfg.vocab_size, 1);
        let prompts = vec![prompt.clone(), random_prompt(9, model.cfg.vocab_size, 2)];
        for mode in Mode::ALL {
            let s = prefill(&model, &prompt, mode).unwrap();
            assert!(s.seconds > 0.0);
            let d = decode(&model, &prompts, 3, mode).unwrap();
            assert!(d.seconds > 0.0);
        }
    }
}
