//! attnscope-analyze: analyses over finished run directories (`attnscope analyze ...`).

pub mod parallel;
pub mod stats;
