//! Rotary position embeddings with an explicit position per slot (rotate-half layout, partial rotary,
//! linear and llama3 frequency scaling). CPU twin of `kernels/rope.cu`.
//!
//! Arithmetic follows transformers: inverse frequencies and the angle `inv_freq · position` are f32.

use crate::config::{MAX_ROTARY_DIM, RopeConfig, RopeScaling};

/// Precomputed inverse frequencies for one model.
#[derive(Clone, Debug)]
pub struct Rope {
    /// `rotary_dim / 2` inverse frequencies.
    pub inv_freq: Vec<f32>,
    pub rotary_dim: usize,
}

impl Rope {
    /// Inverse frequencies `1 / theta^(2i/d)`, then rescaled as the config asks.
    pub fn new(cfg: &RopeConfig) -> Rope {
        let dim = cfg.rotary_dim;
        let base = cfg.theta as f32;
        let mut inv_freq: Vec<f32> = (0..dim / 2)
            .map(|i| {
                let exponent = (2 * i) as f32 / dim as f32;
                1.0 / ((base as f64).powf(exponent as f64) as f32)
            })
            .collect();
        match cfg.scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => {
                for f in &mut inv_freq {
                    *f /= factor as f32;
                }
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old_ctx,
            } => {
                let low_freq_wavelen = old_ctx / low_freq_factor;
                let high_freq_wavelen = old_ctx / high_freq_factor;
                for f in &mut inv_freq {
                    let freq = *f as f64;
                    let wavelen = 2.0 * std::f64::consts::PI / freq;
                    let scaled = if wavelen > low_freq_wavelen {
                        freq / factor
                    } else {
                        freq
                    };
                    let medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
                    let value = if medium {
                        let smooth = (old_ctx / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    } else {
                        scaled
                    };
                    *f = value as f32;
                }
            }
        }
        Rope {
            inv_freq,
            rotary_dim: dim,
        }
    }

    /// cos and sin of every rotary pair at `position`.
    pub fn cos_sin(&self, position: i64, cos: &mut [f32], sin: &mut [f32]) {
        let p = position as f32;
        for (i, f) in self.inv_freq.iter().enumerate() {
            let angle = (f * p) as f64;
            cos[i] = angle.cos() as f32;
            sin[i] = angle.sin() as f32;
        }
    }

    /// Rotates the first `rotary_dim` entries of every head in `x` (`[t, n_heads * head_dim]`) by the
    /// slot's position; the remaining entries of each head pass through.
    pub fn apply(&self, x: &mut [f32], positions: &[i64], n_heads: usize, head_dim: usize) {
        let half = self.rotary_dim / 2;
        // On the stack: rotary_dim ≤ head_dim ≤ MAX_ROTARY_DIM (checked by the config), so no allocation.
        let (mut cos_buf, mut sin_buf) =
            ([0.0f32; MAX_ROTARY_DIM / 2], [0.0f32; MAX_ROTARY_DIM / 2]);
        let (cos, sin) = (&mut cos_buf[..half], &mut sin_buf[..half]);
        for (row, &pos) in x.chunks_mut(n_heads * head_dim).zip(positions) {
            self.cos_sin(pos, cos, sin);
            for head in row.chunks_mut(head_dim) {
                for i in 0..half {
                    let (x1, x2) = (head[i], head[i + half]);
                    head[i] = x1 * cos[i] - x2 * sin[i];
                    head[i + half] = x2 * cos[i] + x1 * sin[i];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dim: usize, scaling: RopeScaling) -> RopeConfig {
        RopeConfig {
            theta: 10000.0,
            rotary_dim: dim,
            scaling,
        }
    }

    #[test]
    fn position_zero_is_identity_and_rotation_preserves_norm() {
        let rope = Rope::new(&cfg(4, RopeScaling::None));
        let mut x = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        rope.apply(&mut x, &[0], 1, 6);
        assert_eq!(x, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        rope.apply(&mut x, &[7], 1, 6);
        let n0: f32 = [1.0f32, 3.0].iter().map(|v| v * v).sum();
        let n1 = x[0] * x[0] + x[2] * x[2];
        assert!((n0 - n1).abs() < 1e-5);
        assert_eq!(
            &x[4..],
            &[5.0, 6.0],
            "dimensions past rotary_dim pass through"
        );
    }

    #[test]
    fn linear_scaling_divides_positions() {
        let plain = Rope::new(&cfg(8, RopeScaling::None));
        let scaled = Rope::new(&cfg(8, RopeScaling::Linear { factor: 2.0 }));
        let (mut c1, mut s1, mut c2, mut s2) = ([0.0; 4], [0.0; 4], [0.0; 4], [0.0; 4]);
        plain.cos_sin(3, &mut c1, &mut s1);
        scaled.cos_sin(6, &mut c2, &mut s2);
        for i in 0..4 {
            assert!((c1[i] - c2[i]).abs() < 1e-6 && (s1[i] - s2[i]).abs() < 1e-6);
        }
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let scaling = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        let plain = Rope::new(&cfg(128, RopeScaling::None));
        let scaled = Rope::new(&cfg(128, scaling));
        assert_eq!(plain.inv_freq[0], scaled.inv_freq[0]);
        let last = plain.inv_freq.len() - 1;
        assert!((plain.inv_freq[last] / 8.0 - scaled.inv_freq[last]).abs() < 1e-12);
    }
}
