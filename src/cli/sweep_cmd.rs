//! `attnscope sweep SPEC.toml` (run a shard, `--plan`, `--emit-slurm`), `attnscope sweep status DIR` and
//! `attnscope merge DIR`: flags → the job crate's `sweep` module, and the progress display (a bar on a
//! terminal, one line every `--log-every` seconds otherwise, e.g. in Slurm output files).

use crate::cli::{MergeArgs, SweepAction, SweepArgs, model_dir};
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_job::sweep::slurm::{EXIT_STOPPED, SlurmOptions, sbatch_script};
use attnscope_job::sweep::status::sweep_status;
use attnscope_job::sweep::{
    Plan, Shard, SweepOptions, SweepProgress, SweepSpec, UnitRef, load_spec, run_shard,
};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Runs `attnscope sweep`.
pub fn sweep(args: SweepArgs) -> Result<()> {
    if let Some(SweepAction::Status { dir, json }) = &args.action {
        return status(dir, *json);
    }
    let spec_path = args
        .spec
        .clone()
        .ok_or_else(|| Error::input("attnscope sweep: give SPEC.toml (or `sweep status DIR`)"))?;
    let spec = load_spec(&spec_path, &model_dir(None, true))?;
    let plan = Plan::new(&spec);
    if args.plan {
        return print_plan(&plan, args.json);
    }
    let out = args
        .out
        .clone()
        .ok_or_else(|| Error::input("--out DIR: where the sweep's units go (required)"))?;
    if args.emit_slurm {
        return emit_slurm(&args, &spec, &spec_path, &out);
    }
    if args.threads == Some(0) {
        return Err(Error::input("--threads: must be at least 1"));
    }
    crate::cli::threads::init_pool(args.threads)?;
    let shard = match &args.shard {
        Some(s) => Shard::parse(s, "--shard")?,
        None => Shard::from_slurm(|k| std::env::var(k).ok())?.unwrap_or(Shard::ALL),
    };
    let max_batch_tokens = args.max_batch_tokens.unwrap_or(spec.max_batch_tokens);
    if max_batch_tokens == 0 {
        return Err(Error::input("--max-batch-tokens: must be at least 1"));
    }
    let devices = match &args.devices {
        None => Vec::new(),
        Some(list) => parse_devices(list)?,
    };
    let stop = Arc::new(AtomicBool::new(false));
    #[cfg(unix)]
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&stop)) {
        eprintln!("warning: cannot handle SIGUSR1 ({e}); a time-limit signal will kill the shard");
    }
    let opts = SweepOptions {
        out: out.clone(),
        shard,
        max_batch_tokens,
        retry_failed: args.retry_failed,
        devices,
        command: std::env::args_os().collect(),
        stop: &stop,
    };
    let progress = Progress::new(args.quiet, args.log_every, shard);
    let summary = run_shard(&spec, &plan, &opts, &progress)?;
    if !args.quiet {
        eprintln!(
            "shard {shard}: {} units, {} committed now, {} done before, {} failed now, {} failed before{}; {:.1}s",
            summary.units,
            summary.done,
            summary.already_done,
            summary.failed,
            summary.skipped_failed,
            if summary.stopped {
                "; stopped by SIGUSR1"
            } else {
                ""
            },
            summary.seconds
        );
        if summary.failed + summary.skipped_failed > 0 {
            eprintln!(
                "  failures: `attnscope sweep status {}`; rerun them with --retry-failed",
                out.display()
            );
        }
    }
    if summary.stopped {
        std::process::exit(EXIT_STOPPED);
    }
    Ok(())
}

fn parse_devices(list: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for d in list.split(',').map(str::trim) {
        let name = match d.parse::<usize>() {
            Ok(n) => format!("cuda:{n}"),
            Err(_) => d.to_string(),
        };
        attnscope_cuda::DeviceRequest::parse(&name).map_err(|_| {
            Error::input(format!(
                "--devices: {d:?} is not a GPU index, cpu, cuda or cuda:N"
            ))
        })?;
        out.push(name);
    }
    Ok(out)
}

fn print_plan(plan: &Plan, json: bool) -> Result<()> {
    if json {
        let units: Vec<&UnitRef> = plan.units.iter().map(|u| &u.unit).collect();
        let v = serde_json::json!({"units": units, "count": units.len()});
        println!("{v}");
        return Ok(());
    }
    for u in &plan.units {
        let r = &u.unit;
        println!(
            "{} model={} prompts={} variant={} index={}",
            r.id, r.model, r.prompts, r.variant, r.index
        );
    }
    println!("{} units", plan.units.len());
    Ok(())
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::io(p, e))
}

fn emit_slurm(args: &SweepArgs, spec: &SweepSpec, spec_path: &Path, out: &Path) -> Result<()> {
    if args.array_tasks == 0 {
        return Err(Error::input("--array-tasks: must be at least 1"));
    }
    let binary = std::env::current_exe().map_err(|e| Error::io("attnscope", e))?;
    let mut extra = Vec::new();
    if let Some(m) = args.max_batch_tokens {
        extra.extend(["--max-batch-tokens".to_string(), m.to_string()]);
    }
    if let Some(d) = &args.devices {
        extra.extend(["--devices".to_string(), d.clone()]);
    }
    let o = SlurmOptions {
        array_tasks: args.array_tasks,
        time: args.time.clone(),
        cpus_per_task: args.cpus_per_task,
        mem: args.mem.clone(),
        gpus: args.gpus,
        partition: args.partition.clone(),
        account: args.account.clone(),
        signal_seconds: args.signal_seconds,
        extra_args: extra,
    };
    let out = absolute(out)?;
    let script = sbatch_script(&spec.name, &binary, &absolute(spec_path)?, &out, &o);
    // Slurm opens --output before the script runs: a missing logs/ fails every task at once.
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| Error::io(&logs, e))?;
    let path = out.join("sweep.sbatch");
    let tmp = out.join(".sweep.sbatch.tmp");
    std::fs::write(&tmp, script).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    println!("wrote {}", path.display());
    println!("submit: sbatch {}", path.display());
    Ok(())
}

