//! Queues one captured chunk: the second pass (kernels/attention_probs.cu) for the chunk's heads into the
//! shared device buffers, then the asynchronous copies of what the route reads back into the chunk's
//! pinned [`HostSet`]. Nothing here waits for the device.

use crate::capture::buffers::DeviceBuffers;
use crate::capture::layout::PackedLayout;
use crate::capture::pending::{ChunkMeta, Route};
use crate::capture::pinned::{HostSet, reserve_dev};
use crate::context::GpuContext;
use crate::ops::{self, AttentionCall, PROBS_KEY_SPLIT, ProbsOutputs};
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::capture::WeightsDtype;
use cudarc::driver::CudaSlice;

/// The first pass's per-row statistics on the device, `[n_heads, n_new]` each (at least that long).
pub struct FirstPassStats<'a> {
    pub lse: &'a CudaSlice<f32>,
    pub entropy: &'a CudaSlice<f32>,
    pub max_weight: &'a CudaSlice<f32>,
    pub argmax: &'a CudaSlice<u32>,
}

/// What one layer's capture of one sequence works on.
pub struct LayerCapture<'a> {
    /// The sequence's index in the pass's batch, and the layer.
    pub item: usize,
    pub layer: usize,
    pub call: &'a AttentionCall,
    /// Device address of the cache's int64 positions.
    pub positions: u64,
    pub stats: FirstPassStats<'a>,
    /// SMs of the device (the second pass's plan).
    pub sms: usize,
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

/// Queues chunk `meta` (its heads at `heads_ptr`, int32 on the device) and its read-back into `host`.
pub fn launch_chunk(
    g: &GpuContext,
    layer: &LayerCapture,
    dev: &mut DeviceBuffers,
    meta: &ChunkMeta,
    heads_ptr: u64,
    host: &mut HostSet,
) -> Result<()> {
    let (call, l) = (layer.call, &meta.layout);
    let (n_new, n_keys, n_sel) = (l.n_new, l.n_keys, meta.heads.len());
    let w_len = meta.row_elems();
    let mut out = ProbsOutputs {
        w_head_stride: n_new * n_keys,
        w_row_stride: n_keys,
        ..ProbsOutputs::default()
    };
    let plan = ops::probs_plan(n_new, n_keys, n_sel, PROBS_KEY_SPLIT, layer.sms);
    let (weights, stats) = match meta.route {
        Route::Device { weights, stats } => (weights, stats),
        Route::Rows => (Some(WeightsDtype::F32), false),
    };
    match weights {
        Some(WeightsDtype::F32) => {
            reserve_dev(g, &mut dev.rows_f32, w_len)?;
            out.weights = crate::buffer::slice_ptr(&dev.rows_f32, &g.stream);
        }
        Some(WeightsDtype::F16) => {
            reserve_dev(g, &mut dev.rows_f16, w_len)?;
            out.weights = crate::buffer::slice_ptr(&dev.rows_f16, &g.stream);
            out.weights_f16 = true;
        }
        None => {}
    }
    let words = meta.packed_words();
    reserve_dev(g, &mut dev.packed, words)?;
    if stats {
        reserve_dev(g, &mut dev.recv_part, plan.recv_part_len(n_sel, n_keys))?;
        g.stream
            .memset_zeros(&mut dev.packed.slice_mut(l.masses[0]..l.words))
            .map_err(|e| Error::cuda(format!("zeroing the capture statistics: {e:?}")))?;
        let base = crate::buffer::slice_ptr(&dev.packed, &g.stream);
        let at = |w: usize| base + (w * 4) as u64;
        out = ProbsOutputs {
            sink: at(l.masses[0]),
            prev: at(l.masses[1]),
            self_mass: at(l.masses[2]),
            group_mass: at(l.masses[3]),
            received: at(l.received),
            received_stride: n_keys,
            recv_part: crate::buffer::slice_ptr(&dev.recv_part, &g.stream),
            distance: at(l.distance),
            ..out
        };
    }
    if words > 0 {
        pack_first_pass(g, l, &layer.stats, &mut dev.packed)?;
    }
    ops::attention_probs_planned(g, call, heads_ptr, n_sel, layer.positions, &out, &plan)?;
    host.packed.copy_from(g, &dev.packed, words)?;
    match weights {
        Some(WeightsDtype::F32) => host.rows_f32.copy_from(g, &dev.rows_f32, w_len),
        Some(WeightsDtype::F16) => host.rows_f16.copy_from(g, &dev.rows_f16, w_len),
        None => Ok(()),
    }
}
