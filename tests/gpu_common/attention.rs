//! Attention problems for the GPU tests: inputs, slot metadata, the CPU twin (`attention::attention` with
//! `HeadRecorder`s), a log-sum-exp reference in f64, and the prefill run (through `attnscope_cuda::ops`).

use super::{Elem, Gpu, NULL, values};
use attnscope_core::capture::{CaptureSpec, HeadRecorder, HeadStats, WeightBuffer};
use attnscope_core::model::attention::{AttentionInput, attention};
use attnscope_core::model::ops::{MatRef, matmul};
use attnscope_core::slots::AttentionMask;
use attnscope_core::slots::SlotInfo;
use attnscope_core::slots::Visibility;
use attnscope_cuda::ops::{self, AttentionCall};
use cudarc::driver::CudaSlice;

/// Shape of one attention problem.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub n_keys: usize,
    /// First query slot (chunked prefill / decode: > 0); query rows are slots q_start..n_keys.
    pub q_start: usize,
    pub head_dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub isolated: bool,
    pub window: Option<usize>,
}

/// Slot metadata: groups of 3 parallel slots sharing a position every 7 slots (as tests/gpu_kernels.rs).
pub fn slots(t: usize) -> Vec<SlotInfo> {
    let mut pos = 0i64;
    (0..t)
        .map(|i| {
            let in_group = i % 7 >= 3 && i % 7 <= 5;
            if i > 0 && !(in_group && i % 7 != 3) {
                pos += 1;
            }
            let group = if in_group { (i / 7) as i32 } else { -1 };
            SlotInfo::prompt(0, pos, group)
        })
        .collect()
}

/// Decode metadata: `slots(n_keys − n_q)`, then the n_q query slots as one parallel set (one shared position,
/// one new group) or, for n_q = 1, a plain next token.
pub fn decode_slots(n_keys: usize, n_q: usize) -> Vec<SlotInfo> {
    let mut s = slots(n_keys - n_q);
    let pos = s.last().map_or(0, |x| x.position + 1);
    let group = if n_q > 1 { 1_000_000 } else { -1 };
    s.extend((0..n_q).map(|_| SlotInfo::prompt(0, pos, group)));
    s
}

/// Inputs of one problem; q, k, v are already rounded to the element type under test.
pub struct Problem {
    pub s: Shape,
    pub n_new: usize,
    pub slots: Vec<SlotInfo>,
    /// `[n_new, n_heads·head_dim]`
    pub q: Vec<f32>,
    /// `[n_keys, n_kv_heads·head_dim]`
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub scale: f32,
}

/// The CPU twin's results.
pub struct Reference {
    /// `[n_new, n_heads·head_dim]`
    pub out: Vec<f32>,
    /// `[n_heads, n_new]`, f64 over the f32 scores of the CPU's gemm.
    pub lse: Vec<f64>,
    /// Per query head (all heads are recorded), indexed by slot.
    pub stats: Vec<Option<HeadStats>>,
    pub weights: Vec<Option<WeightBuffer>>,
}

/// Row statistics as the kernels return them, `[n_heads, n_new]`.
pub struct RowOutputs {
    pub out: Vec<f32>,
    pub lse: Vec<f32>,
    pub entropy: Vec<f32>,
    pub max_weight: Vec<f32>,
    pub argmax: Vec<u32>,
}

/// Tolerances of the row statistics.
pub struct StatTol {
    /// |lse − ref| ≤ lse·(1 + |ref|)
    pub lse: f64,
    /// |entropy − ref| ≤ entropy·(1 + |ref|)
    pub entropy: f32,
    /// |max_weight − ref| ≤ max_weight
    pub max_weight: f32,
    /// A different argmax is accepted when its CPU weight is within `tie` of the max weight.
    pub tie: f32,
}

