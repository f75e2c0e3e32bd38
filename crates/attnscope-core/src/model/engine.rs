//! A model placed on a backend: the backend, its copy of the weights and RoPE table, and the workspace of
//! the forward pass. [`Executor`] is its object-safe face, so that `Model` can hold any backend chosen at run
//! time while the forward pass itself is compiled once per backend, with static dispatch.

use crate::Error;
use crate::Result;
use crate::config::ModelConfig;
use crate::model::backend::{Backend, BackendWeights, DeviceInfo, KvStore, Workspace};
use crate::model::cpu::CpuBackend;
use crate::model::forward::{BatchItem, LogitRows, Weights, forward_batch};
use crate::model::rope::Rope;
use crate::weights::ModelWeights;
use std::sync::{Arc, Mutex};

/// What `Model` asks of the backend it runs on.
pub trait Executor: Send + Sync {
    /// Where the forward pass runs.
    fn device(&self) -> DeviceInfo;
    /// One forward pass (see [`crate::model::Model::forward_batch`], whose checks have run), writing each
    /// item's logits into `outs`.
    fn forward_batch(
        &self,
        cfg: &ModelConfig,
        items: &mut [BatchItem],
        logit_rows: LogitRows,
        outs: &mut [Vec<f32>],
    ) -> Result<()>;
    /// Key/value storage for a cache of `capacity` slots on this device.
    fn new_kv(&self, cfg: &ModelConfig, capacity: usize) -> Result<Box<dyn KvStore>>;
    /// Makes sure the workspace holds passes of `rows` stacked rows, so later passes of at most that many
    /// rows allocate nothing.
    fn reserve_rows(&self, cfg: &ModelConfig, rows: usize) -> Result<()>;
}

/// A backend with the model's weights on it.
pub struct Engine<B: Backend> {
    pub backend: B,
    pub weights: Arc<BackendWeights<B>>,
    pub rope: Option<B::Rope>,
    /// Width of the MLP's hidden layer (the up projection's output).
    pub intermediate: usize,
    workspace: Mutex<Option<Workspace<B>>>,
}

impl<B: Backend> Engine<B> {
    /// Uploads `weights` and `rope` to `backend`.
    pub fn new(backend: B, weights: &Arc<ModelWeights>, rope: Option<&Rope>) -> Result<Engine<B>> {
        let intermediate = weights.layers.first().map_or(0, |l| l.up.out_dim);
        let device_weights = backend.upload(weights)?;
        let device_rope = rope.map(|r| backend.upload_rope(r)).transpose()?;
        Ok(Engine::assemble(
            backend,
            device_weights,
            device_rope,
            intermediate,
        ))
    }

    fn assemble(
        backend: B,
        weights: Arc<BackendWeights<B>>,
        rope: Option<B::Rope>,
        intermediate: usize,
    ) -> Engine<B> {
        Engine {
            backend,
            weights,
            rope,
            intermediate,
            workspace: Mutex::new(None),
        }
    }

    /// Runs `f` on a workspace of at least `rows` rows, allocating (or growing) it only when needed.
    fn with_workspace<T>(
        &self,
        cfg: &ModelConfig,
        rows: usize,
        f: impl FnOnce(&mut Workspace<B>) -> Result<T>,
    ) -> Result<T> {
        let mut guard = self
            .workspace
            .lock()
            .map_err(|_| Error::input("forward: an earlier forward pass panicked"))?;
        if guard.as_ref().is_none_or(|ws| ws.rows < rows) {
            // Drop the old buffers first so device memory is not held twice.
            *guard = None;
            *guard = Some(Workspace::new(&self.backend, cfg, self.intermediate, rows)?);
        }
        match guard.as_mut() {
            Some(ws) => f(ws),
            None => Err(Error::input("forward: no workspace")),
        }
    }
}

impl Engine<CpuBackend> {
    /// The model on the host: shares `weights`, which the CPU computes with as they are.
    pub fn on_cpu(weights: &Arc<ModelWeights>, rope: Option<&Rope>) -> Engine<CpuBackend> {
        let intermediate = weights.layers.first().map_or(0, |l| l.up.out_dim);
        let backend = CpuBackend {
            weights: weights.storage(),
        };
        Engine::assemble(backend, weights.clone(), rope.cloned(), intermediate)
    }
}

impl<B: Backend> Executor for Engine<B> {
    fn device(&self) -> DeviceInfo {
        self.backend.device()
    }

    fn forward_batch(
        &self,
        cfg: &ModelConfig,
        items: &mut [BatchItem],
        logit_rows: LogitRows,
        outs: &mut [Vec<f32>],
    ) -> Result<()> {
        let rows = items.iter().map(|i| i.new.len()).sum();
        self.with_workspace(cfg, rows, |ws| {
            let model = Weights {
                backend: &self.backend,
                weights: &self.weights,
                rope: self.rope.as_ref(),
            };
            forward_batch(&model, ws, cfg, items, logit_rows, outs)
        })
    }

    fn new_kv(&self, cfg: &ModelConfig, capacity: usize) -> Result<Box<dyn KvStore>> {
        Ok(Box::new(self.backend.new_kv(cfg, capacity)?))
    }

    fn reserve_rows(&self, cfg: &ModelConfig, rows: usize) -> Result<()> {
        self.with_workspace(cfg, rows, |_| Ok(()))
    }
}
