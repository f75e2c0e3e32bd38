//! CPU kernels of the forward pass, f32: matmul (through `gemm`), linear layers (few rows: `matvec`), norms,
//! activations.
//! Each is the CPU twin of a CUDA kernel in `kernels/` and follows transformers' arithmetic.

use crate::config::{Activation, NormKind};
use crate::model::matvec::{SMALL_BATCH_ROWS, project_few_rows};
use crate::model::panel_gemm::project_panels;
use crate::weights::{Linear, Norm, WeightMatrix};
use rayon::prelude::*;

/// A read-only strided view of a matrix: element (r, c) is `data[r * row_stride + c * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A contiguous row-major matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// Whether every addressed element lies inside `data`.
    fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride < self.data.len()
    }
}

/// dst `[m, n]` (rows `dst_row_stride` apart, columns contiguous) = scale · a `[m, k]` × b `[k, n]`.
/// `parallel` lets gemm use rayon threads; callers already running inside a parallel loop pass false.
pub fn matmul(
    dst: &mut [f32],
    dst_row_stride: usize,
    a: MatRef,
    b: MatRef,
    scale: f32,
    parallel: bool,
) {
    gemm_into(dst, dst_row_stride, a, b, scale, false, parallel);
}

/// dst `[m, n]` += scale · a `[m, k]` × b `[k, n]`, single-threaded (the tiled attention accumulates its
/// output tile by tile).
pub fn matmul_add(dst: &mut [f32], dst_row_stride: usize, a: MatRef, b: MatRef, scale: f32) {
    gemm_into(dst, dst_row_stride, a, b, scale, true, false);
}

/// dst = scale · a × b, plus the old dst when `accumulate`.
fn gemm_into(
    dst: &mut [f32],
    dst_row_stride: usize,
    a: MatRef,
    b: MatRef,
    scale: f32,
    accumulate: bool,
    parallel: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "matmul: inner dimensions differ");
    assert!(
        a.in_bounds() && b.in_bounds(),
        "matmul: operand view out of bounds"
    );
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * dst_row_stride + n <= dst.len(),
        "matmul: destination too small"
    );
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_row_stride..r * dst_row_stride + n].fill(0.0);
            }
        }
        return;
    }
    let par = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above guarantee that every element gemm addresses through these pointers and strides
    // lies inside the borrowed slices, and `dst` is borrowed mutably so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_row_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            scale,
            false,
            false,
            false,
            par,
        );
    }
}

/// out `[t, out_dim]` = x `[t, in_dim]` · Wᵀ + b.
pub fn linear(x: &[f32], t: usize, lin: &Linear, out: &mut Vec<f32>) {
    project(
        x,
        t,
        &lin.weight,
        lin.in_dim,
        lin.out_dim,
        lin.bias.as_deref(),
        out,
    );
}

/// [`linear`] of several layers on the same input, as one parallel region: the layers are split in halves
/// with `rayon::join`, so a thread done with its share of one layer's loop takes up another layer's instead
/// of waiting for the slowest at each layer's end (decode at batch 1 otherwise meets at every layer). Each
/// layer is computed exactly as [`linear`] computes it.
pub fn linears(x: &[f32], t: usize, layers: &mut [(&Linear, &mut Vec<f32>)]) {
    match layers {
        [] => {}
        [(lin, out)] => linear(x, t, lin, out),
        _ => {
            let (a, b) = layers.split_at_mut(layers.len() / 2);
            rayon::join(|| linears(x, t, a), || linears(x, t, b));
        }
    }
}

