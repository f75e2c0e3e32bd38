//! The GPU forward pass: the twin of `Model::forward_batch` (src/model/forward.rs), step for step, with the
//! kernels of `kernels/*.cu` and cuBLAS. Reads top to bottom: embed → blocks (norm, q/k/v, q/k norm, RoPE,
//! cache write, attention + capture, output, residual, MLP) → final norm → logits (f32).
//!
//! Weights, activations and the KV cache are stored in one dtype (f32, bf16 or f16; every kernel computes in
//! f32, cuBLAS accumulates in f32). Logits come back to the host as f32.

use crate::Result;
use crate::config::{ModelConfig, NormKind, PositionEncoding};
use crate::cuda::capture::{FirstPassStats, record_layer};
use crate::cuda::context::{DeviceBuf, GpuContext, slice_ptr};
use crate::cuda::dtype::GpuDtype;
use crate::cuda::kv::DeviceKv;
use crate::cuda::ops::{self, AttentionCall, DECODE_MAX_Q, DecodeScratch};
use crate::model::forward::{BatchItem, LogitRows};
use crate::model::rope::Rope;
use crate::slots::AttentionMask;
use crate::weights::{Linear, ModelWeights, Norm};
use crate::{Error, input::Visibility};
use cudarc::driver::{CudaSlice, DevicePtr};
use std::sync::Arc;

/// A linear layer on the device: `W [out, in]`, optional bias `[out]`.
struct DeviceLinear {
    w: DeviceBuf,
    bias: Option<DeviceBuf>,
    in_dim: usize,
    out_dim: usize,
}

/// A norm on the device (bias only for LayerNorm with a bias).
struct DeviceNorm {
    w: DeviceBuf,
    b: Option<DeviceBuf>,
}

struct DeviceLayer {
    attn_norm: DeviceNorm,
    q: DeviceLinear,
    k: DeviceLinear,
    v: DeviceLinear,
    o: DeviceLinear,
    q_norm: Option<DeviceNorm>,
    k_norm: Option<DeviceNorm>,
    mlp_norm: DeviceNorm,
    gate: Option<DeviceLinear>,
    up: DeviceLinear,
    down: DeviceLinear,
}

/// A model's weights on one GPU, ready for [`GpuModel::forward_batch`].
pub struct GpuModel {
    pub gpu: Arc<GpuContext>,
    pub dtype: GpuDtype,
    embed: DeviceBuf,
    pos_embed: Option<DeviceBuf>,
    layers: Vec<DeviceLayer>,
    final_norm: DeviceNorm,
    lm_head: Option<DeviceLinear>,
    /// The lm_head bias in f32 (the logits are f32), when the checkpoint has one.
    lm_head_bias: Option<DeviceBuf>,
    inv_freq: Option<DeviceBuf>,
    rotary_dim: usize,
}

