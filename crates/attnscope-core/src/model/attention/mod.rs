//! Exact softmax attention over the KV cache, tiled in the FlashAttention manner, with every probability
//! handed to the capture recorders tile by tile as it is computed. CPU twin of `kernels/attention_*.cu`.
//!
//! Per head, the query rows go in blocks and the keys in tiles ([`tiles::TILE_SIZES`]); each tile's scores
//! come from one small GEMM. Visibility is computed from slot metadata, never from a T×T mask in memory: a
//! query slot q sees key slot k when k ≤ q (causal), q − k < window (sliding window, when the model has
//! one), and, for isolated sequences, k is not another member of q's group ([`AttentionMask::allows`]);
//! [`tiles::classify`] decides it once per tile, so hidden tiles are skipped and only tiles on the diagonal,
//! the window edge or a group are masked.
//!
//! Without a recorder, a block runs an online softmax over its tiles (running maximum and sum, the output
//! rescaled as the maximum grows) and never holds more than one tile of scores. With one, the block keeps
//! its scores over all keys, turns them into exact probabilities ([`softmax::exact_row`]) and hands each
//! visible tile to the recorder before `P · V`. Each row also yields its log-sum-exp and Σ p·s
//! (s = scaled score), so that entropy = lse − Σ p·s costs no logarithm per element.

mod few_rows;
mod softmax;
pub mod tiles;

use crate::capture::tile_stats::KeyOrder;
use crate::capture::{HeadRecorder, TileView};
use crate::model::backend::AttentionShape;
use crate::model::ops::{MatRef, matmul, matmul_add};
use crate::slots::{AttentionMask, SlotInfo, Visibility};
use rayon::prelude::*;
use std::ops::Range;
use tiles::{TILE_SIZES, TileSizes, TileVisibility, classify, first_visible_key, mask_tile};

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

/// Per-head buffers of [`attention_with`], kept across calls so a decode step allocates nothing.
#[derive(Default)]
pub struct AttentionScratch {
    heads: Vec<HeadScratch>,
}

#[derive(Default)]
struct HeadScratch {
    /// Scores, then probabilities: one tile (online), or one block of rows over all keys (recorded).
    scores: Vec<f32>,
    /// The head's outputs `[n_new, head_dim]`.
    out: Vec<f32>,
    /// Per row of a block: running maximum and sum (online); log-sum-exp and Σ p·s (recorded).
    max: Vec<f32>,
    sum: Vec<f32>,
    expected: Vec<f64>,
    /// The visible key tiles of a block (recorded), and how their key positions run.
    tiles: Vec<Range<usize>>,
    orders: Vec<KeyOrder>,
}

/// Computes attention outputs `[n_new, n_heads * head_dim]` into `out`, calling the recorder of each head
/// (when present and active) with every probability, tile by tile.
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
    attention_tiled(inp, out, recorders, scratch, TILE_SIZES);
}

/// [`attention_with`] with explicit block and tile sizes (tests use small ones to cut every edge).
pub fn attention_tiled(
    inp: &AttentionInput,
    out: &mut [f32],
    recorders: Option<&mut [HeadRecorder]>,
    scratch: &mut AttentionScratch,
    sizes: TileSizes,
) {
    let hd = inp.shape.head_dim;
    let width = inp.shape.n_heads * hd;
    assert_eq!(out.len(), inp.n_new * width, "attention: output size");
    assert!(sizes.q > 0 && sizes.k > 0, "attention: empty tiles");
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
                .for_each(|(h, (buf, rec))| head_attention(inp, h, Some(rec), buf, sizes));
        }
        None => heads
            .par_iter_mut()
            .enumerate()
            .for_each(|(h, buf)| head_attention(inp, h, None, buf, sizes)),
    }
    for (h, buf) in heads.iter().enumerate() {
        for (row, src) in out.chunks_mut(width).zip(buf.out.chunks(hd)) {
            row[h * hd..(h + 1) * hd].copy_from_slice(src);
        }
    }
}

/// The operands of one head, addressed by query block and key tile.
struct HeadOperands<'a> {
    inp: &'a AttentionInput<'a>,
    h: usize,
    kvh: usize,
}

