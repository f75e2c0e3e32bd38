//! The two products of a tile for a block of a few query rows (decode: one row per sequence), without
//! gemm: scores as dot products of each query with each key row, and `o += P · V` as scaled additions of
//! value rows. Both walk the key and value rows in memory order, compiled for the CPU's widest vectors
//! (`pulp`'s run-time dispatch), with fused multiply-adds (one rounding, as gemm's kernels). gemm's packing
//! costs more than the product at this size.

use crate::lanes::LANES;
use crate::model::ops::MatRef;
use pulp::{Arch, Simd, WithSimd};

/// Blocks of at most this many query rows take this path.
pub const FEW_ROWS: usize = 4;

/// `s[r * stride + c] = scale · q_r · k_c` for the rows of `q` (`[rows, head_dim]`) and the columns of
/// `k_t` (`Kᵀ` `[head_dim, keys]`, each key's vector contiguous: `row_stride` 1).
pub fn scores(s: &mut [f32], stride: usize, q: MatRef, k_t: MatRef, scale: f32) {
    struct Op<'a> {
        s: &'a mut [f32],
        stride: usize,
        q: MatRef<'a>,
        k_t: MatRef<'a>,
        scale: f32,
    }
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, _simd: S) {
            let Op {
                s,
                stride,
                q,
                k_t,
                scale,
            } = self;
            let hd = q.cols;
            for c in 0..k_t.cols {
                let key = &k_t.data[c * k_t.col_stride..c * k_t.col_stride + hd];
                for r in 0..q.rows {
                    let qv = &q.data[r * q.row_stride..r * q.row_stride + hd];
                    s[r * stride + c] = dot(qv, key) * scale;
                }
            }
        }
    }
    assert!(q.col_stride == 1 && k_t.row_stride == 1 && q.cols == k_t.rows);
    Arch::new().dispatch(Op {
        s,
        stride,
        q,
        k_t,
        scale,
    })
}

/// `o[r] += Σ_c p[r * stride + c] · v_c` for `rows` rows of `o` (`[rows, head_dim]`) and the rows of `v`
/// (`[keys, head_dim]`, each row contiguous).
pub fn accumulate(o: &mut [f32], p: &[f32], stride: usize, v: MatRef) {
    struct Op<'a> {
        o: &'a mut [f32],
        p: &'a [f32],
        stride: usize,
        v: MatRef<'a>,
    }
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, _simd: S) {
            let Op { o, p, stride, v } = self;
            let hd = v.cols;
            for c in 0..v.rows {
                let val = &v.data[c * v.row_stride..c * v.row_stride + hd];
                for (r, out) in o.chunks_exact_mut(hd).enumerate() {
                    let w = p[r * stride + c];
                    if w != 0.0 {
                        for (a, &b) in out.iter_mut().zip(val) {
                            *a = w.mul_add(b, *a);
                        }
                    }
                }
            }
        }
    }
    assert!(v.col_stride == 1 && o.len().is_multiple_of(v.cols.max(1)));
    Arch::new().dispatch(Op { o, p, stride, v })
}

/// Σ a·b with independent lanes (vectorised under the dispatch's target features).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    let tail = ra.iter().zip(rb).fold(0.0f32, |s, (x, y)| x.mul_add(*y, s));
    acc.iter().sum::<f32>() + tail
}
