//! The device seam: what the one forward pass (`model/forward.rs`) asks of a backend. The CPU backend
//! (`model/cpu.rs`) and the CUDA backend (the `attnscope-cuda` crate) implement [`Backend`]; the forward
//! pass, the KV cache's slot metadata, capture and generation are written once, over it.
//!
//! Each backend owns its buffers: weights uploaded once ([`Backend::upload`]), a [`Workspace`] of
//! activations allocated once per model for the largest batch of rows seen (llama2.c's `RunState`), and the
//! keys/values of each [`KvCache`](crate::model::KvCache) ([`Backend::Kv`]). Buffers hold `rows × width`
//! elements in the backend's storage dtype; every operation computes in f32.

use crate::Result;
use crate::capture::HeadRecorder;
use crate::config::{Activation, ModelConfig, NormKind};
use crate::model::rope::Rope;
use crate::slots::{AttentionMask, SlotInfo};
use crate::weights::ModelWeights;
use std::any::Any;
use std::ops::Range;
use std::sync::Arc;

/// Weights of a model as backend `B` stores them.
pub type BackendWeights<B> =
    ModelWeights<<B as Backend>::Linear, <B as Backend>::Norm, <B as Backend>::Table>;

/// Where a backend runs, for the manifest and messages.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DeviceInfo {
    /// "cpu" or "cuda:N".
    pub device: String,
    /// GPU name, when on a GPU.
    pub name: Option<String>,
    /// Storage dtype of weights, activations and KV cache: "f32", "bf16" or "f16".
    pub dtype: String,
}

/// The shape of one layer's attention, shared by every backend and kernel: query heads, key/value heads
/// (GQA: `n_heads / n_kv_heads` query heads share one), head dim, and the factor on q·k.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
}

impl AttentionShape {
    /// The attention shape of layer `layer` (GPT-2's `scale_attn_by_inverse_layer_idx` divides the scale by
    /// `layer + 1`).
    pub fn of_layer(cfg: &ModelConfig, layer: usize) -> AttentionShape {
        let mut scale = cfg.attn_scale;
        if cfg.scale_attn_by_inverse_layer_idx {
            scale /= (layer + 1) as f32;
        }
        AttentionShape {
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            scale,
        }
    }

    /// Width of a row of queries (and of the attention output): `n_heads · head_dim`.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of a row of keys or values: `n_kv_heads · head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

/// One sequence's attention at one layer: the queries of its new slots (rows `rows` of the stacked query
/// buffer, already rotated), which sit at cache slots `q_start..q_start + rows.len()`, against keys/values
/// `0..q_start + rows.len()` of its cache.
pub struct AttentionStep<'a, B: Backend + ?Sized> {
    /// Index of the sequence in the pass's batch (what [`CaptureTargets::target`] is asked for).
    pub item: usize,
    pub layer: usize,
    pub shape: AttentionShape,
    pub q: &'a B::Buf,
    pub rows: Range<usize>,
    pub q_start: usize,
    pub kv: &'a B::Kv,
    pub mask: AttentionMask<'a>,
}

/// The recorders of one captured layer of one sequence, and the mask over its cache's slots (which do not
/// change between the layer's attention and the end of the pass).
pub struct CaptureTarget<'a> {
    pub recorders: &'a mut [HeadRecorder],
    pub mask: AttentionMask<'a>,
}

/// Where [`Backend::finish_capture`] finds the recorders of the pass: the forward pass's batch items.
pub trait CaptureTargets {
    /// The recorders of layer `layer` of item `item`, if that item captures that layer.
    fn target(&mut self, item: usize, layer: usize) -> Option<CaptureTarget<'_>>;
}

