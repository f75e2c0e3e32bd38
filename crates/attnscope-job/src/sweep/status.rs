//! `attnscope sweep status DIR`: done / pending / failed per shard, from the plan, the committed units, the
//! failure records and the shards' state files (the shard count is the one of the latest state file).

use crate::sweep::exec::{FailedRecord, ShardState};
use crate::sweep::{Shard, SweepDir, read_json};
use attnscope_core::Error;
use attnscope_core::Result;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;

/// One shard's counts and its last reported state.
#[derive(Clone, Debug, Serialize)]
pub struct ShardStatus {
    pub shard: Shard,
    pub total: usize,
    pub done: usize,
    pub failed: usize,
    pub pending: usize,
    /// `running`, `done` or `stopped` as the shard last wrote it; `None` when it never ran.
    pub state: Option<String>,
    pub host: Option<String>,
    pub pid: Option<u32>,
    pub updated_unix_seconds: Option<u64>,
}

/// A sweep directory's state.
#[derive(Clone, Debug, Serialize)]
pub struct SweepStatus {
    pub name: String,
    pub total: usize,
    pub done: usize,
    pub failed: usize,
    pub pending: usize,
    pub shards: Vec<ShardStatus>,
    pub failures: Vec<FailedRecord>,
}

/// Reads the state of the sweep in `dir`.
pub fn sweep_status(dir: &Path) -> Result<SweepStatus> {
    let d = SweepDir::new(dir);
    if !d.plan().is_file() {
        return Err(Error::input(format!(
            "{}: not a sweep directory (no plan.json; `attnscope sweep SPEC.toml --out {}` makes one)",
            dir.display(),
            dir.display()
        )));
    }
    let plan = d.read_plan()?;
    let done: BTreeSet<String> = plan
        .units
        .iter()
        .filter(|u| d.is_done(&u.id))
        .map(|u| u.id.clone())
        .collect();
    let mut failures = Vec::new();
    for u in &plan.units {
        let f = d.failed_unit(&u.id);
        if !done.contains(&u.id) && f.is_file() {
            failures.push(read_json::<FailedRecord>(&f)?);
        }
    }
    let failed: BTreeSet<&str> = failures.iter().map(|f| f.unit.id.as_str()).collect();
    let states = shard_states(&d)?;
    let count = states
        .iter()
        .max_by_key(|s| s.updated_unix_seconds)
        .map_or(1, |s| s.shard.count);
    let mut shards = Vec::new();
    for index in 0..count {
        let shard = Shard { index, count };
        let ids: Vec<&str> = plan
            .units
            .iter()
            .enumerate()
            .filter(|(k, _)| k % count == index)
            .map(|(_, u)| u.id.as_str())
            .collect();
        let n_done = ids.iter().filter(|id| done.contains(**id)).count();
        let n_failed = ids.iter().filter(|id| failed.contains(**id)).count();
        let state = states.iter().find(|s| s.shard == shard);
        shards.push(ShardStatus {
            shard,
            total: ids.len(),
            done: n_done,
            failed: n_failed,
            pending: ids.len() - n_done - n_failed,
            state: state.map(|s| s.state.clone()),
            host: state.map(|s| s.host.clone()),
            pid: state.map(|s| s.pid),
            updated_unix_seconds: state.map(|s| s.updated_unix_seconds),
        });
    }
    Ok(SweepStatus {
        name: plan.name.clone(),
        total: plan.count,
        done: done.len(),
        failed: failures.len(),
        pending: plan.count - done.len() - failures.len(),
        shards,
        failures,
    })
}

fn shard_states(d: &SweepDir) -> Result<Vec<ShardState>> {
    let dir = d.shards();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    for e in entries {
        let path = e.map_err(|e| Error::io(&dir, e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().to_string());
        if name.is_some_and(|n| n.starts_with("shard-") && n.ends_with(".json")) {
            out.push(read_json(&path)?);
        }
    }
    Ok(out)
}
