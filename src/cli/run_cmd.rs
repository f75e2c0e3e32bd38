//! `attnscope run`: validate flags, load, run every sequence with capture, write the run directory.

use crate::cli::{DtypeArg, RunArgs, SetDistributionArg, VisibilityArg, model_dir};
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::capture::{CaptureSpec, WeightsDtype};
use attnscope_core::input::{InputSpec, SequenceInput};
use attnscope_core::model::Model;
use attnscope_core::run::parallel::{ParallelOptions, SetDistribution};
use attnscope_core::run::{GenerateOptions, SequenceOutcome, check_fits, run_sequence};
use attnscope_core::sampling::SamplerConfig;
use attnscope_core::slots::Visibility;
use attnscope_core::tokenizer::TextTokenizer;
use attnscope_core::weights::hex;
use attnscope_cuda::{DeviceRequest, GpuDtype};
use attnscope_io::manifest::{
    InputRecord, LAYOUT_VERSION, Manifest, ModelRecord, Timings, file_descriptions,
};
use attnscope_io::outputs::write_run_files;
use attnscope_io::{RunDir, write_json};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Runs the `run` subcommand.
pub fn run(args: RunArgs) -> Result<()> {
    let started = Instant::now();
    check_flags(&args)?;
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| Error::input(format!("--threads: {e}")))?;
    }
    let (kinds_stats, kinds_weights) = CaptureSpec::parse_kinds(&args.capture)?;
    let generation = GenerateOptions {
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
    };
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/run-{unix}")));
    // Claim the output first so a bad --out fails before any long work. On failure the temp dir is dropped
    // and any parent directories this run created are removed again.
    let created = create_parents(&out)?;
    let result = RunDir::create(&out, args.overwrite).and_then(|run_dir| {
        execute(
            &args,
            run_dir,
            generation,
            (kinds_stats, kinds_weights),
            unix,
            started,
        )
    });
    if result.is_err() {
        for dir in created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
    result
}

/// Creates the missing ancestors of `out`, returning them outermost first. An ancestor that exists but is
/// not a directory is reported by name.
fn create_parents(out: &Path) -> Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    for dir in out
        .ancestors()
        .skip(1)
        .filter(|p| !p.as_os_str().is_empty())
    {
        if dir.is_dir() {
            break;
        }
        if dir.exists() {
            return Err(Error::output(
                dir,
                format!(
                    "is not a directory, so --out {} cannot be created",
                    out.display()
                ),
            ));
        }
        missing.push(dir.to_path_buf());
    }
    missing.reverse();
    for dir in &missing {
        std::fs::create_dir(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(missing)
}

/// Everything after the output directory is claimed.
fn execute(
    args: &RunArgs,
    run_dir: RunDir,
    generation: GenerateOptions,
    (kinds_stats, kinds_weights): (bool, bool),
    unix: u64,
    started: Instant,
) -> Result<()> {
    let dir = model_dir(args.model.clone(), args.quiet);
    let mut model = Model::load(&dir)?;
    let placement = attnscope_job::place(
        &mut model,
        DeviceRequest::parse(&args.device)?,
        GpuDtype::parse(&args.dtype)?,
    )?;
    if let (Some(note), false) = (&placement.note, args.quiet) {
        eprintln!("note: running on the CPU: {note}");
    }
    let tokenizer = TextTokenizer::from_dir(&dir)?;
    if let Some(tok) = &tokenizer {
        check_tokenizer(tok, &model)?;
        if !args.quiet {
            tok.warnings()
                .iter()
                .for_each(|w| eprintln!("warning: {w}"));
        }
    }
    let load_seconds = started.elapsed().as_secs_f64();

    let spec = CaptureSpec {
        stats: kinds_stats,
        weights: kinds_weights,
        weights_dtype: match args.weights_dtype {
            DtypeArg::F32 => WeightsDtype::F32,
            DtypeArg::F16 => WeightsDtype::F16,
        },
        layers: parse_opt(&args.layers, "--layers", model.cfg.n_layers)?,
        heads: parse_opt(&args.heads, "--heads", model.cfg.n_heads)?,
    };
    let (sequences, mut inputs) = build_sequences(args, &model, tokenizer.as_ref(), &generation)?;

    let total_steps: u64 = sequences.len() as u64 * (1 + generation.max_new_tokens as u64);
    let bar = progress_bar(total_steps, args.quiet);
    let mut outcomes: Vec<SequenceOutcome> = Vec::with_capacity(sequences.len());
    for (i, seq) in sequences.iter().enumerate() {
        bar.set_message(format!("sequence {}/{}", i + 1, sequences.len()));
        outcomes.push(run_sequence(&model, seq, &spec, &generation, &mut || {
            bar.inc(1)
        })?);
    }
    bar.finish_and_clear();

    for (rec, o) in inputs.iter_mut().zip(&outcomes) {
        rec.generated_tokens = o.slots.len() - o.n_prompt;
        rec.stopped_at_eos = o.stopped_at_eos;
        if let Some(tok) = &tokenizer {
            let ids: Vec<u32> = o.slots[o.n_prompt..].iter().map(|s| s.token).collect();
            rec.generated_text = tok.decode(&ids).ok();
        }
    }
    let write_started = Instant::now();
    write_run_files(run_dir.path(), &model, &mut outcomes, tokenizer.as_ref())?;
    let write_seconds = write_started.elapsed().as_secs_f64();

    let manifest = Manifest {
        attnscope_version: env!("CARGO_PKG_VERSION"),
        layout_version: LAYOUT_VERSION,
        created_unix_seconds: unix,
        command: std::env::args().collect(),
        model: model_record(&model)?,
        device: placement.device.clone(),
        device_name: placement.gpu_name.clone(),
        compute_dtype: placement.dtype.clone(),
        threads: rayon::current_num_threads(),
        capture: spec.clone(),
        seed: args.seed,
        generation,
        inputs,
        timings: timings(&outcomes, load_seconds, write_seconds, started),
        files: file_descriptions(
            spec.weights,
            spec.stats,
            outcomes.iter().any(|o| o.slots.len() > o.n_prompt),
        ),
    };
    write_json(&run_dir.file("manifest.json"), &manifest)?;
    let final_path = run_dir.commit()?;
    if !args.quiet {
        print_summary(&final_path, &manifest);
    }
    Ok(())
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
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        return Err(Error::input("--temperature: must be a finite number ≥ 0"));
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        return Err(Error::input("--top-p: must be in (0, 1]"));
    }
    if let Some(p) = args.parallel_threshold
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(Error::input("--parallel-threshold: must be in (0, 1]"));
    }
    if args.parallel_max < 2 {
        return Err(Error::input(
            "--parallel-max: a parallel set needs at least 2 tokens",
        ));
    }
    if args.threads == Some(0) {
        return Err(Error::input("--threads: must be at least 1"));
    }
    DeviceRequest::parse(&args.device)?;
    GpuDtype::parse(&args.dtype)?;
    Ok(())
}

