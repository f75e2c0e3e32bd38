//! Helpers of the end-to-end tests that drive the `attnscope` binary (tests/cli_run.rs, tests/cli_errors.rs,
//! tests/bench_cli.rs, tests/job_api.rs): fixture paths, running the binary, directory listings, and an
//! independent reader of the Parquet files a run writes (the `parquet` crate's row API, not attnscope-io).

use super::repo;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
