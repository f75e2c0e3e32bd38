//! Several sequences run together: one prefill pass over all of them, then one pass per generation step
//! over those still generating, so that every weight matrix is read once per step for the whole batch
//! (`Model::forward_batch_into`) while each sequence keeps its own cache, sampler and capture.

use super::parallel::{self, SetDistribution};
use super::step::{logit_rows_after, next_slots};
use super::{
    GenerateOptions, PromptLogitRows, PromptLogits, SequenceOutcome, budget, check_finite,
    prompt_rows,
};
use crate::Error;
use crate::Result;
use crate::capture::{CaptureSpec, SequenceCapture};
use crate::input::SequenceInput;
use crate::model::{BatchItem, KvCache, LogitRows, Model};
use crate::sampling::Sampler;
use crate::slots::SlotInfo;
use std::time::Instant;

/// Runs every sequence of `seqs` as [`super::run_sequence`] runs it alone, but together: one prefill
/// pass over all of them, then generation in lockstep, one pass per step over the sequences still
/// generating (a sequence leaves the batch after its last step, or at EOS when `generation.stop_at_eos`).
/// Outcome i is what `run_sequence(model, seqs[i], ..)` returns: the same tokens (each sequence samples
/// from its own `Sampler::new(generation.sampler)`), parallel sets, prompt logits and captures, up to the
/// rounding of batched matrix products. A pass returns every logits row of a set when any sequence in it
/// needs them ([`SetDistribution`] other than `Last`); the others take their last row. Each outcome's
/// `prefill_seconds` is the batch's prefill, its `decode_seconds` the wall time of each step it was in.
/// `on_step` is called after the prefill and after every step; an error it returns stops the whole batch
/// there and is returned. Every sequence's KV cache and capture are held at once: [`super::check_fits`]
/// checks one sequence, so a caller batching many checks their sum.
pub fn run_batch(
    model: &Model,
    seqs: &[&SequenceInput],
    spec: &CaptureSpec,
    generation: &GenerateOptions,
    on_step: &mut dyn FnMut() -> Result<()>,
) -> Result<Vec<SequenceOutcome>> {
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    let vocab = model.cfg.vocab_size;
    let at = |i: usize, what: &str| match seqs.len() {
        1 => what.to_string(),
        _ => format!("{what} of sequence {i} of the batch"),
    };
    let mut batch = seqs
        .iter()
        .map(|seq| Running::new(model, seq, spec, generation))
        .collect::<Result<Vec<_>>>()?;

    let started = Instant::now();
    let rows = match generation.prompt_logits {
        PromptLogits::All => LogitRows::All,
        PromptLogits::Last => LogitRows::Last,
        PromptLogits::None if generation.max_new_tokens > 0 => LogitRows::Last,
        PromptLogits::None => LogitRows::None,
    };
    pass(model, &mut batch, rows)?;
    for (i, r) in batch.iter().enumerate() {
        check_finite(&r.logits, &at(i, "the prefill"))?;
    }
    let prefill_seconds = started.elapsed().as_secs_f64();
    for r in batch.iter_mut() {
        r.prompt_logits = prompt_rows(generation.prompt_logits, &mut r.logits, vocab);
    }
    on_step()?;

    for step in 1..=generation.max_new_tokens {
        if !batch.iter().any(|r| r.active) {
            break;
        }
        let started = Instant::now();
        for r in batch.iter_mut().filter(|r| r.active) {
            r.begin_step(model, generation, step);
        }
        // The sampled tokens enter the caches so that their own attention rows are captured too.
        let rows = pass_rows(batch.iter().filter(|r| r.active).map(|r| r.wants.0));
        pass(model, &mut batch, rows)?;
        for (i, r) in batch.iter_mut().enumerate().filter(|(_, r)| r.active) {
            check_finite(&r.logits, &at(i, &format!("generation step {step}")))?;
            if rows == LogitRows::All {
                let how = match r.wants {
                    (LogitRows::All, how) => how,
                    _ => SetDistribution::Last,
                };
                r.logits = parallel::next_logits(&r.logits, vocab, how);
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        for r in batch.iter_mut().filter(|r| r.active) {
            r.decode_seconds.push(seconds);
        }
        on_step()?;
        for r in batch.iter_mut().filter(|r| r.active) {
            if r.is_eos && generation.stop_at_eos {
                r.stopped_at_eos = true;
                r.active = false;
            }
        }
    }
    batch
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.finish(prefill_seconds, &at(i, "the capture")))
        .collect()
}

/// One sequence of a batch while it runs.
struct Running<'s> {
    seq: &'s SequenceInput,
    cache: KvCache,
    capture: Option<SequenceCapture>,
    /// The slots of the current pass: the prompt, then each step's.
    new: Vec<SlotInfo>,
    /// The current pass's logits, then the distribution the next step samples from.
    logits: Vec<f32>,
    prompt_logits: Option<PromptLogitRows>,
    sampler: Sampler,
    first_position: i64,
    next_group: i32,
    /// The rows this step needs back, and how a set's rows make the next distribution.
    wants: (LogitRows, SetDistribution),
    is_eos: bool,
    decode_seconds: Vec<f64>,
    stopped_at_eos: bool,
    /// Still in the batch: takes part in the next pass.
    active: bool,
}

