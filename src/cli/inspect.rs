//! `attnscope inspect MODEL`: architecture, parameter count, dtypes and tokenizer of a model directory,
//! read from config.json, the safetensors headers and the tokenizer files (weights are not loaded).

use crate::cli::InspectArgs;
use attnscope_core::Result;
use attnscope_core::config::{ModelConfig, PositionEncoding};
use attnscope_core::tokenizer::TextTokenizer;
use attnscope_core::weights::{WeightsInfo, inspect_weights};

/// Runs the `inspect` subcommand.
pub fn inspect(args: InspectArgs) -> Result<()> {
    let cfg = ModelConfig::from_dir(&args.model)?;
    let info = inspect_weights(&args.model)?;
    let tok = TextTokenizer::from_dir(&args.model)?;
    if args.json {
        print_json(&args, &cfg, &info, tok.as_ref());
    } else {
        print_text(&args, &cfg, &info, tok.as_ref());
    }
    Ok(())
}

/// The description as one JSON object.
fn print_json(
    args: &InspectArgs,
    cfg: &ModelConfig,
    info: &WeightsInfo,
    tok: Option<&TextTokenizer>,
) {
    let value = serde_json::json!({
        "path": args.model.display().to_string(),
        "architecture": cfg,
        "parameters": cfg.parameter_count(),
        "weights": info,
        "tokenizer": tok.as_ref().map(|t| serde_json::json!({
            "source": t.source().display().to_string(),
            "kind": t.kind(),
            "vocab_size": t.vocab_size(),
            "bos_id": t.bos_id(),
            "eos_ids": t.eos_ids(),
        })),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    );
}

/// The description as aligned lines.
fn print_text(
    args: &InspectArgs,
    cfg: &ModelConfig,
    info: &WeightsInfo,
    tok: Option<&TextTokenizer>,
) {
    println!("model        {}", args.model.display());
    print_architecture(cfg);
    println!("vocab        {}", cfg.vocab_size);
    println!(
        "parameters   {} ({:.1}M; {} stored scalars)",
        cfg.parameter_count(),
        cfg.parameter_count() as f64 / 1e6,
        info.stored_parameters
    );
    let dtypes: Vec<String> = info
        .dtypes
        .iter()
        .map(|(d, n)| format!("{d} ×{n}"))
        .collect();
    println!(
        "weights      {} file(s), tensors {}",
        info.files.len(),
        dtypes.join(", ")
    );
    match &tok {
        Some(t) => println!(
            "tokenizer    {} ({}), vocab {}, bos {:?}, eos {:?}",
            t.source().display(),
            t.kind(),
            t.vocab_size(),
            t.bos_id(),
            t.eos_ids()
        ),
        None => println!("tokenizer    none (use `run --input` with token ids)"),
    }
}

/// Family, shape, positions and block layout.
fn print_architecture(cfg: &ModelConfig) {
    println!(
        "family       {} (config.json layout {})",
        cfg.family.model_type(),
        cfg.layout
    );
    println!(
        "shape        {} layers, hidden {}, {} query heads / {} kv heads (group {}), head_dim {}, mlp {}",
        cfg.n_layers,
        cfg.hidden_size,
        cfg.n_heads,
        cfg.n_kv_heads,
        cfg.group_size(),
        cfg.head_dim,
        cfg.intermediate_size
    );
    let pos = match &cfg.position {
        PositionEncoding::Rope(r) => format!(
            "RoPE theta {} on {} of {} dims, scaling {:?}",
            r.theta, r.rotary_dim, cfg.head_dim, r.scaling
        ),
        PositionEncoding::Learned => "learned absolute positions".to_string(),
    };
    println!(
        "positions    {pos}; context {}",
        cfg.max_positions
            .map_or("unbounded".into(), |m| m.to_string())
    );
    println!(
        "blocks       {:?} eps {}, {:?}{}, {} residual, qkv bias {}, q/k norm {}, {} head{}",
        cfg.norm,
        cfg.norm_eps,
        cfg.activation,
        if cfg.gated_mlp { " gated MLP" } else { " MLP" },
        if cfg.parallel_residual {
            "parallel"
        } else {
            "sequential"
        },
        cfg.qkv_bias,
        cfg.qk_norm,
        if cfg.tied_embeddings {
            "tied"
        } else {
            "untied"
        },
        cfg.sliding_window
            .map_or(String::new(), |w| format!(", sliding window {w}"))
    );
}
