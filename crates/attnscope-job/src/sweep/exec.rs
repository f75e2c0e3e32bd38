//! Running one shard of a sweep: its units not yet committed (nor failed, unless `--retry-failed`), model
//! by model, packed into batches of at most `max_batch_tokens` slots that run through one forward pass per
//! step (`run_batch`); each unit is then committed on its own (`units/<id>/`, atomically), so peak memory
//! is one batch's captures whatever the number of units. A unit that cannot run (a prompt beyond the
//! context, a NaN) is recorded in `failed/<id>.json` and the shard goes on; a batch that fails is rerun
//! unit by unit so that only the culprit fails. With several devices, one worker per device takes every
//! W-th unit of the shard.

use crate::job::{record, record_generation};
use crate::manifest::unix_seconds;
use crate::sweep::plan::{PlannedUnit, RenderedUnit, Shard, UnitRef, render, unit_params};
use crate::sweep::prompts::Extra;
use crate::sweep::spec::SweepSpec;
use crate::sweep::{Plan, PlanFile, SweepDir};
use crate::{DtypeRequest, Job, JobInputs, JobResults, Session};
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::capture::CaptureSpec;
use attnscope_core::input::SequenceInput;
use attnscope_core::run::{GenerateOptions, SequenceOutcome, budget, check_fits, run_batch};
use attnscope_cuda::DeviceRequest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Sequences of one batch at most, whatever their length.
pub const MAX_BATCH_SEQUENCES: usize = 64;

/// How to run a shard.
pub struct SweepOptions<'a> {
    pub out: PathBuf,
    pub shard: Shard,
    pub max_batch_tokens: usize,
    pub retry_failed: bool,
    /// One worker per device (`cpu`, `cuda:N`); empty: one worker on each model's own device.
    pub devices: Vec<String>,
    /// The command line, recorded in each unit's manifest.
    pub command: Vec<OsString>,
    /// Set (e.g. by SIGUSR1) to stop after the batch in progress.
    pub stop: &'a AtomicBool,
}

/// What a shard reports while it runs (shared by its workers).
pub trait SweepProgress: Sync {
    /// `pending` units to run; `done` already committed, `failed` recorded before.
    fn start(&self, _pending: usize, _done: usize, _failed: usize) {}
    /// A worker loads `model` on `device`.
    fn loading(&self, _model: &str, _device: &str) {}
    /// A batch ended: `done` units committed and `failed` recorded by it, of `tokens` prompt tokens.
    fn batch(&self, _done: usize, _failed: usize, _tokens: usize) {}
    /// A unit failed with `error`.
    fn failed(&self, _unit: &UnitRef, _error: &str) {}
    /// A one-line `note:` or `warning:` (e.g. a dead run's partial unit removed).
    fn note(&self, _line: &str) {}
    fn finish(&self) {}
}

/// No progress reporting.
pub struct QuietSweep;

impl SweepProgress for QuietSweep {}

/// What a shard run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SweepSummary {
    pub units: usize,
    pub already_done: usize,
    pub skipped_failed: usize,
    pub done: usize,
    pub failed: usize,
    /// Stopped by [`SweepOptions::stop`] before every unit ran.
    pub stopped: bool,
    pub seconds: f64,
}

/// `unit.json`: a committed unit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnitRecord {
    #[serde(flatten)]
    pub unit: UnitRef,
    pub shard: String,
    pub host: String,
    pub pid: u32,
    pub device: String,
    pub batch_units: usize,
    pub batch_tokens: usize,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Token range `[start, end)` of the prompt in the sequence (the template's text around it excluded).
    pub prompt_span: (usize, usize),
    pub filler_span: Option<(usize, usize)>,
    pub text: Option<String>,
    pub generated_text: Option<String>,
    /// Wall time of the batch's prefill pass (shared by its units).
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    pub write_seconds: f64,
    pub finished_unix_seconds: u64,
    /// The prompt row's carried columns.
    pub extra: BTreeMap<String, Extra>,
    pub params: serde_json::Value,
}

