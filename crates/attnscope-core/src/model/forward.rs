//! The forward pass, written once for every family and every backend: architecture differences are flags of
//! `ModelConfig`, device differences live behind [`Backend`]. Reads top to bottom: embed → blocks (norm,
//! q/k/v, q/k norm, RoPE, cache write, attention with capture, output, residual, MLP) → final norm → logits.

use crate::Error;
use crate::Result;
use crate::capture::SequenceCapture;
use crate::config::ModelConfig;
use crate::model::backend::{
    AttentionShape, AttentionStep, Backend, BackendWeights, CaptureTarget, CaptureTargets, LmHead,
    Workspace,
};
use crate::model::kv_cache::KvCache;
use crate::slots::{AttentionMask, SlotInfo};
use crate::weights::LayerWeights;
use std::ops::Range;

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

/// The model on a backend, as the forward pass sees it.
pub(crate) struct Weights<'a, B: Backend> {
    pub backend: &'a B,
    pub weights: &'a BackendWeights<B>,
    pub rope: Option<&'a B::Rope>,
}

/// One forward pass over several sequences (checked by `Model::forward_batch`): their new slots are stacked
/// so that every weight matrix is read once per call (batched decode), while attention runs per sequence
/// over its own cache. Writes one logits buffer `[rows, vocab]` per item into `outs` (cleared, capacity
/// reused) for the rows `logit_rows` asks for (none for `LogitRows::None`). The pass synchronises with the
/// device once, when it reads the logits (or waits, for `LogitRows::None`); only then does the backend hand
/// the captured rows it queued to the recorders ([`Backend::finish_capture`]).
pub(crate) fn forward_batch<B: Backend>(
    m: &Weights<B>,
    ws: &mut Workspace<B>,
    cfg: &ModelConfig,
    items: &mut [BatchItem],
    logit_rows: LogitRows,
    outs: &mut [Vec<f32>],
) -> Result<()> {
    let (b, w) = (m.backend, m.weights);
    // Stack the new slots: item i owns rows ws.ranges[i] of every activation, cache slots ws.starts[i]...
    stack_items::<B>(b, items, ws)?;
    let n = ws.slots.len();
    b.begin_pass(&mut ws.scratch, &ws.slots)?;
    b.embed(&ws.scratch, &w.embed, w.pos_embed.as_ref(), &mut ws.x, n)?;
    for (l, lw) in w.layers.iter().enumerate() {
        attention_block(m, ws, cfg, items, l, lw)?;
        mlp_block(b, ws, cfg, lw, n)?;
    }
    logits(m, ws, cfg, logit_rows, outs)?;
    let mut targets = PassTargets {
        items,
        sliding_window: cfg.sliding_window,
    };
    b.finish_capture(&mut ws.scratch, &mut targets)
}

/// The recorders and slot masks of a pass's items, for [`Backend::finish_capture`].
struct PassTargets<'x, 'a> {
    items: &'x mut [BatchItem<'a>],
    sliding_window: Option<usize>,
}

impl CaptureTargets for PassTargets<'_, '_> {
    fn target(&mut self, item: usize, layer: usize) -> Option<CaptureTarget<'_>> {
        let it = self.items.get_mut(item)?;
        let recorders = it.capture.as_deref_mut()?.layer_mut(layer)?;
        Some(CaptureTarget {
            recorders,
            mask: AttentionMask {
                slots: it.cache.slots(),
                visibility: it.cache.visibility,
                sliding_window: self.sliding_window,
            },
        })
    }
}

/// `x += o`, where `o` is the attention output of layer `l` (its input normed, projected to q/k/v, q/k
/// normed, rotated, written to each sequence's cache, attended per sequence with capture, projected out);
/// with a parallel residual, `o` waits for the MLP block.
fn attention_block<B: Backend>(
    m: &Weights<B>,
    ws: &mut Workspace<B>,
    cfg: &ModelConfig,
    items: &mut [BatchItem],
    l: usize,
    lw: &LayerWeights<B::Linear, B::Norm>,
) -> Result<()> {
    let b = m.backend;
    let (n, h, hd) = (ws.slots.len(), cfg.hidden_size, cfg.head_dim);
    let eps = cfg.norm_eps;
    b.norm(cfg.norm, eps, &ws.x, &lw.attn_norm, &mut ws.normed, n, h)?;
    b.linears(
        &ws.normed,
        n,
        &mut [(&lw.q, &mut ws.q), (&lw.k, &mut ws.k), (&lw.v, &mut ws.v)],
    )?;
    if let (Some(qn), Some(kn)) = (&lw.q_norm, &lw.k_norm) {
        b.norm_in_place(&mut ws.scratch, &mut ws.q, qn, n * cfg.n_heads, hd, eps)?;
        b.norm_in_place(&mut ws.scratch, &mut ws.k, kn, n * cfg.n_kv_heads, hd, eps)?;
    }
    if let Some(rope) = m.rope {
        b.rope(rope, &ws.scratch, &mut ws.q, n, cfg.n_heads, hd)?;
        b.rope(rope, &ws.scratch, &mut ws.k, n, cfg.n_kv_heads, hd)?;
    }
    let shape = AttentionShape::of_layer(cfg, l);
    for (i, item) in items.iter_mut().enumerate() {
        let (rows, start) = (ws.ranges[i].clone(), ws.starts[i]);
        let (kv, slots, visibility) = item.cache.parts_mut::<B::Kv>()?;
        b.write_kv(kv, l, start, &ws.k, &ws.v, rows.clone(), shape.kv_dim())?;
        let step = AttentionStep {
            item: i,
            layer: l,
            shape,
            q: &ws.q,
            rows,
            q_start: start,
            kv: &*kv,
            mask: AttentionMask {
                slots,
                visibility,
                sliding_window: cfg.sliding_window,
            },
        };
        let recorders = item.capture.as_deref_mut().and_then(|c| c.layer_mut(l));
        b.attention(&mut ws.scratch, &step, &mut ws.attn, recorders)?;
    }
    b.attention_done(&mut ws.scratch)?;
    b.linear(&ws.attn, n, &lw.o, &mut ws.o)?;
    if !cfg.parallel_residual {
        b.add(&mut ws.x, &ws.o, n * h)?;
    }
    Ok(())
}

