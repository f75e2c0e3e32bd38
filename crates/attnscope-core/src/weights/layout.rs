//! Per-family tensor names → the common [`ModelWeights`] layout. The only place that knows checkpoint naming.

use crate::Error;
use crate::Result;
use crate::config::Family;
use crate::config::{ModelConfig, NormKind};
use crate::weights::checkpoint::{TensorLoader, with_tensors};
use crate::weights::{LayerWeights, Linear, ModelWeights, StorageDtype, WeightMatrix, WeightsInfo};
use std::path::{Path, PathBuf};

/// Options of [`load_weights_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Accept checkpoint tensors that the config does not use (reported as warnings instead of failing
    /// the load).
    pub allow_unused: bool,
}

/// How many unused tensor names an error or warning lists.
const UNUSED_SHOWN: usize = 5;

/// Checkpoint tensors that are legitimately never read: buffers older transformers versions saved (causal
/// masks, rotary inverse frequencies) and, for a tied config, a stored output head (the config wins, as in
/// transformers, which re-ties).
fn benign_unused(name: &str, cfg: &ModelConfig) -> bool {
    const BUFFERS: [&str; 5] = [
        "rotary_emb.inv_freq",
        ".attn.bias",
        ".attn.masked_bias",
        ".attention.bias",
        ".attention.masked_bias",
    ];
    if BUFFERS.iter().any(|b| name.ends_with(b)) {
        return true;
    }
    cfg.tied_embeddings && matches!(name, "lm_head.weight" | "embed_out.weight")
}

/// One line describing `unused` (non-empty): the count, the first few names and the file of the first.
fn describe_unused(unused: &[(String, PathBuf)], cfg: &ModelConfig) -> (PathBuf, String) {
    let names: Vec<String> = unused
        .iter()
        .take(UNUSED_SHOWN)
        .map(|(n, _)| format!("`{n}`"))
        .collect();
    let more = unused.len().saturating_sub(UNUSED_SHOWN);
    let more = if more > 0 {
        format!(" (and {more} more)")
    } else {
        String::new()
    };
    let msg = format!(
        "{} tensor(s) in the checkpoint are not used by config.json (family {:?}, {} layers): {}{more}",
        unused.len(),
        cfg.family,
        cfg.n_layers,
        names.join(", "),
    );
    (unused[0].1.clone(), msg)
}

/// Loads every weight the config calls for: the linear layers and embedding table as `storage`, one tensor
/// at a time from the mapped files, everything else as f32. With the default [`LoadOptions`]: checkpoint
/// tensors the config does not use are an error.
pub fn load_weights(
    dir: &Path,
    cfg: &ModelConfig,
    storage: StorageDtype,
) -> Result<(ModelWeights, WeightsInfo)> {
    load_weights_with(dir, cfg, storage, LoadOptions::default()).map(|(w, i, _)| (w, i))
}

/// [`load_weights`] with options; also returns warnings (one line each, naming the file), e.g. the unused
/// tensors accepted by `allow_unused`.
pub fn load_weights_with(
    dir: &Path,
    cfg: &ModelConfig,
    storage: StorageDtype,
    opts: LoadOptions,
) -> Result<(ModelWeights, WeightsInfo, Vec<String>)> {
    let (weights, info, unused) = with_tensors(dir, storage, |t| match cfg.family {
        Family::Gpt2 => load_gpt2(t, cfg),
        Family::GptNeox => load_neox(t, cfg),
        _ => load_llama_like(t, cfg),
    })?;
    let unused: Vec<(String, PathBuf)> = unused
        .into_iter()
        .filter(|(n, _)| !benign_unused(n, cfg))
        .collect();
    let mut warnings = Vec::new();
    if !unused.is_empty() {
        let (file, msg) = describe_unused(&unused, cfg);
        if !opts.allow_unused {
            return Err(Error::weights(
                file,
                format!("{msg}; is config.json right? (--allow-unused accepts them)"),
            ));
        }
        warnings.push(format!("{}: {msg}", file.display()));
    }
    Ok((weights, info, warnings))
}

