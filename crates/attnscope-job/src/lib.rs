//! attnscope-job: the job API every front end calls (the CLI, benchmarks, tests, the Python module and
//! sweeps). A [`Session`] is a model loaded and placed on a device with its tokenizer; a [`Job`] runs
//! inputs with capture and generation on it and returns the results in memory or writes a run directory;
//! an [`AblationJob`] scores targets with and without a KV-cache ablation.

pub mod ablation;
pub mod job;
pub mod manifest;
pub mod output;
pub mod placement;
pub mod session;
pub mod sweep;

pub use ablation::{
    AblationJob, AblationModeRequest, AblationPrompt, AblationResult, AblationTargets,
};
pub use job::{CaptureRequest, Job, JobInputs, JobResults, Progress, Quiet};
pub use placement::{DtypeRequest, Placement, place};
pub use session::Session;
