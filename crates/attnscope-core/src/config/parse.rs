//! Parsing config.json: a [`Reader`] over the JSON object whose every error names the file and the field,
//! and the steps that turn it into a `ModelConfig` (family, sizes, norm, activation, RoPE, biases, window).

use super::limits::{MAX_HEADS, MAX_LAYERS, MAX_POSITIONS, MAX_VOCAB, MAX_WIDTH};
use super::{
    Activation, Family, MAX_ROTARY_DIM, ModelConfig, NormKind, PositionEncoding, RopeConfig,
    RopeScaling,
};
use crate::Error;
use crate::Result;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Field access with errors that name config.json and the field.
pub(super) struct Reader<'a> {
    path: PathBuf,
    obj: &'a Map<String, Value>,
}

/// The sizes of a config.
struct Dims {
    hidden_size: usize,
    n_layers: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    intermediate_size: usize,
    vocab_size: usize,
    max_positions: Option<usize>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(path: &Path, obj: &'a Map<String, Value>) -> Reader<'a> {
        Reader {
            path: path.to_path_buf(),
            obj,
        }
    }

    fn err(&self, field: &str, msg: impl Into<String>) -> Error {
        Error::field(&self.path, field, msg)
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    fn first_key<'k>(&self, names: &[&'k str]) -> Option<&'k str> {
        names.iter().copied().find(|n| self.get(n).is_some())
    }

    /// A positive integer of at most `max` under any of `names`; required.
    fn usize_any(&self, names: &[&str], max: usize) -> Result<usize> {
        let key = self
            .first_key(names)
            .ok_or_else(|| self.err(names[0], "missing"))?;
        self.usize_at(key, max)
    }

    fn usize_at(&self, key: &str, max: usize) -> Result<usize> {
        match self.get(key).and_then(Value::as_u64) {
            Some(n) if n > max as u64 => {
                Err(self.err(key, format!("{n} is above the supported maximum of {max}")))
            }
            Some(n) if n > 0 => Ok(n as usize),
            _ => Err(self.err(key, "expected a positive integer")),
        }
    }

    fn opt_usize(&self, names: &[&str], max: usize) -> Result<Option<usize>> {
        match self.first_key(names) {
            Some(key) => self.usize_at(key, max).map(Some),
            None => Ok(None),
        }
    }

    /// A number under any of `names` that is finite, positive and still positive once rounded to f32 (the
    /// precision the engine computes in); `None` when absent.
    fn opt_positive(&self, names: &[&str]) -> Result<Option<f64>> {
        let Some(key) = self.first_key(names) else {
            return Ok(None);
        };
        let x = self.opt_f64(&[key])?.unwrap_or(f64::NAN);
        check_positive(x).map(Some).map_err(|m| self.err(key, m))
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

    /// Token ids under `name` (one or a list), each below `vocab_size` (so within u32).
    fn token_ids(&self, name: &str, vocab_size: usize) -> Result<Vec<u32>> {
        let id = |v: &Value| match v.as_u64() {
            Some(x) if x < vocab_size as u64 => Ok(x as u32),
            Some(x) => Err(self.err(
                name,
                format!("token id {x} is outside the vocabulary (vocab_size {vocab_size})"),
            )),
            None => Err(self.err(name, "expected a token id (a non-negative integer)")),
        };
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(id).collect(),
            Some(v @ Value::Number(_)) => id(v).map(|x| vec![x]),
            Some(_) => Err(self.err(name, "expected a token id or a list of them")),
        }
    }

    /// The whole config, field by field in a fixed order (so the first bad field is the one reported).
    pub(super) fn build(&self) -> Result<ModelConfig> {
        let family = self.family()?;
        let (gpt2, neox) = (family == Family::Gpt2, family == Family::GptNeox);
        let dims = self.dims(gpt2)?;
        let (norm, norm_eps) = self.norm(family)?;
        let activation = self.activation(gpt2)?;
        let position = if gpt2 {
            PositionEncoding::Learned
        } else {
            PositionEncoding::Rope(self.rope(dims.head_dim)?)
        };
        let (qkv_bias, o_bias, mlp_bias) = self.biases(family)?;
        let tied_embeddings = self.opt_bool("tie_word_embeddings")?.unwrap_or(gpt2);
        let parallel_residual = neox && self.opt_bool("use_parallel_residual")?.unwrap_or(true);
        let mut attn_scale = 1.0 / (dims.head_dim as f64).sqrt();
        if gpt2 && self.opt_bool("scale_attn_weights")? == Some(false) {
            attn_scale = 1.0;
        }
        let scale_attn_by_inverse_layer_idx =
            gpt2 && self.opt_bool("scale_attn_by_inverse_layer_idx")? == Some(true);
        let sliding_window = self.sliding_window(family)?;
        let eos_token_ids = self.token_ids("eos_token_id", dims.vocab_size)?;
        let bos_token_id = self
            .token_ids("bos_token_id", dims.vocab_size)?
            .first()
            .copied();
        let layout = if self.get("rope_parameters").is_some() || self.get("dtype").is_some() {
            "5.x"
        } else {
            "4.x"
        };
        Ok(ModelConfig {
            family,
            hidden_size: dims.hidden_size,
            n_layers: dims.n_layers,
            n_heads: dims.n_heads,
            n_kv_heads: dims.n_kv_heads,
            head_dim: dims.head_dim,
            intermediate_size: dims.intermediate_size,
            vocab_size: dims.vocab_size,
            max_positions: dims.max_positions,
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

    fn family(&self) -> Result<Family> {
        let model_type = self
            .opt_str(&["model_type"])?
            .ok_or_else(|| self.err("model_type", "missing"))?;
        match model_type.as_str() {
            "llama" => Ok(Family::Llama),
            "mistral" => Ok(Family::Mistral),
            "qwen2" => Ok(Family::Qwen2),
            "qwen3" => Ok(Family::Qwen3),
            "gpt2" => Ok(Family::Gpt2),
            "gpt_neox" => Ok(Family::GptNeox),
            other => Err(self.err(
                "model_type",
                format!(
                    "unsupported model_type {other:?} (supported: llama, mistral, qwen2, qwen3, gpt2, gpt_neox)"
                ),
            )),
        }
    }

    /// Sizes: hidden, layers, heads (query and key/value), head dim, MLP width, vocabulary, context.
    fn dims(&self, gpt2: bool) -> Result<Dims> {
        let hidden_size = self.usize_any(&["hidden_size", "n_embd"], MAX_WIDTH)?;
        let n_layers = self.usize_any(&["num_hidden_layers", "n_layer"], MAX_LAYERS)?;
        let n_heads = self.usize_any(&["num_attention_heads", "n_head"], MAX_HEADS)?;
        let n_kv_heads = self
            .opt_usize(&["num_key_value_heads"], MAX_HEADS)?
            .unwrap_or(n_heads);
        if n_heads % n_kv_heads != 0 {
            return Err(self.err(
                "num_key_value_heads",
                format!("{n_kv_heads} does not divide num_attention_heads {n_heads}"),
            ));
        }
        let head_dim = match self.opt_usize(&["head_dim"], MAX_WIDTH)? {
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
            self.opt_usize(&["n_inner"], MAX_WIDTH)?
                .unwrap_or(4 * hidden_size)
        } else {
            self.usize_any(&["intermediate_size"], MAX_WIDTH)?
        };
        Ok(Dims {
            hidden_size,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            intermediate_size,
            vocab_size: self.usize_any(&["vocab_size"], MAX_VOCAB)?,
            max_positions: self.opt_usize(
                &["max_position_embeddings", "n_positions", "n_ctx"],
                MAX_POSITIONS,
            )?,
        })
    }

    /// The norm kind of the family and its epsilon.
    fn norm(&self, family: Family) -> Result<(NormKind, f32)> {
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
        Ok((
            norm,
            self.opt_positive(norm_eps_keys)?.unwrap_or(default_eps) as f32,
        ))
    }

    fn activation(&self, gpt2: bool) -> Result<Activation> {
        let act_name = self
            .opt_str(&["hidden_act", "activation_function"])?
            .unwrap_or_else(|| if gpt2 { "gelu_new" } else { "silu" }.to_string());
        let act_key = self
            .first_key(&["hidden_act", "activation_function"])
            .unwrap_or("hidden_act");
        match act_name.as_str() {
            "silu" | "swish" => Ok(Activation::Silu),
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => Err(self.err(act_key, format!("unsupported activation {other:?}"))),
        }
    }

    /// (q/k/v bias, output bias, MLP bias) as the family and the config say.
    fn biases(&self, family: Family) -> Result<(bool, bool, bool)> {
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
        Ok((qkv_bias, o_bias, mlp_bias))
    }

    fn sliding_window(&self, family: Family) -> Result<Option<usize>> {
        match family {
            Family::Mistral => self.opt_usize(&["sliding_window"], MAX_POSITIONS),
            Family::Qwen2 | Family::Qwen3 => {
                if self.opt_bool("use_sliding_window")? == Some(true) {
                    self.opt_usize(&["sliding_window"], MAX_POSITIONS)
                } else {
                    Ok(None)
                }
            }
            _ => Ok(None),
        }
    }

    /// Rotary parameters from either layout.
    fn rope(&self, head_dim: usize) -> Result<RopeConfig> {
        let src = self.rope_source()?;
        let theta = match self.rope_number(&src, "rope_theta")? {
            Some(t) => {
                check_positive(t).map_err(|m| self.err(&format!("{}.rope_theta", src.field), m))?
            }
            None => self
                .opt_positive(&["rope_theta", "rotary_emb_base"])?
                .unwrap_or(10000.0),
        };
        let rotary_dim = self.rotary_dim(&src, head_dim)?;
        let scaling = self.rope_scaling(&src)?;
        Ok(RopeConfig {
            theta,
            rotary_dim,
            scaling,
        })
    }

    /// Where the rotary fields live: 5.x keeps everything inside `rope_parameters`; 4.x has top-level
    /// fields plus `rope_scaling`.
    fn rope_source(&self) -> Result<RopeSource<'_>> {
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
        Ok(match (params, scaling_obj) {
            (Some(p), _) => RopeSource {
                map: Some(p),
                field: "rope_parameters",
            },
            (None, s) => RopeSource {
                map: s,
                field: "rope_scaling",
            },
        })
    }

    /// A number of the rotary object (`None` when absent or null).
    fn rope_number(&self, src: &RopeSource, key: &str) -> Result<Option<f64>> {
        match src.map.and_then(|m| m.get(key)).filter(|v| !v.is_null()) {
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(&format!("{}.{key}", src.field), "expected a number")),
            None => Ok(None),
        }
    }

    /// The rotated dimensions of each head: `head_dim · partial_rotary_factor`, positive, even, bounded.
    fn rotary_dim(&self, src: &RopeSource, head_dim: usize) -> Result<usize> {
        let partial = match self.rope_number(src, "partial_rotary_factor")? {
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
        Ok(rotary_dim)
    }

    /// The frequency scaling (`rope_type` default, linear or llama3, with its parameters).
    fn rope_scaling(&self, src: &RopeSource) -> Result<RopeScaling> {
        let field = src.field;
        let rope_type = match src.map {
            Some(m) => match m.get("rope_type").or_else(|| m.get("type")) {
                Some(Value::String(s)) => s.clone(),
                Some(_) => {
                    return Err(self.err(&format!("{field}.rope_type"), "expected a string"));
                }
                None => "default".to_string(),
            },
            None => "default".to_string(),
        };
        // Every scaling parameter divides or scales a frequency: positive, finite, non-zero in f32.
        let need = |key: &str| -> Result<f64> {
            let at = format!("{field}.{key}");
            let x = self
                .rope_number(src, key)?
                .ok_or_else(|| self.err(&at, "missing"))?;
            check_positive(x).map_err(|m| self.err(&at, m))
        };
        match rope_type.as_str() {
            "default" => Ok(RopeScaling::None),
            "linear" => Ok(RopeScaling::Linear {
                factor: need("factor")?,
            }),
            "llama3" => Ok(RopeScaling::Llama3 {
                factor: need("factor")?,
                low_freq_factor: need("low_freq_factor")?,
                high_freq_factor: need("high_freq_factor")?,
                original_max_position_embeddings: need("original_max_position_embeddings")?,
            }),
            other => Err(self.err(
                &format!("{field}.rope_type"),
                format!("unsupported rope type {other:?} (supported: default, linear, llama3)"),
            )),
        }
    }
}

/// `x` when it is finite, positive and still positive in f32; else what is wrong with it.
fn check_positive(x: f64) -> std::result::Result<f64, String> {
    if !(x.is_finite() && x > 0.0) {
        Err(format!("must be a positive finite number (got {x})"))
    } else if x as f32 == 0.0 {
        Err(format!("{x} is too small: it is 0 in f32"))
    } else {
        Ok(x)
    }
}

/// The object holding a config's rotary fields, and its name for errors.
struct RopeSource<'m> {
    map: Option<&'m Map<String, Value>>,
    field: &'static str,
}