impl GpuModel {
    /// Uploads `weights` (converted to `dtype`) and the RoPE frequency table.
    pub fn upload(
        gpu: Arc<GpuContext>,
        cfg: &ModelConfig,
        weights: &ModelWeights,
        rope: Option<&Rope>,
        dtype: GpuDtype,
    ) -> Result<GpuModel> {
        let g = &*gpu;
        let linear = |l: &Linear| -> Result<DeviceLinear> {
            Ok(DeviceLinear {
                w: g.upload(dtype, &l.weight)?,
                bias: l.bias.as_ref().map(|b| g.upload(dtype, b)).transpose()?,
                in_dim: l.in_dim,
                out_dim: l.out_dim,
            })
        };
        let norm = |n: &Norm| -> Result<DeviceNorm> {
            Ok(DeviceNorm {
                w: g.upload(dtype, &n.weight)?,
                b: n.bias.as_ref().map(|b| g.upload(dtype, b)).transpose()?,
            })
        };
        let mut layers = Vec::with_capacity(weights.layers.len());
        for lw in &weights.layers {
            layers.push(DeviceLayer {
                attn_norm: norm(&lw.attn_norm)?,
                q: linear(&lw.q)?,
                k: linear(&lw.k)?,
                v: linear(&lw.v)?,
                o: linear(&lw.o)?,
                q_norm: lw.q_norm.as_ref().map(norm).transpose()?,
                k_norm: lw.k_norm.as_ref().map(norm).transpose()?,
                mlp_norm: norm(&lw.mlp_norm)?,
                gate: lw.gate.as_ref().map(linear).transpose()?,
                up: linear(&lw.up)?,
                down: linear(&lw.down)?,
            });
        }
        let inv_freq = rope
            .map(|r| g.upload(GpuDtype::F32, &r.inv_freq))
            .transpose()?;
        let rotary_dim = match &cfg.position {
            PositionEncoding::Rope(r) => r.rotary_dim,
            PositionEncoding::Learned => 0,
        };
        Ok(GpuModel {
            embed: g.upload(dtype, &weights.embed)?,
            pos_embed: weights
                .pos_embed
                .as_ref()
                .map(|p| g.upload(dtype, p))
                .transpose()?,
            layers,
            final_norm: norm(&weights.final_norm)?,
            lm_head: weights.lm_head.as_ref().map(linear).transpose()?,
            lm_head_bias: weights
                .lm_head
                .as_ref()
                .and_then(|l| l.bias.as_ref())
                .map(|b| g.upload(GpuDtype::F32, b))
                .transpose()?,
            inv_freq,
            rotary_dim,
            dtype,
            gpu,
        })
    }

    /// A KV cache on this GPU.
    pub fn new_cache(
        &self,
        cfg: &ModelConfig,
        capacity: usize,
        visibility: Visibility,
    ) -> Result<crate::model::KvCache> {
        let dev = DeviceKv::new(&self.gpu, cfg, capacity, self.dtype)?;
        Ok(crate::model::KvCache::on_device(
            cfg, capacity, visibility, dev,
        ))
    }

    /// `y = x·Wᵀ + b` for `rows` rows.
    fn linear(&self, x: &DeviceBuf, rows: usize, l: &DeviceLinear, y: &DeviceBuf) -> Result<()> {
        let g = &*self.gpu;
        let s = &g.stream;
        ops::gemm(
            g,
            self.dtype,
            x.ptr(s),
            rows,
            l.in_dim,
            l.w.ptr(s),
            l.out_dim,
            y.ptr(s),
            self.dtype,
        )?;
        if let Some(b) = &l.bias {
            ops::bias_add(g, self.dtype, y.ptr(s), b.ptr(s), rows, l.out_dim)?;
        }
        Ok(())
    }

    /// `out = norm(x)` over rows of `dim`.
    #[allow(clippy::too_many_arguments)]
    fn norm(
        &self,
        kind: NormKind,
        eps: f32,
        x: u64,
        n: &DeviceNorm,
        out: u64,
        rows: usize,
        dim: usize,
    ) -> Result<()> {
        let s = &self.gpu.stream;
        let b = n.b.as_ref().map_or(0, |b| b.ptr(s));
        ops::norm(
            &self.gpu,
            self.dtype,
            kind,
            x,
            n.w.ptr(s),
            b,
            out,
            rows,
            dim,
            eps,
        )
    }

