//! Reading Hugging Face `config.json` into one architecture-neutral [`ModelConfig`].
//!
//! Architecture differences are data: each supported `model_type` maps to a set of flags (norm kind, position
//! encoding, biases, q/k norms, residual layout, MLP kind) that the single forward pass in `model::forward`
//! reads. Both config layouts are accepted: transformers 4.x (`rope_theta`, `rope_scaling`, `rotary_pct`,
//! `rotary_emb_base`, `torch_dtype`) and 5.x (`rope_parameters` with `rope_theta`, `rope_type`,
//! `partial_rotary_factor`, ...; `dtype`).

use crate::Error;
use crate::Result;
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Largest rotary dimension supported (the rotation keeps its cos/sin tables on the stack).
pub const MAX_ROTARY_DIM: usize = 512;

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
        Reader {
            path: path.to_path_buf(),
            obj,
        }
        .build()
    }

    /// Number of query heads that share one key/value head.
    pub fn group_size(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// Total parameter count implied by the shapes (embeddings counted once when tied).
    pub fn parameter_count(&self) -> usize {
        let h = self.hidden_size;
        let q = self.n_heads * self.head_dim;
        let kv = self.n_kv_heads * self.head_dim;
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
            per_layer += 2 * self.head_dim;
        }
        let mlp_mats = if self.gated_mlp { 3 } else { 2 };
        per_layer += mlp_mats * h * self.intermediate_size;
        if self.mlp_bias {
            per_layer += (mlp_mats - 1) * self.intermediate_size + h;
        }
        let mut total = per_layer * self.n_layers + self.vocab_size * h + norm_params;
        if !self.tied_embeddings {
            total += self.vocab_size * h;
        }
        if self.position == PositionEncoding::Learned {
            total += self.max_positions.unwrap_or(0) * h;
        }
        total
    }
}

/// Field access with errors that name config.json and the field.
struct Reader<'a> {
    path: PathBuf,
    obj: &'a Map<String, Value>,
}