/// out `[t, out_dim]` = x `[t, in_dim]` · Wᵀ + b for a weight stored `[out_dim, in_dim]`.
pub fn project(
    x: &[f32],
    t: usize,
    weight: &WeightMatrix,
    in_dim: usize,
    out_dim: usize,
    bias: Option<&[f32]>,
    out: &mut Vec<f32>,
) {
    if let WeightMatrix::F32Panels(w) = weight {
        // The panel product writes every element: no zeroing first (a memset of every activation).
        out.resize(t * out_dim, 0.0);
        assert_eq!(
            (w.rows(), w.cols()),
            (out_dim, in_dim),
            "project: weight shape"
        );
        project_panels(&x[..t * in_dim], t, w, out);
    } else {
        out.clear();
        out.resize(t * out_dim, 0.0);
        if t <= SMALL_BATCH_ROWS {
            project_few_rows(&x[..t * in_dim], t, weight, in_dim, out_dim, out);
        } else if let Some(w) = weight.as_f32() {
            project_gemm(&x[..t * in_dim], t, w, in_dim, out_dim, out, 0);
        } else {
            project_converted(&x[..t * in_dim], t, weight, in_dim, out_dim, out);
        }
    }
    if let Some(bias) = bias {
        out.par_chunks_mut(out_dim)
            .for_each(|row| row.iter_mut().zip(bias).for_each(|(y, b)| *y += b));
    }
}

/// Columns `first..first + rows` of out `[t, out_dim]` = x · wᵀ for `w` the f32 rows `first..` of the
/// weight (`[rows, in_dim]`), through gemm.
fn project_gemm(
    x: &[f32],
    t: usize,
    w: &[f32],
    in_dim: usize,
    out_dim: usize,
    out: &mut [f32],
    first: usize,
) {
    let rows = w.len() / in_dim.max(1);
    let a = MatRef::row_major(x, t, in_dim);
    let w_t = MatRef {
        data: w,
        rows: in_dim,
        cols: rows,
        row_stride: 1,
        col_stride: in_dim,
    };
    matmul(&mut out[first..], out_dim, a, w_t, 1.0, true);
}

/// Elements of weight converted to f32 per gemm call of [`project_converted`] (1 MiB, within L2).
const CONVERTED_BLOCK_ELEMENTS: usize = 1 << 18;

/// [`project`] for t > [`SMALL_BATCH_ROWS`] and a bf16/f16 weight: blocks of weight rows are converted to
/// f32 into a per-thread buffer, in parallel, and each block goes through gemm as f32 weights would.
fn project_converted(
    x: &[f32],
    t: usize,
    weight: &WeightMatrix,
    in_dim: usize,
    out_dim: usize,
    out: &mut [f32],
) {
    if in_dim == 0 {
        return; // `out` is already zero
    }
    thread_local! {
        static CONVERTED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let block_rows = (CONVERTED_BLOCK_ELEMENTS / in_dim).clamp(64, out_dim.max(64));
    CONVERTED.with(|cell| {
        let mut own = Vec::new();
        let mut borrowed = cell.try_borrow_mut();
        let buf: &mut Vec<f32> = match borrowed.as_mut() {
            Ok(buf) => buf,
            Err(_) => &mut own,
        };
        for first in (0..out_dim).step_by(block_rows) {
            let rows = block_rows.min(out_dim - first);
            buf.resize(rows * in_dim, 0.0);
            let block = &mut buf[..rows * in_dim];
            block
                .par_chunks_mut(in_dim)
                .enumerate()
                .for_each(|(r, row)| weight.read_f32((first + r) * in_dim, row));
            project_gemm(x, t, block, in_dim, out_dim, out, first);
        }
    });
}

/// Normalises each row of `x` (width = weight length) into `out`.
pub fn norm(x: &[f32], n: &Norm, kind: NormKind, eps: f32, out: &mut Vec<f32>) {
    let dim = n.weight.len();
    out.clear();
    out.resize(x.len(), 0.0);
    out.par_chunks_mut(dim)
        .zip(x.par_chunks(dim))
        .for_each(|(o, row)| norm_row(row, n, kind, eps, o));
}

/// One row of RMSNorm (`w · x / sqrt(mean(x²) + eps)`) or LayerNorm (`w · (x − μ) / sqrt(var + eps) + b`).
pub fn norm_row(x: &[f32], n: &Norm, kind: NormKind, eps: f32, out: &mut [f32]) {
    let dim = x.len() as f32;
    match kind {
        NormKind::RmsNorm => {
            let ms = x.iter().map(|v| v * v).sum::<f32>() / dim;
            let inv = 1.0 / (ms + eps).sqrt();
            for ((o, v), w) in out.iter_mut().zip(x).zip(&n.weight) {
                *o = w * (v * inv);
            }
        }
        NormKind::LayerNorm => {
            let mean = x.iter().sum::<f32>() / dim;
            let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / dim;
            let inv = 1.0 / (var + eps).sqrt();
            for (i, (o, v)) in out.iter_mut().zip(x).enumerate() {
                let b = n.bias.as_ref().map_or(0.0, |b| b[i]);
                *o = (v - mean) * inv * n.weight[i] + b;
            }
        }
    }
}

/// Applies an activation in place.
pub fn activate(x: &mut [f32], act: Activation) {
    x.par_chunks_mut(4096).for_each(|c| {
        for v in c.iter_mut() {
            *v = activation(*v, act);
        }
    });
}

/// `up[i] *= silu(gate[i])` (SwiGLU's gated product), in SIMD through `pulp`'s run-time dispatch with the
/// softmax's f32 [`exp`](crate::lanes::exp) (within 2 ulp) instead of libm's scalar `expf`.
pub fn silu_gated(up: &mut [f32], gate: &[f32]) {
    struct Op<'a> {
        up: &'a mut [f32],
        gate: &'a [f32],
    }
    impl pulp::WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _simd: S) {
            for (u, &g) in self.up.iter_mut().zip(self.gate) {
                *u *= g / (1.0 + crate::lanes::exp(-g));
            }
        }
    }
    pulp::Arch::new().dispatch(Op { up, gate })
}

