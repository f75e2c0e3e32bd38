//! Capture on the GPU: after a layer's attention kernel, the second pass (kernels/attention_probs.cu) is
//! launched for the heads the capture selected, and its results go to the same `HeadRecorder`s the CPU
//! uses, so both backends produce the same tables.
//!
//! Two routes, both reading back with asynchronous copies into pinned memory and **one** stream
//! synchronisation per layer (per chunk of heads when the weights exceed [`ROWS_BUDGET_BYTES`]):
//! * **device** — prompt rows (step 0): the kernel reduces the statistics on the device (sink / previous /
//!   self / group mass, received per key from per-row-group partials and one reduction kernel, distance
//!   buckets; entropy, max weight and argmax come from the first pass, copied on the device), all into one
//!   packed buffer, and writes the exact weights (when asked) in the recorders' dtype (f32 / f16). The
//!   host only unpacks the per-row vectors (`HeadRecorder::absorb_reduced`) and copies weight rows in bulk
//!   (`HeadRecorder::absorb_weight_rows`). No T×T buffer exists unless weights are asked for.
//! * **rows** — generation-step rows (step > 0: the per-step tables need the whole row and the slot kinds):
//!   f32 probability rows `[heads, n_new, n_keys]` (n_new is a decode step's few rows) and the first pass's
//!   lse / entropy come back, and `HeadRecorder::observe` takes each row.
//!
//! Every buffer lives in the scratch's [`CaptureBuffers`], grown only when a larger layer comes.

mod buffers;

pub use buffers::{CaptureBuffers, PackedLayout};

use crate::context::GpuContext;
use crate::ops::{self, AttentionCall, PROBS_KEY_SPLIT, ProbsOutputs};
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::capture::{HeadRecorder, RowView, WeightRows, WeightsDtype};
use attnscope_core::slots::AttentionMask;
use cudarc::driver::CudaSlice;

/// Most bytes of weight / probability rows materialised on the device (and pinned host) at once.
pub const ROWS_BUDGET_BYTES: usize = 256 << 20;

/// The first pass's per-row statistics on the device, `[n_heads, n_new]` each (at least that long).
pub struct FirstPassStats<'a> {
    pub lse: &'a CudaSlice<f32>,
    pub entropy: &'a CudaSlice<f32>,
    pub max_weight: &'a CudaSlice<f32>,
    pub argmax: &'a CudaSlice<u32>,
}

/// What one layer's capture works on.
pub struct LayerCapture<'a> {
    pub call: &'a AttentionCall,
    /// Device address of the cache's int64 positions.
    pub positions: u64,
    pub stats: FirstPassStats<'a>,
    /// SMs of the device (the second pass's plan).
    pub sms: usize,
}

/// Records one layer's attention of one sequence into `recorders`.
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
        let call = layer.call;
        let generation_rows = mask.slots[call.q_start..call.q_start + call.n_new]
            .iter()
            .any(|s| s.step > 0);
        if generation_rows {
            record_rows(g, layer, buf, &heads, recorders, mask)
        } else {
            record_on_device(g, layer, buf, &heads, recorders, mask)
        }
    };
    buf.host_heads = heads;
    result
}

/// Heads per chunk so that `bytes_per_head` of rows stay within [`ROWS_BUDGET_BYTES`].
fn heads_per_chunk(bytes_per_head: usize, n_heads: usize) -> usize {
    (ROWS_BUDGET_BYTES / bytes_per_head.max(1)).clamp(1, n_heads.max(1))
}

/// Queues the device copies of the first pass's `[n_heads, n_new]` statistics into the packed buffer.
fn pack_first_pass(
    g: &GpuContext,
    l: &PackedLayout,
    first: &FirstPassStats,
    packed: &mut CudaSlice<u32>,
) -> Result<()> {
    let n = l.n_heads * l.n_new;
    let e = |e| Error::cuda(format!("packing the first pass's statistics: {e:?}"));
    let floats = [first.lse, first.entropy, first.max_weight];
    for (src, at) in floats.into_iter().zip(l.first) {
        // SAFETY: f32 and u32 have the same size and alignment; the view reinterprets the first `n` f32 of
        // a live device buffer as their bit patterns, which the device copy moves verbatim.
        let bits = unsafe { src.transmute::<u32>(n) }
            .ok_or_else(|| Error::cuda("first-pass statistics shorter than n_heads × n_new"))?;
        g.stream
            .memcpy_dtod(&bits, &mut packed.slice_mut(at..at + n))
            .map_err(e)?;
    }
    let at = l.first[3];
    g.stream
        .memcpy_dtod(&first.argmax.slice(0..n), &mut packed.slice_mut(at..at + n))
        .map_err(e)
}

