//! `attnscope bench` end to end on a tiny config: the JSON follows the attnscope-bench/1 schema, the table
//! names the model, and bad input gives one-line errors.

mod common;

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn tiny_config() -> PathBuf {
    common::cli::fixture("llama_gqa").join("config.json")
}

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attnscope"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run attnscope")
}

#[test]
fn tiny_config_writes_schema_json_and_table() {
    let tmp = tempfile::tempdir().unwrap();
    let json_path = tmp.path().join("b.json");
    let config = tiny_config();
    let out = bench(&[
        "--config",
        config.to_str().unwrap(),
        "--models",
        "llama-100m,qwen2.5-7b",
        "--max-params",
        "100000",
        "--prefill",
        "8,16",
        "--batch",
        "1,2",
        "--decode-context",
        "8",
        "--decode-steps",
        "2",
        "--repeats",
        "2",
        "--warmup",
        "0",
        "--json",
        json_path.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains(config.to_str().unwrap()), "{stdout}");
    assert!(
        stdout.contains("prefill T") && stdout.contains("decode batch"),
        "{stdout}"
    );

    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(v["schema"], "attnscope-bench/1");
    assert_eq!(v["engine"], "attnscope");
    assert!(
        v["command"]
            .as_str()
            .unwrap()
            .starts_with("attnscope bench")
    );
    assert!(v["created_unix"].as_u64().unwrap() > 0);
    let d = &v["device"];
    assert_eq!(d["kind"], "cpu");
    assert_eq!(d["compute_dtype"], "f32");
    assert!(d["threads"].as_u64().unwrap() >= 1 && d["name"].is_string());
    assert!(
        d["driver"].is_null() && d["peak_tflops"].is_null() && d["peak_bandwidth_gbs"].is_null()
    );
    assert_eq!(v["settings"]["repeats"], 2);
    assert_eq!(v["settings"]["warmup"], 0);
    assert_eq!(v["settings"]["decode_steps"], 2);
    assert_eq!(v["settings"]["decode_context"], 8);
    // Both named models exceed --max-params 100000 and are listed, with reasons, instead of measured.
    let skipped: Vec<&str> = v["not_measured"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped[1].starts_with("qwen2.5-7b: skipped") && skipped[1].contains("--max-params"));

    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 1);
    let m = &models[0];
    assert_eq!(m["model"], config.to_str().unwrap());
    for (key, want) in [
        ("n_layers", 2),
        ("n_heads", 6),
        ("n_kv_heads", 2),
        ("head_dim", 8),
        ("hidden_size", 48),
        ("vocab_size", 192),
    ] {
        assert_eq!(m[key], want, "{key}");
    }
    assert!(m["parameters"].as_u64().unwrap() > 0);

    let modes = ["none", "stats", "weights_all", "weights_one_layer"];
    let prefill = m["prefill"].as_array().unwrap();
    assert_eq!(prefill.len(), 8);
    for t in [8, 16] {
        let rows: Vec<&Value> = prefill.iter().filter(|r| r["t"] == t).collect();
        let got: Vec<&str> = rows.iter().map(|r| r["mode"].as_str().unwrap()).collect();
        assert_eq!(got, modes, "t={t}");
        for r in rows {
            for key in [
                "median_ms",
                "min_ms",
                "max_ms",
                "p10_ms",
                "p90_ms",
                "tokens_per_s",
                "tflops",
                "attention_tflops",
            ] {
                assert!(r[key].as_f64().unwrap() > 0.0, "{key}: {r}");
            }
            assert!(r["min_ms"].as_f64() <= r["median_ms"].as_f64());
            assert_eq!(r["repeats"], 2);
            assert!(r["fraction_of_peak"].is_null());
            assert!(r.get("peak_memory_bytes").is_some());
            assert_eq!(r["overhead_vs_none"].is_null(), r["mode"] == "none", "{r}");
        }
    }
    let decode = m["decode"].as_array().unwrap();
    assert_eq!(decode.len(), 8);
    for batch in [1, 2] {
        let rows: Vec<&Value> = decode.iter().filter(|r| r["batch"] == batch).collect();
        let got: Vec<&str> = rows.iter().map(|r| r["mode"].as_str().unwrap()).collect();
        assert_eq!(got, modes, "batch={batch}");
        for r in rows {
            assert_eq!(
                (r["context"].as_u64(), r["steps"].as_u64()),
                (Some(8), Some(2))
            );
            for key in [
                "median_ms_per_step",
                "min_ms_per_step",
                "max_ms_per_step",
                "tokens_per_s",
                "bytes_per_s",
            ] {
                assert!(r[key].as_f64().unwrap() > 0.0, "{key}: {r}");
            }
            assert!(r["fraction_of_peak_bandwidth"].is_null());
            assert!(r.get("peak_memory_bytes").is_some());
            assert_eq!(r["overhead_vs_none"].is_null(), r["mode"] == "none", "{r}");
        }
    }
    // Written atomically: no temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("b.json")]);
}

/// Asserts a failed run with exactly one `error:` line on stderr containing every needle.
fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "{n} missing in {stderr}");
    }
}

#[test]
fn unknown_model_lists_the_known_names() {
    let out = bench(&["--models", "nosuch"]);
    assert_one_line_error(
        &out,
        &[
            "nosuch",
            "llama-100m",
            "gpt2-124m",
            "tinyllama-1.1b",
            "llama-3.2-1b",
            "qwen2.5-7b",
        ],
    );
}

#[test]
fn bad_flags_are_refused_before_any_work() {
    let config = tiny_config();
    let c = config.to_str().unwrap();
    assert_one_line_error(
        &bench(&["--config", c, "--device", "cuda"]),
        &["--device cuda", "CUDA"],
    );
    assert_one_line_error(
        &bench(&["--config", c, "--modes", "none,weights"]),
        &["--modes", "weights"],
    );
    assert_one_line_error(&bench(&["--config", c, "--prefill", "0"]), &["--prefill"]);
    assert_one_line_error(&bench(&["--config", c, "--repeats", "0"]), &["--repeats"]);
    assert_one_line_error(
        &bench(&["--config", "/nonexistent/config.json"]),
        &["/nonexistent/config.json"],
    );
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("missing/b.json");
    assert_one_line_error(
        &bench(&["--config", c, "--json", json.to_str().unwrap()]),
        &["--json", "missing"],
    );
}
