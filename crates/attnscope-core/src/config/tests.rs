use super::*;

fn parse(text: &str) -> Result<ModelConfig> {
    ModelConfig::from_json_str(Path::new("config.json"), text)
}

const LLAMA_4X: &str = r#"{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
  "num_attention_heads": 8, "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 100,
  "rope_theta": 500000.0, "torch_dtype": "bfloat16",
  "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192}}"#;

#[test]
fn reads_the_4x_layout() {
    let c = parse(LLAMA_4X).unwrap();
    assert_eq!(c.layout, "4.x");
    assert_eq!(
        (c.n_heads, c.n_kv_heads, c.head_dim, c.group_size()),
        (8, 2, 8, 4)
    );
    assert_eq!(c.dtype.as_deref(), Some("bfloat16"));
    assert!(!c.tied_embeddings, "llama defaults to an untied head");
    let PositionEncoding::Rope(r) = &c.position else {
        panic!("rope expected")
    };
    assert_eq!(r.theta, 500000.0);
    assert!(matches!(r.scaling, RopeScaling::Llama3 { factor, .. } if factor == 32.0));
}

#[test]
fn reads_the_5x_layout_with_partial_rotary() {
    let text = r#"{"model_type": "gpt_neox", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
      "intermediate_size": 256, "vocab_size": 100, "dtype": "float16", "layer_norm_eps": 1e-5,
      "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000, "partial_rotary_factor": 0.25}}"#;
    let c = parse(text).unwrap();
    assert_eq!(c.layout, "5.x");
    assert!(c.parallel_residual && c.qkv_bias && !c.tied_embeddings && !c.gated_mlp);
    let PositionEncoding::Rope(r) = &c.position else {
        panic!("rope expected")
    };
    assert_eq!((r.rotary_dim, r.theta), (4, 10000.0));
    assert_eq!(r.scaling, RopeScaling::Linear { factor: 2.0 });
}

#[test]
fn reads_neox_4x_rotary_fields_and_gpt2() {
    let neox = r#"{"model_type": "gpt_neox", "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
      "intermediate_size": 256, "vocab_size": 100, "rotary_pct": 0.5, "rotary_emb_base": 20000,
      "use_parallel_residual": false}"#;
    let c = parse(neox).unwrap();
    let PositionEncoding::Rope(r) = &c.position else {
        panic!("rope expected")
    };
    assert_eq!((r.rotary_dim, r.theta), (8, 20000.0));
    assert!(!c.parallel_residual);
    let gpt2 = r#"{"model_type": "gpt2", "n_embd": 48, "n_layer": 2, "n_head": 3, "vocab_size": 50, "n_positions": 64}"#;
    let c = parse(gpt2).unwrap();
    assert_eq!(c.position, PositionEncoding::Learned);
    assert_eq!(
        (c.intermediate_size, c.head_dim, c.activation),
        (192, 16, Activation::GeluTanh)
    );
    assert!(c.tied_embeddings && c.qkv_bias && c.norm == NormKind::LayerNorm);
}

#[test]
fn errors_name_the_field() {
    let e = parse(r#"{"model_type": "bert"}"#).unwrap_err().to_string();
    assert!(
        e.contains("config.json") && e.contains("model_type") && e.contains("bert"),
        "{e}"
    );
    let e = parse(r#"{"model_type": "llama", "hidden_size": 64}"#)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("num_hidden_layers") && e.contains("missing"),
        "{e}"
    );
    let e = parse(r#"{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 8,
        "num_key_value_heads": 3, "intermediate_size": 8, "vocab_size": 9}"#)
    .unwrap_err()
    .to_string();
    assert!(e.contains("num_key_value_heads"), "{e}");
    let e = parse("{ not json").unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("JSON"), "{e}");
    let e = parse(&LLAMA_4X.replace("\"llama3\"", "\"yarn\""))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("rope_scaling.rope_type") && e.contains("yarn"),
        "{e}"
    );
    let e = parse(&LLAMA_4X.replace("\"hidden_size\": 64", "\"hidden_size\": \"64\""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("hidden_size"), "{e}");
}