/// `x += mlp(norm(x))` (gated or not), or `x += mlp(norm(x)) + o` for a parallel residual.
fn mlp_block<B: Backend>(
    b: &B,
    ws: &mut Workspace<B>,
    cfg: &ModelConfig,
    lw: &LayerWeights<B::Linear, B::Norm>,
    n: usize,
) -> Result<()> {
    let (h, inter) = (cfg.hidden_size, ws.intermediate);
    b.norm(
        cfg.norm,
        cfg.norm_eps,
        &ws.x,
        &lw.mlp_norm,
        &mut ws.normed,
        n,
        h,
    )?;
    match &lw.gate {
        Some(gate) => {
            b.linears(
                &ws.normed,
                n,
                &mut [(&lw.up, &mut ws.up), (gate, &mut ws.gate)],
            )?;
            b.activate_gated(cfg.activation, &ws.gate, &mut ws.up, n * inter)?;
        }
        None => {
            b.linear(&ws.normed, n, &lw.up, &mut ws.up)?;
            b.activate(cfg.activation, &mut ws.up, n * inter)?;
        }
    }
    b.linear(&ws.up, n, &lw.down, &mut ws.mlp)?;
    if cfg.parallel_residual {
        b.add2(&mut ws.x, &ws.mlp, &ws.o, n * h)
    } else {
        b.add(&mut ws.x, &ws.mlp, n * h)
    }
}

/// Final norm and logits of the rows `logit_rows` asks for, one buffer per item.
fn logits<B: Backend>(
    m: &Weights<B>,
    ws: &mut Workspace<B>,
    cfg: &ModelConfig,
    logit_rows: LogitRows,
    outs: &mut [Vec<f32>],
) -> Result<()> {
    let (b, w, h) = (m.backend, m.weights, cfg.hidden_size);
    let mut picked = std::mem::take(&mut ws.picked_rows);
    picked.clear();
    match logit_rows {
        LogitRows::All => picked.extend(ws.ranges.iter().cloned()),
        LogitRows::Last => picked.extend(ws.ranges.iter().map(|r| r.end - 1..r.end)),
        LogitRows::None => {}
    }
    let result = if picked.is_empty() {
        outs.iter_mut().for_each(Vec::clear);
        b.sync(&mut ws.scratch)
    } else {
        let rows: usize = picked.iter().map(|r| r.len()).sum();
        let head = match &w.lm_head {
            Some(linear) => LmHead::Linear(linear),
            None => LmHead::Tied(&w.embed),
        };
        b.gather_rows(&ws.x, &picked, h, &mut ws.picked)
            .and_then(|()| {
                let (kind, eps) = (cfg.norm, cfg.norm_eps);
                b.norm(
                    kind,
                    eps,
                    &ws.picked,
                    &w.final_norm,
                    &mut ws.normed,
                    rows,
                    h,
                )
            })
            .and_then(|()| {
                let vocab = cfg.vocab_size;
                b.lm_head(
                    &mut ws.scratch,
                    &ws.normed,
                    rows,
                    head,
                    vocab,
                    &mut ws.logits,
                )
            })
            .map(|()| split_rows(&ws.logits, &picked, cfg.vocab_size, outs))
    };
    ws.picked_rows = picked; // the index buffer goes back to the workspace for the next pass
    result
}

/// Appends each item's new slots to its cache (and to the backend's copy of the slot metadata) and stacks
/// them into `ws.slots`; `ws.ranges[i]` are item i's rows in the stacked activations, `ws.starts[i]` its
/// first new cache slot.
fn stack_items<B: Backend>(b: &B, items: &mut [BatchItem], ws: &mut Workspace<B>) -> Result<()> {
    ws.ranges.clear();
    ws.starts.clear();
    ws.slots.clear();
    for item in items.iter_mut() {
        item.cache.parts_mut::<B::Kv>()?; // a cache of another device is refused before it changes
        let start = item.cache.len();
        ws.ranges
            .push(ws.slots.len()..ws.slots.len() + item.new.len());
        ws.starts.push(start);
        ws.slots.extend_from_slice(item.new);
        if !item.cache.push_slots(item.new) {
            return Err(Error::input("forward: the KV cache is full"));
        }
        let (kv, _, _) = item.cache.parts_mut::<B::Kv>()?;
        b.write_slots(kv, start, item.new)?;
    }
    Ok(())
}

/// Splits `[m, vocab]` logits into one buffer per item.
fn split_rows(all: &[f32], picked: &[Range<usize>], vocab: usize, outs: &mut [Vec<f32>]) {
    let mut row = 0;
    for (r, out) in picked.iter().zip(outs.iter_mut()) {
        out.clear();
        out.extend_from_slice(&all[row * vocab..(row + r.len()) * vocab]);
        row += r.len();
    }
}
