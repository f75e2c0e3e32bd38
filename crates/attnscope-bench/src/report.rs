//! The `attnscope-bench/1` report: serde structs for `--json` and the readable table on stdout.

use crate::stats::Summary;
use crate::{Mode, ModeSummary, cost};
use attnscope_core::config::ModelConfig;
use serde::Serialize;

/// Schema id written in every report.
pub const SCHEMA: &str = "attnscope-bench/1";

/// The whole report (`--json`).
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// "attnscope".
    pub engine: &'static str,
    /// Crate version.
    pub engine_version: &'static str,
    /// Unix seconds when the run started.
    pub created_unix: u64,
    /// The command line.
    pub command: String,
    /// The machine measured.
    pub device: DeviceInfo,
    /// Repeat counts, decode shape, seed.
    pub settings: SettingsRecord,
    /// One entry per measured model.
    pub models: Vec<ModelReport>,
    /// Models or shapes that were skipped, each with its reason.
    pub not_measured: Vec<String>,
}

/// The device of the run and its peaks (when given).
#[derive(Clone, Debug, Serialize)]
pub struct DeviceInfo {
    /// "cpu" (or "cuda").
    pub kind: &'static str,
    /// CPU model name and thread count.
    pub name: String,
    /// GPU driver version; null on CPU.
    pub driver: Option<String>,
    /// Worker threads.
    pub threads: usize,
    /// "f32" for the CPU engine.
    pub compute_dtype: &'static str,
    /// Dense peak TFLOP/s of compute_dtype, when given (`--peak-tflops`).
    pub peak_tflops: Option<f64>,
    /// Memory bandwidth in GB/s, when given (`--peak-bandwidth-gbs`).
    pub peak_bandwidth_gbs: Option<f64>,
}

/// Settings recorded in the report.
#[derive(Clone, Debug, Serialize)]
pub struct SettingsRecord {
    /// Unrecorded rounds.
    pub warmup: usize,
    /// Recorded rounds.
    pub repeats: usize,
    /// Timed decode steps.
    pub decode_steps: usize,
    /// Prompt length before decoding.
    pub decode_context: usize,
    /// Seed of weights and prompts.
    pub seed: u64,
}

/// Results of one model.
#[derive(Clone, Debug, Serialize)]
pub struct ModelReport {
    /// Named shape or config path.
    pub model: String,
    /// Parameter count (embeddings once when tied).
    pub parameters: usize,
    /// Decoder layers.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Residual width.
    pub hidden_size: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// One row per (T, mode).
    pub prefill: Vec<PrefillRow>,
    /// One row per (batch, mode).
    pub decode: Vec<DecodeRow>,
}

/// One prefill figure.
#[derive(Clone, Debug, Serialize)]
pub struct PrefillRow {
    /// Prompt length.
    pub t: usize,
    /// Capture mode.
    pub mode: &'static str,
    /// Median over repeats, milliseconds.
    pub median_ms: f64,
    /// Fastest repeat.
    pub min_ms: f64,
    /// Slowest repeat.
    pub max_ms: f64,
    /// 10th percentile.
    pub p10_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// Recorded repeats.
    pub repeats: usize,
    /// t / median time.
    pub tokens_per_s: f64,
    /// (2 · non-embedding params · t + attention FLOPs) / median time / 1e12.
    pub tflops: f64,
    /// Attention FLOPs / median time / 1e12.
    pub attention_tflops: f64,
    /// tflops / peak_tflops, when the peak is known.
    pub fraction_of_peak: Option<f64>,
    /// Largest peak RSS over the recorded repeats.
    pub peak_memory_bytes: Option<u64>,
    /// median / median of "none" at the same t; null for "none" itself.
    pub overhead_vs_none: Option<f64>,
}

/// One decode figure.
#[derive(Clone, Debug, Serialize)]
pub struct DecodeRow {
    /// Sequences decoded together.
    pub batch: usize,
    /// Prompt length before decoding.
    pub context: usize,
    /// Timed steps.
    pub steps: usize,
    /// Capture mode.
    pub mode: &'static str,
    /// Median over repeats of the mean step time, milliseconds.
    pub median_ms_per_step: f64,
    /// Fastest repeat.
    pub min_ms_per_step: f64,
    /// Slowest repeat.
    pub max_ms_per_step: f64,
    /// Recorded repeats.
    pub repeats: usize,
    /// batch / median step time.
    pub tokens_per_s: f64,
    /// (weight bytes + KV bytes read) per step / median step time.
    pub bytes_per_s: f64,
    /// bytes_per_s / peak bandwidth, when known.
    pub fraction_of_peak_bandwidth: Option<f64>,
    /// Largest peak RSS over the recorded repeats.
    pub peak_memory_bytes: Option<u64>,
    /// median / median of "none" at the same batch; null for "none" itself.
    pub overhead_vs_none: Option<f64>,
}

