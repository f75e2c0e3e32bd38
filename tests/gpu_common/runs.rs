//! Runs of attention_probs.cu and attention_decode.cu for tests/gpu_probs_decode.rs: device buffers for a
//! `Problem`, then the engine's launchers (`attnscope_cuda::ops`), then the outputs downloaded.

use super::attention::{Problem, ProblemBuffers, RowOutputs, Shape};
use super::{Elem, Gpu, NULL};
use attnscope_core::capture::WeightsDtype;
use attnscope_cuda::ops::{self, DecodeScratch, ProbsOutputs};
use cudarc::driver::CudaSlice;

/// One attention_probs.cu case.
pub struct ProbsCase {
    pub s: Shape,
    /// Decode rows: the last n_q slots form one parallel set (`decode_slots`); 0 = `slots`.
    pub decode_q: usize,
    pub heads: &'static [i32],
    pub key_split: usize,
    pub weights: Option<WeightsDtype>,
}

/// What attn_probs writes, downloaded: weights `[n_sel, T, T]` (f16 as f32), the row statistics
/// `[n_sel, n_new]`, received `[n_sel, recv_stride]`, distance `[n_sel, 65]`.
pub struct ProbsOut {
    pub weights: Vec<f32>,
    pub sink: Vec<f32>,
    pub prev: Vec<f32>,
    pub self_mass: Vec<f32>,
    pub group_mass: Vec<f32>,
    pub received: Vec<f64>,
    pub recv_stride: usize,
    pub distance: Vec<f64>,
}

/// Runs `attn_probs_f32_w<W>` on `p` (f32 inputs) with the first pass's `lse`.
pub fn run_probs(gpu: &Gpu, p: &Problem, c: &ProbsCase, lse: &[f32]) -> ProbsOut {
    let s = c.s;
    let (n_keys, n_new) = (s.n_keys, p.n_new);
    let n_sel = c.heads.len();
    let mut b = ProblemBuffers::<f32>::new(gpu, p);
    b.lse = gpu.upload(lse);
    let dheads = gpu.upload(c.heads);
    let dpos = gpu.upload(&p.positions());
    // [n_sel, T, T] of the requested type (the other one is a placeholder); the kernel's row 0 is row q_start.
    let w_len = |w| {
        if c.weights == Some(w) {
            n_sel * n_keys * n_keys
        } else {
            1
        }
    };
    let dw32 = gpu.zeros::<f32>(w_len(WeightsDtype::F32));
    let dw16 = gpu.zeros::<half::f16>(w_len(WeightsDtype::F16));
    // The host zeroes every statistic before the launch (alloc_zeros).
    let dsink = gpu.zeros::<f32>(n_sel * n_new);
    let dprev = gpu.zeros::<f32>(n_sel * n_new);
    let dself = gpu.zeros::<f32>(n_sel * n_new);
    let dgroup = gpu.zeros::<f32>(n_sel * n_new);
    let recv_stride = n_keys + 5; // a stride wider than the row
    let drecv = gpu.zeros::<f64>(n_sel * recv_stride);
    let ddist = gpu.zeros::<f64>(n_sel * 65);
    // The engine's plan for this device at the case's key split (row groups from the SM count).
    let sms = ops::sm_count(&gpu.g).unwrap_or_else(|e| panic!("{e}"));
    let plan = ops::probs_plan(n_new, n_keys, n_sel, c.key_split, sms);
    let drecv_part = gpu.zeros::<f64>(plan.recv_part_len(n_sel, n_keys));
    let row0 = (s.q_start * n_keys) as u64;
    let weights = match c.weights {
        Some(WeightsDtype::F32) => gpu.ptr(&dw32) + row0 * 4,
        Some(WeightsDtype::F16) => gpu.ptr(&dw16) + row0 * 2,
        None => NULL,
    };
    let out = ProbsOutputs {
        weights,
        weights_f16: c.weights == Some(WeightsDtype::F16),
        w_head_stride: n_keys * n_keys,
        w_row_stride: n_keys,
        sink: gpu.ptr(&dsink),
        prev: gpu.ptr(&dprev),
        self_mass: gpu.ptr(&dself),
        group_mass: gpu.ptr(&dgroup),
        received: gpu.ptr(&drecv),
        received_stride: recv_stride,
        recv_part: gpu.ptr(&drecv_part),
        distance: gpu.ptr(&ddist),
    };
    let call = p.call(gpu, &b, false);
    let (heads, positions) = (gpu.ptr(&dheads), gpu.ptr(&dpos));
    ops::attention_probs_planned(&gpu.g, &call, heads, n_sel, positions, &out, &plan)
        .unwrap_or_else(|e| panic!("{e}"));
    ProbsOut {
        weights: match c.weights {
            Some(WeightsDtype::F16) => gpu.download_f32(&dw16),
            _ => gpu.download(&dw32),
        },
        sink: gpu.download(&dsink),
        prev: gpu.download(&dprev),
        self_mass: gpu.download(&dself),
        group_mass: gpu.download(&dgroup),
        received: gpu.download(&drecv),
        recv_stride,
        distance: gpu.download(&ddist),
    }
}

