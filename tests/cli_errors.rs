//! CLI error handling: every bad input must make `attnscope` exit non-zero with exactly one `error: ...`
//! line on stderr that names the file, field or flag at fault, and must leave no output directory (neither
//! `--out` nor a hidden `.<name>.tmp-*` sibling) behind.

mod common;

use common::cli::{copy_dir, default_model, entries, fixture};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::TempDir;

/// A scratch area: `root/outs` is the (initially empty) parent of the `--out` path `root/outs/run`.
struct Scratch {
    tmp: TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("outs")).unwrap();
        Scratch { tmp }
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// The parent of [`Scratch::out`], which must stay as it was after a failed run.
    fn outs(&self) -> PathBuf {
        self.root().join("outs")
    }

    fn out(&self) -> PathBuf {
        self.outs().join("run")
    }

    /// A private copy of a model directory, free to be broken.
    fn model_copy(&self, src: &Path) -> PathBuf {
        let dst = self.root().join("model");
        copy_dir(src, &dst);
        dst
    }

    /// Writes `text` to `root/name` and returns the path.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.root().join(name);
        fs::write(&p, text).unwrap();
        p
    }

    /// `attnscope run --out <out>` with cwd = the scratch root.
    fn run_cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_attnscope"));
        cmd.current_dir(self.root())
            .arg("run")
            .arg("--out")
            .arg(self.out());
        cmd
    }
}

/// Runs `cmd`, which must fail with exactly one `error: ` line on stderr (besides `note:`/`warning:`
/// lines) containing every one of `needles`, and must leave the entries of `watch` as they were.
/// Returns the error line.
fn expect_error(mut cmd: Command, watch: &Path, needles: &[&str]) -> String {
    let before = entries(watch);
    let output = cmd.output().expect("cannot start attnscope");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let ctx = format!(
        "{cmd:?}\n--- status: {:?}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}",
        output.status
    );
    assert!(
        matches!(output.status.code(), Some(c) if c != 0),
        "expected a non-zero exit code\n{ctx}"
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with("note:") && !l.starts_with("warning:"))
        .collect();
    assert_eq!(lines.len(), 1, "expected exactly one error line\n{ctx}");
    let line = lines[0];
    assert!(
        line.starts_with("error: "),
        "line must start with `error: `\n{ctx}"
    );
    for needle in needles {
        assert!(line.contains(needle), "error line lacks {needle:?}\n{ctx}");
    }
    let after = entries(watch);
    assert_eq!(
        before,
        after,
        "{} changed (output or temp directory left behind)\n{ctx}",
        watch.display()
    );
    eprintln!("{line}");
    line.to_string()
}

/// One tensor of a safetensors file, owned.
struct OwnedTensor {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// Rewrites a safetensors file after `edit` changed its list of tensors.
fn rewrite_safetensors(path: &Path, edit: impl FnOnce(&mut Vec<OwnedTensor>)) {
    let bytes = fs::read(path).unwrap();
    let mut tensors: Vec<OwnedTensor> = SafeTensors::deserialize(&bytes)
        .unwrap()
        .tensors()
        .into_iter()
        .map(|(name, v)| OwnedTensor {
            name,
            dtype: v.dtype(),
            shape: v.shape().to_vec(),
            data: v.data().to_vec(),
        })
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            let view = TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap();
            (t.name.clone(), view)
        })
        .collect();
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    fs::write(path, safetensors::serialize(views, Some(metadata)).unwrap()).unwrap();
}

/// Edits a JSON file in place.
fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// Writes an `--input` spec with the given sequences and returns its path.
fn input_file(s: &Scratch, spec: serde_json::Value) -> PathBuf {
    s.write("spec.json", &spec.to_string())
}

// ---------------------------------------------------------------------------------------------------------
// Model directory problems

#[test]
fn missing_config_json() {
    let s = Scratch::new();
    let model = s.model_copy(&default_model());
    fs::remove_file(model.join("config.json")).unwrap();
    let mut cmd = s.run_cmd();
    cmd.arg("--model").arg(&model).args(["--prompt", "hello"]);
    expect_error(cmd, &s.outs(), &["config.json"]);
}

#[test]
fn malformed_config_json() {
    let s = Scratch::new();
    let model = s.model_copy(&default_model());
    fs::write(
        model.join("config.json"),
        "{ \"model_type\": \"llama\", oops",
    )
    .unwrap();
    let mut cmd = s.run_cmd();
    cmd.arg("--model").arg(&model).args(["--prompt", "hello"]);
    expect_error(cmd, &s.outs(), &["config.json", "JSON"]);
}

