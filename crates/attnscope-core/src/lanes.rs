//! Reductions and the f32 `exp` (of the softmax and SiLU), written as lane loops for the compiler to
//! vectorise: `#[inline(always)]`, so that inside a `pulp` dispatch (the tiled attention, the recorders'
//! tile statistics, the gated MLP) they are compiled for the CPU's widest vectors. A leaf: it uses nothing
//! of the crate.

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

/// Σ x. The sum runs in f32 lanes over blocks of [`SUM_BLOCK`] elements, each block's lanes added in f64:
/// at most 8 f32 additions per lane, so its relative error stays below 1e-6 (an f64 addition per element
/// halves the vector width).
#[inline(always)]
pub fn sum_blocked(x: &[f32]) -> f64 {
    if x.len() < LANES {
        return x.iter().map(|&v| v as f64).sum();
    }
    let mut total = 0.0f64;
    for block in x.chunks(SUM_BLOCK) {
        let mut acc = [0.0f32; LANES];
        let chunks = block.chunks_exact(LANES);
        let tail = chunks.remainder();
        for c in chunks {
            for l in 0..LANES {
                acc[l] += c[l];
            }
        }
        total += acc.iter().map(|&a| a as f64).sum::<f64>();
        total += tail.iter().map(|&v| v as f64).sum::<f64>();
    }
    total
}

/// Elements per f32 block of [`sum_blocked`] (and of the softmax's sums): 8 chunks of 16 lanes.
pub const SUM_BLOCK: usize = 8 * LANES;

/// Below this, `exp` is flushed to 0 (e^−87.34 is the smallest normal f32); −∞ (a hidden key) gives 0.
const EXP_MIN: f32 = -87.336_54;

/// e^x for x ≤ 88 (Cephes' expf: x = n·ln 2 + r with |r| ≤ ln 2 / 2, a degree-7 polynomial for e^r and 2^n
/// built in the exponent bits), within 2 ulp; exactly 0 for x < −87.34 and for −∞.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5 · 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const ROUND_BITS: u32 = 0x4B40_0000;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = if x > EXP_MIN { x } else { EXP_MIN };
    let xc = if xc < 88.0 { xc } else { 88.0 };
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let y = p * (r * r) + r + 1.0;
    let pow2n = f32::from_bits(t.to_bits().wrapping_sub(ROUND_BITS - 127) << 23);
    if x > EXP_MIN { y * pow2n } else { 0.0 }
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
