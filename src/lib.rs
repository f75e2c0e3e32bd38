//! attnscope: an inference engine for attention research.
//!
//! Loads Hugging Face causal-LM checkpoints, runs prefill and generation, and captures attention exactly
//! (post-softmax probabilities and per-head statistics) as a side output of the real forward pass.
//! See ARCHITECTURE.md for the map of modules and the data flow of a run.

pub mod analyze;
pub mod bench;
pub mod capture;
pub mod cli;
pub mod config;
pub mod cuda;
pub mod error;
pub mod input;
pub mod io;
pub mod job;
pub mod model;
pub mod run;
pub mod sampling;
pub mod slots;
pub mod tokenizer;
pub mod weights;
pub mod weights_map;

pub use error::{Error, Result};
