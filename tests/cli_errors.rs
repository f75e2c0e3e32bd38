//! CLI error handling: every bad input must make `attnscope` exit non-zero with exactly one `error: ...`
//! line on stderr that names the file, field or flag at fault, and must leave no output directory (neither
//! `--out` nor a hidden `.<name>.tmp-*` sibling) behind.

mod common;

use common::cli::{Scratch, default_model, edit_json, entries, expect_error, fixture, input_file};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Command;

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

/// Writes an `--input` spec with the given sequences and returns its path.

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

/// A checkpoint tensor config.json does not use (here: a fifth layer of a 4-layer config) is refused by
/// name, and accepted with `--allow-unused`, which lists it as a warning.
#[test]
fn unused_tensor_is_refused_unless_allowed() {
    let s = Scratch::new();
    let model = s.model_copy(&default_model());
    let extra = "model.layers.4.mlp.up_proj.weight";
    rewrite_safetensors(&model.join("model.safetensors"), |ts| {
        ts.push(OwnedTensor {
            name: extra.to_string(),
            dtype: Dtype::F32,
            shape: vec![2, 2],
            data: vec![0; 16],
        });
    });
    let mut cmd = s.run_cmd();
    cmd.arg("--model").arg(&model).args(["--prompt", "hello"]);
    expect_error(
        cmd,
        &s.outs(),
        &["model.safetensors", extra, "--allow-unused"],
    );
    let mut cmd = s.run_cmd();
    cmd.arg("--model")
        .arg(&model)
        .args(["--prompt", "hello", "--allow-unused"]);
    let out = cmd.output().expect("cannot start attnscope");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("warning:") && l.contains(extra)),
        "{stderr}"
    );
}

/// Finite weights so large that the forward pass overflows (a query projection of 3e38) give NaN logits:
/// an error, not a run directory of NaN.
/// A copy of the default model whose layer-0 query weights are all 3e38: finite, but the attention scores
/// overflow, so the forward pass turns to NaN.
fn overflowing_model(s: &Scratch) -> std::path::PathBuf {
    let model = s.model_copy(&default_model());
    let name = "model.layers.0.self_attn.q_proj.weight";
    rewrite_safetensors(&model.join("model.safetensors"), |ts| {
        let t = ts.iter_mut().find(|t| t.name == name).expect("q_proj");
        assert_eq!(t.dtype, Dtype::F32);
        for chunk in t.data.chunks_exact_mut(4) {
            chunk.copy_from_slice(&3e38f32.to_le_bytes());
        }
    });
    model
}

#[test]
fn overflowing_forward_pass_is_an_error() {
    let s = Scratch::new();
    let model = overflowing_model(&s);
    let mut cmd = s.run_cmd();
    cmd.arg("--model")
        .arg(&model)
        .args(["--prompt", "hello", "--generate", "2"]);
    expect_error(cmd, &s.outs(), &["prefill", "logits", "non-finite"]);
}

/// A prefill-only run computes no logits: the captured statistics (or weights) are what is checked, and
/// the error names the layer and head.
#[test]
fn overflowing_prefill_without_logits_is_an_error_naming_the_layer() {
    for capture in ["stats", "weights"] {
        let s = Scratch::new();
        let model = overflowing_model(&s);
        let mut cmd = s.run_cmd();
        cmd.arg("--model")
            .arg(&model)
            .args(["--prompt", "hello there", "--capture", capture]);
        expect_error(
            cmd,
            &s.outs(),
            &["layer 0, head 0", "captured", "overflowed"],
        );
    }
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
