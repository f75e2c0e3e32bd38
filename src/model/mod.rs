//! The CPU reference model: loading and the forward pass with exact attention capture.

pub mod attention;
pub mod backend;
pub mod forward;
pub mod kv_cache;
pub mod ops;
pub mod random;
pub mod rope;

pub use crate::slots::{SlotInfo, SlotKind};
pub use forward::LogitRows;
pub use kv_cache::KvCache;

use crate::config::{ModelConfig, PositionEncoding};
use crate::cuda::{DeviceRequest, GpuContext, GpuDtype, GpuModel};
use crate::slots::Visibility;
use crate::weights::{ModelWeights, WeightsInfo, load_weights};
use crate::{Error, Result};
use rope::Rope;
use std::path::{Path, PathBuf};

/// A loaded model: config, f32 weights and precomputed rotary frequencies; and, after
/// [`Model::use_device`] picked a GPU, a copy of the weights on it, which then runs every forward pass.
pub struct Model {
    pub dir: PathBuf,
    pub cfg: ModelConfig,
    pub weights: ModelWeights,
    pub info: WeightsInfo,
    pub rope: Option<Rope>,
    pub gpu: Option<GpuModel>,
}

/// Where a model runs, as resolved by [`Model::use_device`].
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Placement {
    /// "cpu" or "cuda:N".
    pub device: String,
    /// GPU name, when on a GPU.
    pub gpu_name: Option<String>,
    /// Storage dtype: "f32" on the CPU; the GPU dtype otherwise.
    pub dtype: String,
    /// Why `auto` chose the CPU, when it did.
    pub note: Option<String>,
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
            gpu: None,
        }
    }

    /// Moves the forward pass to the device `request` names. `Auto` uses GPU 0 when it is usable and the
    /// CPU otherwise (saying why in `Placement::note`); `Cuda(n)` fails with a one-line reason when that GPU
    /// cannot be used. `dtype` is the GPU storage type (the CPU always computes in f32).
    pub fn use_device(&mut self, request: DeviceRequest, dtype: GpuDtype) -> Result<Placement> {
        let ordinal = match request {
            DeviceRequest::Cpu => {
                self.gpu = None;
                return Ok(Placement::cpu(None));
            }
            // No driver or no device: the CPU, silently (the common case on laptops and CI).
            DeviceRequest::Auto if !crate::cuda::probe().is_available() => {
                self.gpu = None;
                return Ok(Placement::cpu(None));
            }
            DeviceRequest::Auto => 0,
            DeviceRequest::Cuda(n) => n,
        };
        let opened = GpuContext::shared(ordinal)
            .and_then(|g| GpuModel::upload(g, &self.cfg, &self.weights, self.rope.as_ref(), dtype));
        match (opened, request) {
            (Ok(gpu), _) => {
                let placement = Placement {
                    device: format!("cuda:{ordinal}"),
                    gpu_name: Some(gpu.gpu.name.clone()),
                    dtype: dtype.as_str().into(),
                    note: None,
                };
                self.gpu = Some(gpu);
                Ok(placement)
            }
            (Err(e), DeviceRequest::Auto) => {
                self.gpu = None;
                Ok(Placement::cpu(Some(e.to_string())))
            }
            (Err(e), _) => {
                self.gpu = None;
                Err(Error::cuda(format!(
                    "--device cuda:{ordinal}: {e} (--device cpu runs on the CPU)"
                )))
            }
        }
    }

    /// A KV cache for this model's device.
    pub fn new_cache(&self, capacity: usize, visibility: Visibility) -> Result<KvCache> {
        match &self.gpu {
            Some(g) => g.new_cache(&self.cfg, capacity, visibility),
            None => Ok(KvCache::new(&self.cfg, capacity, visibility)),
        }
    }
}

impl Placement {
    fn cpu(note: Option<String>) -> Placement {
        Placement {
            device: "cpu".into(),
            gpu_name: None,
            dtype: "f32".into(),
            note,
        }
    }
}
