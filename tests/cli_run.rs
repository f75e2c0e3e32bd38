//! Successful `attnscope` runs: the run directory's files, read back with the `parquet` and `safetensors`
//! crates and checked against each other; `--capture`/`--layers`/`--heads`/`--weights-dtype`, `--input`
//! with parallel groups, `--overwrite` and seeded sampling. The real model, `inspect` and `--help` are in
//! tests/cli_models.rs.

mod common;

use common::cli::{
    ALL_RUN_FILES, attnscope, entries, float, int, manifest, read_parquet, run_ok, string,
};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// tiny-random-llama: 4 layers, 8 query heads.
const LAYERS: usize = 4;
const HEADS: usize = 8;

/// A captured attention tensor, converted to f32.
struct Attn {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Attn {
    /// Probability of (head index within the tensor, query slot, key slot).
    fn p(&self, h: usize, q: usize, k: usize) -> f32 {
        let t = self.shape[1];
        self.data[(h * t + q) * t + k]
    }

    fn row(&self, h: usize, q: usize) -> &[f32] {
        let t = self.shape[1];
        &self.data[(h * t + q) * t..(h * t + q + 1) * t]
    }
}

/// All tensors of attention.safetensors, and its metadata.
fn read_attention(dir: &Path) -> (BTreeMap<String, Attn>, BTreeMap<String, String>) {
    let bytes = fs::read(dir.join("attention.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Dtype::F16 => view
                .data()
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f32())
                .collect(),
            other => panic!("{name}: unexpected dtype {other:?}"),
        };
        let attn = Attn {
            dtype: view.dtype(),
            shape: view.shape().to_vec(),
            data,
        };
        out.insert(name, attn);
    }
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    (out, meta)
}

/// No hidden `.<name>.tmp-*` / `.<name>.old-*` siblings left in `parent`.
fn assert_no_temp_siblings(parent: &Path) {
    let hidden: Vec<String> = entries(parent)
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "temp siblings left behind: {hidden:?}");
}

/// The default-model smoke run shared by several checks: 5 generated tokens, everything captured.
fn smoke_run(tmp: &Path) -> PathBuf {
    let out = tmp.join("r");
    run_ok(attnscope(tmp).args([
        "run",
        "--prompt",
        "Once upon a time",
        "--generate",
        "5",
        "--ignore-eos",
        "--capture",
        "all",
        "--out",
        "r",
    ]));
    out
}

