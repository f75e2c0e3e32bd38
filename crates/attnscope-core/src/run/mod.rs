//! One run: prefill each sequence, optionally generate, capture attention, and hand the results to
//! `run::outputs` for writing. The CLI and the tests drive this module; it owns no I/O but the model's.

pub mod ablation;
pub mod batch;
pub mod budget;
pub mod parallel;
mod step;

pub use batch::run_batch;

use crate::Error;
use crate::Result;
use crate::capture::{CaptureSpec, SequenceResult};
use crate::input::SequenceInput;
use crate::model::Model;
use crate::sampling::SamplerConfig;
use crate::slots::SlotInfo;
use parallel::ParallelOptions;

/// Generation settings of a run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GenerateOptions {
    /// Logical generation steps after the prompt (0 = prefill only); with parallel sets a step may emit
    /// several tokens at one position.
    pub max_new_tokens: usize,
    pub sampler: SamplerConfig,
    /// Stop a sequence when it emits one of the model's EOS tokens.
    pub stop_at_eos: bool,
    /// TEMPO-style parallel sets; `None` = one token per step.
    pub parallel: Option<ParallelOptions>,
    /// Which logits rows of the prompt [`SequenceOutcome::logits`] keeps.
    pub prompt_logits: PromptLogits,
}

/// Which logits rows of the prompt a run keeps ([`SequenceOutcome::logits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptLogits {
    /// None.
    #[default]
    None,
    /// The last prompt slot's row: the distribution the first generated token is sampled from.
    Last,
    /// One row per prompt slot, in slot order (the prefill computes them all).
    All,
}

/// Logits rows of a prompt, `[rows, vocab]` row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptLogitRows {
    pub rows: usize,
    pub vocab: usize,
    pub data: Vec<f32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 0,
            sampler: SamplerConfig::default(),
            stop_at_eos: true,
            parallel: None,
            prompt_logits: PromptLogits::None,
        }
    }
}

/// What running one sequence produced.
pub struct SequenceOutcome {
    /// Every slot: prompt then generated.
    pub slots: Vec<SlotInfo>,
    pub visibility: crate::slots::Visibility,
    pub n_prompt: usize,
    pub capture: Option<SequenceResult>,
    /// The prompt's logits rows [`GenerateOptions::prompt_logits`] asks for (`None` when it asks for none).
    pub logits: Option<PromptLogitRows>,
    pub prefill_seconds: f64,
    /// Wall time of each generation step.
    pub decode_seconds: Vec<f64>,
    pub stopped_at_eos: bool,
}

/// Checks that a sequence plus its generated tokens fits the model (vocab, positions, context), that its
/// positions and parallel-group counter cannot overflow, and that its KV cache and recorders fit in the
/// machine's memory; returns what they take on the host.
pub fn check_fits(
    model: &Model,
    seq: &SequenceInput,
    generation: &GenerateOptions,
    spec: &CaptureSpec,
    where_: &str,
) -> Result<budget::SequenceBytes> {
    crate::input::validate_sequence(seq, model.cfg.vocab_size, None, where_)?;
    let generate = generation.max_new_tokens;
    let max_position = seq.positions.iter().copied().max().unwrap_or(0);
    let last = i64::try_from(generate)
        .ok()
        .and_then(|g| max_position.checked_add(g))
        .ok_or_else(|| {
            Error::input(format!(
                "{where_}: position {max_position} + --generate {generate} overflows the position counter (i64)"
            ))
        })?;
    if let Some(max) = model.cfg.max_positions
        && last >= max as i64
    {
        return Err(Error::input(format!(
            "{where_}: {} tokens{} reach position {last}, beyond the model's context of {max} positions \
             (max_position_embeddings)",
            seq.token_ids.len(),
            if generate > 0 {
                format!(" + {generate} generated")
            } else {
                String::new()
            },
        )));
    }
    if generation.parallel.is_some() {
        // Each step opens at most one new group after the largest given one.
        let max_group = seq.groups.iter().copied().max().unwrap_or(-1).max(-1);
        if max_group as i128 + 1 + generate as i128 > i32::MAX as i128 {
            return Err(Error::input(format!(
                "{where_}: group {max_group} + --generate {generate} parallel sets overflow the group counter (i32)"
            )));
        }
    }
    let capacity = budget::sequence_capacity(seq.token_ids.len(), generation)?;
    let kv_on_host = model.device().device == "cpu";
    let bytes = budget::SequenceBytes::new(&model.cfg, spec, capacity, kv_on_host);
    let per_step = generation.parallel.map_or(String::new(), |p| {
        format!(" × --parallel-max {}", p.max_set)
    });
    budget::check_available(
        bytes.kv_cache + bytes.capture,
        &format!(
            "{where_}: the KV cache and capture of {capacity} slots ({} prompt tokens + --generate {generate}{per_step})",
            seq.token_ids.len()
        ),
    )?;
    Ok(bytes)
}

/// Prefills `seq` in one forward pass, then generates up to `generation.max_new_tokens` tokens one step at a
/// time through the KV cache. With capture on, every query row (prompt and generated) is recorded, so the
/// captured `[heads, T, T]` covers both. The prefill computes the logits of every prompt slot for
/// [`PromptLogits::All`] (else of the last one, when they are kept or a token is generated), and the
/// outcome keeps the rows `generation.prompt_logits` asks for. `on_step` is called after the prefill and
/// after every step; an error it returns (e.g. [`Error::Interrupted`]) stops the sequence there and is
/// returned. It is [`run_batch`] over the one sequence.
pub fn run_sequence(
    model: &Model,
    seq: &SequenceInput,
    spec: &CaptureSpec,
    generation: &GenerateOptions,
    on_step: &mut dyn FnMut() -> Result<()>,
) -> Result<SequenceOutcome> {
    // One code path: a batch of one.
    run_batch(model, &[seq], spec, generation, on_step)?
        .pop()
        .ok_or_else(|| Error::input("run: a batch of one sequence returned no outcome"))
}

/// The prompt rows `which` keeps of the prefill's `logits` (every prompt row for `All`, the last for
/// `Last`), leaving in `logits` the last row, which the first generated token is sampled from.
fn prompt_rows(
    which: PromptLogits,
    logits: &mut Vec<f32>,
    vocab: usize,
) -> Option<PromptLogitRows> {
    let rows = match which {
        PromptLogits::None => return None,
        PromptLogits::Last => PromptLogitRows {
            rows: 1,
            vocab,
            data: logits.clone(),
        },
        PromptLogits::All => {
            let data = logits.clone();
            logits.drain(..data.len().saturating_sub(vocab));
            PromptLogitRows {
                rows: data.len() / vocab.max(1),
                vocab,
                data,
            }
        }
    };
    Some(rows)
}

/// Refuses logits that hold NaN or ±∞: the forward pass overflowed (weights or inputs far outside what the
/// model was trained on), and every probability and statistic after it would be NaN too. An error, not a
/// warning: a run directory of NaN is never what was asked for.
pub(crate) fn check_finite(logits: &[f32], at: &str) -> Result<()> {
    match logits.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::input(format!(
            "{at}: the logits hold non-finite values (first: {} at index {i}); the forward pass overflowed \
             (check the weights and config.json)",
            logits[i]
        ))),
    }
}
