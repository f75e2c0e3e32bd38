//! `attnscope run`: check flags, build a [`Job`] and hand it to the job API, which claims `--out`, loads and
//! places the model, runs every sequence with capture and writes the run directory; then print a summary.

use crate::cli::{DtypeArg, RunArgs, SetDistributionArg, VisibilityArg, model_dir};
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::capture::WeightsDtype;
use attnscope_core::run::parallel::{ParallelOptions, SetDistribution};
use attnscope_core::run::{GenerateOptions, PromptLogits};
use attnscope_core::sampling::SamplerConfig;
use attnscope_core::slots::Visibility;
use attnscope_core::weights::LoadOptions;
use attnscope_cuda::DeviceRequest;
use attnscope_io::manifest::Manifest;
use attnscope_job::manifest::unix_seconds;
use attnscope_job::{CaptureRequest, DtypeRequest, Job, JobInputs, Progress, Session};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// Runs the `run` subcommand.
pub fn run(args: RunArgs) -> Result<()> {
    check_flags(&args)?;
    crate::cli::threads::init_pool(args.threads)?;
    let job = build_job(&args)?;
    job.check_settings()?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/run-{}", unix_seconds())));
    let (device, dtype) = (
        DeviceRequest::parse(&args.device)?,
        DtypeRequest::parse(&args.dtype)?,
    );
    let open = || {
        let session = Session::open_with(
            &model_dir(args.model.clone(), args.quiet),
            device,
            dtype,
            LoadOptions {
                allow_unused: args.allow_unused,
            },
        )?;
        if !args.quiet {
            session.notes.iter().for_each(|n| eprintln!("{n}"));
        }
        Ok(session)
    };
    let mut bar = Bar::new(args.quiet);
    let (path, manifest) = job.write_run(&out, args.overwrite, open, &mut bar)?;
    if !args.quiet {
        print_summary(&path, &manifest);
    }
    Ok(())
}

/// The job the flags describe.
fn build_job(args: &RunArgs) -> Result<Job> {
    let inputs = match &args.input {
        Some(path) => JobInputs::SpecFile(path.clone()),
        None => JobInputs::Prompts(args.prompt.clone()),
    };
    let mut job = Job::new(inputs);
    job.capture = CaptureRequest {
        weights_dtype: match args.weights_dtype {
            DtypeArg::F32 => WeightsDtype::F32,
            DtypeArg::F16 => WeightsDtype::F16,
        },
        layers: args.layers.clone(),
        heads: args.heads.clone(),
        ..CaptureRequest::from_kinds(&args.capture)?
    };
    job.generation = GenerateOptions {
        max_new_tokens: args.generate,
        sampler: SamplerConfig {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        },
        stop_at_eos: !args.ignore_eos,
        parallel: args.parallel_threshold.map(|threshold| ParallelOptions {
            threshold,
            max_set: args.parallel_max,
            next: match args.set_distribution {
                SetDistributionArg::Last => SetDistribution::Last,
                SetDistributionArg::First => SetDistribution::First,
                SetDistributionArg::Mean => SetDistribution::Mean,
            },
        }),
        prompt_logits: PromptLogits::None,
    };
    job.visibility = args.visibility.map(|v| match v {
        VisibilityArg::Visible => Visibility::Visible,
        VisibilityArg::Isolated => Visibility::Isolated,
    });
    Ok(job)
}

/// Rejects flag values that cannot work, before anything is loaded.
fn check_flags(args: &RunArgs) -> Result<()> {
    if args.prompt.is_empty() && args.input.is_none() {
        return Err(Error::input(
            "nothing to run: give --prompt TEXT or --input FILE.json",
        ));
    }
    if args.prompt.iter().any(|p| p.is_empty()) {
        return Err(Error::input("--prompt: empty prompt"));
    }
    if args.threads == Some(0) {
        return Err(Error::input("--threads: must be at least 1"));
    }
    DeviceRequest::parse(&args.device)?;
    DtypeRequest::parse(&args.dtype)?;
    Ok(())
}

/// The progress bar of a run: one tick per prefill or generation step.
struct Bar {
    quiet: bool,
    bar: ProgressBar,
}

impl Bar {
    fn new(quiet: bool) -> Bar {
        Bar {
            quiet,
            bar: ProgressBar::hidden(),
        }
    }
}

impl Progress for Bar {
    fn start(&mut self, total_steps: u64) {
        self.bar = progress_bar(total_steps, self.quiet);
    }
    fn sequence(&mut self, index: usize, count: usize) {
        self.bar
            .set_message(format!("sequence {}/{}", index + 1, count));
    }
    fn step(&mut self) -> Result<()> {
        self.bar.inc(1);
        Ok(())
    }
    fn finish(&mut self) {
        self.bar.finish_and_clear();
    }
}

fn progress_bar(total: u64, quiet: bool) -> ProgressBar {
    if quiet || total <= 1 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {msg} [{bar:30}] {pos}/{len} steps {per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn print_summary(path: &Path, m: &Manifest) {
    println!("wrote {}", path.display());
    for rec in &m.inputs {
        let gen_text = match &rec.generated_text {
            Some(t) if rec.generated_tokens > 0 => format!(", generated {:?}", t),
            _ => String::new(),
        };
        println!(
            "  seq {}: {} prompt + {} generated tokens{gen_text}",
            rec.seq, rec.prompt_tokens, rec.generated_tokens
        );
    }
    println!(
        "  load {:.2}s, prefill {:.1} tok/s, decode {:.1} tok/s; files: {}",
        m.timings.load_seconds,
        m.timings.prefill_tokens_per_second,
        m.timings.decode_tokens_per_second,
        m.files.keys().cloned().collect::<Vec<_>>().join(", ")
    );
}