#[test]
fn default_model_smoke() {
    let tmp = tempfile::tempdir().unwrap();
    let out = smoke_run(tmp.path());
    assert_eq!(entries(&out), ALL_RUN_FILES);
    assert_eq!(entries(tmp.path()), ["r"]);
    assert_no_temp_siblings(tmp.path());

    let m = manifest(&out);
    assert_eq!(m["capture"]["weights"], true);
    assert_eq!(m["capture"]["stats"], true);
    assert_eq!(m["seed"], 0);
    assert_eq!(m["model"]["family"], "llama");
    assert_eq!(m["layout_version"], 1);
    let inputs = m["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 1);
    assert_eq!(inputs[0]["generated_tokens"], 5);
    assert_eq!(inputs[0]["stopped_at_eos"], false);
    assert_eq!(inputs[0]["text"], "Once upon a time");
    assert!(inputs[0]["prompt_tokens"].as_u64().unwrap() >= 2);
    let timings = m["timings"].as_object().unwrap();
    for key in [
        "load_seconds",
        "prefill_seconds",
        "decode_token_seconds",
        "write_seconds",
        "total_seconds",
    ] {
        assert!(timings.contains_key(key), "timings lack {key}: {timings:?}");
    }
    assert!(timings["total_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(
        timings["decode_token_seconds"][0].as_array().unwrap().len(),
        5
    );
    let files = m["files"].as_object().unwrap();
    for f in entries(&out).iter().filter(|f| *f != "manifest.json") {
        assert!(files.contains_key(f), "manifest.files lacks {f}");
    }
}

#[test]
fn smoke_run_tables_and_tensors_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let out = smoke_run(tmp.path());
    let n_prompt = manifest(&out)["inputs"][0]["prompt_tokens"]
        .as_u64()
        .unwrap() as usize;
    let t = n_prompt + 5;

    // tokens.parquet: one row per slot, prompt (step 0) then generated (steps 1..=5).
    let tokens = read_parquet(&out.join("tokens.parquet"));
    assert_eq!(tokens.len(), t);
    for (i, row) in tokens.iter().enumerate() {
        assert_eq!(int(row, "seq"), 0);
        assert_eq!(int(row, "slot"), i as i64);
        assert_eq!(int(row, "position"), i as i64);
        assert_eq!(int(row, "group"), -1);
        let id = int(row, "token_id");
        assert!((0..512).contains(&id), "token id {id}");
        if i < n_prompt {
            assert_eq!(int(row, "step"), 0, "row {i}");
            assert_eq!(string(row, "kind"), "prompt", "row {i}");
        } else {
            assert_eq!(int(row, "step"), (i - n_prompt + 1) as i64, "row {i}");
            assert_eq!(string(row, "kind"), "generated", "row {i}");
        }
    }
    // The prompt starts with BOS <s> (id 1).
    assert_eq!(int(&tokens[0], "token_id"), 1);

    // attention.safetensors: seq0.layer{l} of [8, T, T], causal, rows summing to 1.
    let (attn, meta) = read_attention(&out);
    let names: Vec<&str> = attn.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["seq0.layer0", "seq0.layer1", "seq0.layer2", "seq0.layer3"]
    );
    for l in 0..LAYERS {
        let name = format!("seq0.layer{l}");
        let a = &attn[&name];
        assert_eq!(a.dtype, Dtype::F32);
        assert_eq!(a.shape, [HEADS, t, t], "{name}");
        assert_eq!(meta[&format!("{name}.heads")], "[0, 1, 2, 3, 4, 5, 6, 7]");
        for h in 0..HEADS {
            for q in 0..t {
                let row = a.row(h, q);
                let sum: f64 = row.iter().map(|&p| f64::from(p)).sum();
                assert!(
                    (sum - 1.0).abs() < 1e-5,
                    "{name} head {h} row {q} sums to {sum}"
                );
                assert!(
                    row.iter().all(|p| (0.0..=1.0).contains(p)),
                    "{name} {h} {q}"
                );
                for (k, &p) in row.iter().enumerate().skip(q + 1) {
                    assert_eq!(p, 0.0, "{name} head {h}: query {q} sees future key {k}");
                }
            }
        }
    }

    // stats.parquet: the six per-row metrics for every (layer, head, slot).
    let stats = read_parquet(&out.join("stats.parquet"));
    let metrics: BTreeSet<&str> = stats.iter().map(|r| string(r, "metric")).collect();
    let want: BTreeSet<&str> = [
        "entropy",
        "max_weight",
        "argmax_slot",
        "sink_mass",
        "prev_mass",
        "self_mass",
    ]
    .into_iter()
    .collect();
    assert_eq!(metrics, want);
    assert_eq!(stats.len(), LAYERS * HEADS * t * want.len());

    // The stats of (layer 0, head 0, last slot) match the captured row.
    let last = t - 1;
    let value = |metric: &str| -> f64 {
        let hits: Vec<f64> = stats
            .iter()
            .filter(|r| {
                int(r, "seq") == 0
                    && int(r, "layer") == 0
                    && int(r, "head") == 0
                    && int(r, "slot") == last as i64
                    && string(r, "metric") == metric
            })
            .map(|r| float(r, "value"))
            .collect();
        assert_eq!(hits.len(), 1, "{metric}: {hits:?}");
        hits[0]
    };
    let a0 = &attn["seq0.layer0"];
    let row = a0.row(0, last);
    let entropy: f64 = row
        .iter()
        .map(|&p| f64::from(p))
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    assert!(
        (value("entropy") - entropy).abs() < 1e-4,
        "entropy {} vs -sum p ln p {entropy}",
        value("entropy")
    );
    let (argmax, max) = row
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bp), (i, &p)| {
            if p > bp { (i, p) } else { (bi, bp) }
        });
    assert!((value("max_weight") - f64::from(max)).abs() < 1e-6);
    assert_eq!(value("argmax_slot"), argmax as f64);
    assert!((value("sink_mass") - f64::from(a0.p(0, last, 0))).abs() < 1e-6);
    assert!((value("prev_mass") - f64::from(a0.p(0, last, last - 1))).abs() < 1e-6);
    assert!((value("self_mass") - f64::from(a0.p(0, last, last))).abs() < 1e-6);

    // received.parquet and distance.parquet exist with rows for every layer and head.
    for file in ["received.parquet", "distance.parquet"] {
        let rows = read_parquet(&out.join(file));
        let lh: BTreeSet<(i64, i64)> = rows
            .iter()
            .map(|r| (int(r, "layer"), int(r, "head")))
            .collect();
        assert_eq!(lh.len(), LAYERS * HEADS, "{file}");
    }
}

