//! `attnscope bench`: latency, throughput and memory of random-weight models of named shapes (or of any
//! config.json) under each capture mode, with no download.
//!
//! For every model: prefill latency for each prompt length T, and decode time per step at each batch size,
//! each under the capture modes `none`, `stats`, `weights_all` and `weights_one_layer`. The modes are
//! interleaved within each repeat (for r in repeats: for mode in modes: measure) so that slow drift of a
//! noisy machine hits all modes alike; warm-up rounds are not recorded; the median over repeats is the
//! figure, with min/max/p10/p90 beside it. Overheads are ratios of medians against `none` in the same run.
//! [`report`] turns the results into the `attnscope-bench/1` JSON, [`table`] into a readable table.

pub mod attention;
pub mod cost;
pub mod measure;
pub mod memory;
pub mod report;
pub mod serve;
pub mod stats;
pub mod table;

use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::capture::{CaptureSpec, SequenceCapture, WeightsDtype};
use attnscope_core::config::{ModelConfig, PositionEncoding};
use attnscope_core::model::random::{named_config, random_model};
use attnscope_job::Session;
use measure::Sample;
use report::ModelReport;
use stats::Summary;
use std::path::PathBuf;

/// A capture mode of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No capture: the baseline of every overhead ratio.
    None,
    /// Per-row statistics of every layer and head.
    Stats,
    /// f32 probabilities of every layer and head.
    WeightsAll,
    /// f32 probabilities of the middle layer (index n_layers / 2), all heads.
    WeightsOneLayer,
}

impl Mode {
    /// Every mode, in report order.
    pub const ALL: [Mode; 4] = [
        Mode::None,
        Mode::Stats,
        Mode::WeightsAll,
        Mode::WeightsOneLayer,
    ];

    /// The name used by `--modes` and in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Stats => "stats",
            Mode::WeightsAll => "weights_all",
            Mode::WeightsOneLayer => "weights_one_layer",
        }
    }

    /// The mode of one name of [`Mode::as_str`].
    pub fn from_name(name: &str) -> Result<Mode> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == name)
            .ok_or_else(|| {
                Error::input(format!(
                    "unknown mode {name:?} (expected none, stats, weights_all or weights_one_layer)"
                ))
            })
    }

    /// Parses a comma list such as `none,stats`; duplicates are dropped, order is kept.
    pub fn parse_list(text: &str) -> Result<Vec<Mode>> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mode = Mode::from_name(part).map_err(|_| {
                Error::input(format!(
                    "--modes: unknown mode {part:?} (expected a comma list of none, stats, weights_all, weights_one_layer)"
                ))
            })?;
            if !out.contains(&mode) {
                out.push(mode);
            }
        }
        if out.is_empty() {
            return Err(Error::input("--modes: empty list"));
        }
        Ok(out)
    }

    /// The capture spec of this mode for a model, `None` for [`Mode::None`].
    pub fn spec(self, cfg: &ModelConfig) -> Option<CaptureSpec> {
        let (stats, weights, layers) = match self {
            Mode::None => return None,
            Mode::Stats => (true, false, None),
            Mode::WeightsAll => (false, true, None),
            Mode::WeightsOneLayer => (false, true, Some(vec![cfg.n_layers / 2])),
        };
        Some(CaptureSpec {
            stats,
            weights,
            weights_dtype: WeightsDtype::F32,
            layers,
            heads: None,
        })
    }

    /// Fresh recorders of this mode for a sequence of at most `capacity` slots.
    pub fn capture(self, cfg: &ModelConfig, capacity: usize) -> Option<SequenceCapture> {
        self.spec(cfg)
            .map(|s| SequenceCapture::new(&s, cfg, capacity))
    }
}

/// Where a benchmarked model's shape comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// A named shape of [`attnscope_core::model::random::NAMED_MODELS`].
    Named(String),
    /// A config.json file (or a directory holding one).
    Config(PathBuf),
}

impl ModelSource {
    /// The label in reports: the name, or the path as given.
    pub fn label(&self) -> String {
        match self {
            ModelSource::Named(n) => n.clone(),
            ModelSource::Config(p) => p.display().to_string(),
        }
    }

    /// Reads the model config (no weights).
    pub fn config(&self) -> Result<ModelConfig> {
        match self {
            ModelSource::Named(n) => named_config(n),
            ModelSource::Config(p) if p.is_dir() => ModelConfig::from_dir(p),
            ModelSource::Config(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
                ModelConfig::from_json_str(p, &text)
            }
        }
    }
}

