//! `attnscope merge DIR`: every committed unit's tables gathered into one dataset under `DIR/merged`
//! (written as a temporary sibling and renamed, replacing an earlier merge):
//! - `<table>/model=M/prompts=P/variant=V/part-00000.parquet` for each table the units wrote (tokens,
//!   stats, received, distance, …), hive-partitioned, with `unit_id`, `index` (the prompt's row) and the
//!   prompt set's carried columns in front of the unit's own columns (its `seq`, always 0, dropped);
//! - `units/units.parquet`: one row per planned unit with its status, error, timings and the path of its
//!   `attention.safetensors` (weights stay per unit);
//! - `manifest.json`: the sweep, its counts, the row count of each table.

use crate::manifest::unix_seconds;
use crate::sweep::exec::{FailedRecord, UnitRecord};
use crate::sweep::prompts::Extra;
use crate::sweep::{SweepDir, read_json};
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_io::{ColumnData, ParquetWriter, RunDir, Table, read_parquet, write_json};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `merged/manifest.json`.
#[derive(Clone, Debug, Serialize)]
pub struct MergeManifest {
    pub attnscope_version: &'static str,
    pub created_unix_seconds: u64,
    pub sweep: String,
    pub spec_path: String,
    pub spec_sha256: String,
    pub units: usize,
    pub done: usize,
    pub failed: usize,
    pub pending: usize,
    pub partitioning: [&'static str; 3],
    /// Rows of each merged table.
    pub tables: BTreeMap<String, usize>,
}

/// Merges the sweep in `dir` into `dir/merged`; returns its manifest.
pub fn merge(dir: &Path) -> Result<(PathBuf, MergeManifest)> {
    let d = SweepDir::new(dir);
    let status = crate::sweep::status::sweep_status(dir)?;
    let plan = d.read_plan()?;
    let out = dir.join("merged");
    let run_dir = RunDir::create(&out, true)?;
    let mut writers: BTreeMap<(String, String), ParquetWriter> = BTreeMap::new();
    let mut rows: BTreeMap<String, usize> = BTreeMap::new();
    let mut units = UnitsTable::default();
    for u in &plan.units {
        let unit_dir = d.unit(&u.id);
        if !d.is_done(&u.id) {
            let failed = d.failed_unit(&u.id);
            let error = if failed.is_file() {
                Some(read_json::<FailedRecord>(&failed)?.error)
            } else {
                None
            };
            units.push_missing(u, error);
            continue;
        }
        let rec: UnitRecord = read_json(&unit_dir.join("unit.json"))?;
        units.push_done(&rec, &unit_dir);
        let partition = format!(
            "model={}/prompts={}/variant={}",
            u.model, u.prompts, u.variant
        );
        for (table, path) in unit_tables(&unit_dir)? {
            let data = with_unit_columns(read_parquet(&path)?, &rec);
            *rows.entry(table.clone()).or_default() += data.len();
            let key = (table.clone(), partition.clone());
            if !writers.contains_key(&key) {
                let part = run_dir.path().join(&table).join(&partition);
                std::fs::create_dir_all(&part).map_err(|e| Error::io(&part, e))?;
                let w = ParquetWriter::create(&part.join("part-00000.parquet"), &data)?;
                writers.insert(key.clone(), w);
            }
            if let Some(w) = writers.get_mut(&key) {
                w.append(&data).map_err(|e| match e {
                    Error::Output { message, .. } => Error::output(
                        &path,
                        format!("does not match the other units of {partition}: {message}"),
                    ),
                    other => other,
                })?;
            }
        }
    }
    for (_, w) in writers {
        w.finish()?;
    }
    let units_dir = run_dir.path().join("units");
    std::fs::create_dir_all(&units_dir).map_err(|e| Error::io(&units_dir, e))?;
    attnscope_io::write_parquet(&units_dir.join("units.parquet"), &units.into_table())?;
    let manifest = MergeManifest {
        attnscope_version: env!("CARGO_PKG_VERSION"),
        created_unix_seconds: unix_seconds(),
        sweep: plan.name.clone(),
        spec_path: plan.spec_path.clone(),
        spec_sha256: plan.spec_sha256.clone(),
        units: status.total,
        done: status.done,
        failed: status.failed,
        pending: status.pending,
        partitioning: ["model", "prompts", "variant"],
        tables: rows,
    };
    write_json(&run_dir.file("manifest.json"), &manifest)?;
    Ok((run_dir.commit()?, manifest))
}

/// The Parquet tables of a unit directory, by name.
fn unit_tables(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = e.map_err(|e| Error::io(dir, e))?.path();
        if path.extension().is_some_and(|x| x == "parquet")
            && let Some(stem) = path.file_stem()
        {
            out.push((stem.to_string_lossy().to_string(), path));
        }
    }
    out.sort();
    Ok(out)
}

