//! Launches of attention_probs.cu and attention_decode.cu for tests/gpu_attention.rs.

use super::attention::{Problem, RowOutputs, Shape};
use super::{Elem, Gpu, NULL};
use attnscope_core::capture::WeightsDtype;
use cudarc::driver::{CudaModule, LaunchConfig, PushKernelArg};
use std::sync::Arc;

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

pub fn launch_probs(
    gpu: &Gpu,
    m: &Arc<CudaModule>,
    p: &Problem,
    c: &ProbsCase,
    lse: &[f32],
) -> ProbsOut {
    let s = c.s;
    let (hd, nh, nkv, n_keys, n_new) = (s.head_dim, s.n_heads, s.n_kv_heads, s.n_keys, p.n_new);
    let n_sel = c.heads.len();
    let f = gpu.function(
        m,
        match c.weights {
            Some(WeightsDtype::F16) => "attn_probs_f32_wf16",
            _ => "attn_probs_f32_wf32",
        },
    );
    let dq = gpu.upload(&p.q);
    let dk = gpu.upload(&p.k);
    let dlse = gpu.upload(lse);
    let dheads = gpu.upload(c.heads);
    let dpos = gpu.upload(&p.positions());
    let dg = gpu.upload(&p.groups());
    // [n_sel, T, T] of the requested type (the other one is a placeholder); the kernel's row 0 is row q_start.
    let w_len = |w| {
        if c.weights == Some(w) {
            n_sel * n_keys * n_keys
        } else {
            1
        }
    };
    let mut dw32 = gpu.zeros::<f32>(w_len(WeightsDtype::F32));
    let mut dw16 = gpu.zeros::<half::f16>(w_len(WeightsDtype::F16));
    // The host zeroes every statistic before the launch (alloc_zeros).
    let mut dsink = gpu.zeros::<f32>(n_sel * n_new);
    let mut dprev = gpu.zeros::<f32>(n_sel * n_new);
    let mut dself = gpu.zeros::<f32>(n_sel * n_new);
    let mut dgroup = gpu.zeros::<f32>(n_sel * n_new);
    let recv_stride = n_keys + 5; // a stride wider than the row
    let mut drecv = gpu.zeros::<f64>(n_sel * recv_stride);
    let mut ddist = gpu.zeros::<f64>(n_sel * 65);
    let ints1 = [(nh * hd) as i32, (nkv * hd) as i32];
    let n_sel_i = n_sel as i32;
    let ints2 = [s.isolated as i32, s.window.unwrap_or(0) as i32];
    let ints3 = [s.q_start, n_new, nh, nkv, hd].map(|x| x as i32);
    let key_split = c.key_split as i32;
    let strides = [(n_keys * n_keys) as i64, n_keys as i64];
    let recv_stride_i = recv_stride as i32;
    let cfg = LaunchConfig {
        grid_dim: (
            n_new.div_ceil(16) as u32,
            n_sel as u32,
            n_keys.div_ceil(c.key_split) as u32,
        ),
        block_dim: (128, 1, 1),
        shared_mem_bytes: (16 * hd * 4) as u32,
    };
    let off = |w| {
        if c.weights == Some(w) {
            s.q_start * n_keys
        } else {
            0
        }
    };
    {
        let mut w32_view = dw32.slice_mut(off(WeightsDtype::F32)..);
        let mut w16_view = dw16.slice_mut(off(WeightsDtype::F16)..);
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&dq).arg(&ints1[0]).arg(&dk).arg(&ints1[1]).arg(&dlse);
        b.arg(&dheads).arg(&n_sel_i).arg(&dpos).arg(&dg);
        b.arg(&ints2[0]).arg(&ints2[1]);
        for x in &ints3 {
            b.arg(x);
        }
        b.arg(&p.scale).arg(&key_split);
        match c.weights {
            Some(WeightsDtype::F32) => b.arg(&mut w32_view),
            Some(WeightsDtype::F16) => b.arg(&mut w16_view),
            None => b.arg(&NULL),
        };
        b.arg(&strides[0]).arg(&strides[1]);
        b.arg(&mut dsink)
            .arg(&mut dprev)
            .arg(&mut dself)
            .arg(&mut dgroup);
        b.arg(&mut drecv).arg(&recv_stride_i).arg(&mut ddist);
        // SAFETY: the arguments follow `attn_probs_<T>_w<W>` in kernels/attention_probs.cu: q [n_new, nh·hd]
        // and k [n_keys, nkv·hd] f32, lse [nh, n_new], heads n_sel int32 < nh, positions n_keys int64, groups
        // n_keys int32; the weights view starts at row q_start of an [n_sel, T, T] buffer, so row i < n_new
        // of head s ends inside it; sink..group_mass hold n_sel·n_new f32, received n_sel·recv_stride f64,
        // distance n_sel·65 f64, all zeroed; grid, block and 16·hd·4 bytes of dynamic shared memory as
        // documented.
        unsafe { b.launch(cfg) }.expect("launch");
    }
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

