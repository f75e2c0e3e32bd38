//! The CPU backend: the reference implementation of [`Backend`], f32 on the host, multi-threaded with rayon.
//! Its operations are the CPU twins of `kernels/*.cu` (see `model/ops.rs`, `model/rope.rs`,
//! `model/attention.rs`).

use crate::Result;
use crate::capture::HeadRecorder;
use crate::config::{Activation, ModelConfig, NormKind};
use crate::model::attention::{AttentionInput, AttentionScratch, attention_with};
use crate::model::backend::{
    AttentionStep, Backend, BackendWeights, CaptureTargets, DeviceInfo, KvStore, LmHead,
};
use crate::model::ops::{
    activate, activation, add_in_place, linear, linears, norm, norm_row, project, silu_gated,
};
use crate::model::rope::Rope;
use crate::slots::SlotInfo;
use crate::weights::{Linear, ModelWeights, Norm, StorageDtype, WeightMatrix};
use rayon::prelude::*;
use std::any::Any;
use std::ops::Range;
use std::sync::Arc;

/// The host, computing in f32; `weights` is the storage dtype of the linear layers and the embedding table
/// (bf16/f16 are widened to f32 as they are read).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend {
    pub weights: StorageDtype,
}

/// Keys and values of every layer on the host, `[capacity, kv_dim]` each.
#[derive(Clone, Debug)]
pub struct CpuKv {
    pub keys: Vec<Vec<f32>>,
    pub values: Vec<Vec<f32>>,
    pub kv_dim: usize,
}

impl CpuKv {
    /// Zeroed storage for `capacity` slots of every layer.
    pub fn new(cfg: &ModelConfig, capacity: usize) -> CpuKv {
        let kv_dim = cfg.n_kv_heads * cfg.head_dim;
        let layer = || vec![0.0f32; capacity * kv_dim];
        CpuKv {
            keys: (0..cfg.n_layers).map(|_| layer()).collect(),
            values: (0..cfg.n_layers).map(|_| layer()).collect(),
            kv_dim,
        }
    }

    fn layer_mut(&mut self, layer: usize, values: bool) -> &mut Vec<f32> {
        if values {
            &mut self.values[layer]
        } else {
            &mut self.keys[layer]
        }
    }
}

impl KvStore for CpuKv {
    fn read_layer(&self, layer: usize, values: bool, n_slots: usize) -> Result<Vec<f32>> {
        let buf = if values {
            &self.values[layer]
        } else {
            &self.keys[layer]
        };
        Ok(buf[..n_slots * self.kv_dim].to_vec())
    }

    fn write_layer(&mut self, layer: usize, values: bool, data: &[f32]) -> Result<()> {
        self.layer_mut(layer, values)[..data.len()].copy_from_slice(data);
        Ok(())
    }

