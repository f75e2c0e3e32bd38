//! Next-token selection: greedy argmax, or temperature / top-k / top-p sampling with the semantics of
//! Hugging Face `generate` (temperature, then top-k, then top-p), driven by a seeded xoshiro256** PRNG so
//! that runs are reproducible.

use crate::rng::Rng;
use std::cmp::Ordering;

/// Sampling parameters.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct SamplerConfig {
    /// Softmax temperature; `0` (or any value that is not positive and finite) means greedy.
    pub temperature: f32,
    /// Keep only the `top_k` most probable tokens; `0` disables.
    pub top_k: usize,
    /// Keep the smallest set of most probable tokens whose probability sums to at least `top_p`;
    /// `1.0` (or more) disables.
    pub top_p: f32,
    /// PRNG seed.
    pub seed: u64,
}

impl Default for SamplerConfig {
    /// Greedy decoding, filters off, seed 0.
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// A token sampler that owns its PRNG; the same config (seed included) gives the same sequence.
#[derive(Clone, Debug)]
pub struct Sampler {
    cfg: SamplerConfig,
    rng: Rng,
}

/// Index of the first maximum (ties go to the lowest index, like `torch.argmax`). NaN never wins;
/// returns 0 when `logits` is empty or all NaN.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in logits.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        match best {
            Some((_, b)) if v <= b => {}
            _ => best = Some((i, v)),
        }
    }
    best.map_or(0, |(i, _)| i as u32)
}

/// Descending by value, ties by ascending index.
fn by_value_desc(a: &(u32, f64), b: &(u32, f64)) -> Ordering {
    b.1.partial_cmp(&a.1)
        .unwrap_or(Ordering::Equal)
        .then(a.0.cmp(&b.0))
}

impl Sampler {
    /// Creates a sampler whose PRNG is seeded from `cfg.seed`.
    pub fn new(cfg: SamplerConfig) -> Sampler {
        Sampler {
            cfg,
            rng: Rng::new(cfg.seed),
        }
    }

    /// The configuration this sampler was built with.
    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Picks the next token id from one row of logits. Greedy when the temperature is not positive;
    /// otherwise scales by the temperature, applies top-k then top-p, and draws from the renormalised
    /// distribution. NaN and `-inf` logits are never drawn; when no logit is finite it falls back to
    /// [`argmax`]. Greedy decoding consumes no randomness.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let t = self.cfg.temperature;
        if !(t > 0.0 && t.is_finite()) {
            return argmax(logits);
        }
        let inv_t = 1.0 / f64::from(t);
        let mut cand: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| (i as u32, f64::from(v) * inv_t))
            .collect();
        if cand.is_empty() {
            return argmax(logits);
        }
        let k = self.cfg.top_k;
        if k > 0 && k < cand.len() {
            cand.select_nth_unstable_by(k - 1, by_value_desc);
            cand.truncate(k);
        }
        cand.sort_unstable_by(by_value_desc);
        // Softmax over the survivors (max first after sorting), in f64.
        let max = cand[0].1;
        let mut total = 0.0;
        for c in cand.iter_mut() {
            c.1 = (c.1 - max).exp();
            total += c.1;
        }
        let p = f64::from(self.cfg.top_p);
        if p < 1.0 {
            let mut cum = 0.0;
            let mut keep = cand.len();
            for (i, c) in cand.iter().enumerate() {
                cum += c.1 / total;
                if cum >= p {
                    keep = i + 1;
                    break;
                }
            }
            cand.truncate(keep.max(1));
            total = cand.iter().map(|c| c.1).sum();
        }
        let mut u = self.rng.next_f64() * total;
        for c in &cand {
            if u < c.1 {
                return c.0;
            }
            u -= c.1;
        }
        // Rounding left a sliver past the last weight: take the last candidate.
        cand[cand.len() - 1].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> SamplerConfig {
        SamplerConfig {
            temperature,
            top_k,
            top_p,
            seed,
        }
    }

    const LOGITS: [f32; 6] = [0.5, 2.0, -1.0, 1.5, 2.0, 0.0];

    #[test]
    fn argmax_ties_and_nan() {
        assert_eq!(argmax(&LOGITS), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0, 3.0, f32::NAN, 3.0]), 2);
        assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY]), 1);
        assert_eq!(argmax(&[]), 0);
        assert_eq!(argmax(&[-5.0, -2.0, -3.0]), 1);
    }

    #[test]
    fn greedy_and_top_k_one_equal_argmax() {
        let mut greedy = Sampler::new(cfg(0.0, 0, 1.0, 7));
        let mut top1 = Sampler::new(cfg(1.5, 1, 1.0, 7));
        let mut rows = Sampler::new(cfg(1.0, 0, 1.0, 99));
        for _ in 0..200 {
            let row: Vec<f32> = (0..50).map(|_| rows.rng.next_f64() as f32 * 10.0).collect();
            assert_eq!(greedy.sample(&row), argmax(&row));
            assert_eq!(top1.sample(&row), argmax(&row));
        }
    }

    #[test]
    fn same_seed_same_sequence() {
        let draw = |seed| {
            let mut s = Sampler::new(cfg(1.0, 0, 1.0, seed));
            (0..100).map(|_| s.sample(&LOGITS)).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn small_top_p_keeps_only_top_token() {
        let mut s = Sampler::new(cfg(1.0, 0, 0.01, 3));
        let logits = [0.0, 3.0, 1.0, 2.9];
        assert!((0..1000).all(|_| s.sample(&logits) == 1));
    }

    #[test]
    fn top_k_and_top_p_restrict_support() {
        let mut s = Sampler::new(cfg(1.0, 3, 1.0, 5));
        for _ in 0..2000 {
            assert!([1, 3, 4].contains(&s.sample(&LOGITS)));
        }
        // Probabilities 0.5, 0.3, 0.2: top_p 0.75 keeps the first two.
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let mut s = Sampler::new(cfg(1.0, 0, 0.75, 5));
        let mut seen = [0usize; 3];
        (0..5000).for_each(|_| seen[s.sample(&logits) as usize] += 1);
        assert_eq!(seen[2], 0);
        assert!(seen[0] > 0 && seen[1] > 0);
    }

    #[test]
    fn never_draws_nan_or_neg_inf() {
        let logits = [f32::NAN, 0.0, f32::NEG_INFINITY, 0.0];
        let mut s = Sampler::new(cfg(2.0, 0, 1.0, 11));
        for _ in 0..2000 {
            assert!([1, 3].contains(&s.sample(&logits)));
        }
    }

    #[test]
    fn frequencies_match_softmax() {
        for (temperature, seed) in [(1.0f32, 1u64), (0.5, 2)] {
            let mut s = Sampler::new(cfg(temperature, 0, 1.0, seed));
            let n = 20_000;
            let mut counts = [0usize; LOGITS.len()];
            (0..n).for_each(|_| counts[s.sample(&LOGITS) as usize] += 1);
            let exps: Vec<f64> = LOGITS
                .iter()
                .map(|&l| (f64::from(l) / f64::from(temperature)).exp())
                .collect();
            let z: f64 = exps.iter().sum();
            for (c, e) in counts.iter().zip(&exps) {
                let (got, want) = (*c as f64 / n as f64, e / z);
                assert!(
                    (got - want).abs() < 0.015,
                    "t={temperature}: {got} vs {want}"
                );
            }
        }
    }
}
