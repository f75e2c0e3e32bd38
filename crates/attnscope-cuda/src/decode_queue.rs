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
use cudarc::driver::CudaSlice;
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

/// Queued decode calls and the partials of their batched launches.
#[derive(Default)]
pub struct DecodeQueue {
    calls: Vec<AttentionCall>,
    /// Partial rows the buffers below hold.
    rows: usize,
    stat: Option<CudaSlice<f32>>,
    arg: Option<CudaSlice<i32>>,
    o: Option<CudaSlice<f32>>,
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
        if rows > self.rows || self.stat.is_none() {
            let grown = rows + rows / 4;
            self.stat = Some(g.zeros_of(grown * 4)?);
            self.arg = Some(g.zeros_of(grown)?);
            self.o = Some(g.zeros_of(grown * head_dim)?);
            self.rows = grown;
        }
        let s = &g.stream;
        match (&self.stat, &self.arg, &self.o) {
            (Some(stat), Some(arg), Some(o)) => Ok(DecodeScratch {
                stat: slice_ptr(stat, s),
                arg: slice_ptr(arg, s),
                o: slice_ptr(o, s),
            }),
            _ => Err(Error::cuda("decode queue partials missing")),
        }
    }
}
