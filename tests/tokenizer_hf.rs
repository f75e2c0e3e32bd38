//! Tokenizer ids agree with Hugging Face's tokenizers (tests/fixtures/tokenizer_cases.json, made by
//! scripts/make_golden.py): the committed default model's tokenizer.json, and the GPT-2 tokenizer in
//! ../shared both through its tokenizer.json and through vocab.json + merges.txt alone.

mod common;

use attnscope_core::tokenizer::TextTokenizer;
use common::*;
use serde_json::Value;
use std::path::Path;

fn cases(name: &str) -> Vec<(String, Vec<u32>)> {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/tokenizer_cases.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v[name]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = c["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            (c["text"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

fn check(dir: &Path, name: &str) {
    let tok = TextTokenizer::from_dir(dir)
        .unwrap()
        .expect("tokenizer present");
    let cases = cases(name);
    assert!(cases.len() >= 5);
    for (text, want) in cases {
        if text.is_empty() {
            // attnscope refuses empty prompts instead of running a BOS-only sequence.
            assert!(
                tok.encode(&text).is_err(),
                "{name}: empty text must be refused"
            );
            continue;
        }
        assert_eq!(
            tok.encode(&text).unwrap(),
            want,
            "{name} ({}): {text:?}",
            tok.kind()
        );
    }
}

#[test]
fn default_model_tokenizer_matches_hf() {
    check(
        &repo().join("models/tiny-random-llama"),
        "tiny-random-llama",
    );
}

#[test]
fn gpt2_tokenizer_matches_hf_in_both_layouts() {
    let Some(shared) = shared("tokenizers/gpt2") else {
        return;
    };
    let dir = shared.join("tokenizers/gpt2");
    check(&dir, "gpt2");
    let tmp = tempfile::tempdir().unwrap();
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(dir.join(f), tmp.path().join(f)).unwrap();
    }
    check(tmp.path(), "gpt2");
}
