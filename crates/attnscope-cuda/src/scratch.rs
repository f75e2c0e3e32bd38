//! Per-pass device state of the CUDA backend beyond the activations (`Backend::Scratch`): token ids and
//! positions of the stacked rows, the first pass's attention statistics, the split-K decode partials and the
//! f32 logits. Allocated once per workspace and grown only when a larger batch or a longer cache comes, so
//! a decode step allocates nothing on the device. The capture's pending read-backs of a pass live here until
//! `Backend::finish_capture` consumes them (or the next pass discards what a failed one left).

use crate::buffer::slice_ptr;
use crate::capture::{CaptureBuffers, FirstPassStats};
use crate::context::GpuContext;
use crate::decode_queue::{DecodePartials, DecodeQueue};
use crate::kv::DeviceKv;
use crate::ops::{DecodeScratch, decode_scratch_rows, sm_count};
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::config::ModelConfig;
use attnscope_core::slots::SlotInfo;
use cudarc::driver::{CudaSlice, CudaStream};

/// Device scratch for passes of up to `rows` stacked rows.
pub struct DeviceScratch {
    /// Rows the id, position and statistics buffers hold.
    rows: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    vocab: usize,
    /// SMs of the device (the decode planner's target, read once).
    sms: usize,
    /// Rows of the current pass (set by [`DeviceScratch::begin_pass`]).
    pass_rows: usize,
    /// Token id per stacked row `[rows]`.
    pub ids: CudaSlice<u32>,
    /// Position per stacked row `[rows]` (RoPE and learned positions).
    pub positions: CudaSlice<i64>,
    host_ids: Vec<u32>,
    host_positions: Vec<i64>,
    /// First-pass statistics `[n_heads, rows]` of one attention call.
    pub lse: CudaSlice<f32>,
    pub entropy: CudaSlice<f32>,
    pub max_weight: CudaSlice<f32>,
    pub argmax: CudaSlice<u32>,
    decode: DecodePartials,
    /// Decode calls of the current layer waiting for one batched launch (`Backend::attention_done`).
    pub decode_queue: DecodeQueue,
    /// The capture's device and pinned buffers (grown by the first captured layer that needs more).
    pub capture: CaptureBuffers,
    /// f32 logits `[rows, vocab]`.
    pub logits: CudaSlice<f32>,
}

/// The model dimensions and the device's SM count the scratch is sized from.
#[derive(Clone, Copy)]
struct ScratchDims {
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    vocab: usize,
    sms: usize,
}

impl DeviceScratch {
    /// Scratch for passes of up to `rows` rows of model `cfg`.
    pub fn new(g: &GpuContext, cfg: &ModelConfig, rows: usize) -> Result<DeviceScratch> {
        let dims = ScratchDims {
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            vocab: cfg.vocab_size,
            sms: sm_count(g)?,
        };
        DeviceScratch::sized(g, dims, rows, 0)
    }

    fn dims(&self) -> ScratchDims {
        ScratchDims {
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
            vocab: self.vocab,
            sms: self.sms,
        }
    }

    /// Buffers for passes of up to `rows` rows of a model of `dims`, with decode partials of `decode_rows`
    /// rows.
    fn sized(
        g: &GpuContext,
        dims: ScratchDims,
        rows: usize,
        decode_rows: usize,
    ) -> Result<DeviceScratch> {
        let rows = rows.max(1);
        let ScratchDims {
            n_heads,
            n_kv_heads,
            head_dim,
            vocab,
            sms,
        } = dims;
        let stats = n_heads * rows;
        Ok(DeviceScratch {
            rows,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab,
            sms,
            pass_rows: 0,
            ids: g.zeros_of(rows)?,
            positions: g.zeros_of(rows)?,
            host_ids: Vec::with_capacity(rows),
            host_positions: Vec::with_capacity(rows),
            lse: g.zeros_of(stats)?,
            entropy: g.zeros_of(stats)?,
            max_weight: g.zeros_of(stats)?,
            argmax: g.zeros_of(stats)?,
            decode: DecodePartials::new(g, decode_rows, head_dim)?,
            decode_queue: DecodeQueue::default(),
            capture: CaptureBuffers::new(g)?,
            logits: g.zeros_of(rows * vocab)?,
        })
    }

