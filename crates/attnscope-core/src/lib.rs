//! attnscope-core: the engine without a device of its own — config, weights, tokenizer, input specs, slot
//! metadata, sampling, the model with its ONE forward pass over the [`model::backend::Backend`] trait, the
//! CPU backend, the KV cache, capture recorders, and runs (prefill + generation, parallel sets, ablation).
//!
//! Nothing here names a CUDA type: the GPU backend (`attnscope-cuda`) implements the same trait. See
//! ARCHITECTURE.md for the map of crates and the data flow of a run.

pub mod capture;
pub mod config;
pub mod error;
pub mod input;
pub mod lanes;
pub mod model;
pub mod rng;
pub mod run;
pub mod sampling;
pub mod slots;
pub mod tokenizer;
pub mod weights;

pub use error::{Error, Result};
