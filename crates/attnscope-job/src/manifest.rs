//! Building the manifest of a run directory from a job, its session and its results.

use crate::job::{Job, JobResults};
use crate::session::Session;
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::input::SequenceInput;
use attnscope_core::model::Model;
use attnscope_core::run::SequenceOutcome;
use attnscope_core::weights::hex;
use attnscope_io::manifest::{
    InputRecord, LAYOUT_VERSION, Manifest, ModelRecord, Timings, file_descriptions,
};
use sha2::{Digest, Sha256};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The manifest of a finished job.
pub(crate) fn build_manifest(
    job: &Job,
    session: &Session,
    results: &JobResults,
    write_seconds: f64,
    started: Instant,
) -> Result<Manifest> {
    let outcomes = &results.outcomes;
    let p = &session.placement;
    Ok(Manifest {
        attnscope_version: env!("CARGO_PKG_VERSION"),
        layout_version: LAYOUT_VERSION,
        created_unix_seconds: unix_seconds(),
        command: job.command.clone(),
        model: model_record(&session.model)?,
        device: p.device.clone(),
        device_name: p.gpu_name.clone(),
        compute_dtype: p.dtype.clone(),
        threads: rayon::current_num_threads(),
        capture: results.spec.clone(),
        seed: job.generation.sampler.seed,
        generation: job.generation.clone(),
        inputs: results.inputs.clone(),
        timings: timings(outcomes, session.load_seconds, write_seconds, started),
        files: file_descriptions(
            results.spec.weights,
            results.spec.stats,
            outcomes.iter().any(|o| o.slots.len() > o.n_prompt),
        ),
    })
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

/// The model as the manifest records it: path, architecture, parameter count, config and weights hashes.
pub fn model_record(model: &Model) -> Result<ModelRecord> {
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