    /// SMs of the device.
    pub fn sms(&self) -> usize {
        self.sms
    }

    /// Rows of the current pass.
    pub fn pass_rows(&self) -> usize {
        self.pass_rows
    }

    /// Uploads the token ids and positions of the pass's stacked `slots` (grows first if the pass is larger
    /// than any before).
    pub fn begin_pass(&mut self, g: &GpuContext, slots: &[SlotInfo]) -> Result<()> {
        self.capture.discard_stale(g)?; // what a failed pass left pending
        self.decode_queue.clear();
        if slots.len() > self.rows {
            let mut grown = DeviceScratch::sized(g, self.dims(), slots.len(), self.decode.rows)?;
            std::mem::swap(&mut grown.capture, &mut self.capture);
            std::mem::swap(&mut grown.decode_queue, &mut self.decode_queue);
            *self = grown;
        }
        self.host_ids.clear();
        self.host_ids.extend(slots.iter().map(|s| s.token));
        self.host_positions.clear();
        self.host_positions.extend(slots.iter().map(|s| s.position));
        self.pass_rows = slots.len();
        if slots.is_empty() {
            return Ok(());
        }
        let err = |e| Error::cuda(format!("uploading token ids and positions: {e:?}"));
        let n = slots.len();
        g.stream
            .memcpy_htod(&self.host_ids, &mut self.ids.slice_mut(0..n))
            .map_err(err)?;
        g.stream
            .memcpy_htod(&self.host_positions, &mut self.positions.slice_mut(0..n))
            .map_err(err)
    }

    /// Checks that one attention call of `n_new` rows fits the statistics buffers.
    pub fn check_stats(&self, n_heads: usize, n_new: usize) -> Result<()> {
        if n_heads * n_new > self.lse.len() {
            return Err(Error::cuda(format!(
                "attention over {n_new} rows × {n_heads} heads exceeds the scratch of {} rows",
                self.rows
            )));
        }
        Ok(())
    }

    /// Decode partials for any decode call against `kv` (up to its capacity, up to `DECODE_MAX_Q` rows,
    /// whatever split the planner picks: `decode_scratch_rows` bounds them): allocated on the first call
    /// that needs more, so a longer cache grows them once and the decode steps allocate nothing.
    pub fn decode_partials(&mut self, g: &GpuContext, kv: &DeviceKv) -> Result<DecodeScratch> {
        let (n, n_kv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let needed = decode_scratch_rows(kv.capacity, n, n_kv, hd, self.sms);
        if needed > self.decode.rows {
            self.decode = DecodePartials::new(g, needed, self.head_dim)?;
        }
        Ok(self.decode.scratch(&g.stream))
    }

    /// The f32 logits buffer, grown to `len` elements if it is shorter.
    pub fn logits(&mut self, g: &GpuContext, len: usize) -> Result<&CudaSlice<f32>> {
        if len > self.logits.len() {
            self.logits = g.zeros_of(len)?;
        }
        Ok(&self.logits)
    }

    /// Records that the stream was synchronised: the capture's queued read-backs are complete.
    pub fn mark_synced(&mut self) {
        self.capture.pending.unsynced = false;
    }

    /// The first pass's statistics and the capture's buffers, for the capture's second pass.
    pub fn capture_parts(&mut self) -> (FirstPassStats<'_>, &mut CaptureBuffers) {
        let stats = FirstPassStats {
            lse: &self.lse,
            entropy: &self.entropy,
            max_weight: &self.max_weight,
            argmax: &self.argmax,
        };
        (stats, &mut self.capture)
    }

    /// Device addresses of the statistics: lse always, the others only when `capturing` (0 = not computed).
    pub fn stat_ptrs(&self, s: &CudaStream, capturing: bool) -> [u64; 4] {
        let opt = |p: u64| if capturing { p } else { 0 };
        [
            slice_ptr(&self.lse, s),
            opt(slice_ptr(&self.entropy, s)),
            opt(slice_ptr(&self.max_weight, s)),
            opt(slice_ptr(&self.argmax, s)),
        ]
    }
}