    /// One forward pass over several sequences (see `Model::forward_batch`, whose checks have run). Appends
    /// the new slots to each item's device cache, records attention into the captures, and returns logits.
    pub fn forward_batch(
        &self,
        cfg: &ModelConfig,
        items: &mut [BatchItem],
        logit_rows: LogitRows,
    ) -> Result<Vec<Vec<f32>>> {
        let g = &*self.gpu;
        let s = &g.stream;
        let dt = self.dtype;
        for item in items.iter() {
            match &item.cache.device {
                Some(d) if d.dtype == dt => {}
                _ => {
                    return Err(Error::cuda(
                        "the KV cache was not made for this GPU model (use Model::new_cache)",
                    ));
                }
            }
        }
        let mut ranges = Vec::with_capacity(items.len());
        let mut starts = Vec::with_capacity(items.len());
        let mut n = 0;
        for item in items.iter_mut() {
            ranges.push(n..n + item.new.len());
            n += item.new.len();
            let start = item.cache.len();
            starts.push(start);
            let pushed = item.cache.push_slots(item.new);
            debug_assert!(pushed, "capacity was checked by Model::forward_batch");
            if let Some(dev) = item.cache.device.as_mut() {
                dev.write_slots(start, item.new)?;
            }
        }
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let kv_dim = cfg.n_kv_heads * hd;
        let q_dim = cfg.n_heads * hd;
        let inter = self.layers.first().map_or(0, |l| l.up.out_dim);
        let ids: Vec<u32> = items
            .iter()
            .flat_map(|i| i.new.iter().map(|s| s.token))
            .collect();
        let positions: Vec<i64> = items
            .iter()
            .flat_map(|i| i.new.iter().map(|s| s.position))
            .collect();
        let err = |e| Error::cuda(format!("upload: {e:?}"));
        let d_ids: CudaSlice<u32> = s.clone_htod(&ids).map_err(err)?;
        let d_pos: CudaSlice<i64> = s.clone_htod(&positions).map_err(err)?;
        let (ids_ptr, pos_ptr) = (d_ids.device_ptr(s).0, d_pos.device_ptr(s).0);

        let x = g.zeros(dt, n * h)?;
        let normed = g.zeros(dt, n * h)?;
        let q = g.zeros(dt, n * q_dim)?;
        let k = g.zeros(dt, n * kv_dim)?;
        let v = g.zeros(dt, n * kv_dim)?;
        let attn = g.zeros(dt, n * q_dim)?;
        let o = g.zeros(dt, n * h)?;
        let up = g.zeros(dt, n * inter)?;
        let gate = g.zeros(dt, n * inter)?;
        let mlp = g.zeros(dt, n * h)?;
        let max_new = ranges.iter().map(|r| r.len()).max().unwrap_or(0);
        let stat_len = cfg.n_heads * max_new;
        let lse = g.zeros_of::<f32>(stat_len)?;
        let entropy = g.zeros_of::<f32>(stat_len)?;
        let max_weight = g.zeros_of::<f32>(stat_len)?;
        let argmax = g.zeros_of::<u32>(stat_len)?;
        let decode = self.decode_scratch(cfg, &ranges, &starts)?;

        // Embeddings (+ learned positions).
        ops::embedding_gather(
            g,
            dt,
            self.embed.ptr(s),
            ids_ptr,
            x.ptr(s),
            n,
            h,
            cfg.vocab_size,
        )?;
        if let Some(wpe) = &self.pos_embed {
            // Rows of the uploaded table (as the CPU indexes it), not cfg.max_positions, which may be absent.
            let max_pos = wpe.len / h;
            ops::position_add(g, dt, wpe.ptr(s), pos_ptr, x.ptr(s), n, h, max_pos)?;
        }

        for (l, lw) in self.layers.iter().enumerate() {
            // Attention block.
            self.norm(
                cfg.norm,
                cfg.norm_eps,
                x.ptr(s),
                &lw.attn_norm,
                normed.ptr(s),
                n,
                h,
            )?;
            self.linear(&normed, n, &lw.q, &q)?;
            self.linear(&normed, n, &lw.k, &k)?;
            self.linear(&normed, n, &lw.v, &v)?;
            if let (Some(qn), Some(kn)) = (&lw.q_norm, &lw.k_norm) {
                let rms = NormKind::RmsNorm;
                self.norm(
                    rms,
                    cfg.norm_eps,
                    q.ptr(s),
                    qn,
                    q.ptr(s),
                    n * cfg.n_heads,
                    hd,
                )?;
                self.norm(
                    rms,
                    cfg.norm_eps,
                    k.ptr(s),
                    kn,
                    k.ptr(s),
                    n * cfg.n_kv_heads,
                    hd,
                )?;
            }
            if let Some(freq) = &self.inv_freq {
                let (f, rd) = (freq.ptr(s), self.rotary_dim);
                ops::rope(g, dt, q.ptr(s), pos_ptr, f, n, cfg.n_heads, hd, rd, q_dim)?;
                ops::rope(
                    g,
                    dt,
                    k.ptr(s),
                    pos_ptr,
                    f,
                    n,
                    cfg.n_kv_heads,
                    hd,
                    rd,
                    kv_dim,
                )?;
            }
            let mut scale = cfg.attn_scale;
            if cfg.scale_attn_by_inverse_layer_idx {
                scale /= (l + 1) as f32;
            }
            for ((item, rows), &start) in items.iter_mut().zip(&ranges).zip(&starts) {
                let m = rows.len();
                let cache = &mut *item.cache;
                let vanished = || Error::cuda("device cache vanished");
                let dev = cache.device.as_mut().ok_or_else(vanished)?;
                g.copy(
                    &k,
                    rows.start * kv_dim,
                    &mut dev.keys[l],
                    start * kv_dim,
                    m * kv_dim,
                )?;
                g.copy(
                    &v,
                    rows.start * kv_dim,
                    &mut dev.values[l],
                    start * kv_dim,
                    m * kv_dim,
                )?;
                let cache = &*cache;
                let dev = cache.device.as_ref().ok_or_else(vanished)?;
                let recorders = item.capture.as_deref_mut().and_then(|c| c.layer_mut(l));
                let capturing = recorders
                    .as_ref()
                    .is_some_and(|r| r.iter().any(|h| h.is_active()));
                let call = AttentionCall {
                    dtype: dt,
                    q: q.ptr_at(s, rows.start * q_dim),
                    q_stride: q_dim,
                    k: dev.keys[l].ptr(s),
                    v: dev.values[l].ptr(s),
                    kv_stride: kv_dim,
                    o: attn.ptr_at(s, rows.start * q_dim),
                    o_stride: q_dim,
                    lse: slice_ptr(&lse, s),
                    entropy: if capturing { slice_ptr(&entropy, s) } else { 0 },
                    max_weight: if capturing {
                        slice_ptr(&max_weight, s)
                    } else {
                        0
                    },
                    argmax: if capturing { slice_ptr(&argmax, s) } else { 0 },
                    groups: dev.groups_ptr(),
                    isolated: cache.visibility == Visibility::Isolated,
                    window: cfg.sliding_window.unwrap_or(0),
                    q_start: start,
                    n_new: m,
                    n_heads: cfg.n_heads,
                    n_kv_heads: cfg.n_kv_heads,
                    head_dim: hd,
                    scale,
                };
                match &decode {
                    Some(d) if m <= DECODE_MAX_Q => ops::attention_decode(g, &call, &d.scratch(s))?,
                    _ => ops::attention_prefill(g, &call)?,
                }
                if let Some(recs) = recorders.filter(|_| capturing) {
                    let mask = AttentionMask {
                        slots: cache.slots(),
                        visibility: cache.visibility,
                        sliding_window: cfg.sliding_window,
                    };
                    let positions_ptr = dev.positions_ptr();
                    let stats = FirstPassStats {
                        lse: &lse,
                        entropy: &entropy,
                        max_weight: &max_weight,
                        argmax: &argmax,
                    };
                    record_layer(g, &call, positions_ptr, &stats, recs, &mask)?;
                }
            }
            self.linear(&attn, n, &lw.o, &o)?;

            // MLP block, sequential or parallel residual.
            if !cfg.parallel_residual {
                ops::residual_add(g, dt, x.ptr(s), o.ptr(s), n * h)?;
            }
            self.norm(
                cfg.norm,
                cfg.norm_eps,
                x.ptr(s),
                &lw.mlp_norm,
                normed.ptr(s),
                n,
                h,
            )?;
            self.linear(&normed, n, &lw.up, &up)?;
            match &lw.gate {
                Some(gl) => {
                    self.linear(&normed, n, gl, &gate)?;
                    ops::activate_gated(g, dt, cfg.activation, gate.ptr(s), up.ptr(s), n * inter)?;
                }
                None => ops::activate(g, dt, cfg.activation, up.ptr(s), n * inter)?,
            }
            self.linear(&up, n, &lw.down, &mlp)?;
            if cfg.parallel_residual {
                ops::residual_add2(g, dt, x.ptr(s), mlp.ptr(s), o.ptr(s), n * h)?;
            } else {
                ops::residual_add(g, dt, x.ptr(s), mlp.ptr(s), n * h)?;
            }
        }

        // Final norm and logits (f32) for the requested rows of every item.
        let picked: Vec<std::ops::Range<usize>> = match logit_rows {
            LogitRows::All => ranges.clone(),
            LogitRows::Last => ranges.iter().map(|r| r.end - 1..r.end).collect(),
            LogitRows::None => {
                g.sync()?;
                return Ok(vec![Vec::new(); items.len()]);
            }
        };
        let m: usize = picked.iter().map(|r| r.len()).sum();
        let mut rows_x = g.zeros(dt, m * h)?;
        let mut row = 0;
        for r in &picked {
            g.copy(&x, r.start * h, &mut rows_x, row * h, r.len() * h)?;
            row += r.len();
        }
        let vocab = cfg.vocab_size;
        let rows_n = g.zeros(dt, m * h)?;
        let fnorm = &self.final_norm;
        self.norm(
            cfg.norm,
            cfg.norm_eps,
            rows_x.ptr(s),
            fnorm,
            rows_n.ptr(s),
            m,
            h,
        )?;
        let logits = g.zeros(GpuDtype::F32, m * vocab)?;
        let head_w = match &self.lm_head {
            Some(l) => l.w.ptr(s),
            None => self.embed.ptr(s),
        };
        ops::gemm(
            g,
            dt,
            rows_n.ptr(s),
            m,
            h,
            head_w,
            vocab,
            logits.ptr(s),
            GpuDtype::F32,
        )?;
        if let Some(b) = &self.lm_head_bias {
            ops::bias_add(g, GpuDtype::F32, logits.ptr(s), b.ptr(s), m, vocab)?;
        }
        let all = g.read_f32(&logits, 0..m * vocab)?;
        Ok(split_rows(&all, &picked, vocab))
    }

