//! Building the manifest of a run directory from a job, its session and its results.

use crate::session::Session;
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::capture::CaptureSpec;
use attnscope_core::model::Model;
use attnscope_core::run::{GenerateOptions, SequenceOutcome};
use attnscope_core::weights::hex;
use attnscope_io::manifest::{
    InputRecord, LAYOUT_VERSION, Manifest, ModelRecord, Timings, TokenizerRecord, escape_args,
    escape_os, file_descriptions,
};
use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a finished job hands to [`build_manifest`].
pub struct RunRecord<'a> {
    pub command: &'a [OsString],
    pub generation: &'a GenerateOptions,
    pub spec: &'a CaptureSpec,
    pub inputs: &'a [InputRecord],
    pub outcomes: &'a [SequenceOutcome],
}

/// The manifest of a finished job.
pub fn build_manifest(
    run: &RunRecord,
    session: &Session,
    write_seconds: f64,
    started: Instant,
) -> Result<Manifest> {
    let outcomes = run.outcomes;
    let p = &session.placement;
    let (command, command_escaped) = escape_args(run.command);
    Ok(Manifest {
        attnscope_version: env!("CARGO_PKG_VERSION"),
        layout_version: LAYOUT_VERSION,
        created_unix_seconds: unix_seconds(),
        command,
        command_escaped,
        model: model_record(&session.model)?,
        device: p.device.clone(),
        device_name: p.gpu_name.clone(),
        compute_dtype: p.dtype.clone(),
        threads: rayon::current_num_threads(),
        capture: run.spec.clone(),
        seed: run.generation.sampler.seed,
        generation: run.generation.clone(),
        inputs: run.inputs.to_vec(),
        tokenizer: session.tokenizer.as_ref().map(|t| TokenizerRecord {
            path: escape_os(t.source().as_os_str()).0,
            kind: t.kind(),
            disabled: t.disabled().to_vec(),
            warnings: t.warnings().to_vec(),
        }),
        timings: timings(outcomes, session.load_seconds, write_seconds, started),
        files: file_descriptions(
            run.spec.weights,
            run.spec.stats,
            outcomes.iter().any(|o| o.slots.len() > o.n_prompt),
        ),
    })
}

/// The model as the manifest records it: path, architecture, parameter count, config and weights hashes.
pub fn model_record(model: &Model) -> Result<ModelRecord> {
    let config_path = model.dir.join("config.json");
    let bytes = std::fs::read(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let (path, path_escaped) = escape_os(model.dir.as_os_str());
    Ok(ModelRecord {
        path,
        path_escaped,
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
