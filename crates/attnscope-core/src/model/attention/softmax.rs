//! The element-wise part of the tiled attention, in SIMD: row maxima, `exp(s − m)` with its sums, and the
//! online-softmax update of a tile. Written as plain lane loops that the compiler vectorises, compiled for
//! the widest instruction set the CPU has through `pulp`'s run-time dispatch (AVX-512 or AVX2/FMA on
//! x86-64, NEON on aarch64, scalar elsewhere).

use crate::lanes::{LANES, SUM_BLOCK, exp, max_f32};
use pulp::{Arch, Simd, WithSimd};

/// Replaces each s by e = exp(s − m) (the f32 [`exp`], within 2 ulp); returns Σ e and Σ e·(s − m) (the
/// recorded path's lse and entropy). The sums run in f32 lanes over blocks of [`SUM_BLOCK`] elements, each
/// block's lanes added in f64: at most 8 f32 additions per lane, so their relative error stays below 1e-6,
/// and the exponentials run at the full vector width (an f64 accumulator per element halves it).
#[inline(always)]
fn exp_sums(row: &mut [f32], m: f32) -> (f64, f64) {
    let (mut sum, mut weighted) = (0.0f64, 0.0f64);
    for block in row.chunks_mut(SUM_BLOCK) {
        let (mut s, mut w) = ([0.0f32; LANES], [0.0f32; LANES]);
        let mut chunks = block.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for l in 0..LANES {
                let d = c[l] - m;
                let e = exp(d);
                c[l] = e;
                s[l] += e;
                // e = 0 for hidden keys (d = −∞): their product is not formed.
                w[l] += if e > 0.0 { e * d } else { 0.0 };
            }
        }
        sum += s.iter().map(|&v| v as f64).sum::<f64>();
        weighted += w.iter().map(|&v| v as f64).sum::<f64>();
        for v in chunks.into_remainder() {
            let d = *v - m;
            let e = exp(d);
            *v = e;
            sum += e as f64;
            weighted += if e > 0.0 { e as f64 * d as f64 } else { 0.0 };
        }
    }
    (sum, weighted)
}

/// Replaces each s by exp(s − m); returns Σ.
#[inline(always)]
fn exp_sum(row: &mut [f32], m: f32) -> f32 {
    let mut sum = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            let e = exp(c[l] - m);
            c[l] = e;
            sum[l] += e;
        }
    }
    let mut s = sum.iter().sum::<f32>();
    for v in chunks.into_remainder() {
        let e = exp(*v - m);
        *v = e;
        s += e;
    }
    s
}

/// Multiplies every element by `f`.
#[inline(always)]
fn scale(row: &mut [f32], f: f32) {
    for v in row {
        *v *= f;
    }
}

/// The online-softmax step of one tile: `s` holds `rows` rows of `s.len() / rows` scaled scores (−∞ where
/// hidden). Per row: the running maximum `m` and sum `l` take the tile in, the row's output accumulator
/// in `o` (`[rows, head_dim]`) is rescaled to the new maximum, and the scores become exp(s − m), ready for
/// `o += P · V`.
pub fn online_tile(s: &mut [f32], m: &mut [f32], l: &mut [f32], o: &mut [f32]) {
    struct Op<'a> {
        s: &'a mut [f32],
        m: &'a mut [f32],
        l: &'a mut [f32],
        o: &'a mut [f32],
    }
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, _simd: S) {
            let rows = self.m.len();
            let n = self.s.len() / rows;
            let hd = self.o.len() / rows;
            for (r, row) in self.s.chunks_exact_mut(n).enumerate() {
                let m_new = max_f32(row).max(self.m[r]);
                if m_new == f32::NEG_INFINITY {
                    row.fill(0.0); // nothing visible yet in this row
                    continue;
                }
                let alpha = exp(self.m[r] - m_new);
                let sum = exp_sum(row, m_new);
                self.l[r] = self.l[r] * alpha + sum;
                self.m[r] = m_new;
                if alpha != 1.0 {
                    scale(&mut self.o[r * hd..(r + 1) * hd], alpha);
                }
            }
        }
    }
    Arch::new().dispatch(Op { s, m, l, o })
}

/// One row of exact probabilities, as the recorders need them: `segments` are the row's visible stretches
/// (`start..end` into `row`) of scaled scores (−∞ where hidden inside a stretch; outside them the row is
/// left as it is). Turns the scores into probabilities in place and returns (log-sum-exp, Σ p·s).
pub fn exact_row(row: &mut [f32], segments: &[std::ops::Range<usize>]) -> (f32, f64) {
    struct Op<'a> {
        row: &'a mut [f32],
        segments: &'a [std::ops::Range<usize>],
    }
    impl WithSimd for Op<'_> {
        type Output = (f32, f64);
        #[inline(always)]
        fn with_simd<S: Simd>(self, _simd: S) -> (f32, f64) {
            let mut m = f32::NEG_INFINITY;
            for seg in self.segments {
                m = m.max(max_f32(&self.row[seg.clone()]));
            }
            let (mut sum, mut weighted) = (0.0f64, 0.0f64);
            for seg in self.segments {
                let (s, w) = exp_sums(&mut self.row[seg.clone()], m);
                sum += s;
                weighted += w;
            }
            let inv = (1.0 / sum) as f32;
            for seg in self.segments {
                scale(&mut self.row[seg.clone()], inv);
            }
            let lse = m + sum.ln() as f32;
            (lse, m as f64 + weighted / sum)
        }
    }
    Arch::new().dispatch(Op { row, segments })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_and_flushes_hidden_keys() {
        // Which SIMD this run checks (AVX-512 V4 / AVX2 V3 on x86-64, NEON under scripts/test-aarch64.sh).
        eprintln!("pulp dispatch: {:?}", Arch::new());
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 10.0 {
            let want = (x as f64).exp();
            let rel = ((exp(x) as f64 - want) / want).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn exact_row_matches_a_direct_softmax() {
        let mut row: Vec<f32> = (0..37).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.9).collect();
        row[3] = f32::NEG_INFINITY;
        let orig = row.clone();
        let (lse, es) = exact_row(&mut row, &[0..20, 20..37]);
        let m = orig.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let z: f64 = orig.iter().map(|&s| (s as f64 - m).exp()).sum();
        assert!((lse as f64 - (m + z.ln())).abs() < 1e-6);
        let mut want_es = 0.0;
        for (&s, &p) in orig.iter().zip(&row) {
            let want = (s as f64 - m).exp() / z;
            assert!((p as f64 - want).abs() < 1e-7, "{p} vs {want}");
            if s.is_finite() {
                want_es += want * s as f64;
            }
        }
        assert_eq!(row[3], 0.0);
        assert!((es - want_es).abs() < 1e-6, "{es} vs {want_es}");
    }
}