#[test]
fn unknown_model_type() {
    let s = Scratch::new();
    let model = s.model_copy(&default_model());
    edit_json(&model.join("config.json"), |v| {
        v["model_type"] = "bert".into();
    });
    let mut cmd = s.run_cmd();
    cmd.arg("--model").arg(&model).args(["--prompt", "hello"]);
    expect_error(cmd, &s.outs(), &["config.json", "model_type", "bert"]);
}

#[test]
fn config_missing_required_field() {
    let s = Scratch::new();
    let model = s.model_copy(&default_model());
    edit_json(&model.join("config.json"), |v| {
        v.as_object_mut().unwrap().remove("num_hidden_layers");
    });
    let mut cmd = s.run_cmd();
    cmd.arg("--model").arg(&model).args(["--prompt", "hello"]);
    expect_error(cmd, &s.outs(), &["config.json", "num_hidden_layers"]);
}

#[test]
fn missing_tensor() {
    let s = Scratch::new();
    let model = s.model_copy(&fixture("llama_gqa"));
    let name = "model.layers.1.self_attn.k_proj.weight";
    rewrite_safetensors(&model.join("model.safetensors"), |ts| {
        let before = ts.len();
        ts.retain(|t| t.name != name);
        assert_eq!(ts.len(), before - 1);
    });
    let spec = input_file(
        &s,
        serde_json::json!({"sequences": [{"token_ids": [1, 2, 3]}]}),
    );
    let mut cmd = s.run_cmd();
    cmd.arg("--model").arg(&model).arg("--input").arg(&spec);
    expect_error(cmd, &s.outs(), &["model.safetensors", name]);
}

#[test]
fn mis_shaped_tensor() {
    let s = Scratch::new();
    let model = s.model_copy(&fixture("llama_gqa"));
    let name = "model.layers.0.self_attn.q_proj.weight";
    rewrite_safetensors(&model.join("model.safetensors"), |ts| {
        let t = ts.iter_mut().find(|t| t.name == name).unwrap();
        assert_eq!(t.shape, vec![48, 48]);
        t.shape = vec![48, 40];
        t.data.truncate(48 * 40 * 4);
    });
    let spec = input_file(
        &s,
        serde_json::json!({"sequences": [{"token_ids": [1, 2, 3]}]}),
    );
    let mut cmd = s.run_cmd();
    cmd.arg("--model").arg(&model).arg("--input").arg(&spec);
    let line = expect_error(cmd, &s.outs(), &["model.safetensors", name, "shape"]);
    assert!(
        line.contains("[48, 40]") && line.contains("[48, 48]"),
        "{line}"
    );
}

#[test]
fn truncated_safetensors() {
    let s = Scratch::new();
    let model = s.model_copy(&fixture("llama_gqa"));
    let file = model.join("model.safetensors");
    let bytes = fs::read(&file).unwrap();
    fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let spec = input_file(
        &s,
        serde_json::json!({"sequences": [{"token_ids": [1, 2, 3]}]}),
    );
    let mut cmd = s.run_cmd();
    cmd.arg("--model").arg(&model).arg("--input").arg(&spec);
    expect_error(cmd, &s.outs(), &["model.safetensors"]);
}

#[test]
fn tokenizer_vocab_mismatch() {
    let s = Scratch::new();
    let model = s.model_copy(&default_model());
    // config.json says vocab_size 512 (ids 0..=511); give the tokenizer three more ids.
    edit_json(&model.join("tokenizer.json"), |v| {
        let added = v["added_tokens"].as_array_mut().unwrap();
        for (i, id) in (600..603).enumerate() {
            added.push(serde_json::json!({
                "id": id,
                "content": format!("<extra_{i}>"),
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": true
            }));
        }
    });
    let mut cmd = s.run_cmd();
    cmd.arg("--model").arg(&model).args(["--prompt", "hello"]);
    expect_error(cmd, &s.outs(), &["tokenizer.json", "vocab_size", "512"]);
}

#[test]
fn prompt_without_tokenizer() {
    let s = Scratch::new();
    let mut cmd = s.run_cmd();
    cmd.arg("--model")
        .arg(fixture("llama_gqa"))
        .args(["--prompt", "hello"]);
    expect_error(cmd, &s.outs(), &["tokenizer", "--input"]);
}

// ---------------------------------------------------------------------------------------------------------
// Prompt and context problems