/// One activation value.
pub fn activation(x: f32, act: Activation) -> f32 {
    match act {
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::Relu => x.max(0.0),
        Activation::Gelu => {
            let xd = x as f64;
            (0.5 * xd * (1.0 + erf(xd / std::f64::consts::SQRT_2))) as f32
        }
        Activation::GeluTanh => {
            // f32 throughout, as transformers' gelu_new: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
            const SQRT_2_OVER_PI: f32 = 0.797_884_6;
            let inner = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
            // tanh(y) = 1 − 2 / (1 + e^{2y}): one expf instead of tanhf (absolute error ~1e-7, saturates
            // correctly at ±1 for large |y|).
            let tanh = 1.0 - 2.0 / (1.0 + (2.0 * inner).exp());
            0.5 * x * (1.0 + tanh)
        }
    }
}

/// Error function, |error| < 1.2e-7 (Numerical Recipes' erfc Chebyshev fit), evaluated in f64.
pub fn erf(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    if x >= 0.0 { 1.0 - erfc } else { erfc - 1.0 }
}

/// Adds `y` into `x` elementwise.
pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(4096)
        .zip(y.par_chunks(4096))
        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a += b));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        out
    }

    #[test]
    fn matmul_matches_naive_for_odd_shapes() {
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (17, 33, 9), (64, 8, 130)] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 11 % 17) as f32 - 8.0) / 7.0)
                .collect();
            let mut out = vec![0.0; m * n];
            matmul(
                &mut out,
                n,
                MatRef::row_major(&a, m, k),
                MatRef::row_major(&b, k, n),
                1.0,
                true,
            );
            let want = naive(&a, &b, m, k, n);
            for (x, y) in out.iter().zip(&want) {
                assert!((x - y).abs() < 1e-4, "{x} vs {y}");
            }
        }
    }

    /// Inputs `[t, k]`, a weight `[n, k]` and a bias `[n]` of small, varied values.
    fn operands(t: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let x = (0..t * k)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0)
            .collect();
        let w = (0..n * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 51.0)
            .collect();
        (x, w, (0..n).map(|i| i as f32 / 7.0).collect())
    }

    /// t > 16 with bf16/f16 weights (blocks converted to f32, then gemm) against gemm on the same values
    /// in f32, for odd shapes and an out_dim of several conversion blocks.
    #[test]
    fn converted_gemm_matches_f32_storage() {
        use crate::weights::StorageDtype;
        for &(t, k, n) in &[(17, 13, 70), (33, 100, 129), (20, 1, 5), (17, 3000, 700)] {
            let (x, w, bias) = operands(t, k, n);
            for dtype in [StorageDtype::Bf16, StorageDtype::F16] {
                let stored = WeightMatrix::from_f32(w.clone(), dtype);
                let exact = WeightMatrix::from(stored.to_f32().into_owned());
                let (mut got, mut want) = (Vec::new(), Vec::new());
                project(&x, t, &stored, k, n, Some(&bias), &mut got);
                project(&x, t, &exact, k, n, Some(&bias), &mut want);
                assert_eq!(got.len(), t * n);
                for (a, b) in got.iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                        "{dtype:?} t={t} k={k} n={n}: {a} vs {b}"
                    );
                }
            }
        }
    }

    /// Weights in row panels against an f64 product, for any number of input rows (one: the panel mat-vec,
    /// full and partial panels; decode's few; one block; several blocks with a remainder), panel counts
    /// with a partial last panel, and a bias; each element within f32 rounding of its sum of |terms|.
    #[test]
    fn panel_weights_match_f64_product() {
        for &(t, k, n) in &[
            (1, 7, 1),
            (1, 100, 130),
            (1, 33, 128),
            (3, 100, 63),
            (16, 33, 64),
            (17, 1, 65),
            (300, 40, 130),
            (5, 0, 9),
        ] {
            let (x, w, bias) = operands(t, k, n);
            let lin = Linear {
                weight: WeightMatrix::from(w.clone()).into_panels(n, k),
                bias: Some(bias.clone()),
                in_dim: k,
                out_dim: n,
            };
            assert!(matches!(lin.weight, WeightMatrix::F32Panels(_)));
            let mut got = vec![f32::NAN; 3];
            linear(&x, t, &lin, &mut got);
            assert_eq!(got.len(), t * n);
            for r in 0..t {
                for c in 0..n {
                    let terms = (0..k).map(|p| f64::from(x[r * k + p]) * f64::from(w[c * k + p]));
                    let want: f64 = terms.clone().sum::<f64>() + f64::from(bias[c]);
                    let scale: f64 = terms.map(f64::abs).sum::<f64>() + f64::from(bias[c]).abs();
                    let err = (f64::from(got[r * n + c]) - want).abs();
                    assert!(
                        err <= 1e-6 * scale.max(1.0),
                        "t={t} k={k} n={n} ({r},{c}): {} vs {want}",
                        got[r * n + c]
                    );
                }
            }
        }
    }

    #[test]
    fn linear_uses_out_in_layout_and_bias() {
        // W = [[1, 2], [3, 4], [5, 6]] (out 3, in 2), b = [0.5, 0, -1]
        let lin = Linear {
            weight: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0].into(),
            bias: Some(vec![0.5, 0.0, -1.0]),
            in_dim: 2,
            out_dim: 3,
        };
        let mut out = Vec::new();
        linear(&[1.0, -1.0], 1, &lin, &mut out);
        assert_eq!(out, vec![-0.5, -1.0, -2.0]);
    }

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_8),
            (1.0, 0.842_700_792_9),
            (-2.0, -0.995_322_265_0),
        ] {
            assert!((erf(x) - want).abs() < 2e-7, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn norms_follow_their_definitions() {
        let n = Norm {
            weight: vec![1.0, 2.0],
            bias: Some(vec![0.0, 1.0]),
        };
        let mut out = [0.0; 2];
        norm_row(&[3.0, 4.0], &n, NormKind::RmsNorm, 0.0, &mut out);
        let rms = (12.5f32).sqrt();
        assert!((out[0] - 3.0 / rms).abs() < 1e-6 && (out[1] - 8.0 / rms).abs() < 1e-6);
        norm_row(&[3.0, 5.0], &n, NormKind::LayerNorm, 0.0, &mut out);
        assert!((out[0] + 1.0).abs() < 1e-6 && (out[1] - 3.0).abs() < 1e-6);
    }
}
