//! Ablation through the KV cache: zero, mean or replace the keys/values of chosen slots at chosen layers,
//! then score target tokens (teacher forcing) and compare log-probabilities with the unablated model.
//!
//! Semantics: the prompt is prefilled up to and including the last ablated slot, the cache entries are
//! altered, and the rest of the prompt and the targets run on top. An ablation therefore changes what
//! *later* query slots read at those layers; the ablated slot's own row was computed before. The baseline
//! runs the same two chunks without the alteration.

use crate::Error;
use crate::Result;
use crate::input::SequenceInput;
use crate::model::{KvCache, LogitRows, Model};
use crate::run::parallel::softmax;
use crate::slots::SlotInfo;
use serde::Serialize;

/// What replaces the ablated keys/values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "mode", content = "slot")]
pub enum AblationMode {
    /// Zeros.
    Zero,
    /// The mean over all filled slots at that layer.
    Mean,
    /// The keys/values of another slot.
    Replace(usize),
}

/// Which cache entries to alter and how.
#[derive(Clone, Debug, Serialize)]
pub struct Ablation {
    pub slots: Vec<usize>,
    pub layers: Vec<usize>,
    pub mode: AblationMode,
}

impl KvCache {
    /// Applies an ablation to the filled slots and marks them ablated.
    pub fn ablate(&mut self, ab: &Ablation) -> Result<()> {
        let n = self.len();
        let d = self.kv_dim;
        if let Some(&s) = ab.slots.iter().find(|&&s| s >= n) {
            return Err(Error::input(format!(
                "--slots: slot {s} is not in the cache (it holds {n} slots)"
            )));
        }
        if let AblationMode::Replace(r) = ab.mode
            && r >= n
        {
            return Err(Error::input(format!(
                "--replace-with: slot {r} is not in the cache ({n} slots)"
            )));
        }
        if let Some(&l) = ab.layers.iter().find(|&&l| l >= self.n_layers) {
            return Err(Error::input(format!(
                "--ablate-layers: layer {l} out of range"
            )));
        }
        // The filled rows are read as f32 from wherever the cache lives, altered, and written back.
        for &l in &ab.layers {
            for values in [false, true] {
                let mut rows = self.store().read_layer(l, values, n)?;
                ablate_rows(&mut rows, n, d, ab);
                self.store_mut().write_layer(l, values, &rows)?;
            }
        }
        self.mark_ablated(&ab.slots);
        Ok(())
    }
}

/// Alters rows `ab.slots` of a `[n, d]` (or larger) key or value matrix.
fn ablate_rows(buf: &mut [f32], n: usize, d: usize, ab: &Ablation) {
    let source: Vec<f32> = match ab.mode {
        AblationMode::Zero => vec![0.0; d],
        AblationMode::Mean => {
            let mut m = vec![0.0f64; d];
            for row in buf[..n * d].chunks(d) {
                m.iter_mut()
                    .zip(row)
                    .for_each(|(a, b)| *a += *b as f64 / n as f64);
            }
            m.into_iter().map(|x| x as f32).collect()
        }
        AblationMode::Replace(r) => buf[r * d..(r + 1) * d].to_vec(),
    };
    for &s in &ab.slots {
        buf[s * d..(s + 1) * d].copy_from_slice(&source);
    }
}

/// Log-probability of each target token after the prompt, with or without an ablation.
pub fn score_targets(
    model: &Model,
    prompt: &SequenceInput,
    targets: &[u32],
    ablation: Option<&Ablation>,
    split_after: usize,
) -> Result<Vec<f64>> {
    let n = prompt.token_ids.len();
    if targets.is_empty() {
        return Err(Error::input("ablation: no target tokens to score"));
    }
    if split_after >= n {
        return Err(Error::input(format!(
            "ablation: slot {split_after} is not in the prompt ({n} slots)"
        )));
    }
    let mut cache = model.new_cache(n + targets.len(), prompt.visibility)?;
    let slots: Vec<SlotInfo> = (0..n)
        .map(|i| SlotInfo::prompt(prompt.token_ids[i], prompt.positions[i], prompt.groups[i]))
        .collect();
    let first = model.forward(&mut cache, &slots[..=split_after], None, LogitRows::Last)?;
    if let Some(ab) = ablation {
        cache.ablate(ab)?;
    }
    // Rest of the prompt, then all targets but the last (teacher forcing), one position after another.
    let next_position = prompt.positions.iter().copied().max().unwrap_or(-1) + 1;
    let mut rest: Vec<SlotInfo> = slots[split_after + 1..].to_vec();
    for (j, &t) in targets[..targets.len() - 1].iter().enumerate() {
        rest.push(SlotInfo::prompt(t, next_position + j as i64, -1));
    }
    let vocab = model.cfg.vocab_size;
    let mut rows: Vec<f32> = first;
    if !rest.is_empty() {
        rows.extend(model.forward(&mut cache, &rest, None, LogitRows::All)?);
    }
    super::check_finite(&rows, "ablation")?;
    // Row i predicts slot split_after + 1 + i; target j sits at slot n + j.
    let offset = n - 1 - split_after;
    targets
        .iter()
        .enumerate()
        .map(|(j, &t)| {
            let row = &rows[(offset + j) * vocab..(offset + j + 1) * vocab];
            let p = softmax(row)[t as usize];
            Ok(p.ln())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::Visibility;

    #[test]
    fn ablation_modes_rewrite_the_chosen_rows() {
        let cfg = crate::config::ModelConfig::from_json_str(
            std::path::Path::new("config.json"),
            r#"{"model_type": "llama", "hidden_size": 4, "num_hidden_layers": 2, "num_attention_heads": 1,
                "intermediate_size": 4, "vocab_size": 8}"#,
        )
        .unwrap();
        let mut cache = KvCache::new(&cfg, 3, Visibility::Visible);
        cache.push_slots(&[
            SlotInfo::prompt(1, 0, -1),
            SlotInfo::prompt(2, 1, -1),
            SlotInfo::prompt(3, 2, -1),
        ]);
        for l in 0..2 {
            for (i, x) in cache.host_mut().unwrap().keys[l].iter_mut().enumerate() {
                *x = i as f32;
            }
        }
        let ab = |mode| Ablation {
            slots: vec![1],
            layers: vec![1],
            mode,
        };
        let mut c = cache.try_clone().unwrap();
        c.ablate(&ab(AblationMode::Zero)).unwrap();
        assert_eq!(&c.host().unwrap().keys[1][4..8], &[0.0; 4]);
        assert_eq!(
            &c.host().unwrap().keys[0][4..8],
            &[4.0, 5.0, 6.0, 7.0],
            "other layers untouched"
        );
        assert!(c.slots()[1].ablated && !c.slots()[0].ablated);
        let mut c = cache.try_clone().unwrap();
        c.ablate(&ab(AblationMode::Mean)).unwrap();
        assert_eq!(
            &c.host().unwrap().keys[1][4..8],
            &[4.0, 5.0, 6.0, 7.0],
            "mean of rows 0..3 is row 1 here"
        );
        let mut c = cache.try_clone().unwrap();
        c.ablate(&ab(AblationMode::Replace(2))).unwrap();
        assert_eq!(&c.host().unwrap().keys[1][4..8], &[8.0, 9.0, 10.0, 11.0]);
        assert!(
            cache
                .try_clone()
                .unwrap()
                .ablate(&Ablation {
                    slots: vec![5],
                    layers: vec![0],
                    mode: AblationMode::Zero
                })
                .is_err()
        );
    }
}
