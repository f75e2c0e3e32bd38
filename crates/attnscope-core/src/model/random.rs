//! Random-weight models of named shapes, built without any download, for benchmarks and tests.
//!
//! Shapes come from Hugging Face `config.json` text (transformers 4.x layout) parsed by the same
//! [`ModelConfig::from_json_str`] that reads real checkpoints. Weights are deterministic in the seed: a
//! splitmix64 stream per chunk of each tensor, seeded from (seed, tensor name, chunk index), so tensors are
//! filled in parallel and the result does not depend on the number of threads.
//!
//! Scales keep activations finite and attention non-degenerate over many layers: linear weights are uniform
//! with std `1/sqrt(in_dim)` (0.036 at 768 inputs, 0.022 at 2048), embeddings (and learned positions) std 0.02,
//! biases std 0.01, norm weights 1 and LayerNorm biases 0.

use crate::Error;
use crate::Result;
use crate::config::{ModelConfig, NormKind, PositionEncoding};
use crate::model::Model;
use crate::rng::{splitmix64, unit_f32};
use crate::weights::{LayerWeights, Linear, ModelWeights, Norm, WeightsInfo};
use rayon::prelude::*;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Names accepted by [`named_config`] and [`named_model`].
pub const NAMED_MODELS: &[&str] = &[
    "llama-100m",
    "gpt2-124m",
    "tinyllama-1.1b",
    "llama-3.2-1b",
    "qwen2.5-7b",
];

/// Llama-3-style toy: 768 hidden, 12 layers, 12 heads over 4 KV heads (head_dim 64), SiLU-gated MLP of 2048,
/// vocab 32000, RoPE theta 10000, tied embeddings: 100,092,672 parameters.
const LLAMA_100M: &str = r#"{
  "architectures": ["LlamaForCausalLM"],
  "model_type": "llama",
  "hidden_size": 768,
  "num_hidden_layers": 12,
  "num_attention_heads": 12,
  "num_key_value_heads": 4,
  "intermediate_size": 2048,
  "vocab_size": 32000,
  "max_position_embeddings": 2048,
  "hidden_act": "silu",
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "rope_scaling": null,
  "attention_bias": false,
  "mlp_bias": false,
  "tie_word_embeddings": true,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "torch_dtype": "float32"
}"#;

/// GPT-2 small: 768 hidden, 12 layers, 12 heads, vocab 50257, 1024 learned positions: 124,439,808 parameters.
const GPT2_124M: &str = r#"{
  "architectures": ["GPT2LMHeadModel"],
  "model_type": "gpt2",
  "n_embd": 768,
  "n_layer": 12,
  "n_head": 12,
  "n_ctx": 1024,
  "n_positions": 1024,
  "n_inner": null,
  "vocab_size": 50257,
  "activation_function": "gelu_new",
  "layer_norm_epsilon": 1e-05,
  "scale_attn_weights": true,
  "bos_token_id": 50256,
  "eos_token_id": 50256,
  "torch_dtype": "float32"
}"#;

/// TinyLlama 1.1B: 2048 hidden, 22 layers, 32 heads over 4 KV heads, MLP 5632, vocab 32000, untied:
/// 1,100,048,384 parameters.
const TINYLLAMA_1_1B: &str = r#"{
  "architectures": ["LlamaForCausalLM"],
  "model_type": "llama",
  "hidden_size": 2048,
  "num_hidden_layers": 22,
  "num_attention_heads": 32,
  "num_key_value_heads": 4,
  "intermediate_size": 5632,
  "vocab_size": 32000,
  "max_position_embeddings": 2048,
  "hidden_act": "silu",
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "rope_scaling": null,
  "tie_word_embeddings": false,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "torch_dtype": "bfloat16"
}"#;

/// Llama 3.2 1B: 2048 hidden, 16 layers, 32 heads over 8 KV heads (head_dim 64), MLP 8192, vocab 128256,
/// RoPE theta 500000 with llama3 scaling (32, 1, 4, 8192), tied: 1,235,814,400 parameters.
const LLAMA_3_2_1B: &str = r#"{
  "architectures": ["LlamaForCausalLM"],
  "model_type": "llama",
  "hidden_size": 2048,
  "num_hidden_layers": 16,
  "num_attention_heads": 32,
  "num_key_value_heads": 8,
  "head_dim": 64,
  "intermediate_size": 8192,
  "vocab_size": 128256,
  "max_position_embeddings": 131072,
  "hidden_act": "silu",
  "rms_norm_eps": 1e-05,
  "rope_theta": 500000.0,
  "rope_scaling": {
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "attention_bias": false,
  "mlp_bias": false,
  "tie_word_embeddings": true,
  "bos_token_id": 128000,
  "eos_token_id": 128001,
  "torch_dtype": "bfloat16"
}"#;

