//! `_attnscope.Session`: a model loaded and placed once, kept open between calls (the job API's
//! `Session`), with `tokenize`, `run` and `ablate`.

use crate::calls::compute;
use crate::options::{RunOptions, SEQUENCES_SOURCE};
use crate::result::PyRunResult;
use crate::tables::{json_to_py, table_to_py};
use attnscope_core::Error;
use attnscope_core::input::InputSpec;
use attnscope_core::weights::LoadOptions;
use attnscope_cuda::DeviceRequest;
use attnscope_job::{
    AblationJob, AblationModeRequest, AblationPrompt, AblationTargets, DtypeRequest, Session,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A loaded model: `attnscope.load` returns the `attnscope.Model` that wraps it.
#[pyclass(name = "Session", module = "attnscope._attnscope", frozen)]
pub struct PySession {
    pub session: Arc<Session>,
}

#[pymethods]
impl PySession {
    /// Loads and places the model directory `path` (`device`: auto, cpu, cuda, cuda:N; `dtype`: auto,
    /// f32, bf16, f16).
    #[staticmethod]
    #[pyo3(signature = (path, device = "auto", dtype = "auto", allow_unused = false))]
    fn load(
        py: Python<'_>,
        path: PathBuf,
        device: &str,
        dtype: &str,
        allow_unused: bool,
    ) -> PyResult<PySession> {
        let (device, dtype) = (device.to_string(), dtype.to_string());
        let session = compute(py, move |_| {
            let device = DeviceRequest::parse(&device)?;
            let dtype = DtypeRequest::parse(&dtype)?;
            Session::open_with(&path, device, dtype, LoadOptions { allow_unused })
        })?;
        Ok(PySession {
            session: Arc::new(session),
        })
    }

    /// The model directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.session.model.dir.clone()
    }

    /// "cpu" or "cuda:N".
    #[getter]
    fn device(&self) -> String {
        self.session.placement.device.clone()
    }

    /// The compute and storage dtype, as the manifest records it.
    #[getter]
    fn dtype(&self) -> String {
        self.session.placement.dtype.clone()
    }

    /// What the load wants the user to hear (why `auto` chose the CPU, tokenizer repairs).
    #[getter]
    fn notes(&self) -> Vec<String> {
        self.session.notes.clone()
    }

    /// Seconds spent loading and placing.
    #[getter]
    fn load_seconds(&self) -> f64 {
        self.session.load_seconds
    }

    /// The model's configuration as the engine read it (a dict).
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let value = serde_json::to_value(&self.session.model.cfg)
            .map_err(|e| crate::errors::AttnscopeError::new_err(e.to_string()))?;
        json_to_py(py, &value)
    }

    /// `(ids, pieces, offsets)`: token ids as `run` uses them (BOS as the tokenizer's config says), the
    /// vocabulary string of each and its `(start, end)` character offsets into `text`.
    #[allow(clippy::type_complexity)]
    fn tokenize(
        &self,
        py: Python<'_>,
        text: String,
    ) -> PyResult<(Vec<u32>, Vec<String>, Vec<(usize, usize)>)> {
        let session = Arc::clone(&self.session);
        compute(py, move |_| {
            let tok = session.require_tokenizer("no tokenizer in the model directory")?;
            let enc = tok.encode_with_offsets(&text)?;
            Ok((enc.ids, enc.pieces, enc.offsets))
        })
    }

    /// The text of token ids (special tokens kept).
    fn decode(&self, py: Python<'_>, ids: Vec<u32>) -> PyResult<String> {
        let session = Arc::clone(&self.session);
        compute(py, move |_| {
            session
                .require_tokenizer("no tokenizer in the model directory")?
                .decode(&ids)
        })
    }

    /// Runs a job (see `attnscope.Model.run`, which normalises the inputs) and keeps its results.
    #[pyo3(signature = (*, prompts, sequences_json, capture, layers, heads, weights_dtype, generate,
        temperature, top_k, top_p, seed, ignore_eos, parallel_threshold, parallel_max,
        set_distribution, visibility, logits))]
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        py: Python<'_>,
        prompts: Option<Vec<String>>,
        sequences_json: Option<String>,
        capture: String,
        layers: Option<String>,
        heads: Option<String>,
        weights_dtype: String,
        generate: usize,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        seed: u64,
        ignore_eos: bool,
        parallel_threshold: Option<f32>,
        parallel_max: usize,
        set_distribution: String,
        visibility: Option<String>,
        logits: String,
    ) -> PyResult<PyRunResult> {
        let options = RunOptions {
            prompts,
            sequences_json,
            capture,
            layers,
            heads,
            weights_dtype,
            generate,
            temperature,
            top_k,
            top_p,
            seed,
            ignore_eos,
            parallel_threshold,
            parallel_max,
            set_distribution,
            visibility,
            logits,
        };
        let session = Arc::clone(&self.session);
        let (job, results) = compute(py, move |progress| {
            let job = options.job()?;
            let results = job.run(&session, progress)?;
            Ok((job, results))
        })?;
        Ok(PyRunResult::new(Arc::clone(&self.session), job, results))
    }

    /// Scores targets with and without a KV-cache ablation (`attnscope ablate`); returns
    /// `(table, summary)`.
    #[pyo3(signature = (*, prompt, sequence_json, slots, layers, mode, replace_with, target,
        target_ids, continuation))]
    #[allow(clippy::too_many_arguments)]
    fn ablate<'py>(
        &self,
        py: Python<'py>,
        prompt: Option<String>,
        sequence_json: Option<String>,
        slots: String,
        layers: Option<String>,
        mode: String,
        replace_with: Option<usize>,
        target: Option<String>,
        target_ids: Option<String>,
        continuation: usize,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyDict>)> {
        let session = Arc::clone(&self.session);
        let (table, summary) = compute(py, move |_| {
            let prompt = match (prompt, sequence_json) {
                (Some(text), None) => AblationPrompt::Text(text),
                (None, Some(json)) => {
                    let mut spec = InputSpec::from_json_str(Path::new(SEQUENCES_SOURCE), &json)?;
                    if spec.sequences.len() != 1 {
                        return Err(Error::input("prompt: ablate takes exactly one sequence"));
                    }
                    AblationPrompt::Sequence(spec.sequences.remove(0))
                }
                _ => return Err(Error::input("prompt: give a text or one sequence")),
            };
            let targets = match (target, target_ids) {
                (Some(text), None) => AblationTargets::Text(text),
                (None, Some(ids)) => AblationTargets::Ids(ids),
                (None, None) => AblationTargets::Continuation(continuation),
                (Some(_), Some(_)) => {
                    return Err(Error::input("target: give target or target_ids, not both"));
                }
            };
            let job = AblationJob {
                prompt,
                slots,
                layers,
                mode: match mode.as_str() {
                    "zero" => AblationModeRequest::Zero,
                    "mean" => AblationModeRequest::Mean,
                    "replace" => AblationModeRequest::Replace,
                    other => {
                        return Err(Error::input(format!(
                            "mode: {other:?} is not zero, mean or replace"
                        )));
                    }
                },
                replace_with,
                targets,
            };
            let result = job.run(&session)?;
            let (base, ablated) = result.totals();
            let summary = serde_json::json!({
                "mode": format!("{:?}", result.ablation.mode),
                "slots": result.ablation.slots,
                "layers": result.ablation.layers,
                "prompt_token_ids": result.prompt.token_ids,
                "targets": result.targets,
                "total_logp_base": base,
                "total_logp_ablated": ablated,
            });
            Ok((result.table(&session), summary))
        })?;
        let summary = json_to_py(py, &summary)?.cast_into::<PyDict>()?;
        Ok((table_to_py(py, table)?.into_any(), summary))
    }
}