impl DeviceInfo {
    /// The CPU this process runs on: name from `/proc/cpuinfo` plus the worker thread count, f32 compute,
    /// and the peaks the user gave (a CPU's peak is not known to attnscope).
    pub fn cpu(
        threads: usize,
        peak_tflops: Option<f64>,
        peak_bandwidth_gbs: Option<f64>,
    ) -> DeviceInfo {
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| cpu_model_name(&t))
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        DeviceInfo {
            kind: "cpu",
            name: format!("{model} ({threads} threads)"),
            driver: None,
            threads,
            compute_dtype: "f32",
            peak_tflops,
            peak_bandwidth_gbs,
        }
    }
}

/// The first `model name` of a `/proc/cpuinfo` text.
pub fn cpu_model_name(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == "model name")
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Median of the `none` mode, if measured.
fn baseline(modes: &[Mode], sums: &[ModeSummary]) -> Option<f64> {
    modes
        .iter()
        .zip(sums)
        .find(|(m, _)| **m == Mode::None)
        .and_then(|(_, (s, _))| s.map(|s| s.median))
}

/// Ratio against the baseline, null for the baseline itself or when it is unknown.
fn overhead(mode: Mode, median: f64, base: Option<f64>) -> Option<f64> {
    match (mode, base) {
        (Mode::None, _) => None,
        (_, Some(b)) if b > 0.0 => Some(median / b),
        _ => None,
    }
}

/// Prefill rows of one T (peaks are filled in by [`apply_peaks`]).
pub fn prefill_rows(
    cfg: &ModelConfig,
    t: usize,
    modes: &[Mode],
    sums: &[ModeSummary],
) -> Vec<PrefillRow> {
    let base = baseline(modes, sums);
    let flops = cost::prefill_flops(cfg, t);
    let attn = cost::prefill_attention_flops(cfg, t);
    modes
        .iter()
        .zip(sums)
        .filter_map(|(&mode, &(s, peak))| {
            let s: Summary = s?;
            let secs = s.median / 1e3;
            Some(PrefillRow {
                t,
                mode: mode.as_str(),
                median_ms: s.median,
                min_ms: s.min,
                max_ms: s.max,
                p10_ms: s.p10,
                p90_ms: s.p90,
                repeats: s.n,
                tokens_per_s: t as f64 / secs,
                tflops: flops / secs / 1e12,
                attention_tflops: attn / secs / 1e12,
                fraction_of_peak: None,
                peak_memory_bytes: peak,
                overhead_vs_none: overhead(mode, s.median, base),
            })
        })
        .collect()
}

/// Decode rows of one (batch, context, steps) (peaks are filled in by [`apply_peaks`]).
pub fn decode_rows(
    cfg: &ModelConfig,
    (batch, context, steps): (usize, usize, usize),
    modes: &[Mode],
    sums: &[ModeSummary],
) -> Vec<DecodeRow> {
    let base = baseline(modes, sums);
    let bytes = cost::decode_bytes_per_step(cfg, batch, context, steps);
    modes
        .iter()
        .zip(sums)
        .filter_map(|(&mode, &(s, peak))| {
            let s: Summary = s?;
            let secs = s.median / 1e3;
            Some(DecodeRow {
                batch,
                context,
                steps,
                mode: mode.as_str(),
                median_ms_per_step: s.median,
                min_ms_per_step: s.min,
                max_ms_per_step: s.max,
                repeats: s.n,
                tokens_per_s: batch as f64 / secs,
                bytes_per_s: bytes / secs,
                fraction_of_peak_bandwidth: None,
                peak_memory_bytes: peak,
                overhead_vs_none: overhead(mode, s.median, base),
            })
        })
        .collect()
}

