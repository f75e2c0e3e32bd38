//! Batched against single-sequence forward passes: the check of tests/batch_forward.rs (CPU) and of
//! tests/gpu_model.rs (a batched GPU decode against the CPU).

use super::{full_spec, head_weights, max_abs_diff};
use attnscope_core::capture::{CaptureSpec, SequenceCapture};
use attnscope_core::model::forward::BatchItem;
use attnscope_core::model::{KvCache, LogitRows, Model};
use attnscope_core::slots::{SlotInfo, Visibility};

fn slots(ids: &[u32], offset: usize) -> Vec<SlotInfo> {
    ids.iter()
        .enumerate()
        .map(|(i, &t)| SlotInfo::prompt(t, (offset + i) as i64, -1))
        .collect()
}

/// Three prompts of different lengths, prefilled and then decoded one step together through `batched`,
/// give the logits and (with `capture`) attention weights of each prompt run alone through `single`, to
/// `tol_logits` and `tol_weights`. Without capture the GPU batches the decode step into one launch.
pub fn batched_matches_single(
    batched: &Model,
    single: &Model,
    capture: bool,
    tol_logits: f32,
    tol_weights: f32,
    label: &str,
) {
    let prompts: [Vec<u32>; 3] = [
        vec![5, 9, 17, 33, 4],
        vec![7, 8],
        vec![11, 12, 13, 14, 15, 16, 17, 18, 19],
    ];
    let decode: [u32; 3] = [21, 22, 23];
    let spec = if capture {
        full_spec()
    } else {
        CaptureSpec::default()
    };
    let cap_of = |p: &Vec<u32>| p.len() + 1;

    // Alone.
    let mut single_logits = Vec::new();
    let mut single_caps = Vec::new();
    for (p, &d) in prompts.iter().zip(&decode) {
        let mut cache = single.new_cache(cap_of(p), Visibility::Visible).unwrap();
        let mut cap = SequenceCapture::new(&spec, &single.cfg, cap_of(p));
        let a = single
            .forward(&mut cache, &slots(p, 0), Some(&mut cap), LogitRows::All)
            .unwrap();
        let b = single
            .forward(
                &mut cache,
                &slots(&[d], p.len()),
                Some(&mut cap),
                LogitRows::Last,
            )
            .unwrap();
        single_logits.push((a, b));
        single_caps.push(cap.finish(cache.slots()));
    }

    // Together.
    let mut caches: Vec<KvCache> = prompts
        .iter()
        .map(|p| batched.new_cache(cap_of(p), Visibility::Visible).unwrap())
        .collect();
    let mut caps: Vec<SequenceCapture> = prompts
        .iter()
        .map(|p| SequenceCapture::new(&spec, &batched.cfg, cap_of(p)))
        .collect();
    let prefill_slots: Vec<Vec<SlotInfo>> = prompts.iter().map(|p| slots(p, 0)).collect();
    let mut items: Vec<BatchItem> = caches
        .iter_mut()
        .zip(caps.iter_mut())
        .zip(&prefill_slots)
        .map(|((cache, cap), new)| BatchItem {
            cache,
            new,
            capture: Some(cap),
        })
        .collect();
    let prefill = batched.forward_batch(&mut items, LogitRows::All).unwrap();
    let step_slots: Vec<Vec<SlotInfo>> = prompts
        .iter()
        .zip(&decode)
        .map(|(p, &d)| slots(&[d], p.len()))
        .collect();
    let mut items: Vec<BatchItem> = caches
        .iter_mut()
        .zip(caps.iter_mut())
        .zip(&step_slots)
        .map(|((cache, cap), new)| BatchItem {
            cache,
            new,
            capture: Some(cap),
        })
        .collect();
    let step = batched.forward_batch(&mut items, LogitRows::Last).unwrap();

    for i in 0..3 {
        assert!(
            max_abs_diff(&prefill[i], &single_logits[i].0) <= tol_logits,
            "{label} seq {i} prefill logits"
        );
        assert!(
            max_abs_diff(&step[i], &single_logits[i].1) <= tol_logits,
            "{label} seq {i} decode logits"
        );
        let batched = caps.remove(0).finish(caches[i].slots());
        if !capture {
            continue;
        }
        for l in 0..single.cfg.n_layers {
            for h in 0..single.cfg.n_heads {
                let d = max_abs_diff(
                    &head_weights(&batched, l, h),
                    &head_weights(&single_caps[i], l, h),
                );
                assert!(d <= tol_weights, "{label} seq {i} layer {l} head {h}: {d}");
            }
        }
    }
}