/// Qwen2.5 7B: 3584 hidden, 28 layers, 28 heads over 4 KV heads, MLP 18944, vocab 152064, q/k/v bias,
/// RoPE theta 1e6, untied: 7,615,616,512 parameters (30 GB in f32).
const QWEN2_5_7B: &str = r#"{
  "architectures": ["Qwen2ForCausalLM"],
  "model_type": "qwen2",
  "hidden_size": 3584,
  "num_hidden_layers": 28,
  "num_attention_heads": 28,
  "num_key_value_heads": 4,
  "intermediate_size": 18944,
  "vocab_size": 152064,
  "max_position_embeddings": 131072,
  "max_window_layers": 28,
  "hidden_act": "silu",
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "rope_scaling": null,
  "sliding_window": 131072,
  "use_sliding_window": false,
  "tie_word_embeddings": false,
  "bos_token_id": 151643,
  "eos_token_id": 151643,
  "torch_dtype": "bfloat16"
}"#;

/// The config of a named shape (see [`NAMED_MODELS`]), parsed from its `config.json` text.
pub fn named_config(name: &str) -> Result<ModelConfig> {
    ModelConfig::from_json_str(Path::new(name), named_config_json(name)?)
}

/// The `config.json` text of a named shape (see [`NAMED_MODELS`]).
pub fn named_config_json(name: &str) -> Result<&'static str> {
    Ok(match name {
        "llama-100m" => LLAMA_100M,
        "gpt2-124m" => GPT2_124M,
        "tinyllama-1.1b" => TINYLLAMA_1_1B,
        "llama-3.2-1b" => LLAMA_3_2_1B,
        "qwen2.5-7b" => QWEN2_5_7B,
        other => {
            return Err(Error::input(format!(
                "unknown random model {other:?} (known: {})",
                NAMED_MODELS.join(", ")
            )));
        }
    })
}

/// Elements per independently seeded chunk of a tensor.
const CHUNK: usize = 1 << 16;

/// FNV-1a hash of a tensor name: its stable id.
fn name_id(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// Deterministic tensor filler for one seed.
struct Filler {
    seed: u64,
}

impl Filler {
    /// `len` values uniform in `[-std·√3, std·√3]` (mean 0, standard deviation `std`).
    fn uniform(&self, name: &str, len: usize, std: f32) -> Vec<f32> {
        let half_width = std * 3f32.sqrt();
        let id = name_id(name);
        let mut out = vec![0.0f32; len];
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(chunk, values)| {
                let mut state = self.seed;
                let mut state = splitmix64(&mut state) ^ id;
                let mut state = splitmix64(&mut state) ^ chunk as u64;
                splitmix64(&mut state);
                for v in values {
                    // Top 24 bits → [0, 1) exactly representable in f32.
                    let u = unit_f32(splitmix64(&mut state));
                    *v = (2.0 * u - 1.0) * half_width;
                }
            });
        out
    }

    /// A linear layer `[out_dim, in_dim]` with std `1/sqrt(in_dim)` and, when asked, a small bias.
    fn linear(&self, name: &str, in_dim: usize, out_dim: usize, bias: bool) -> Linear {
        Linear {
            weight: self
                .uniform(
                    &format!("{name}.weight"),
                    in_dim * out_dim,
                    1.0 / (in_dim as f32).sqrt(),
                )
                .into(),
            bias: bias.then(|| self.uniform(&format!("{name}.bias"), out_dim, 0.01)),
            in_dim,
            out_dim,
        }
    }
}

/// A norm of width `dim`: weight 1, and bias 0 for LayerNorm.
fn unit_norm(dim: usize, kind: NormKind) -> Norm {
    Norm {
        weight: vec![1.0; dim],
        bias: (kind == NormKind::LayerNorm).then(|| vec![0.0; dim]),
    }
}

