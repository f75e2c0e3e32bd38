//! Writing a run's tables and tensors into its (temporary) run directory.

use crate::tables::{StatsSource, stats_tables};
use crate::{ColumnData, NamedTensor, Table, TensorData, write_parquet, write_safetensors};
use attnscope_core::Result;
use attnscope_core::capture::{HeadWeights, LayerResult};
use attnscope_core::model::Model;
use attnscope_core::run::SequenceOutcome;
use attnscope_core::tokenizer::TextTokenizer;
use half::slice::HalfFloatSliceExt;
use half::vec::HalfFloatVecExt;
use std::collections::BTreeMap;
use std::path::Path;

/// The per-slot table of every sequence.
pub fn tokens_table(outcomes: &[SequenceOutcome], tokenizer: Option<&TextTokenizer>) -> Table {
    let mut seq = Vec::new();
    let mut slot = Vec::new();
    let mut token_id = Vec::new();
    let mut token = Vec::new();
    let mut position = Vec::new();
    let mut group = Vec::new();
    let mut step = Vec::new();
    let mut kind = Vec::new();
    for (s, out) in outcomes.iter().enumerate() {
        for (i, info) in out.slots.iter().enumerate() {
            seq.push(s as i32);
            slot.push(i as i32);
            token_id.push(info.token as i64);
            token.push(
                tokenizer
                    .map(|t| t.token_str(info.token))
                    .unwrap_or_default(),
            );
            position.push(info.position);
            group.push(info.group);
            step.push(info.step as i32);
            kind.push(info.kind.as_str().to_string());
        }
    }
    let mut t = Table::new();
    t.push("seq", ColumnData::I32(seq))
        .push("slot", ColumnData::I32(slot))
        .push("token_id", ColumnData::I64(token_id))
        .push("token", ColumnData::Utf8(token))
        .push("position", ColumnData::I64(position))
        .push("group", ColumnData::I32(group))
        .push("step", ColumnData::I32(step))
        .push("kind", ColumnData::Utf8(kind));
    t
}

/// Writes tokens.parquet, and stats tables and attention.safetensors when captured, into `dir`.
/// Captured weights are moved out of `outcomes` to avoid holding two copies.
pub fn write_run_files(
    dir: &Path,
    model: &Model,
    outcomes: &mut [SequenceOutcome],
    tokenizer: Option<&TextTokenizer>,
) -> Result<()> {
    write_parquet(
        &dir.join("tokens.parquet"),
        &tokens_table(outcomes, tokenizer),
    )?;

    let sources: Vec<StatsSource> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(seq, o)| {
            let result = o.capture.as_ref()?;
            let has_stats = result.layers.iter().any(|l| !l.stats.is_empty());
            has_stats.then_some(StatsSource {
                seq,
                slots: &o.slots,
                visibility: o.visibility,
                sliding_window: model.cfg.sliding_window,
                result,
            })
        })
        .collect();
    if !sources.is_empty() {
        let tables = stats_tables(&sources);
        write_parquet(&dir.join("stats.parquet"), &tables.stats)?;
        write_parquet(&dir.join("received.parquet"), &tables.received)?;
        write_parquet(&dir.join("distance.parquet"), &tables.distance)?;
        if outcomes.iter().any(|o| o.slots.len() > o.n_prompt) {
            write_parquet(&dir.join("steps.parquet"), &tables.steps)?;
            write_parquet(&dir.join("step_groups.parquet"), &tables.step_groups)?;
        }
    }

    let mut tensors = Vec::new();
    let mut metadata = BTreeMap::new();
    for (s, out) in outcomes.iter_mut().enumerate() {
        let Some(result) = out.capture.as_mut() else {
            continue;
        };
        let t = result.t;
        for layer in &mut result.layers {
            if layer.weights.is_empty() {
                continue;
            }
            let name = format!("seq{s}.layer{}", layer.layer);
            metadata.insert(format!("{name}.heads"), format!("{:?}", layer.heads));
            tensors.push(NamedTensor {
                shape: vec![layer.heads.len(), t, t],
                data: take_weights(layer),
                name,
            });
        }
    }
    if !tensors.is_empty() {
        metadata.insert(
            "layout".into(),
            "[heads, query slot, key slot], post-softmax probabilities".into(),
        );
        write_safetensors(&dir.join("attention.safetensors"), &tensors, &metadata)?;
    }
    Ok(())
}

