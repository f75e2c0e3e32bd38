//! The CUDA implementation of the device seam ([`Backend`]): the generic forward pass (`model::forward`)
//! runs on one GPU through these methods, each one or a few launches of `kernels/*.cu` or cuBLAS on the
//! context's single stream (so the order of calls is the order of execution).
//!
//! Weights, activations and the KV cache are stored in one dtype (f32, bf16 or f16; every kernel computes in
//! f32, cuBLAS accumulates in f32). Logits are f32, with the lm_head bias added in f32. The attention step
//! (decode queue, decode or prefill kernel, capture) is in `attention.rs`.

mod attention;

use crate::buffer::{DeviceBuf, slice_ptr};
use crate::capture::finish_pass;
use crate::context::GpuContext;
use crate::dtype::GpuDtype;
use crate::kv::DeviceKv;
use crate::ops::{self, Grid};
use crate::scratch::DeviceScratch;
pub use crate::weights::{DeviceLinear, DeviceNorm, DeviceRope, DeviceTable};
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::capture::HeadRecorder;
use attnscope_core::config::{Activation, ModelConfig, NormKind};
use attnscope_core::model::backend::{
    AttentionStep, Backend, BackendWeights, CaptureTargets, DeviceInfo, LmHead,
};
use attnscope_core::model::rope::Rope;
use attnscope_core::slots::SlotInfo;
use attnscope_core::weights::{Linear, ModelWeights, Norm, WeightMatrix};
use std::ops::Range;
use std::sync::Arc;

/// One GPU as a [`Backend`], storing everything in `dtype`.
pub struct CudaBackend {
    gpu: Arc<GpuContext>,
    dtype: GpuDtype,
}

impl CudaBackend {
    /// Opens GPU `ordinal` (compiling and loading the kernels once per process) for storage dtype `dtype`.
    /// Never panics: a missing driver, NVRTC or cuBLAS is an `Error::Cuda` one-liner.
    pub fn open(ordinal: usize, dtype: GpuDtype) -> Result<CudaBackend> {
        Ok(CudaBackend {
            gpu: GpuContext::shared(ordinal)?,
            dtype,
        })
    }

    /// A backend on an already opened context.
    pub fn on(gpu: Arc<GpuContext>, dtype: GpuDtype) -> CudaBackend {
        CudaBackend { gpu, dtype }
    }

    /// The device context.
    pub fn gpu(&self) -> &Arc<GpuContext> {
        &self.gpu
    }

    /// The storage dtype.
    pub fn dtype(&self) -> GpuDtype {
        self.dtype
    }

    fn upload_linear(&self, l: &Linear) -> Result<DeviceLinear> {
        let g = &*self.gpu;
        Ok(DeviceLinear {
            w: g.upload(self.dtype, &l.weight.to_f32())?,
            bias: l
                .bias
                .as_ref()
                .map(|b| g.upload(self.dtype, b))
                .transpose()?,
            logit_bias: None,
            in_dim: l.in_dim,
            out_dim: l.out_dim,
        })
    }

    fn upload_norm(&self, n: &Norm) -> Result<DeviceNorm> {
        let g = &*self.gpu;
        Ok(DeviceNorm {
            w: g.upload(self.dtype, &n.weight)?,
            b: n.bias
                .as_ref()
                .map(|b| g.upload(self.dtype, b))
                .transpose()?,
        })
    }

    /// Checks that `buf` is in the storage dtype and holds at least `len` elements.
    fn need(&self, buf: &DeviceBuf, len: usize, what: &str) -> Result<()> {
        if buf.dtype() != self.dtype || buf.len < len {
            return Err(Error::cuda(format!(
                "{what}: needs {len} elements of {}, got {buf:?}",
                self.dtype
            )));
        }
        Ok(())
    }

    /// Checks that `kv` was made by a backend on this GPU with this dtype.
    fn check_kv(&self, kv: &DeviceKv) -> Result<()> {
        if kv.dtype != self.dtype || !Arc::ptr_eq(&kv.gpu, &self.gpu) {
            return Err(Error::cuda(
                "the KV cache was not made for this GPU model (use Model::new_cache)",
            ));
        }
        Ok(())
    }
}

