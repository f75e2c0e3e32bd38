//! Reductions written as lane loops for the compiler to vectorise: `#[inline(always)]`, so that inside a
//! `pulp` dispatch (the tiled attention, the recorders' tile statistics) they are compiled for the CPU's
//! widest vectors. A leaf: it uses nothing of the crate.

/// Lanes of the accumulators (one AVX-512 register of f32, two AVX2 or four NEON registers).
pub const LANES: usize = 16;

/// The largest element (−∞ for an empty slice or one of −∞ only); NaN is never chosen.
#[inline(always)]
pub fn max_f32(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    acc.iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}
