//! Sweeps: a spec of models × prompt sets × variants expanded into units ([`plan`]), run shard by shard in
//! batched forward passes with each unit committed atomically as its own run directory ([`exec`]), their
//! state read back ([`status`]) and merged into one hive-partitioned dataset ([`merge`]); [`slurm`] writes
//! the sbatch script of a job array.
//!
//! Layout of a sweep directory:
//! - `plan.json`: the spec's hash and every unit (id, model, prompt set, variant, row), written once;
//! - `units/<id>/`: a committed unit, a run directory (`attnscope run`'s files) plus `unit.json`; written
//!   as a hidden `.<id>.tmp-<pid>@<host>-<nanos>` sibling and renamed, so a unit is there whole or not at all
//!   (a shard removes its own units' partial siblings when it starts, whichever host wrote them);
//! - `failed/<id>.json`: a unit that failed, with its error (skipped on reruns unless `--retry-failed`);
//! - `shards/shard-<i>-of-<n>.json`: each shard's last state (host, pid, counts, updated);
//! - `merged/`: what `attnscope merge` writes.

pub mod exec;
pub mod merge;
mod names;
pub mod plan;
pub mod prompts;
pub mod slurm;
pub mod spec;
pub mod status;

pub use exec::{SweepOptions, SweepProgress, SweepSummary, run_shard};
pub use plan::{Plan, PlannedUnit, Shard, UnitRef};
pub use spec::{SweepSpec, load_spec};

use attnscope_core::Error;
use attnscope_core::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Version of the sweep directory layout.
pub const SWEEP_LAYOUT_VERSION: u32 = 1;

/// `plan.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanFile {
    pub layout_version: u32,
    pub name: String,
    pub spec_path: String,
    pub spec_sha256: String,
    pub count: usize,
    pub units: Vec<UnitRef>,
}

impl PlanFile {
    pub fn new(spec: &SweepSpec, plan: &Plan) -> PlanFile {
        PlanFile {
            layout_version: SWEEP_LAYOUT_VERSION,
            name: spec.name.clone(),
            spec_path: spec.path.display().to_string(),
            spec_sha256: attnscope_core::weights::hex(&Sha256::digest(spec.text.as_bytes())),
            count: plan.units.len(),
            units: plan.units.iter().map(|u| u.unit.clone()).collect(),
        }
    }
}

/// The paths of a sweep directory.
#[derive(Clone, Debug)]
pub struct SweepDir {
    pub root: PathBuf,
}

impl SweepDir {
    pub fn new(root: &Path) -> SweepDir {
        SweepDir {
            root: root.to_path_buf(),
        }
    }
    pub fn plan(&self) -> PathBuf {
        self.root.join("plan.json")
    }
    pub fn units(&self) -> PathBuf {
        self.root.join("units")
    }
    pub fn unit(&self, id: &str) -> PathBuf {
        self.units().join(id)
    }
    pub fn failed(&self) -> PathBuf {
        self.root.join("failed")
    }
    pub fn failed_unit(&self, id: &str) -> PathBuf {
        self.failed().join(format!("{id}.json"))
    }
    pub fn shards(&self) -> PathBuf {
        self.root.join("shards")
    }
    pub fn shard_file(&self, shard: Shard) -> PathBuf {
        self.shards()
            .join(format!("shard-{}-of-{}.json", shard.index, shard.count))
    }

    /// Reads `plan.json`.
    pub fn read_plan(&self) -> Result<PlanFile> {
        read_json(&self.plan())
    }

    /// Writes `plan.json` for `file`, or checks that the one there is the same plan: a directory holds one
    /// sweep.
    pub fn claim(&self, file: &PlanFile) -> Result<()> {
        for dir in [
            self.root.clone(),
            self.units(),
            self.failed(),
            self.shards(),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        let path = self.plan();
        if path.exists() {
            let there = self.read_plan()?;
            if there.units != file.units {
                return Err(Error::output(
                    &path,
                    format!(
                        "holds the plan of another sweep ({} units from {}, spec sha256 {}…); this spec plans {} \
                         units — use a new --out, or the spec that made it",
                        there.count,
                        there.spec_path,
                        &there.spec_sha256[..12.min(there.spec_sha256.len())],
                        file.count
                    ),
                ));
            }
            return Ok(());
        }
        attnscope_io::write_json_atomic(&path, file)
    }

    /// True when unit `id` is committed.
    pub fn is_done(&self, id: &str) -> bool {
        self.unit(id).join("unit.json").is_file()
    }
}

/// Reads a JSON file into `T`, errors naming the file.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
