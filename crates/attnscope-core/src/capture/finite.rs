//! Refusing a capture that holds NaN or ±∞ (issue #12 item 2). Such values mean the forward pass overflowed
//! (weights or inputs far outside what the model was trained on); a run directory of NaN is never what was
//! asked for, so this is an error naming the layer, the head and the query slot, not a warning. The logits
//! are checked by `run::run_sequence`; this covers what the logits do not reach: prefill-only runs (no
//! logits are computed) and rows of isolated groups that the last row never sees.

use super::{HeadStats, LayerResult, SequenceResult, SequenceWeights};
use crate::Error;
use crate::Result;

/// Where the first non-finite captured value is.
#[derive(Clone, Debug, PartialEq)]
pub struct NonFinite {
    pub layer: usize,
    pub head: usize,
    /// The statistic or tensor that holds it, e.g. `entropy` or `weights`.
    pub what: &'static str,
    /// The query slot of its row (the key slot for `received`; `None` for the distance mass).
    pub slot: Option<usize>,
    pub value: f64,
}

impl SequenceResult {
    /// The first NaN or ±∞ in the captured statistics or weights, layer by layer and head by head.
    pub fn first_non_finite(&self) -> Option<NonFinite> {
        self.layers
            .iter()
            .find_map(|l| layer_non_finite(l, self.weights.as_ref()))
    }

    /// An error naming the layer, head and slot of the first non-finite captured value.
    pub fn check_finite(&self, at: &str) -> Result<()> {
        let Some(n) = self.first_non_finite() else {
            return Ok(());
        };
        let slot = n.slot.map_or(String::new(), |s| format!(" at slot {s}"));
        Err(Error::input(format!(
            "{at}: layer {}, head {}: the captured {}{slot} is {} (the forward pass overflowed; check the \
             weights and config.json)",
            n.layer, n.head, n.what, n.value
        )))
    }
}

fn layer_non_finite(l: &LayerResult, weights: Option<&SequenceWeights>) -> Option<NonFinite> {
    for (i, s) in l.stats.iter().enumerate() {
        if let Some((what, slot, value)) = stats_non_finite(s) {
            return Some(NonFinite {
                layer: l.layer,
                head: l.heads.get(i).copied().unwrap_or(i),
                what,
                slot,
                value,
            });
        }
    }
    let w = weights?;
    let i = w.layer_index(l.layer)?;
    let (k, value) = w
        .data
        .first_non_finite_in(i * w.layer_len()..(i + 1) * w.layer_len())?;
    let head_len = w.head_len().max(1);
    let j = k / head_len;
    Some(NonFinite {
        layer: l.layer,
        head: w.heads.get(j).copied().unwrap_or(j),
        what: "attention weight",
        slot: Some(k % head_len / w.t.max(1)),
        value,
    })
}

/// The first non-finite value of one head's statistics: (statistic, slot, value).
fn stats_non_finite(s: &HeadStats) -> Option<(&'static str, Option<usize>, f64)> {
    for (q, r) in s.rows.iter().enumerate() {
        let fields = [
            ("entropy", r.entropy),
            ("max weight", r.max_weight),
            ("sink mass", r.sink_mass),
            ("previous-slot mass", r.prev_mass),
            ("self mass", r.self_mass),
            ("group mass", r.group_mass.unwrap_or(0.0)),
        ];
        if let Some((what, v)) = fields.into_iter().find(|(_, v)| !v.is_finite()) {
            return Some((what, Some(q), f64::from(v)));
        }
    }
    let sums = [
        ("received weight", &s.received_sum),
        ("received weight of generation rows", &s.received_decode),
    ];
    for (what, v) in sums {
        if let Some(k) = v.iter().position(|x| !x.is_finite()) {
            return Some((what, Some(k), v[k]));
        }
    }
    if let Some(v) = s.distance_mass.iter().find(|x| !x.is_finite()) {
        return Some(("distance mass", None, *v));
    }
    for r in &s.steps {
        let masses = [
            r.mass_prompt,
            r.mass_generated,
            r.mass_parallel,
            r.mass_self,
        ];
        if let Some(v) = masses.into_iter().find(|v| !v.is_finite()) {
            return Some(("step mass", Some(r.slot as usize), f64::from(v)));
        }
    }
    s.step_groups
        .iter()
        .find(|g| !g.mass.is_finite())
        .map(|g| ("group step mass", Some(g.slot as usize), f64::from(g.mass)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{RowStats, WeightBuffer};
    use crate::slots::N_DISTANCE_BUCKETS;

    fn stats(t: usize) -> HeadStats {
        HeadStats {
            rows: vec![RowStats::default(); t],
            received_sum: vec![0.0; t],
            distance_mass: [0.0; N_DISTANCE_BUCKETS],
            received_decode: vec![0.0; t],
            steps: Vec::new(),
            step_groups: Vec::new(),
        }
    }

    /// Layers 0 (head 0, nothing captured) and 2 (heads 1 and 5); `weights`: the `[2, 3, 3]` weights of
    /// layer 2.
    fn result(stats: Vec<HeadStats>, weights: Option<WeightBuffer>) -> SequenceResult {
        SequenceResult {
            t: 3,
            layers: vec![
                LayerResult {
                    layer: 0,
                    heads: vec![0],
                    stats: Vec::new(),
                },
                LayerResult {
                    layer: 2,
                    heads: vec![1, 5],
                    stats,
                },
            ],
            weights: weights.map(|data| SequenceWeights {
                layers: vec![2],
                heads: vec![1, 5],
                t: 3,
                data,
            }),
        }
    }

    #[test]
    fn finite_captures_pass() {
        let r = result(
            vec![stats(3), stats(3)],
            Some(WeightBuffer::F32(vec![0.5; 18])),
        );
        assert_eq!(r.first_non_finite(), None);
        assert!(r.check_finite("the prefill").is_ok());
    }

    #[test]
    fn a_nan_statistic_is_named_by_layer_head_and_slot() {
        let mut bad = stats(3);
        bad.rows[2].entropy = f32::NAN;
        let r = result(vec![stats(3), bad], None);
        let n = r.first_non_finite().unwrap();
        assert_eq!(
            (n.layer, n.head, n.what, n.slot),
            (2, 5, "entropy", Some(2))
        );
        let e = r.check_finite("sequence 0").unwrap_err().to_string();
        assert!(
            e.contains("layer 2, head 5: the captured entropy at slot 2 is NaN"),
            "{e}"
        );

        let mut bad = stats(3);
        bad.distance_mass[1] = f64::INFINITY;
        let n = result(vec![bad, stats(3)], None)
            .first_non_finite()
            .unwrap();
        assert_eq!((n.head, n.what, n.slot), (1, "distance mass", None));
    }

    #[test]
    fn a_non_finite_weight_names_its_query_slot() {
        let mut w = [0.25f32; 9];
        w[7] = f32::NEG_INFINITY;
        let data = [0.0; 9].iter().chain(&w).copied().map(half::f16::from_f32);
        let r = result(Vec::new(), Some(WeightBuffer::F16(data.collect())));
        let n = r.first_non_finite().unwrap();
        assert_eq!((n.head, n.what, n.slot), (5, "attention weight", Some(2)));
        assert_eq!(n.value, f64::NEG_INFINITY);
    }
}