    fn try_clone(&self) -> Result<Box<dyn KvStore>> {
        Ok(Box::new(self.clone()))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Per-pass state of the CPU backend.
pub struct CpuScratch {
    hidden: usize,
    tokens: Vec<u32>,
    positions: Vec<i64>,
    /// One head of the per-head q/k norm.
    head: Vec<f32>,
    attention: AttentionScratch,
}

impl Backend for CpuBackend {
    type Buf = Vec<f32>;
    type Linear = Linear;
    type Norm = Norm;
    type Table = WeightMatrix;
    type Rope = Rope;
    type Kv = CpuKv;
    type Scratch = CpuScratch;

    fn device(&self) -> DeviceInfo {
        DeviceInfo {
            device: "cpu".into(),
            name: None,
            dtype: match self.weights {
                StorageDtype::F32 => "f32".into(),
                other => format!("f32 (weights {})", other.as_str()),
            },
        }
    }

    fn upload(&self, weights: &Arc<ModelWeights>) -> Result<Arc<BackendWeights<Self>>> {
        Ok(weights.clone())
    }

    fn upload_rope(&self, rope: &Rope) -> Result<Rope> {
        Ok(rope.clone())
    }

    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        Ok(Vec::with_capacity(len))
    }

    fn new_scratch(&self, cfg: &ModelConfig, rows: usize) -> Result<CpuScratch> {
        Ok(CpuScratch {
            hidden: cfg.hidden_size,
            tokens: Vec::with_capacity(rows),
            positions: Vec::with_capacity(rows),
            head: vec![0.0; cfg.head_dim],
            attention: AttentionScratch::default(),
        })
    }

    fn new_kv(&self, cfg: &ModelConfig, capacity: usize) -> Result<CpuKv> {
        Ok(CpuKv::new(cfg, capacity))
    }

    fn begin_pass(&self, scratch: &mut CpuScratch, slots: &[SlotInfo]) -> Result<()> {
        scratch.tokens.clear();
        scratch.tokens.extend(slots.iter().map(|s| s.token));
        scratch.positions.clear();
        scratch.positions.extend(slots.iter().map(|s| s.position));
        Ok(())
    }

    fn write_slots(&self, _kv: &mut CpuKv, _start: usize, _slots: &[SlotInfo]) -> Result<()> {
        Ok(()) // the host reads the slot metadata straight from the cache
    }

    fn embed(
        &self,
        scratch: &CpuScratch,
        embed: &WeightMatrix,
        pos_embed: Option<&WeightMatrix>,
        x: &mut Vec<f32>,
        rows: usize,
    ) -> Result<()> {
        let h = scratch.hidden;
        x.clear();
        x.resize(rows * h, 0.0);
        let tokens_positions = scratch.tokens.iter().zip(&scratch.positions);
        for (row, (&t, &p)) in x.chunks_mut(h).zip(tokens_positions) {
            let t = t as usize;
            embed.read_f32(t * h, row);
            if let Some(wpe) = pos_embed {
                let p = p as usize;
                let wpe = wpe.to_f32();
                row.iter_mut()
                    .zip(&wpe[p * h..(p + 1) * h])
                    .for_each(|(a, b)| *a += b);
            }
        }
        Ok(())
    }

    fn norm(
        &self,
        kind: NormKind,
        eps: f32,
        x: &Vec<f32>,
        w: &Norm,
        out: &mut Vec<f32>,
        rows: usize,
        dim: usize,
    ) -> Result<()> {
        norm(&x[..rows * dim], w, kind, eps, out);
        Ok(())
    }

    fn norm_in_place(
        &self,
        scratch: &mut CpuScratch,
        x: &mut Vec<f32>,
        w: &Norm,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<()> {
        let tmp = &mut scratch.head;
        tmp.resize(dim, 0.0);
        for head in x[..rows * dim].chunks_mut(dim) {
            norm_row(head, w, NormKind::RmsNorm, eps, tmp);
            head.copy_from_slice(tmp);
        }
        Ok(())
    }

    fn linear(&self, x: &Vec<f32>, rows: usize, w: &Linear, y: &mut Vec<f32>) -> Result<()> {
        linear(x, rows, w, y);
        Ok(())
    }

    fn linears(
        &self,
        x: &Vec<f32>,
        rows: usize,
        layers: &mut [(&Linear, &mut Vec<f32>)],
    ) -> Result<()> {
        linears(x, rows, layers);
        Ok(())
    }

    fn rope(
        &self,
        rope: &Rope,
        scratch: &CpuScratch,
        x: &mut Vec<f32>,
        rows: usize,
        heads: usize,
        head_dim: usize,
    ) -> Result<()> {
        let x = &mut x[..rows * heads * head_dim];
        rope.apply(x, &scratch.positions[..rows], heads, head_dim);
        Ok(())
    }

    fn write_kv(
        &self,
        kv: &mut CpuKv,
        layer: usize,
        start: usize,
        k: &Vec<f32>,
        v: &Vec<f32>,
        rows: Range<usize>,
        kv_dim: usize,
    ) -> Result<()> {
        let m = rows.len();
        let (src, dst) = (
            rows.start * kv_dim..rows.end * kv_dim,
            start * kv_dim..(start + m) * kv_dim,
        );
        kv.keys[layer][dst.clone()].copy_from_slice(&k[src.clone()]);
        kv.values[layer][dst].copy_from_slice(&v[src]);
        Ok(())
    }

    fn attention(
        &self,
        scratch: &mut CpuScratch,
        step: &AttentionStep<Self>,
        out: &mut Vec<f32>,
        recorders: Option<&mut [HeadRecorder]>,
    ) -> Result<()> {
        let q_dim = step.shape.q_dim();
        let rows = step.rows.clone();
        if out.len() < rows.end * q_dim {
            out.resize(rows.end * q_dim, 0.0);
        }
        let input = AttentionInput {
            q: &step.q[rows.start * q_dim..rows.end * q_dim],
            keys: &step.kv.keys[step.layer],
            values: &step.kv.values[step.layer],
            q_start: step.q_start,
            n_new: rows.len(),
            shape: step.shape,
            mask: step.mask,
        };
        attention_with(
            &input,
            &mut out[rows.start * q_dim..rows.end * q_dim],
            recorders,
            &mut scratch.attention,
        );
        Ok(())
    }

    fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>, n: usize) -> Result<()> {
        add_in_place(&mut x[..n], &y[..n]);
        Ok(())
    }

    fn add2(&self, x: &mut Vec<f32>, a: &Vec<f32>, b: &Vec<f32>, n: usize) -> Result<()> {
        x[..n]
            .par_chunks_mut(4096)
            .zip(a[..n].par_chunks(4096).zip(b[..n].par_chunks(4096)))
            .for_each(|(x, (a, b))| {
                for ((x, a), b) in x.iter_mut().zip(a).zip(b) {
                    *x += a + b;
                }
            });
        Ok(())
    }

    fn activate(&self, act: Activation, x: &mut Vec<f32>, n: usize) -> Result<()> {
        activate(&mut x[..n], act);
        Ok(())
    }

    fn activate_gated(
        &self,
        act: Activation,
        gate: &Vec<f32>,
        up: &mut Vec<f32>,
        n: usize,
    ) -> Result<()> {
        up[..n]
            .par_chunks_mut(4096)
            .zip(gate[..n].par_chunks(4096))
            .for_each(|(u, g)| match act {
                Activation::Silu => silu_gated(u, g),
                _ => {
                    for (u, g) in u.iter_mut().zip(g) {
                        *u *= activation(*g, act);
                    }
                }
            });
        Ok(())
    }

    fn gather_rows(
        &self,
        x: &Vec<f32>,
        ranges: &[Range<usize>],
        width: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        out.clear();
        for r in ranges {
            out.extend_from_slice(&x[r.start * width..r.end * width]);
        }
        Ok(())
    }

    fn lm_head(
        &self,
        _scratch: &mut CpuScratch,
        x: &Vec<f32>,
        rows: usize,
        head: LmHead<Self>,
        vocab: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        match head {
            LmHead::Linear(l) => linear(x, rows, l, out),
            LmHead::Tied(embed) => {
                let h = embed.len() / vocab.max(1);
                project(x, rows, embed, h, vocab, None, out)
            }
        }
        Ok(())
    }

    fn finish_capture(
        &self,
        _scratch: &mut CpuScratch,
        _targets: &mut dyn CaptureTargets,
    ) -> Result<()> {
        Ok(()) // the CPU hands every row to its recorder as it attends
    }

    fn sync(&self, _scratch: &mut CpuScratch) -> Result<()> {
        Ok(())
    }
}
