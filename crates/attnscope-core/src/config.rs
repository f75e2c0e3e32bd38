//! Reading Hugging Face `config.json` into one architecture-neutral [`ModelConfig`].
//!
//! Architecture differences are data: each supported `model_type` maps to a set of flags (norm kind, position
//! encoding, biases, q/k norms, residual layout, MLP kind) that the single forward pass in `model::forward`
//! reads. Both config layouts are accepted: transformers 4.x (`rope_theta`, `rope_scaling`, `rotary_pct`,
//! `rotary_emb_base`, `torch_dtype`) and 5.x (`rope_parameters` with `rope_theta`, `rope_type`,
//! `partial_rotary_factor`, ...; `dtype`).

use crate::Error;
use crate::Result;
use parse::Reader;
use serde::Serialize;
use serde_json::Value;
use std::path::Path;

mod parse;

/// Largest rotary dimension supported (the rotation keeps its cos/sin tables on the stack).
pub const MAX_ROTARY_DIM: usize = 512;

/// Upper bounds of config.json's sizes, far above any released checkpoint, so that a corrupt or hostile
/// value is refused with its field's name before anything is sized from it (and products of them cannot
/// overflow 64 bits).
pub mod limits {
    /// `num_hidden_layers`.
    pub const MAX_LAYERS: usize = 4096;
    /// `hidden_size`, `intermediate_size`, `head_dim`.
    pub const MAX_WIDTH: usize = 1 << 20;
    /// `num_attention_heads`, `num_key_value_heads`.
    pub const MAX_HEADS: usize = 4096;
    /// `vocab_size` (token ids are u32; 16.7M is 60× the largest vocabulary released).
    pub const MAX_VOCAB: usize = 1 << 24;
    /// `max_position_embeddings`.
    pub const MAX_POSITIONS: usize = 1 << 30;
}

/// The model families attnscope knows. Only used for naming and for weight-name mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Gpt2,
    GptNeox,
}

impl Family {
    /// The `model_type` string of config.json.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Gpt2 => "gpt2",
            Family::GptNeox => "gpt_neox",
        }
    }
}

/// Normalisation layer kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    /// x / rms(x) * w
    RmsNorm,
    /// (x - mean) / std * w + b
    LayerNorm,
}

/// MLP activation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Silu,
    /// exact GELU (erf)
    Gelu,
    /// tanh approximation (`gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`)
    GeluTanh,
    Relu,
}

/// How rotary frequencies are rescaled for long context.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RopeScaling {
    None,
    Linear {
        factor: f64,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// Rotary position embedding parameters.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RopeConfig {
    pub theta: f64,
    /// Number of leading dimensions of each head that are rotated (even; = head_dim unless partial rotary).
    pub rotary_dim: usize,
    pub scaling: RopeScaling,
}

/// How positions enter the model.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PositionEncoding {
    Rope(RopeConfig),
    /// Learned absolute position embeddings (GPT-2 `wpe`).
    Learned,
}

/// Everything the forward pass needs to know about an architecture.
#[derive(Clone, Debug, Serialize)]
pub struct ModelConfig {
    pub family: Family,
    pub hidden_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub max_positions: Option<usize>,
    pub norm: NormKind,
    pub norm_eps: f32,
    pub activation: Activation,
    /// SiLU-gated MLP (gate, up, down) rather than plain (up, down).
    pub gated_mlp: bool,
    pub position: PositionEncoding,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Per-head RMSNorm on queries and keys before RoPE (Qwen3).
    pub qk_norm: bool,
    /// x + attn(ln1(x)) + mlp(ln2(x)) (GPT-NeoX) instead of two sequential residual blocks.
    pub parallel_residual: bool,
    pub tied_embeddings: bool,
    /// Attention scores are multiplied by this (1/sqrt(head_dim) unless the config says otherwise).
    pub attn_scale: f32,
    /// GPT-2 `scale_attn_by_inverse_layer_idx`: scores of layer l are further divided by l + 1.
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Keys more than this many slots back are hidden (Mistral-style sliding window).
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// dtype named in config.json (`torch_dtype` or `dtype`), informational.
    pub dtype: Option<String>,
    /// Which config.json layout was read: "4.x" or "5.x".
    pub layout: &'static str,
}

impl ModelConfig {
    /// Reads `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<ModelConfig> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        Self::from_json_str(&path, &text)
    }

    /// Parses config.json text; `path` is only used in error messages.
    pub fn from_json_str(path: &Path, text: &str) -> Result<ModelConfig> {
        let value: Value = serde_json::from_str(text).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            message: format!("not valid JSON: {e}"),
        })?;
        let obj = value.as_object().ok_or_else(|| Error::Json {
            path: path.to_path_buf(),
            message: "expected a JSON object".into(),
        })?;
        Reader::new(path, obj).build()
    }

    /// Number of query heads that share one key/value head.
    pub fn group_size(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// Total parameter count implied by the shapes (embeddings counted once when tied), computed in 128
    /// bits (the sizes are bounded by [`limits`], so it cannot overflow) and saturated to usize.
    pub fn parameter_count(&self) -> usize {
        let [h, q, kv, head_dim, inter, vocab, layers] = [
            self.hidden_size,
            self.n_heads * self.head_dim,
            self.n_kv_heads * self.head_dim,
            self.head_dim,
            self.intermediate_size,
            self.vocab_size,
            self.n_layers,
        ]
        .map(|n| n as u128);
        let norm_params = if self.norm == NormKind::LayerNorm {
            2 * h
        } else {
            h
        };
        let mut per_layer = h * q + 2 * h * kv + q * h + 2 * norm_params;
        if self.qkv_bias {
            per_layer += q + 2 * kv;
        }
        if self.o_bias {
            per_layer += h;
        }
        if self.qk_norm {
            per_layer += 2 * head_dim;
        }
        let mlp_mats = if self.gated_mlp { 3 } else { 2 };
        per_layer += mlp_mats * h * inter;
        if self.mlp_bias {
            per_layer += (mlp_mats - 1) * inter + h;
        }
        let mut total = per_layer * layers + vocab * h + norm_params;
        if !self.tied_embeddings {
            total += vocab * h;
        }
        if self.position == PositionEncoding::Learned {
            total += self.max_positions.unwrap_or(0) as u128 * h;
        }
        usize::try_from(total).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests;
