//! `run_batch` against `run_sequence` on each sequence alone, on tiny random-weight models: the same
//! tokens and slots, logits within 1e-4, attention weights and statistics within 1e-5 (the rounding of
//! batched against single matrix products); and `run_sequence` against the step-by-step loop it was
//! before it became a batch of one.

use crate::Error;
use crate::Result;
use crate::capture::SequenceCapture;
use crate::capture::{CaptureSpec, SequenceResult, WeightBuffer, WeightsDtype};
use crate::config::ModelConfig;
use crate::input::SequenceInput;
use crate::model::LogitRows;
use crate::model::Model;
use crate::model::random::random_model;
use crate::rng::Rng;
use crate::run::parallel::{self, ParallelOptions, SetDistribution};
use crate::run::step::{logit_rows_after, next_slots};
use crate::run::{
    GenerateOptions, PromptLogits, SequenceOutcome, budget, prompt_rows, run_batch, run_sequence,
};
use crate::sampling::{Sampler, SamplerConfig};
use crate::slots::{SlotInfo, Visibility};
use std::path::Path;

const TINY_LLAMA: &str = r#"{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 64,
  "rope_theta": 10000.0, "tie_word_embeddings": true}"#;
const TINY_GPT2: &str = r#"{"model_type": "gpt2", "n_embd": 48, "n_layer": 2, "n_head": 3,
  "vocab_size": 50, "n_positions": 40}"#;

const TOL_LOGITS: f32 = 1e-4;
const TOL_CAPTURE: f64 = 1e-5;

fn models() -> Vec<(&'static str, Model)> {
    [("llama", TINY_LLAMA), ("gpt2", TINY_GPT2)]
        .into_iter()
        .map(|(name, text)| {
            let cfg = ModelConfig::from_json_str(Path::new(name), text).unwrap();
            (name, random_model(cfg, 5))
        })
        .collect()
}

/// Five sequences: 7, 1 and 12 plain tokens, an isolated one with a group of three at one position, and 4
/// tokens; token ids drawn from the seeded generator.
fn sequences(vocab: usize) -> Vec<SequenceInput> {
    let mut rng = Rng::new(3);
    let mut ids =
        |n: usize| -> Vec<u32> { (0..n).map(|_| rng.below(vocab as u64) as u32).collect() };
    let mut isolated = SequenceInput::from_tokens(ids(6));
    isolated.positions = vec![0, 1, 2, 2, 2, 3];
    isolated.groups = vec![-1, -1, 0, 0, 0, -1];
    isolated.visibility = Visibility::Isolated;
    vec![
        SequenceInput::from_tokens(ids(7)),
        SequenceInput::from_tokens(ids(1)),
        SequenceInput::from_tokens(ids(12)),
        isolated,
        SequenceInput::from_tokens(ids(4)),
    ]
}

fn full_spec() -> CaptureSpec {
    CaptureSpec {
        stats: true,
        weights: true,
        weights_dtype: WeightsDtype::F32,
        layers: None,
        heads: None,
    }
}

fn generating(max_new_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        ..GenerateOptions::default()
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= TOL_CAPTURE, "{what}: {a} vs {b}");
}

