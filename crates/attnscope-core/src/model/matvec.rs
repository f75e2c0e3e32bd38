//! Decode's linear layers: out `[t, out_dim]` = x `[t, in_dim]` · Wᵀ for a few input rows (t ≤
//! [`SMALL_BATCH_ROWS`]), with W stored `[out_dim, in_dim]`. These products are bound by the bandwidth of
//! streaming W, so each weight row is read from memory once per call and used for all t input rows.
//!
//! Explicit SIMD through `pulp`, dispatched at run time (AVX-512 with the `avx512` feature, else AVX2/FMA on
//! x86-64; NEON on aarch64), f32 accumulation. Work is split over blocks of output features with
//! `rayon::join`; inside a block, register tiles of up to [`MAX_TILE_ROWS`] weight rows × [`MAX_TILE_INPUTS`]
//! input rows keep one accumulator per (weight row, input) pair. Results are written into `[t, out_dim]` directly.

use pulp::{Arch, Simd, WithSimd};

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

/// out `[t, out_dim]` = x `[t, in_dim]` · Wᵀ for `t ≤ SMALL_BATCH_ROWS`, W `[out_dim, in_dim]` f32.
pub fn project_few_rows(
    x: &[f32],
    t: usize,
    weight: &[f32],
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
    let mut rows: OutRows = Default::default();
    for (slot, row) in rows.iter_mut().zip(out.chunks_mut(out_dim)) {
        *slot = row;
    }
    let job = Job {
        arch: Arch::new(),
        x,
        t,
        weight,
        in_dim,
    };
    job.split(rows, 0, out_dim);
}

/// The t output rows, each narrowed to the output features of one task (unused entries empty).
type OutRows<'a> = [&'a mut [f32]; SMALL_BATCH_ROWS];

/// One call's operands, shared by every task.
struct Job<'a> {
    arch: Arch,
    x: &'a [f32],
    t: usize,
    weight: &'a [f32],
    in_dim: usize,
}

