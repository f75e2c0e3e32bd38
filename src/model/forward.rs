//! The forward pass, one code path for every family: architecture differences are flags of `ModelConfig`.
//! Reads top to bottom: embed → blocks (norm, q/k/v, q/k norm, RoPE, cache write, attention, output,
//! residual, MLP) → final norm → logits.

use crate::capture::SequenceCapture;
use crate::config::PositionEncoding;
use crate::model::Model;
use crate::model::attention::{AttentionInput, attention};
use crate::model::kv_cache::KvCache;
use crate::model::ops::{activate, add_in_place, linear, norm, norm_row, project};
use crate::slots::AttentionMask;
use crate::slots::SlotInfo;
use crate::{Error, Result};

/// Which rows of logits the caller wants back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitRows {
    /// One row per new slot.
    All,
    /// Only the last new slot.
    Last,
    /// None (e.g. capture-only prefill).
    None,
}

/// One sequence's part of a batched forward: its cache, the slots to append, and its recorders.
pub struct BatchItem<'a> {
    pub cache: &'a mut KvCache,
    pub new: &'a [SlotInfo],
    pub capture: Option<&'a mut SequenceCapture>,
}

impl Model {
    /// Appends `new` slots to `cache`, runs them through the model, records attention into `capture`,
    /// and returns logits `[rows, vocab]` for the rows `logit_rows` asks for.
    pub fn forward(
        &self,
        cache: &mut KvCache,
        new: &[SlotInfo],
        capture: Option<&mut SequenceCapture>,
        logit_rows: LogitRows,
    ) -> Result<Vec<f32>> {
        let mut items = [BatchItem {
            cache,
            new,
            capture,
        }];
        let mut out = self.forward_batch(&mut items, logit_rows)?;
        Ok(out.pop().unwrap_or_default())
    }

    /// One forward pass over several sequences: their new slots are stacked so that every weight matrix
    /// is read once per call (batched decode), while attention runs per sequence over its own cache.
    /// Returns one logits buffer per item.
    pub fn forward_batch(
        &self,
        items: &mut [BatchItem],
        logit_rows: LogitRows,
    ) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.cfg;
        for item in items.iter() {
            if item.new.is_empty() {
                return Err(Error::input("forward: no tokens"));
            }
            self.check_slots(item.new)?;
            let needed = item.cache.len() + item.new.len();
            if needed > item.cache.capacity() {
                return Err(Error::input(format!(
                    "sequence of {needed} slots exceeds the KV cache capacity {}",
                    item.cache.capacity()
                )));
            }
        }
        if let Some(gpu) = &self.gpu {
            return gpu.forward_batch(cfg, items, logit_rows);
        }
        if items.iter().any(|i| i.cache.device.is_some()) {
            return Err(Error::input(
                "forward: the KV cache lives on the GPU but the model runs on the CPU",
            ));
        }
        // Row ranges of each item in the stacked activations, and where its new slots start in its cache.
        let mut ranges = Vec::with_capacity(items.len());
        let mut starts = Vec::with_capacity(items.len());
        let mut n = 0;
        for item in items.iter_mut() {
            ranges.push(n..n + item.new.len());
            n += item.new.len();
            starts.push(item.cache.len());
            let pushed = item.cache.push_slots(item.new);
            debug_assert!(pushed, "capacity was checked above");
        }
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let kv_dim = cfg.n_kv_heads * hd;
        let q_dim = cfg.n_heads * hd;
        let slots: Vec<SlotInfo> = items.iter().flat_map(|i| i.new.iter().copied()).collect();
        let positions: Vec<i64> = slots.iter().map(|s| s.position).collect();

        // Embeddings (+ learned positions).
        let mut x = vec![0.0f32; n * h];
        for (row, slot) in x.chunks_mut(h).zip(&slots) {
            let t = slot.token as usize;
            row.copy_from_slice(&self.weights.embed[t * h..(t + 1) * h]);
            if let Some(wpe) = &self.weights.pos_embed {
                let p = slot.position as usize;
                row.iter_mut()
                    .zip(&wpe[p * h..(p + 1) * h])
                    .for_each(|(a, b)| *a += b);
            }
        }

