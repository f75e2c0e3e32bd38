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

/// The index of the first element equal to `v` (`x.len()` when none is): one lane-wide comparison per
/// chunk, then a scalar scan of the chunk that holds it.
#[inline(always)]
pub fn first_index_of(x: &[f32], v: f32) -> usize {
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for (i, c) in chunks.enumerate() {
        if c.iter().fold(false, |hit, &p| hit | (p == v)) {
            return i * LANES + c.iter().position(|&p| p == v).unwrap_or(LANES);
        }
    }
    let base = x.len() - tail.len();
    base + tail.iter().position(|&p| p == v).unwrap_or(tail.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every position of a value, in every length around the chunk edges, with ties and without a hit.
    #[test]
    fn first_index_of_finds_the_first_equal_element() {
        for len in 0..(3 * LANES + 3) {
            let x: Vec<f32> = (0..len).map(|i| (i % 7) as f32).collect();
            for v in 0..8 {
                let want = x.iter().position(|&p| p == v as f32).unwrap_or(len);
                assert_eq!(first_index_of(&x, v as f32), want, "len {len} v {v}");
            }
        }
        assert_eq!(first_index_of(&[f32::NAN, 1.0], f32::NAN), 2);
    }
}