#[test]
fn weights_f16_selected_layer_and_heads() {
    let tmp = tempfile::tempdir().unwrap();
    run_ok(attnscope(tmp.path()).args([
        "run",
        "--prompt",
        "Once upon a time",
        "--capture",
        "weights",
        "--weights-dtype",
        "f16",
        "--layers",
        "1",
        "--heads",
        "0,3",
        "--quiet",
        "--out",
        "w",
    ]));
    let out = tmp.path().join("w");
    assert_eq!(
        entries(&out),
        ["attention.safetensors", "manifest.json", "tokens.parquet"]
    );
    let t = read_parquet(&out.join("tokens.parquet")).len();
    let (attn, meta) = read_attention(&out);
    assert_eq!(attn.keys().collect::<Vec<_>>(), ["seq0.layer1"]);
    let a = &attn["seq0.layer1"];
    assert_eq!(a.dtype, Dtype::F16);
    assert_eq!(a.shape, [2, t, t]);
    assert_eq!(meta["seq0.layer1.heads"], "[0, 3]");
    for h in 0..2 {
        for q in 0..t {
            let sum: f32 = a.row(h, q).iter().sum();
            assert!((sum - 1.0).abs() < 1e-2, "head {h} row {q} sums to {sum}");
            assert!(a.row(h, q)[q + 1..].iter().all(|&p| p == 0.0));
        }
    }
    let m = manifest(&out);
    assert_eq!(m["capture"]["weights_dtype"], "f16");
    assert_eq!(m["capture"]["layers"], serde_json::json!([1]));
    assert_eq!(m["capture"]["heads"], serde_json::json!([0, 3]));
}

#[test]
fn capture_weights_f16_matches_f32() {
    let tmp = tempfile::tempdir().unwrap();
    for (dtype, dir) in [("f32", "a"), ("f16", "b")] {
        run_ok(attnscope(tmp.path()).args([
            "run",
            "--prompt",
            "Once upon a time",
            "--capture",
            "weights",
            "--weights-dtype",
            dtype,
            "--quiet",
            "--out",
            dir,
        ]));
    }
    let (a, _) = read_attention(&tmp.path().join("a"));
    let (b, _) = read_attention(&tmp.path().join("b"));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, x) in &a {
        let y = &b[name];
        assert_eq!(x.shape, y.shape);
        let worst = x
            .data
            .iter()
            .zip(&y.data)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "{name}: f16 differs from f32 by {worst}");
    }
}

#[test]
fn capture_none_writes_tokens_and_manifest_only() {
    let tmp = tempfile::tempdir().unwrap();
    run_ok(attnscope(tmp.path()).args([
        "run",
        "--prompt",
        "Once upon a time",
        "--generate",
        "2",
        "--ignore-eos",
        "--capture",
        "none",
        "--quiet",
        "--out",
        "n",
    ]));
    let out = tmp.path().join("n");
    assert_eq!(entries(&out), ["manifest.json", "tokens.parquet"]);
    let m = manifest(&out);
    assert_eq!(m["capture"]["weights"], false);
    assert_eq!(m["capture"]["stats"], false);
    let files: Vec<&String> = m["files"].as_object().unwrap().keys().collect();
    assert_eq!(files, ["tokens.parquet"]);
    let n_prompt = m["inputs"][0]["prompt_tokens"].as_u64().unwrap() as usize;
    assert_eq!(
        read_parquet(&out.join("tokens.parquet")).len(),
        n_prompt + 2
    );
}

