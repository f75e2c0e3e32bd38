//! Decode's linear layers: out `[t, out_dim]` = x `[t, in_dim]` · Wᵀ for a few input rows (t ≤
//! [`SMALL_BATCH_ROWS`]), with W stored `[out_dim, in_dim]` as f32, bf16 or f16 (computed in f32: bf16 is
//! widened in registers, f16 converted four rows at a time into a per-thread buffer by `half`). These products are bound by the bandwidth of
//! streaming W, so each weight row is read from memory once per call and used for all t input rows.
//!
//! Explicit SIMD through `pulp`, dispatched at run time (AVX-512 with the `avx512` feature, else AVX2/FMA on
//! x86-64; NEON on aarch64), f32 accumulation. Work is split over blocks of output features with
//! `rayon::join`; inside a block, register tiles of up to [`MAX_TILE_ROWS`] weight rows × [`MAX_TILE_INPUTS`]
//! input rows keep one accumulator per (weight row, input) pair. Results are written into `[t, out_dim]` directly.

use crate::weights::WeightMatrix;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use pulp::{Arch, Simd, WithSimd};
use std::cell::RefCell;

/// Up to this many input rows, `project` streams each weight row once and reuses it for every input row
/// (decode, batched decode) instead of packing the whole weight matrix for gemm.
pub const SMALL_BATCH_ROWS: usize = 16;

/// Most weight rows of one register tile (they share each load of an input vector).
const MAX_TILE_ROWS: usize = 4;
/// Most input rows of one register tile (they share each load of a weight vector); t > 4 runs several
/// tiles over the same weight rows, which are then in L1.
const MAX_TILE_INPUTS: usize = 4;
/// Output features of the smallest parallel task (a multiple of `MAX_TILE_ROWS`).
const TASK_ROWS: usize = 64;

/// out `[t, out_dim]` = x `[t, in_dim]` · Wᵀ for `t ≤ SMALL_BATCH_ROWS`, W `[out_dim, in_dim]`.
pub fn project_few_rows(
    x: &[f32],
    t: usize,
    weight: &WeightMatrix,
    in_dim: usize,
    out_dim: usize,
    out: &mut [f32],
) {
    assert!(t <= SMALL_BATCH_ROWS, "project_few_rows: {t} input rows");
    assert_eq!(x.len(), t * in_dim, "project_few_rows: input length");
    assert_eq!(
        weight.len(),
        out_dim * in_dim,
        "project_few_rows: weight length"
    );
    assert_eq!(out.len(), t * out_dim, "project_few_rows: output length");
    if t == 0 || out_dim == 0 {
        return;
    }
    if in_dim == 0 {
        out.fill(0.0);
        return;
    }
    let mut rows: OutRows = Default::default();
    for (slot, row) in rows.iter_mut().zip(out.chunks_mut(out_dim)) {
        *slot = row;
    }
    let arch = Arch::new();
    let weight = match weight {
        WeightMatrix::F32Panels(w) => {
            return crate::model::panel_gemm::project_panels(x, t, w, out);
        }
        WeightMatrix::F32(w) => Rows::F32(w),
        WeightMatrix::F16(w) => Rows::F16(w),
        WeightMatrix::Bf16(w) => Rows::Bf16(w),
    };
    let run = |x: &[f32]| {
        let job = Job {
            arch,
            x,
            t,
            weight,
            in_dim,
        };
        job.split(rows, 0, out_dim);
    };
    if !matches!(weight, Rows::Bf16(_)) {
        return run(x);
    }
    // bf16 rows widen into (even, odd) element vectors: the inputs are permuted to match, per thread.
    thread_local! {
        static PERMUTED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }
    let block = 2 * arch.dispatch(F32Lanes);
    PERMUTED.with(|cell| {
        let mut own = Vec::new();
        let mut borrowed = cell.try_borrow_mut();
        let buf: &mut Vec<f32> = match borrowed.as_mut() {
            Ok(buf) => buf,
            Err(_) => &mut own,
        };
        buf.clear();
        buf.extend_from_slice(x);
        for row in buf.chunks_mut(in_dim) {
            for chunk in row.chunks_exact_mut(block) {
                let copy: [f32; 2 * MAX_F32_LANES] =
                    std::array::from_fn(|i| chunk.get(i).copied().unwrap_or(0.0));
                for j in 0..block / 2 {
                    chunk[j] = copy[2 * j];
                    chunk[block / 2 + j] = copy[2 * j + 1];
                }
            }
        }
        run(buf);
    });
}