/// Fills the fractions of peak from the device's peaks (left null when a peak is unknown).
pub fn apply_peaks(report: &mut BenchReport) {
    let (tf, bw) = (report.device.peak_tflops, report.device.peak_bandwidth_gbs);
    for m in &mut report.models {
        for r in &mut m.prefill {
            r.fraction_of_peak = tf.filter(|p| *p > 0.0).map(|p| r.tflops / p);
        }
        for r in &mut m.decode {
            r.fraction_of_peak_bandwidth = bw.filter(|p| *p > 0.0).map(|p| r.bytes_per_s / 1e9 / p);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use attnscope_core::model::random::named_config;

    fn summary(median: f64) -> ModeSummary {
        (
            Summary::of(&[median * 0.9, median, median * 1.2]),
            Some(50_000_000),
        )
    }

    /// A report of made-up figures for the table tests too.
    pub(crate) fn report() -> BenchReport {
        let cfg = named_config("llama-100m").unwrap();
        let modes = Mode::ALL.to_vec();
        let sums: Vec<ModeSummary> = [100.0, 110.0, 150.0, 105.0].map(summary).to_vec();
        let model = ModelReport {
            model: "llama-100m".into(),
            parameters: cfg.parameter_count(),
            n_layers: 12,
            n_heads: 12,
            n_kv_heads: 4,
            head_dim: 64,
            hidden_size: 768,
            vocab_size: 32000,
            prefill: prefill_rows(&cfg, 128, &modes, &sums),
            decode: decode_rows(&cfg, (4, 128, 16), &modes, &sums),
        };
        BenchReport {
            schema: SCHEMA,
            engine: "attnscope",
            engine_version: "0.1.0",
            created_unix: 0,
            command: "attnscope bench".into(),
            device: DeviceInfo {
                kind: "cpu",
                name: "Test CPU (2 threads)".into(),
                driver: None,
                threads: 2,
                compute_dtype: "f32",
                peak_tflops: Some(2.0),
                peak_bandwidth_gbs: None,
            },
            settings: SettingsRecord {
                warmup: 1,
                repeats: 3,
                decode_steps: 16,
                decode_context: 128,
                seed: 0,
            },
            models: vec![model],
            not_measured: vec!["qwen2.5-7b: skipped".into()],
        }
    }

    #[test]
    fn rows_carry_ratios_and_throughput() {
        let r = report();
        let p = &r.models[0].prefill;
        assert_eq!(p.len(), 4);
        assert_eq!(p[0].overhead_vs_none, None);
        assert!((p[2].overhead_vs_none.unwrap() - 1.5).abs() < 1e-12);
        assert!((p[0].tokens_per_s - 1280.0).abs() < 1e-9);
        assert_eq!((p[0].min_ms, p[0].max_ms, p[0].repeats), (90.0, 120.0, 3));
        let cfg = named_config("llama-100m").unwrap();
        assert!((p[0].tflops - cost::prefill_flops(&cfg, 128) / 0.1 / 1e12).abs() < 1e-12);
        let d = &r.models[0].decode;
        assert!((d[1].tokens_per_s - 4.0 / 0.11).abs() < 1e-9);
        assert!((d[1].overhead_vs_none.unwrap() - 1.1).abs() < 1e-12);
        // Without a "none" baseline no ratio is given.
        let rows = prefill_rows(&cfg, 8, &[Mode::Stats], &[summary(1.0)]);
        assert_eq!(rows[0].overhead_vs_none, None);
    }

    #[test]
    fn cpu_model_name_from_cpuinfo() {
        let text =
            "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t: x\n";
        assert_eq!(cpu_model_name(text).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model_name("processor : 0\n"), None);
        let d = DeviceInfo::cpu(3, None, Some(1.0));
        assert!(d.name.ends_with("(3 threads)") && d.kind == "cpu" && d.driver.is_none());
    }

    #[test]
    fn peaks_fill_fractions_only_when_known() {
        let mut r = report();
        apply_peaks(&mut r);
        let p = &r.models[0].prefill[0];
        assert!((p.fraction_of_peak.unwrap() - p.tflops / 2.0).abs() < 1e-15);
        assert!(r.models[0].decode[0].fraction_of_peak_bandwidth.is_none());
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["device"]["peak_bandwidth_gbs"].is_null());
        assert!(json["models"][0]["prefill"][0]["overhead_vs_none"].is_null());
    }
}
