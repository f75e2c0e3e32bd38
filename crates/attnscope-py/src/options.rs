//! The keyword arguments of `Model.run` as a [`Job`], with the CLI's meaning and the CLI's checks
//! (`Job::check_settings`), so that `m.run(...)` and `attnscope run ...` run the same job.

use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::capture::WeightsDtype;
use attnscope_core::input::InputSpec;
use attnscope_core::run::parallel::{ParallelOptions, SetDistribution};
use attnscope_core::run::{GenerateOptions, PromptLogits};
use attnscope_core::sampling::SamplerConfig;
use attnscope_core::slots::Visibility;
use attnscope_job::{CaptureRequest, Job, JobInputs};
use std::ffi::OsString;
use std::path::Path;

/// What a Python `run` call asked for (the wrapper has normalised the inputs to prompts or a spec).
pub struct RunOptions {
    pub prompts: Option<Vec<String>>,
    pub sequences_json: Option<String>,
    pub capture: String,
    pub layers: Option<String>,
    pub heads: Option<String>,
    pub weights_dtype: String,
    pub generate: usize,
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub seed: u64,
    pub ignore_eos: bool,
    pub parallel_threshold: Option<f32>,
    pub parallel_max: usize,
    pub set_distribution: String,
    pub visibility: Option<String>,
    pub logits: String,
}

/// Where errors in the sequences given as dicts point.
pub const SEQUENCES_SOURCE: &str = "<run inputs>";

impl RunOptions {
    /// The job these options describe, checked as the CLI checks its flags.
    pub fn job(&self) -> Result<Job> {
        let inputs = match (&self.prompts, &self.sequences_json) {
            (Some(prompts), None) => {
                if prompts.is_empty() {
                    return Err(Error::input("inputs: nothing to run (an empty list)"));
                }
                JobInputs::Prompts(prompts.clone())
            }
            (None, Some(json)) => JobInputs::Sequences {
                source: SEQUENCES_SOURCE.into(),
                sequences: InputSpec::from_json_str(Path::new(SEQUENCES_SOURCE), json)?.sequences,
            },
            _ => return Err(Error::input("inputs: give prompts or sequences, not both")),
        };
        let mut job = Job::new(inputs);
        job.capture = CaptureRequest {
            weights_dtype: match self.weights_dtype.as_str() {
                "f32" | "float32" => WeightsDtype::F32,
                "f16" | "float16" => WeightsDtype::F16,
                other => {
                    return Err(Error::input(format!(
                        "weights_dtype: {other:?} is not f32 or f16"
                    )));
                }
            },
            layers: self.layers.clone(),
            heads: self.heads.clone(),
            ..CaptureRequest::from_kinds(&self.capture)?
        };
        job.generation = GenerateOptions {
            max_new_tokens: self.generate,
            sampler: SamplerConfig {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                seed: self.seed,
            },
            stop_at_eos: !self.ignore_eos,
            parallel: self.parallel()?,
            prompt_logits: match self.logits.as_str() {
                "none" => PromptLogits::None,
                "last" => PromptLogits::Last,
                "all" => PromptLogits::All,
                other => {
                    return Err(Error::input(format!(
                        "logits: {other:?} is not none, last or all"
                    )));
                }
            },
        };
        job.visibility = self.visibility.as_deref().map(visibility).transpose()?;
        job.command = python_command();
        job.check_settings()?;
        Ok(job)
    }

    fn parallel(&self) -> Result<Option<ParallelOptions>> {
        let next = match self.set_distribution.as_str() {
            "last" => SetDistribution::Last,
            "first" => SetDistribution::First,
            "mean" => SetDistribution::Mean,
            other => {
                return Err(Error::input(format!(
                    "set_distribution: {other:?} is not last, first or mean"
                )));
            }
        };
        Ok(self.parallel_threshold.map(|threshold| ParallelOptions {
            threshold,
            max_set: self.parallel_max,
            next,
        }))
    }
}

/// `visible` or `isolated`.
pub fn visibility(text: &str) -> Result<Visibility> {
    match text {
        "visible" => Ok(Visibility::Visible),
        "isolated" => Ok(Visibility::Isolated),
        other => Err(Error::input(format!(
            "visibility: {other:?} is not visible or isolated"
        ))),
    }
}

/// The command a run from Python records in its manifest: the interpreter's arguments, marked as a
/// Python call.
fn python_command() -> Vec<OsString> {
    let mut command: Vec<OsString> = vec!["attnscope (python)".into()];
    command.extend(std::env::args_os());
    command
}
