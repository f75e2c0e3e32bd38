//! Small statistics for the analyses: mean, median, standard deviation, and the paired t-test with its
//! two-sided p-value (Student's t through the regularised incomplete beta function).

/// Arithmetic mean (NaN for an empty slice).
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Median (NaN for an empty slice).
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 50.0)
}

/// The `p`-th percentile (0–100) of ascending `sorted` values, interpolating linearly between the two
/// nearest ranks (rank = p/100 · (n − 1), numpy's default). `sorted` must not be empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    if n == 1 {
        return sorted[0];
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    let frac = rank - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// Sample standard deviation (n − 1 in the denominator; NaN below two values).
pub fn std_dev(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return f64::NAN;
    }
    let m = mean(xs);
    (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
}

/// Result of a paired t-test of `a − b`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct PairedTest {
    pub n: usize,
    pub mean_difference: f64,
    pub t: f64,
    pub df: f64,
    /// Two-sided.
    pub p_value: f64,
}

/// Paired t-test of `a[i] − b[i]`; `None` with fewer than two pairs.
pub fn paired_t_test(a: &[f64], b: &[f64]) -> Option<PairedTest> {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    if d.len() < 2 {
        return None;
    }
    let n = d.len() as f64;
    let m = mean(&d);
    let s = std_dev(&d);
    let df = n - 1.0;
    let (t, p) = if s == 0.0 {
        if m == 0.0 {
            (0.0, 1.0)
        } else {
            (f64::INFINITY.copysign(m), 0.0)
        }
    } else {
        let t = m / (s / n.sqrt());
        (t, student_t_two_sided(t, df))
    };
    Some(PairedTest {
        n: d.len(),
        mean_difference: m,
        t,
        df,
        p_value: p,
    })
}

/// P(|T| ≥ |t|) for Student's t with `df` degrees of freedom.
pub fn student_t_two_sided(t: f64, df: f64) -> f64 {
    let x = df / (df + t * t);
    regularized_beta(x, df / 2.0, 0.5).clamp(0.0, 1.0)
}

/// I_x(a, b) by the continued fraction of Numerical Recipes (Lentz's method).
pub fn regularized_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_cf(x, a, b) / a
    } else {
        1.0 - ln_front.exp() * beta_cf(1.0 - x, b, a) / b
    }
}

fn beta_cf(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..300 {
        let m = m as f64;
        for num in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + num * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + num / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9).
pub fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptive_statistics() {
        assert_eq!(mean(&[1.0, 2.0, 6.0]), 3.0);
        assert_eq!(median(&[5.0, 1.0, 3.0, 2.0]), 2.5);
        assert!((std_dev(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) - 2.138_089_935).abs() < 1e-8);
    }

    #[test]
    fn t_distribution_matches_tables() {
        // Two-sided critical values: t(0.975; 10) = 2.228139, t(0.975; 3) = 3.182446, t(0.995; 30) = 2.749996.
        assert!((student_t_two_sided(2.228_139, 10.0) - 0.05).abs() < 1e-6);
        assert!((student_t_two_sided(3.182_446, 3.0) - 0.05).abs() < 1e-6);
        assert!((student_t_two_sided(2.749_996, 30.0) - 0.01).abs() < 1e-6);
        assert!((student_t_two_sided(0.0, 5.0) - 1.0).abs() < 1e-12);
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn paired_test_on_known_data() {
        // d = [−0.1, −0.5, 0.1, −0.6, −0.3]: t = −2.186433 (df 4); p = 0.094066 by numerical integration
        // of the t(4) density (Simpson's rule, done independently of this code).
        let r = paired_t_test(&[1.0, 2.0, 3.0, 4.0, 5.0], &[1.1, 2.5, 2.9, 4.6, 5.3]).unwrap();
        assert!((r.t + 2.186_433).abs() < 1e-5, "{r:?}");
        assert!((r.p_value - 0.094_066).abs() < 1e-5, "{r:?}");
        assert!(paired_t_test(&[1.0], &[2.0]).is_none());
    }
}
