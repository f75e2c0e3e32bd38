//! The GPU forward pass synchronises with the device once per pass, capture on included: the capture's
//! read-backs are queued per layer and sequence and handed to the recorders after the logits read
//! (`Backend::finish_capture`). Counted with `GpuContext::sync_count` over a batched prefill and batched
//! decode steps of two sequences with weights and statistics of every layer, and the captures compared
//! with the CPU's (which also checks that each pending chunk reaches the right sequence and layer).
//!
//! One test in its own binary, so no other test synchronises the shared context meanwhile. Without a CUDA
//! device it prints `SKIP: no CUDA device (...)` and passes, unless `ATTNSCOPE_REQUIRE_GPU=1`.

mod common;

use attnscope_core::capture::{SequenceCapture, SequenceResult};
use attnscope_core::model::{BatchItem, KvCache, LogitRows, Model};
use attnscope_core::slots::{SlotInfo, SlotKind, Visibility};
use attnscope_cuda::{GpuContext, GpuDtype};
use common::gpu::{assert_stats_close, cpu_and_gpu, gpu_present};
use common::*;

/// Prompts of two lengths, then `steps` generated slots each (fixed tokens), in batched passes; returns
/// the captures and the syncs of each pass (counted when `gpu` is given).
fn run(model: &Model, steps: u32, gpu: Option<&GpuContext>) -> (Vec<SequenceResult>, Vec<u64>) {
    let lens = [24usize, 17];
    let cap = lens[0] + steps as usize;
    let vocab = model.cfg.vocab_size as u32;
    let spec = full_spec();
    let mut caches: Vec<KvCache> = lens
        .iter()
        .map(|_| model.new_cache(cap, Visibility::Visible).unwrap())
        .collect();
    let mut captures: Vec<SequenceCapture> = lens
        .iter()
        .map(|_| SequenceCapture::new(&spec, &model.cfg, cap))
        .collect();
    let prompts: Vec<Vec<SlotInfo>> = lens
        .iter()
        .enumerate()
        .map(|(s, &n)| {
            (0..n)
                .map(|i| SlotInfo::prompt((i as u32 * 31 + 7 + s as u32) % vocab, i as i64, -1))
                .collect()
        })
        .collect();
    let mut syncs = Vec::new();
    let mut pass = |caches: &mut [KvCache], caps: &mut [SequenceCapture], new: &[Vec<SlotInfo>]| {
        let mut items: Vec<BatchItem> = caches
            .iter_mut()
            .zip(caps.iter_mut())
            .zip(new)
            .map(|((cache, capture), new)| BatchItem {
                cache,
                new,
                capture: Some(capture),
            })
            .collect();
        let before = gpu.map(|g| g.sync_count());
        model.forward_batch(&mut items, LogitRows::Last).unwrap();
        if let (Some(g), Some(b)) = (gpu, before) {
            syncs.push(g.sync_count() - b);
        }
    };
    pass(&mut caches, &mut captures, &prompts);
    for step in 1..=steps {
        let new: Vec<Vec<SlotInfo>> = caches
            .iter()
            .map(|c| {
                let position = c.len() as i64;
                vec![SlotInfo {
                    token: (step * 13 + position as u32) % vocab,
                    position,
                    group: -1,
                    step,
                    kind: SlotKind::Generated,
                    ablated: false,
                }]
            })
            .collect();
        pass(&mut caches, &mut captures, &new);
    }
    let results = captures
        .into_iter()
        .zip(&caches)
        .map(|(c, cache)| c.finish(cache.slots()))
        .collect();
    (results, syncs)
}

#[test]
fn a_captured_pass_synchronises_once() {
    if !gpu_present() {
        return;
    }
    let (cpu, gpu) = cpu_and_gpu("llama_gqa", GpuDtype::F32);
    let g = GpuContext::shared(0).unwrap();
    let steps = 4;
    let (got, syncs) = run(&gpu, steps, Some(&g));
    let (want, _) = run(&cpu, steps, None);
    assert_eq!(syncs.len(), 1 + steps as usize);
    for (i, &n) in syncs.iter().enumerate() {
        assert!(n <= 1, "pass {i} (0 = prefill) synchronised {n} times");
    }
    for (s, (got, want)) in got.iter().zip(&want).enumerate() {
        assert_stats_close(got, want, 1e-4, &format!("sequence {s}"));
        for l in 0..cpu.cfg.n_layers {
            for h in 0..cpu.cfg.n_heads {
                let d = max_abs_diff(&head_weights(got, l, h), &head_weights(want, l, h));
                assert!(
                    d <= 1e-4,
                    "sequence {s} layer {l} head {h}: weights diff {d}"
                );
            }
        }
    }
}
