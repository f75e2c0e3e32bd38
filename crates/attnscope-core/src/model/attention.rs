//! Exact softmax attention over the KV cache, with every probability row handed to the capture recorders as
//! it is computed. CPU twin of `kernels/attention_*.cu`.
//!
//! Visibility is computed from slot metadata, never from a T×T mask in memory: a query slot q sees key slot k
//! when k ≤ q (causal), q − k < window (sliding window, when the model has one), and, for isolated sequences,
//! k is not another member of q's group. Each row also yields its log-sum-exp and Σ p·s (s = scaled score), so
//! that entropy = lse − Σ p·s costs no logarithm per element.

use crate::capture::{HeadRecorder, RowView};
use crate::model::backend::AttentionShape;
use crate::model::ops::{MatRef, matmul};
use crate::slots::{AttentionMask, SlotInfo, Visibility};
use rayon::prelude::*;

/// The operands of one layer's attention for `n_new` query slots starting at slot `q_start`.
pub struct AttentionInput<'a> {
    /// Queries `[n_new, n_heads * head_dim]`, already rotated.
    pub q: &'a [f32],
    /// Cached keys and values `[capacity, n_kv_heads * head_dim]`; slots `0..q_start + n_new` are filled.
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub q_start: usize,
    pub n_new: usize,
    /// Heads, key/value heads, head dim and the factor on q·k.
    pub shape: AttentionShape,
    pub mask: AttentionMask<'a>,
}

impl<'a> AttentionInput<'a> {
    /// A plain causal prefill of all `slots` (visible, no sliding window) with the 1/√head_dim scale: the
    /// case the benchmarks time.
    pub fn causal_prefill(
        q: &'a [f32],
        keys: &'a [f32],
        values: &'a [f32],
        (n_heads, n_kv_heads, head_dim): (usize, usize, usize),
        slots: &'a [SlotInfo],
    ) -> AttentionInput<'a> {
        AttentionInput {
            q,
            keys,
            values,
            q_start: 0,
            n_new: slots.len(),
            shape: AttentionShape {
                n_heads,
                n_kv_heads,
                head_dim,
                scale: 1.0 / (head_dim as f32).sqrt(),
            },
            mask: AttentionMask {
                slots,
                visibility: Visibility::Visible,
                sliding_window: None,
            },
        }
    }
}

/// Query rows handled per matmul block.
const BLOCK: usize = 64;

/// Per-head buffers of [`attention_with`], kept across calls so a decode step allocates nothing.
#[derive(Default)]
pub struct AttentionScratch {
    heads: Vec<HeadScratch>,
}

#[derive(Default)]
struct HeadScratch {
    /// Scaled scores, then probabilities, of one block of query rows.
    scores: Vec<f32>,
    /// The head's outputs `[n_new, head_dim]`.
    out: Vec<f32>,
}

/// Computes attention outputs `[n_new, n_heads * head_dim]` into `out`, calling the recorder of each head
/// (when present and active) with every probability row.
pub fn attention(inp: &AttentionInput, out: &mut [f32], recorders: Option<&mut [HeadRecorder]>) {
    attention_with(inp, out, recorders, &mut AttentionScratch::default());
}

/// [`attention`] with buffers from `scratch` (grown only when a larger call comes).
pub fn attention_with(
    inp: &AttentionInput,
    out: &mut [f32],
    recorders: Option<&mut [HeadRecorder]>,
    scratch: &mut AttentionScratch,
) {
    let hd = inp.shape.head_dim;
    let width = inp.shape.n_heads * hd;
    assert_eq!(out.len(), inp.n_new * width, "attention: output size");
    if scratch.heads.len() < inp.shape.n_heads {
        scratch
            .heads
            .resize_with(inp.shape.n_heads, HeadScratch::default);
    }
    let heads = &mut scratch.heads[..inp.shape.n_heads];
    match recorders {
        Some(recs) => {
            assert_eq!(
                recs.len(),
                inp.shape.n_heads,
                "attention: one recorder per head"
            );
            heads
                .par_iter_mut()
                .zip(recs.par_iter_mut())
                .enumerate()
                .for_each(|(h, (buf, rec))| head_attention(inp, h, Some(rec), buf));
        }
        None => heads
            .par_iter_mut()
            .enumerate()
            .for_each(|(h, buf)| head_attention(inp, h, None, buf)),
    }
    for (h, buf) in heads.iter().enumerate() {
        for (row, src) in out.chunks_mut(width).zip(buf.out.chunks(hd)) {
            row[h * hd..(h + 1) * hd].copy_from_slice(src);
        }
    }
}