/// The captures agree: the same layout, weights and every statistic within [`TOL_CAPTURE`].
fn assert_same_capture(b: &SequenceResult, a: &SequenceResult, label: &str) {
    assert_eq!(b.t, a.t, "{label}: t");
    match (&b.weights, &a.weights) {
        (Some(x), Some(y)) => {
            assert_eq!((&x.layers, &x.heads, x.t), (&y.layers, &y.heads, y.t));
            let (WeightBuffer::F32(p), WeightBuffer::F32(q)) = (&x.data, &y.data) else {
                panic!("{label}: f32 weights expected");
            };
            let d = max_diff(p, q);
            assert!(d as f64 <= TOL_CAPTURE, "{label}: weights differ by {d}");
        }
        (None, None) => {}
        _ => panic!("{label}: weights in one capture only"),
    }
    assert_eq!(b.layers.len(), a.layers.len(), "{label}: layers");
    for (lb, la) in b.layers.iter().zip(&a.layers) {
        assert_eq!((lb.layer, &lb.heads), (la.layer, &la.heads));
        assert_eq!(lb.stats.len(), la.stats.len());
        for (h, (sb, sa)) in lb.stats.iter().zip(&la.stats).enumerate() {
            let at = format!("{label}: layer {} head {h}", lb.layer);
            assert_eq!(sb.rows.len(), sa.rows.len(), "{at}");
            for (q, (rb, ra)) in sb.rows.iter().zip(&sa.rows).enumerate() {
                let at = format!("{at} row {q}");
                assert_eq!(rb.argmax, ra.argmax, "{at}: argmax");
                assert_eq!(rb.group_mass.is_some(), ra.group_mass.is_some(), "{at}");
                let fields = |r: &crate::capture::stats::RowStats| {
                    [
                        r.entropy,
                        r.max_weight,
                        r.sink_mass,
                        r.prev_mass,
                        r.self_mass,
                        r.group_mass.unwrap_or(0.0),
                    ]
                };
                for (x, y) in fields(rb).into_iter().zip(fields(ra)) {
                    close(x as f64, y as f64, &at);
                }
            }
            let sums = |s: &crate::capture::stats::HeadStats| {
                let mut v = s.received_sum.clone();
                v.extend(s.distance_mass);
                v.extend(&s.received_decode);
                v
            };
            let (xb, xa) = (sums(sb), sums(sa));
            assert_eq!(xb.len(), xa.len(), "{at}");
            xb.iter()
                .zip(&xa)
                .for_each(|(&x, &y)| close(x, y, &format!("{at}: sums")));
            assert_eq!(sb.steps.len(), sa.steps.len(), "{at}: step rows");
            for (rb, ra) in sb.steps.iter().zip(&sa.steps) {
                let counts = |r: &crate::capture::stats::StepRow| {
                    (r.slot, r.n_prompt, r.n_generated, r.n_parallel)
                };
                assert_eq!(counts(rb), counts(ra), "{at}");
                let masses = |r: &crate::capture::stats::StepRow| {
                    [
                        r.mass_prompt,
                        r.mass_generated,
                        r.mass_parallel,
                        r.mass_self,
                    ]
                };
                for (x, y) in masses(rb).into_iter().zip(masses(ra)) {
                    close(x as f64, y as f64, &format!("{at}: step row"));
                }
            }
            assert_eq!(sb.step_groups.len(), sa.step_groups.len(), "{at}");
            for (gb, ga) in sb.step_groups.iter().zip(&sa.step_groups) {
                assert_eq!(
                    (gb.slot, gb.group, gb.n_slots),
                    (ga.slot, ga.group, ga.n_slots)
                );
                close(gb.mass as f64, ga.mass as f64, &format!("{at}: group mass"));
            }
        }
    }
}

/// Outcome `b` (from the batch) is outcome `a` (alone), up to rounding.
fn assert_same(b: &SequenceOutcome, a: &SequenceOutcome, label: &str) {
    assert_eq!(
        b.slots, a.slots,
        "{label}: slots (tokens, positions, groups, steps)"
    );
    assert_eq!(
        (b.n_prompt, b.visibility, b.stopped_at_eos),
        (a.n_prompt, a.visibility, a.stopped_at_eos),
        "{label}"
    );
    assert_eq!(
        b.decode_seconds.len(),
        a.decode_seconds.len(),
        "{label}: steps"
    );
    match (&b.logits, &a.logits) {
        (Some(x), Some(y)) => {
            assert_eq!(
                (x.rows, x.vocab),
                (y.rows, y.vocab),
                "{label}: logits shape"
            );
            let d = max_diff(&x.data, &y.data);
            assert!(d <= TOL_LOGITS, "{label}: prompt logits differ by {d}");
        }
        (None, None) => {}
        _ => panic!("{label}: prompt logits in one outcome only"),
    }
    match (&b.capture, &a.capture) {
        (Some(x), Some(y)) => assert_same_capture(x, y, label),
        (None, None) => {}
        _ => panic!("{label}: a capture in one outcome only"),
    }
}

