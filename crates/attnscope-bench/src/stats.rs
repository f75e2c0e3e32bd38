//! Order statistics of repeated measurements: median, min/max and linearly interpolated percentiles.

pub use attnscope_analyze::stats::percentile;

/// Summary of one series of repeated measurements (same unit as the samples).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// The 50th percentile: the figure reported.
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// 10th percentile (linear interpolation, as numpy's default).
    pub p10: f64,
    /// 90th percentile (linear interpolation).
    pub p90: f64,
    /// Number of samples.
    pub n: usize,
}

impl Summary {
    /// Summarizes `samples`; `None` when there are none or one is not finite.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() || samples.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Summary {
            median: percentile(&sorted, 50.0),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            p10: percentile(&sorted, 10.0),
            p90: percentile(&sorted, 90.0),
            n: sorted.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = Summary::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (3.0, 1.0, 5.0, 3));
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.5);
    }

    #[test]
    fn percentiles_interpolate_like_numpy() {
        // numpy.percentile([1, 2, 3, 4, 5], [10, 90]) == [1.4, 4.6]
        let s = Summary::of(&[3.0, 5.0, 1.0, 4.0, 2.0]).unwrap();
        assert!(
            (s.p10 - 1.4).abs() < 1e-12 && (s.p90 - 4.6).abs() < 1e-12,
            "{s:?}"
        );
        let sorted = [10.0, 20.0];
        assert_eq!(percentile(&sorted, 0.0), 10.0);
        assert_eq!(percentile(&sorted, 100.0), 20.0);
        assert_eq!(percentile(&sorted, 25.0), 12.5);
    }

    #[test]
    fn single_empty_and_non_finite() {
        let s = Summary::of(&[7.0]).unwrap();
        assert_eq!((s.median, s.p10, s.p90), (7.0, 7.0, 7.0));
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[1.0, f64::NAN]).is_none());
    }
}