/// The output head: its own linear layer, or tied to the embedding table.
pub enum LmHead<'a, B: Backend + ?Sized> {
    Linear(&'a B::Linear),
    Tied(&'a B::Table),
}

/// Keys and values of one KV cache, on some device: `[capacity, kv_dim]` per layer. The slot metadata stays
/// in `KvCache` on the host; this is only the storage, which ablation reads and writes as f32.
pub trait KvStore: Send + std::fmt::Debug + 'static {
    /// Keys (`values = false`) or values of layer `layer`, slots `0..n_slots`, as f32 `[n_slots, kv_dim]`.
    fn read_layer(&self, layer: usize, values: bool, n_slots: usize) -> Result<Vec<f32>>;
    /// Overwrites keys or values of layer `layer`, slots `0..data.len() / kv_dim`, from f32.
    fn write_layer(&mut self, layer: usize, values: bool, data: &[f32]) -> Result<()>;
    /// A copy of the storage (an error where the device cannot copy it).
    fn try_clone(&self) -> Result<Box<dyn KvStore>>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// A device the forward pass can run on. Every method that takes a row count works on the first `rows`
/// rows of its buffers; buffers come from [`Backend::alloc`] and are at least as long as asked.
pub trait Backend: Send + Sync + 'static {
    /// A buffer of activations in the storage dtype.
    type Buf: Send;
    /// A linear layer `W [out, in]` (+ bias `[out]`).
    type Linear: Send + Sync;
    /// A norm's weight (+ bias).
    type Norm: Send + Sync;
    /// A table of rows `[n, hidden]`: token embeddings, learned positions.
    type Table: Send + Sync;
    /// Rotary frequencies.
    type Rope: Send + Sync;
    /// Keys/values of one cache.
    type Kv: KvStore;
    /// Per-pass state beyond the activations: token ids and positions of the stacked rows as the device
    /// needs them, attention statistics, decode partials.
    type Scratch: Send;

    /// Where this backend runs.
    fn device(&self) -> DeviceInfo;

    /// The model's weights in this backend's storage (the CPU keeps the host copy as it is).
    fn upload(&self, weights: &Arc<ModelWeights>) -> Result<Arc<BackendWeights<Self>>>;
    /// The rotary table.
    fn upload_rope(&self, rope: &Rope) -> Result<Self::Rope>;
    /// A buffer of `len` elements.
    fn alloc(&self, len: usize) -> Result<Self::Buf>;
    /// Scratch for passes of up to `rows` stacked rows.
    fn new_scratch(&self, cfg: &ModelConfig, rows: usize) -> Result<Self::Scratch>;
    /// Key/value storage for `capacity` slots of every layer.
    fn new_kv(&self, cfg: &ModelConfig, capacity: usize) -> Result<Self::Kv>;

    /// Starts a pass over `slots` (the new slots of every item, stacked): token ids and positions go where
    /// [`Backend::embed`] and [`Backend::rope`] read them.
    fn begin_pass(&self, scratch: &mut Self::Scratch, slots: &[SlotInfo]) -> Result<()>;
    /// Records that `slots` now occupy cache slots `start..` of `kv` (the GPU mirrors groups and positions).
    fn write_slots(&self, kv: &mut Self::Kv, start: usize, slots: &[SlotInfo]) -> Result<()>;
    /// `x[r] = embed[token r] (+ pos_embed[position r])` for the `rows` rows of the pass.
    fn embed(
        &self,
        scratch: &Self::Scratch,
        embed: &Self::Table,
        pos_embed: Option<&Self::Table>,
        x: &mut Self::Buf,
        rows: usize,
    ) -> Result<()>;
    /// `out = norm(x)` over `rows` rows of `dim`.
    #[allow(clippy::too_many_arguments)]
    fn norm(
        &self,
        kind: NormKind,
        eps: f32,
        x: &Self::Buf,
        w: &Self::Norm,
        out: &mut Self::Buf,
        rows: usize,
        dim: usize,
    ) -> Result<()>;
    /// RMSNorm in place over `rows` rows of `dim` (Qwen3's per-head q/k norm: rows = tokens × heads).
    fn norm_in_place(
        &self,
        scratch: &mut Self::Scratch,
        x: &mut Self::Buf,
        w: &Self::Norm,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<()>;
    /// `y = x·Wᵀ + b` for `rows` rows.
    fn linear(&self, x: &Self::Buf, rows: usize, w: &Self::Linear, y: &mut Self::Buf)
    -> Result<()>;
    /// `yᵢ = x·Wᵢᵀ + bᵢ` for several layers on the same input (q/k/v, gate/up): a backend may run them
    /// as one piece of work (the CPU: one parallel region instead of one per layer, which is what decode at
    /// batch 1 waits on); by default one [`Backend::linear`] after another.
    fn linears(
        &self,
        x: &Self::Buf,
        rows: usize,
        layers: &mut [(&Self::Linear, &mut Self::Buf)],
    ) -> Result<()> {
        for (w, y) in layers.iter_mut() {
            self.linear(x, rows, w, y)?;
        }
        Ok(())
    }
    /// Rotates `rows` rows of `heads` heads of `head_dim` at the pass's positions.
    fn rope(
        &self,
        rope: &Self::Rope,
        scratch: &Self::Scratch,
        x: &mut Self::Buf,
        rows: usize,
        heads: usize,
        head_dim: usize,
    ) -> Result<()>;
    /// Copies rows `rows` of the stacked keys and values into cache slots `start..` of layer `layer`.
    #[allow(clippy::too_many_arguments)]
    fn write_kv(
        &self,
        kv: &mut Self::Kv,
        layer: usize,
        start: usize,
        k: &Self::Buf,
        v: &Self::Buf,
        rows: Range<usize>,
        kv_dim: usize,
    ) -> Result<()>;
    /// Exact softmax attention of one sequence at one layer into rows `step.rows` of `out`, handing every
    /// probability row of an active recorder to it (weights and statistics, as `HeadRecorder` defines them),
    /// either now (the CPU) or at [`Backend::finish_capture`] (the GPU queues its read-backs so that a pass
    /// synchronises once).
    fn attention(
        &self,
        scratch: &mut Self::Scratch,
        step: &AttentionStep<Self>,
        out: &mut Self::Buf,
        recorders: Option<&mut [HeadRecorder]>,
    ) -> Result<()>;
    /// Called after the attention of every sequence of a layer, before its output projection reads `out`:
    /// a backend that queued attention calls (the GPU batches decode steps) launches them here.
    fn attention_done(&self, _scratch: &mut Self::Scratch) -> Result<()> {
        Ok(())
    }
    /// `x += y` over `n` elements.
    fn add(&self, x: &mut Self::Buf, y: &Self::Buf, n: usize) -> Result<()>;
    /// `x += a + b` over `n` elements (parallel residual; `a + b` rounded first).
    fn add2(&self, x: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf, n: usize) -> Result<()>;
    /// `x = act(x)` over `n` elements.
    fn activate(&self, act: Activation, x: &mut Self::Buf, n: usize) -> Result<()>;
    /// `up = up · act(gate)` over `n` elements (gated MLP).
    fn activate_gated(
        &self,
        act: Activation,
        gate: &Self::Buf,
        up: &mut Self::Buf,
        n: usize,
    ) -> Result<()>;
    /// Gathers the rows of `ranges` of `x` (rows of `width`) into consecutive rows of `out`.
    fn gather_rows(
        &self,
        x: &Self::Buf,
        ranges: &[Range<usize>],
        width: usize,
        out: &mut Self::Buf,
    ) -> Result<()>;
    /// f32 logits `[rows, vocab]` of `x` into `out` on the host (`out` is resized, its capacity reused).
    fn lm_head(
        &self,
        scratch: &mut Self::Scratch,
        x: &Self::Buf,
        rows: usize,
        head: LmHead<Self>,
        vocab: usize,
        out: &mut Vec<f32>,
    ) -> Result<()>;
    /// Hands the recorders the rows that [`Backend::attention`] left pending in `scratch` (none on the CPU,
    /// which records as it attends). The forward pass calls it once, after the logits are read (or
    /// [`Backend::sync`]), so the queued read-backs are complete; a pass that fails before it leaves its
    /// pending rows to be discarded by the next [`Backend::begin_pass`], and its error propagates.
    fn finish_capture(
        &self,
        scratch: &mut Self::Scratch,
        targets: &mut dyn CaptureTargets,
    ) -> Result<()>;
    /// Waits for queued work (a pass that returns no logits ends with it).
    fn sync(&self, scratch: &mut Self::Scratch) -> Result<()>;
}

/// Activations of the forward pass for up to `rows` stacked rows, allocated once and grown only when a
/// larger batch comes (so the decode loop allocates nothing): llama2.c's `RunState`.
pub struct Workspace<B: Backend> {
    pub rows: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate: usize,
    /// Residual stream `[rows, hidden]`.
    pub x: B::Buf,
    /// Normed input of a block `[rows, hidden]`.
    pub normed: B::Buf,
    pub q: B::Buf,
    pub k: B::Buf,
    pub v: B::Buf,
    /// Attention output `[rows, n_heads · head_dim]`.
    pub attn: B::Buf,
    /// Output projection `[rows, hidden]`.
    pub o: B::Buf,
    pub up: B::Buf,
    pub gate: B::Buf,
    /// MLP output `[rows, hidden]`.
    pub mlp: B::Buf,
    /// The rows whose logits are asked for `[rows, hidden]`.
    pub picked: B::Buf,
    /// Host logits `[picked rows, vocab]`.
    pub logits: Vec<f32>,
    /// The new slots of the pass, stacked.
    pub slots: Vec<SlotInfo>,
    /// Rows of each item in the stacked activations, its first new cache slot, and the rows whose logits
    /// are asked for (index buffers reused across passes).
    pub ranges: Vec<Range<usize>>,
    pub starts: Vec<usize>,
    pub picked_rows: Vec<Range<usize>>,
    pub scratch: B::Scratch,
}

impl<B: Backend> Workspace<B> {
    /// Buffers for passes of up to `rows` rows.
    pub fn new(b: &B, cfg: &ModelConfig, intermediate: usize, rows: usize) -> Result<Workspace<B>> {
        let h = cfg.hidden_size;
        let q_dim = cfg.n_heads * cfg.head_dim;
        let kv_dim = cfg.n_kv_heads * cfg.head_dim;
        Ok(Workspace {
            rows,
            intermediate,
            x: b.alloc(rows * h)?,
            normed: b.alloc(rows * h)?,
            q: b.alloc(rows * q_dim)?,
            k: b.alloc(rows * kv_dim)?,
            v: b.alloc(rows * kv_dim)?,
            attn: b.alloc(rows * q_dim)?,
            o: b.alloc(rows * h)?,
            up: b.alloc(rows * intermediate)?,
            gate: b.alloc(rows * intermediate)?,
            mlp: b.alloc(rows * h)?,
            picked: b.alloc(rows * h)?,
            logits: Vec::new(),
            slots: Vec::with_capacity(rows),
            ranges: Vec::new(),
            starts: Vec::new(),
            picked_rows: Vec::new(),
            scratch: b.new_scratch(cfg, rows)?,
        })
    }
}
