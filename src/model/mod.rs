//! The CPU reference model: loading and the forward pass with exact attention capture.

pub mod attention;
pub mod forward;
pub mod kv_cache;
pub mod ops;
pub mod random;
pub mod rope;

pub use forward::LogitRows;
pub use kv_cache::{KvCache, SlotInfo, SlotKind};

use crate::Result;
use crate::config::{ModelConfig, PositionEncoding};
use crate::weights::{ModelWeights, WeightsInfo, load_weights};
use rope::Rope;
use std::path::{Path, PathBuf};

/// A loaded model: config, f32 weights and precomputed rotary frequencies.
pub struct Model {
    pub dir: PathBuf,
    pub cfg: ModelConfig,
    pub weights: ModelWeights,
    pub info: WeightsInfo,
    pub rope: Option<Rope>,
}

impl Model {
    /// Loads `dir/config.json` and the safetensors weights it calls for.
    pub fn load(dir: &Path) -> Result<Model> {
        let cfg = ModelConfig::from_dir(dir)?;
        let (weights, info) = load_weights(dir, &cfg)?;
        Ok(Model::from_parts(dir, cfg, weights, info))
    }

    /// Assembles a model from already-loaded parts (used by benchmarks with random weights).
    pub fn from_parts(
        dir: &Path,
        cfg: ModelConfig,
        weights: ModelWeights,
        info: WeightsInfo,
    ) -> Model {
        let rope = match &cfg.position {
            PositionEncoding::Rope(r) => Some(Rope::new(r)),
            PositionEncoding::Learned => None,
        };
        Model {
            dir: dir.to_path_buf(),
            cfg,
            weights,
            info,
            rope,
        }
    }
}
