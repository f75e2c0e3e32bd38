//! Model weights: the common layout every family is loaded into ([`ModelWeights`], generic over how a
//! backend stores a tensor), the checkpoint reader (`checkpoint`: safetensors, single or sharded,
//! memory-mapped, f32/f16/bf16) and the per-family tensor names (`layout`).
//!
//! Layout conventions: a [`Linear`] stores its weight as `[out, in]` row-major (PyTorch `nn.Linear`), so GPT-2's
//! `Conv1D` (`[in, out]`) is transposed on load and GPT-NeoX's fused `query_key_value` (per-head interleaved
//! `[heads, 3, head_dim]` rows) is split into q, k and v.

mod checkpoint;
mod layout;
mod matrix;
mod panels;

pub use checkpoint::{
    ShardIndex, TensorLoader, hex, inspect_safetensors, inspect_weights, parse_shard_index,
    weight_files,
};
pub use layout::{LoadOptions, load_weights, load_weights_with};
pub use matrix::{StorageDtype, WeightMatrix};
pub use panels::{PANEL_ROWS, Panel, PanelMatrix};

use crate::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// y = x W^T + b with W stored `[out_dim, in_dim]` (f32, or bf16/f16 computed in f32); the bias is f32.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: WeightMatrix,
    pub bias: Option<Vec<f32>>,
    pub in_dim: usize,
    pub out_dim: usize,
}

/// Scale (and shift, for LayerNorm) of a normalisation layer.
#[derive(Clone, Debug)]
pub struct Norm {
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

/// One transformer block. `L` and `N` are how a backend stores a linear layer and a norm: the host f32
/// [`Linear`] and [`Norm`] by default, device buffers for a GPU backend (see [`ModelWeights::try_map`]).
#[derive(Clone, Debug)]
pub struct LayerWeights<L = Linear, N = Norm> {
    pub attn_norm: N,
    pub q: L,
    pub k: L,
    pub v: L,
    pub o: L,
    /// Per-head RMSNorm of queries/keys (Qwen3), weight of length head_dim.
    pub q_norm: Option<N>,
    pub k_norm: Option<N>,
    pub mlp_norm: N,
    /// Gate projection of a gated MLP.
    pub gate: Option<L>,
    pub up: L,
    pub down: L,
}

/// All weights of a model: on the host by default (linear layers and the embedding table in their
/// [`StorageDtype`], the rest f32); `T` is how a backend stores a table (embeddings, learned positions).
#[derive(Clone, Debug)]
pub struct ModelWeights<L = Linear, N = Norm, T = WeightMatrix> {
    /// `[vocab, hidden]`
    pub embed: T,
    /// Learned positions `[max_positions, hidden]` (GPT-2).
    pub pos_embed: Option<T>,
    pub layers: Vec<LayerWeights<L, N>>,
    pub final_norm: N,
    /// Output head; `None` means tied to `embed`.
    pub lm_head: Option<L>,
}

impl<L, N, T> ModelWeights<L, N, T> {
    /// The same weights in another storage (a backend's upload): every linear layer, norm and table goes
    /// through its function, in model order.
    pub fn try_map<L2, N2, T2>(
        &self,
        linear: &dyn Fn(&L) -> Result<L2>,
        norm: &dyn Fn(&N) -> Result<N2>,
        table: &dyn Fn(&T) -> Result<T2>,
    ) -> Result<ModelWeights<L2, N2, T2>> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for lw in &self.layers {
            layers.push(LayerWeights {
                attn_norm: norm(&lw.attn_norm)?,
                q: linear(&lw.q)?,
                k: linear(&lw.k)?,
                v: linear(&lw.v)?,
                o: linear(&lw.o)?,
                q_norm: lw.q_norm.as_ref().map(norm).transpose()?,
                k_norm: lw.k_norm.as_ref().map(norm).transpose()?,
                mlp_norm: norm(&lw.mlp_norm)?,
                gate: lw.gate.as_ref().map(linear).transpose()?,
                up: linear(&lw.up)?,
                down: linear(&lw.down)?,
            });
        }
        Ok(ModelWeights {
            embed: table(&self.embed)?,
            pos_embed: self.pos_embed.as_ref().map(table).transpose()?,
            layers,
            final_norm: norm(&self.final_norm)?,
            lm_head: self.lm_head.as_ref().map(linear).transpose()?,
        })
    }
}

impl ModelWeights {
    /// The same weights with the linear layers and the embedding table stored as `dtype` (learned
    /// positions, norms and biases stay f32), converted one tensor at a time.
    pub fn into_storage(self, dtype: StorageDtype) -> ModelWeights {
        let mut weights = self.map_linears(|l| Linear {
            weight: l.weight.into_dtype(dtype),
            ..l
        });
        weights.embed = std::mem::take(&mut weights.embed).into_dtype(dtype);
        weights
    }

    /// The same weights with every f32 linear layer, and the embedding table when the output head is tied
    /// to it, repacked into row panels for the CPU's GEMM ([`WeightMatrix::into_panels`]), one tensor at a
    /// time (embedding rows are read from the panels). Done once at load; a GPU upload reads them back
    /// row-major.
    pub fn into_cpu_layout(self) -> ModelWeights {
        let tied = self.lm_head.is_none();
        let mut weights = self.map_linears(|l| Linear {
            weight: l.weight.into_panels(l.out_dim, l.in_dim),
            ..l
        });
        if tied {
            let hidden = weights.final_norm.weight.len();
            let vocab = weights.embed.len() / hidden.max(1);
            weights.embed = std::mem::take(&mut weights.embed).into_panels(vocab, hidden);
        }
        weights
    }

    /// Every linear layer (the output head too) through `f`, in model order; the rest is moved.
    fn map_linears(self, f: impl Fn(Linear) -> Linear) -> ModelWeights {
        ModelWeights {
            layers: self
                .layers
                .into_iter()
                .map(|l| LayerWeights {
                    q: f(l.q),
                    k: f(l.k),
                    v: f(l.v),
                    o: f(l.o),
                    gate: l.gate.map(&f),
                    up: f(l.up),
                    down: f(l.down),
                    ..l
                })
                .collect(),
            lm_head: self.lm_head.map(&f),
            ..self
        }
    }

    /// The storage dtype of the embedding table (that of every linear layer too, for weights loaded or
    /// converted by attnscope).
    pub fn storage(&self) -> StorageDtype {
        self.embed.dtype()
    }
}

/// What was found in the checkpoint files, for `inspect` and the manifest.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WeightsInfo {
    pub files: Vec<PathBuf>,
    /// Tensor count per stored dtype.
    pub dtypes: BTreeMap<String, usize>,
    /// Number of stored scalars across all tensors.
    pub stored_parameters: usize,
    /// sha256 over the safetensors headers (names, dtypes, shapes, offsets) and the shard index.
    pub index_sha256: String,
}
