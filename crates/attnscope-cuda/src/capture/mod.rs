//! Capture on the GPU: after a layer's attention kernel, the second pass (kernels/attention_probs.cu) is
//! launched for the heads the capture selected, and its results go to the same `HeadRecorder`s the CPU
//! uses, so both backends produce the same tables.
//!
//! Two routes:
//! * **rows** — when exact weights are asked for, or a query row is a generation step (the per-step tables
//!   need each row), or there are only a few rows: probability rows `[heads, n_new, n_keys]` are written in
//!   f32 (a few heads at a time, at most [`ROWS_BUDGET_BYTES`]), read back, and handed to
//!   `HeadRecorder::observe` with the first pass's lse and Σp·s = lse − entropy.
//! * **reductions** — statistics only over prompt rows: the kernel reduces on the device (sink / previous /
//!   self / group mass, received per key, distance buckets; entropy, max weight and argmax come from the
//!   first pass) and only those vectors come back (`HeadRecorder::absorb_reduced`). No T×T buffer exists.

use crate::buffer::slice_ptr;
use crate::context::GpuContext;
use crate::ops::{self, AttentionCall, DECODE_MAX_Q, ProbsOutputs};
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::capture::{HeadRecorder, RowStats, RowView};
use attnscope_core::slots::AttentionMask;
use attnscope_core::slots::N_DISTANCE_BUCKETS;
use cudarc::driver::CudaSlice;

/// Most bytes of probability rows materialised on the device at once by the rows route.
pub const ROWS_BUDGET_BYTES: usize = 256 << 20;

/// The first pass's per-row statistics on the device, `[n_heads, n_new]` each (at least that long).
pub struct FirstPassStats<'a> {
    pub lse: &'a CudaSlice<f32>,
    pub entropy: &'a CudaSlice<f32>,
    pub max_weight: &'a CudaSlice<f32>,
    pub argmax: &'a CudaSlice<u32>,
}

/// Records one layer's attention of one sequence. `stats` are the first pass's statistics; `positions` the
/// cache's int64 positions.
pub fn record_layer(
    g: &GpuContext,
    call: &AttentionCall,
    positions: u64,
    stats: &FirstPassStats,
    recorders: &mut [HeadRecorder],
    mask: &AttentionMask,
) -> Result<()> {
    let heads: Vec<usize> = (0..recorders.len())
        .filter(|&h| recorders[h].is_active())
        .collect();
    if heads.is_empty() {
        return Ok(());
    }
    let n_new = call.n_new;
    let len = call.n_heads * n_new;
    let lse = g.read_slice(stats.lse, 0..len)?;
    let entropy = g.read_slice(stats.entropy, 0..len)?;
    let max_weight = g.read_slice(stats.max_weight, 0..len)?;
    let argmax = g.read_slice(stats.argmax, 0..len)?;
    let first = FirstPass {
        lse: &lse,
        entropy: &entropy,
        max_weight: &max_weight,
        argmax: &argmax,
    };
    let wants_weights = heads.iter().any(|&h| recorders[h].wants_weights());
    let generation_rows = mask.slots[call.q_start..call.q_start + n_new]
        .iter()
        .any(|s| s.step > 0);
    if wants_weights || generation_rows || n_new <= DECODE_MAX_Q {
        record_rows(g, call, positions, &heads, &first, recorders, mask)
    } else {
        record_reduced(g, call, positions, &heads, &first, recorders, mask)
    }
}

/// The first pass's per-row results, `[n_heads, n_new]`.
struct FirstPass<'a> {
    lse: &'a [f32],
    entropy: &'a [f32],
    max_weight: &'a [f32],
    argmax: &'a [u32],
}

/// Uploads the selected head indices as int32.
fn upload_heads(g: &GpuContext, heads: &[usize]) -> Result<cudarc::driver::CudaSlice<i32>> {
    let h: Vec<i32> = heads.iter().map(|&h| h as i32).collect();
    g.stream
        .clone_htod(&h)
        .map_err(|e| Error::cuda(format!("upload: {e:?}")))
}

