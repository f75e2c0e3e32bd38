//! Writing a run's files sequence by sequence, so that only one sequence's capture is ever in memory.
//!
//! [`RunWriter::write_sequence`] appends a finished sequence's rows to every Parquet table of the run (short
//! sequences are gathered into one row group, see [`ParquetWriter`]) and streams its captured weights into a data file; it
//! only borrows the sequence, whose capture the caller may drop then (`Job::write_run` does). A table's file is
//! created on the first sequence that has rows for it, so a run writes the same files as when every capture
//! was held to the end: tokens.parquet always; stats.parquet, received.parquet and distance.parquet when
//! statistics were captured; steps.parquet and step_groups.parquet when, besides, some sequence generated;
//! attention.safetensors when weights were captured. [`RunWriter::finish`] closes the Parquet files and
//! assembles attention.safetensors (header, then the streamed data; see [`SafetensorsWriter`]).

use crate::Table;
use crate::outputs::{layer_weights, tokens_table};
use crate::parquet_table::ParquetWriter;
use crate::tables::{StatsSource, StatsTables, stats_tables};
use crate::tensors_stream::SafetensorsWriter;
use attnscope_core::Result;
use attnscope_core::run::SequenceOutcome;
use attnscope_core::tokenizer::TextTokenizer;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The tensor file of a run with captured weights.
pub const ATTENTION_FILE: &str = "attention.safetensors";

/// A run's output files, written one sequence at a time into `dir` (the run's temporary directory).
pub struct RunWriter<'a> {
    dir: PathBuf,
    sliding_window: Option<usize>,
    tokenizer: Option<&'a TextTokenizer>,
    tokens: Option<ParquetWriter>,
    stats: Option<ParquetWriter>,
    received: Option<ParquetWriter>,
    distance: Option<ParquetWriter>,
    steps: Option<ParquetWriter>,
    step_groups: Option<ParquetWriter>,
    attention: Option<SafetensorsWriter>,
    /// `seq{s}.layer{l}.heads` of every tensor written so far.
    attention_metadata: BTreeMap<String, String>,
    /// Whether some sequence written so far generated tokens.
    generated: bool,
}

impl<'a> RunWriter<'a> {
    /// A writer of a run into `dir`, for a model whose sliding window is `sliding_window` (the distance
    /// and received tables interpret the captures through it); tokens are spelled by `tokenizer`.
    pub fn new(
        dir: &Path,
        sliding_window: Option<usize>,
        tokenizer: Option<&'a TextTokenizer>,
    ) -> RunWriter<'a> {
        RunWriter {
            dir: dir.to_path_buf(),
            sliding_window,
            tokenizer,
            tokens: None,
            stats: None,
            received: None,
            distance: None,
            steps: None,
            step_groups: None,
            attention: None,
            attention_metadata: BTreeMap::new(),
            generated: false,
        }
    }

    /// Appends sequence `seq`'s rows to the tables and its captured weights to the tensor data (each
    /// layer's tensor written from its slice of the sequence's weight buffer). It only borrows the outcome:
    /// a caller streaming a run drops the capture afterwards ([`SequenceOutcome::capture`]).
    pub fn write_sequence(&mut self, seq: usize, outcome: &SequenceOutcome) -> Result<()> {
        let tokens = tokens_table(seq, &outcome.slots, self.tokenizer);
        append(&mut self.tokens, &self.dir.join("tokens.parquet"), &tokens)?;
        drop(tokens);
        let generated = outcome.slots.len() > outcome.n_prompt;
        self.generated |= generated;
        if let Some(tables) = self.sequence_stats(seq, outcome) {
            self.append_stats(&tables, generated)?;
        }
        self.append_weights(seq, outcome)
    }

    /// The statistics tables of one sequence, when it captured statistics.
    fn sequence_stats(&self, seq: usize, outcome: &SequenceOutcome) -> Option<StatsTables> {
        let result = outcome.capture.as_ref()?;
        let has_stats = result.layers.iter().any(|l| !l.stats.is_empty());
        has_stats.then(|| {
            stats_tables(&[StatsSource {
                seq,
                slots: &outcome.slots,
                visibility: outcome.visibility,
                sliding_window: self.sliding_window,
                result,
            }])
        })
    }

    fn append_stats(&mut self, tables: &StatsTables, generated: bool) -> Result<()> {
        let dir = &self.dir;
        append(&mut self.stats, &dir.join("stats.parquet"), &tables.stats)?;
        append(
            &mut self.received,
            &dir.join("received.parquet"),
            &tables.received,
        )?;
        append(
            &mut self.distance,
            &dir.join("distance.parquet"),
            &tables.distance,
        )?;
        // Only generation-step query rows have step rows, so a sequence that generated nothing has none.
        if generated || !tables.steps.is_empty() || !tables.step_groups.is_empty() {
            self.append_steps(tables)?;
        }
        Ok(())
    }

    fn append_steps(&mut self, tables: &StatsTables) -> Result<()> {
        let dir = &self.dir;
        append(&mut self.steps, &dir.join("steps.parquet"), &tables.steps)?;
        append(
            &mut self.step_groups,
            &dir.join("step_groups.parquet"),
            &tables.step_groups,
        )
    }

    /// Streams each captured layer's `[heads, T, T]` weights as tensor `seq{s}.layer{l}`.
    fn append_weights(&mut self, seq: usize, outcome: &SequenceOutcome) -> Result<()> {
        let Some(weights) = outcome.capture.as_ref().and_then(|c| c.weights.as_ref()) else {
            return Ok(());
        };
        let shape = [weights.heads.len(), weights.t, weights.t];
        for (i, layer) in weights.layers.iter().enumerate() {
            let name = format!("seq{seq}.layer{layer}");
            let writer = match self.attention.take() {
                Some(w) => w,
                None => SafetensorsWriter::create(&self.dir.join(ATTENTION_FILE))?,
            };
            self.attention
                .insert(writer)
                .append_view(&name, &shape, layer_weights(weights, i))?;
            self.attention_metadata
                .insert(format!("{name}.heads"), format!("{:?}", weights.heads));
        }
        Ok(())
    }

    /// Closes every table (creating the ones a run of these sequences has but no sequence had rows for) and
    /// assembles attention.safetensors. Each file is fsynced; the first failure is returned.
    pub fn finish(mut self) -> Result<()> {
        let dir = self.dir.clone();
        if self.tokens.is_none() {
            let empty = tokens_table(0, &[], None);
            append(&mut self.tokens, &dir.join("tokens.parquet"), &empty)?;
        }
        if self.stats.is_some() && self.generated && self.steps.is_none() {
            self.append_steps(&stats_tables(&[]))?;
        }
        let tables = [
            self.tokens.take(),
            self.stats.take(),
            self.received.take(),
            self.distance.take(),
            self.steps.take(),
            self.step_groups.take(),
        ];
        for writer in tables.into_iter().flatten() {
            writer.finish()?;
        }
        if let Some(attention) = self.attention.take() {
            let mut metadata = std::mem::take(&mut self.attention_metadata);
            metadata.insert(
                "layout".into(),
                "[heads, query slot, key slot], post-softmax probabilities".into(),
            );
            attention.finish(&metadata)?;
        }
        Ok(())
    }
}

/// Appends `table` to the file at `path`, creating it (with `table`'s schema) on the first call.
fn append(writer: &mut Option<ParquetWriter>, path: &Path, table: &Table) -> Result<()> {
    match writer {
        Some(w) => w.append(table),
        None => writer
            .insert(ParquetWriter::create(path, table)?)
            .append(table),
    }
}

#[cfg(test)]
mod tests;
