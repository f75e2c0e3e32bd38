//! Issue #12 items 1 and 2: sizes from config.json or flags that the machine cannot hold, counters that
//! would overflow, and numbers that would turn the forward pass into NaN are refused before anything is
//! allocated, each with one `error:` line naming the field or flag, a non-zero exit and nothing left behind.

mod common;

use common::cli::{Scratch, default_model, edit_json, expect_error, input_file, run_ok};
use std::path::Path;

/// `attnscope run` on a copy of the default model whose config.json `edit` changed; expects one error
/// line holding every needle.
fn config_error(edit: impl FnOnce(&mut serde_json::Value), needles: &[&str]) {
    let s = Scratch::new();
    let model = s.model_copy(&default_model());
    edit_json(&model.join("config.json"), edit);
    let mut cmd = s.run_cmd();
    cmd.arg("--model").arg(&model).args(["--prompt", "hello"]);
    expect_error(cmd, &s.outs(), needles);
}

#[test]
fn huge_layer_counts_are_refused_by_name() {
    for n in [1_000_000_000u64, 1 << 31, 1 << 62] {
        config_error(
            |v| v["num_hidden_layers"] = n.into(),
            &["config.json", "num_hidden_layers", "maximum"],
        );
    }
    config_error(
        |v| v["vocab_size"] = (1u64 << 40).into(),
        &["config.json", "vocab_size", "maximum"],
    );
}

#[test]
fn numbers_that_would_give_nan_are_refused() {
    config_error(
        |v| v["rms_norm_eps"] = (-1.0).into(),
        &["config.json", "rms_norm_eps", "positive"],
    );
    config_error(
        |v| v["rms_norm_eps"] = 1e-50.into(),
        &["config.json", "rms_norm_eps", "f32"],
    );
    config_error(
        |v| v["rope_parameters"]["rope_theta"] = 1e-300.into(),
        &["config.json", "rope_theta"],
    );
    config_error(
        |v| {
            v["rope_parameters"] =
                serde_json::json!({"rope_theta": 10000.0, "rope_type": "linear", "factor": 0.0})
        },
        &["config.json", "rope_parameters.factor", "positive"],
    );
    config_error(
        |v| {
            v["rope_parameters"] = serde_json::json!({
                "rope_theta": 10000.0, "rope_type": "llama3", "factor": 0.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192
            })
        },
        &["config.json", "rope_parameters.factor"],
    );
}

#[test]
fn token_ids_outside_u32_or_the_vocab_are_refused() {
    config_error(
        |v| v["bos_token_id"] = (u32::MAX as u64 + 2).into(),
        &["config.json", "bos_token_id", "vocab_size"],
    );
    config_error(
        |v| v["eos_token_id"] = serde_json::json!([2, 512]),
        &["config.json", "eos_token_id", "512"],
    );
}

/// `attnscope run --prompt hello` + `args` on a copy of the default model without
/// `max_position_embeddings` (nothing bounds the context), expecting a refusal that names the flag.
fn flags_error(args: &[&str], needles: &[&str]) {
    let s = Scratch::new();
    let model = s.model_copy(&default_model());
    edit_json(&model.join("config.json"), |v| {
        v.as_object_mut().unwrap().remove("max_position_embeddings");
    });
    let mut cmd = s.run_cmd();
    cmd.arg("--model")
        .arg(&model)
        .args(["--prompt", "hello"])
        .args(args);
    expect_error(cmd, &s.outs(), needles);
}

#[test]
fn requests_beyond_the_machines_memory_are_refused_up_front() {
    if !Path::new("/proc/meminfo").exists() {
        println!("SKIP: memory refusals (no /proc/meminfo on this system)");
        return;
    }
    flags_error(
        &["--generate", "1000000000"],
        &["--generate 1000000000", "GB", "available"],
    );
    flags_error(
        &["--generate", "9223372036854775807"],
        &["--generate 9223372036854775807"],
    );
    flags_error(
        &["--generate", "100000", "--capture", "weights"],
        &["--generate 100000", "GB", "available"],
    );
    flags_error(
        &[
            "--generate",
            "10",
            "--parallel-threshold",
            "0.1",
            "--parallel-max",
            "1000000000",
        ],
        &["--parallel-max 1000000000", "GB"],
    );
}

#[test]
fn position_and_group_counters_cannot_overflow() {
    let s = Scratch::new();
    let spec = input_file(
        &s,
        serde_json::json!({"sequences": [{"token_ids": [5], "positions": [i64::MAX]}]}),
    );
    let mut cmd = s.run_cmd();
    cmd.arg("--model")
        .arg(default_model())
        .arg("--input")
        .arg(&spec)
        .args(["--generate", "1"]);
    expect_error(
        cmd,
        &s.outs(),
        &["spec.json", "sequences[0]", "overflows", "position"],
    );

    let s = Scratch::new();
    let spec = input_file(
        &s,
        serde_json::json!({"sequences": [{"token_ids": [5, 6], "groups": [-1, i32::MAX]}]}),
    );
    let mut cmd = s.run_cmd();
    cmd.arg("--model")
        .arg(default_model())
        .arg("--input")
        .arg(&spec)
        .args(["--generate", "2", "--parallel-threshold", "0.1"]);
    expect_error(cmd, &s.outs(), &["spec.json", "sequences[0]", "group"]);
}

#[test]
fn threads_beyond_the_cores_are_capped_with_a_warning() {
    let s = Scratch::new();
    let mut cmd = s.run_cmd();
    cmd.arg("--model").arg(default_model()).args([
        "--prompt",
        "hello",
        "--threads",
        "100000",
        "--quiet",
    ]);
    let out = run_ok(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: --threads 100000") && stderr.contains("ATTNSCOPE_FORCE_THREADS"),
        "{stderr}"
    );
}