/// The device route (prompt rows).
fn record_on_device(
    g: &GpuContext,
    layer: &LayerCapture,
    buf: &mut CaptureBuffers,
    heads: &[usize],
    recorders: &mut [HeadRecorder],
    mask: &AttentionMask,
) -> Result<()> {
    let call = layer.call;
    let (n_new, n_keys) = (call.n_new, call.q_start + call.n_new);
    let wdt = recorders[heads[0]].weights_dtype();
    let stats = recorders[heads[0]].wants_stats();
    let elem = if wdt == Some(WeightsDtype::F16) { 2 } else { 4 };
    let chunk = match wdt {
        Some(_) => heads_per_chunk(n_new * n_keys * elem, heads.len()),
        None => heads.len(),
    };
    let heads_ptr = buf.heads_ptr(g, heads)?;
    for c0 in (0..heads.len()).step_by(chunk) {
        let sel = &heads[c0..(c0 + chunk).min(heads.len())];
        let n_sel = sel.len();
        let l = PackedLayout::new(call.n_heads, n_sel, n_new, n_keys);
        let plan = ops::probs_plan(n_new, n_keys, n_sel, PROBS_KEY_SPLIT, layer.sms);
        buf.packed.reserve(g, l.words)?;
        let w_len = n_sel * n_new * n_keys;
        let mut out = ProbsOutputs {
            w_head_stride: n_new * n_keys,
            w_row_stride: n_keys,
            ..ProbsOutputs::default()
        };
        match wdt {
            Some(WeightsDtype::F32) => {
                buf.rows_f32.reserve(g, w_len)?;
                out.weights = buf.rows_f32.ptr(g);
            }
            Some(WeightsDtype::F16) => {
                buf.rows_f16.reserve(g, w_len)?;
                out.weights = buf.rows_f16.ptr(g);
                out.weights_f16 = true;
            }
            None => {}
        }
        let base = buf.packed.ptr(g);
        let at = |w: usize| base + (w * 4) as u64;
        if stats {
            buf.reserve_recv_part(g, plan.recv_part_len(n_sel, n_keys))?;
            g.stream
                .memset_zeros(&mut buf.packed.dev.slice_mut(l.masses[0]..l.words))
                .map_err(|e| Error::cuda(format!("zeroing the capture statistics: {e:?}")))?;
            pack_first_pass(g, &l, &layer.stats, &mut buf.packed.dev)?;
            out = ProbsOutputs {
                sink: at(l.masses[0]),
                prev: at(l.masses[1]),
                self_mass: at(l.masses[2]),
                group_mass: at(l.masses[3]),
                received: at(l.received),
                received_stride: n_keys,
                recv_part: crate::buffer::slice_ptr(&buf.recv_part, &g.stream),
                distance: at(l.distance),
                ..out
            };
        }
        let sel_ptr = heads_ptr + (c0 * 4) as u64;
        ops::attention_probs_planned(g, call, sel_ptr, n_sel, layer.positions, &out, &plan)?;
        if stats {
            buf.packed.download(g, l.words)?;
        }
        match wdt {
            Some(WeightsDtype::F32) => buf.rows_f32.download(g, w_len)?,
            Some(WeightsDtype::F16) => buf.rows_f16.download(g, w_len)?,
            None => {}
        }
        g.sync()?;
        for (si, &h) in sel.iter().enumerate() {
            let rows = si * n_new * n_keys..(si + 1) * n_new * n_keys;
            match wdt {
                Some(WeightsDtype::F32) => {
                    let w = WeightRows::F32(&buf.rows_f32.host(w_len)?[rows]);
                    recorders[h].absorb_weight_rows(call.q_start, n_keys, w);
                }
                Some(WeightsDtype::F16) => {
                    let w = WeightRows::F16(&buf.rows_f16.host(w_len)?[rows]);
                    recorders[h].absorb_weight_rows(call.q_start, n_keys, w);
                }
                None => {}
            }
        }
        if stats {
            absorb_packed(buf, &l, call, sel, recorders, mask)?;
        }
    }
    Ok(())
}

/// Unpacks one chunk's statistics into its recorders.
fn absorb_packed(
    buf: &mut CaptureBuffers,
    l: &PackedLayout,
    call: &AttentionCall,
    sel: &[usize],
    recorders: &mut [HeadRecorder],
    mask: &AttentionMask,
) -> Result<()> {
    let words = buf.packed.host(l.words)?;
    for (si, &h) in sel.iter().enumerate() {
        let (rows, received) = (&mut buf.host_rows, &mut buf.host_received);
        let dist = l.unpack_head(words, si, h, call.q_start, mask.slots, rows, received);
        recorders[h].absorb_reduced(call.q_start, &buf.host_rows, &buf.host_received, &dist);
    }
    Ok(())
}

/// The rows route (generation-step rows): exact f32 probability rows and the first pass's lse / entropy to
/// the host, then `observe` per row.
fn record_rows(
    g: &GpuContext,
    layer: &LayerCapture,
    buf: &mut CaptureBuffers,
    heads: &[usize],
    recorders: &mut [HeadRecorder],
    mask: &AttentionMask,
) -> Result<()> {
    let call = layer.call;
    let (n_new, n_keys) = (call.n_new, call.q_start + call.n_new);
    let chunk = heads_per_chunk(n_new * n_keys * 4, heads.len());
    let heads_ptr = buf.heads_ptr(g, heads)?;
    let l = PackedLayout::new(call.n_heads, 0, n_new, n_keys);
    buf.packed.reserve(g, l.first_words)?;
    pack_first_pass(g, &l, &layer.stats, &mut buf.packed.dev)?;
    buf.packed.download(g, l.first_words)?;
    for c0 in (0..heads.len()).step_by(chunk) {
        let sel = &heads[c0..(c0 + chunk).min(heads.len())];
        let w_len = sel.len() * n_new * n_keys;
        buf.rows_f32.reserve(g, w_len)?;
        let out = ProbsOutputs {
            weights: buf.rows_f32.ptr(g),
            w_head_stride: n_new * n_keys,
            w_row_stride: n_keys,
            ..ProbsOutputs::default()
        };
        let plan = ops::probs_plan(n_new, n_keys, sel.len(), PROBS_KEY_SPLIT, layer.sms);
        let sel_ptr = heads_ptr + (c0 * 4) as u64;
        ops::attention_probs_planned(g, call, sel_ptr, sel.len(), layer.positions, &out, &plan)?;
        buf.rows_f32.download(g, w_len)?;
        g.sync()?;
        let words = buf.packed.host(l.first_words)?;
        let rows = buf.rows_f32.host(w_len)?;
        for (si, &h) in sel.iter().enumerate() {
            for i in 0..n_new {
                let slot = call.q_start + i;
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
