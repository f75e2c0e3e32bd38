//! What a run writes of one sequence: its tokens table and its captured weights as tensor data (the
//! statistics tables are in `tables`); `run_writer` writes them.

use crate::{ColumnData, Table, TensorData};
use attnscope_core::capture::{HeadWeights, LayerResult};
use attnscope_core::slots::SlotInfo;
use attnscope_core::tokenizer::TextTokenizer;
use half::slice::HalfFloatSliceExt;
use half::vec::HalfFloatVecExt;

/// The per-slot table of sequence `seq`, whose slots are `slots`.
pub fn tokens_table(seq: usize, slots: &[SlotInfo], tokenizer: Option<&TextTokenizer>) -> Table {
    let n = slots.len();
    let mut slot = Vec::with_capacity(n);
    let mut token_id = Vec::with_capacity(n);
    let mut token = Vec::with_capacity(n);
    let mut position = Vec::with_capacity(n);
    let mut group = Vec::with_capacity(n);
    let mut step = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    for (i, info) in slots.iter().enumerate() {
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
    let mut t = Table::new();
    t.push("seq", ColumnData::I32(vec![seq as i32; n]))
        .push("slot", ColumnData::I32(slot))
        .push("token_id", ColumnData::I64(token_id))
        .push("token", ColumnData::Utf8(token))
        .push("position", ColumnData::I64(position))
        .push("group", ColumnData::I32(group))
        .push("step", ColumnData::I32(step))
        .push("kind", ColumnData::Utf8(kind));
    t
}

/// A layer's per-head `[T, T]` weights as one `[heads, T, T]` tensor. The head buffers are moved out of
/// `layer`, not copied: the writer writes them one after another. A head in the other dtype than the first
/// (one capture spec never mixes them) is converted as a whole slice.
pub(crate) fn take_weights(layer: &mut LayerResult) -> TensorData {
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
    use crate::{NamedTensor, write_safetensors};
    use half::f16;
    use std::collections::BTreeMap;

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
