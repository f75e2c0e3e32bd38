//! The attention step of [`CudaBackend`]: checks, the one `AttentionCall`, the queue of a batched decode,
//! the decode or prefill kernel, and the capture's second pass.

use super::CudaBackend;
use crate::buffer::DeviceBuf;
use crate::capture::{LayerCapture, record_layer};
use crate::decode_queue::batching_enabled;
use crate::ops::{self, AttentionCall, DECODE_MAX_Q};
use crate::scratch::DeviceScratch;
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::capture::HeadRecorder;
use attnscope_core::model::backend::AttentionStep;
use attnscope_core::slots::Visibility;

impl CudaBackend {
    /// [`Backend::attention`]: a decode step without capture is queued for the layer's batched launch
    /// (`attention_done`); otherwise the decode or prefill kernel runs now, then the capture's second pass.
    pub(super) fn attend(
        &self,
        scratch: &mut DeviceScratch,
        step: &AttentionStep<Self>,
        out: &mut DeviceBuf,
        recorders: Option<&mut [HeadRecorder]>,
    ) -> Result<()> {
        let (g, kv, sh) = (&*self.gpu, step.kv, step.shape);
        self.check_kv(kv)?;
        let m = step.rows.len();
        let (q_dim, kv_dim) = (sh.q_dim(), sh.kv_dim());
        self.need(step.q, step.rows.end * q_dim, "attention queries")?;
        self.need(out, step.rows.end * q_dim, "attention output")?;
        if m == 0 {
            return Ok(());
        }
        if step.layer >= kv.keys.len() || step.q_start + m > kv.capacity || kv_dim != kv.kv_dim {
            return Err(Error::cuda(format!(
                "attention at layer {} over slots ..{} does not fit the KV cache ({} layers × {} slots)",
                step.layer,
                step.q_start + m,
                kv.keys.len(),
                kv.capacity
            )));
        }
        scratch.check_stats(sh.n_heads, m)?;
        let capturing = recorders
            .as_ref()
            .is_some_and(|r| r.iter().any(|h| h.is_active()));
        let mut call = self.attention_call(scratch, step, out, capturing);
        if m <= DECODE_MAX_Q && !capturing && batching_enabled()? {
            // Launched with the layer's other sequences by `attention_done`; its lse rows are its own
            // (`[n_heads, m]` at row offset rows.start), so queued calls never share them.
            scratch.check_stats(sh.n_heads, step.rows.end)?;
            call.lse += (sh.n_heads * step.rows.start * 4) as u64;
            scratch.decode_queue.push(call);
            return Ok(());
        }
        if m <= DECODE_MAX_Q {
            let partials = scratch.decode_partials(g, kv)?;
            let plan = ops::decode_plan(&ops::DecodeShape::of(&call), scratch.sms())?;
            ops::attention_decode_planned(g, &call, &partials, &plan)?;
        } else {
            ops::attention_prefill(g, &call)?;
        }
        if let Some(recs) = recorders.filter(|_| capturing) {
            let sms = scratch.sms();
            let (stats, buffers) = scratch.capture_parts();
            let layer = LayerCapture {
                item: step.item,
                layer: step.layer,
                call: &call,
                positions: kv.positions_ptr(),
                stats,
                sms,
            };
            record_layer(g, &layer, buffers, recs, &step.mask)?;
        }
        Ok(())
    }

    /// The launch operands of one attention step: queries and output at rows `step.rows`, the cache's keys,
    /// values and groups, the scratch's statistics (entropy, max weight and argmax only when `capturing`).
    fn attention_call(
        &self,
        scratch: &DeviceScratch,
        step: &AttentionStep<Self>,
        out: &DeviceBuf,
        capturing: bool,
    ) -> AttentionCall {
        let (s, kv, sh) = (&self.gpu.stream, step.kv, step.shape);
        let q_dim = sh.q_dim();
        let [lse, entropy, max_weight, argmax] = scratch.stat_ptrs(s, capturing);
        AttentionCall {
            dtype: self.dtype,
            q: step.q.ptr_at(s, step.rows.start * q_dim),
            q_stride: q_dim,
            k: kv.keys[step.layer].ptr(s),
            v: kv.values[step.layer].ptr(s),
            kv_stride: sh.kv_dim(),
            o: out.ptr_at(s, step.rows.start * q_dim),
            o_stride: q_dim,
            lse,
            entropy,
            max_weight,
            argmax,
            groups: kv.groups_ptr(),
            isolated: step.mask.visibility == Visibility::Isolated,
            window: step.mask.sliding_window.unwrap_or(0),
            q_start: step.q_start,
            n_new: step.rows.len(),
            n_heads: sh.n_heads,
            n_kv_heads: sh.n_kv_heads,
            head_dim: sh.head_dim,
            scale: sh.scale,
        }
    }
}
