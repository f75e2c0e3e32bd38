//! Work done by a measurement, for throughput figures against a device's peak (formulas of the
//! `attnscope-bench/1` schema). Everything counts f32 (4 bytes), the CPU engine's compute dtype.

use attnscope_core::config::{ModelConfig, PositionEncoding};

/// Bytes per parameter / cached value of the compute dtype (f32).
pub const BYTES_F32: f64 = 4.0;

/// Parameters outside the token embedding, an untied output head and learned positions: the weights that
/// every token is multiplied through (blocks and final norm).
pub fn non_embedding_params(cfg: &ModelConfig) -> usize {
    let h = cfg.hidden_size;
    let mut embedding = cfg.vocab_size * h;
    if !cfg.tied_embeddings {
        embedding += cfg.vocab_size * h;
    }
    if cfg.position == PositionEncoding::Learned {
        embedding += cfg.max_positions.unwrap_or(0) * h;
    }
    cfg.parameter_count().saturating_sub(embedding)
}

/// Causal attention FLOPs of a prefill of `t` tokens: q·k and p·v, 2 FLOPs per multiply-add, over the
/// t(t+1)/2 visible (query, key) pairs of every head and layer: 2 · 2 · layers · heads · head_dim · t(t+1)/2.
pub fn prefill_attention_flops(cfg: &ModelConfig, t: usize) -> f64 {
    let pairs = t as f64 * (t as f64 + 1.0) / 2.0;
    4.0 * (cfg.n_layers * cfg.n_heads * cfg.head_dim) as f64 * pairs
}

/// All FLOPs of a prefill of `t` tokens: 2 · non-embedding parameters · t + attention FLOPs.
pub fn prefill_flops(cfg: &ModelConfig, t: usize) -> f64 {
    2.0 * non_embedding_params(cfg) as f64 * t as f64 + prefill_attention_flops(cfg, t)
}

/// Weight bytes read per decode step: the non-embedding parameters plus the output projection
/// (`vocab × hidden`, tied or not), in f32. The few embedding rows looked up are not counted.
pub fn decode_weight_bytes(cfg: &ModelConfig) -> f64 {
    (non_embedding_params(cfg) + cfg.vocab_size * cfg.hidden_size) as f64 * BYTES_F32
}

/// KV-cache bytes read over `steps` decode steps of `batch` sequences that start with `context` cached
/// slots: step s (0-based) reads keys and values of context + s + 1 slots (the new one included) in every
/// layer, 2 · layers · kv_heads · head_dim · slots · 4 bytes, summed over the batch.
pub fn decode_kv_bytes(cfg: &ModelConfig, batch: usize, context: usize, steps: usize) -> f64 {
    let per_slot = 2.0 * (cfg.n_layers * cfg.n_kv_heads * cfg.head_dim) as f64 * BYTES_F32;
    let slots: f64 = (0..steps).map(|s| (context + s + 1) as f64).sum();
    per_slot * slots * batch as f64
}

/// Mean bytes read per decode step: weights once per step (shared by the batch) plus the step's KV cache.
pub fn decode_bytes_per_step(cfg: &ModelConfig, batch: usize, context: usize, steps: usize) -> f64 {
    if steps == 0 {
        return 0.0;
    }
    decode_weight_bytes(cfg) + decode_kv_bytes(cfg, batch, context, steps) / steps as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use attnscope_core::model::random::named_config;

    #[test]
    fn non_embedding_params_of_named_shapes() {
        // llama-100m: 12 · (768·768·2 + 2·768·256 + 3·768·2048 + 2·768) + 768 (final norm)
        let l = named_config("llama-100m").unwrap();
        let per_layer = 2 * 768 * 768 + 2 * 768 * 256 + 3 * 768 * 2048 + 2 * 768;
        assert_eq!(non_embedding_params(&l), 12 * per_layer + 768);
        assert_eq!(
            non_embedding_params(&l) + 32000 * 768,
            l.parameter_count(),
            "tied: embedding counted once"
        );
        // gpt2: 124,439,808 − wte (50257·768) − wpe (1024·768) = 85,056,000
        let g = named_config("gpt2-124m").unwrap();
        assert_eq!(non_embedding_params(&g), 85_056_000);
        // untied: both tables removed
        let t = named_config("tinyllama-1.1b").unwrap();
        assert_eq!(
            non_embedding_params(&t),
            t.parameter_count() - 2 * 32000 * 2048
        );
    }

    #[test]
    fn prefill_flop_formula() {
        let l = named_config("llama-100m").unwrap();
        // t = 1: one (q, k) pair per head: 4 · 12 · 12 · 64
        assert_eq!(prefill_attention_flops(&l, 1), 4.0 * 12.0 * 12.0 * 64.0);
        assert_eq!(
            prefill_attention_flops(&l, 256),
            4.0 * 12.0 * 12.0 * 64.0 * 256.0 * 257.0 / 2.0
        );
        let expected =
            2.0 * non_embedding_params(&l) as f64 * 256.0 + prefill_attention_flops(&l, 256);
        assert_eq!(prefill_flops(&l, 256), expected);
    }

    #[test]
    fn decode_byte_formula() {
        let l = named_config("llama-100m").unwrap();
        assert_eq!(decode_weight_bytes(&l), l.parameter_count() as f64 * 4.0);
        // 2 · 12 layers · 4 kv heads · 64 · 4 bytes = 24576 bytes per slot; steps read 9 and 10 slots.
        assert_eq!(decode_kv_bytes(&l, 1, 8, 2), 24576.0 * 19.0);
        assert_eq!(decode_kv_bytes(&l, 3, 8, 2), 3.0 * 24576.0 * 19.0);
        assert_eq!(
            decode_bytes_per_step(&l, 3, 8, 2),
            decode_weight_bytes(&l) + 3.0 * 24576.0 * 19.0 / 2.0
        );
        assert_eq!(decode_bytes_per_step(&l, 1, 8, 0), 0.0);
    }
}