/// The generation loop `run_sequence` ran before it became a batch of one: one `Model::forward_into` per
/// step on one sequence. `run_sequence` must still give exactly this, so that a fault shared by both sides
/// of the batch-against-alone comparisons (both go through `run_batch`) cannot pass unseen.
fn stepwise_reference(
    model: &Model,
    seq: &SequenceInput,
    spec: &CaptureSpec,
    generation: &GenerateOptions,
) -> SequenceOutcome {
    let n_prompt = seq.token_ids.len();
    let capacity = budget::sequence_capacity(n_prompt, generation).unwrap();
    let mut cache = model.new_cache(capacity, seq.visibility).unwrap();
    let mut capture = spec
        .any()
        .then(|| SequenceCapture::new(spec, &model.cfg, capacity));
    let prompt: Vec<SlotInfo> = (0..n_prompt)
        .map(|i| SlotInfo::prompt(seq.token_ids[i], seq.positions[i], seq.groups[i]))
        .collect();
    let rows = match (generation.prompt_logits, generation.max_new_tokens) {
        (PromptLogits::All, _) => LogitRows::All,
        (PromptLogits::Last, _) => LogitRows::Last,
        (PromptLogits::None, 0) => LogitRows::None,
        (PromptLogits::None, _) => LogitRows::Last,
    };
    let mut logits = Vec::new();
    model
        .forward_into(&mut cache, &prompt, capture.as_mut(), rows, &mut logits)
        .unwrap();
    let vocab = model.cfg.vocab_size;
    let prompt_logits = prompt_rows(generation.prompt_logits, &mut logits, vocab);
    let mut sampler = Sampler::new(generation.sampler);
    let first_position = seq.positions.iter().copied().max().unwrap_or(-1) + 1;
    let mut next_group = seq.groups.iter().copied().max().unwrap_or(-1).max(-1) + 1;
    let (mut steps, mut stopped_at_eos) = (0, false);
    for step in 1..=generation.max_new_tokens {
        let position = first_position + step as i64 - 1;
        let new = next_slots(
            &logits,
            generation,
            &mut sampler,
            step,
            position,
            &mut next_group,
        );
        let is_eos = new
            .iter()
            .any(|s| model.cfg.eos_token_ids.contains(&s.token));
        let (rows, how) = logit_rows_after(step, generation, new.len() >= 2);
        model
            .forward_into(&mut cache, &new, capture.as_mut(), rows, &mut logits)
            .unwrap();
        if rows == LogitRows::All {
            logits = parallel::next_logits(&logits, vocab, how);
        }
        steps += 1;
        if is_eos && generation.stop_at_eos {
            stopped_at_eos = true;
            break;
        }
    }
    let slots = cache.slots().to_vec();
    SequenceOutcome {
        capture: capture.map(|c| c.finish(&slots)),
        logits: prompt_logits,
        slots,
        visibility: seq.visibility,
        n_prompt,
        prefill_seconds: 0.0,
        decode_seconds: vec![0.0; steps],
        stopped_at_eos,
    }
}

