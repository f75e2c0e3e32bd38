//! `attnscope sweep` / `sweep status` / `merge` end to end on the committed tiny model: the plan, spec
//! errors (file, key, line), shards, resumption, a failing unit, batched against one-at-a-time units, and
//! the merged dataset's row counts. (The Slurm and killed-process cases are tests/sweep/test_cluster.py.)

use attnscope_io::{ColumnData, read_parquet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_attnscope"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("attnscope runs")
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "attnscope {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Six token-id prompts (one longer than the model's 1024 positions) with a carried `label` column, and
/// a spec with two variants over them.
fn setup(dir: &Path, extra_spec: &str) -> PathBuf {
    let mut lines = Vec::new();
    for i in 0..6usize {
        let n = if i == 4 { 1030 } else { 3 + 2 * i };
        let ids: Vec<usize> = (0..n).map(|k| (7 * k + i) % 500 + 1).collect();
        lines.push(format!(
            r#"{{"token_ids": {ids:?}, "label": "p{i}", "n": {n}}}"#
        ));
    }
    std::fs::write(dir.join("prompts.jsonl"), lines.join("\n")).unwrap();
    let spec = format!(
        r#"name = "t"
seed = 3
[[models]]
name = "tiny"
[[prompts]]
name = "ids"
path = "prompts.jsonl"
[[variants]]
name = "plain"
[[variants]]
name = "shifted"
position_offset = 5
[capture]
kinds = "stats"
[generation]
max_new_tokens = 2
{extra_spec}"#
    );
    let path = dir.join("s.toml");
    std::fs::write(&path, spec).unwrap();
    path
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("attnscope-sweep-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn no_temporaries(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(!name.contains(".tmp"), "temporary left: {}", p.display());
        if p.is_dir() {
            no_temporaries(&p);
        }
    }
}

#[test]
fn plan_is_deterministic_and_counts_models_prompts_variants() {
    let d = temp("plan");
    let spec = setup(&d, "");
    let s = spec.to_str().unwrap();
    let a = ok(&["sweep", s, "--plan", "--json"]);
    assert_eq!(a, ok(&["sweep", s, "--plan", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&a).unwrap();
    assert_eq!(v["count"], 12);
    let ids: std::collections::BTreeSet<&str> = v["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 12, "unit ids are unique");
    let text = ok(&["sweep", s, "--plan"]);
    assert!(text.trim_end().ends_with("12 units"), "{text}");
    // A changed setting changes every id.
    let spec2 = setup(&d, "").with_file_name("s2.toml");
    std::fs::write(
        &spec2,
        std::fs::read_to_string(&spec)
            .unwrap()
            .replace("seed = 3", "seed = 4"),
    )
    .unwrap();
    let b: serde_json::Value =
        serde_json::from_str(&ok(&["sweep", spec2.to_str().unwrap(), "--plan", "--json"])).unwrap();
    assert!(
        b["units"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| !ids.contains(u["id"].as_str().unwrap()))
    );
}

#[test]
fn spec_errors_name_the_file_the_key_and_the_line() {
    let d = temp("errors");
    let base = std::fs::read_to_string(setup(&d, "")).unwrap();
    let cases: [(&str, String, &str); 5] = [
        (
            "unknown key",
            base.replace("seed = 3", "seed = 3\nsede = 4"),
            "line 3",
        ),
        (
            "missing prompt file",
            base.replace("prompts.jsonl", "nope.jsonl"),
            "`prompts.path`",
        ),
        (
            "bad template",
            base.replace(
                "name = \"plain\"",
                "name = \"plain\"\ntemplate = \"{promt}\"",
            ),
            "`variants.template`",
        ),
        (
            "parallel without generation",
            base.replace("max_new_tokens = 2", "max_new_tokens = 0")
                .replace(
                    "name = \"plain\"",
                    "name = \"plain\"\nparallel = { threshold = 0.1 }",
                ),
            "`variants.parallel`",
        ),
        (
            "text around token ids",
            base.replace(
                "name = \"plain\"",
                "name = \"plain\"\ntemplate = \"Say: {prompt}\"",
            ),
            "holds token ids",
        ),
    ];
    for (what, text, needle) in cases {
        let spec = d.join("bad.toml");
        std::fs::write(&spec, &text).unwrap();
        let out = run(&["sweep", spec.to_str().unwrap(), "--plan"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: accepted");
        assert_eq!(err.lines().count(), 1, "{what}: one line: {err}");
        assert!(err.contains("bad.toml: line "), "{what}: {err}");
        assert!(err.contains(needle), "{what}: {needle} not in {err}");
    }
}

fn column_f32(t: &attnscope_io::Table, name: &str) -> Vec<f32> {
    match t.column(name) {
        Some(ColumnData::F32(v)) => v.clone(),
        Some(ColumnData::F64(v)) => v.iter().map(|&x| x as f32).collect(),
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn shards_resume_record_failures_and_merge_to_the_plan() {
    let d = temp("run");
    let spec = setup(&d, "");
    let (s, out) = (spec.to_str().unwrap(), d.join("out"));
    let o = out.to_str().unwrap();
    for shard in ["0/2", "1/2"] {
        ok(&[
            "sweep",
            s,
            "--out",
            o,
            "--shard",
            shard,
            "--threads",
            "1",
            "-q",
        ]);
    }
    let status: serde_json::Value =
        serde_json::from_str(&ok(&["sweep", "status", o, "--json"])).unwrap();
    assert_eq!(status["total"], 12);
    assert_eq!(status["done"], 10, "{status}");
    assert_eq!(
        status["failed"], 2,
        "the prompt beyond the context fails in both variants"
    );
    assert_eq!(status["shards"].as_array().unwrap().len(), 2);
    let error = status["failures"][0]["error"].as_str().unwrap();
    assert!(error.contains("context"), "{error}");
    // A dead run's partial unit, written on another host of a shared file system: the shard that owns
    // the unit removes it, even with nothing left to run.
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("plan.json")).unwrap()).unwrap();
    let id = plan["units"][0]["id"].as_str().unwrap();
    let partial = out
        .join("units")
        .join(format!(".{id}.tmp-999999999@ffffffff-1"));
    std::fs::create_dir(&partial).unwrap();
    // A rerun has nothing left to do; --retry-failed runs the failures again (and they fail again).
    let again = run(&["sweep", s, "--out", o, "--threads", "1"]);
    assert!(again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("0 units to run"), "{stderr}");
    assert!(stderr.contains("removed partial run"), "{stderr}");
    assert!(!partial.exists());
    no_temporaries(&out);

    // One unit per batch gives the same statistics as the packed batches.
    let single = d.join("single");
    ok(&[
        "sweep",
        s,
        "--out",
        single.to_str().unwrap(),
        "--max-batch-tokens",
        "1",
        "--threads",
        "1",
        "-q",
    ]);
    let units: Vec<String> = std::fs::read_dir(out.join("units"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(units.len(), 10);
    for id in &units {
        let a = read_parquet(&out.join("units").join(id).join("stats.parquet")).unwrap();
        let b = read_parquet(&single.join("units").join(id).join("stats.parquet")).unwrap();
        let (va, vb) = (column_f32(&a, "value"), column_f32(&b, "value"));
        assert_eq!(va.len(), vb.len());
        let diff = va
            .iter()
            .zip(&vb)
            .map(|(x, y)| {
                if x.is_nan() && y.is_nan() {
                    0.0
                } else {
                    (x - y).abs()
                }
            })
            .fold(0.0f32, f32::max);
        assert!(diff <= 1e-4, "unit {id}: batched vs alone differ by {diff}");
    }

    // The merge: one row per unit in the units table, every committed unit's tokens once.
    ok(&["merge", o]);
    let merged = out.join("merged");
    let units_table = read_parquet(&merged.join("units/units.parquet")).unwrap();
    assert_eq!(units_table.len(), 12);
    let mut tokens = 0;
    let mut expected = 0;
    for id in &units {
        expected += read_parquet(&out.join("units").join(id).join("tokens.parquet"))
            .unwrap()
            .len();
    }
    for variant in ["plain", "shifted"] {
        let part = merged.join(format!(
            "tokens/model=tiny/prompts=ids/variant={variant}/part-00000.parquet"
        ));
        let t = read_parquet(&part).unwrap();
        tokens += t.len();
        for col in ["unit_id", "index", "label", "n", "slot"] {
            assert!(
                t.column(col).is_some(),
                "{col} missing from {}",
                part.display()
            );
        }
        assert!(t.column("seq").is_none());
    }
    assert_eq!(tokens, expected);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["tables"]["tokens"], expected);
    assert_eq!(manifest["done"], 10);
    no_temporaries(&out);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_directory_holds_one_sweep() {
    let d = temp("claim");
    let spec = setup(&d, "");
    let o = d.join("out");
    ok(&[
        "sweep",
        spec.to_str().unwrap(),
        "--out",
        o.to_str().unwrap(),
        "--shard",
        "0/4",
        "-q",
    ]);
    let other = d.join("other.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&spec)
            .unwrap()
            .replace("seed = 3", "seed = 9"),
    )
    .unwrap();
    let out = run(&[
        "sweep",
        other.to_str().unwrap(),
        "--out",
        o.to_str().unwrap(),
        "-q",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("plan of another sweep"));
    let _ = std::fs::remove_dir_all(&d);
}