impl Problem {
    /// Deterministic inputs for `s` with the given slot metadata, rounded by `round`.
    pub fn new(s: Shape, slots: Vec<SlotInfo>, round: fn(&[f32]) -> Vec<f32>) -> Problem {
        assert_eq!(slots.len(), s.n_keys);
        let (hd, nh, nkv) = (s.head_dim, s.n_heads, s.n_kv_heads);
        let n_new = s.n_keys - s.q_start;
        let seed = (s.n_keys * 1000 + hd) as u64;
        let q = round(&values(n_new * nh * hd, 11 + seed));
        // Larger keys make sharper rows, so the argmax is meaningful.
        let k: Vec<f32> = values(s.n_keys * nkv * hd, 12 + seed)
            .iter()
            .map(|v| 4.0 * v)
            .collect();
        let k = round(&k);
        let v = round(&values(s.n_keys * nkv * hd, 13 + seed));
        Problem {
            s,
            n_new,
            slots,
            q,
            k,
            v,
            scale: 1.0 / (hd as f32).sqrt(),
        }
    }

    pub fn mask(&self) -> AttentionMask<'_> {
        AttentionMask {
            slots: &self.slots,
            visibility: if self.s.isolated {
                Visibility::Isolated
            } else {
                Visibility::Visible
            },
            sliding_window: self.s.window,
        }
    }

    pub fn groups(&self) -> Vec<i32> {
        self.slots.iter().map(|s| s.group).collect()
    }

    pub fn positions(&self) -> Vec<i64> {
        self.slots.iter().map(|s| s.position).collect()
    }

    fn kv_head(&self, h: usize) -> usize {
        h / (self.s.n_heads / self.s.n_kv_heads)
    }

    /// scale·q·k of query row i (slot q_start + i), head h, key slot j, naively in f32.
    pub fn score(&self, h: usize, i: usize, j: usize) -> f32 {
        let (hd, nh, nkv) = (self.s.head_dim, self.s.n_heads, self.s.n_kv_heads);
        let qrow = &self.q[i * nh * hd + h * hd..][..hd];
        let krow = &self.k[j * nkv * hd + self.kv_head(h) * hd..][..hd];
        self.scale * qrow.iter().zip(krow).map(|(a, b)| a * b).sum::<f32>()
    }

    /// The CPU twin: outputs and the recorders of every head under `spec`, plus lse in f64.
    pub fn reference(&self, spec: &CaptureSpec) -> Reference {
        let s = &self.s;
        let (hd, nh, nkv) = (s.head_dim, s.n_heads, s.n_kv_heads);
        let mask = self.mask();
        let inp = AttentionInput {
            q: &self.q,
            keys: &self.k,
            values: &self.v,
            q_start: s.q_start,
            n_new: self.n_new,
            shape: attnscope_core::model::backend::AttentionShape {
                n_heads: nh,
                n_kv_heads: nkv,
                head_dim: hd,
                scale: self.scale,
            },
            mask,
        };
        let mut recs: Vec<HeadRecorder> =
            (0..nh).map(|_| HeadRecorder::new(spec, s.n_keys)).collect();
        let mut out = vec![0.0f32; self.n_new * nh * hd];
        attention(&inp, &mut out, Some(&mut recs));
        let (weights, stats) = recs.into_iter().map(|r| r.finish(s.n_keys)).unzip();

        // lse = m + ln Σ exp(s − m) in f64 over the visible f32 scores, rows in blocks through gemm.
        let mut lse = vec![0.0f64; nh * self.n_new];
        const B: usize = 256;
        let mut scores = Vec::new();
        for h in 0..nh {
            for start in (0..self.n_new).step_by(B) {
                let rows = B.min(self.n_new - start);
                let n_keys = s.q_start + start + rows;
                scores.clear();
                scores.resize(rows * n_keys, 0.0f32);
                let q = MatRef {
                    data: &self.q[start * nh * hd + h * hd..],
                    rows,
                    cols: hd,
                    row_stride: nh * hd,
                    col_stride: 1,
                };
                let k_t = MatRef {
                    data: &self.k[self.kv_head(h) * hd..],
                    rows: hd,
                    cols: n_keys,
                    row_stride: 1,
                    col_stride: nkv * hd,
                };
                matmul(&mut scores, n_keys, q, k_t, self.scale, true);
                for (r, row) in scores.chunks(n_keys).enumerate() {
                    let slot = s.q_start + start + r;
                    let vis: Vec<f64> = row[..=slot]
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| mask.allows(slot, j))
                        .map(|(_, &x)| x as f64)
                        .collect();
                    let m = vis.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = vis.iter().map(|x| (x - m).exp()).sum();
                    lse[h * self.n_new + start + r] = m + sum.ln();
                }
            }
        }
        Reference {
            out,
            lse,
            stats,
            weights,
        }
    }

    /// Checks lse (always) and entropy / max weight / argmax (when `got` has them) against the CPU.
    pub fn check_stats(&self, label: &str, r: &Reference, got: &RowOutputs, tol: &StatTol) {
        let mask = self.mask();
        for h in 0..self.s.n_heads {
            let stats = r.stats[h].as_ref().expect("stats recorded");
            for i in 0..self.n_new {
                let slot = self.s.q_start + i;
                let gi = h * self.n_new + i;
                let lse = r.lse[gi];
                assert!(
                    (got.lse[gi] as f64 - lse).abs() <= tol.lse * (1.0 + lse.abs()),
                    "{label} head {h} row {i}: lse {} vs {lse}",
                    got.lse[gi]
                );
                if got.entropy.is_empty() {
                    continue;
                }
                let row = &stats.rows[slot];
                assert!(
                    (got.entropy[gi] - row.entropy).abs()
                        <= tol.entropy * (1.0 + row.entropy.abs()),
                    "{label} head {h} row {i}: entropy {} vs {}",
                    got.entropy[gi],
                    row.entropy
                );
                assert!(
                    (got.max_weight[gi] - row.max_weight).abs() <= tol.max_weight,
                    "{label} head {h} row {i}: max weight {} vs {}",
                    got.max_weight[gi],
                    row.max_weight
                );
                // Exact ties of rounded probabilities may legitimately pick another slot: accept a visible
                // slot whose probability equals the max weight to within `tie`.
                let j = got.argmax[gi] as usize;
                if j != row.argmax as usize {
                    let ok = j <= slot
                        && mask.allows(slot, j)
                        && ((self.score(h, i, j) as f64 - lse).exp() as f32 - row.max_weight).abs()
                            <= tol.tie;
                    assert!(ok, "{label} head {h} row {i}: argmax {j} vs {}", row.argmax);
                }
            }
        }
    }
}

