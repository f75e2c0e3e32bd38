//! What a run will hold in memory, computed before anything is allocated, so that a request the machine
//! cannot hold (a huge `--generate`, `--parallel-max`, a context without `max_position_embeddings`,
//! `--capture weights` over long sequences, many sequences) is refused up front with one line that says how
//! much it needs and which flags ask for it, instead of aborting mid-run.

use crate::Error;
use crate::Result;
use crate::capture::{CaptureSpec, RowStats, WeightsDtype};
use crate::config::ModelConfig;
use crate::run::GenerateOptions;

/// Slots a sequence of `n_prompt` tokens may occupy: the prompt plus `max_new_tokens` steps of up to one
/// parallel set each; an error naming the flags when that does not fit in a usize.
pub fn sequence_capacity(n_prompt: usize, generation: &GenerateOptions) -> Result<usize> {
    let per_step = generation.parallel.map_or(1, |p| p.max_set.max(1));
    generation
        .max_new_tokens
        .checked_mul(per_step)
        .and_then(|g| g.checked_add(n_prompt))
        .ok_or_else(|| {
            Error::input(format!(
                "--generate {} × --parallel-max {per_step} slots overflow",
                generation.max_new_tokens
            ))
        })
}

/// Bytes, on the host, of one sequence of `capacity` slots: its KV cache (when the model runs on the CPU)
/// and its recorders. Computed in 128 bits: it cannot overflow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SequenceBytes {
    pub kv_cache: u128,
    pub capture: u128,
}

impl SequenceBytes {
    pub fn new(cfg: &ModelConfig, spec: &CaptureSpec, capacity: usize, kv_on_host: bool) -> Self {
        let slots = capacity as u128;
        let kv_cache = if kv_on_host {
            // Keys and values, f32, every layer.
            2 * cfg.n_layers as u128 * slots * (cfg.n_kv_heads * cfg.head_dim) as u128 * 4
        } else {
            0
        };
        let heads =
            spec.layer_list(cfg.n_layers).len() as u128 * spec.head_list(cfg.n_heads).len() as u128;
        let mut per_head = 0u128;
        if spec.weights {
            let bytes = match spec.weights_dtype {
                WeightsDtype::F32 => 4,
                WeightsDtype::F16 => 2,
            };
            per_head += slots * slots * bytes;
        }
        if spec.stats {
            // A row's statistics plus the received and decode sums per key.
            per_head += slots * (std::mem::size_of::<RowStats>() as u128 + 8);
        }
        SequenceBytes {
            kv_cache,
            capture: if spec.any() { heads * per_head } else { 0 },
        }
    }
}

/// Memory the system can still give this process: `MemAvailable` of /proc/meminfo (Linux); `None` where
/// unknown, and then nothing is refused.
pub fn available_memory() -> Option<u128> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses `needed` bytes when they exceed what the machine has available; `what` says who asks for them.
pub fn check_available(needed: u128, what: &str) -> Result<()> {
    match available_memory() {
        Some(have) if needed > have => Err(Error::input(format!(
            "{what} needs {} of memory; the machine has {} available",
            gigabytes(needed),
            gigabytes(have)
        ))),
        _ => Ok(()),
    }
}

/// `bytes` as GB, for messages.
pub fn gigabytes(bytes: u128) -> String {
    let gb = bytes as f64 / 1e9;
    if gb >= 0.1 {
        format!("{gb:.1} GB")
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::parallel::{ParallelOptions, SetDistribution};

    #[test]
    fn capacity_is_checked() {
        let mut g = GenerateOptions {
            max_new_tokens: 10,
            ..Default::default()
        };
        assert_eq!(sequence_capacity(5, &g).ok(), Some(15));
        g.parallel = Some(ParallelOptions {
            threshold: 0.1,
            max_set: 4,
            next: SetDistribution::Last,
        });
        assert_eq!(sequence_capacity(5, &g).ok(), Some(45));
        g.max_new_tokens = usize::MAX / 2;
        let e = sequence_capacity(5, &g).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("--generate") && e.contains("--parallel-max")));
    }

    #[test]
    fn bytes_follow_the_shapes_and_refusal_names_the_asker() {
        let cfg = crate::model::random::named_config("llama-100m").expect("named config");
        let weights = CaptureSpec {
            weights: true,
            stats: false,
            ..Default::default()
        };
        let b = SequenceBytes::new(&cfg, &weights, 100, true);
        // 12 layers × 2 × 100 slots × 256 × 4 bytes; 12 × 12 heads × 100² × 4 bytes.
        assert_eq!(b.kv_cache, 12 * 2 * 100 * 256 * 4);
        assert_eq!(b.capture, 144 * 100 * 100 * 4);
        assert_eq!(SequenceBytes::new(&cfg, &weights, 100, false).kv_cache, 0);
        let none = CaptureSpec {
            stats: false,
            ..Default::default()
        };
        assert_eq!(SequenceBytes::new(&cfg, &none, 100, true).capture, 0);
        if available_memory().is_some() {
            let e = check_available(u128::MAX, "--generate 7")
                .err()
                .map(|e| e.to_string());
            assert!(e.is_some_and(|e| e.contains("--generate 7 needs") && e.contains("available")));
            assert!(check_available(1, "x").is_ok());
        } else {
            println!("SKIP: refusal test (no /proc/meminfo)");
        }
    }
}
