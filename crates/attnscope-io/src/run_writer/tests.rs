//! The streamed run files against the whole-run writer they replace (kept here, as it was, as the
//! reference): the same files, the same tables read back, the same tensor file byte for byte.

use super::*;
use crate::{ColumnData, NamedTensor, TensorData, read_parquet, write_parquet, write_safetensors};
use attnscope_core::capture::{
    HeadStats, LayerResult, SequenceResult, SequenceWeights, WeightBuffer,
};
use attnscope_core::capture::{RowStats, StepGroupMass, StepRow, WeightRows};
use attnscope_core::slots::{N_DISTANCE_BUCKETS, SlotInfo, SlotKind, Visibility};
use half::f16;
use parquet::file::reader::{FileReader, SerializedFileReader};

/// What one synthetic sequence captures.
#[derive(Clone, Copy)]
struct Captured {
    stats: bool,
    weights: Option<bool>, // Some(f16?)
}

const NONE: Captured = Captured {
    stats: false,
    weights: None,
};

/// A sequence of `prompt` prompt slots and `generated` generated ones (the last two of them, when there are
/// at least three, a parallel set), with statistics and weights of heads 0 and 2 of layers 0 and 1, every
/// value distinct and derived from `seed`.
fn outcome(seed: usize, prompt: usize, generated: usize, what: Captured) -> SequenceOutcome {
    let mut slots: Vec<SlotInfo> = (0..prompt)
        .map(|i| SlotInfo::prompt((seed * 10 + i) as u32, i as i64, (i % 3) as i32 - 1))
        .collect();
    for step in 1..=generated {
        let set = generated >= 3 && step >= generated - 1;
        slots.push(SlotInfo {
            token: (seed * 7 + step) as u32,
            position: (prompt + step.min(generated - 1)) as i64 - 1,
            group: if set { 5 } else { -1 },
            step: if set {
                generated as u32 - 1
            } else {
                step as u32
            },
            kind: if set {
                SlotKind::Parallel
            } else {
                SlotKind::Generated
            },
            ablated: false,
        });
    }
    let t = slots.len();
    let value = |layer: usize, head: usize, i: usize| {
        ((seed * 1000 + layer * 100 + head * 10) as f32 + i as f32) / 64.0
    };
    let (layers, heads) = ([0usize, 1], [0usize, 2]);
    let weights = what.weights.map(|half| {
        let w: Vec<f32> = layers
            .iter()
            .flat_map(|&l| {
                heads
                    .iter()
                    .flat_map(move |&h| (0..t * t).map(move |i| value(l, h, i)))
            })
            .collect();
        SequenceWeights {
            layers: layers.to_vec(),
            heads: heads.to_vec(),
            t,
            data: if half {
                WeightBuffer::F16(w.into_iter().map(f16::from_f32).collect())
            } else {
                WeightBuffer::F32(w)
            },
        }
    });
    let capture = (what.stats || what.weights.is_some()).then(|| SequenceResult {
        t,
        layers: layers
            .iter()
            .map(|&layer| {
                let stats = if what.stats {
                    heads
                        .iter()
                        .map(|&h| head_stats(&slots, prompt, |i| value(layer, h, i)))
                        .collect()
                } else {
                    Vec::new()
                };
                LayerResult {
                    layer,
                    heads: heads.to_vec(),
                    stats,
                }
            })
            .collect(),
        weights,
    });
    SequenceOutcome {
        n_prompt: prompt,
        visibility: if seed.is_multiple_of(2) {
            Visibility::Visible
        } else {
            Visibility::Isolated
        },
        slots,
        capture,
        logits: None,
        prefill_seconds: 0.0,
        decode_seconds: vec![0.0; generated],
        stopped_at_eos: false,
    }
}

/// Statistics of every row (group mass for grouped slots), and step rows for the generated slots.
fn head_stats(slots: &[SlotInfo], prompt: usize, v: impl Fn(usize) -> f32) -> HeadStats {
    let t = slots.len();
    let rows = (0..t)
        .map(|q| RowStats {
            entropy: v(q),
            max_weight: v(q + 1),
            argmax: q as u32,
            sink_mass: v(q + 2),
            prev_mass: v(q + 3),
            self_mass: v(q + 4),
            group_mass: Some(v(q + 5)),
        })
        .collect();
    let mut distance_mass = [0.0; N_DISTANCE_BUCKETS];
    for (b, m) in distance_mass.iter_mut().enumerate() {
        *m = f64::from(v(b));
    }
    HeadStats {
        rows,
        received_sum: (0..t).map(|k| f64::from(v(k + 6))).collect(),
        distance_mass,
        received_decode: (0..t).map(|k| f64::from(v(k + 7))).collect(),
        steps: (prompt..t)
            .map(|q| StepRow {
                slot: q as u32,
                mass_prompt: v(q + 8),
                n_prompt: prompt as u32,
                ..StepRow::default()
            })
            .collect(),
        step_groups: (prompt..t)
            .map(|q| StepGroupMass {
                slot: q as u32,
                group: 0,
                mass: v(q + 9),
                n_slots: 2,
            })
            .collect(),
    }
}