/// Zeroed split-K decode partials of `rows` rows (4 f32 statistics, one i32 argmax, `head_dim` f32 each).
pub struct DecodePartials {
    stat: CudaSlice<f32>,
    arg: CudaSlice<i32>,
    o: CudaSlice<f32>,
}

impl DecodePartials {
    pub fn new(gpu: &Gpu, rows: usize, head_dim: usize) -> DecodePartials {
        DecodePartials {
            stat: gpu.zeros(rows * 4),
            arg: gpu.zeros(rows),
            o: gpu.zeros(rows * head_dim),
        }
    }

    /// Their device addresses, as the launchers take them.
    pub fn scratch(&self, gpu: &Gpu) -> DecodeScratch {
        DecodeScratch {
            stat: gpu.ptr(&self.stat),
            arg: gpu.ptr(&self.arg),
            o: gpu.ptr(&self.o),
        }
    }
}

/// Runs attn_decode_partial_<T> then attn_decode_combine_<T> on `p` (n_q = p.n_new query rows) with
/// `split_len` keys per split.
pub fn run_decode<E: Elem>(gpu: &Gpu, p: &Problem, split_len: usize) -> RowOutputs {
    let s = p.s;
    let n_splits = s.n_keys.div_ceil(split_len);
    let parts = s.n_heads * n_splits * p.n_new;
    let partials = DecodePartials::new(gpu, parts, s.head_dim);
    let b = ProblemBuffers::<E>::new(gpu, p);
    let call = p.call(gpu, &b, true);
    let scratch = partials.scratch(gpu);
    ops::attention_decode_split(&gpu.g, &call, &scratch, split_len)
        .unwrap_or_else(|e| panic!("{e}"));
    b.download(gpu, true)
}

/// Runs the decode as the engine does (`ops::attention_decode`: the plan from n_keys and the device's SM
/// count, GQA query heads grouped per kv head) with partials sized by `ops::decode_scratch_rows` for a
/// cache of `capacity` slots, the size the engine allocates once.
pub fn run_decode_engine<E: Elem>(gpu: &Gpu, p: &Problem, capacity: usize) -> RowOutputs {
    let s = p.s;
    let sms = ops::sm_count(&gpu.g).unwrap_or_else(|e| panic!("{e}"));
    let parts = ops::decode_scratch_rows(capacity, s.n_heads, s.n_kv_heads, s.head_dim, sms);
    let partials = DecodePartials::new(gpu, parts, s.head_dim);
    let b = ProblemBuffers::<E>::new(gpu, p);
    let call = p.call(gpu, &b, true);
    let scratch = partials.scratch(gpu);
    ops::attention_decode(&gpu.g, &call, &scratch).unwrap_or_else(|e| panic!("{e}"));
    b.download(gpu, true)
}

/// Runs the decode of several problems (one layer shape; each its own cache, rows and contexts) in one
/// batched launch as the engine does (`ops::decode_batch_plan` + `ops::attention_decode_batch`), with
/// partials sized by `ops::batch_partial_rows`.
pub fn run_decode_batch<E: Elem>(gpu: &Gpu, problems: &[Problem]) -> Vec<RowOutputs> {
    let sms = ops::sm_count(&gpu.g).unwrap_or_else(|e| panic!("{e}"));
    let bufs: Vec<ProblemBuffers<E>> = problems
        .iter()
        .map(|p| ProblemBuffers::<E>::new(gpu, p))
        .collect();
    let calls: Vec<_> = problems
        .iter()
        .zip(&bufs)
        .map(|(p, b)| p.call(gpu, b, true))
        .collect();
    let shapes: Vec<ops::DecodeShape> = calls.iter().map(ops::DecodeShape::of).collect();
    let plan = ops::decode_batch_plan(&shapes, sms).unwrap_or_else(|e| panic!("{e}"));
    let parts = ops::batch_partial_rows(&shapes, &plan);
    let hd = problems[0].s.head_dim;
    let partials = DecodePartials::new(gpu, parts, hd);
    let scratch = partials.scratch(gpu);
    ops::attention_decode_batch(&gpu.g, &calls, &scratch, &plan).unwrap_or_else(|e| panic!("{e}"));
    bufs.iter().map(|b| b.download(gpu, true)).collect()
}
