//! A batched forward (several sequences stacked, as in batched decode) gives the same logits and
//! attention as running each sequence alone. Tolerance 1e-5 (only summation order may differ).

mod common;

use attnscope_core::model::Model;
use common::batch::batched_matches_single;
use common::*;

#[test]
fn batched_prefill_and_decode_match_single_sequences() {
    for name in ["llama_gqa", "gpt2", "gpt_neox_parallel"] {
        let model = Model::load(&repo().join("tests/fixtures").join(name)).unwrap();
        batched_matches_single(&model, &model, true, 1e-5, 1e-5, name);
        batched_matches_single(&model, &model, false, 1e-5, 1e-5, name);
    }
}