#[test]
fn input_spec_with_isolated_groups() {
    let tmp = tempfile::tempdir().unwrap();
    // seq 0: a plain sequence. seq 1: BOS, a parallel set of three tokens sharing position 1 (group 0),
    // then two ordinary tokens continuing at position 2, isolated so set members do not see each other.
    let spec = serde_json::json!({
        "sequences": [
            {"token_ids": [1, 40, 41, 42]},
            {
                "token_ids": [1, 50, 51, 52, 60, 61],
                "positions": [0, 1, 1, 1, 2, 3],
                "groups": [-1, 0, 0, 0, -1, -1],
                "visibility": "isolated"
            }
        ]
    });
    fs::write(tmp.path().join("spec.json"), spec.to_string()).unwrap();
    run_ok(attnscope(tmp.path()).args([
        "run",
        "--input",
        "spec.json",
        "--capture",
        "all",
        "--quiet",
        "--out",
        "p",
    ]));
    let out = tmp.path().join("p");

    let tokens = read_parquet(&out.join("tokens.parquet"));
    let col = |seq: i64, c: &str| -> Vec<i64> {
        tokens
            .iter()
            .filter(|r| int(r, "seq") == seq)
            .map(|r| int(r, c))
            .collect()
    };
    assert_eq!(tokens.len(), 10);
    assert_eq!(col(0, "token_id"), [1, 40, 41, 42]);
    assert_eq!(col(0, "position"), [0, 1, 2, 3]);
    assert_eq!(col(0, "group"), [-1, -1, -1, -1]);
    assert_eq!(col(0, "slot"), [0, 1, 2, 3]);
    assert_eq!(col(1, "token_id"), [1, 50, 51, 52, 60, 61]);
    assert_eq!(col(1, "position"), [0, 1, 1, 1, 2, 3]);
    assert_eq!(col(1, "group"), [-1, 0, 0, 0, -1, -1]);
    assert_eq!(col(1, "slot"), [0, 1, 2, 3, 4, 5]);
    assert!(tokens.iter().all(|r| int(r, "step") == 0));

    let m = manifest(&out);
    assert_eq!(m["inputs"][0]["visibility"], "visible");
    assert_eq!(m["inputs"][1]["visibility"], "isolated");
    assert_eq!(m["inputs"][1]["prompt_tokens"], 6);

    let (attn, _) = read_attention(&out);
    assert_eq!(attn.len(), 2 * LAYERS);
    let groups = [-1, 0, 0, 0, -1, -1];
    for l in 0..LAYERS {
        let a0 = &attn[&format!("seq0.layer{l}")];
        assert_eq!(a0.shape, [HEADS, 4, 4]);
        let a1 = &attn[&format!("seq1.layer{l}")];
        assert_eq!(a1.shape, [HEADS, 6, 6]);
        for h in 0..HEADS {
            for q in 0..6 {
                let sum: f32 = a1.row(h, q).iter().sum();
                assert!(
                    (sum - 1.0).abs() < 1e-5,
                    "layer {l} head {h} row {q}: {sum}"
                );
                for k in 0..6 {
                    let p = a1.p(h, q, k);
                    let same_group = k != q && groups[q] >= 0 && groups[q] == groups[k];
                    if k > q || same_group {
                        assert_eq!(p, 0.0, "layer {l} head {h}: query {q} sees key {k}");
                    } else {
                        assert!(p > 0.0, "layer {l} head {h}: query {q} misses key {k}");
                    }
                }
            }
        }
    }

    // Slots in a group get the group_mass metric; seq 0 has none.
    let stats = read_parquet(&out.join("stats.parquet"));
    let group_mass: BTreeSet<(i64, i64)> = stats
        .iter()
        .filter(|r| string(r, "metric") == "group_mass")
        .map(|r| (int(r, "seq"), int(r, "slot")))
        .collect();
    assert_eq!(group_mass, BTreeSet::from([(1, 1), (1, 2), (1, 3)]));
}

#[test]
fn overwrite_replaces_existing_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("stale.txt"), "old run").unwrap();
    run_ok(attnscope(tmp.path()).args([
        "run",
        "--prompt",
        "Once upon a time",
        "--capture",
        "weights",
        "--quiet",
        "--overwrite",
        "--out",
        "o",
    ]));
    assert_eq!(
        entries(&out),
        ["attention.safetensors", "manifest.json", "tokens.parquet"]
    );
    assert_eq!(entries(tmp.path()), ["o"]);
    // And once more over a complete run.
    run_ok(attnscope(tmp.path()).args([
        "run",
        "--prompt",
        "Once upon a time",
        "--capture",
        "none",
        "--quiet",
        "--overwrite",
        "--out",
        "o",
    ]));
    assert_eq!(entries(&out), ["manifest.json", "tokens.parquet"]);
    assert_eq!(entries(tmp.path()), ["o"]);
}

#[test]
fn seeded_sampling_is_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in ["s1", "s2"] {
        run_ok(attnscope(tmp.path()).args([
            "run",
            "--prompt",
            "Once upon a time",
            "--generate",
            "8",
            "--ignore-eos",
            "--temperature",
            "1.0",
            "--seed",
            "7",
            "--capture",
            "none",
            "--quiet",
            "--out",
            dir,
        ]));
    }
    let ids = |dir: &str| -> Vec<i64> {
        read_parquet(&tmp.path().join(dir).join("tokens.parquet"))
            .iter()
            .map(|r| int(r, "token_id"))
            .collect()
    };
    assert_eq!(ids("s1"), ids("s2"));
    assert_eq!(manifest(&tmp.path().join("s1"))["seed"], 7);
}