/// Llama, Mistral, Qwen2, Qwen3: `model.layers.{i}.self_attn.{q,k,v,o}_proj`, `mlp.{gate,up,down}_proj`.
pub fn load_llama_like(t: &TensorLoader, cfg: &ModelConfig) -> Result<ModelWeights> {
    let p = t.pick_prefix("embed_tokens.weight", &["model.", ""]);
    let h = cfg.hidden_size;
    let q_dim = cfg.n_heads * cfg.head_dim;
    let kv_dim = cfg.n_kv_heads * cfg.head_dim;
    let embed = t.matrix(&format!("{p}embed_tokens.weight"), &[cfg.vocab_size, h])?;
    let mut layers = Vec::with_capacity(cfg.n_layers);
    for i in 0..cfg.n_layers {
        let l = format!("{p}layers.{i}");
        let qk_norm = |name: &str| -> Result<Option<crate::weights::Norm>> {
            if cfg.qk_norm {
                Ok(Some(t.norm(
                    &format!("{l}.self_attn.{name}"),
                    cfg.head_dim,
                    NormKind::RmsNorm,
                )?))
            } else {
                Ok(None)
            }
        };
        layers.push(LayerWeights {
            attn_norm: t.norm(&format!("{l}.input_layernorm"), h, cfg.norm)?,
            q: t.linear(&format!("{l}.self_attn.q_proj"), h, q_dim, cfg.qkv_bias)?,
            k: t.linear(&format!("{l}.self_attn.k_proj"), h, kv_dim, cfg.qkv_bias)?,
            v: t.linear(&format!("{l}.self_attn.v_proj"), h, kv_dim, cfg.qkv_bias)?,
            o: t.linear(&format!("{l}.self_attn.o_proj"), q_dim, h, cfg.o_bias)?,
            q_norm: qk_norm("q_norm")?,
            k_norm: qk_norm("k_norm")?,
            mlp_norm: t.norm(&format!("{l}.post_attention_layernorm"), h, cfg.norm)?,
            gate: Some(t.linear(
                &format!("{l}.mlp.gate_proj"),
                h,
                cfg.intermediate_size,
                cfg.mlp_bias,
            )?),
            up: t.linear(
                &format!("{l}.mlp.up_proj"),
                h,
                cfg.intermediate_size,
                cfg.mlp_bias,
            )?,
            down: t.linear(
                &format!("{l}.mlp.down_proj"),
                cfg.intermediate_size,
                h,
                cfg.mlp_bias,
            )?,
        });
    }
    let final_norm = t.norm(&format!("{p}norm"), h, cfg.norm)?;
    let lm_head = lm_head(t, cfg, "lm_head")?;
    Ok(ModelWeights {
        embed,
        pos_embed: None,
        layers,
        final_norm,
        lm_head,
    })
}

/// GPT-2: `transformer.h.{i}.attn.c_attn` etc., Conv1D weights stored `[in, out]`.
pub fn load_gpt2(t: &TensorLoader, cfg: &ModelConfig) -> Result<ModelWeights> {
    let p = t.pick_prefix("wte.weight", &["transformer.", ""]);
    let h = cfg.hidden_size;
    let inter = cfg.intermediate_size;
    let n_pos = cfg.max_positions.ok_or_else(|| {
        Error::input("config.json: field `n_positions`: missing (GPT-2 needs it)")
    })?;
    let embed = t.matrix(&format!("{p}wte.weight"), &[cfg.vocab_size, h])?;
    let pos_embed = WeightMatrix::from(t.get(&format!("{p}wpe.weight"), &[n_pos, h])?);
    let mut layers = Vec::with_capacity(cfg.n_layers);
    for i in 0..cfg.n_layers {
        let l = format!("{p}h.{i}");
        let c_attn = conv1d(t, &format!("{l}.attn.c_attn"), h, 3 * h)?;
        let [q, k, v] = split_rows(&c_attn, &[h, h, h]);
        layers.push(LayerWeights {
            attn_norm: t.norm(&format!("{l}.ln_1"), h, NormKind::LayerNorm)?,
            q,
            k,
            v,
            o: conv1d(t, &format!("{l}.attn.c_proj"), h, h)?,
            q_norm: None,
            k_norm: None,
            mlp_norm: t.norm(&format!("{l}.ln_2"), h, NormKind::LayerNorm)?,
            gate: None,
            up: conv1d(t, &format!("{l}.mlp.c_fc"), h, inter)?,
            down: conv1d(t, &format!("{l}.mlp.c_proj"), inter, h)?,
        });
    }
    let final_norm = t.norm(&format!("{p}ln_f"), h, NormKind::LayerNorm)?;
    let lm_head = lm_head(t, cfg, "lm_head")?;
    Ok(ModelWeights {
        embed,
        pos_embed: Some(pos_embed),
        layers,
        final_norm,
        lm_head,
    })
}

