//! Golden tests against Hugging Face transformers (eager attention, output_attentions=True, float32):
//! the tiny random checkpoints of every supported architecture in tests/fixtures (made by
//! scripts/make_golden.py) and the real stories260K model in ../shared, on the CPU reference.
//! Tolerances: attention probabilities max abs error ≤ 1e-5, logits ≤ 1e-4, greedy tokens equal.
//! The same checks run on the GPU in tests/gpu_model.rs.

mod common;

use common::golden::{Tolerance, check_fixtures, check_stories260k};

const CPU: Tolerance = Tolerance {
    attention: 1e-5,
    logits: Some(1e-4),
};

#[test]
fn fixtures_match_transformers() {
    check_fixtures(&|_| {}, CPU);
}

#[test]
fn stories260k_matches_transformers() {
    check_stories260k(&|_| {}, CPU);
}
