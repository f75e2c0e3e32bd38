//! What to capture from attention (`--capture`, `--layers`, `--heads`) and the recorders that collect it
//! during the forward pass. Recorders see each probability row once, as the attention computes it.

pub mod finite;
pub mod recorder;
pub mod stats;
pub mod tile_stats;
pub mod weights;

pub use finite::NonFinite;
pub use recorder::{HeadRecorder, RowView};
pub use stats::{HeadStats, RowStats, StepGroupMass, StepRow};
pub use tile_stats::TileView;
pub use weights::{SequenceWeights, WeightBuffer, WeightRows};

use crate::Error;
use crate::Result;
use crate::config::ModelConfig;
use crate::slots::SlotInfo;
use serde::Serialize;

/// Storage type of captured attention weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightsDtype {
    F32,
    F16,
}

/// The capture request of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CaptureSpec {
    /// Per-row, per-key and distance statistics.
    pub stats: bool,
    /// Exact probabilities `[heads, T, T]`.
    pub weights: bool,
    pub weights_dtype: WeightsDtype,
    /// Selected layers; `None` = all.
    pub layers: Option<Vec<usize>>,
    /// Selected heads (query-head indices); `None` = all.
    pub heads: Option<Vec<usize>>,
}

impl Default for CaptureSpec {
    fn default() -> Self {
        CaptureSpec {
            stats: true,
            weights: false,
            weights_dtype: WeightsDtype::F32,
            layers: None,
            heads: None,
        }
    }
}

impl CaptureSpec {
    /// Parses `--capture` (`none`, `stats`, `weights`, or a comma list such as `weights,stats`).
    pub fn parse_kinds(text: &str) -> Result<(bool, bool)> {
        let (mut stats, mut weights) = (false, false);
        for part in text.split(',').map(str::trim) {
            match part {
                "none" => {}
                "stats" => stats = true,
                "weights" => weights = true,
                "all" => {
                    stats = true;
                    weights = true;
                }
                other => {
                    return Err(Error::input(format!(
                        "--capture: unknown kind {other:?} (expected none, stats, weights, all, or a comma list)"
                    )));
                }
            }
        }
        Ok((stats, weights))
    }

    /// Parses an index list such as `0,2,5-7`; `flag` names the option in errors.
    pub fn parse_indices(flag: &str, text: &str, limit: usize) -> Result<Vec<usize>> {
        let bad = |m: String| Error::input(format!("{flag}: {m}"));
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let lo: usize = lo
                .parse()
                .map_err(|_| bad(format!("{part:?} is not an index or range")))?;
            let hi: usize = hi
                .parse()
                .map_err(|_| bad(format!("{part:?} is not an index or range")))?;
            if lo > hi || hi >= limit {
                return Err(bad(format!(
                    "{part:?} is out of range 0..{}",
                    limit.saturating_sub(1)
                )));
            }
            out.extend(lo..=hi);
        }
        if out.is_empty() {
            return Err(bad("empty list".into()));
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Whether anything is captured at all.
    pub fn any(&self) -> bool {
        self.stats || self.weights
    }

    /// Whether `layer` is selected.
    pub fn has_layer(&self, layer: usize) -> bool {
        self.layers.as_ref().is_none_or(|l| l.contains(&layer))
    }

    /// Selected head indices for a model with `n_heads` heads.
    pub fn head_list(&self, n_heads: usize) -> Vec<usize> {
        self.heads.clone().unwrap_or_else(|| (0..n_heads).collect())
    }

    /// Selected layer indices for a model with `n_layers` layers.
    pub fn layer_list(&self, n_layers: usize) -> Vec<usize> {
        self.layers
            .clone()
            .unwrap_or_else(|| (0..n_layers).collect())
    }
}

/// Recorders of one sequence: one per (selected layer, head); unselected heads carry inactive recorders.
pub struct SequenceCapture {
    pub spec: CaptureSpec,
    /// Indexed by layer; `None` for layers not captured.
    pub layers: Vec<Option<Vec<HeadRecorder>>>,
}

impl SequenceCapture {
    /// Recorders for a sequence of at most `capacity` slots.
    pub fn new(spec: &CaptureSpec, cfg: &ModelConfig, capacity: usize) -> SequenceCapture {
        let heads = spec.head_list(cfg.n_heads);
        let layers = (0..cfg.n_layers)
            .map(|l| {
                (spec.any() && spec.has_layer(l)).then(|| {
                    (0..cfg.n_heads)
                        .map(|h| {
                            if heads.contains(&h) {
                                HeadRecorder::new(spec, capacity)
                            } else {
                                HeadRecorder::inactive()
                            }
                        })
                        .collect()
                })
            })
            .collect();
        SequenceCapture {
            spec: spec.clone(),
            layers,
        }
    }

    /// The recorders of `layer`, if it is captured.
    pub fn layer_mut(&mut self, layer: usize) -> Option<&mut [HeadRecorder]> {
        self.layers.get_mut(layer).and_then(|l| l.as_deref_mut())
    }

    /// Ends capture: the statistics trimmed to the final sequence length, the weights of every captured
    /// (layer, head) gathered into one `[layers, heads, t, t]` buffer (see [`SequenceWeights::gather`]).
    pub fn finish(self, slots: &[SlotInfo]) -> SequenceResult {
        let t = slots.len();
        let mut layers = Vec::new();
        let (mut weight_layers, mut weight_heads, mut squares) =
            (Vec::new(), Vec::new(), Vec::new());
        for (l, recs) in self.layers.into_iter().enumerate() {
            let Some(recs) = recs else { continue };
            let mut heads = Vec::new();
            let mut layer_squares = Vec::new();
            let mut stats = Vec::new();
            for (h, rec) in recs.into_iter().enumerate() {
                if !rec.is_active() {
                    continue;
                }
                heads.push(h);
                let cap = rec.capacity();
                let (w, s) = rec.finish(t);
                if let Some(w) = w {
                    layer_squares.push((w, cap));
                }
                if let Some(s) = s {
                    stats.push(s);
                }
            }
            if !layer_squares.is_empty() {
                weight_layers.push(l);
                weight_heads.clone_from(&heads);
                squares.push(layer_squares);
            }
            layers.push(LayerResult {
                layer: l,
                heads,
                stats,
            });
        }
        let weights = (!weight_layers.is_empty())
            .then(|| SequenceWeights::gather(weight_layers, weight_heads, t, squares));
        SequenceResult { t, layers, weights }
    }
}

/// What one captured layer of one sequence produced: the captured heads and, when statistics were
/// captured, their statistics (following `heads`).
pub struct LayerResult {
    pub layer: usize,
    pub heads: Vec<usize>,
    pub stats: Vec<HeadStats>,
}

/// Everything captured for one sequence: per-layer statistics and, when weights were captured, all of
/// them in one buffer.
pub struct SequenceResult {
    pub t: usize,
    pub layers: Vec<LayerResult>,
    pub weights: Option<SequenceWeights>,
}