impl HeadOperands<'_> {
    /// Queries of the block's rows `rows` (indices into the new rows).
    fn q(&self, rows: Range<usize>) -> MatRef<'_> {
        let (hd, width) = (self.inp.shape.head_dim, self.inp.shape.q_dim());
        MatRef {
            data: &self.inp.q[rows.start * width + self.h * hd..],
            rows: rows.len(),
            cols: hd,
            row_stride: width,
            col_stride: 1,
        }
    }

    /// Kᵀ `[head_dim, keys]` of the key slots `keys`.
    fn k_t(&self, keys: Range<usize>) -> MatRef<'_> {
        let (hd, kv_dim) = (self.inp.shape.head_dim, self.kv_dim());
        MatRef {
            data: &self.inp.keys[keys.start * kv_dim + self.kvh * hd..],
            rows: hd,
            cols: keys.len(),
            row_stride: 1,
            col_stride: kv_dim,
        }
    }

    /// V `[keys, head_dim]` of the key slots `keys`.
    fn v(&self, keys: Range<usize>) -> MatRef<'_> {
        let (hd, kv_dim) = (self.inp.shape.head_dim, self.kv_dim());
        MatRef {
            data: &self.inp.values[keys.start * kv_dim + self.kvh * hd..],
            rows: keys.len(),
            cols: hd,
            row_stride: kv_dim,
            col_stride: 1,
        }
    }

    fn kv_dim(&self) -> usize {
        self.inp.shape.n_kv_heads * self.inp.shape.head_dim
    }
}

/// One head: `[n_new, head_dim]` outputs into `buf.out`, block by block.
fn head_attention(
    inp: &AttentionInput,
    h: usize,
    rec: Option<&mut HeadRecorder>,
    buf: &mut HeadScratch,
    sizes: TileSizes,
) {
    let hd = inp.shape.head_dim;
    let ops = HeadOperands {
        inp,
        h,
        kvh: h / (inp.shape.n_heads / inp.shape.n_kv_heads),
    };
    buf.out.clear();
    buf.out.resize(inp.n_new * hd, 0.0);
    let mut rec = rec.filter(|r| r.is_active());
    // A recorded block keeps its scores over all keys: fewer rows when the context is long, so that the
    // block stays in L2 and a head's buffer stays small (2 MiB at 32k keys; the online path holds one tile
    // whatever the length).
    let keys = inp.q_start + inp.n_new;
    let block = match rec {
        Some(_) => (RECORDED_BLOCK_FLOATS / keys.max(1))
            .clamp(16, sizes.q.max(16))
            .min(sizes.q),
        None => sizes.q,
    };
    for start in (0..inp.n_new).step_by(block) {
        let rows = start..(start + block).min(inp.n_new);
        match rec.as_deref_mut() {
            Some(r) => recorded_block(&ops, rows, r, buf, sizes.k),
            None => online_block(&ops, rows, buf, sizes.k),
        }
    }
}

/// A tile's scores `s` (rows `stride` apart) = scale · Q Kᵀ: gemm, or dot products for a few rows.
fn tile_scores(s: &mut [f32], stride: usize, q: MatRef, k_t: MatRef, scale: f32) {
    if q.rows <= few_rows::FEW_ROWS {
        few_rows::scores(s, stride, q, k_t, scale);
    } else {
        matmul(s, stride, q, k_t, scale, false);
    }
}

/// `o` (`[rows, head_dim]`) += P · V: gemm, or scaled value rows for a few rows.
fn tile_accumulate(o: &mut [f32], hd: usize, p: MatRef, v: MatRef) {
    if p.rows <= few_rows::FEW_ROWS {
        few_rows::accumulate(o, p.data, p.row_stride, v);
    } else {
        matmul_add(o, hd, p, v, 1.0);
    }
}

/// Scores a recorded block may hold: 128 rows × 2048 keys of f32 (1 MiB, half of a 2 MiB L2), so that a
/// 2048-token prefill keeps full 128-row blocks (it took 64-row blocks at 512 KiB, BENCHMARKS.md §14).
const RECORDED_BLOCK_FLOATS: usize = 128 * 2048;

/// The key tiles of a block of query slots `qs`: from the first key its first row sees to its last row.
fn key_tiles(
    mask: &AttentionMask,
    qs: Range<usize>,
    tile: usize,
) -> impl Iterator<Item = Range<usize>> {
    let (lo, hi) = (first_visible_key(mask, qs.start), qs.end);
    (lo..hi)
        .step_by(tile)
        .map(move |k0| k0..(k0 + tile).min(hi))
}