fn parse_opt(arg: &Option<String>, flag: &str, limit: usize) -> Result<Option<Vec<usize>>> {
    arg.as_deref()
        .map(|s| CaptureSpec::parse_indices(flag, s, limit))
        .transpose()
}

/// A tokenizer whose ids reach past the model's embedding table cannot belong to this model.
fn check_tokenizer(tok: &TextTokenizer, model: &Model) -> Result<()> {
    match tok.max_token_id() {
        Some(max) if max as usize >= model.cfg.vocab_size => Err(Error::tokenizer(
            tok.source(),
            format!(
                "tokenizer has token ids up to {max} but {}/config.json has vocab_size {}: tokenizer and model do not match",
                model.dir.display(),
                model.cfg.vocab_size
            ),
        )),
        _ => Ok(()),
    }
}

/// Token sequences from --prompt (through the tokenizer) or --input, each checked against the model.
fn build_sequences(
    args: &RunArgs,
    model: &Model,
    tokenizer: Option<&TextTokenizer>,
    generation: &GenerateOptions,
) -> Result<(Vec<SequenceInput>, Vec<InputRecord>)> {
    let mut seqs = Vec::new();
    let mut records = Vec::new();
    if let Some(path) = &args.input {
        let spec = InputSpec::from_file(path)?;
        for (i, mut seq) in spec.sequences.into_iter().enumerate() {
            if let Some(v) = visibility_override(args) {
                seq.visibility = v;
            }
            check_fits(
                model,
                &seq,
                generation,
                &format!("{}: sequences[{i}]", path.display()),
            )?;
            records.push(record(i, path.display().to_string(), None, &seq));
            seqs.push(seq);
        }
    } else {
        let tok = tokenizer.ok_or_else(|| {
            Error::tokenizer(
                &model.dir,
                "no tokenizer.json or vocab.json+merges.txt in the model directory; use --input with token ids",
            )
        })?;
        for (i, text) in args.prompt.iter().enumerate() {
            let mut seq = SequenceInput::from_tokens(tok.encode(text)?);
            if let Some(v) = visibility_override(args) {
                seq.visibility = v;
            }
            check_fits(model, &seq, generation, &format!("--prompt #{}", i + 1))?;
            records.push(record(i, "prompt".into(), Some(text.clone()), &seq));
            seqs.push(seq);
        }
    }
    Ok((seqs, records))
}

fn visibility_override(args: &RunArgs) -> Option<Visibility> {
    args.visibility.map(|v| match v {
        VisibilityArg::Visible => Visibility::Visible,
        VisibilityArg::Isolated => Visibility::Isolated,
    })
}

fn record(seq: usize, source: String, text: Option<String>, s: &SequenceInput) -> InputRecord {
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

fn model_record(model: &Model) -> Result<ModelRecord> {
    let config_path = model.dir.join("config.json");
    let bytes = std::fs::read(&config_path).map_err(|e| Error::io(&config_path, e))?;
    Ok(ModelRecord {
        path: model.dir.display().to_string(),
        family: model.cfg.family.model_type(),
        architecture: model.cfg.clone(),
        parameters: model.cfg.parameter_count(),
        config_sha256: hex(&Sha256::digest(&bytes)),
        weights: model.info.clone(),
    })
}

fn timings(outcomes: &[SequenceOutcome], load: f64, write: f64, started: Instant) -> Timings {
    let prefill: Vec<f64> = outcomes.iter().map(|o| o.prefill_seconds).collect();
    let decode: Vec<Vec<f64>> = outcomes.iter().map(|o| o.decode_seconds.clone()).collect();
    let prompt_tokens: usize = outcomes.iter().map(|o| o.n_prompt).sum();
    let gen_tokens: usize = decode.iter().map(Vec::len).sum();
    let rate = |n: usize, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    Timings {
        load_seconds: load,
        prefill_tokens_per_second: rate(prompt_tokens, prefill.iter().sum()),
        decode_tokens_per_second: rate(gen_tokens, decode.iter().flatten().sum()),
        prefill_seconds: prefill,
        decode_token_seconds: decode,
        write_seconds: write,
        total_seconds: started.elapsed().as_secs_f64(),
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
