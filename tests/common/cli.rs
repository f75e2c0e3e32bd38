//! Helpers of the end-to-end tests that drive the `attnscope` binary (tests/cli_*.rs, tests/bench_cli.rs,
//! tests/job_api.rs): fixture paths, running the binary, directory listings, an independent reader of the
//! Parquet files a run writes (the `parquet` crate's row API, not attnscope-io), and the scratch area and
//! one-line-error check of the error tests.

use super::repo;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tempfile::TempDir;

/// The files of a run that captured weights and statistics and generated, sorted.
pub const ALL_RUN_FILES: [&str; 8] = [
    "attention.safetensors",
    "distance.parquet",
    "manifest.json",
    "received.parquet",
    "stats.parquet",
    "step_groups.parquet",
    "steps.parquet",
    "tokens.parquet",
];

/// A fixture model directory under tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

/// The committed default model (with tokenizer.json).
pub fn default_model() -> PathBuf {
    repo().join("models/tiny-random-llama")
}

/// The `attnscope` binary, run in `cwd`.
pub fn attnscope(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_attnscope"));
    cmd.current_dir(cwd);
    cmd
}

/// Runs `cmd`, asserting exit status 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let output = cmd.output().expect("cannot start attnscope");
    assert!(
        output.status.success(),
        "{cmd:?} failed: {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Sorted names of the entries of `dir` (empty when it does not exist).
pub fn entries(dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Copies the files of `src` (flat directory) into a new directory `dst`.
pub fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
        }
    }
}

/// Edits a JSON file (a config.json, say) in place.
pub fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// `manifest.json` of a run directory.
pub fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

/// One row of a Parquet file: column name → value.
pub type Row = BTreeMap<String, Field>;

/// All rows of a Parquet file.
pub fn read_parquet(path: &Path) -> Vec<Row> {
    let reader = SerializedFileReader::new(fs::File::open(path).unwrap()).unwrap();
    reader
        .get_row_iter(None)
        .unwrap()
        .map(|row| row.unwrap().into_columns().into_iter().collect())
        .collect()
}

/// An integer column of a row.
pub fn int(row: &Row, col: &str) -> i64 {
    match &row[col] {
        Field::Int(v) => i64::from(*v),
        Field::Long(v) => *v,
        other => panic!("column {col}: expected an integer, got {other:?}"),
    }
}

/// A floating-point column of a row.
pub fn float(row: &Row, col: &str) -> f64 {
    match &row[col] {
        Field::Float(v) => f64::from(*v),
        Field::Double(v) => *v,
        other => panic!("column {col}: expected a float, got {other:?}"),
    }
}

/// A string column of a row.
pub fn string<'a>(row: &'a Row, col: &str) -> &'a str {
    match &row[col] {
        Field::Str(v) => v,
        other => panic!("column {col}: expected a string, got {other:?}"),
    }
}

/// A scratch area: `root/outs` is the (initially empty) parent of the `--out` path `root/outs/run`.
pub struct Scratch {
    tmp: TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("outs")).unwrap();
        Scratch { tmp }
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// The parent of [`Scratch::out`], which must stay as it was after a failed run.
    pub fn outs(&self) -> PathBuf {
        self.root().join("outs")
    }

    pub fn out(&self) -> PathBuf {
        self.outs().join("run")
    }

    /// A private copy of a model directory, free to be broken.
    pub fn model_copy(&self, src: &Path) -> PathBuf {
        let dst = self.root().join("model");
        copy_dir(src, &dst);
        dst
    }

    /// Writes `text` to `root/name` and returns the path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.root().join(name);
        fs::write(&p, text).unwrap();
        p
    }

    /// `attnscope run --out <out>` with cwd = the scratch root.
    pub fn run_cmd(&self) -> Command {
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
pub fn expect_error(mut cmd: Command, watch: &Path, needles: &[&str]) -> String {
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

/// Writes an `--input` spec into the scratch area.
pub fn input_file(s: &Scratch, spec: serde_json::Value) -> PathBuf {
    s.write("spec.json", &spec.to_string())
}
