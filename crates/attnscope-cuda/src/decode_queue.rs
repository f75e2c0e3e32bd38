//! The decode calls of one layer's batch, launched together: a batched forward pass calls
//! `Backend::attention` once per sequence; for a decode step without capture the GPU backend only queues
//! the call here, and `Backend::attention_done` (after the layer's last sequence) launches the queue as
//! `attn_decode_*_batch_<T>` (kernels/attention_decode.cu), up to `DECODE_MAX_BATCH` sequences per launch,
//! with one split length planned over the whole batch (`ops::decode_batch_plan`): a batch of short contexts
//! fills the device in one launch instead of one small grid per sequence.
//!
//! `ATTNSCOPE_DECODE_BATCH=0` turns the queue off (one launch per sequence, the reference path).
//! The queue and its partials are reused from step to step: once grown, a decode step allocates nothing.

use crate::buffer::slice_ptr;
use crate::context::GpuContext;
use crate::ops::{self, AttentionCall, DecodeScratch, DecodeShape};
use crate::params::DECODE_MAX_BATCH;
use attnscope_core::Error;
use attnscope_core::Result;
use cudarc::driver::{CudaSlice, CudaStream};
use std::sync::OnceLock;

/// Whether decode calls are batched (`ATTNSCOPE_DECODE_BATCH`, read once: `0` = no, unset or `1` = yes).
pub fn batching_enabled() -> Result<bool> {
    static ON: OnceLock<std::result::Result<bool, String>> = OnceLock::new();
    ON.get_or_init(
        || match std::env::var("ATTNSCOPE_DECODE_BATCH").as_deref() {
            Err(_) | Ok("1") => Ok(true),
            Ok("0") => Ok(false),
            Ok(other) => Err(format!(
                "ATTNSCOPE_DECODE_BATCH={other:?}: expected 0 (one decode launch per sequence) or 1"
            )),
        },
    )
    .clone()
    .map_err(Error::input)
}

/// Split-K decode partials: `rows` partial rows (heads × splits × query rows) of 4 f32 statistics, one i32
/// argmax and `head_dim` f32 outputs (the scratch's for one sequence, the queue's for a batch).
pub struct DecodePartials {
    pub rows: usize,
    stat: CudaSlice<f32>,
    arg: CudaSlice<i32>,
    o: CudaSlice<f32>,
}

impl DecodePartials {
    pub fn new(g: &GpuContext, rows: usize, head_dim: usize) -> Result<DecodePartials> {
        Ok(DecodePartials {
            rows,
            stat: g.zeros_of(rows * 4)?,
            arg: g.zeros_of(rows)?,
            o: g.zeros_of(rows * head_dim)?,
        })
    }

    /// Their device addresses, as the decode launchers take them.
    pub fn scratch(&self, s: &CudaStream) -> DecodeScratch {
        DecodeScratch {
            stat: slice_ptr(&self.stat, s),
            arg: slice_ptr(&self.arg, s),
            o: slice_ptr(&self.o, s),
        }
    }
}

/// Queued decode calls and the partials of their batched launches.
#[derive(Default)]
pub struct DecodeQueue {
    calls: Vec<AttentionCall>,
    partials: Option<DecodePartials>,
}

impl DecodeQueue {
    /// Queues one sequence's decode call (its lse rows must not overlap another queued call's).
    pub fn push(&mut self, call: AttentionCall) {
        self.calls.push(call);
    }

    /// Forgets what a failed pass left queued (its buffers stay).
    pub fn clear(&mut self) {
        self.calls.clear();
    }

    /// Launches the queued calls, `DECODE_MAX_BATCH` sequences per launch, and empties the queue.
    pub fn flush(&mut self, g: &GpuContext, sms: usize) -> Result<()> {
        let calls = std::mem::take(&mut self.calls);
        let result = calls
            .chunks(DECODE_MAX_BATCH)
            .try_for_each(|chunk| self.launch(g, sms, chunk));
        self.calls = calls;
        self.calls.clear();
        result
    }

    fn launch(&mut self, g: &GpuContext, sms: usize, chunk: &[AttentionCall]) -> Result<()> {
        let Some(first) = chunk.first() else {
            return Ok(());
        };
        // A fixed array: no allocation per step.
        let mut shapes = [DecodeShape::of(first); DECODE_MAX_BATCH];
        for (s, c) in shapes.iter_mut().zip(chunk) {
            *s = DecodeShape::of(c);
        }
        let shapes = &shapes[..chunk.len()];
        let plan = ops::decode_batch_plan(shapes, sms)?;
        let rows = ops::batch_partial_rows(shapes, &plan);
        let partials = self.partials(g, rows, first.head_dim)?;
        ops::attention_decode_batch(g, chunk, &partials, &plan)
    }

    /// Device addresses of partials for `rows` rows, grown (to 1.25×) only when shorter.
    fn partials(&mut self, g: &GpuContext, rows: usize, head_dim: usize) -> Result<DecodeScratch> {
        if self.partials.as_ref().is_none_or(|p| rows > p.rows) {
            self.partials = Some(DecodePartials::new(g, rows + rows / 4, head_dim)?);
        }
        match &self.partials {
            Some(p) => Ok(p.scratch(&g.stream)),
            None => Err(Error::cuda("decode queue partials missing")),
        }
    }
}