/// One head: `[n_new, head_dim]` outputs into `buf.out`.
fn head_attention(
    inp: &AttentionInput,
    h: usize,
    mut rec: Option<&mut HeadRecorder>,
    buf: &mut HeadScratch,
) {
    let hd = inp.shape.head_dim;
    let kv_dim = inp.shape.n_kv_heads * hd;
    let kvh = h / (inp.shape.n_heads / inp.shape.n_kv_heads);
    let out = &mut buf.out;
    out.clear();
    out.resize(inp.n_new * hd, 0.0);
    let scores = &mut buf.scores;
    let record = rec.as_ref().is_some_and(|r| r.is_active());
    for start in (0..inp.n_new).step_by(BLOCK) {
        let rows = BLOCK.min(inp.n_new - start);
        let n_keys = inp.q_start + start + rows; // causal bound of the block's last row
        scores.clear();
        scores.resize(rows * n_keys, 0.0f32);
        let q = MatRef {
            data: &inp.q[start * inp.shape.n_heads * hd + h * hd..],
            rows,
            cols: hd,
            row_stride: inp.shape.n_heads * hd,
            col_stride: 1,
        };
        let k_t = MatRef {
            data: &inp.keys[kvh * hd..],
            rows: hd,
            cols: n_keys,
            row_stride: 1,
            col_stride: kv_dim,
        };
        matmul(scores, n_keys, q, k_t, inp.shape.scale, false);
        for (r, row) in scores.chunks_mut(n_keys).enumerate() {
            let slot = inp.q_start + start + r;
            let (lse, expected_score) = softmax_row(row, slot, &inp.mask);
            if let (true, Some(rec)) = (record, rec.as_deref_mut()) {
                rec.observe(&RowView {
                    slot,
                    probs: &row[..=slot],
                    lse,
                    expected_score,
                    slots: inp.mask.slots,
                    mask: &inp.mask,
                });
            }
        }
        let p = MatRef::row_major(scores, rows, n_keys);
        let v = MatRef {
            data: &inp.values[kvh * hd..],
            rows: n_keys,
            cols: hd,
            row_stride: kv_dim,
            col_stride: 1,
        };
        matmul(
            &mut out[start * hd..(start + rows) * hd],
            hd,
            p,
            v,
            1.0,
            false,
        );
    }
}

/// Turns one row of scaled scores into probabilities in place (0 where the mask hides a key).
/// Returns (log-sum-exp, Σ p·s).
pub fn softmax_row(row: &mut [f32], slot: usize, mask: &AttentionMask) -> (f32, f64) {
    let mut max = f32::NEG_INFINITY;
    for (k, &s) in row.iter().enumerate() {
        if mask.allows(slot, k) && s > max {
            max = s;
        }
    }
    let mut sum = 0.0f64;
    let mut weighted = 0.0f64;
    for (k, s) in row.iter_mut().enumerate() {
        if mask.allows(slot, k) {
            let e = (*s - max).exp();
            sum += e as f64;
            weighted += e as f64 * *s as f64;
            *s = e;
        } else {
            *s = 0.0;
        }
    }
    let inv = (1.0 / sum) as f32;
    for s in row.iter_mut() {
        *s *= inv;
    }
    let lse = max + (sum.ln() as f32);
    (lse, weighted / sum)
}