    /// Scratch for the split-K decode kernel, sized for the largest decode item (rows <= DECODE_MAX_Q), or
    /// `None` when every item is a prefill.
    fn decode_scratch(
        &self,
        cfg: &ModelConfig,
        ranges: &[std::ops::Range<usize>],
        starts: &[usize],
    ) -> Result<Option<DecodeBuffers>> {
        let rows = ranges
            .iter()
            .zip(starts)
            .filter(|(r, _)| r.len() <= DECODE_MAX_Q)
            .map(|(r, &start)| ops::decode_scratch_rows(start + r.len(), r.len(), cfg.n_heads))
            .max()
            .unwrap_or(0);
        if rows == 0 {
            return Ok(None);
        }
        let g = &*self.gpu;
        Ok(Some(DecodeBuffers {
            stat: g.zeros(GpuDtype::F32, rows * 4)?,
            arg: g.zeros(GpuDtype::F32, rows)?, // i32 values; 4-byte elements
            o: g.zeros(GpuDtype::F32, rows * cfg.head_dim)?,
        }))
    }
}

/// The split-K decode scratch buffers of one forward call.
struct DecodeBuffers {
    stat: DeviceBuf,
    arg: DeviceBuf,
    o: DeviceBuf,
}

impl DecodeBuffers {
    fn scratch(&self, s: &cudarc::driver::CudaStream) -> DecodeScratch {
        DecodeScratch {
            stat: self.stat.ptr(s),
            arg: self.arg.ptr(s),
            o: self.o.ptr(s),
        }
    }
}

/// Splits `[m, vocab]` logits into one buffer per item.
fn split_rows(all: &[f32], picked: &[std::ops::Range<usize>], vocab: usize) -> Vec<Vec<f32>> {
    let mut out = Vec::with_capacity(picked.len());
    let mut row = 0;
    for r in picked {
        out.push(all[row * vocab..(row + r.len()) * vocab].to_vec());
        row += r.len();
    }
    out
}