/// Widest f32 vector of any dispatched instruction set (AVX-512).
const MAX_F32_LANES: usize = 16;

/// `S::F32_LANES` of the instruction set the dispatch picks.
struct F32Lanes;

impl WithSimd for F32Lanes {
    type Output = usize;

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) -> usize {
        S::F32_LANES
    }
}

/// The weight matrix of one call, by storage dtype.
#[derive(Clone, Copy)]
enum Rows<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
    F16(&'a [f16]),
}

/// The t output rows, each narrowed to the output features of one task (unused entries empty).
type OutRows<'a> = [&'a mut [f32]; SMALL_BATCH_ROWS];

/// One call's operands, shared by every task.
struct Job<'a> {
    arch: Arch,
    x: &'a [f32],
    t: usize,
    weight: Rows<'a>,
    in_dim: usize,
}

impl Job<'_> {
    /// Computes output features `first..first + count` into `rows` (each of length `count`), halving the
    /// range over rayon until a task has at most `TASK_ROWS` features.
    fn split(&self, mut rows: OutRows, first: usize, count: usize) {
        if count <= TASK_ROWS {
            // The f16 rows' f32 buffer is borrowed here, outside the dispatched code: a closure inside
            // `with_simd` would be compiled without its target features (its intrinsics not inlined).
            thread_local! {
                static F16_ROWS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
            }
            F16_ROWS.with(|cell| {
                let mut own = Vec::new();
                let mut borrowed = cell.try_borrow_mut();
                let converted: &mut Vec<f32> = match borrowed.as_mut() {
                    Ok(buf) => buf,
                    Err(_) => &mut own,
                };
                self.arch.dispatch(Task {
                    job: self,
                    rows,
                    first,
                    count,
                    converted,
                });
            });
            return;
        }
        let mid = (count / 2).next_multiple_of(MAX_TILE_ROWS);
        let mut right: OutRows = Default::default();
        for (left, right) in rows[..self.t].iter_mut().zip(&mut right) {
            let (a, b) = std::mem::take(left).split_at_mut(mid);
            *left = a;
            *right = b;
        }
        rayon::join(
            || self.split(rows, first, mid),
            || self.split(right, first + mid, count - mid),
        );
    }
}

/// One parallel task: output features `first..first + count` for all t input rows.
struct Task<'a, 'b> {
    job: &'a Job<'a>,
    rows: OutRows<'b>,
    first: usize,
    count: usize,
    /// f16 weight rows converted to f32, a tile at a time.
    converted: &'b mut Vec<f32>,
}

impl WithSimd for Task<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Self::Output {
        let Task {
            job,
            mut rows,
            first,
            count,
            converted,
        } = self;
        let k = job.in_dim;
        // 4 × 4 measured as fast as 2 weight rows × 8 inputs for t = 8 (examples/matvec_bandwidth.rs).
        let (tile_rows, tile_inputs) = (MAX_TILE_ROWS, MAX_TILE_INPUTS);
        for g in (0..count).step_by(tile_rows) {
            let r = tile_rows.min(count - g);
            let span = (first + g) * k..(first + g + r) * k;
            let w = match job.weight {
                Rows::F32(w) => WeightRows::F32(&w[span]),
                Rows::Bf16(w) => WeightRows::Bf16(&w[span]),
                Rows::F16(w) => {
                    converted.resize(r * k, 0.0);
                    w[span].convert_to_f32_slice(&mut converted[..r * k]);
                    WeightRows::F32(&converted[..r * k])
                }
            };
            for c0 in (0..job.t).step_by(tile_inputs) {
                let c = tile_inputs.min(job.t - c0);
                let x = &job.x[c0 * k..(c0 + c) * k];
                let mut sums = [[0.0f32; MAX_TILE_INPUTS]; MAX_TILE_ROWS];
                match w {
                    WeightRows::F32(w) => tile_any(
                        simd,
                        |i| F32Row(&w[i * k..(i + 1) * k]),
                        x,
                        k,
                        r,
                        c,
                        &mut sums,
                    ),
                    WeightRows::Bf16(w) => tile_any(
                        simd,
                        |i| Bf16Row(&w[i * k..(i + 1) * k]),
                        x,
                        k,
                        r,
                        c,
                        &mut sums,
                    ),
                }
                for (ci, row) in rows[c0..c0 + c].iter_mut().enumerate() {
                    for (ri, sum) in sums[..r].iter().enumerate() {
                        row[g + ri] = sum[ci];
                    }
                }
            }
        }
    }
}

