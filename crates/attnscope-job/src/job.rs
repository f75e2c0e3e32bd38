//! A job: inputs, a capture request and generation settings, run on a [`Session`]. The results come back in
//! memory ([`Job::run`]) or as a run directory ([`Job::write_run`]: manifest.json, Parquet tables,
//! attention.safetensors), written to a temporary sibling sequence by sequence and renamed only when
//! complete.

use crate::manifest::RunRecord;
pub use crate::output::create_parents;
use crate::output::{finish_run, run_writer, with_run_dir};
use crate::session::Session;
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::capture::{CaptureSpec, WeightsDtype};
use attnscope_core::input::{InputSpec, SequenceInput};
use attnscope_core::run::{GenerateOptions, SequenceOutcome, budget, check_fits, run_sequence};
use attnscope_core::slots::Visibility;
use attnscope_io::RunDir;
use attnscope_io::manifest::{InputRecord, Manifest};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a job runs.
#[derive(Clone, Debug)]
pub enum JobInputs {
    /// Texts, through the model's tokenizer (BOS as its config says).
    Prompts(Vec<String>),
    /// An `--input` spec file: token ids with positions, groups and visibility.
    SpecFile(PathBuf),
    /// Sequences built in code; `source` names them in the manifest.
    Sequences {
        source: String,
        sequences: Vec<SequenceInput>,
    },
}

/// What to capture. Layer and head selections are index lists such as `0,3,8-11`, checked against the
/// model when the job starts (errors name `--layers` / `--heads`).
#[derive(Clone, Debug, PartialEq)]
pub struct CaptureRequest {
    pub stats: bool,
    pub weights: bool,
    pub weights_dtype: WeightsDtype,
    pub layers: Option<String>,
    pub heads: Option<String>,
}

impl Default for CaptureRequest {
    fn default() -> Self {
        CaptureRequest {
            stats: true,
            weights: false,
            weights_dtype: WeightsDtype::F32,
            layers: None,
            heads: None,
        }
    }
}

impl CaptureRequest {
    /// The request with `--capture KINDS` parsed (`none`, `stats`, `weights`, `all` or a comma list).
    pub fn from_kinds(kinds: &str) -> Result<CaptureRequest> {
        let (stats, weights) = CaptureSpec::parse_kinds(kinds)?;
        Ok(CaptureRequest {
            stats,
            weights,
            ..CaptureRequest::default()
        })
    }

    /// The capture spec for a model of `n_layers` layers and `n_heads` query heads.
    pub fn resolve(&self, n_layers: usize, n_heads: usize) -> Result<CaptureSpec> {
        let parse = |arg: &Option<String>, flag: &str, limit: usize| {
            arg.as_deref()
                .map(|s| CaptureSpec::parse_indices(flag, s, limit))
                .transpose()
        };
        Ok(CaptureSpec {
            stats: self.stats,
            weights: self.weights,
            weights_dtype: self.weights_dtype,
            layers: parse(&self.layers, "--layers", n_layers)?,
            heads: parse(&self.heads, "--heads", n_heads)?,
        })
    }
}

/// Progress of a running job, for a progress bar (the CLI) or nothing (tests, libraries). [`Progress::check`]
/// and [`Progress::step`] may stop the job: an error they return (e.g. [`Error::Interrupted`] when a front
/// end was interrupted) ends it with that error, and [`Job::write_run`] then leaves nothing behind.
pub trait Progress {
    /// The job has `total_steps` steps: one prefill per sequence plus its generation steps.
    fn start(&mut self, _total_steps: u64) {}
    /// Called before each sequence begins; an error stops the job before it.
    fn check(&mut self) -> Result<()> {
        Ok(())
    }
    /// Sequence `index` (0-based) of `count` begins.
    fn sequence(&mut self, _index: usize, _count: usize) {}
    /// A prefill or a generation step finished; an error stops the job there.
    fn step(&mut self) -> Result<()> {
        Ok(())
    }
    /// Every sequence has run.
    fn finish(&mut self) {}
}

/// No progress reporting.
pub struct Quiet;

impl Progress for Quiet {}

