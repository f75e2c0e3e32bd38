//! TEMPO-style parallel generation: at each logical step, every token whose probability is at least a
//! threshold (most probable first, at most `max_set`) is emitted at once as a parallel set. All members enter
//! the KV cache at the same position, as one group; positions advance by one per logical step.
//!
//! The next step's distribution is formed from the set's query rows as `--set-distribution` says:
//! - `last` (default): the row of the last member fed (the least probable of the set). Under `isolated`
//!   visibility each member sees the prefix and itself only, so this is "prefix + that member".
//! - `first`: the row of the most probable member.
//! - `mean`: the average of the members' probability distributions (sampled as log of the mean).
//!
//! A step whose candidates number fewer than two falls back to ordinary sampling of one token.

use serde::Serialize;

/// How the next distribution is formed from a parallel set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SetDistribution {
    Last,
    First,
    Mean,
}

/// Settings of parallel generation.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ParallelOptions {
    /// Minimum probability (softmax at temperature 1) for a token to join the set.
    pub threshold: f32,
    /// Most tokens in one set.
    pub max_set: usize,
    pub next: SetDistribution,
}

/// Tokens with probability ≥ `threshold`, most probable first (ties: lower id first), at most `max`.
pub fn parallel_candidates(logits: &[f32], threshold: f32, max: usize) -> Vec<u32> {
    let probs = softmax(logits);
    let mut cand: Vec<(u32, f64)> = probs
        .iter()
        .enumerate()
        .filter(|(_, p)| **p >= threshold as f64)
        .map(|(i, &p)| (i as u32, p))
        .collect();
    cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    cand.truncate(max);
    cand.into_iter().map(|(t, _)| t).collect()
}

/// Softmax in f64 (non-finite logits get probability 0).
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    let mut out: Vec<f64> = logits
        .iter()
        .map(|&x| {
            if x.is_finite() {
                ((x - max) as f64).exp()
            } else {
                0.0
            }
        })
        .collect();
    let total: f64 = out.iter().sum();
    if total > 0.0 {
        out.iter_mut().for_each(|p| *p /= total);
    }
    out
}

/// The logits to sample the next step from, given the rows `[members, vocab]` of a set.
pub fn next_logits(rows: &[f32], vocab: usize, how: SetDistribution) -> Vec<f32> {
    let n = rows.len() / vocab;
    match how {
        SetDistribution::Last => rows[(n - 1) * vocab..].to_vec(),
        SetDistribution::First => rows[..vocab].to_vec(),
        SetDistribution::Mean => {
            let mut mean = vec![0.0f64; vocab];
            for row in rows.chunks(vocab) {
                for (m, p) in mean.iter_mut().zip(softmax(row)) {
                    *m += p / n as f64;
                }
            }
            mean.into_iter()
                .map(|p| {
                    if p > 0.0 {
                        p.ln() as f32
                    } else {
                        f32::NEG_INFINITY
                    }
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_thresholded_sorted_and_capped() {
        // probabilities ≈ [0.09, 0.24, 0.67]
        let logits = [0.0f32, 1.0, 2.0];
        assert_eq!(parallel_candidates(&logits, 0.05, 5), vec![2, 1, 0]);
        assert_eq!(parallel_candidates(&logits, 0.2, 5), vec![2, 1]);
        assert_eq!(parallel_candidates(&logits, 0.05, 2), vec![2, 1]);
        assert_eq!(parallel_candidates(&logits, 0.9, 5), Vec::<u32>::new());
    }

    #[test]
    fn mean_distribution_averages_probabilities() {
        let rows = [0.0f32, 0.0, 10.0, 0.0]; // member 0: uniform; member 1: almost all on token 0
        let mixed = next_logits(&rows, 2, SetDistribution::Mean);
        let p = softmax(&mixed);
        assert!((p[0] - (0.5 + 1.0 / (1.0 + (-10.0f64).exp())) / 2.0).abs() < 1e-6);
        assert_eq!(
            next_logits(&rows, 2, SetDistribution::Last),
            vec![10.0, 0.0]
        );
        assert_eq!(
            next_logits(&rows, 2, SetDistribution::First),
            vec![0.0, 0.0]
        );
    }
}
