//! Capture on the GPU: after a layer's attention kernel, the second pass (kernels/attention_probs.cu) is
//! launched for the heads the capture selected, and its results go to the same `HeadRecorder`s the CPU
//! uses, so both backends produce the same tables.
//!
//! Two routes, both reading back with asynchronous copies into pinned memory:
//! * **device** — prompt rows (step 0): the kernel reduces the statistics on the device (sink / previous /
//!   self / group mass, received per key from per-row-group partials and one reduction kernel, distance
//!   buckets; entropy, max weight and argmax come from the first pass, copied on the device), all into one
//!   packed buffer (`layout`), and writes the exact weights (when asked) in the recorders' dtype (f32 /
//!   f16). The host only unpacks the per-row vectors (`HeadRecorder::absorb_reduced`) and copies weight
//!   rows in bulk (`HeadRecorder::absorb_weight_rows`). No T×T buffer exists unless weights are asked for.
//! * **rows** — generation-step rows (step > 0: the per-step tables need the whole row and the slot kinds):
//!   f32 probability rows `[heads, n_new, n_keys]` (n_new is a decode step's few rows) and the first pass's
//!   lse / entropy come back, and `HeadRecorder::observe` takes each row.
//!
//! **Synchronisations.** A layer's heads are split into chunks whose rows stay within
//! [`ROWS_BUDGET_BYTES`] on the device. Each chunk is queued (`launch`) with its read-back into its own
//! pinned slot of the pass (`pending`), which nothing overwrites before it is consumed, and no chunk waits:
//! the recorders are filled (`absorb`) by [`finish_pass`] (`Backend::finish_capture`), after the one
//! synchronisation the forward pass already does when it reads the logits. So a forward pass, a decode step
//! with capture on included, synchronises **once** (before: once per captured layer and sequence, plus the
//! logits read). Only a pass whose pending read-back would exceed [`PENDING_BUDGET_BYTES`] (256 MiB, e.g.
//! the weights of a long prompt) records its further chunks at once, with one synchronisation each, as
//! before; a decode step with stats or weights of every layer at a typical shape stays far below it.
//!
//! Every buffer lives in the scratch's [`CaptureBuffers`], grown only when a larger chunk comes.

mod absorb;
mod buffers;
mod launch;
mod layout;
mod pending;
mod pinned;

pub use buffers::{CaptureBuffers, DeviceBuffers};
pub use launch::{FirstPassStats, LayerCapture};
pub use layout::PackedLayout;
pub use pending::{ChunkMeta, PENDING_BUDGET_BYTES, PendingCapture, Route, fits_pending};
pub use pinned::{HostSet, Pinned, grown_len};

use crate::capture::absorb::{AbsorbScratch, absorb_chunk};
use crate::capture::launch::launch_chunk;
use crate::capture::pending::PendingSlot;
use crate::context::GpuContext;
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::capture::{HeadRecorder, WeightsDtype};
use attnscope_core::model::backend::CaptureTargets;
use attnscope_core::slots::AttentionMask;

/// Most bytes of weight / probability rows materialised on the device at once (one chunk).
pub const ROWS_BUDGET_BYTES: usize = 256 << 20;

/// Queues the capture of one layer's attention of one sequence for `recorders` (filled by
/// [`finish_pass`], or at once for a chunk beyond the pending budget).
pub fn record_layer(
    g: &GpuContext,
    layer: &LayerCapture,
    buf: &mut CaptureBuffers,
    recorders: &mut [HeadRecorder],
    mask: &AttentionMask,
) -> Result<()> {
    let mut heads = std::mem::take(&mut buf.host_heads);
    heads.clear();
    heads.extend((0..recorders.len()).filter(|&h| recorders[h].is_active()));
    let result = if heads.is_empty() {
        Ok(())
    } else {
        record_heads(g, layer, buf, &heads, recorders, mask)
    };
    buf.host_heads = heads;
    result
}

/// Heads per chunk so that `bytes_per_head` of rows stay within [`ROWS_BUDGET_BYTES`].
fn heads_per_chunk(bytes_per_head: usize, n_heads: usize) -> usize {
    (ROWS_BUDGET_BYTES / bytes_per_head.max(1)).clamp(1, n_heads.max(1))
}

/// The route of a layer's rows: generation-step rows go through the rows route.
fn route_of(layer: &LayerCapture, rec: &HeadRecorder, mask: &AttentionMask) -> Route {
    let call = layer.call;
    let generation_rows = mask.slots[call.q_start..call.q_start + call.n_new]
        .iter()
        .any(|s| s.step > 0);
    if generation_rows {
        Route::Rows
    } else {
        Route::Device {
            weights: rec.weights_dtype(),
            stats: rec.wants_stats(),
        }
    }
}