/// What to measure and how often.
#[derive(Clone, Debug)]
pub struct BenchSettings {
    /// Prompt lengths of the prefill measurements.
    pub prefill: Vec<usize>,
    /// Batch sizes of the decode measurements.
    pub batches: Vec<usize>,
    /// Prompt length of each sequence before decoding.
    pub decode_context: usize,
    /// Timed decode steps per measurement.
    pub decode_steps: usize,
    /// Capture modes, interleaved within each repeat.
    pub modes: Vec<Mode>,
    /// Unrecorded rounds before the recorded ones.
    pub warmup: usize,
    /// Recorded rounds.
    pub repeats: usize,
    /// Seed of the random weights and prompts.
    pub seed: u64,
    /// Models with more parameters are skipped (f32 memory).
    pub max_params: f64,
    /// Where to run (`--device`) and the GPU storage dtype (`--dtype`).
    pub device: attnscope_cuda::DeviceRequest,
    pub dtype: attnscope_cuda::GpuDtype,
}

/// One model to measure, or the reason it is skipped.
pub struct Planned {
    /// Report label.
    pub label: String,
    /// Its config.
    pub cfg: ModelConfig,
    /// Why it is not measured at all (too large), if so.
    pub skip: Option<String>,
}

/// Reads every config and decides which models fit under `--max-params`, before any long work.
pub fn plan(sources: &[ModelSource], settings: &BenchSettings) -> Result<Vec<Planned>> {
    sources
        .iter()
        .map(|src| {
            let cfg = src.config()?;
            let label = src.label();
            let params = cfg.parameter_count();
            let skip = (params as f64 > settings.max_params).then(|| {
                format!(
                    "{label}: skipped ({params} parameters need {:.1} GB in f32 > --max-params {:e})",
                    params as f64 * cost::BYTES_F32 / 1e9,
                    settings.max_params
                )
            });
            Ok(Planned { label, cfg, skip })
        })
        .collect()
}

/// Number of measurements (warm-up included) [`run_model`] makes: for the progress bar.
pub fn measurement_count(settings: &BenchSettings) -> u64 {
    ((settings.warmup + settings.repeats)
        * settings.modes.len()
        * (settings.prefill.len()
            + if settings.decode_steps == 0 {
                0
            } else {
                settings.batches.len()
            })) as u64
}

/// Why `slots` positions do not fit a model with a learned position table, if they do not.
pub(crate) fn positions_exceed(cfg: &ModelConfig, slots: usize) -> Option<usize> {
    match (&cfg.position, cfg.max_positions) {
        (PositionEncoding::Learned, Some(max)) if slots > max => Some(max),
        _ => None,
    }
}

/// Measures one planned model. `tick(message)` is called before every measurement. Lengths that do not
/// fit a learned position table are listed in `not_measured` instead.
pub fn run_model(
    planned: &Planned,
    settings: &BenchSettings,
    not_measured: &mut Vec<String>,
    tick: &mut dyn FnMut(&str),
) -> Result<(ModelReport, attnscope_job::Placement)> {
    let cfg = &planned.cfg;
    let label = &planned.label;
    tick(&format!("{label}: building random weights"));
    let session = Session::with_model(
        random_model(cfg.clone(), settings.seed),
        None,
        settings.device,
        settings.dtype,
    )?;
    let (model, placement) = (&session.model, session.placement.clone());
    let modes = &settings.modes;

    let mut prefill_rows = Vec::new();
    for &t in &settings.prefill {
        if let Some(max) = positions_exceed(cfg, t) {
            not_measured.push(format!(
                "{label} prefill t={t}: exceeds the {max} learned positions"
            ));
            continue;
        }
        let prompt = measure::random_prompt(t, cfg.vocab_size, settings.seed);
        let what = format!("{label}: prefill t={t}");
        let samples = interleaved(settings, &what, tick, &mut |mode| {
            measure::prefill(model, &prompt, mode)
        })?;
        prefill_rows.extend(report::prefill_rows(cfg, t, modes, &summaries(&samples, 1)));
    }

    let mut decode_rows = Vec::new();
    let (ctx, steps) = (settings.decode_context, settings.decode_steps);
    // --decode-steps 0 skips the decode measurements.
    let batches: &[usize] = if steps == 0 { &[] } else { &settings.batches };
    for &batch in batches {
        if let Some(max) = positions_exceed(cfg, ctx + steps) {
            not_measured.push(format!(
                "{label} decode batch={batch}: context {ctx} + {steps} steps exceeds the {max} learned positions"
            ));
            continue;
        }
        let prompts = measure::decode_prompts(cfg, batch, ctx, settings.seed);
        let what = format!("{label}: decode batch={batch}");
        let samples = interleaved(settings, &what, tick, &mut |mode| {
            measure::decode(model, &prompts, steps, mode)
        })?;
        decode_rows.extend(report::decode_rows(
            cfg,
            (batch, ctx, steps),
            modes,
            &summaries(&samples, steps),
        ));
    }

    let report = ModelReport {
        model: label.clone(),
        parameters: cfg.parameter_count(),
        n_layers: cfg.n_layers,
        n_heads: cfg.n_heads,
        n_kv_heads: cfg.n_kv_heads,
        head_dim: cfg.head_dim,
        hidden_size: cfg.hidden_size,
        vocab_size: cfg.vocab_size,
        prefill: prefill_rows,
        decode: decode_rows,
    };
    Ok((report, placement))
}