/// The rows route: exact probability rows to the host, then `observe` per row.
fn record_rows(
    g: &GpuContext,
    call: &AttentionCall,
    positions: u64,
    heads: &[usize],
    first: &FirstPass,
    recorders: &mut [HeadRecorder],
    mask: &AttentionMask,
) -> Result<()> {
    let (n_new, n_keys) = (call.n_new, call.q_start + call.n_new);
    let per_head = n_new * n_keys * 4;
    let chunk = (ROWS_BUDGET_BYTES / per_head.max(1)).clamp(1, heads.len());
    let d_heads = upload_heads(g, heads)?;
    let heads_ptr = slice_ptr(&d_heads, &g.stream);
    let buf = g.zeros_of::<f32>(chunk * n_new * n_keys)?;
    for c0 in (0..heads.len()).step_by(chunk) {
        let sel = &heads[c0..(c0 + chunk).min(heads.len())];
        let out = ProbsOutputs {
            weights: slice_ptr(&buf, &g.stream),
            weights_f16: false,
            w_head_stride: n_new * n_keys,
            w_row_stride: n_keys,
            ..ProbsOutputs::default()
        };
        ops::attention_probs(
            g,
            call,
            heads_ptr + (c0 * 4) as u64,
            sel.len(),
            positions,
            &out,
        )?;
        let rows = g.read_slice(&buf, 0..sel.len() * n_new * n_keys)?;
        for (si, &h) in sel.iter().enumerate() {
            for i in 0..n_new {
                let slot = call.q_start + i;
                let row = &rows[(si * n_new + i) * n_keys..][..n_keys];
                let fi = h * n_new + i;
                let lse = first.lse[fi];
                recorders[h].observe(&RowView {
                    slot,
                    probs: &row[..=slot],
                    lse,
                    expected_score: lse as f64 - first.entropy[fi] as f64,
                    slots: mask.slots,
                    mask,
                });
            }
        }
    }
    Ok(())
}

/// The reductions route: statistics reduced on the device.
fn record_reduced(
    g: &GpuContext,
    call: &AttentionCall,
    positions: u64,
    heads: &[usize],
    first: &FirstPass,
    recorders: &mut [HeadRecorder],
    mask: &AttentionMask,
) -> Result<()> {
    let (n_new, n_keys, n_sel) = (call.n_new, call.q_start + call.n_new, heads.len());
    let d_heads = upload_heads(g, heads)?;
    let s = &g.stream;
    let f32_buf = || g.zeros_of::<f32>(n_sel * n_new);
    let (sink, prev, self_mass, group) = (f32_buf()?, f32_buf()?, f32_buf()?, f32_buf()?);
    let received = g.zeros_of::<f64>(n_sel * n_keys)?;
    let distance = g.zeros_of::<f64>(n_sel * N_DISTANCE_BUCKETS)?;
    let out = ProbsOutputs {
        sink: slice_ptr(&sink, s),
        prev: slice_ptr(&prev, s),
        self_mass: slice_ptr(&self_mass, s),
        group_mass: slice_ptr(&group, s),
        received: slice_ptr(&received, s),
        received_stride: n_keys,
        distance: slice_ptr(&distance, s),
        ..ProbsOutputs::default()
    };
    let heads_ptr = slice_ptr(&d_heads, s);
    ops::attention_probs(g, call, heads_ptr, n_sel, positions, &out)?;
    let len = n_sel * n_new;
    let sink = g.read_slice(&sink, 0..len)?;
    let prev = g.read_slice(&prev, 0..len)?;
    let self_mass = g.read_slice(&self_mass, 0..len)?;
    let group = g.read_slice(&group, 0..len)?;
    let received = g.read_slice(&received, 0..n_sel * n_keys)?;
    let distance = g.read_slice(&distance, 0..n_sel * N_DISTANCE_BUCKETS)?;
    for (si, &h) in heads.iter().enumerate() {
        let rows: Vec<RowStats> = (0..n_new)
            .map(|i| {
                let (fi, ri) = (h * n_new + i, si * n_new + i);
                let slot = call.q_start + i;
                RowStats {
                    entropy: first.entropy[fi],
                    max_weight: first.max_weight[fi],
                    argmax: first.argmax[fi],
                    sink_mass: sink[ri],
                    prev_mass: prev[ri],
                    self_mass: self_mass[ri],
                    group_mass: (mask.slots[slot].group >= 0).then_some(group[ri]),
                }
            })
            .collect();
        let mut dist = [0.0f64; N_DISTANCE_BUCKETS];
        dist.copy_from_slice(&distance[si * N_DISTANCE_BUCKETS..][..N_DISTANCE_BUCKETS]);
        let recv = &received[si * n_keys..][..n_keys];
        recorders[h].absorb_reduced(call.q_start, &rows, recv, &dist);
    }
    Ok(())
}