#[test]
fn empty_prompt() {
    let s = Scratch::new();
    let mut cmd = s.run_cmd();
    cmd.arg("--model")
        .arg(default_model())
        .args(["--prompt", ""]);
    expect_error(cmd, &s.outs(), &["--prompt", "empty"]);
}

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

#[test]
fn out_under_a_regular_file() {
    let s = Scratch::new();
    let file = s.write("file.txt", "not a directory");
    let out = file.join("out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_attnscope"));
    cmd.current_dir(s.root())
        .arg("run")
        .arg("--model")
        .arg(default_model())
        .args(["--prompt", "hello", "--quiet", "--out"])
        .arg(&out);
    expect_error(cmd, s.root(), &["file.txt"]);
    assert_eq!(fs::read_to_string(&file).unwrap(), "not a directory");
}

#[test]
fn out_exists_without_overwrite() {
    let s = Scratch::new();
    let out = s.out();
    fs::create_dir(&out).unwrap();
    fs::write(out.join("keep.txt"), "precious").unwrap();
    let mut cmd = s.run_cmd();
    cmd.arg("--model")
        .arg(default_model())
        .args(["--prompt", "hello"]);
    let out_str = out.display().to_string();
    expect_error(cmd, &s.outs(), &[&out_str, "exists"]);
    assert_eq!(entries(&out), vec!["keep.txt"]);
    assert_eq!(
        fs::read_to_string(out.join("keep.txt")).unwrap(),
        "precious"
    );
}

// ---------------------------------------------------------------------------------------------------------
// Flag problems

#[test]
fn layers_out_of_range() {
    let s = Scratch::new();
    let mut cmd = s.run_cmd();
    // tiny-random-llama has 4 layers.
    cmd.arg("--model")
        .arg(default_model())
        .args(["--prompt", "hello", "--layers", "2-4"]);
    expect_error(cmd, &s.outs(), &["--layers", "2-4"]);
}

#[test]
fn layers_not_a_list() {
    let s = Scratch::new();
    let mut cmd = s.run_cmd();
    cmd.arg("--model")
        .arg(default_model())
        .args(["--prompt", "hello", "--layers", "first"]);
    expect_error(cmd, &s.outs(), &["--layers", "first"]);
}

#[test]
fn heads_out_of_range() {
    let s = Scratch::new();
    let mut cmd = s.run_cmd();
    // tiny-random-llama has 8 heads.
    cmd.arg("--model")
        .arg(default_model())
        .args(["--prompt", "hello", "--heads", "0,8"]);
    expect_error(cmd, &s.outs(), &["--heads", "8"]);
}

#[test]
fn heads_reversed_range() {
    let s = Scratch::new();
    let mut cmd = s.run_cmd();
    cmd.arg("--model")
        .arg(default_model())
        .args(["--prompt", "hello", "--heads", "3-1"]);
    expect_error(cmd, &s.outs(), &["--heads", "3-1"]);
}

#[test]
fn bad_capture_kind() {
    let s = Scratch::new();
    let mut cmd = s.run_cmd();
    cmd.arg("--model").arg(default_model()).args([
        "--prompt",
        "hello",
        "--capture",
        "weights,attention",
    ]);
    expect_error(cmd, &s.outs(), &["--capture", "attention"]);
}

#[test]
fn device_cuda_is_refused_clearly() {
    let s = Scratch::new();
    let mut cmd = s.run_cmd();
    cmd.arg("--model")
        .arg(default_model())
        .args(["--prompt", "hello", "--device", "cuda:99"]);
    // No driver here, or (on a GPU host) no 100th device: either way one line naming the flag and the way out.
    expect_error(cmd, &s.outs(), &["--device cuda:99", "--device cpu"]);
}

#[test]
fn no_prompt_and_no_input() {
    let s = Scratch::new();
    let mut cmd = s.run_cmd();
    cmd.arg("--model").arg(default_model());
    expect_error(cmd, &s.outs(), &["--prompt", "--input"]);
}

#[test]
fn failed_run_removes_parent_directories_it_created() {
    let s = Scratch::new();
    let out = s.outs().join("new/deeper/run");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_attnscope"));
    cmd.current_dir(s.root())
        .args(["run", "--model"])
        .arg(fixture("llama_gqa"))
        .args(["--prompt", "hello", "--out"])
        .arg(&out);
    expect_error(cmd, &s.outs(), &["tokenizer"]);
    assert!(
        !s.outs().join("new").exists(),
        "created parents must be removed"
    );
}
