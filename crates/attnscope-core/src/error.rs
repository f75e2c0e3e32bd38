//! One error type for the whole crate. Every variant names the file or field at fault so that the CLI can
//! print a single line that tells the user what to fix.

use std::path::PathBuf;

/// Errors raised by attnscope. `Display` is a one-line message meant for users.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (config.json, --input, tokenizer files) is not valid JSON or has the wrong shape.
    #[error("{path}: {message}")]
    Json { path: PathBuf, message: String },
    /// A field of a config or input file is missing or has an unusable value.
    #[error("{path}: field `{field}`: {message}")]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
    /// A weights file is unreadable, truncated, or lacks or mis-shapes a tensor.
    #[error("{path}: {message}")]
    Weights { path: PathBuf, message: String },
    /// The tokenizer files are unusable or disagree with the model.
    #[error("{path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    /// Bad user input that is not tied to a file (flags, prompts, token ids).
    #[error("{0}")]
    Input(String),
    /// Writing the run directory failed.
    #[error("{path}: {message}")]
    Output { path: PathBuf, message: String },
    /// The CUDA backend is unavailable or failed: no driver or NVRTC, a kernel that does not compile, a
    /// failed launch. The message names the library or kernel file concerned.
    #[error("{0}")]
    Cuda(String),
    /// The caller stopped the work (a progress callback or a front end's interrupt, e.g. Python's
    /// KeyboardInterrupt); the message says by what, e.g. `interrupted (KeyboardInterrupt)`.
    #[error("{0}")]
    Interrupted(String),
}

/// Crate-wide result alias.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A missing or unusable field of a file.
    pub fn field(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Field {
            path: path.into(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// A problem with a weights file.
    pub fn weights(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Weights {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A problem with tokenizer files.
    pub fn tokenizer(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Tokenizer {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A problem writing outputs.
    pub fn output(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Output {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A CUDA backend failure (library missing, kernel compile error, launch error).
    pub fn cuda(message: impl Into<String>) -> Self {
        Error::Cuda(message.into())
    }

    /// The work was stopped by its caller; `message` is the whole line, e.g.
    /// `interrupted (KeyboardInterrupt)`.
    pub fn interrupted(message: impl Into<String>) -> Self {
        Error::Interrupted(message.into())
    }

    /// Bad user input not tied to a file.
    pub fn input(message: impl Into<String>) -> Self {
        Error::Input(message.into())
    }
}
