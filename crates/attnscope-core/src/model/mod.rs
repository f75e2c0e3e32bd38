//! The CPU reference model: loading and the forward pass with exact attention capture.

pub mod attention;
pub mod backend;
pub mod cpu;
pub mod engine;
pub mod forward;
pub mod kv_cache;
pub mod matvec;
pub mod ops;
pub mod panel_gemm;
pub mod random;
pub mod rope;

pub use forward::{BatchItem, LogitRows};
pub use kv_cache::KvCache;

use crate::Error;
use crate::Result;
use crate::config::{ModelConfig, PositionEncoding};
use crate::model::backend::{Backend, DeviceInfo};
use crate::model::engine::{Engine, Executor};
use crate::slots::{SlotInfo, Visibility};
use crate::weights::{LoadOptions, ModelWeights, StorageDtype, WeightsInfo, load_weights_with};
use rope::Rope;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A loaded model: config, host weights (f32; linear layers and embeddings optionally bf16/f16) and rotary
/// frequencies, placed on a backend (the CPU until [`Model::use_backend`] moves it) that runs every forward
/// pass.
pub struct Model {
    pub dir: PathBuf,
    pub cfg: ModelConfig,
    pub weights: Arc<ModelWeights>,
    pub info: WeightsInfo,
    pub rope: Option<Rope>,
    exec: Box<dyn Executor>,
}

impl Model {
    /// Loads `dir/config.json` and the safetensors weights it calls for, on the CPU, in f32.
    pub fn load(dir: &Path) -> Result<Model> {
        Model::load_as(dir, StorageDtype::F32)
    }

    /// [`Model::load`] with the linear layers and the embedding table stored as `storage` (computed in
    /// f32), converted tensor by tensor from the mapped checkpoint.
    pub fn load_as(dir: &Path, storage: StorageDtype) -> Result<Model> {
        Model::load_with(dir, storage, LoadOptions::default()).map(|(model, _)| model)
    }

    /// [`Model::load_as`] with load options; also returns the loader's warnings (one line each).
    pub fn load_with(
        dir: &Path,
        storage: StorageDtype,
        opts: LoadOptions,
    ) -> Result<(Model, Vec<String>)> {
        let cfg = ModelConfig::from_dir(dir)?;
        let (weights, info, warnings) = load_weights_with(dir, &cfg, storage, opts)?;
        Ok((Model::from_parts(dir, cfg, weights, info), warnings))
    }

