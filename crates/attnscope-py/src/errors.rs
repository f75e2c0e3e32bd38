//! Engine errors as Python exceptions: bad input → `ValueError`, files → `OSError` (`FileNotFoundError`
//! for a missing one), an interrupt → `KeyboardInterrupt`, the rest → `attnscope.AttnscopeError`. The
//! message is the engine's one line.

use attnscope_core::Error;
use pyo3::PyErr;
use pyo3::exceptions::{
    PyException, PyFileNotFoundError, PyKeyboardInterrupt, PyOSError, PyValueError,
};

pyo3::create_exception!(
    attnscope,
    AttnscopeError,
    PyException,
    "An engine failure that is neither bad input nor a file problem (a CUDA error, an internal error)."
);

/// The Python exception for an engine error.
pub fn to_py(e: Error) -> PyErr {
    let message = e.to_string();
    match &e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(message)
        }
        Error::Io { .. } | Error::Output { .. } => PyOSError::new_err(message),
        Error::Json { .. }
        | Error::Field { .. }
        | Error::Weights { .. }
        | Error::Tokenizer { .. }
        | Error::Input(_) => PyValueError::new_err(message),
        Error::Interrupted(_) => PyKeyboardInterrupt::new_err(message),
        _ => AttnscopeError::new_err(message),
    }
}

/// A panic's payload as text.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// The exception a caught panic becomes.
pub fn panic_error(payload: &(dyn std::any::Any + Send)) -> PyErr {
    AttnscopeError::new_err(format!(
        "internal error (a bug in attnscope; please report it): {}",
        panic_message(payload)
    ))
}