impl Job<'_> {
    /// Computes output features `first..first + count` into `rows` (each of length `count`), halving the
    /// range over rayon until a task has at most `TASK_ROWS` features.
    fn split(&self, mut rows: OutRows, first: usize, count: usize) {
        if count <= TASK_ROWS {
            self.arch.dispatch(Task {
                job: self,
                rows,
                first,
                count,
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
        } = self;
        let k = job.in_dim;
        // 4 × 4 measured as fast as 2 weight rows × 8 inputs for t = 8 (examples/matvec_bandwidth.rs).
        let (tile_rows, tile_inputs) = (MAX_TILE_ROWS, MAX_TILE_INPUTS);
        for g in (0..count).step_by(tile_rows) {
            let r = tile_rows.min(count - g);
            let o = first + g;
            let w = &job.weight[o * k..(o + r) * k];
            for c0 in (0..job.t).step_by(tile_inputs) {
                let c = tile_inputs.min(job.t - c0);
                let x = &job.x[c0 * k..(c0 + c) * k];
                let mut sums = [[0.0f32; MAX_TILE_INPUTS]; MAX_TILE_ROWS];
                tile_any(simd, w, x, k, r, c, &mut sums);
                for (ci, row) in rows[c0..c0 + c].iter_mut().enumerate() {
                    for (ri, sum) in sums[..r].iter().enumerate() {
                        row[g + ri] = sum[ci];
                    }
                }
            }
        }
    }
}

/// [`tile`] for `r ≤ 4` weight rows and `c ≤ 4` inputs known only at run time.
#[inline(always)]
fn tile_any<S: Simd>(
    simd: S,
    w: &[f32],
    x: &[f32],
    k: usize,
    r: usize,
    c: usize,
    sums: &mut [[f32; MAX_TILE_INPUTS]; MAX_TILE_ROWS],
) {
    match r {
        4 => tile_rows::<S, 4>(simd, w, x, k, c, sums),
        3 => tile_rows::<S, 3>(simd, w, x, k, c, sums),
        2 => tile_rows::<S, 2>(simd, w, x, k, c, sums),
        _ => tile_rows::<S, 1>(simd, w, x, k, c, sums),
    }
}

#[inline(always)]
fn tile_rows<S: Simd, const R: usize>(
    simd: S,
    w: &[f32],
    x: &[f32],
    k: usize,
    c: usize,
    sums: &mut [[f32; MAX_TILE_INPUTS]; MAX_TILE_ROWS],
) {
    let w: [&[f32]; R] = std::array::from_fn(|i| &w[i * k..(i + 1) * k]);
    match c {
        4 => store(tile::<S, R, 4>(simd, w, inputs(x, k)), sums),
        3 => store(tile::<S, R, 3>(simd, w, inputs(x, k)), sums),
        2 => store(tile::<S, R, 2>(simd, w, inputs(x, k)), sums),
        _ => store(tile::<S, R, 1>(simd, w, inputs(x, k)), sums),
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

/// The R × C dot products of weight rows `w` with input rows `x` (all of one length), one vector
/// accumulator per pair; the tail shorter than a vector goes through zero-padded partial loads.
#[inline(always)]
fn tile<S: Simd, const R: usize, const C: usize>(
    simd: S,
    w: [&[f32]; R],
    x: [&[f32]; C],
) -> [[f32; C]; R] {
    let mut acc = [[simd.splat_f32s(0.0); C]; R];
    let wv: [(&[S::f32s], &[f32]); R] = w.map(S::as_simd_f32s);
    let xv: [(&[S::f32s], &[f32]); C] = x.map(S::as_simd_f32s);
    let n = xv.first().map_or(0, |v| v.0.len());
    for i in 0..n {
        let xs: [S::f32s; C] = std::array::from_fn(|ci| xv[ci].0[i]);
        for (acc_row, wr) in acc.iter_mut().zip(&wv) {
            let wi = wr.0[i];
            for (a, xi) in acc_row.iter_mut().zip(&xs) {
                *a = simd.mul_add_f32s(wi, *xi, *a);
            }
        }
    }
    if xv.first().is_some_and(|v| !v.1.is_empty()) {
        let xs: [S::f32s; C] = std::array::from_fn(|ci| simd.partial_load_f32s(xv[ci].1));
        for (acc_row, wr) in acc.iter_mut().zip(&wv) {
            let wi = simd.partial_load_f32s(wr.1);
            for (a, xi) in acc_row.iter_mut().zip(&xs) {
                *a = simd.mul_add_f32s(wi, *xi, *a);
            }
        }
    }
    acc.map(|row| row.map(|a| simd.reduce_sum_f32s(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, mul: usize, modulo: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * mul % modulo) as f32 - (modulo / 2) as f32) / scale)
            .collect()
    }

    /// Every t in 1..=16 against f64 sums, on shapes whose in_dim is not a multiple of any SIMD width and
    /// whose out_dim is not a multiple of the tile or the task.
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
            for t in 1..=SMALL_BATCH_ROWS {
                let x = values(t * k, 5, 11, 4.0);
                let w = values(n * k, 3, 7, 3.0);
                let mut out = vec![f32::NAN; t * n];
                project_few_rows(&x, t, &w, k, n, &mut out);
                for r in 0..t {
                    for o in 0..n {
                        let want: f64 = (0..k)
                            .map(|i| x[r * k + i] as f64 * w[o * k + i] as f64)
                            .sum();
                        let scale: f64 = (0..k)
                            .map(|i| (x[r * k + i] as f64 * w[o * k + i] as f64).abs())
                            .sum();
                        let got = out[r * n + o] as f64;
                        assert!(
                            (got - want).abs() <= 1e-6 * scale.max(1.0),
                            "t={t} k={k} n={n} r={r} o={o}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn empty_shapes_are_no_ops() {
        let mut out = [];
        project_few_rows(&[], 0, &[1.0, 2.0], 2, 1, &mut out);
        project_few_rows(&[1.0, 2.0], 1, &[], 2, 0, &mut out);
    }
}