fn status(dir: &Path, json: bool) -> Result<()> {
    let s = sweep_status(dir)?;
    if json {
        let text = serde_json::to_string_pretty(&s).map_err(|e| Error::input(e.to_string()))?;
        println!("{text}");
        return Ok(());
    }
    println!(
        "sweep {}: {} units — {} done, {} pending, {} failed",
        s.name, s.total, s.done, s.pending, s.failed
    );
    for sh in &s.shards {
        let state = match (&sh.state, &sh.host) {
            (Some(st), Some(h)) => format!("{st} on {h} (pid {})", sh.pid.unwrap_or(0)),
            _ => "never ran".into(),
        };
        println!(
            "  shard {}: {} done, {} pending, {} failed of {} — {state}",
            sh.shard, sh.done, sh.pending, sh.failed, sh.total
        );
    }
    for f in s.failures.iter().take(10) {
        println!(
            "  failed {} ({}/{}/{}[{}]): {}",
            f.unit.id, f.unit.model, f.unit.variant, f.unit.prompts, f.unit.index, f.error
        );
    }
    if s.failures.len() > 10 {
        println!(
            "  … {} more failures (--json lists them all)",
            s.failures.len() - 10
        );
    }
    Ok(())
}

/// Runs `attnscope merge`.
pub fn merge(args: MergeArgs) -> Result<()> {
    let (path, m) = attnscope_job::sweep::merge::merge(&args.dir)?;
    println!("wrote {}", path.display());
    println!(
        "  {} units: {} done, {} failed, {} pending",
        m.units, m.done, m.failed, m.pending
    );
    for (table, rows) in &m.tables {
        println!(
            "  {table}: {rows} rows ({}/{table}/**/*.parquet)",
            path.display()
        );
    }
    if m.pending + m.failed > 0 {
        eprintln!(
            "warning: the sweep is not complete; the merged tables hold the {} done units",
            m.done
        );
    }
    Ok(())
}

/// Progress of a shard: a bar on a terminal, else one line per `log_every` seconds.
struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
    shard: Shard,
    log_every: Duration,
    state: Mutex<LogState>,
}

struct LogState {
    started: Instant,
    last_line: Instant,
    pending: usize,
    done: usize,
    failed: usize,
    tokens: usize,
}

impl Progress {
    fn new(quiet: bool, log_every: f64, shard: Shard) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let bar = ProgressBar::new(0);
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} shard {prefix} [{bar:30}] {pos}/{len} units {msg} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(shard.to_string());
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            quiet,
            shard,
            log_every: Duration::from_secs_f64(log_every.max(0.0)),
            state: Mutex::new(LogState {
                started: now,
                last_line: now,
                pending: 0,
                done: 0,
                failed: 0,
                tokens: 0,
            }),
        }
    }

    fn line(&self, s: &LogState) -> String {
        let secs = s.started.elapsed().as_secs_f64().max(1e-9);
        let ran = s.done + s.failed;
        let rate = ran as f64 / secs;
        let eta = if rate > 0.0 {
            format!("{:.0}s", (s.pending - ran.min(s.pending)) as f64 / rate)
        } else {
            "?".into()
        };
        format!(
            "shard {}: {}/{} units ({} failed), {:.2} prompts/s, {:.0} tokens/s, eta {eta}",
            self.shard,
            ran,
            s.pending,
            s.failed,
            rate,
            s.tokens as f64 / secs
        )
    }
}

impl SweepProgress for Progress {
    fn start(&self, pending: usize, done: usize, failed: usize) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.pending = pending;
        if let Some(b) = &self.bar {
            b.set_length(pending as u64);
        }
        if !self.quiet {
            eprintln!(
                "shard {}: {pending} units to run ({done} committed before, {failed} failed before)",
                self.shard
            );
        }
    }
    fn loading(&self, model: &str, device: &str) {
        if let Some(b) = &self.bar {
            b.set_message(format!("loading {model}"));
        } else if !self.quiet {
            eprintln!("shard {}: loading model {model} on {device}", self.shard);
        }
    }
    fn batch(&self, done: usize, failed: usize, tokens: usize) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.done += done;
        s.failed += failed;
        s.tokens += tokens;
        if let Some(b) = &self.bar {
            b.set_position((s.done + s.failed) as u64);
            let secs = s.started.elapsed().as_secs_f64().max(1e-9);
            b.set_message(format!(
                "{:.2} prompts/s",
                (s.done + s.failed) as f64 / secs
            ));
        } else if !self.quiet && s.last_line.elapsed() >= self.log_every {
            s.last_line = Instant::now();
            eprintln!("{}", self.line(&s));
        }
    }
    fn failed(&self, unit: &UnitRef, error: &str) {
        let line = format!(
            "unit {} ({}/{}[{}]) failed: {error}",
            unit.id, unit.variant, unit.prompts, unit.index
        );
        match &self.bar {
            Some(b) => b.println(line),
            None if !self.quiet => eprintln!("{line}"),
            None => {}
        }
    }
    fn note(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if !self.quiet {
            let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!("{}", self.line(&s));
        }
    }
}