/// The weight rows of one tile, as the kernel reads them.
#[derive(Clone, Copy)]
enum WeightRows<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
}

/// One weight row as the kernel reads it: steps of `2 · S::F32_LANES` elements as two f32 vectors, then
/// the scalar tail.
trait WeightRow: Copy {
    /// The two f32 vectors of step `i`: elements in order for f32; (even, odd) elements for bf16, whose
    /// inputs are permuted to match.
    fn step<S: Simd>(self, simd: S, i: usize) -> [S::f32s; 2];
    /// Element `j` in f32.
    fn get(self, j: usize) -> f32;
}

#[derive(Clone, Copy)]
struct F32Row<'a>(&'a [f32]);

impl WeightRow for F32Row<'_> {
    #[inline(always)]
    fn step<S: Simd>(self, _simd: S, i: usize) -> [S::f32s; 2] {
        let v = S::as_simd_f32s(self.0).0;
        [v[2 * i], v[2 * i + 1]]
    }
    #[inline(always)]
    fn get(self, j: usize) -> f32 {
        self.0[j]
    }
}

#[derive(Clone, Copy)]
struct Bf16Row<'a>(&'a [bf16]);

impl WeightRow for Bf16Row<'_> {
    #[inline(always)]
    fn step<S: Simd>(self, simd: S, i: usize) -> [S::f32s; 2] {
        // 2L bf16 = L u32 lanes; lane j holds element 2j in its low half and 2j + 1 in its high half, and
        // a bf16 is the high half of its f32: shift the low half up (× 2¹⁶), mask the high half.
        let bytes: &[u8] = bytemuck::cast_slice(self.0.reinterpret_cast());
        let size = std::mem::size_of::<S::u32s>();
        let packed: S::u32s = bytemuck::pod_read_unaligned(&bytes[i * size..(i + 1) * size]);
        let even = simd.mul_u32s(packed, simd.splat_u32s(1 << 16));
        let odd = simd.and_u32s(packed, simd.splat_u32s(0xFFFF_0000));
        [
            simd.transmute_f32s_u32s(even),
            simd.transmute_f32s_u32s(odd),
        ]
    }
    #[inline(always)]
    fn get(self, j: usize) -> f32 {
        self.0[j].to_f32()
    }
}

/// [`tile`] for `r ≤ 4` weight rows (`row(i)`) and `c ≤ 4` inputs known only at run time.
#[inline(always)]
fn tile_any<S: Simd, W: WeightRow>(
    simd: S,
    row: impl Fn(usize) -> W,
    x: &[f32],
    k: usize,
    r: usize,
    c: usize,
    sums: &mut [[f32; MAX_TILE_INPUTS]; MAX_TILE_ROWS],
) {
    match r {
        4 => tile_rows::<S, W, 4>(simd, std::array::from_fn(row), x, k, c, sums),
        3 => tile_rows::<S, W, 3>(simd, std::array::from_fn(row), x, k, c, sums),
        2 => tile_rows::<S, W, 2>(simd, std::array::from_fn(row), x, k, c, sums),
        _ => tile_rows::<S, W, 1>(simd, std::array::from_fn(row), x, k, c, sums),
    }
}

#[inline(always)]
fn tile_rows<S: Simd, W: WeightRow, const R: usize>(
    simd: S,
    w: [W; R],
    x: &[f32],
    k: usize,
    c: usize,
    sums: &mut [[f32; MAX_TILE_INPUTS]; MAX_TILE_ROWS],
) {
    match c {
        4 => store(tile::<S, W, R, 4>(simd, w, inputs(x, k), k), sums),
        3 => store(tile::<S, W, R, 3>(simd, w, inputs(x, k), k), sums),
        2 => store(tile::<S, W, R, 2>(simd, w, inputs(x, k), k), sums),
        _ => store(tile::<S, W, R, 1>(simd, w, inputs(x, k), k), sums),
    }
}

