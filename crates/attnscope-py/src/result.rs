//! `_attnscope.RunResult`: a job's results, held as the engine left them. Weights and logits reach numpy
//! as read-only views of these buffers (the array's base is this object, which never changes them);
//! tables are built on request; `save` writes the run directory `attnscope run` would.

use crate::calls::compute;
use crate::tables::{json_to_py, table_to_py};
use attnscope_core::capture::{SequenceWeights, WeightBuffer};
use attnscope_io::outputs::tokens_table;
use attnscope_io::tables::{StatsSource, stats_tables};
use attnscope_job::{Job, JobResults, Session};
use ndarray::{ArrayView2, ArrayView4};
use numpy::{Element, PyArray2, PyArray4};
use pyo3::exceptions::PyIndexError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::PathBuf;
use std::sync::Arc;

/// What `Session.run` returns; `attnscope.Run` wraps it.
#[pyclass(name = "RunResult", module = "attnscope._attnscope", frozen)]
pub struct PyRunResult {
    session: Arc<Session>,
    job: Job,
    results: JobResults,
}

impl PyRunResult {
    pub fn new(session: Arc<Session>, job: Job, results: JobResults) -> PyRunResult {
        PyRunResult {
            session,
            job,
            results,
        }
    }

    fn outcome(&self, seq: usize) -> PyResult<&attnscope_core::run::SequenceOutcome> {
        self.results.outcomes.get(seq).ok_or_else(|| {
            PyIndexError::new_err(format!(
                "seq: {seq} is out of range (the run has {} sequences)",
                self.results.outcomes.len()
            ))
        })
    }
}

/// A read-only numpy view of `data` shaped `shape`, kept alive by `owner`.
fn view4<'py, T: Element>(
    owner: &Bound<'py, PyRunResult>,
    data: &[T],
    shape: [usize; 4],
) -> PyResult<Bound<'py, PyAny>> {
    let view = ArrayView4::from_shape(shape, data)
        .map_err(|e| crate::errors::AttnscopeError::new_err(e.to_string()))?;
    // SAFETY: `data` lives in the frozen `PyRunResult` `owner`, which never mutates or moves its buffers
    // and is the array's base object, so the memory outlives the array.
    let array = unsafe { PyArray4::borrow_from_array(&view, owner.clone().into_any()) };
    read_only(array.into_any())
}

fn view2<'py, T: Element>(
    owner: &Bound<'py, PyRunResult>,
    data: &[T],
    shape: [usize; 2],
) -> PyResult<Bound<'py, PyAny>> {
    let view = ArrayView2::from_shape(shape, data)
        .map_err(|e| crate::errors::AttnscopeError::new_err(e.to_string()))?;
    // SAFETY: as in `view4`: the frozen owner keeps `data` unchanged and alive as the array's base.
    let array = unsafe { PyArray2::borrow_from_array(&view, owner.clone().into_any()) };
    read_only(array.into_any())
}

