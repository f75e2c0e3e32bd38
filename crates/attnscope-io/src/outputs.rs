//! What a run writes of one sequence: its tokens table and its captured weights as tensor data (the
//! statistics tables are in `tables`); `run_writer` writes them.

use crate::{ColumnData, Table, TensorView};
use attnscope_core::capture::{SequenceWeights, WeightRows};
use attnscope_core::slots::SlotInfo;
use attnscope_core::tokenizer::TextTokenizer;

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

/// The `[heads, t, t]` weights of the `index`-th captured layer of `weights`, borrowed as tensor data
/// (a slice of the sequence's one buffer: written as it is, never joined or converted).
pub fn layer_weights(weights: &SequenceWeights, index: usize) -> TensorView<'_> {
    match weights.layer(index) {
        WeightRows::F32(v) => TensorView::F32(v),
        WeightRows::F16(v) => TensorView::F16(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NamedTensor, SafetensorsWriter, TensorData, write_safetensors};
    use attnscope_core::capture::WeightBuffer;
    use half::f16;
    use std::collections::BTreeMap;

    /// Head `h` of layer `l`: `[t, t]` distinct values, exact in f16.
    fn head(l: usize, h: usize, t: usize) -> Vec<f32> {
        (0..t * t)
            .map(|i| (l * 1000 + h * 100 + i) as f32 / 64.0)
            .collect()
    }

    /// The attention.safetensors bytes of the `[heads, t, t]` tensors, one per layer.
    fn file_bytes(shape: &[usize], tensors: &[(String, TensorView)]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attention.safetensors");
        let mut w = SafetensorsWriter::create(&path).unwrap();
        for (name, data) in tensors {
            w.append_view(name, shape, *data).unwrap();
        }
        w.finish(&BTreeMap::new()).unwrap();
        std::fs::read(&path).unwrap()
    }

    /// Each layer's slice of the sequence buffer writes the file of the element-wise concatenation of
    /// that layer's heads, for f32 and f16 and a head subset.
    #[test]
    fn layer_slices_write_the_element_wise_bytes_of_their_heads() {
        let (t, layers, heads) = (5, [0usize, 3], [1usize, 3, 4]);
        let joined: Vec<Vec<f32>> = layers
            .iter()
            .map(|&l| heads.iter().flat_map(|&h| head(l, h, t)).collect())
            .collect();
        let all: Vec<f32> = joined.concat();
        for half in [false, true] {
            let data = if half {
                WeightBuffer::F16(all.iter().copied().map(f16::from_f32).collect())
            } else {
                WeightBuffer::F32(all.clone())
            };
            let w = SequenceWeights {
                layers: layers.to_vec(),
                heads: heads.to_vec(),
                t,
                data,
            };
            let shape = [heads.len(), t, t];
            let views: Vec<(String, TensorView)> = (0..layers.len())
                .map(|i| (format!("seq0.layer{}", layers[i]), layer_weights(&w, i)))
                .collect();
            assert!(views.iter().all(|(_, v)| v.len() == heads.len() * t * t));
            let want: Vec<NamedTensor> = (0..layers.len())
                .map(|i| NamedTensor {
                    name: views[i].0.clone(),
                    shape: shape.to_vec(),
                    data: if half {
                        TensorData::F16(joined[i].iter().copied().map(f16::from_f32).collect())
                    } else {
                        TensorData::F32(joined[i].clone())
                    },
                })
                .collect();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("want.safetensors");
            write_safetensors(&path, &want, &BTreeMap::new()).unwrap();
            assert_eq!(file_bytes(&shape, &views), std::fs::read(&path).unwrap());
        }
    }

    #[test]
    fn a_layer_out_of_range_is_empty() {
        let w = SequenceWeights {
            layers: vec![1],
            heads: vec![0],
            t: 2,
            data: WeightBuffer::F32(vec![0.5; 4]),
        };
        assert_eq!(layer_weights(&w, 1), TensorView::F32(&[]));
        assert_eq!(layer_weights(&w, 0), TensorView::F32(&[0.5; 4]));
    }
}