#[inline(always)]
fn inputs<const C: usize>(x: &[f32], k: usize) -> [&[f32]; C] {
    std::array::from_fn(|i| &x[i * k..(i + 1) * k])
}

#[inline(always)]
fn store<const R: usize, const C: usize>(
    tile: [[f32; C]; R],
    sums: &mut [[f32; MAX_TILE_INPUTS]; MAX_TILE_ROWS],
) {
    for (dst, src) in sums.iter_mut().zip(&tile) {
        dst[..C].copy_from_slice(src);
    }
}

/// The R × C dot products of weight rows `w` with input rows `x` (all of length `k`), one vector
/// accumulator per pair; the tail shorter than a step is summed in scalar f32.
#[inline(always)]
fn tile<S: Simd, W: WeightRow, const R: usize, const C: usize>(
    simd: S,
    w: [W; R],
    x: [&[f32]; C],
    k: usize,
) -> [[f32; C]; R] {
    let block = 2 * S::F32_LANES;
    let steps = k / block;
    let mut acc = [[simd.splat_f32s(0.0); C]; R];
    let xv: [&[S::f32s]; C] = x.map(|x| S::as_simd_f32s(x).0);
    for i in 0..steps {
        let xs: [[S::f32s; 2]; C] = std::array::from_fn(|ci| [xv[ci][2 * i], xv[ci][2 * i + 1]]);
        for (acc_row, wr) in acc.iter_mut().zip(&w) {
            let [w0, w1] = wr.step(simd, i);
            for (a, [x0, x1]) in acc_row.iter_mut().zip(&xs) {
                *a = simd.mul_add_f32s(w0, *x0, *a);
                *a = simd.mul_add_f32s(w1, *x1, *a);
            }
        }
    }
    let mut sums = acc.map(|row| row.map(|a| simd.reduce_sum_f32s(a)));
    for (sum_row, wr) in sums.iter_mut().zip(&w) {
        for (sum, xr) in sum_row.iter_mut().zip(&x) {
            *sum += (steps * block..k).map(|j| wr.get(j) * xr[j]).sum::<f32>();
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::StorageDtype;

    /// Pseudo-random values in [-1, 1) (a multiplicative hash, so that a permuted element shows).
    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i + seed).wrapping_mul(2_654_435_761) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    /// Every t in 1..=16 and every storage dtype against f64 sums of the stored values, on shapes whose
    /// in_dim is not a multiple of any SIMD width and whose out_dim is not a multiple of the tile or task.
    #[test]
    fn few_row_projection_matches_naive() {
        for &(k, n) in &[
            (13, 70),
            (64, 129),
            (9, 1),
            (100, 64),
            (1, 5),
            (0, 3),
            (37, 131),
            (257, 67),
            (768, 200),
        ] {
            for dtype in [StorageDtype::F32, StorageDtype::Bf16, StorageDtype::F16] {
                let weight = WeightMatrix::from_f32(values(n * k, 3), dtype);
                let w = weight.to_f32();
                for t in 1..=SMALL_BATCH_ROWS {
                    let x = values(t * k, 5 + t);
                    let mut out = vec![f32::NAN; t * n];
                    project_few_rows(&x, t, &weight, k, n, &mut out);
                    for r in 0..t {
                        for o in 0..n {
                            let products =
                                (0..k).map(|i| x[r * k + i] as f64 * w[o * k + i] as f64);
                            let want: f64 = products.clone().sum();
                            let scale: f64 = products.map(f64::abs).sum();
                            let got = out[r * n + o] as f64;
                            assert!(
                                (got - want).abs() <= 1e-6 * scale.max(1.0),
                                "{dtype:?} t={t} k={k} n={n} r={r} o={o}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn empty_shapes_are_no_ops() {
        let mut out = [];
        project_few_rows(&[], 0, &vec![1.0, 2.0].into(), 2, 1, &mut out);
        project_few_rows(&[1.0, 2.0], 1, &WeightMatrix::default(), 2, 0, &mut out);
    }
}