/// `failed/<id>.json`: a unit that failed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailedRecord {
    #[serde(flatten)]
    pub unit: UnitRef,
    pub error: String,
    pub shard: String,
    pub host: String,
    pub finished_unix_seconds: u64,
}

/// `shards/shard-<i>-of-<n>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardState {
    pub shard: Shard,
    pub host: String,
    pub pid: u32,
    /// `running`, `done` or `stopped`.
    pub state: String,
    pub started_unix_seconds: u64,
    pub updated_unix_seconds: u64,
    pub done: usize,
    pub failed: usize,
}

struct Shared<'a> {
    spec: &'a SweepSpec,
    dir: SweepDir,
    opts: &'a SweepOptions<'a>,
    progress: &'a dyn SweepProgress,
    host: String,
    counts: Mutex<(usize, usize)>,
    started: u64,
}

/// Runs the units of `opts.shard` that are not committed yet into `opts.out` (claimed for this plan).
pub fn run_shard(
    spec: &SweepSpec,
    plan: &Plan,
    opts: &SweepOptions,
    progress: &dyn SweepProgress,
) -> Result<SweepSummary> {
    let started = Instant::now();
    let dir = SweepDir::new(&opts.out);
    dir.claim(&PlanFile::new(spec, plan))?;
    let mut summary = SweepSummary::default();
    // A dead run of this shard (SIGKILL, a lost node, a requeue onto another host) may have left its
    // units' hidden temp directories: this shard owns those units, so they go, whichever host wrote them.
    let mine: std::collections::HashSet<&[u8]> = plan
        .shard(opts.shard)
        .map(|u| u.unit.id.as_bytes())
        .collect();
    for note in attnscope_io::remove_partial_runs(&dir.units(), &|stem| mine.contains(stem)) {
        progress.note(&note);
    }
    let mut pending: Vec<&PlannedUnit> = Vec::new();
    for u in plan.shard(opts.shard) {
        summary.units += 1;
        if dir.is_done(&u.unit.id) {
            summary.already_done += 1;
        } else if dir.failed_unit(&u.unit.id).exists() && !opts.retry_failed {
            summary.skipped_failed += 1;
        } else {
            pending.push(u);
        }
    }
    progress.start(pending.len(), summary.already_done, summary.skipped_failed);
    let shared = Shared {
        spec,
        dir,
        opts,
        progress,
        host: attnscope_io::host_name(),
        counts: Mutex::new((0, 0)),
        started: unix_seconds(),
    };
    shared.write_state("running")?;
    let workers = opts.devices.len().max(1);
    let result: Result<()> = if workers == 1 {
        shared.work(&pending, opts.devices.first().map(String::as_str))
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    let mine: Vec<&PlannedUnit> =
                        pending.iter().copied().skip(w).step_by(workers).collect();
                    let (shared, device) = (&shared, opts.devices[w].as_str());
                    scope.spawn(move || shared.work(&mine, Some(device)))
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::input("a sweep worker panicked")))
            })
        })
    };
    let (done, failed) = shared.counts();
    summary.done = done;
    summary.failed = failed;
    summary.stopped = opts.stop.load(Ordering::SeqCst) && done + failed < pending.len();
    summary.seconds = started.elapsed().as_secs_f64();
    let state = if result.is_err() || summary.stopped {
        "stopped"
    } else {
        "done"
    };
    shared.write_state(state)?;
    progress.finish();
    result.map(|()| summary)
}

/// A unit ready to run.
struct Prepared<'u> {
    unit: &'u PlannedUnit,
    rendered: RenderedUnit,
    capacity: usize,
}

