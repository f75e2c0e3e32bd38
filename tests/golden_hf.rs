//! Golden tests against Hugging Face transformers (eager attention, output_attentions=True, float32):
//! the tiny random checkpoints of every supported architecture in tests/fixtures (made by
//! scripts/make_golden.py) and the real stories260K model in ../shared, on the CPU reference.
//! Tolerances: attention probabilities max abs error ≤ 1e-5, logits ≤ 1e-4, greedy tokens equal.
//! The same checks run on the GPU in tests/gpu_model.rs.

mod common;

use attnscope_core::capture::CaptureSpec;
use attnscope_core::input::SequenceInput;
use attnscope_core::model::Model;
use attnscope_core::run::{GenerateOptions, PromptLogits, run_sequence};
use common::golden::{Tolerance, check_fixtures, check_stories260k, ints, visibility};
use common::{max_abs_diff, read_tensors, repo};
use serde_json::Value;

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

/// `run_sequence` keeps the prompt's logits as `GenerateOptions::prompt_logits` asks: `All` one row per
/// prompt slot, equal to transformers' logits of every llama_gqa case (plain, parallel visible, parallel
/// isolated); `Last` the last of those rows; and neither changes the generated tokens.
#[test]
fn prompt_logits_match_transformers() {
    let dir = repo().join("tests/fixtures/llama_gqa");
    let model = Model::load(&dir).unwrap();
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let gold = read_tensors(&dir.join("golden.safetensors"));
    let vocab = model.cfg.vocab_size;
    let no_capture = CaptureSpec {
        stats: false,
        ..CaptureSpec::default()
    };
    for c in golden["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let seq = SequenceInput {
            token_ids: ints(&c["input_ids"]),
            positions: ints(&c["position_ids"]),
            groups: ints(&c["groups"]),
            visibility: visibility(c["visibility"].as_str().unwrap()),
        };
        let n = seq.token_ids.len();
        let run = |prompt_logits| {
            let generation = GenerateOptions {
                max_new_tokens: 3,
                stop_at_eos: false,
                prompt_logits,
                ..GenerateOptions::default()
            };
            run_sequence(&model, &seq, &no_capture, &generation, &mut || Ok(())).unwrap()
        };
        let (none, last, all) = (
            run(PromptLogits::None),
            run(PromptLogits::Last),
            run(PromptLogits::All),
        );
        assert!(none.logits.is_none(), "{name}");
        let all_rows = all.logits.as_ref().unwrap();
        assert_eq!((all_rows.rows, all_rows.vocab), (n, vocab), "{name}");
        let (shape, want) = &gold[&format!("{name}.logits")];
        assert_eq!(shape, &vec![n, vocab], "{name}");
        let d = max_abs_diff(&all_rows.data, want);
        assert!(d <= 1e-4, "{name}: prompt logits max abs diff {d}");
        let last_row = last.logits.as_ref().unwrap();
        assert_eq!((last_row.rows, last_row.vocab), (1, vocab), "{name}");
        let d = max_abs_diff(&last_row.data, &all_rows.data[(n - 1) * vocab..]);
        assert!(d <= 1e-5, "{name}: the last row differs from All's by {d}");
        let tokens = |o: &attnscope_core::run::SequenceOutcome| -> Vec<u32> {
            o.slots.iter().map(|s| s.token).collect()
        };
        assert_eq!(tokens(&last), tokens(&none), "{name}");
        assert_eq!(tokens(&all), tokens(&none), "{name}");
        assert_eq!(none.slots.len(), n + 3, "{name}");
    }
}