/// Runs attn_decode_partial_<T> then attn_decode_combine_<T> on `p` (n_q = p.n_new query rows).
pub fn launch_decode<E: Elem>(
    gpu: &Gpu,
    m: &Arc<CudaModule>,
    p: &Problem,
    split_len: usize,
) -> RowOutputs {
    let s = p.s;
    let n_q = p.n_new;
    let partial = gpu.function(m, &format!("attn_decode_partial_{}", E::SUFFIX));
    let combine = gpu.function(m, &format!("attn_decode_combine_{}", E::SUFFIX));
    let (hd, nh, nkv) = (s.head_dim, s.n_heads, s.n_kv_heads);
    let n_splits = s.n_keys.div_ceil(split_len);
    let dq = gpu.upload_as::<E>(&p.q);
    let dk = gpu.upload_as::<E>(&p.k);
    let dv = gpu.upload_as::<E>(&p.v);
    let dg = gpu.upload(&p.groups());
    let parts = nh * n_splits * n_q;
    let mut dstat = gpu.zeros::<f32>(parts * 4);
    let mut darg_part = gpu.zeros::<i32>(parts);
    let mut dpo = gpu.zeros::<f32>(parts * hd);
    let q_stride = (nh * hd) as i32;
    let kv_stride = (nkv * hd) as i32;
    let ints = [
        s.isolated as i32,
        s.window.unwrap_or(0) as i32,
        s.q_start as i32,
    ];
    let ints2 = [n_q, nh, nkv, hd].map(|x| x as i32);
    let split = split_len as i32;
    let cfg = LaunchConfig {
        grid_dim: (n_splits as u32, nh as u32, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: ((n_q * hd + n_q * split_len) * 4) as u32,
    };
    let mut b = gpu.stream.launch_builder(&partial);
    b.arg(&dq)
        .arg(&q_stride)
        .arg(&dk)
        .arg(&dv)
        .arg(&kv_stride)
        .arg(&dg);
    for x in ints.iter().chain(&ints2) {
        b.arg(x);
    }
    b.arg(&p.scale).arg(&split);
    b.arg(&mut dstat).arg(&mut darg_part).arg(&mut dpo);
    // SAFETY: arguments follow `attn_decode_partial_<T>` in kernels/attention_decode.cu; q holds n_q·nh·hd
    // elements of E, k and v n_keys·nkv·hd, groups n_keys; part_stat / part_arg / part_o hold
    // nh·n_splits·n_q·{4, 1, hd} values; n_q ≤ 8, hd ≤ 256; dynamic shared memory (n_q·hd + n_q·split_len)·4.
    unsafe { b.launch(cfg) }.expect("launch partial");

    let mut dout = gpu.zeros::<E>(n_q * nh * hd);
    let mut dlse = gpu.zeros::<f32>(nh * n_q);
    let mut dent = gpu.zeros::<f32>(nh * n_q);
    let mut dmax = gpu.zeros::<f32>(nh * n_q);
    let mut darg = gpu.zeros::<u32>(nh * n_q);
    let ints3 = [n_splits, n_q, nh, hd].map(|x| x as i32);
    let cfg = LaunchConfig {
        grid_dim: (nh as u32, n_q as u32, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut b = gpu.stream.launch_builder(&combine);
    b.arg(&dstat).arg(&darg_part).arg(&dpo);
    for x in &ints3 {
        b.arg(x);
    }
    b.arg(&mut dout).arg(&q_stride);
    b.arg(&mut dlse)
        .arg(&mut dent)
        .arg(&mut dmax)
        .arg(&mut darg);
    // SAFETY: arguments follow `attn_decode_combine_<T>`; the partial buffers come from the launch above with
    // the same n_splits, n_q, nh, hd; o holds n_q·nh·hd elements of E and the statistics nh·n_q.
    unsafe { b.launch(cfg) }.expect("launch combine");
    RowOutputs {
        out: gpu.download_f32(&dout),
        lse: gpu.download(&dlse),
        entropy: gpu.download(&dent),
        max_weight: gpu.download(&dmax),
        argmax: gpu.download(&darg),
    }
}