impl Backend for CudaBackend {
    type Buf = DeviceBuf;
    type Linear = DeviceLinear;
    type Norm = DeviceNorm;
    type Table = DeviceTable;
    type Rope = DeviceRope;
    type Kv = DeviceKv;
    type Scratch = DeviceScratch;

    fn device(&self) -> DeviceInfo {
        DeviceInfo {
            device: format!("cuda:{}", self.gpu.ordinal),
            name: Some(self.gpu.name.clone()),
            dtype: self.dtype.as_str().to_string(),
        }
    }

    fn upload(&self, weights: &Arc<ModelWeights>) -> Result<Arc<BackendWeights<Self>>> {
        let width = weights.final_norm.weight.len();
        // Host tables and linear weights may be stored as bf16/f16 (a CPU option): uploaded through f32.
        let table = |t: &WeightMatrix| -> Result<DeviceTable> {
            Ok(DeviceTable {
                data: self.gpu.upload(self.dtype, &t.to_f32())?,
                width,
            })
        };
        let mut mapped =
            weights.try_map(&|l| self.upload_linear(l), &|n| self.upload_norm(n), &table)?;
        // The output head's bias is added to f32 logits in f32.
        if let (Some(dev), Some(host)) = (mapped.lm_head.as_mut(), weights.lm_head.as_ref()) {
            dev.bias = None;
            dev.logit_bias = host
                .bias
                .as_ref()
                .map(|b| self.gpu.upload_slice(b))
                .transpose()?;
        }
        Ok(Arc::new(mapped))
    }

    fn upload_rope(&self, rope: &Rope) -> Result<DeviceRope> {
        Ok(DeviceRope {
            inv_freq: self.gpu.upload_slice(&rope.inv_freq)?,
            rotary_dim: rope.rotary_dim,
        })
    }

    fn alloc(&self, len: usize) -> Result<DeviceBuf> {
        self.gpu.zeros(self.dtype, len)
    }

    fn new_scratch(&self, cfg: &ModelConfig, rows: usize) -> Result<DeviceScratch> {
        DeviceScratch::new(&self.gpu, cfg, rows)
    }

    fn new_kv(&self, cfg: &ModelConfig, capacity: usize) -> Result<DeviceKv> {
        DeviceKv::new(&self.gpu, cfg, capacity, self.dtype)
    }

    fn begin_pass(&self, scratch: &mut DeviceScratch, slots: &[SlotInfo]) -> Result<()> {
        scratch.begin_pass(&self.gpu, slots)
    }

    fn write_slots(&self, kv: &mut DeviceKv, start: usize, slots: &[SlotInfo]) -> Result<()> {
        self.check_kv(kv)?;
        kv.write_slots(start, slots)
    }

    fn embed(
        &self,
        scratch: &DeviceScratch,
        embed: &DeviceTable,
        pos_embed: Option<&DeviceTable>,
        x: &mut DeviceBuf,
        rows: usize,
    ) -> Result<()> {
        let (g, dt, h) = (&*self.gpu, self.dtype, embed.width);
        if rows > scratch.pass_rows() {
            return Err(Error::cuda(format!(
                "embedding {rows} rows of a pass of {}",
                scratch.pass_rows()
            )));
        }
        self.need(x, rows * h, "embedding output")?;
        let s = &g.stream;
        let (ids, pos) = (slice_ptr(&scratch.ids, s), slice_ptr(&scratch.positions, s));
        let vocab = embed.rows();
        let (table, out) = (embed.data.ptr(s), x.ptr(s));
        ops::embedding_gather(g, dt, table, ids, out, rows, h, vocab, Grid::Auto)?;
        if let Some(wpe) = pos_embed {
            // Rows of the uploaded table (as the CPU indexes it), not cfg.max_positions, which may be absent.
            let max_pos = wpe.rows();
            let (table, out) = (wpe.data.ptr(s), x.ptr(s));
            ops::position_add(g, dt, table, pos, out, rows, h, max_pos, Grid::Auto)?;
        }
        Ok(())
    }

