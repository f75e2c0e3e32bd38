//! TEMPO-style parallel generation: sets share one position and group, positions advance by one per
//! logical step, and replaying the generated sequence in one prefill (explicit positions, groups and
//! visibility, as `--input` does) gives the same attention rows as the step-by-step decode (≤ 1e-5).

mod common;

use attnscope_core::capture::SequenceResult;
use attnscope_core::input::SequenceInput;
use attnscope_core::model::Model;
use attnscope_core::run::parallel::{ParallelOptions, SetDistribution};
use attnscope_core::run::{GenerateOptions, run_sequence};
use attnscope_core::slots::SlotKind;
use attnscope_core::slots::Visibility;
use common::*;

fn generate(
    model: &Model,
    prompt: &[u32],
    vis: Visibility,
    threshold: f32,
    next: SetDistribution,
) -> attnscope_core::run::SequenceOutcome {
    let mut seq = SequenceInput::from_tokens(prompt.to_vec());
    seq.visibility = vis;
    let generation = GenerateOptions {
        max_new_tokens: 12,
        stop_at_eos: false,
        parallel: Some(ParallelOptions {
            threshold,
            max_set: 3,
            next,
        }),
        ..GenerateOptions::default()
    };
    run_sequence(model, &seq, &full_spec(), &generation, &mut || Ok(())).unwrap()
}

fn check_replay(model: &Model, out: &attnscope_core::run::SequenceOutcome, label: &str) -> usize {
    let slots = &out.slots;
    // Structure: positions advance by one per step; set members share position and group.
    let mut sets = 0;
    for w in slots[out.n_prompt..].windows(2) {
        if w[0].step == w[1].step {
            assert_eq!(
                (w[0].position, w[0].group, w[0].kind),
                (w[1].position, w[1].group, SlotKind::Parallel),
                "{label}"
            );
            assert!(w[0].group >= 0);
        } else {
            assert_eq!(
                w[1].position,
                w[0].position + 1,
                "{label}: one position per logical step"
            );
            assert_eq!(w[1].step, w[0].step + 1);
        }
    }
    for s in &slots[out.n_prompt..] {
        if s.kind == SlotKind::Parallel && slots.iter().filter(|o| o.group == s.group).count() >= 2
        {
            sets += 1;
        }
    }
    // Replay in one prefill.
    let case = Case {
        name: label.into(),
        ids: slots.iter().map(|s| s.token).collect(),
        positions: slots.iter().map(|s| s.position).collect(),
        groups: slots.iter().map(|s| s.group).collect(),
        visibility: out.visibility,
    };
    let replay = prefill(model, &case, &full_spec());
    let decoded: &SequenceResult = out.capture.as_ref().unwrap();
    let t = slots.len();
    for l in 0..model.cfg.n_layers {
        for h in 0..model.cfg.n_heads {
            let a = head_weights(decoded, l, h);
            let b = head_weights(&replay.capture, l, h);
            let d = max_abs_diff(&a, &b);
            assert!(
                d <= 1e-5,
                "{label}: layer {l} head {h}: decode vs replay {d}"
            );
            if out.visibility == Visibility::Isolated {
                for q in 0..t {
                    for k in 0..q {
                        if slots[q].group >= 0 && slots[q].group == slots[k].group {
                            assert_eq!(
                                a[q * t + k],
                                0.0,
                                "{label}: isolated members must not see each other"
                            );
                        }
                    }
                }
            }
        }
    }
    sets
}

#[test]
fn parallel_decode_equals_replayed_prefill_on_fixtures() {
    for name in ["llama_gqa", "gpt2", "qwen3"] {
        let model = Model::load(&repo().join("tests/fixtures").join(name)).unwrap();
        let mut sets = 0;
        for vis in [Visibility::Visible, Visibility::Isolated] {
            for next in [
                SetDistribution::Last,
                SetDistribution::First,
                SetDistribution::Mean,
            ] {
                let out = generate(&model, &[5, 9, 17, 33], vis, 0.02, next);
                sets += check_replay(&model, &out, &format!("{name} {vis:?} {next:?}"));
            }
        }
        assert!(
            sets > 0,
            "{name}: the threshold should produce parallel sets"
        );
    }
}

#[test]
fn parallel_decode_equals_replayed_prefill_on_stories260k() {
    let Some(shared) = shared("models/stories260K") else {
        return;
    };
    let model = Model::load(&shared.join("models/stories260K")).unwrap();
    let prompt = [1, 403, 407, 261, 378];
    let mut sets = 0;
    for vis in [Visibility::Visible, Visibility::Isolated] {
        let out = generate(&model, &prompt, vis, 0.15, SetDistribution::Last);
        sets += check_replay(&model, &out, &format!("stories260K {vis:?}"));
    }
    assert!(sets > 0);
}