/// Which prefill kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Path {
    /// `attn_prefill_simt_<T>`: grid (ceil(n_new/4), n_heads), block 128, (68·hd + 32)·4 bytes of dynamic
    /// shared memory (K tile with rows padded to hd + 1, V tile, 4 query rows).
    Simt,
    /// `attn_prefill_<T>_hd<HD>`: grid (ceil(n_new/64), n_heads), block 128, static shared memory only.
    Tensor,
    /// `attn_prefill_fa2_<T>_hd<HD>[_stats]` (kernels/attention_prefill_fa2.cu) at its head dims, the
    /// reference `Tensor` kernel at the others (HD 256): same launch shape.
    Fast,
}

impl Problem {
    /// The attention call of `p` on device buffers (statistics beyond lse only when `stats` is given).
    pub fn call<E: Elem>(&self, gpu: &Gpu, b: &ProblemBuffers<E>, stats: bool) -> AttentionCall {
        let s = &self.s;
        let opt = |p: u64| if stats { p } else { NULL };
        AttentionCall {
            dtype: E::DTYPE,
            q: gpu.ptr(&b.q),
            q_stride: s.n_heads * s.head_dim,
            k: gpu.ptr(&b.k),
            v: gpu.ptr(&b.v),
            kv_stride: s.n_kv_heads * s.head_dim,
            o: gpu.ptr(&b.out),
            o_stride: s.n_heads * s.head_dim,
            lse: gpu.ptr(&b.lse),
            entropy: opt(gpu.ptr(&b.entropy)),
            max_weight: opt(gpu.ptr(&b.max_weight)),
            argmax: opt(gpu.ptr(&b.argmax)),
            groups: gpu.ptr(&b.groups),
            isolated: s.isolated,
            window: s.window.unwrap_or(0),
            q_start: s.q_start,
            n_new: self.n_new,
            n_heads: s.n_heads,
            n_kv_heads: s.n_kv_heads,
            head_dim: s.head_dim,
            scale: self.scale,
        }
    }
}

