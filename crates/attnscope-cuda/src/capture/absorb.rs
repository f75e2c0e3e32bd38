//! Hands one captured chunk's read-back (after the synchronisation that completed its copies) to its
//! recorders: weight rows in bulk and the device-reduced statistics (device route), or each probability
//! row to `HeadRecorder::observe` (rows route).

use crate::capture::layout::PackedLayout;
use crate::capture::pending::{ChunkMeta, Route};
use crate::capture::pinned::HostSet;
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::capture::{HeadRecorder, RowStats, RowView, WeightRows, WeightsDtype};
use attnscope_core::slots::AttentionMask;

/// Host vectors reused by every chunk.
pub struct AbsorbScratch<'a> {
    pub rows: &'a mut Vec<RowStats>,
    pub received: &'a mut Vec<f64>,
}

/// Fills `recorders` (the chunk's layer of its sequence) from `host`.
pub fn absorb_chunk(
    meta: &ChunkMeta,
    host: &HostSet,
    recorders: &mut [HeadRecorder],
    mask: &AttentionMask,
    scratch: AbsorbScratch,
) -> Result<()> {
    if let Some(&h) = meta.heads.iter().find(|&&h| h >= recorders.len()) {
        return Err(Error::cuda(format!(
            "capture of layer {}: head {h} has no recorder",
            meta.layer
        )));
    }
    let l = &meta.layout;
    let (n_new, n_keys, q_start) = (l.n_new, l.n_keys, meta.q_start);
    if q_start + n_new > mask.slots.len() || n_keys > mask.slots.len() {
        return Err(Error::cuda(format!(
            "capture of layer {}: rows {q_start}..{} beyond the cache's {} slots",
            meta.layer,
            q_start + n_new,
            mask.slots.len()
        )));
    }
    let words = host.packed.host(meta.packed_words())?;
    let w_len = meta.row_elems();
    match meta.route {
        Route::Device { weights, stats } => {
            let per = n_new * n_keys;
            for (si, &h) in meta.heads.iter().enumerate() {
                let rows = si * per..(si + 1) * per;
                let w = match weights {
                    Some(WeightsDtype::F32) => WeightRows::F32(&host.rows_f32.host(w_len)?[rows]),
                    Some(WeightsDtype::F16) => WeightRows::F16(&host.rows_f16.host(w_len)?[rows]),
                    None => continue,
                };
                recorders[h].absorb_weight_rows(q_start, n_keys, w);
            }
            if stats {
                for (si, &h) in meta.heads.iter().enumerate() {
                    let (rows, received) = (&mut *scratch.rows, &mut *scratch.received);
                    let dist = l.unpack_head(words, si, h, q_start, mask.slots, rows, received);
                    recorders[h].absorb_reduced(q_start, rows, received, &dist);
                }
            }
        }
        Route::Rows => {
            let rows = host.rows_f32.host(w_len)?;
            for (si, &h) in meta.heads.iter().enumerate() {
                for i in 0..n_new {
                    let slot = q_start + i;
                    let row = &rows[(si * n_new + i) * n_keys..][..n_keys];
                    let fi = h * n_new + i;
                    let lse = PackedLayout::f32_at(words, l.first[0], fi);
                    let entropy = PackedLayout::f32_at(words, l.first[1], fi);
                    recorders[h].observe(&RowView {
                        slot,
                        probs: &row[..=slot],
                        lse,
                        expected_score: lse as f64 - entropy as f64,
                        slots: mask.slots,
                        mask,
                    });
                }
            }
        }
    }
    Ok(())
}