/// Runs `seqs` as one batch and each alone, checks that they agree, and returns the batch's outcomes.
fn batch_matches_alone(
    model: &Model,
    seqs: &[SequenceInput],
    spec: &CaptureSpec,
    generation: &GenerateOptions,
    label: &str,
) -> Vec<SequenceOutcome> {
    let refs: Vec<&SequenceInput> = seqs.iter().collect();
    let mut steps = 0;
    let batch = run_batch(model, &refs, spec, generation, &mut || {
        steps += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(batch.len(), seqs.len());
    let longest = batch.iter().map(|o| o.decode_seconds.len()).max();
    assert_eq!(steps, 1 + longest.unwrap_or(0), "{label}: on_step calls");
    for (i, (seq, b)) in seqs.iter().zip(&batch).enumerate() {
        let alone = run_sequence(model, seq, spec, generation, &mut || Ok(())).unwrap();
        assert_same(b, &alone, &format!("{label} sequence {i}"));
        let reference = stepwise_reference(model, seq, spec, generation);
        assert_same(
            &alone,
            &reference,
            &format!("{label} sequence {i} (stepwise)"),
        );
        assert_eq!(b.prefill_seconds, batch[0].prefill_seconds);
    }
    batch
}

#[test]
fn prefill_only_with_capture_matches_alone() {
    for (name, model) in models() {
        let seqs = sequences(model.cfg.vocab_size);
        let out = batch_matches_alone(&model, &seqs, &full_spec(), &generating(0), name);
        for (o, s) in out.iter().zip(&seqs) {
            assert_eq!(o.slots.len(), s.token_ids.len());
            assert!(o.decode_seconds.is_empty() && o.logits.is_none());
        }
    }
}

#[test]
fn greedy_generation_with_capture_matches_alone() {
    for (name, model) in models() {
        let seqs = sequences(model.cfg.vocab_size);
        let out = batch_matches_alone(&model, &seqs, &full_spec(), &generating(5), name);
        for (o, s) in out.iter().zip(&seqs) {
            assert_eq!(o.slots.len(), s.token_ids.len() + 5, "{name}");
        }
    }
}

#[test]
fn sampled_generation_matches_alone() {
    for (name, model) in models() {
        let seqs = sequences(model.cfg.vocab_size);
        let generation = GenerateOptions {
            sampler: SamplerConfig {
                temperature: 0.8,
                seed: 11,
                ..SamplerConfig::default()
            },
            ..generating(6)
        };
        batch_matches_alone(&model, &seqs, &full_spec(), &generation, name);
    }
}

/// A parallel threshold that the second most probable first token of some sequences passes and of others
/// does not (random weights make near-uniform distributions, so a fixed threshold gives all or nothing):
/// halfway between the third and fourth largest of those probabilities, far from either.
fn threshold_splitting(model: &Model, seqs: &[SequenceInput]) -> f32 {
    let generation = GenerateOptions {
        prompt_logits: PromptLogits::Last,
        ..generating(0)
    };
    let mut second: Vec<f64> = seqs
        .iter()
        .map(|seq| {
            let out = run_sequence(
                model,
                seq,
                &CaptureSpec::default(),
                &generation,
                &mut || Ok(()),
            );
            let logits = out.unwrap().logits.expect("the last prompt row");
            let mut p = crate::run::parallel::softmax(&logits.data);
            p.sort_by(|a, b| b.total_cmp(a));
            p[1]
        })
        .collect();
    second.sort_by(|a, b| b.total_cmp(a));
    ((second[2] + second[3]) / 2.0) as f32
}

#[test]
fn parallel_sets_match_alone() {
    for (name, model) in models() {
        let seqs = sequences(model.cfg.vocab_size);
        let threshold = threshold_splitting(&model, &seqs);
        for next in [
            SetDistribution::Last,
            SetDistribution::First,
            SetDistribution::Mean,
        ] {
            let generation = GenerateOptions {
                stop_at_eos: false,
                parallel: Some(ParallelOptions {
                    threshold,
                    max_set: 3,
                    next,
                }),
                ..generating(6)
            };
            let label = format!("{name} {next:?}");
            let out = batch_matches_alone(&model, &seqs, &full_spec(), &generation, &label);
            // Some step holds a set in one sequence and a single token in another: the pass returns
            // every row and the single-token sequences take their last.
            let mixed = (1..=6u32).any(|step| {
                let sizes: Vec<usize> = out
                    .iter()
                    .map(|o| o.slots.iter().filter(|s| s.step == step).count())
                    .collect();
                sizes.contains(&1) && sizes.iter().any(|&n| n >= 2)
            });
            assert!(mixed, "{label}: no step mixes sets and single tokens");
        }
    }
}

#[test]
fn a_sequence_stopping_at_eos_leaves_the_others_running() {
    for (name, mut model) in models() {
        let seqs = sequences(model.cfg.vocab_size);
        let generation = generating(6);
        let free = batch_matches_alone(&model, &seqs, &CaptureSpec::default(), &generation, name);
        let generated = |o: &SequenceOutcome| -> Vec<u32> {
            o.slots[o.n_prompt..].iter().map(|s| s.token).collect()
        };
        // A token that one sequence emits at its third step (not before) and no other emits at all.
        let eos = (0..free.len())
            .find_map(|i| {
                let own = generated(&free[i]);
                let t = own[2];
                let elsewhere = free
                    .iter()
                    .enumerate()
                    .any(|(j, o)| j != i && generated(o).contains(&t));
                (!own[..2].contains(&t) && !elsewhere).then_some((i, t))
            })
            .expect("a token only one sequence emits");
        model.cfg.eos_token_ids = vec![eos.1];
        let out = batch_matches_alone(&model, &seqs, &full_spec(), &generation, name);
        for (i, o) in out.iter().enumerate() {
            let steps = if i == eos.0 { 3 } else { 6 };
            assert_eq!(o.stopped_at_eos, i == eos.0, "{name} sequence {i}");
            assert_eq!(o.decode_seconds.len(), steps, "{name} sequence {i}");
            assert_eq!(o.slots.len(), o.n_prompt + steps, "{name} sequence {i}");
        }
    }
}

#[test]
fn prompt_logits_all_and_last_match_alone() {
    for (name, model) in models() {
        let seqs = sequences(model.cfg.vocab_size);
        for (which, max_new_tokens) in [
            (PromptLogits::All, 0),
            (PromptLogits::All, 3),
            (PromptLogits::Last, 0),
            (PromptLogits::Last, 3),
        ] {
            let generation = GenerateOptions {
                prompt_logits: which,
                ..generating(max_new_tokens)
            };
            let label = format!("{name} {which:?} + {max_new_tokens}");
            let out =
                batch_matches_alone(&model, &seqs, &CaptureSpec::default(), &generation, &label);
            for (o, s) in out.iter().zip(&seqs) {
                let rows = o.logits.as_ref().map(|l| l.rows);
                let expect = match which {
                    PromptLogits::All => s.token_ids.len(),
                    _ => 1,
                };
                assert_eq!(rows, Some(expect), "{label}");
            }
        }
    }
}

#[test]
fn an_error_from_on_step_stops_the_batch() {
    let (_, model) = models().remove(0);
    let seqs = sequences(model.cfg.vocab_size);
    let refs: Vec<&SequenceInput> = seqs.iter().collect();
    let mut calls = 0;
    let result: Result<Vec<SequenceOutcome>> =
        run_batch(&model, &refs, &full_spec(), &generating(5), &mut || {
            calls += 1;
            match calls {
                2 => Err(Error::interrupted("stopped by the test")),
                _ => Ok(()),
            }
        });
    assert!(matches!(result, Err(Error::Interrupted(_))));
    assert_eq!(calls, 2, "no step runs after the error");
}

#[test]
fn an_empty_batch_returns_no_outcome() {
    let (_, model) = models().remove(0);
    let mut calls = 0;
    let out = run_batch(&model, &[], &full_spec(), &generating(3), &mut || {
        calls += 1;
        Ok(())
    })
    .unwrap();
    assert!(out.is_empty());
    assert_eq!(calls, 0);
}
