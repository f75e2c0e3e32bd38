//! `attnscope bench`: validate flags, plan the models, measure them, print the table, write `--json`.

use crate::cli::BenchArgs;
use attnscope_bench::report::{BenchReport, DeviceInfo, SCHEMA, SettingsRecord, apply_peaks};
use attnscope_bench::table::render_table;
use attnscope_bench::{BenchSettings, Mode, ModelSource, measurement_count, plan, run_model};
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_cuda::{DeviceRequest, GpuDtype};
use attnscope_job::{DtypeRequest, Placement};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Named shapes measured when neither --models nor --config is given.
const DEFAULT_MODELS: &[&str] = &["llama-100m", "gpt2-124m"];

/// Runs the `bench` subcommand.
pub fn bench(args: BenchArgs) -> Result<()> {
    let settings = check_flags(&args)?;
    if let Some(json) = &args.json {
        check_json_target(json)?;
    }
    crate::cli::threads::init_pool(args.threads)?;
    let planned = plan(&model_sources(&args), &settings)?;
    let created_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);

    let measured = planned.iter().filter(|p| p.skip.is_none()).count() as u64;
    let bar = progress_bar(measured * measurement_count(&settings), args.quiet);
    let mut models = Vec::new();
    let mut not_measured = Vec::new();
    let mut placement: Option<Placement> = None;
    for p in &planned {
        if let Some(reason) = &p.skip {
            not_measured.push(reason.clone());
            continue;
        }
        let mut first = true;
        let mut tick = |msg: &str| {
            // The first call announces the build, each later one a measurement: the bar counts the
            // measurements started.
            if !std::mem::take(&mut first) {
                bar.inc(1);
            }
            bar.set_message(msg.to_string());
        };
        let (report, placed) = run_model(p, &settings, &mut not_measured, &mut tick)?;
        if let (Some(note), None, false) = (&placed.note, &placement, args.quiet) {
            eprintln!("note: running on the CPU: {note}");
        }
        placement = Some(placed);
        models.push(report);
    }
    bar.finish_and_clear();

    let mut report = BenchReport {
        schema: SCHEMA,
        engine: "attnscope",
        engine_version: env!("CARGO_PKG_VERSION"),
        created_unix,
        command: command_line(),
        device: device_info(placement.as_ref(), &args),
        settings: SettingsRecord {
            warmup: settings.warmup,
            repeats: settings.repeats,
            decode_steps: settings.decode_steps,
            decode_context: settings.decode_context,
            seed: settings.seed,
        },
        models,
        not_measured,
    };
    apply_peaks(&mut report);
    print!("{}", render_table(&report));
    if let Some(json) = &args.json {
        attnscope_io::write_json_atomic(json, &report)?;
        println!("\nwrote {}", json.display());
    }
    Ok(())
}

/// Rejects flag values that cannot work, before any model is built.
fn check_flags(args: &BenchArgs) -> Result<BenchSettings> {
    let device = DeviceRequest::parse(&args.device)?;
    let dtype = DtypeRequest::parse(&args.dtype)?.gpu();
    let positive = |flag: &str, values: &[usize]| -> Result<()> {
        if values.is_empty() {
            return Err(Error::input(format!("{flag}: empty list")));
        }
        match values.iter().find(|&&v| v == 0) {
            Some(_) => Err(Error::input(format!("{flag}: values must be at least 1"))),
            None => Ok(()),
        }
    };
    positive("--prefill", &args.prefill)?;
    positive("--batch", &args.batch)?;
    positive("--decode-context", &[args.decode_context])?;
    positive("--repeats", &[args.repeats])?;
    if args.threads == Some(0) {
        return Err(Error::input("--threads: must be at least 1"));
    }
    if args.max_params.is_nan() || args.max_params <= 0.0 {
        return Err(Error::input("--max-params: must be a number > 0"));
    }
    for (flag, v) in [
        ("--peak-tflops", args.peak_tflops),
        ("--peak-bandwidth-gbs", args.peak_bandwidth_gbs),
    ] {
        if v.is_some_and(|v| v.is_nan() || v <= 0.0 || v.is_infinite()) {
            return Err(Error::input(format!("{flag}: must be a finite number > 0")));
        }
    }
    if args.models.iter().any(|m| m.trim().is_empty()) {
        return Err(Error::input("--models: empty name"));
    }
    Ok(BenchSettings {
        prefill: args.prefill.clone(),
        batches: args.batch.clone(),
        decode_context: args.decode_context,
        decode_steps: args.decode_steps,
        modes: Mode::parse_list(&args.modes)?,
        warmup: args.warmup,
        repeats: args.repeats,
        seed: args.seed,
        max_params: args.max_params,
        device,
        dtype,
    })
}

/// The device record of the report: the GPU the models ran on, or the CPU.
fn device_info(placement: Option<&Placement>, args: &BenchArgs) -> DeviceInfo {
    let cpu = DeviceInfo::cpu(
        rayon::current_num_threads(),
        args.peak_tflops,
        args.peak_bandwidth_gbs,
    );
    match placement {
        Some(p) if p.gpu_name.is_some() => {
            let driver = match attnscope_cuda::probe() {
                attnscope_cuda::CudaStatus::Available {
                    driver_version: (a, b),
                    ..
                } => Some(format!("CUDA {a}.{b}")),
                _ => None,
            };
            DeviceInfo {
                kind: "cuda",
                name: p.gpu_name.clone().unwrap_or_default(),
                driver,
                compute_dtype: GpuDtype::parse(&p.dtype).map_or("bf16", GpuDtype::as_str),
                ..cpu
            }
        }
        _ => cpu,
    }
}

/// Fails early when `--json` cannot be written (missing parent, or a directory in the way).
pub(crate) fn check_json_target(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::output(path, "--json: is a directory"));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    match parent {
        Some(dir) if !dir.is_dir() => Err(Error::output(
            path,
            format!("--json: directory {} does not exist", dir.display()),
        )),
        _ => Ok(()),
    }
}

/// The models `--models` and `--config` name, or the default list.
fn model_sources(args: &BenchArgs) -> Vec<ModelSource> {
    let sources: Vec<ModelSource> = args
        .models
        .iter()
        .map(|m| ModelSource::Named(m.trim().to_string()))
        .chain(args.config.iter().cloned().map(ModelSource::Config))
        .collect();
    if !sources.is_empty() {
        return sources;
    }
    DEFAULT_MODELS
        .iter()
        .map(|m| ModelSource::Named(m.to_string()))
        .collect()
}

/// The command line as one string, arguments with spaces or quotes quoted (non-UTF-8 ones escaped as in
/// a run's manifest, `attnscope_io::manifest::escape_os`).
fn command_line() -> String {
    let mut parts = vec!["attnscope".to_string()];
    parts.extend(std::env::args_os().skip(1).map(|a| {
        let a = attnscope_io::manifest::escape_os(&a).0;
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            format!("'{}'", a.replace('\'', "'\\''"))
        } else {
            a
        }
    }));
    parts.join(" ")
}

/// A bar on stderr, hidden with --quiet or when stderr is not a terminal.
fn progress_bar(total: u64, quiet: bool) -> ProgressBar {
    if quiet || total == 0 || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{bar:30}] {pos}/{len} {msg} (elapsed {elapsed}, eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
