//! CLI errors of `--input` specs and of inputs that do not fit the model: exit non-zero with exactly one
//! `error: ...` line naming the file and field (e.g. `sequences[1].positions[3]`), and nothing left behind.

mod common;

use common::cli::{Scratch, default_model, expect_error, fixture, input_file};

#[test]
fn input_longer_than_context() {
    let s = Scratch::new();
    // llama_gqa has max_position_embeddings 64.
    let ids: Vec<u32> = (0..80).map(|i| 3 + i % 150).collect();
    let spec = input_file(&s, serde_json::json!({"sequences": [{"token_ids": ids}]}));
    let mut cmd = s.run_cmd();
    cmd.arg("--model")
        .arg(fixture("llama_gqa"))
        .arg("--input")
        .arg(&spec);
    expect_error(
        cmd,
        &s.outs(),
        &["spec.json", "sequences[0]", "max_position_embeddings", "64"],
    );
}

#[test]
fn generate_past_context_with_input() {
    let s = Scratch::new();
    let ids: Vec<u32> = (0..10).map(|i| 3 + i).collect();
    let spec = input_file(&s, serde_json::json!({"sequences": [{"token_ids": ids}]}));
    let mut cmd = s.run_cmd();
    cmd.arg("--model")
        .arg(fixture("llama_gqa"))
        .arg("--input")
        .arg(&spec)
        .args(["--generate", "60"]);
    expect_error(
        cmd,
        &s.outs(),
        &[
            "spec.json",
            "sequences[0]",
            "60 generated",
            "max_position_embeddings",
        ],
    );
}

#[test]
fn generate_past_context_with_prompt() {
    let s = Scratch::new();
    // tiny-random-llama has max_position_embeddings 1024.
    let mut cmd = s.run_cmd();
    cmd.arg("--model").arg(default_model()).args([
        "--prompt",
        "Once upon a time",
        "--generate",
        "1100",
    ]);
    expect_error(
        cmd,
        &s.outs(),
        &["--prompt", "1100 generated", "max_position_embeddings"],
    );
}

// ---------------------------------------------------------------------------------------------------------
// --input problems

fn input_case(spec_text: &str, needles: &[&str]) {
    let s = Scratch::new();
    let spec = s.write("spec.json", spec_text);
    let mut cmd = s.run_cmd();
    cmd.arg("--model")
        .arg(fixture("llama_gqa"))
        .arg("--input")
        .arg(&spec);
    let mut all = vec!["spec.json"];
    all.extend_from_slice(needles);
    expect_error(cmd, &s.outs(), &all);
}

#[test]
fn input_token_id_out_of_range() {
    // llama_gqa has vocab_size 192.
    input_case(
        r#"{"sequences": [{"token_ids": [1, 2, 3]}, {"token_ids": [1, 500, 3]}]}"#,
        &["sequences[1]", "token_ids[1]", "500", "vocab_size"],
    );
}

#[test]
fn input_negative_token_id() {
    input_case(
        r#"{"sequences": [{"token_ids": [1, -2, 3]}]}"#,
        &["sequences[0].token_ids[1]"],
    );
}

#[test]
fn input_positions_length_mismatch() {
    input_case(
        r#"{"sequences": [{"token_ids": [1, 2, 3], "positions": [0, 1]}]}"#,
        &["sequences[0].positions", "length"],
    );
}

#[test]
fn input_groups_length_mismatch() {
    input_case(
        r#"{"sequences": [{"token_ids": [1, 2, 3], "groups": [-1, 0, 0, -1]}]}"#,
        &["sequences[0].groups", "length"],
    );
}

#[test]
fn input_bad_visibility() {
    input_case(
        r#"{"sequences": [{"token_ids": [1, 2, 3], "visibility": "hidden"}]}"#,
        &["sequences[0].visibility", "hidden"],
    );
}

#[test]
fn input_unknown_key() {
    input_case(
        r#"{"sequences": [{"token_ids": [1, 2, 3], "position_ids": [0, 1, 2]}]}"#,
        &["sequences[0].position_ids", "unknown key"],
    );
}

#[test]
fn input_unknown_top_level_key() {
    input_case(
        r#"{"sequences": [{"token_ids": [1, 2, 3]}], "seed": 3}"#,
        &["seed", "unknown key"],
    );
}

#[test]
fn input_empty_sequences() {
    input_case(r#"{"sequences": []}"#, &["sequences", "empty"]);
}

#[test]
fn input_empty_token_ids() {
    input_case(
        r#"{"sequences": [{"token_ids": []}]}"#,
        &["sequences[0].token_ids", "empty"],
    );
}

#[test]
fn input_malformed_json() {
    input_case(r#"{"sequences": [{"token_ids": [1, 2, 3]}"#, &[]);
}

#[test]
fn input_file_missing() {
    let s = Scratch::new();
    let mut cmd = s.run_cmd();
    cmd.arg("--model")
        .arg(fixture("llama_gqa"))
        .arg("--input")
        .arg(s.root().join("no-such-spec.json"));
    expect_error(cmd, &s.outs(), &["no-such-spec.json"]);
}

// ---------------------------------------------------------------------------------------------------------
// --out problems