    fn norm(
        &self,
        kind: NormKind,
        eps: f32,
        x: &DeviceBuf,
        w: &DeviceNorm,
        out: &mut DeviceBuf,
        rows: usize,
        dim: usize,
    ) -> Result<()> {
        self.need(x, rows * dim, "norm input")?;
        self.need(out, rows * dim, "norm output")?;
        let s = &self.gpu.stream;
        let b = w.b.as_ref().map_or(0, |b| b.ptr(s));
        let (x, w, out) = (x.ptr(s), w.w.ptr(s), out.ptr(s));
        ops::norm(&self.gpu, self.dtype, kind, x, w, b, out, rows, dim, eps)
    }

    fn norm_in_place(
        &self,
        _scratch: &mut DeviceScratch,
        x: &mut DeviceBuf,
        w: &DeviceNorm,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<()> {
        // The RMSNorm kernel reads a row completely before writing it, so x may be its own output.
        self.need(x, rows * dim, "q/k norm")?;
        let s = &self.gpu.stream;
        let (xp, wp) = (x.ptr(s), w.w.ptr(s));
        let rms = NormKind::RmsNorm;
        ops::norm(&self.gpu, self.dtype, rms, xp, wp, 0, xp, rows, dim, eps)
    }

    fn linear(
        &self,
        x: &DeviceBuf,
        rows: usize,
        w: &DeviceLinear,
        y: &mut DeviceBuf,
    ) -> Result<()> {
        self.need(x, rows * w.in_dim, "linear input")?;
        self.need(y, rows * w.out_dim, "linear output")?;
        let (g, dt) = (&*self.gpu, self.dtype);
        let s = &g.stream;
        let (xp, wp, yp) = (x.ptr(s), w.w.ptr(s), y.ptr(s));
        ops::gemm(g, dt, xp, rows, w.in_dim, wp, w.out_dim, yp, dt)?;
        if let Some(b) = &w.bias {
            ops::bias_add(g, dt, yp, b.ptr(s), rows, w.out_dim, Grid::Auto)?;
        }
        Ok(())
    }

    fn rope(
        &self,
        rope: &DeviceRope,
        scratch: &DeviceScratch,
        x: &mut DeviceBuf,
        rows: usize,
        heads: usize,
        head_dim: usize,
    ) -> Result<()> {
        let row = heads * head_dim;
        self.need(x, rows * row, "rope")?;
        if rows > scratch.pass_rows() {
            return Err(Error::cuda("rope over more rows than the pass has"));
        }
        let (g, s) = (&*self.gpu, &self.gpu.stream);
        let pos = slice_ptr(&scratch.positions, s);
        let freq = slice_ptr(&rope.inv_freq, s);
        let rd = rope.rotary_dim;
        ops::rope(
            g,
            self.dtype,
            x.ptr(s),
            pos,
            freq,
            rows,
            heads,
            head_dim,
            rd,
            row,
        )
    }

    fn write_kv(
        &self,
        kv: &mut DeviceKv,
        layer: usize,
        start: usize,
        k: &DeviceBuf,
        v: &DeviceBuf,
        rows: Range<usize>,
        kv_dim: usize,
    ) -> Result<()> {
        self.check_kv(kv)?;
        if layer >= kv.keys.len() {
            return Err(Error::cuda(format!("no layer {layer} in the KV cache")));
        }
        let (src, dst, n) = (rows.start * kv_dim, start * kv_dim, rows.len() * kv_dim);
        self.gpu.copy(k, src, &mut kv.keys[layer], dst, n)?;
        self.gpu.copy(v, src, &mut kv.values[layer], dst, n)
    }

    fn attention(
        &self,
        scratch: &mut DeviceScratch,
        step: &AttentionStep<Self>,
        out: &mut DeviceBuf,
        recorders: Option<&mut [HeadRecorder]>,
    ) -> Result<()> {
        self.attend(scratch, step, out, recorders)
    }

    fn attention_done(&self, scratch: &mut DeviceScratch) -> Result<()> {
        let sms = scratch.sms();
        scratch.decode_queue.flush(&self.gpu, sms)
    }

    fn add(&self, x: &mut DeviceBuf, y: &DeviceBuf, n: usize) -> Result<()> {
        self.need(x, n, "residual")?;
        self.need(y, n, "residual addend")?;
        let s = &self.gpu.stream;
        ops::residual_add(&self.gpu, self.dtype, x.ptr(s), y.ptr(s), n, Grid::Auto)
    }

    fn add2(&self, x: &mut DeviceBuf, a: &DeviceBuf, b: &DeviceBuf, n: usize) -> Result<()> {
        self.need(x, n, "residual")?;
        self.need(a, n, "residual addend")?;
        self.need(b, n, "residual addend")?;
        let s = &self.gpu.stream;
        let (xp, ap, bp) = (x.ptr(s), a.ptr(s), b.ptr(s));
        ops::residual_add2(&self.gpu, self.dtype, xp, ap, bp, n, Grid::Auto)
    }

    fn activate(&self, act: Activation, x: &mut DeviceBuf, n: usize) -> Result<()> {
        self.need(x, n, "activation")?;
        let s = &self.gpu.stream;
        ops::activate(&self.gpu, self.dtype, act, x.ptr(s), n, Grid::Auto)
    }

    fn activate_gated(
        &self,
        act: Activation,
        gate: &DeviceBuf,
        up: &mut DeviceBuf,
        n: usize,
    ) -> Result<()> {
        self.need(gate, n, "gate")?;
        self.need(up, n, "up projection")?;
        let s = &self.gpu.stream;
        let (gp, up) = (gate.ptr(s), up.ptr(s));
        ops::activate_gated(&self.gpu, self.dtype, act, gp, up, n, Grid::Auto)
    }

    fn gather_rows(
        &self,
        x: &DeviceBuf,
        ranges: &[Range<usize>],
        width: usize,
        out: &mut DeviceBuf,
    ) -> Result<()> {
        let mut row = 0;
        for r in ranges {
            let n = r.len() * width;
            self.gpu.copy(x, r.start * width, out, row * width, n)?;
            row += r.len();
        }
        Ok(())
    }

    fn lm_head(
        &self,
        scratch: &mut DeviceScratch,
        x: &DeviceBuf,
        rows: usize,
        head: LmHead<Self>,
        vocab: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let (g, dt) = (&*self.gpu, self.dtype);
        let s = &g.stream;
        let (w, in_dim, bias) = match head {
            LmHead::Linear(l) => (&l.w, l.in_dim, l.logit_bias.as_ref()),
            LmHead::Tied(t) => (&t.data, t.width, None),
        };
        self.need(x, rows * in_dim, "lm_head input")?;
        self.need(w, vocab * in_dim, "lm_head weight")?;
        let len = rows * vocab;
        let logits = scratch.logits(g, len)?;
        let lp = slice_ptr(logits, s);
        ops::gemm(
            g,
            dt,
            x.ptr(s),
            rows,
            in_dim,
            w.ptr(s),
            vocab,
            lp,
            GpuDtype::F32,
        )?;
        if let Some(b) = bias {
            ops::bias_add(
                g,
                GpuDtype::F32,
                lp,
                slice_ptr(b, s),
                rows,
                vocab,
                Grid::Auto,
            )?;
        }
        out.clear();
        out.resize(len, 0.0);
        if len == 0 {
            return Ok(());
        }
        s.memcpy_dtoh(&logits.slice(0..len), out.as_mut_slice())
            .map_err(|e| Error::cuda(format!("downloading logits: {e:?}")))?;
        g.sync()?;
        scratch.mark_synced(); // the capture's queued read-backs are complete too
        Ok(())
    }

    fn finish_capture(
        &self,
        scratch: &mut DeviceScratch,
        targets: &mut dyn CaptureTargets,
    ) -> Result<()> {
        finish_pass(&self.gpu, &mut scratch.capture, targets)
    }

    fn sync(&self, scratch: &mut DeviceScratch) -> Result<()> {
        self.gpu.sync()?;
        scratch.mark_synced();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_without_a_usable_gpu_is_an_error_not_a_panic() {
        if crate::probe().is_available() {
            return;
        }
        assert!(CudaBackend::open(0, GpuDtype::Bf16).is_err());
    }
}