        let (mut normed, mut q, mut k, mut v) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut attn, mut o, mut up, mut gate, mut mlp) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (l, lw) in self.weights.layers.iter().enumerate() {
            // Attention block.
            norm(&x, &lw.attn_norm, cfg.norm, cfg.norm_eps, &mut normed);
            linear(&normed, n, &lw.q, &mut q);
            linear(&normed, n, &lw.k, &mut k);
            linear(&normed, n, &lw.v, &mut v);
            if let (Some(qn), Some(kn)) = (&lw.q_norm, &lw.k_norm) {
                per_head_norm(&mut q, qn, cfg);
                per_head_norm(&mut k, kn, cfg);
            }
            if let Some(rope) = &self.rope {
                rope.apply(&mut q, &positions, cfg.n_heads, hd);
                rope.apply(&mut k, &positions, cfg.n_kv_heads, hd);
            }
            let mut scale = cfg.attn_scale;
            if cfg.scale_attn_by_inverse_layer_idx {
                scale /= (l + 1) as f32;
            }
            attn.clear();
            attn.resize(n * q_dim, 0.0);
            for ((item, rows), &start) in items.iter_mut().zip(&ranges).zip(&starts) {
                let m = rows.len();
                let cache = &mut *item.cache;
                cache.keys[l][start * kv_dim..(start + m) * kv_dim]
                    .copy_from_slice(&k[rows.start * kv_dim..rows.end * kv_dim]);
                cache.values[l][start * kv_dim..(start + m) * kv_dim]
                    .copy_from_slice(&v[rows.start * kv_dim..rows.end * kv_dim]);
                let input = AttentionInput {
                    q: &q[rows.start * q_dim..rows.end * q_dim],
                    keys: &cache.keys[l],
                    values: &cache.values[l],
                    q_start: start,
                    n_new: m,
                    n_heads: cfg.n_heads,
                    n_kv_heads: cfg.n_kv_heads,
                    head_dim: hd,
                    scale,
                    mask: AttentionMask {
                        slots: cache.slots(),
                        visibility: cache.visibility,
                        sliding_window: cfg.sliding_window,
                    },
                };
                let recorders = item.capture.as_deref_mut().and_then(|c| c.layer_mut(l));
                attention(
                    &input,
                    &mut attn[rows.start * q_dim..rows.end * q_dim],
                    recorders,
                );
            }
            linear(&attn, n, &lw.o, &mut o);

            // MLP block, sequential or parallel residual.
            if !cfg.parallel_residual {
                add_in_place(&mut x, &o);
            }
            norm(&x, &lw.mlp_norm, cfg.norm, cfg.norm_eps, &mut normed);
            linear(&normed, n, &lw.up, &mut up);
            match &lw.gate {
                Some(g) => {
                    linear(&normed, n, g, &mut gate);
                    activate(&mut gate, cfg.activation);
                    up.iter_mut().zip(&gate).for_each(|(u, g)| *u *= g);
                }
                None => activate(&mut up, cfg.activation),
            }
            linear(&up, n, &lw.down, &mut mlp);
            if cfg.parallel_residual {
                add_in_place(&mut mlp, &o);
            }
            add_in_place(&mut x, &mlp);
        }

        // Final norm and logits for the requested rows of every item.
        let picked: Vec<std::ops::Range<usize>> = match logit_rows {
            LogitRows::All => ranges.clone(),
            LogitRows::Last => ranges.iter().map(|r| r.end - 1..r.end).collect(),
            LogitRows::None => return Ok(vec![Vec::new(); items.len()]),
        };
        let mut rows_x = Vec::new();
        for r in &picked {
            rows_x.extend_from_slice(&x[r.start * h..r.end * h]);
        }
        let m = rows_x.len() / h;
        norm(
            &rows_x,
            &self.weights.final_norm,
            cfg.norm,
            cfg.norm_eps,
            &mut normed,
        );
        let mut logits = Vec::new();
        match &self.weights.lm_head {
            Some(head) => linear(&normed, m, head, &mut logits),
            None => project(
                &normed,
                m,
                &self.weights.embed,
                h,
                cfg.vocab_size,
                None,
                &mut logits,
            ),
        }
        let vocab = cfg.vocab_size;
        let mut out = Vec::with_capacity(items.len());
        let mut row = 0;
        for r in &picked {
            out.push(logits[row * vocab..(row + r.len()) * vocab].to_vec());
            row += r.len();
        }
        Ok(out)
    }

    /// Rejects token ids and positions the model cannot take.
    fn check_slots(&self, new: &[SlotInfo]) -> Result<()> {
        for s in new {
            if s.token as usize >= self.cfg.vocab_size {
                return Err(Error::input(format!(
                    "token id {} is out of range for vocab_size {}",
                    s.token, self.cfg.vocab_size
                )));
            }
            if s.position < 0 {
                return Err(Error::input(format!("position {} is negative", s.position)));
            }
            let learned = matches!(self.cfg.position, PositionEncoding::Learned);
            if learned
                && self
                    .cfg
                    .max_positions
                    .is_some_and(|m| s.position as usize >= m)
            {
                return Err(Error::input(format!(
                    "position {} exceeds the learned position table ({} positions)",
                    s.position,
                    self.cfg.max_positions.unwrap_or(0)
                )));
            }
        }
        Ok(())
    }
}

/// RMSNorm over each head of `x` (`[t, heads * head_dim]`) with a `head_dim`-wide weight (Qwen3 q/k norm).
fn per_head_norm(x: &mut [f32], n: &crate::weights::Norm, cfg: &crate::config::ModelConfig) {
    let mut tmp = vec![0.0f32; cfg.head_dim];
    for head in x.chunks_mut(cfg.head_dim) {
        norm_row(
            head,
            n,
            crate::config::NormKind::RmsNorm,
            cfg.norm_eps,
            &mut tmp,
        );
        head.copy_from_slice(&tmp);
    }
}