/// A job: inputs, capture and generation settings.
#[derive(Clone, Debug)]
pub struct Job {
    pub inputs: JobInputs,
    pub capture: CaptureRequest,
    pub generation: GenerateOptions,
    /// Overrides the visibility of every sequence.
    pub visibility: Option<Visibility>,
    /// The command line recorded in the manifest (OS strings: non-UTF-8 is recorded escaped).
    pub command: Vec<std::ffi::OsString>,
}

/// What a job produced, in memory: everything its run directory holds ([`JobResults::write_run`]).
pub struct JobResults {
    pub spec: CaptureSpec,
    /// The generation settings the sequences ran with.
    pub generation: GenerateOptions,
    pub inputs: Vec<InputRecord>,
    pub outcomes: Vec<SequenceOutcome>,
    /// Wall time of [`Job::run`] in seconds (the manifest's total is this plus the writing).
    pub run_seconds: f64,
}

impl JobResults {
    /// Writes the run directory `out` that [`Job::write_run`] (and `attnscope run`) writes for the job
    /// that produced these results: the same files, tables and tensors, and a manifest built the same way
    /// (its command line is `job.command`; the generation settings are the ones the results ran with; its
    /// timings are the run's and this call's). Through a temporary sibling renamed when complete; missing
    /// parents are created, and on any failure nothing is left behind. Returns the directory and its
    /// manifest.
    pub fn write_run(
        &self,
        out: &Path,
        overwrite: bool,
        job: &Job,
        session: &Session,
    ) -> Result<(PathBuf, Manifest)> {
        self.write_run_with(out, overwrite, job, session, &|_| Ok(()))
    }

    /// [`JobResults::write_run`], with `extra` called on the temporary directory after the run's files
    /// and before the manifest and the commit (a sweep writes its `unit.json` there, inside the atomic
    /// rename).
    pub(crate) fn write_run_with(
        &self,
        out: &Path,
        overwrite: bool,
        job: &Job,
        session: &Session,
        extra: &dyn Fn(&Path) -> Result<()>,
    ) -> Result<(PathBuf, Manifest)> {
        let run = Duration::try_from_secs_f64(self.run_seconds).unwrap_or_default();
        let started = Instant::now().checked_sub(run).unwrap_or_else(Instant::now);
        with_run_dir(out, overwrite, |run_dir| {
            let write_started = Instant::now();
            let mut writer = run_writer(&run_dir, session);
            for (seq, outcome) in self.outcomes.iter().enumerate() {
                writer.write_sequence(seq, outcome)?;
            }
            let record = RunRecord {
                command: &job.command,
                generation: &self.generation,
                spec: &self.spec,
                inputs: &self.inputs,
                outcomes: &self.outcomes,
            };
            extra(run_dir.path())?;
            let write_seconds = write_started.elapsed().as_secs_f64();
            finish_run(run_dir, writer, &record, session, write_seconds, started)
        })
    }
}

impl Job {
    /// Rejects generation settings that cannot work, before anything runs (the CLI's flag checks,
    /// shared with the Python module): errors name the flag.
    pub fn check_settings(&self) -> Result<()> {
        let g = &self.generation;
        let s = &g.sampler;
        if !(s.temperature >= 0.0 && s.temperature.is_finite()) {
            return Err(Error::input("--temperature: must be a finite number ≥ 0"));
        }
        if !(s.top_p > 0.0 && s.top_p <= 1.0) {
            return Err(Error::input("--top-p: must be in (0, 1]"));
        }
        if let Some(p) = &g.parallel {
            if !(p.threshold > 0.0 && p.threshold <= 1.0) {
                return Err(Error::input("--parallel-threshold: must be in (0, 1]"));
            }
            if p.max_set < 2 {
                return Err(Error::input(
                    "--parallel-max: a parallel set needs at least 2 tokens",
                ));
            }
        }
        Ok(())
    }

    /// A job over `inputs` with the default capture (statistics) and no generation.
    pub fn new(inputs: JobInputs) -> Job {
        Job {
            inputs,
            capture: CaptureRequest::default(),
            generation: GenerateOptions::default(),
            visibility: None,
            command: std::env::args_os().collect(),
        }
    }