/// Random weights with every tensor `cfg` calls for, deterministic in `seed` (see the module docs for scales).
pub fn random_weights(cfg: &ModelConfig, seed: u64) -> ModelWeights {
    let f = Filler { seed };
    let h = cfg.hidden_size;
    let q_dim = cfg.n_heads * cfg.head_dim;
    let kv_dim = cfg.n_kv_heads * cfg.head_dim;
    let inter = cfg.intermediate_size;
    let embed = f.uniform("embed", cfg.vocab_size * h, 0.02).into();
    let pos_embed = (cfg.position == PositionEncoding::Learned).then(|| {
        f.uniform("pos_embed", cfg.max_positions.unwrap_or(0) * h, 0.02)
            .into()
    });
    let layers = (0..cfg.n_layers)
        .map(|i| {
            let l = format!("layers.{i}");
            LayerWeights {
                attn_norm: unit_norm(h, cfg.norm),
                q: f.linear(&format!("{l}.q"), h, q_dim, cfg.qkv_bias),
                k: f.linear(&format!("{l}.k"), h, kv_dim, cfg.qkv_bias),
                v: f.linear(&format!("{l}.v"), h, kv_dim, cfg.qkv_bias),
                o: f.linear(&format!("{l}.o"), q_dim, h, cfg.o_bias),
                q_norm: cfg
                    .qk_norm
                    .then(|| unit_norm(cfg.head_dim, NormKind::RmsNorm)),
                k_norm: cfg
                    .qk_norm
                    .then(|| unit_norm(cfg.head_dim, NormKind::RmsNorm)),
                mlp_norm: unit_norm(h, cfg.norm),
                gate: cfg
                    .gated_mlp
                    .then(|| f.linear(&format!("{l}.gate"), h, inter, cfg.mlp_bias)),
                up: f.linear(&format!("{l}.up"), h, inter, cfg.mlp_bias),
                down: f.linear(&format!("{l}.down"), inter, h, cfg.mlp_bias),
            }
        })
        .collect();
    let lm_head = (!cfg.tied_embeddings).then(|| f.linear("lm_head", h, cfg.vocab_size, false));
    ModelWeights {
        embed,
        pos_embed,
        layers,
        final_norm: unit_norm(h, cfg.norm),
        lm_head,
    }
}

/// Every tensor of `w`, in a fixed order, in f32.
fn tensors(w: &ModelWeights) -> Vec<Cow<'_, [f32]>> {
    fn linear<'a>(out: &mut Vec<Cow<'a, [f32]>>, l: &'a Linear) {
        out.push(l.weight.to_f32());
        out.extend(l.bias.as_deref().map(Cow::Borrowed));
    }
    fn norm<'a>(out: &mut Vec<Cow<'a, [f32]>>, n: &'a Norm) {
        out.push(Cow::Borrowed(&n.weight));
        out.extend(n.bias.as_deref().map(Cow::Borrowed));
    }
    let mut out: Vec<Cow<'_, [f32]>> = vec![w.embed.to_f32()];
    out.extend(w.pos_embed.as_ref().map(|p| p.to_f32()));
    for l in &w.layers {
        norm(&mut out, &l.attn_norm);
        for lin in [&l.q, &l.k, &l.v, &l.o] {
            linear(&mut out, lin);
        }
        for n in [&l.q_norm, &l.k_norm].into_iter().flatten() {
            norm(&mut out, n);
        }
        norm(&mut out, &l.mlp_norm);
        if let Some(gate) = &l.gate {
            linear(&mut out, gate);
        }
        linear(&mut out, &l.up);
        linear(&mut out, &l.down);
    }
    norm(&mut out, &w.final_norm);
    if let Some(head) = &w.lm_head {
        linear(&mut out, head);
    }
    out
}

/// A model with [`random_weights`]; its `info` lists the tensors as F32 and its index hash as
/// `random-seed-<seed>`, and its `dir` is `random-seed-<seed>` (no files exist there).
pub fn random_model(cfg: ModelConfig, seed: u64) -> Model {
    let weights = random_weights(&cfg, seed);
    let all = tensors(&weights);
    let info = WeightsInfo {
        files: Vec::new(),
        dtypes: BTreeMap::from([("F32".to_string(), all.len())]),
        stored_parameters: all.iter().map(|t| t.len()).sum(),
        index_sha256: format!("random-seed-{seed}"),
    };
    let dir = PathBuf::from(format!("random-seed-{seed}"));
    Model::from_parts(&dir, cfg, weights, info)
}

