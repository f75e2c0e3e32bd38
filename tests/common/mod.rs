//! Helpers shared by the integration tests: golden files, running a case, comparing tensors.
#![allow(dead_code)]

pub mod batch;
pub mod cli;
pub mod golden;
pub mod gpu;

use attnscope_core::capture::{CaptureSpec, SequenceCapture, SequenceResult, WeightsDtype};
use attnscope_core::model::{KvCache, LogitRows, Model};
use attnscope_core::slots::SlotInfo;
use attnscope_core::slots::Visibility;
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The repository root: `ATTNSCOPE_REPO` when set (a test executable run on another machine, see
/// scripts/gpu-validate.sh), else the crate directory it was built in.
pub fn repo() -> PathBuf {
    match std::env::var_os("ATTNSCOPE_REPO") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    }
}

/// The shared data directory (`ATTNSCOPE_SHARED`, else `../shared` beside the repository), or `None`
/// with a visible SKIP message.
pub fn shared(what: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("ATTNSCOPE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared"));
    if dir.join(what).exists() {
        Some(dir)
    } else {
        eprintln!("SKIP: ../shared/{what} is absent; this test case needs the shared data");
        None
    }
}

/// All tensors of a safetensors file, as f32 (or i64 → f32) with shapes.
pub fn read_tensors(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let data: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            safetensors::Dtype::F16 => view
                .data()
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            safetensors::Dtype::I64 => view
                .data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32)
                .collect(),
            other => panic!("unexpected dtype {other:?}"),
        };
        out.insert(name.to_string(), (view.shape().to_vec(), data));
    }
    out
}

/// One sequence with explicit positions and groups.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub ids: Vec<u32>,
    pub positions: Vec<i64>,
    pub groups: Vec<i32>,
    pub visibility: Visibility,
}

impl Case {
    pub fn slots(&self) -> Vec<SlotInfo> {
        (0..self.ids.len())
            .map(|i| SlotInfo::prompt(self.ids[i], self.positions[i], self.groups[i]))
            .collect()
    }
}

/// Result of a one-shot prefill with full weight capture.
pub struct Prefill {
    pub logits: Vec<f32>,
    pub capture: SequenceResult,
    pub cache: KvCache,
}

/// Capture spec asking for f32 weights (and stats) of every layer and head.
pub fn full_spec() -> CaptureSpec {
    CaptureSpec {
        stats: true,
        weights: true,
        weights_dtype: WeightsDtype::F32,
        layers: None,
        heads: None,
    }
}

/// Prefills `case` in one forward pass with weights and stats captured.
pub fn prefill(model: &Model, case: &Case, spec: &CaptureSpec) -> Prefill {
    let t = case.ids.len();
    let mut cache = model.new_cache(t, case.visibility).unwrap();
    let mut cap = SequenceCapture::new(spec, &model.cfg, t);
    let logits = model
        .forward(&mut cache, &case.slots(), Some(&mut cap), LogitRows::All)
        .unwrap();
    let capture = cap.finish(cache.slots());
    Prefill {
        logits,
        capture,
        cache,
    }
}

/// Runs `case` one slot at a time through the KV cache (decode path) with capture.
pub fn stepwise(model: &Model, case: &Case, spec: &CaptureSpec) -> Prefill {
    let t = case.ids.len();
    let mut cache = model.new_cache(t, case.visibility).unwrap();
    let mut cap = SequenceCapture::new(spec, &model.cfg, t);
    let mut logits = Vec::new();
    for slot in case.slots() {
        logits.extend(
            model
                .forward(&mut cache, &[slot], Some(&mut cap), LogitRows::All)
                .unwrap(),
        );
    }
    let capture = cap.finish(cache.slots());
    Prefill {
        logits,
        capture,
        cache,
    }
}

/// The f32 weights `[T, T]` of (layer, head) from a capture.
pub fn head_weights(cap: &SequenceResult, layer: usize, head: usize) -> Vec<f32> {
    cap.weights
        .as_ref()
        .expect("weights captured")
        .head_f32(layer, head)
        .expect("layer and head captured")
}

/// Largest |a − b|, panicking on length mismatch.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Greedy continuation of `prompt` by `n` tokens through the KV cache.
pub fn greedy(model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = model
        .new_cache(prompt.len() + n, Visibility::Visible)
        .unwrap();
    let slots: Vec<SlotInfo> = prompt
        .iter()
        .enumerate()
        .map(|(i, &t)| SlotInfo::prompt(t, i as i64, -1))
        .collect();
    let mut logits = model
        .forward(&mut cache, &slots, None, LogitRows::Last)
        .unwrap();
    let mut out = Vec::new();
    for step in 0..n {
        let next = attnscope_core::sampling::argmax(&logits);
        out.push(next);
        if step + 1 == n {
            break;
        }
        let pos = cache.len() as i64;
        logits = model
            .forward(
                &mut cache,
                &[SlotInfo::prompt(next, pos, -1)],
                None,
                LogitRows::Last,
            )
            .unwrap();
    }
    out
}