/// `unit_id`, `index` and the carried columns (renamed `prompt_<name>` where the table has the name), then
/// the table's columns but `seq`.
fn with_unit_columns(table: Table, rec: &UnitRecord) -> Table {
    let n = table.len();
    let mut out = Table::new();
    out.push("unit_id", ColumnData::Utf8(vec![rec.unit.id.clone(); n]));
    out.push("index", ColumnData::I64(vec![rec.unit.index as i64; n]));
    for (name, value) in &rec.extra {
        let taken =
            table.columns.iter().any(|c| &c.name == name) || name == "unit_id" || name == "index";
        let name = if taken {
            format!("prompt_{name}")
        } else {
            name.clone()
        };
        out.push(name, repeat(value, n));
    }
    for c in table.columns {
        if c.name != "seq" {
            out.push(c.name, c.data);
        }
    }
    out
}

fn repeat(v: &Extra, n: usize) -> ColumnData {
    match v {
        Extra::Bool(b) => ColumnData::Bool(vec![*b; n]),
        Extra::Int(x) => ColumnData::I64(vec![*x; n]),
        Extra::Float(x) => ColumnData::F64(vec![*x; n]),
        Extra::Str(s) => ColumnData::Utf8(vec![s.clone(); n]),
    }
}

/// The columns of `units.parquet`.
#[derive(Default)]
struct UnitsTable {
    id: Vec<String>,
    model: Vec<String>,
    prompts: Vec<String>,
    variant: Vec<String>,
    index: Vec<i64>,
    status: Vec<String>,
    error: Vec<String>,
    shard: Vec<String>,
    host: Vec<String>,
    device: Vec<String>,
    prompt_tokens: Vec<i64>,
    generated_tokens: Vec<i64>,
    batch_units: Vec<i64>,
    prefill_seconds: Vec<f64>,
    decode_seconds: Vec<f64>,
    write_seconds: Vec<f64>,
    attention_file: Vec<String>,
}

impl UnitsTable {
    fn push_unit(&mut self, u: &crate::sweep::UnitRef, status: &str) {
        self.id.push(u.id.clone());
        self.model.push(u.model.clone());
        self.prompts.push(u.prompts.clone());
        self.variant.push(u.variant.clone());
        self.index.push(u.index as i64);
        self.status.push(status.into());
    }

    fn push_missing(&mut self, u: &crate::sweep::UnitRef, error: Option<String>) {
        self.push_unit(u, if error.is_some() { "failed" } else { "pending" });
        self.error.push(error.unwrap_or_default());
        for v in [
            &mut self.shard,
            &mut self.host,
            &mut self.device,
            &mut self.attention_file,
        ] {
            v.push(String::new());
        }
        for v in [
            &mut self.prompt_tokens,
            &mut self.generated_tokens,
            &mut self.batch_units,
        ] {
            v.push(0);
        }
        for v in [
            &mut self.prefill_seconds,
            &mut self.decode_seconds,
            &mut self.write_seconds,
        ] {
            v.push(0.0);
        }
    }

    fn push_done(&mut self, r: &UnitRecord, dir: &Path) {
        self.push_unit(&r.unit, "done");
        self.error.push(String::new());
        self.shard.push(r.shard.clone());
        self.host.push(r.host.clone());
        self.device.push(r.device.clone());
        let weights = dir.join("attention.safetensors");
        self.attention_file.push(if weights.is_file() {
            format!("units/{}/attention.safetensors", r.unit.id)
        } else {
            String::new()
        });
        self.prompt_tokens.push(r.prompt_tokens as i64);
        self.generated_tokens.push(r.generated_tokens as i64);
        self.batch_units.push(r.batch_units as i64);
        self.prefill_seconds.push(r.prefill_seconds);
        self.decode_seconds.push(r.decode_seconds);
        self.write_seconds.push(r.write_seconds);
    }

    fn into_table(self) -> Table {
        let mut t = Table::new();
        t.push("unit_id", ColumnData::Utf8(self.id))
            .push("model", ColumnData::Utf8(self.model))
            .push("prompts", ColumnData::Utf8(self.prompts))
            .push("variant", ColumnData::Utf8(self.variant))
            .push("index", ColumnData::I64(self.index))
            .push("status", ColumnData::Utf8(self.status))
            .push("error", ColumnData::Utf8(self.error))
            .push("shard", ColumnData::Utf8(self.shard))
            .push("host", ColumnData::Utf8(self.host))
            .push("device", ColumnData::Utf8(self.device))
            .push("prompt_tokens", ColumnData::I64(self.prompt_tokens))
            .push("generated_tokens", ColumnData::I64(self.generated_tokens))
            .push("batch_units", ColumnData::I64(self.batch_units))
            .push("prefill_seconds", ColumnData::F64(self.prefill_seconds))
            .push("decode_seconds", ColumnData::F64(self.decode_seconds))
            .push("write_seconds", ColumnData::F64(self.write_seconds))
            .push("attention_file", ColumnData::Utf8(self.attention_file));
        t
    }
}