/// [`random_model`] of a named shape (see [`NAMED_MODELS`]); its `dir` is the name.
pub fn named_model(name: &str, seed: u64) -> Result<Model> {
    let mut model = random_model(named_config(name)?, seed);
    model.dir = PathBuf::from(name);
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{CaptureSpec, SequenceCapture};
    use crate::model::{KvCache, LogitRows};
    use crate::slots::SlotInfo;
    use crate::slots::Visibility;

    fn tiny(text: &str) -> ModelConfig {
        ModelConfig::from_json_str(Path::new("tiny"), text).unwrap()
    }

    const TINY_LLAMA: &str = r#"{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 3,
      "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 100,
      "rope_theta": 10000.0, "tie_word_embeddings": true}"#;
    const TINY_GPT2: &str = r#"{"model_type": "gpt2", "n_embd": 48, "n_layer": 2, "n_head": 3,
      "vocab_size": 50, "n_positions": 32}"#;
    const TINY_QWEN3: &str = r#"{"model_type": "qwen3", "hidden_size": 64, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32, "intermediate_size": 96,
      "vocab_size": 80, "rope_theta": 1000000.0, "tie_word_embeddings": false}"#;
    const TINY_NEOX: &str = r#"{"model_type": "gpt_neox", "hidden_size": 64, "num_hidden_layers": 2,
      "num_attention_heads": 4, "intermediate_size": 256, "vocab_size": 60, "rotary_pct": 0.25}"#;

    #[test]
    fn named_configs_parse_with_expected_sizes() {
        let expect: [(&str, f64, f64); 5] = [
            ("llama-100m", 0.9e8, 1.1e8),
            ("gpt2-124m", 1.2e8, 1.3e8),
            ("tinyllama-1.1b", 1.05e9, 1.15e9),
            ("llama-3.2-1b", 1.2e9, 1.3e9),
            ("qwen2.5-7b", 7.0e9, 8.0e9),
        ];
        assert_eq!(expect.len(), NAMED_MODELS.len());
        for (name, lo, hi) in expect {
            let cfg = named_config(name).unwrap();
            let n = cfg.parameter_count() as f64;
            assert!(lo <= n && n <= hi, "{name}: {n} parameters");
            assert_eq!(cfg.layout, "4.x");
        }
        // Exact counts quoted in the doc comments.
        let count = |name| named_config(name).unwrap().parameter_count();
        assert_eq!(count("llama-100m"), 100_092_672);
        assert_eq!(count("gpt2-124m"), 124_439_808);
        assert_eq!(count("tinyllama-1.1b"), 1_100_048_384);
        assert_eq!(count("llama-3.2-1b"), 1_235_814_400);
        assert_eq!(count("qwen2.5-7b"), 7_615_616_512);

        let l = named_config("llama-3.2-1b").unwrap();
        assert!(l.tied_embeddings && l.head_dim == 64 && l.n_kv_heads == 8);
        let PositionEncoding::Rope(r) = &l.position else {
            panic!("rope expected")
        };
        assert_eq!(r.theta, 500000.0);
        assert!(matches!(
            r.scaling,
            crate::config::RopeScaling::Llama3 { factor, original_max_position_embeddings, .. }
                if factor == 32.0 && original_max_position_embeddings == 8192.0
        ));
        let q = named_config("qwen2.5-7b").unwrap();
        assert!(q.qkv_bias && !q.o_bias && !q.tied_embeddings && q.sliding_window.is_none());
        let g = named_config("gpt2-124m").unwrap();
        assert_eq!(g.position, PositionEncoding::Learned);
        assert_eq!((g.max_positions, g.intermediate_size), (Some(1024), 3072));
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let err = named_config("llama-9000b").unwrap_err().to_string();
        for name in NAMED_MODELS {
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn stored_parameters_match_the_config_count() {
        for text in [TINY_LLAMA, TINY_GPT2, TINY_QWEN3, TINY_NEOX] {
            let cfg = tiny(text);
            let expected = cfg.parameter_count();
            let m = random_model(cfg, 7);
            assert_eq!(m.info.stored_parameters, expected, "{:?}", m.cfg.family);
            assert_eq!(m.info.index_sha256, "random-seed-7");
        }
        let m = random_model(tiny(TINY_QWEN3), 1);
        assert!(m.weights.layers[0].q_norm.is_some() && m.weights.lm_head.is_some());
        let m = random_model(tiny(TINY_GPT2), 1);
        assert!(m.weights.pos_embed.is_some() && m.weights.layers[0].gate.is_none());
        assert!(
            m.weights
                .final_norm
                .bias
                .as_ref()
                .unwrap()
                .iter()
                .all(|&b| b == 0.0)
        );
        let m = random_model(tiny(TINY_LLAMA), 1);
        assert!(m.weights.lm_head.is_none() && m.weights.layers[0].gate.is_some());
    }

    #[test]
    fn tiny_models_run_with_finite_logits() {
        for text in [TINY_LLAMA, TINY_GPT2, TINY_QWEN3, TINY_NEOX] {
            let model = random_model(tiny(text), 3);
            let cfg = &model.cfg;
            let slots: Vec<SlotInfo> = (0..8)
                .map(|i| SlotInfo::prompt((i * 7 % cfg.vocab_size) as u32, i as i64, -1))
                .collect();
            let mut cache = KvCache::new(cfg, 8, Visibility::Visible);
            let spec = CaptureSpec {
                stats: true,
                weights: true,
                ..CaptureSpec::default()
            };
            let mut cap = SequenceCapture::new(&spec, cfg, 8);
            let logits = model
                .forward(&mut cache, &slots, Some(&mut cap), LogitRows::All)
                .unwrap();
            assert_eq!(logits.len(), 8 * cfg.vocab_size);
            assert!(logits.iter().all(|x| x.is_finite()), "{:?}", cfg.family);
            // Random logits are not all equal, and attention is not one-hot everywhere.
            let spread = logits.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
            assert!(spread > 1e-3, "{:?}: logits all ~0", cfg.family);
            let res = cap.finish(cache.slots());
            let last = &res.layers[res.layers.len() - 1].stats[0].rows[7];
            assert!(last.entropy > 0.1 && last.entropy.is_finite(), "{last:?}");
        }
    }

    #[test]
    fn same_seed_same_weights_other_seed_differs() {
        let cfg = tiny(TINY_QWEN3);
        let a = random_weights(&cfg, 11);
        let b = random_weights(&cfg, 11);
        let c = random_weights(&cfg, 12);
        let (ta, tb, tc) = (tensors(&a), tensors(&b), tensors(&c));
        assert_eq!(ta.len(), tb.len());
        assert!(ta.iter().zip(&tb).all(|(x, y)| x == y));
        // Every random tensor changes with the seed (norm weights are constant 1).
        let changed = ta.iter().zip(&tc).filter(|(x, y)| x != y).count();
        assert_eq!(
            changed,
            1 + 2 * 4 + 2 * 3 + 1,
            "embed, q/k/v/o and gate/up/down per layer, lm_head"
        );
        assert_ne!(a.embed, c.embed);
        assert_ne!(a.layers[1].down.weight, c.layers[1].down.weight);
        // Distinct tensors of one model are not copies of each other.
        assert_ne!(
            a.layers[0].q.weight.to_f32()[..64],
            a.layers[1].q.weight.to_f32()[..64]
        );
        // Large tensors (several chunks) differ between chunks and have the requested scale.
        let f = Filler { seed: 5 };
        let big = f.uniform("big", 3 * CHUNK + 17, 0.5);
        assert_ne!(big[..CHUNK], big[CHUNK..2 * CHUNK]);
        let n = big.len() as f64;
        let mean = big.iter().map(|&x| x as f64).sum::<f64>() / n;
        let std = (big.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(
            mean.abs() < 0.01 && (std - 0.5).abs() < 0.01,
            "{mean} {std}"
        );
        assert!(big.iter().all(|x| x.abs() <= 0.5 * 3f32.sqrt()));
    }

    /// Builds the 1.2B-parameter shape (4.9 GB of f32): `cargo test --lib builds_llama_3_2_1b -- --ignored`.
    #[test]
    #[ignore = "allocates 4.9 GB"]
    fn builds_llama_3_2_1b() {
        let start = std::time::Instant::now();
        let m = named_model("llama-3.2-1b", 0).unwrap();
        assert_eq!(m.info.stored_parameters, m.cfg.parameter_count());
        eprintln!("llama-3.2-1b built in {:?}", start.elapsed());
    }
}