/// Chunks the active `heads` and queues each chunk (or records it at once beyond the pending budget).
fn record_heads(
    g: &GpuContext,
    layer: &LayerCapture,
    buf: &mut CaptureBuffers,
    heads: &[usize],
    recorders: &mut [HeadRecorder],
    mask: &AttentionMask,
) -> Result<()> {
    let call = layer.call;
    if call.q_start + call.n_new > mask.slots.len() {
        return Err(Error::cuda(
            "capture: the attention's rows are beyond the cache's slots",
        ));
    }
    let (n_new, n_keys) = (call.n_new, call.q_start + call.n_new);
    let route = route_of(layer, &recorders[heads[0]], mask);
    let chunk = match route {
        Route::Device { weights: None, .. } => heads.len(),
        Route::Device {
            weights: Some(WeightsDtype::F16),
            ..
        } => heads_per_chunk(n_new * n_keys * 2, heads.len()),
        _ => heads_per_chunk(n_new * n_keys * 4, heads.len()),
    };
    let heads_ptr = buf.dev.heads_ptr(g, heads)?;
    for c0 in (0..heads.len()).step_by(chunk) {
        let sel = &heads[c0..(c0 + chunk).min(heads.len())];
        let n_sel = if route == Route::Rows { 0 } else { sel.len() };
        let fill = |meta: &mut ChunkMeta| {
            meta.item = layer.item;
            meta.layer = layer.layer;
            meta.route = route;
            meta.layout = PackedLayout::new(call.n_heads, n_sel, n_new, n_keys);
            meta.q_start = call.q_start;
            meta.heads.clear();
            meta.heads.extend_from_slice(sel);
        };
        let sel_ptr = heads_ptr + (c0 * 4) as u64;
        // Copies may be in flight from here until a synchronisation (a failed launch included).
        buf.pending.unsynced = true;
        // The budget is asked with the chunk's size, computed on the immediate slot's metadata.
        fill(&mut buf.immediate.meta);
        let bytes = buf.immediate.meta.host_bytes();
        if buf.pending.defers(bytes) {
            let slot = buf.pending.next_slot();
            fill(&mut slot.meta);
            launch_chunk(g, layer, &mut buf.dev, &slot.meta, sel_ptr, &mut slot.host)?;
            buf.pending.commit(bytes);
        } else {
            let slot = &mut buf.immediate;
            launch_chunk(g, layer, &mut buf.dev, &slot.meta, sel_ptr, &mut slot.host)?;
            g.sync()?;
            buf.pending.unsynced = false;
            let scratch = AbsorbScratch {
                rows: &mut buf.host_rows,
                received: &mut buf.host_received,
            };
            absorb_chunk(&slot.meta, &slot.host, recorders, mask, scratch)?;
        }
    }
    Ok(())
}

/// Fills the recorders of every chunk the pass queued (`Backend::finish_capture`), then forgets them. The
/// forward pass calls it after its synchronisation; should copies still be unsynchronised (a caller that
/// did not synchronise), it synchronises first. On an error the remaining chunks are discarded and the
/// error propagates (the pass fails).
pub fn finish_pass(
    g: &GpuContext,
    buf: &mut CaptureBuffers,
    targets: &mut dyn CaptureTargets,
) -> Result<()> {
    if buf.pending.is_empty() {
        return Ok(());
    }
    let result = absorb_pending(g, buf, targets);
    buf.pending.clear();
    result
}

fn absorb_pending(
    g: &GpuContext,
    buf: &mut CaptureBuffers,
    targets: &mut dyn CaptureTargets,
) -> Result<()> {
    if buf.pending.unsynced {
        g.sync()?;
        buf.pending.unsynced = false;
    }
    for PendingSlot { meta, host } in buf.pending.pending() {
        let target = targets.target(meta.item, meta.layer).ok_or_else(|| {
            Error::cuda(format!(
                "capture: no recorders for layer {} of sequence {} at the end of the pass",
                meta.layer, meta.item
            ))
        })?;
        let scratch = AbsorbScratch {
            rows: &mut buf.host_rows,
            received: &mut buf.host_received,
        };
        absorb_chunk(meta, host, target.recorders, &target.mask, scratch)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_chunks_stay_within_the_budget() {
        assert_eq!(heads_per_chunk(1 << 20, 32), 32);
        assert_eq!(heads_per_chunk(100 << 20, 32), 2);
        assert_eq!(heads_per_chunk(1 << 30, 32), 1);
        assert_eq!(heads_per_chunk(0, 0), 1);
    }
}