/// Runs `measure` for every mode in turn, `warmup + repeats` rounds (modes interleaved within each round,
/// so drift of the machine hits all modes alike); returns the samples of the timed rounds per mode.
fn interleaved(
    settings: &BenchSettings,
    what: &str,
    tick: &mut dyn FnMut(&str),
    measure: &mut dyn FnMut(Mode) -> Result<Sample>,
) -> Result<Vec<Vec<Sample>>> {
    let modes = &settings.modes;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); modes.len()];
    for r in 0..settings.warmup + settings.repeats {
        for (i, &mode) in modes.iter().enumerate() {
            tick(&format!("{what} {}", mode.as_str()));
            let s = measure(mode)?;
            if r >= settings.warmup {
                samples[i].push(s);
            }
        }
    }
    Ok(samples)
}

/// Per mode: the summary of milliseconds (divided by `per` units, e.g. decode steps) and the largest peak
/// memory of the recorded samples (`None` when any is unknown).
pub type ModeSummary = (Option<Summary>, Option<u64>);

fn summaries(samples: &[Vec<Sample>], per: usize) -> Vec<ModeSummary> {
    samples
        .iter()
        .map(|s| {
            let ms: Vec<f64> = s
                .iter()
                .map(|x| x.seconds * 1e3 / per.max(1) as f64)
                .collect();
            let peak = s
                .iter()
                .map(|x| x.peak_bytes)
                .collect::<Option<Vec<u64>>>()
                .and_then(|v| v.into_iter().max());
            (Summary::of(&ms), peak)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mode_lists() {
        assert_eq!(
            Mode::parse_list("none,stats,weights_all,weights_one_layer").unwrap(),
            Mode::ALL.to_vec()
        );
        assert_eq!(
            Mode::parse_list(" stats , none,stats").unwrap(),
            vec![Mode::Stats, Mode::None]
        );
        let err = Mode::parse_list("none,weights").unwrap_err().to_string();
        assert!(
            err.contains("\"weights\"") && err.contains("weights_one_layer"),
            "{err}"
        );
        assert!(Mode::parse_list(" , ").is_err());
    }

    #[test]
    fn mode_specs() {
        let cfg = named_config("llama-100m").unwrap();
        assert!(Mode::None.spec(&cfg).is_none());
        let s = Mode::Stats.spec(&cfg).unwrap();
        assert!(s.stats && !s.weights && s.layers.is_none());
        let w = Mode::WeightsAll.spec(&cfg).unwrap();
        assert!(!w.stats && w.weights && w.layers.is_none() && w.heads.is_none());
        let one = Mode::WeightsOneLayer.spec(&cfg).unwrap();
        assert_eq!(one.layers, Some(vec![6]));
        assert!(one.weights && one.heads.is_none());
    }

    #[test]
    fn plan_skips_models_over_the_limit() {
        let settings = BenchSettings {
            prefill: vec![8],
            batches: vec![1],
            decode_context: 8,
            decode_steps: 2,
            modes: Mode::ALL.to_vec(),
            warmup: 0,
            repeats: 1,
            seed: 0,
            max_params: 1.5e9,
            device: attnscope_cuda::DeviceRequest::Cpu,
            dtype: attnscope_cuda::GpuDtype::Bf16,
        };
        let sources = [
            ModelSource::Named("llama-100m".into()),
            ModelSource::Named("qwen2.5-7b".into()),
        ];
        let p = plan(&sources, &settings).unwrap();
        assert!(p[0].skip.is_none());
        let skip = p[1].skip.as_deref().unwrap();
        assert!(
            skip.starts_with("qwen2.5-7b: skipped") && skip.contains("30.5 GB"),
            "{skip}"
        );
        assert!(plan(&[ModelSource::Named("nosuch".into())], &settings).is_err());
        assert_eq!(measurement_count(&settings), 8);
    }
}
