//! The job API: load a model, place it on a device, run inputs with capture, write a run directory or
//! return the results in memory.

pub mod placement;

pub use placement::{Placement, place};
