//! How a Python call runs the engine: without the GIL, under a panic guard, and interruptible between
//! steps.

use crate::errors::{panic_error, to_py};
use attnscope_core::Error;
use attnscope_job::Progress;
use pyo3::prelude::*;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `work` with the GIL released. It gets an [`Interruptible`] to hand to the job as its progress;
/// an engine error becomes its Python exception, a pending KeyboardInterrupt (or any exception a signal
/// handler raised) is re-raised as it was, and a panic becomes `AttnscopeError`.
pub fn compute<T: Send>(
    py: Python<'_>,
    work: impl FnOnce(&mut Interruptible) -> attnscope_core::Result<T> + Send,
) -> PyResult<T> {
    let mut progress = Interruptible::default();
    let outcome = py.detach(|| catch_unwind(AssertUnwindSafe(|| work(&mut progress))));
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(progress.raised.take().unwrap_or_else(|| to_py(e))),
        Err(payload) => Err(panic_error(payload.as_ref())),
    }
}

/// A job's progress that gives Python's signal handlers a chance after every prefill and generation step
/// (and before every sequence): with Ctrl-C pressed, the handler raises KeyboardInterrupt, the job stops
/// with `Error::Interrupted` and [`compute`] re-raises the handler's exception.
#[derive(Default)]
pub struct Interruptible {
    raised: Option<PyErr>,
}

impl Interruptible {
    fn check(&mut self) -> attnscope_core::Result<()> {
        match Python::attach(|py| py.check_signals()) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.raised = Some(e);
                Err(Error::Interrupted("interrupted (KeyboardInterrupt)".into()))
            }
        }
    }
}

impl Progress for Interruptible {
    fn check(&mut self) -> attnscope_core::Result<()> {
        Interruptible::check(self)
    }
    fn step(&mut self) -> attnscope_core::Result<()> {
        Interruptible::check(self)
    }
}
