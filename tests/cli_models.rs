//! `attnscope` on the real stories260K model (from ../shared), `inspect` in text and JSON, and `--help`.

mod common;

use common::cli::{attnscope, default_model, fixture, manifest, run_ok};
use safetensors::SafeTensors;
use serde_json::Value;
use std::fs;

#[test]
fn stories260k_generates_known_text() {
    let Some(shared) = common::shared("models/stories260K") else {
        return;
    };
    let model = shared.join("models/stories260K");
    let tmp = tempfile::tempdir().unwrap();
    let output = run_ok(
        attnscope(tmp.path())
            .arg("run")
            .arg("--model")
            .arg(&model)
            .args([
                "--prompt",
                "Once upon a time",
                "--generate",
                "20",
                "--out",
                "s",
            ]),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("there was a little girl named Lily"),
        "stdout:\n{stdout}"
    );
    let m = manifest(&tmp.path().join("s"));
    assert!(
        m["inputs"][0]["generated_text"]
            .as_str()
            .unwrap()
            .contains("there was a little girl named Lily")
    );
}

#[test]
fn inspect_text_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("llama_gqa");
    let json_out = run_ok(
        attnscope(tmp.path())
            .arg("inspect")
            .arg(&model)
            .arg("--json"),
    );
    let v: Value = serde_json::from_slice(&json_out.stdout).unwrap();
    assert_eq!(v["architecture"]["family"], "llama");
    assert_eq!(v["architecture"]["n_layers"], 2);
    assert_eq!(v["architecture"]["n_heads"], 6);
    assert_eq!(v["tokenizer"], Value::Null);
    let params = v["parameters"].as_u64().unwrap();
    // The fixture is untied without biases: every stored scalar is a parameter.
    let bytes = fs::read(model.join("model.safetensors")).unwrap();
    let stored: usize = SafeTensors::deserialize(&bytes)
        .unwrap()
        .tensors()
        .iter()
        .map(|(_, t)| t.shape().iter().product::<usize>())
        .sum();
    assert_eq!(params, stored as u64);

    let text_out = run_ok(attnscope(tmp.path()).arg("inspect").arg(&model));
    let text = String::from_utf8_lossy(&text_out.stdout);
    assert!(text.contains("llama"), "{text}");
    assert!(text.contains(&params.to_string()), "{text}");

    // The default model has a tokenizer.
    let json_out = run_ok(
        attnscope(tmp.path())
            .arg("inspect")
            .arg(default_model())
            .arg("--json"),
    );
    let v: Value = serde_json::from_slice(&json_out.stdout).unwrap();
    assert_eq!(v["tokenizer"]["kind"], "tokenizer.json");
    assert_eq!(v["tokenizer"]["vocab_size"], 512);
}

#[test]
fn help_exits_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let top = run_ok(attnscope(tmp.path()).arg("--help"));
    let top = String::from_utf8_lossy(&top.stdout);
    assert!(top.contains("run") && top.contains("inspect"), "{top}");
    let run = run_ok(attnscope(tmp.path()).args(["run", "--help"]));
    let run = String::from_utf8_lossy(&run.stdout);
    for flag in ["--prompt", "--input", "--capture", "--out", "--overwrite"] {
        assert!(run.contains(flag), "run --help lacks {flag}");
    }
}