    /// Runs every sequence on `session` and returns the captures in memory (every capture is held until
    /// the call returns).
    pub fn run(&self, session: &Session, progress: &mut dyn Progress) -> Result<JobResults> {
        let started = Instant::now();
        let prepared = self.prepare(session, CapturesHeld::Every)?;
        let (spec, mut inputs) = (prepared.spec, prepared.inputs);
        let outcomes = self.run_sequences(
            session,
            &spec,
            &prepared.sequences,
            &mut inputs,
            progress,
            &mut |_, _| Ok(()),
        )?;
        Ok(JobResults {
            spec,
            generation: self.generation.clone(),
            inputs,
            outcomes,
            run_seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Claims `out` (creating missing parents), opens the session with `open`, runs the job and writes the
    /// run directory, each sequence's rows and tensors as soon as it ends (its capture is dropped then, so
    /// one capture at a time is held). A bad `out` fails before any long work; on any failure nothing is
    /// left behind (the temporary directory and the parents this call created are removed). Returns the
    /// directory and its manifest.
    pub fn write_run(
        &self,
        out: &Path,
        overwrite: bool,
        open: impl FnOnce() -> Result<Session>,
        progress: &mut dyn Progress,
    ) -> Result<(PathBuf, Manifest)> {
        let started = Instant::now();
        with_run_dir(out, overwrite, |run_dir| {
            let session = open()?;
            self.stream_run(run_dir, &session, progress, started)
        })
    }

    /// Runs the job into the claimed `run_dir` through a [`attnscope_io::RunWriter`], writing and dropping
    /// each sequence's capture as it ends, then writes the manifest and commits.
    fn stream_run(
        &self,
        run_dir: RunDir,
        session: &Session,
        progress: &mut dyn Progress,
        started: Instant,
    ) -> Result<(PathBuf, Manifest)> {
        let prepared = self.prepare(session, CapturesHeld::One)?;
        let (spec, mut inputs) = (prepared.spec, prepared.inputs);
        let mut writer = run_writer(&run_dir, session);
        let mut write_seconds = 0.0;
        let outcomes = self.run_sequences(
            session,
            &spec,
            &prepared.sequences,
            &mut inputs,
            progress,
            &mut |seq, outcome| {
                let write_started = Instant::now();
                writer.write_sequence(seq, outcome)?;
                // One capture at a time: this one is on disk now.
                outcome.capture = None;
                write_seconds += write_started.elapsed().as_secs_f64();
                Ok(())
            },
        )?;
        let record = RunRecord {
            command: &self.command,
            generation: &self.generation,
            spec: &spec,
            inputs: &inputs,
            outcomes: &outcomes,
        };
        finish_run(run_dir, writer, &record, session, write_seconds, started)
    }

    /// Runs `sequences` one after another, the code [`Job::run`] and [`Job::write_run`] share: fills each
    /// one's record in `inputs` (generated tokens and text, EOS), hands its outcome to `each` and returns
    /// the outcomes (with whatever `each` left of their captures).
    fn run_sequences(
        &self,
        session: &Session,
        spec: &CaptureSpec,
        sequences: &[SequenceInput],
        inputs: &mut [InputRecord],
        progress: &mut dyn Progress,
        each: &mut dyn FnMut(usize, &mut SequenceOutcome) -> Result<()>,
    ) -> Result<Vec<SequenceOutcome>> {
        let total_steps = sequences.len() as u64 * (1 + self.generation.max_new_tokens as u64);
        progress.start(total_steps);
        let mut outcomes = Vec::with_capacity(sequences.len());
        for (i, (seq, rec)) in sequences.iter().zip(inputs.iter_mut()).enumerate() {
            progress.check()?;
            progress.sequence(i, sequences.len());
            let mut outcome =
                run_sequence(&session.model, seq, spec, &self.generation, &mut || {
                    progress.step()
                })?;
            record_generation(rec, &outcome, session);
            each(i, &mut outcome)?;
            outcomes.push(outcome);
        }
        progress.finish();
        Ok(outcomes)
    }

    /// The capture spec resolved against the model, and the token sequences from the prompts (through the
    /// tokenizer) or the spec, each checked against the model and all of them against the machine's memory
    /// as `held` says the run holds their captures.
    fn prepare(&self, session: &Session, held: CapturesHeld) -> Result<PreparedJob> {
        let model = &session.model;
        let spec = self
            .capture
            .resolve(model.cfg.n_layers, model.cfg.n_heads)?;
        let spec = &spec;
        let mut seqs = Vec::new();
        let mut records = Vec::new();
        let (mut captures, mut largest_capture, mut largest_kv) = (0u128, 0u128, 0u128);
        let mut add = |mut seq: SequenceInput, source: String, text: Option<String>, at: String| {
            if let Some(v) = self.visibility {
                seq.visibility = v;
            }
            let bytes = check_fits(model, &seq, &self.generation, spec, &at)?;
            captures += bytes.capture;
            largest_capture = largest_capture.max(bytes.capture);
            largest_kv = largest_kv.max(bytes.kv_cache);
            records.push(record(records.len(), source, text, &seq));
            seqs.push(seq);
            Ok::<(), Error>(())
        };
        match &self.inputs {
            JobInputs::SpecFile(path) => {
                let spec = InputSpec::from_file(path)?;
                for (i, seq) in spec.sequences.into_iter().enumerate() {
                    let at = format!("{}: sequences[{i}]", path.display());
                    add(seq, path.display().to_string(), None, at)?;
                }
            }
            JobInputs::Sequences { source, sequences } => {
                for (i, seq) in sequences.iter().enumerate() {
                    add(seq.clone(), source.clone(), None, format!("{source}[{i}]"))?;
                }
            }
            JobInputs::Prompts(prompts) => {
                let tok = session.require_tokenizer(
                    "no tokenizer.json or vocab.json+merges.txt in the model directory; use --input with token ids",
                )?;
                for (i, text) in prompts.iter().enumerate() {
                    let seq = SequenceInput::from_tokens(tok.encode(text)?);
                    let at = format!("--prompt #{}", i + 1);
                    add(seq, "prompt".into(), Some(text.clone()), at)?;
                }
            }
        }
        if seqs.len() > 1 {
            let (needed, what) = match held {
                CapturesHeld::Every => (
                    captures + largest_kv,
                    format!(
                        "capturing {} sequences in memory (each capture is held until the job returns)",
                        seqs.len()
                    ),
                ),
                CapturesHeld::One => (
                    largest_capture + largest_kv,
                    format!(
                        "capturing {} sequences (one at a time: each capture is written and dropped when its \
                         sequence ends)",
                        seqs.len()
                    ),
                ),
            };
            budget::check_available(needed, &what)?;
        }
        Ok(PreparedJob {
            spec: spec.clone(),
            sequences: seqs,
            inputs: records,
        })
    }
}

/// How many captures a run holds at once, for the memory check before it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CapturesHeld {
    /// Every sequence's ([`Job::run`]: the results in memory).
    Every,
    /// One sequence's ([`Job::write_run`]: each written when its sequence ends).
    One,
}

/// A job resolved against a session, ready to run.
struct PreparedJob {
    spec: CaptureSpec,
    sequences: Vec<SequenceInput>,
    inputs: Vec<InputRecord>,
}

/// Fills in what `record` says of the generation: the number of generated tokens, whether the sequence
/// stopped at EOS, and the generated text (when there is a tokenizer and it decodes).
pub(crate) fn record_generation(
    record: &mut InputRecord,
    outcome: &SequenceOutcome,
    session: &Session,
) {
    record.generated_tokens = outcome.slots.len() - outcome.n_prompt;
    record.stopped_at_eos = outcome.stopped_at_eos;
    if let Some(tok) = &session.tokenizer {
        let ids: Vec<u32> = outcome.slots[outcome.n_prompt..]
            .iter()
            .map(|s| s.token)
            .collect();
        record.generated_text = tok.decode(&ids).ok();
    }
}

/// The manifest's record of one input sequence (generation fields are filled in after the run).
pub(crate) fn record(
    seq: usize,
    source: String,
    text: Option<String>,
    s: &SequenceInput,
) -> InputRecord {
    InputRecord {
        seq,
        source,
        text,
        visibility: s.visibility,
        prompt_tokens: s.token_ids.len(),
        generated_tokens: 0,
        stopped_at_eos: false,
        generated_text: None,
    }
}