/// A layer's per-head `[T, T]` weights as one `[heads, T, T]` tensor. The head buffers are moved out of
/// `layer`, not copied: the writer writes them one after another. A head in the other dtype than the first
/// (one capture spec never mixes them) is converted as a whole slice.
fn take_weights(layer: &mut LayerResult) -> TensorData {
    let heads = std::mem::take(&mut layer.weights);
    match heads.first() {
        Some(HeadWeights::F16(_)) => TensorData::F16Blocks(
            heads
                .into_iter()
                .map(|h| match h {
                    HeadWeights::F16(v) => v,
                    HeadWeights::F32(v) => Vec::<half::f16>::from_f32_slice(&v),
                })
                .collect(),
        ),
        _ => TensorData::F32Blocks(
            heads
                .into_iter()
                .map(|h| match h {
                    HeadWeights::F32(v) => v,
                    HeadWeights::F16(v) => v.to_f32_vec(),
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NamedTensor;
    use half::f16;

    /// Head `h`'s `[t, t]` weights: distinct values, exact in f16.
    fn head(h: usize, t: usize) -> Vec<f32> {
        (0..t * t).map(|i| (h * 100 + i) as f32 / 64.0).collect()
    }

    fn layer(heads: &[usize], weights: Vec<HeadWeights>) -> LayerResult {
        LayerResult {
            layer: 1,
            heads: heads.to_vec(),
            weights,
            stats: Vec::new(),
        }
    }

    /// The attention.safetensors bytes of one `[heads, t, t]` tensor.
    fn file_bytes(data: TensorData, n_heads: usize, t: usize) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attention.safetensors");
        let tensors = [NamedTensor {
            name: "seq0.layer1".into(),
            shape: vec![n_heads, t, t],
            data,
        }];
        write_safetensors(&path, &tensors, &BTreeMap::new()).unwrap();
        std::fs::read(&path).unwrap()
    }

    /// The file written from the moved head buffers equals the file of the element-wise concatenation of
    /// the heads (the previous definition), for f32, f16 and mixed heads and a head subset.
    #[test]
    fn taken_weights_write_the_element_wise_bytes() {
        let t = 5;
        let heads = [1usize, 3, 4];
        let f32s: Vec<Vec<f32>> = heads.iter().map(|&h| head(h, t)).collect();
        let f16s: Vec<Vec<f16>> = f32s
            .iter()
            .map(|v| v.iter().copied().map(f16::from_f32).collect())
            .collect();
        let joined_f32: Vec<f32> = f32s.iter().flatten().copied().collect();
        let joined_f16: Vec<f16> = f16s.iter().flatten().copied().collect();
        let cases = [
            (
                f32s.iter()
                    .cloned()
                    .map(HeadWeights::F32)
                    .collect::<Vec<_>>(),
                TensorData::F32(joined_f32.clone()),
            ),
            (
                f16s.iter().cloned().map(HeadWeights::F16).collect(),
                TensorData::F16(joined_f16.clone()),
            ),
            (
                vec![
                    HeadWeights::F16(f16s[0].clone()),
                    HeadWeights::F32(f32s[1].clone()),
                    HeadWeights::F16(f16s[2].clone()),
                ],
                TensorData::F16(joined_f16.clone()),
            ),
            (
                vec![
                    HeadWeights::F32(f32s[0].clone()),
                    HeadWeights::F16(f16s[1].clone()),
                    HeadWeights::F32(f32s[2].clone()),
                ],
                TensorData::F32(
                    [
                        &f32s[0][..],
                        &f16s[1].iter().map(|x| x.to_f32()).collect::<Vec<_>>(),
                        &f32s[2],
                    ]
                    .concat(),
                ),
            ),
        ];
        for (weights, want) in cases {
            let mut l = layer(&heads, weights);
            let got = take_weights(&mut l);
            assert!(l.weights.is_empty());
            assert_eq!(got.len(), heads.len() * t * t);
            assert_eq!(got.dtype(), want.dtype());
            let want_bytes: Vec<u8> = match &want {
                TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                TensorData::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                _ => unreachable!(),
            };
            let got_file = file_bytes(got, heads.len(), t);
            assert!(got_file.ends_with(&want_bytes));
            assert_eq!(got_file, file_bytes(want, heads.len(), t));
        }
    }

    #[test]
    fn no_heads_give_an_empty_f32_tensor() {
        let mut l = layer(&[], Vec::new());
        let got = take_weights(&mut l);
        assert_eq!(got, TensorData::F32Blocks(Vec::new()));
        assert!(got.is_empty());
    }
}