    /// Assembles a model on the CPU from already-loaded parts (used by benchmarks with random weights).
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
        // f32 linear layers go into the CPU GEMM's panel layout once, here, not at every call.
        let weights = Arc::new(weights.into_cpu_layout());
        let exec = Box::new(Engine::on_cpu(&weights, rope.as_ref()));
        Model {
            dir: dir.to_path_buf(),
            cfg,
            weights,
            info,
            rope,
            exec,
        }
    }

    /// Moves the forward pass back to the CPU.
    pub fn use_cpu(&mut self) {
        self.exec = Box::new(Engine::on_cpu(&self.weights, self.rope.as_ref()));
    }

    /// Moves the forward pass to `backend`: uploads the weights and the RoPE table to it. On failure the
    /// model stays where it was.
    pub fn use_backend<B: Backend>(&mut self, backend: B) -> Result<()> {
        self.exec = Box::new(Engine::new(backend, &self.weights, self.rope.as_ref())?);
        Ok(())
    }

    /// Where the forward pass runs.
    pub fn device(&self) -> DeviceInfo {
        self.exec.device()
    }

    /// A KV cache on this model's device.
    pub fn new_cache(&self, capacity: usize, visibility: Visibility) -> Result<KvCache> {
        let store = self.exec.new_kv(&self.cfg, capacity)?;
        Ok(KvCache::with_store(&self.cfg, capacity, visibility, store))
    }

    /// Allocates the forward pass's workspace for passes of up to `rows` rows now, instead of at the first
    /// pass that needs it.
    pub fn reserve_rows(&self, rows: usize) -> Result<()> {
        self.exec.reserve_rows(&self.cfg, rows)
    }

    /// Appends `new` slots to `cache`, runs them through the model, records attention into `capture`,
    /// and returns logits `[rows, vocab]` for the rows `logit_rows` asks for.
    pub fn forward(
        &self,
        cache: &mut KvCache,
        new: &[SlotInfo],
        capture: Option<&mut crate::capture::SequenceCapture>,
        logit_rows: LogitRows,
    ) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.forward_into(cache, new, capture, logit_rows, &mut out)?;
        Ok(out)
    }

    /// [`Model::forward`] writing the logits into `out` (cleared; its capacity is reused, so a decode loop
    /// that passes the same buffer allocates nothing for them).
    pub fn forward_into(
        &self,
        cache: &mut KvCache,
        new: &[SlotInfo],
        capture: Option<&mut crate::capture::SequenceCapture>,
        logit_rows: LogitRows,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let mut items = [BatchItem {
            cache,
            new,
            capture,
        }];
        self.check_batch(&items)?;
        self.exec
            .forward_batch(&self.cfg, &mut items, logit_rows, std::slice::from_mut(out))
    }

    /// One forward pass over several sequences: their new slots are stacked so that every weight matrix
    /// is read once per call (batched decode), while attention runs per sequence over its own cache.
    /// Returns one logits buffer per item.
    pub fn forward_batch(
        &self,
        items: &mut [BatchItem],
        logit_rows: LogitRows,
    ) -> Result<Vec<Vec<f32>>> {
        let mut outs = vec![Vec::new(); items.len()];
        self.forward_batch_into(items, logit_rows, &mut outs)?;
        Ok(outs)
    }

    /// [`Model::forward_batch`] writing item i's logits into `outs[i]` (cleared; its capacity is reused, so
    /// a batched decode loop that passes the same buffers allocates nothing for them). `outs` holds one
    /// buffer per item.
    pub fn forward_batch_into(
        &self,
        items: &mut [BatchItem],
        logit_rows: LogitRows,
        outs: &mut [Vec<f32>],
    ) -> Result<()> {
        if outs.len() != items.len() {
            return Err(Error::input(format!(
                "forward: {} logits buffers for a batch of {} sequences",
                outs.len(),
                items.len()
            )));
        }
        self.check_batch(items)?;
        self.exec.forward_batch(&self.cfg, items, logit_rows, outs)
    }

    /// Rejects batches the model or the caches cannot take.
    fn check_batch(&self, items: &[BatchItem]) -> Result<()> {
        for item in items.iter() {
            if item.new.is_empty() {
                return Err(Error::input("forward: no tokens"));
            }
            self.check_slots(item.new)?;
            let needed = item.cache.len() + item.new.len();
            if needed > item.cache.capacity() {
                return Err(Error::input(format!(
                    "sequence of {needed} slots exceeds the KV cache capacity {}",
                    item.cache.capacity()
                )));
            }
        }
        Ok(())
    }

    /// Rejects token ids and positions the model cannot take.
    fn check_slots(&self, new: &[SlotInfo]) -> Result<()> {
        for s in new {
            if s.token as usize >= self.cfg.vocab_size {
                return Err(Error::input(format!(
                    "token id {} is out of range for vocab_size {}",
                    s.token, self.cfg.vocab_size
                )));
            }
            if s.position < 0 {
                return Err(Error::input(format!("position {} is negative", s.position)));
            }
            let learned = matches!(self.cfg.position, PositionEncoding::Learned);
            if learned
                && self
                    .cfg
                    .max_positions
                    .is_some_and(|m| s.position as usize >= m)
            {
                return Err(Error::input(format!(
                    "position {} exceeds the learned position table ({} positions)",
                    s.position,
                    self.cfg.max_positions.unwrap_or(0)
                )));
            }
        }
        Ok(())
    }
}
