//! attnscope's Python module, `attnscope._attnscope` (the `attnscope` package wraps it in
//! `python/attnscope`). It calls the job API in-process: [`session::PySession`] is an
//! `attnscope_job::Session` kept open between calls, [`result::PyRunResult`] holds a job's results,
//! whose weights and logits reach numpy as views of the engine's buffers.
//!
//! Every call that computes releases the GIL and re-takes it only between steps, to let Ctrl-C through
//! ([`calls::Interruptible`]); engine errors become Python exceptions carrying the engine's one-line
//! message ([`errors`]), and a panic becomes `attnscope.AttnscopeError`, never an abort.

mod calls;
mod errors;
mod options;
mod result;
mod session;
mod tables;

use pyo3::prelude::*;

pub use errors::AttnscopeError;

/// The native module; `python/attnscope/__init__.py` re-exports what users call.
#[pymodule]
fn _attnscope(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("AttnscopeError", m.py().get_type::<AttnscopeError>())?;
    m.add_class::<session::PySession>()?;
    m.add_class::<result::PyRunResult>()?;
    m.add_function(wrap_pyfunction!(set_threads, m)?)?;
    m.add_function(wrap_pyfunction!(threads, m)?)?;
    m.add_function(wrap_pyfunction!(panic_for_tests, m)?)?;
    Ok(())
}

/// Sizes the engine's thread pool (all cores when never called). Only before the first computation:
/// the pool cannot be resized once it runs.
#[pyfunction]
fn set_threads(n: usize) -> PyResult<()> {
    if n == 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "threads: must be at least 1",
        ));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|_| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "threads: the engine's thread pool already runs with {} threads; call set_threads \
                 before the first load",
                rayon::current_num_threads()
            ))
        })
}

/// The number of threads the engine computes with.
#[pyfunction]
fn threads() -> usize {
    rayon::current_num_threads()
}

/// Panics inside a guarded engine call, so that the tests can check a panic arrives as
/// `AttnscopeError` (nothing else calls it).
#[pyfunction]
fn panic_for_tests(py: Python<'_>) -> PyResult<()> {
    calls::compute(py, |_| -> attnscope_core::Result<()> {
        panic!("deliberate panic for the tests")
    })
}