/// GPT-NeoX / Pythia: fused `attention.query_key_value` with rows grouped per head as `[heads, 3, head_dim]`.
pub fn load_neox(t: &TensorLoader, cfg: &ModelConfig) -> Result<ModelWeights> {
    let p = t.pick_prefix("embed_in.weight", &["gpt_neox.", ""]);
    let h = cfg.hidden_size;
    let hd = cfg.head_dim;
    let q_dim = cfg.n_heads * hd;
    let embed = t.matrix(&format!("{p}embed_in.weight"), &[cfg.vocab_size, h])?;
    let mut layers = Vec::with_capacity(cfg.n_layers);
    for i in 0..cfg.n_layers {
        let l = format!("{p}layers.{i}");
        let fused = t.linear(
            &format!("{l}.attention.query_key_value"),
            h,
            3 * q_dim,
            cfg.qkv_bias,
        )?;
        let [q, k, v] = split_neox_qkv(&fused, cfg.n_heads, hd);
        layers.push(LayerWeights {
            attn_norm: t.norm(&format!("{l}.input_layernorm"), h, NormKind::LayerNorm)?,
            q,
            k,
            v,
            o: t.linear(&format!("{l}.attention.dense"), q_dim, h, cfg.o_bias)?,
            q_norm: None,
            k_norm: None,
            mlp_norm: t.norm(
                &format!("{l}.post_attention_layernorm"),
                h,
                NormKind::LayerNorm,
            )?,
            gate: None,
            up: t.linear(
                &format!("{l}.mlp.dense_h_to_4h"),
                h,
                cfg.intermediate_size,
                cfg.mlp_bias,
            )?,
            down: t.linear(
                &format!("{l}.mlp.dense_4h_to_h"),
                cfg.intermediate_size,
                h,
                cfg.mlp_bias,
            )?,
        });
    }
    let final_norm = t.norm(&format!("{p}final_layer_norm"), h, NormKind::LayerNorm)?;
    let lm_head = lm_head(t, cfg, "embed_out")?;
    Ok(ModelWeights {
        embed,
        pos_embed: None,
        layers,
        final_norm,
        lm_head,
    })
}

/// The untied output head, or `None` (tied to the embeddings). A tied config whose checkpoint nevertheless
/// stores a head uses the stored one, as transformers does not: it re-ties, so we follow the config.
fn lm_head(t: &TensorLoader, cfg: &ModelConfig, name: &str) -> Result<Option<Linear>> {
    if cfg.tied_embeddings {
        return Ok(None);
    }
    t.linear(name, cfg.hidden_size, cfg.vocab_size, false)
        .map(Some)
}

/// A GPT-2 Conv1D (`weight [in, out]`, `bias [out]`) as a Linear `[out, in]`.
fn conv1d(t: &TensorLoader, prefix: &str, in_dim: usize, out_dim: usize) -> Result<Linear> {
    let w = t.get(&format!("{prefix}.weight"), &[in_dim, out_dim])?;
    let bias = t.get(&format!("{prefix}.bias"), &[out_dim])?;
    let mut weight = vec![0.0f32; in_dim * out_dim];
    for i in 0..in_dim {
        for o in 0..out_dim {
            weight[o * in_dim + i] = w[i * out_dim + o];
        }
    }
    Ok(Linear {
        weight: WeightMatrix::from_f32(weight, t.storage()),
        bias: Some(bias),
        in_dim,
        out_dim,
    })
}

/// Splits a Linear's output rows into consecutive blocks of the given sizes.
fn split_rows(lin: &Linear, sizes: &[usize; 3]) -> [Linear; 3] {
    let mut start = 0;
    sizes.map(|n| {
        let rows = start..start + n;
        start += n;
        Linear {
            weight: lin
                .weight
                .slice(rows.start * lin.in_dim..rows.end * lin.in_dim),
            bias: lin.bias.as_ref().map(|b| b[rows.clone()].to_vec()),
            in_dim: lin.in_dim,
            out_dim: n,
        }
    })
}

/// De-interleaves GPT-NeoX's fused qkv (rows `[head][q|k|v][d]`) into three `[heads*head_dim, in]` Linears
/// (in the fused weight's storage dtype).
fn split_neox_qkv(fused: &Linear, n_heads: usize, hd: usize) -> [Linear; 3] {
    let in_dim = fused.in_dim;
    let storage = fused.weight.dtype();
    let fused_weight = fused.weight.to_f32();
    [0usize, 1, 2].map(|which| {
        let mut weight = Vec::with_capacity(n_heads * hd * in_dim);
        let mut bias = fused
            .bias
            .as_ref()
            .map(|_| Vec::with_capacity(n_heads * hd));
        for head in 0..n_heads {
            let row0 = head * 3 * hd + which * hd;
            weight.extend_from_slice(&fused_weight[row0 * in_dim..(row0 + hd) * in_dim]);
            if let (Some(out), Some(b)) = (bias.as_mut(), fused.bias.as_ref()) {
                out.extend_from_slice(&b[row0..row0 + hd]);
            }
        }
        Linear {
            weight: WeightMatrix::from_f32(weight, storage),
            bias,
            in_dim,
            out_dim: n_heads * hd,
        }
    })
}