impl<'s> Running<'s> {
    /// The sequence before its prefill: its cache and capture sized for the prompt and every generated
    /// slot, its prompt slots as the first pass's.
    fn new(
        model: &Model,
        seq: &'s SequenceInput,
        spec: &CaptureSpec,
        generation: &GenerateOptions,
    ) -> Result<Running<'s>> {
        let n_prompt = seq.token_ids.len();
        if seq.positions.len() != n_prompt || seq.groups.len() != n_prompt {
            return Err(Error::input(format!(
                "run: {n_prompt} tokens with {} positions and {} groups",
                seq.positions.len(),
                seq.groups.len()
            )));
        }
        let capacity = budget::sequence_capacity(n_prompt, generation)?;
        let cache = model.new_cache(capacity, seq.visibility)?;
        let capture = spec
            .any()
            .then(|| SequenceCapture::new(spec, &model.cfg, capacity));
        let new = seq
            .token_ids
            .iter()
            .zip(&seq.positions)
            .zip(&seq.groups)
            .map(|((&token, &position), &group)| SlotInfo::prompt(token, position, group))
            .collect();
        Ok(Running {
            seq,
            cache,
            capture,
            new,
            logits: Vec::new(),
            prompt_logits: None,
            sampler: Sampler::new(generation.sampler),
            first_position: seq.positions.iter().copied().max().unwrap_or(-1) + 1,
            next_group: seq.groups.iter().copied().max().unwrap_or(-1).max(-1) + 1,
            wants: (LogitRows::None, SetDistribution::Last),
            is_eos: false,
            decode_seconds: Vec::new(),
            stopped_at_eos: false,
            active: true,
        })
    }

    /// Samples generation step `step`'s slots from the current distribution.
    fn begin_step(&mut self, model: &Model, generation: &GenerateOptions, step: usize) {
        let position = self.first_position + step as i64 - 1;
        self.new = next_slots(
            &self.logits,
            generation,
            &mut self.sampler,
            step,
            position,
            &mut self.next_group,
        );
        self.is_eos = self
            .new
            .iter()
            .any(|s| model.cfg.eos_token_ids.contains(&s.token));
        self.wants = logit_rows_after(step, generation, self.new.len() >= 2);
    }

    /// The outcome: every slot, the capture finished over them (and checked finite, `what` naming it).
    fn finish(self, prefill_seconds: f64, what: &str) -> Result<SequenceOutcome> {
        let slots = self.cache.slots().to_vec();
        let capture = self.capture.map(|c| c.finish(&slots));
        if let Some(c) = &capture {
            c.check_finite(what)?;
        }
        Ok(SequenceOutcome {
            capture,
            logits: self.prompt_logits,
            slots,
            visibility: self.seq.visibility,
            n_prompt: self.seq.token_ids.len(),
            prefill_seconds,
            decode_seconds: self.decode_seconds,
            stopped_at_eos: self.stopped_at_eos,
        })
    }
}

/// The rows a pass returns for sequences that want `wants`: every row when one of them needs a whole set,
/// else the last row when any needs logits, else none.
fn pass_rows(wants: impl Iterator<Item = LogitRows>) -> LogitRows {
    wants.fold(LogitRows::None, |rows, w| match (rows, w) {
        (LogitRows::All, _) | (_, LogitRows::All) => LogitRows::All,
        (LogitRows::Last, _) | (_, LogitRows::Last) => LogitRows::Last,
        _ => LogitRows::None,
    })
}

/// One forward pass over the active sequences of `batch`, appending their `new` slots; each one's logits
/// land in its own reused buffer.
fn pass(model: &Model, batch: &mut [Running], rows: LogitRows) -> Result<()> {
    let (mut items, mut outs): (Vec<BatchItem>, Vec<Vec<f32>>) = batch
        .iter_mut()
        .filter(|r| r.active)
        .map(|r| {
            let item = BatchItem {
                cache: &mut r.cache,
                new: &r.new,
                capture: r.capture.as_mut(),
            };
            (item, std::mem::take(&mut r.logits))
        })
        .unzip();
    let result = model.forward_batch_into(&mut items, rows, &mut outs);
    drop(items);
    for (r, out) in batch.iter_mut().filter(|r| r.active).zip(outs) {
        r.logits = out;
    }
    result
}

#[cfg(test)]
#[path = "tests_batch.rs"]
mod tests_batch;