/// The tokens table of every sequence, as the whole-run writer built it.
fn whole_tokens_table(outcomes: &[SequenceOutcome]) -> Table {
    let mut all = tokens_table(0, &[], None);
    for (s, out) in outcomes.iter().enumerate() {
        let one = tokens_table(s, &out.slots, None);
        for (col, add) in all.columns.iter_mut().zip(one.columns) {
            match (&mut col.data, add.data) {
                (ColumnData::I32(a), ColumnData::I32(b)) => a.extend(b),
                (ColumnData::I64(a), ColumnData::I64(b)) => a.extend(b),
                (ColumnData::Utf8(a), ColumnData::Utf8(b)) => a.extend(b),
                _ => unreachable!("the tokens table has I32, I64 and Utf8 columns"),
            }
        }
    }
    all
}

/// The whole-run writer as it was before streaming: every table of every sequence at once.
fn write_whole_run(dir: &Path, sliding_window: Option<usize>, outcomes: &[SequenceOutcome]) {
    write_parquet(&dir.join("tokens.parquet"), &whole_tokens_table(outcomes)).unwrap();
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
                sliding_window,
                result,
            })
        })
        .collect();
    if !sources.is_empty() {
        let tables = stats_tables(&sources);
        write_parquet(&dir.join("stats.parquet"), &tables.stats).unwrap();
        write_parquet(&dir.join("received.parquet"), &tables.received).unwrap();
        write_parquet(&dir.join("distance.parquet"), &tables.distance).unwrap();
        if outcomes.iter().any(|o| o.slots.len() > o.n_prompt) {
            write_parquet(&dir.join("steps.parquet"), &tables.steps).unwrap();
            write_parquet(&dir.join("step_groups.parquet"), &tables.step_groups).unwrap();
        }
    }
    let mut tensors = Vec::new();
    let mut metadata = BTreeMap::new();
    for (s, out) in outcomes.iter().enumerate() {
        let Some(result) = out.capture.as_ref() else {
            continue;
        };
        let t = result.t;
        for layer in &result.layers {
            let Some(w) = result.weights.as_ref() else {
                continue;
            };
            let name = format!("seq{s}.layer{}", layer.layer);
            metadata.insert(format!("{name}.heads"), format!("{:?}", layer.heads));
            // The heads one after another, element by element.
            let data = match &w.data {
                WeightBuffer::F32(_) => TensorData::F32(
                    layer
                        .heads
                        .iter()
                        .flat_map(|&h| w.head_f32(layer.layer, h).unwrap())
                        .collect(),
                ),
                WeightBuffer::F16(_) => TensorData::F16(
                    layer
                        .heads
                        .iter()
                        .flat_map(|&h| w.head_f32(layer.layer, h).unwrap())
                        .map(f16::from_f32)
                        .collect(),
                ),
            };
            tensors.push(NamedTensor {
                shape: vec![layer.heads.len(), t, t],
                data,
                name,
            });
        }
    }
    if !tensors.is_empty() {
        metadata.insert(
            "layout".into(),
            "[heads, query slot, key slot], post-softmax probabilities".into(),
        );
        write_safetensors(&dir.join(ATTENTION_FILE), &tensors, &metadata).unwrap();
    }
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn row_groups(path: &Path) -> usize {
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    reader.metadata().num_row_groups()
}

/// Writes `make()`'s sequences both ways and compares; returns the streamed directory.
fn compare(make: &dyn Fn() -> Vec<SequenceOutcome>, sliding_window: Option<usize>) -> Vec<String> {
    let whole = tempfile::tempdir().unwrap();
    write_whole_run(whole.path(), sliding_window, &make());
    let streamed = tempfile::tempdir().unwrap();
    let outcomes = make();
    let mut writer = RunWriter::new(streamed.path(), sliding_window, None);
    for (s, o) in outcomes.iter().enumerate() {
        writer.write_sequence(s, o).unwrap();
    }
    writer.finish().unwrap();

    let names = file_names(whole.path());
    assert_eq!(file_names(streamed.path()), names);
    for name in &names {
        let (a, b) = (whole.path().join(name), streamed.path().join(name));
        if name.ends_with(".parquet") {
            assert_eq!(
                read_parquet(&b).unwrap(),
                read_parquet(&a).unwrap(),
                "{name}"
            );
            // Short sequences are gathered into row groups of at least MIN_GROUP_ROWS rows.
            let rows = read_parquet(&b).unwrap().len();
            assert!(row_groups(&b) <= outcomes.len().max(1), "{name}");
            if rows > 0 && rows < crate::parquet_table::MIN_GROUP_ROWS {
                assert_eq!(
                    row_groups(&b),
                    1,
                    "{name}: short sequences share a row group"
                );
            }
        } else {
            assert_eq!(
                std::fs::read(&b).unwrap(),
                std::fs::read(&a).unwrap(),
                "{name}"
            );
        }
    }
    names
}