impl Shared<'_> {
    fn counts(&self) -> (usize, usize) {
        *self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self, state: &str) -> Result<()> {
        let (done, failed) = self.counts();
        let s = ShardState {
            shard: self.opts.shard,
            host: self.host.clone(),
            pid: std::process::id(),
            state: state.into(),
            started_unix_seconds: self.started,
            updated_unix_seconds: unix_seconds(),
            done,
            failed,
        };
        attnscope_io::write_json_atomic(&self.dir.shard_file(self.opts.shard), &s)
    }

    fn stopping(&self) -> bool {
        self.opts.stop.load(Ordering::SeqCst)
    }

    /// One worker: `units` model by model on `device` (or each model's own).
    fn work(&self, units: &[&PlannedUnit], device: Option<&str>) -> Result<()> {
        let mut start = 0;
        while start < units.len() {
            let m = units[start].model;
            let end = start + units[start..].iter().take_while(|u| u.model == m).count();
            if self.stopping() {
                return Ok(());
            }
            self.run_model(&units[start..end], device)?;
            start = end;
        }
        Ok(())
    }

    fn run_model(&self, units: &[&PlannedUnit], device: Option<&str>) -> Result<()> {
        let entry = &self.spec.models[units[0].model];
        let device = device.unwrap_or(&entry.device);
        self.progress.loading(&entry.name, device);
        let session = Session::open(
            &entry.path,
            DeviceRequest::parse(device)?,
            DtypeRequest::parse(&entry.dtype)?,
        )?;
        let cfg = &session.model.cfg;
        let spec = self.spec.capture.resolve(cfg.n_layers, cfg.n_heads)?;
        // Batches hold units of one generation setting (a variant's), longest first.
        let mut classes: BTreeMap<usize, Vec<Prepared>> = BTreeMap::new();
        for &u in units {
            match self.prepare(&session, &spec, u) {
                Ok(p) => classes.entry(u.variant).or_default().push(p),
                Err(e) => self.fail(&u.unit, &e.to_string())?,
            }
        }
        for (variant, mut class) in classes {
            let generation = self.spec.generation_of(&self.spec.variants[variant]);
            class.sort_by(|a, b| {
                b.capacity
                    .cmp(&a.capacity)
                    .then(a.unit.position.cmp(&b.unit.position))
            });
            for batch in pack(class, self.opts.max_batch_tokens) {
                if self.stopping() {
                    return Ok(());
                }
                self.run_batch(&session, &spec, &generation, batch)?;
                self.write_state("running")?;
            }
        }
        Ok(())
    }

    fn prepare<'u>(
        &self,
        session: &Session,
        spec: &CaptureSpec,
        u: &'u PlannedUnit,
    ) -> Result<Prepared<'u>> {
        let row = &self.spec.prompt_sets[u.set].rows[u.row];
        let variant = &self.spec.variants[u.variant];
        let rendered = render(row, variant, session.tokenizer.as_ref(), &u.unit.model)?;
        let generation = self.spec.generation_of(variant);
        check_fits(
            &session.model,
            &rendered.sequence,
            &generation,
            spec,
            "the prompt",
        )?;
        let capacity = budget::sequence_capacity(rendered.sequence.token_ids.len(), &generation)?;
        Ok(Prepared {
            unit: u,
            rendered,
            capacity,
        })
    }

    /// Runs one batch and commits its units; a failed batch of several units is rerun unit by unit.
    fn run_batch(
        &self,
        session: &Session,
        spec: &CaptureSpec,
        generation: &GenerateOptions,
        batch: Vec<Prepared>,
    ) -> Result<()> {
        let seqs: Vec<&SequenceInput> = batch.iter().map(|p| &p.rendered.sequence).collect();
        let tokens: usize = seqs.iter().map(|s| s.token_ids.len()).sum();
        match run_batch(&session.model, &seqs, spec, generation, &mut || Ok(())) {
            Ok(outcomes) => {
                let n = batch.len();
                for (p, outcome) in batch.into_iter().zip(outcomes) {
                    self.commit(session, spec, generation, &p, outcome, (n, tokens))?;
                }
                self.bump(n, 0);
                self.progress.batch(n, 0, tokens);
            }
            Err(e) if batch.len() == 1 => {
                self.fail(&batch[0].unit.unit, &e.to_string())?;
                self.progress.batch(0, 1, tokens);
            }
            Err(_) => {
                for p in batch {
                    self.run_batch(session, spec, generation, vec![p])?;
                }
            }
        }
        Ok(())
    }

    fn bump(&self, done: usize, failed: usize) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.0 += done;
        c.1 += failed;
    }

    fn fail(&self, unit: &UnitRef, error: &str) -> Result<()> {
        self.bump(0, 1);
        self.progress.failed(unit, error);
        let rec = FailedRecord {
            unit: unit.clone(),
            error: error.to_string(),
            shard: self.opts.shard.to_string(),
            host: self.host.clone(),
            finished_unix_seconds: unix_seconds(),
        };
        attnscope_io::write_json_atomic(&self.dir.failed_unit(&unit.id), &rec)
    }

    /// Writes `units/<id>/` (the run directory of one sequence, plus `unit.json`) and removes an earlier
    /// failure record of it.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        session: &Session,
        spec: &CaptureSpec,
        generation: &GenerateOptions,
        p: &Prepared,
        outcome: SequenceOutcome,
        (batch_units, batch_tokens): (usize, usize),
    ) -> Result<()> {
        let u = p.unit;
        let out = self.dir.unit(&u.unit.id);
        if self.dir.is_done(&u.unit.id) {
            return Ok(());
        }
        let write_started = Instant::now();
        let source = format!("{}[{}]", u.unit.prompts, u.unit.index);
        let mut input = record(
            0,
            source.clone(),
            p.rendered.text.clone(),
            &p.rendered.sequence,
        );
        record_generation(&mut input, &outcome, session);
        let prefill_seconds = outcome.prefill_seconds;
        let decode_seconds = outcome.decode_seconds.iter().sum();
        let results = JobResults {
            spec: spec.clone(),
            generation: generation.clone(),
            inputs: vec![input.clone()],
            outcomes: vec![outcome],
            run_seconds: prefill_seconds,
        };
        let mut job = Job::new(JobInputs::Sequences {
            source,
            sequences: Vec::new(),
        });
        job.command = self.opts.command.clone();
        let row = &self.spec.prompt_sets[u.set].rows[u.row];
        let unit_record = |write_seconds: f64| UnitRecord {
            unit: u.unit.clone(),
            shard: self.opts.shard.to_string(),
            host: self.host.clone(),
            pid: std::process::id(),
            device: session.placement.device.clone(),
            batch_units,
            batch_tokens,
            prompt_tokens: input.prompt_tokens,
            generated_tokens: input.generated_tokens,
            prompt_span: p.rendered.prompt_span,
            filler_span: p.rendered.filler_span,
            text: p.rendered.text.clone(),
            generated_text: input.generated_text.clone(),
            prefill_seconds,
            decode_seconds,
            write_seconds,
            finished_unix_seconds: unix_seconds(),
            extra: row.extra.clone(),
            params: unit_params(self.spec, u.model, u.set, u.row, u.variant),
        };
        results.write_run_with(&out, false, &job, session, &|dir| {
            let rec = unit_record(write_started.elapsed().as_secs_f64());
            attnscope_io::write_json(&dir.join("unit.json"), &rec)
        })?;
        let failed = self.dir.failed_unit(&u.unit.id);
        if failed.exists() {
            std::fs::remove_file(&failed).map_err(|e| Error::io(&failed, e))?;
        }
        Ok(())
    }
}

/// Packs `units` (longest first) into batches of at most `max_tokens` slots and [`MAX_BATCH_SEQUENCES`]
/// sequences; a unit longer than `max_tokens` runs alone.
fn pack(units: Vec<Prepared>, max_tokens: usize) -> Vec<Vec<Prepared>> {
    let mut batches: Vec<Vec<Prepared>> = Vec::new();
    let mut tokens = 0;
    for p in units {
        let fits = batches
            .last()
            .is_some_and(|b| b.len() < MAX_BATCH_SEQUENCES && tokens + p.capacity <= max_tokens);
        if fits {
            tokens += p.capacity;
            if let Some(b) = batches.last_mut() {
                b.push(p);
            }
        } else {
            tokens = p.capacity;
            batches.push(vec![p]);
        }
    }
    batches
}