/// `p`'s inputs uploaded as `E`, and zeroed outputs.
pub struct ProblemBuffers<E: Elem> {
    pub q: CudaSlice<E>,
    pub k: CudaSlice<E>,
    pub v: CudaSlice<E>,
    pub groups: CudaSlice<i32>,
    pub out: CudaSlice<E>,
    pub lse: CudaSlice<f32>,
    pub entropy: CudaSlice<f32>,
    pub max_weight: CudaSlice<f32>,
    pub argmax: CudaSlice<u32>,
}

impl<E: Elem> ProblemBuffers<E> {
    pub fn new(gpu: &Gpu, p: &Problem) -> ProblemBuffers<E> {
        let s = &p.s;
        let (nh, n_new) = (s.n_heads, p.n_new);
        ProblemBuffers {
            q: gpu.upload_as::<E>(&p.q),
            k: gpu.upload_as::<E>(&p.k),
            v: gpu.upload_as::<E>(&p.v),
            groups: gpu.upload(&p.groups()),
            out: gpu.zeros::<E>(n_new * nh * s.head_dim),
            lse: gpu.zeros::<f32>(nh * n_new),
            entropy: gpu.zeros::<f32>(nh * n_new),
            max_weight: gpu.zeros::<f32>(nh * n_new),
            argmax: gpu.zeros::<u32>(nh * n_new),
        }
    }

    /// The outputs, downloaded (entropy, max weight and argmax empty without `stats`).
    pub fn download(&self, gpu: &Gpu, stats: bool) -> RowOutputs {
        let (entropy, max_weight, argmax) = if stats {
            (
                gpu.download(&self.entropy),
                gpu.download(&self.max_weight),
                gpu.download(&self.argmax),
            )
        } else {
            (Vec::new(), Vec::new(), Vec::new())
        };
        RowOutputs {
            out: gpu.download_f32(&self.out),
            lse: gpu.download(&self.lse),
            entropy,
            max_weight,
            argmax,
        }
    }
}

/// Runs a prefill kernel of kernels/attention_prefill.cu on `p` with element type `E`, through the engine's
/// launcher of that kernel. With `with_stats` false, entropy / max weight / argmax are passed as null (the
/// returned vectors are empty).
pub fn run_prefill<E: Elem>(gpu: &Gpu, path: Path, p: &Problem, with_stats: bool) -> RowOutputs {
    let b = ProblemBuffers::<E>::new(gpu, p);
    let call = p.call(gpu, &b, with_stats);
    match path {
        Path::Simt => ops::attention_prefill_simt(&gpu.g, &call),
        Path::Tensor => ops::attention_prefill_tensor_core(&gpu.g, &call),
        Path::Fast if attnscope_cuda::kernels::FA2_HEAD_DIMS.contains(&p.s.head_dim) => {
            ops::attention_prefill_fa2(&gpu.g, &call)
        }
        Path::Fast => ops::attention_prefill_tensor_core(&gpu.g, &call),
    }
    .unwrap_or_else(|e| panic!("{e}"));
    b.download(gpu, with_stats)
}

/// f32 probabilities (SIMT prefill, decode): the tolerances of tests/gpu_kernels.rs.
/// The tie tolerance is wider: a flip needs two scores within ~1e-6 (summation order), whose weights then
/// differ by up to ~1e-6·max_weight plus rounding.
pub const F32_STATS: StatTol = StatTol {
    lse: 1e-5,
    entropy: 1e-4,
    max_weight: 1e-5,
    tie: 5e-6,
};

pub fn shape(n_keys: usize, q_start: usize, hd: usize, heads: (usize, usize), vis: Vis) -> Shape {
    Shape {
        n_keys,
        q_start,
        head_dim: hd,
        n_heads: heads.0,
        n_kv_heads: heads.1,
        isolated: vis.0,
        window: vis.1,
    }
}

/// (isolated groups, sliding window)
pub type Vis = (bool, Option<usize>);
pub const VIS: [Vis; 4] = [
    (false, None),
    (true, None),
    (true, Some(16)),
    (false, Some(100)),
];

/// Output tolerance where only the output is rounded to E (P stays f32): u·|ref| + 1e-5·(1 + |ref|).
pub fn rounded_out_tol<E: Elem>(want: f32) -> f32 {
    E::UNIT * want.abs() + 1e-5 * (1.0 + want.abs())
}