#[test]
fn streamed_files_equal_the_whole_run_writer() {
    let all = Captured {
        stats: true,
        weights: Some(false),
    };
    let names = compare(
        &|| {
            vec![
                outcome(0, 4, 3, all),
                outcome(1, 7, 5, all),
                outcome(2, 1, 3, all),
            ]
        },
        None,
    );
    assert_eq!(
        names,
        [
            "attention.safetensors",
            "distance.parquet",
            "received.parquet",
            "stats.parquet",
            "step_groups.parquet",
            "steps.parquet",
            "tokens.parquet"
        ]
    );
    // A sliding window changes the received and distance tables the same way in both.
    compare(
        &|| vec![outcome(3, 6, 2, all), outcome(4, 9, 0, all)],
        Some(3),
    );
}

#[test]
fn streamed_files_without_generation_or_weights_or_capture() {
    let stats = Captured {
        stats: true,
        weights: None,
    };
    let names = compare(
        &|| vec![outcome(0, 5, 0, stats), outcome(1, 3, 0, stats)],
        None,
    );
    assert_eq!(
        names,
        [
            "distance.parquet",
            "received.parquet",
            "stats.parquet",
            "tokens.parquet"
        ]
    );
    let half = Captured {
        stats: false,
        weights: Some(true),
    };
    let names = compare(
        &|| vec![outcome(0, 2, 4, half), outcome(1, 6, 1, half)],
        None,
    );
    assert_eq!(names, ["attention.safetensors", "tokens.parquet"]);
    let names = compare(
        &|| vec![outcome(0, 2, 2, NONE), outcome(1, 3, 0, NONE)],
        None,
    );
    assert_eq!(names, ["tokens.parquet"]);
    let names = compare(&Vec::new, None);
    assert_eq!(names, ["tokens.parquet"]);
}

/// Steps files exist when some sequence generated, even if the one that generated is not the first.
#[test]
fn steps_files_follow_any_generation() {
    let stats = Captured {
        stats: true,
        weights: None,
    };
    let names = compare(
        &|| vec![outcome(0, 5, 0, stats), outcome(1, 3, 2, stats)],
        None,
    );
    assert!(names.contains(&"steps.parquet".to_string()), "{names:?}");
}

#[test]
fn a_sequence_with_another_schema_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = RunWriter::new(dir.path(), None, None);
    let all = Captured {
        stats: true,
        weights: Some(false),
    };
    writer.write_sequence(0, &outcome(0, 3, 1, all)).unwrap();
    let mut odd = Table::new();
    odd.push("seq", ColumnData::I64(vec![1]));
    let path = dir.path().join("tokens.parquet");
    let e = append(&mut writer.tokens, &path, &odd)
        .unwrap_err()
        .to_string();
    assert!(e.contains("tokens.parquet") && e.contains("columns"), "{e}");
    // Dropped unfinished, the writer removes the tensor data file it streamed into.
    assert!(dir.path().join(".attention.safetensors.data").exists());
    drop(writer);
    assert!(!dir.path().join(".attention.safetensors.data").exists());
}

#[test]
fn tensor_data_of_a_streamed_run_is_what_was_captured() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = RunWriter::new(dir.path(), None, None);
    let half = Captured {
        stats: false,
        weights: Some(true),
    };
    let first = outcome(0, 3, 0, half);
    let weights = first.capture.as_ref().unwrap().weights.as_ref().unwrap();
    let want: Vec<f16> = match weights.head(1, 2).unwrap() {
        WeightRows::F16(v) => v.to_vec(),
        WeightRows::F32(_) => unreachable!(),
    };
    writer.write_sequence(0, &first).unwrap();
    writer.finish().unwrap();
    let bytes = std::fs::read(dir.path().join(ATTENTION_FILE)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor("seq0.layer1").unwrap();
    assert_eq!(view.shape(), [2, 3, 3]);
    let got: Vec<f16> = view.data()[9 * 2..]
        .chunks_exact(2)
        .map(|c| f16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(got, want);
}
