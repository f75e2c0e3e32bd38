//! KV-cache ablation: the unablated two-chunk scoring equals one teacher-forced forward pass (≤ 1e-5 in
//! log-probability), replacing a slot by itself changes nothing, and a real ablation changes the scores.

mod common;

use attnscope_core::input::SequenceInput;
use attnscope_core::model::{KvCache, LogitRows, Model};
use attnscope_core::run::ablation::{Ablation, AblationMode, score_targets};
use attnscope_core::run::parallel::softmax;
use attnscope_core::slots::SlotInfo;
use common::*;

fn teacher_forced(model: &Model, prompt: &[u32], targets: &[u32]) -> Vec<f64> {
    let all: Vec<u32> = prompt
        .iter()
        .chain(&targets[..targets.len() - 1])
        .copied()
        .collect();
    let mut cache = KvCache::new(
        &model.cfg,
        all.len(),
        attnscope_core::slots::Visibility::Visible,
    );
    let slots: Vec<SlotInfo> = all
        .iter()
        .enumerate()
        .map(|(i, &t)| SlotInfo::prompt(t, i as i64, -1))
        .collect();
    let logits = model
        .forward(&mut cache, &slots, None, LogitRows::All)
        .unwrap();
    let v = model.cfg.vocab_size;
    targets
        .iter()
        .enumerate()
        .map(|(j, &t)| {
            let row = prompt.len() - 1 + j;
            softmax(&logits[row * v..(row + 1) * v])[t as usize].ln()
        })
        .collect()
}

#[test]
fn ablation_scoring_is_consistent() {
    for name in ["llama_gqa", "gpt2", "gpt_neox_sequential"] {
        let model = Model::load(&repo().join("tests/fixtures").join(name)).unwrap();
        let prompt = vec![5u32, 9, 17, 33, 41, 8, 12];
        let targets = vec![20u32, 21, 22, 23];
        let seq = SequenceInput::from_tokens(prompt.clone());
        let want = teacher_forced(&model, &prompt, &targets);
        for split in [0, 3, 6] {
            let base = score_targets(&model, &seq, &targets, None, split).unwrap();
            for (a, b) in base.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-5, "{name} split {split}: {a} vs {b}");
            }
        }
        let layers: Vec<usize> = (0..model.cfg.n_layers).collect();
        let same = Ablation {
            slots: vec![3],
            layers: layers.clone(),
            mode: AblationMode::Replace(3),
        };
        assert_eq!(
            score_targets(&model, &seq, &targets, Some(&same), 3).unwrap(),
            score_targets(&model, &seq, &targets, None, 3).unwrap()
        );
        for mode in [
            AblationMode::Zero,
            AblationMode::Mean,
            AblationMode::Replace(0),
        ] {
            let ab = Ablation {
                slots: vec![2, 3],
                layers: layers.clone(),
                mode,
            };
            let got = score_targets(&model, &seq, &targets, Some(&ab), 3).unwrap();
            let changed = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(
                changed > 1e-4,
                "{name} {mode:?}: ablation had no effect ({changed})"
            );
        }
    }
}