/// A block of new rows `rows` without a recorder: online softmax over the key tiles.
fn online_block(ops: &HeadOperands, rows: Range<usize>, buf: &mut HeadScratch, tile: usize) {
    let inp = ops.inp;
    let hd = inp.shape.head_dim;
    let n = rows.len();
    let qs = inp.q_start + rows.start..inp.q_start + rows.end;
    let o = &mut buf.out[rows.start * hd..rows.end * hd];
    buf.max.clear();
    buf.max.resize(n, f32::NEG_INFINITY);
    buf.sum.clear();
    buf.sum.resize(n, 0.0);
    for ks in key_tiles(&inp.mask, qs.clone(), tile) {
        let vis = classify(&inp.mask, qs.clone(), ks.clone());
        if vis == TileVisibility::Hidden {
            continue;
        }
        let cols = ks.len();
        buf.scores.resize(n * cols, 0.0);
        let s = &mut buf.scores[..n * cols];
        tile_scores(
            s,
            cols,
            ops.q(rows.clone()),
            ops.k_t(ks.clone()),
            inp.shape.scale,
        );
        if let TileVisibility::Partial { groups } = vis {
            mask_tile(&inp.mask, s, cols, qs.clone(), ks.clone(), groups);
        }
        softmax::online_tile(s, &mut buf.max, &mut buf.sum, o);
        tile_accumulate(o, hd, MatRef::row_major(s, n, cols), ops.v(ks));
    }
    for (row, &l) in o.chunks_mut(hd).zip(&buf.sum) {
        let inv = 1.0 / l;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// A block of new rows `rows` with a recorder: scores of the visible key tiles, then row by row (while the
/// row is in L1) exact probabilities handed to the recorder tile by tile, then `P · V` tile by tile.
fn recorded_block(
    ops: &HeadOperands,
    rows: Range<usize>,
    rec: &mut HeadRecorder,
    buf: &mut HeadScratch,
    tile: usize,
) {
    let inp = ops.inp;
    let hd = inp.shape.head_dim;
    let n = rows.len();
    let qs = inp.q_start + rows.start..inp.q_start + rows.end;
    // Scores of every key slot before the block's end; only the visible tiles are written and read.
    let width = qs.end;
    buf.scores.resize(n * width, 0.0);
    buf.tiles.clear();
    buf.orders.clear();
    for ks in key_tiles(&inp.mask, qs.clone(), tile) {
        let vis = classify(&inp.mask, qs.clone(), ks.clone());
        if vis == TileVisibility::Hidden {
            continue;
        }
        let s = &mut buf.scores[ks.start..];
        tile_scores(
            s,
            width,
            ops.q(rows.clone()),
            ops.k_t(ks.clone()),
            inp.shape.scale,
        );
        if let TileVisibility::Partial { groups } = vis {
            mask_tile(&inp.mask, s, width, qs.clone(), ks.clone(), groups);
        }
        buf.orders.push(KeyOrder::of(&inp.mask.slots[ks.clone()]));
        buf.tiles.push(ks);
    }
    buf.max.clear();
    buf.expected.clear();
    rec.begin_rows(qs.start, n, inp.mask.slots);
    for (r, row) in buf.scores[..n * width].chunks_mut(width).enumerate() {
        let (lse, expected) = softmax::exact_row(row, &buf.tiles);
        buf.max.push(lse);
        buf.expected.push(expected);
        for (ks, &order) in buf.tiles.iter().zip(&buf.orders) {
            rec.observe_tile(&TileView {
                q0: qs.start + r,
                rows: 1,
                k0: ks.start,
                cols: ks.len(),
                probs: &row[ks.start..ks.end],
                stride: width,
                slots: inp.mask.slots,
                mask: &inp.mask,
                order,
            });
        }
    }
    rec.finish_rows(qs.start, &buf.max, &buf.expected);
    let o = &mut buf.out[rows.start * hd..rows.end * hd];
    for ks in &buf.tiles {
        let p = MatRef {
            data: &buf.scores[ks.start..],
            rows: n,
            cols: ks.len(),
            row_stride: width,
            col_stride: 1,
        };
        tile_accumulate(o, hd, p, ops.v(ks.clone()));
    }
}

#[cfg(test)]
mod tests;