/// Clears numpy's writeable flag: the engine's buffers are shared, not handed over.
fn read_only(array: Bound<'_, PyAny>) -> PyResult<Bound<'_, PyAny>> {
    array.getattr("flags")?.setattr("writeable", false)?;
    Ok(array)
}

#[pymethods]
impl PyRunResult {
    /// Number of sequences.
    #[getter]
    fn n_sequences(&self) -> usize {
        self.results.outcomes.len()
    }

    /// Layers captured (model indices), `[]` when nothing was captured.
    #[getter]
    fn layers(&self) -> Vec<usize> {
        let spec = &self.results.spec;
        if !spec.any() {
            return Vec::new();
        }
        spec.layer_list(self.session.model.cfg.n_layers)
    }

    /// Query heads captured (model indices), `[]` when nothing was captured.
    #[getter]
    fn heads(&self) -> Vec<usize> {
        let spec = &self.results.spec;
        if !spec.any() {
            return Vec::new();
        }
        spec.head_list(self.session.model.cfg.n_heads)
    }

    /// Slots of sequence `seq` (prompt plus generated).
    fn n_slots(&self, seq: usize) -> PyResult<usize> {
        Ok(self.outcome(seq)?.slots.len())
    }

    /// Sequence `seq`'s weights `[layers, heads, T, T]` (a view), or None without `weights` capture.
    fn attention<'py>(slf: &Bound<'py, Self>, seq: usize) -> PyResult<Option<Bound<'py, PyAny>>> {
        let this = slf.get();
        let outcome = this.outcome(seq)?;
        let Some(w) = outcome.capture.as_ref().and_then(|c| c.weights.as_ref()) else {
            return Ok(None);
        };
        let shape = weight_shape(w);
        Ok(Some(match &w.data {
            WeightBuffer::F32(data) => view4(slf, data, shape)?,
            WeightBuffer::F16(data) => view4(slf, data, shape)?,
        }))
    }

    /// Sequence `seq`'s prompt logits `[rows, vocab]` (a view), or None when not asked for.
    fn logits<'py>(slf: &Bound<'py, Self>, seq: usize) -> PyResult<Option<Bound<'py, PyAny>>> {
        let this = slf.get();
        match &this.outcome(seq)?.logits {
            Some(l) => Ok(Some(view2(slf, &l.data, [l.rows, l.vocab])?)),
            None => Ok(None),
        }
    }

    /// The tables a run directory would hold, as `{name: columns}` (see `tables.rs`): `tokens` always,
    /// `stats`, `received`, `distance` with statistics, `steps` and `step_groups` when, besides, a
    /// sequence generated.
    fn tables<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let session = Arc::clone(&self.session);
        let results = &self.results;
        let (tokens, stats) = compute(py, move |_| {
            let tokenizer = session.tokenizer.as_ref();
            let tokens: Vec<_> = results
                .outcomes
                .iter()
                .enumerate()
                .map(|(s, o)| tokens_table(s, &o.slots, tokenizer))
                .collect();
            let sources: Vec<StatsSource> = results
                .outcomes
                .iter()
                .enumerate()
                .filter_map(|(seq, o)| {
                    let result = o.capture.as_ref()?;
                    result
                        .layers
                        .iter()
                        .any(|l| !l.stats.is_empty())
                        .then_some(StatsSource {
                            seq,
                            slots: &o.slots,
                            visibility: o.visibility,
                            sliding_window: session.model.cfg.sliding_window,
                            result,
                        })
                })
                .collect();
            let generated = results.outcomes.iter().any(|o| o.slots.len() > o.n_prompt);
            let stats = (results.spec.stats).then(|| (stats_tables(&sources), generated));
            Ok((tokens, stats))
        })?;
        let out = PyDict::new(py);
        let token_list = PyList::empty(py);
        for t in tokens {
            token_list.append(table_to_py(py, t)?)?;
        }
        out.set_item("tokens", token_list)?;
        if let Some((t, generated)) = stats {
            out.set_item("stats", table_to_py(py, t.stats)?)?;
            out.set_item("received", table_to_py(py, t.received)?)?;
            out.set_item("distance", table_to_py(py, t.distance)?)?;
            if generated {
                out.set_item("steps", table_to_py(py, t.steps)?)?;
                out.set_item("step_groups", table_to_py(py, t.step_groups)?)?;
            }
        }
        Ok(out)
    }

    /// The manifest's record of each input (source, text, token counts, generated text).
    fn inputs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let value = serde_json::to_value(&self.results.inputs)
            .map_err(|e| crate::errors::AttnscopeError::new_err(e.to_string()))?;
        json_to_py(py, &value)
    }

    /// The capture spec and generation settings the run used.
    fn settings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let value = serde_json::json!({
            "capture": self.results.spec,
            "generation": self.job.generation,
            "device": self.session.placement.device,
            "compute_dtype": self.session.placement.dtype,
            "model": self.session.model.dir.display().to_string(),
        });
        json_to_py(py, &value)
    }

    /// Writes the run directory `attnscope run` writes for the same job; returns its path.
    #[pyo3(signature = (path, overwrite = false))]
    fn save(&self, py: Python<'_>, path: PathBuf, overwrite: bool) -> PyResult<PathBuf> {
        let (job, results, session) = (&self.job, &self.results, &self.session);
        compute(py, move |_| {
            results
                .write_run(&path, overwrite, job, session)
                .map(|(p, _)| p)
        })
    }
}

fn weight_shape(w: &SequenceWeights) -> [usize; 4] {
    [w.layers.len(), w.heads.len(), w.t, w.t]
}