impl Reader<'_> {
    fn err(&self, field: &str, msg: impl Into<String>) -> Error {
        Error::field(&self.path, field, msg)
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    fn first_key<'k>(&self, names: &[&'k str]) -> Option<&'k str> {
        names.iter().copied().find(|n| self.get(n).is_some())
    }

    /// A positive integer under any of `names`; required.
    fn usize_any(&self, names: &[&str]) -> Result<usize> {
        let key = self
            .first_key(names)
            .ok_or_else(|| self.err(names[0], "missing"))?;
        self.usize_at(key)
    }

    fn usize_at(&self, key: &str) -> Result<usize> {
        match self.get(key).and_then(Value::as_u64) {
            Some(n) if n > 0 => Ok(n as usize),
            _ => Err(self.err(key, "expected a positive integer")),
        }
    }

    fn opt_usize(&self, names: &[&str]) -> Result<Option<usize>> {
        match self.first_key(names) {
            Some(key) => self.usize_at(key).map(Some),
            None => Ok(None),
        }
    }

    fn opt_f64(&self, names: &[&str]) -> Result<Option<f64>> {
        match self.first_key(names) {
            Some(key) => match self.get(key).and_then(Value::as_f64) {
                Some(x) if x.is_finite() => Ok(Some(x)),
                _ => Err(self.err(key, "expected a number")),
            },
            None => Ok(None),
        }
    }

    fn opt_bool(&self, name: &str) -> Result<Option<bool>> {
        match self.get(name) {
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(name, "expected true or false")),
            None => Ok(None),
        }
    }

    fn opt_str(&self, names: &[&str]) -> Result<Option<String>> {
        match self.first_key(names) {
            Some(key) => match self.get(key).and_then(Value::as_str) {
                Some(s) => Ok(Some(s.to_string())),
                None => Err(self.err(key, "expected a string")),
            },
            None => Ok(None),
        }
    }

    fn token_ids(&self, name: &str) -> Result<Vec<u32>> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(|x| vec![x as u32])
                .ok_or_else(|| self.err(name, "expected a token id")),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_u64()
                        .map(|x| x as u32)
                        .ok_or_else(|| self.err(name, "expected token ids"))
                })
                .collect(),
            Some(_) => Err(self.err(name, "expected a token id or a list of them")),
        }
    }

    fn build(&self) -> Result<ModelConfig> {
        let model_type = self
            .opt_str(&["model_type"])?
            .ok_or_else(|| self.err("model_type", "missing"))?;
        let family = match model_type.as_str() {
            "llama" => Family::Llama,
            "mistral" => Family::Mistral,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            "gpt2" => Family::Gpt2,
            "gpt_neox" => Family::GptNeox,
            other => {
                return Err(self.err(
                    "model_type",
                    format!(
                        "unsupported model_type {other:?} (supported: llama, mistral, qwen2, qwen3, gpt2, gpt_neox)"
                    ),
                ));
            }
        };
        let gpt2 = family == Family::Gpt2;
        let neox = family == Family::GptNeox;

        let hidden_size = self.usize_any(&["hidden_size", "n_embd"])?;
        let n_layers = self.usize_any(&["num_hidden_layers", "n_layer"])?;
        let n_heads = self.usize_any(&["num_attention_heads", "n_head"])?;
        let n_kv_heads = self.opt_usize(&["num_key_value_heads"])?.unwrap_or(n_heads);
        if n_heads % n_kv_heads != 0 {
            return Err(self.err(
                "num_key_value_heads",
                format!("{n_kv_heads} does not divide num_attention_heads {n_heads}"),
            ));
        }
        let head_dim = match self.opt_usize(&["head_dim"])? {
            Some(d) => d,
            None => {
                if hidden_size % n_heads != 0 {
                    return Err(self.err(
                        "num_attention_heads",
                        format!("{n_heads} does not divide hidden_size {hidden_size} and no head_dim is given"),
                    ));
                }
                hidden_size / n_heads
            }
        };
        let intermediate_size = if gpt2 {
            self.opt_usize(&["n_inner"])?.unwrap_or(4 * hidden_size)
        } else {
            self.usize_any(&["intermediate_size"])?
        };
        let vocab_size = self.usize_any(&["vocab_size"])?;
        let max_positions = self.opt_usize(&["max_position_embeddings", "n_positions", "n_ctx"])?;

        let (norm, norm_eps_keys): (NormKind, &[&str]) = match family {
            Family::Gpt2 => (NormKind::LayerNorm, &["layer_norm_epsilon"]),
            Family::GptNeox => (NormKind::LayerNorm, &["layer_norm_eps"]),
            _ => (NormKind::RmsNorm, &["rms_norm_eps"]),
        };
        let default_eps = if matches!(norm, NormKind::LayerNorm) {
            1e-5
        } else {
            1e-6
        };
        let norm_eps = self.opt_f64(norm_eps_keys)?.unwrap_or(default_eps) as f32;

        let act_name = self
            .opt_str(&["hidden_act", "activation_function"])?
            .unwrap_or_else(|| if gpt2 { "gelu_new" } else { "silu" }.to_string());
        let act_key = self
            .first_key(&["hidden_act", "activation_function"])
            .unwrap_or("hidden_act");
        let activation = match act_name.as_str() {
            "silu" | "swish" => Activation::Silu,
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => return Err(self.err(act_key, format!("unsupported activation {other:?}"))),
        };

        let position = if gpt2 {
            PositionEncoding::Learned
        } else {
            PositionEncoding::Rope(self.rope(head_dim)?)
        };

        let attention_bias = self.opt_bool("attention_bias")?;
        let (qkv_bias, o_bias) = match family {
            Family::Gpt2 => (true, true),
            Family::GptNeox => {
                let b = attention_bias.unwrap_or(true);
                (b, b)
            }
            Family::Qwen2 => (true, false),
            _ => {
                let b = attention_bias.unwrap_or(false);
                (b, b)
            }
        };
        let mlp_bias = match family {
            Family::Gpt2 | Family::GptNeox => true,
            _ => self.opt_bool("mlp_bias")?.unwrap_or(false),
        };
        let tied_embeddings = self.opt_bool("tie_word_embeddings")?.unwrap_or(gpt2);
        let parallel_residual = neox && self.opt_bool("use_parallel_residual")?.unwrap_or(true);

        let mut attn_scale = 1.0 / (head_dim as f64).sqrt();
        if gpt2 && self.opt_bool("scale_attn_weights")? == Some(false) {
            attn_scale = 1.0;
        }
        let scale_attn_by_inverse_layer_idx =
            gpt2 && self.opt_bool("scale_attn_by_inverse_layer_idx")? == Some(true);

        let sliding_window = match family {
            Family::Mistral => self.opt_usize(&["sliding_window"])?,
            Family::Qwen2 | Family::Qwen3 => {
                if self.opt_bool("use_sliding_window")? == Some(true) {
                    self.opt_usize(&["sliding_window"])?
                } else {
                    None
                }
            }
            _ => None,
        };

        let eos_token_ids = self.token_ids("eos_token_id")?;
        let bos_token_id = self.token_ids("bos_token_id")?.first().copied();
        let layout = if self.get("rope_parameters").is_some() || self.get("dtype").is_some() {
            "5.x"
        } else {
            "4.x"
        };

        Ok(ModelConfig {
            family,
            hidden_size,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            intermediate_size,
            vocab_size,
            max_positions,
            norm,
            norm_eps,
            activation,
            gated_mlp: !(gpt2 || neox),
            position,
            qkv_bias,
            o_bias,
            mlp_bias,
            qk_norm: family == Family::Qwen3,
            parallel_residual,
            tied_embeddings,
            attn_scale: attn_scale as f32,
            scale_attn_by_inverse_layer_idx,
            sliding_window,
            bos_token_id,
            eos_token_ids,
            dtype: self.opt_str(&["dtype", "torch_dtype"])?,
            layout,
        })
    }

    /// Rotary parameters from either layout.
    fn rope(&self, head_dim: usize) -> Result<RopeConfig> {
        // 5.x: everything inside `rope_parameters`; 4.x: top-level fields plus `rope_scaling`.
        let params = match self.get("rope_parameters") {
            Some(Value::Object(map)) => Some(map),
            Some(_) => return Err(self.err("rope_parameters", "expected an object")),
            None => None,
        };
        let scaling_obj = match self.get("rope_scaling") {
            Some(Value::Object(map)) => Some(map),
            Some(_) => return Err(self.err("rope_scaling", "expected an object or null")),
            None => None,
        };
        let (scaling_src, scaling_field) = match (params, scaling_obj) {
            (Some(p), _) => (Some(p), "rope_parameters"),
            (None, Some(s)) => (Some(s), "rope_scaling"),
            (None, None) => (None, "rope_scaling"),
        };
        let sub = |key: &str| -> Result<Option<f64>> {
            match scaling_src
                .and_then(|m| m.get(key))
                .filter(|v| !v.is_null())
            {
                Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                    self.err(&format!("{scaling_field}.{key}"), "expected a number")
                }),
                None => Ok(None),
            }
        };

        let theta = match sub("rope_theta")? {
            Some(t) => t,
            None => self
                .opt_f64(&["rope_theta", "rotary_emb_base"])?
                .unwrap_or(10000.0),
        };
        if theta <= 0.0 {
            return Err(self.err("rope_theta", "must be positive"));
        }
        let partial = match sub("partial_rotary_factor")? {
            Some(p) => p,
            None => self
                .opt_f64(&["partial_rotary_factor", "rotary_pct"])?
                .unwrap_or(1.0),
        };
        if !(partial > 0.0 && partial <= 1.0) {
            return Err(self.err("partial_rotary_factor", "must be in (0, 1]"));
        }
        let rotary_dim = ((head_dim as f64) * partial) as usize;
        if rotary_dim == 0 || !rotary_dim.is_multiple_of(2) {
            return Err(self.err(
                "partial_rotary_factor",
                format!("gives {rotary_dim} rotary dimensions of head_dim {head_dim}; need a positive even number"),
            ));
        }
        if rotary_dim > MAX_ROTARY_DIM {
            return Err(self.err(
                "head_dim",
                format!(
                    "gives {rotary_dim} rotary dimensions; at most {} are supported",
                    MAX_ROTARY_DIM
                ),
            ));
        }

        let rope_type = match scaling_src {
            Some(m) => match m.get("rope_type").or_else(|| m.get("type")) {
                Some(Value::String(s)) => s.clone(),
                Some(_) => {
                    return Err(
                        self.err(&format!("{scaling_field}.rope_type"), "expected a string")
                    );
                }
                None => "default".to_string(),
            },
            None => "default".to_string(),
        };
        let need = |key: &str| -> Result<f64> {
            sub(key)?.ok_or_else(|| self.err(&format!("{scaling_field}.{key}"), "missing"))
        };
        let scaling = match rope_type.as_str() {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: need("factor")?,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: need("factor")?,
                low_freq_factor: need("low_freq_factor")?,
                high_freq_factor: need("high_freq_factor")?,
                original_max_position_embeddings: need("original_max_position_embeddings")?,
            },
            other => {
                return Err(self.err(
                    &format!("{scaling_field}.rope_type"),
                    format!("unsupported rope type {other:?} (supported: default, linear, llama3)"),
                ));
            }
        };
        Ok(RopeConfig {
            theta,
            rotary_dim,
            scaling,
        })
    }
}

#[cfg(test)]
mod tests;
