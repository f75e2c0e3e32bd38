//! Writing a run's tables and tensors into its (temporary) run directory.

use crate::tables::{StatsSource, stats_tables};
use crate::{ColumnData, NamedTensor, Table, TensorData, write_parquet, write_safetensors};
use attnscope_core::Result;
use attnscope_core::capture::{HeadWeights, LayerResult};
use attnscope_core::model::Model;
use attnscope_core::run::SequenceOutcome;
use attnscope_core::tokenizer::TextTokenizer;
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

/// Concatenates a layer's per-head `[T, T]` weights into one `[heads, T, T]` buffer.
fn take_weights(layer: &mut LayerResult) -> TensorData {
    let heads = std::mem::take(&mut layer.weights);
    match heads.first() {
        Some(HeadWeights::F16(_)) => TensorData::F16(
            heads
                .into_iter()
                .flat_map(|h| match h {
                    HeadWeights::F16(v) => v,
                    HeadWeights::F32(v) => v.into_iter().map(half::f16::from_f32).collect(),
                })
                .collect(),
        ),
        _ => TensorData::F32(
            heads
                .into_iter()
                .flat_map(|h| match h {
                    HeadWeights::F32(v) => v,
                    HeadWeights::F16(v) => v.into_iter().map(|x| x.to_f32()).collect(),
                })
                .collect(),
        ),
    }
}
