//! Captured statistics → long-format tables (written as Parquet by `run::outputs`).
//!
//! - stats: seq, layer, head, slot, metric, value — one row per query row and metric.
//! - received: seq, layer, head, slot, received_sum, received_mean, visible_rows — per key slot.
//! - distance: seq, layer, head, bucket, label, distance_min, distance_max, mass_sum, mass_mean, rows —
//!   attention mass by position distance position[q] − position[k] in log2 buckets.

use crate::{ColumnData, Table};
use attnscope_core::capture::{HeadStats, SequenceResult};
use attnscope_core::slots::AttentionMask;
use attnscope_core::slots::SlotInfo;
use attnscope_core::slots::Visibility;
use attnscope_core::slots::{bucket_range, distance_bucket};

/// Metric names of the stats table, in the order they are written.
pub const ROW_METRICS: [&str; 7] = [
    "entropy",
    "max_weight",
    "argmax_slot",
    "sink_mass",
    "prev_mass",
    "self_mass",
    "group_mass",
];

/// One sequence's captured statistics with what is needed to interpret them.
pub struct StatsSource<'a> {
    pub seq: usize,
    pub slots: &'a [SlotInfo],
    pub visibility: Visibility,
    pub sliding_window: Option<usize>,
    pub result: &'a SequenceResult,
}

/// All statistics tables of a run.
pub struct StatsTables {
    pub stats: Table,
    pub received: Table,
    pub distance: Table,
    /// Per generation-step query row: mass on prompt / generated / parallel slots.
    pub steps: Table,
    /// Per generation-step query row: mass on each group.
    pub step_groups: Table,
}

/// Builds the statistics tables over all sequences.
pub fn stats_tables(sources: &[StatsSource]) -> StatsTables {
    let mut stats = LongTable::default();
    let mut received = ReceivedTable::default();
    let mut distance = DistanceTable::default();
    let mut steps = StepTable::default();
    for src in sources {
        let mask = AttentionMask {
            slots: src.slots,
            visibility: src.visibility,
            sliding_window: src.sliding_window,
        };
        let visible_rows = mask.visible_rows_per_key();
        let max_bucket = max_bucket(src.slots);
        let any_negative = has_negative_distance(&mask);
        for layer in &src.result.layers {
            for (head, hs) in layer.heads.iter().zip(&layer.stats) {
                let key = (src.seq as i32, layer.layer as i32, *head as i32);
                stats.add(key, src.slots, hs);
                received.add(key, hs, &visible_rows);
                distance.add(key, hs, src.slots.len(), max_bucket, any_negative);
                steps.add(key, src.slots, hs);
            }
        }
    }
    let (steps, step_groups) = steps.into_tables();
    StatsTables {
        stats: stats.into_table(),
        received: received.into_table(),
        distance: distance.into_table(),
        steps,
        step_groups,
    }
}

/// Largest positive-distance bucket any (query, key ≤ query) pair of the sequence can fall in.
fn max_bucket(slots: &[SlotInfo]) -> usize {
    let lo = slots.iter().map(|s| s.position).min().unwrap_or(0);
    let hi = slots.iter().map(|s| s.position).max().unwrap_or(0);
    distance_bucket(hi - lo).max(1)
}

/// Whether some visible key has a larger position than its query (only with unusual explicit positions).
fn has_negative_distance(mask: &AttentionMask) -> bool {
    let s = mask.slots;
    (0..s.len()).any(|q| (0..=q).any(|k| mask.allows(q, k) && s[k].position > s[q].position))
}

type Key = (i32, i32, i32);

/// Appends one row of values to parallel columns.
fn push_key<T, const N: usize>(cols: &mut [Vec<T>; N], values: [T; N]) {
    cols.iter_mut().zip(values).for_each(|(c, v)| c.push(v));
}

/// A table that starts with the given int32 key columns.
fn key_table<const N: usize>(names: [&str; N], cols: [Vec<i32>; N]) -> Table {
    let mut t = Table::new();
    for (name, col) in names.into_iter().zip(cols) {
        t.push(name, ColumnData::I32(col));
    }
    t
}

#[derive(Default)]
struct LongTable {
    key: [Vec<i32>; 4],
    metric: Vec<String>,
    value: Vec<f32>,
}

impl LongTable {
    fn add(&mut self, (seq, layer, head): Key, slots: &[SlotInfo], hs: &HeadStats) {
        for (slot, r) in hs.rows.iter().enumerate() {
            let values = [
                Some(r.entropy),
                Some(r.max_weight),
                Some(r.argmax as f32),
                Some(r.sink_mass),
                Some(r.prev_mass),
                Some(r.self_mass),
                r.group_mass.filter(|_| slots[slot].group >= 0),
            ];
            for (name, value) in ROW_METRICS.iter().zip(values) {
                let Some(value) = value else { continue };
                push_key(&mut self.key, [seq, layer, head, slot as i32]);
                self.metric.push((*name).to_string());
                self.value.push(value);
            }
        }
    }

    fn into_table(self) -> Table {
        let mut t = key_table(["seq", "layer", "head", "slot"], self.key);
        t.push("metric", ColumnData::Utf8(self.metric))
            .push("value", ColumnData::F32(self.value));
        t
    }
}

#[derive(Default)]
struct ReceivedTable {
    key: [Vec<i32>; 4],
    sum: Vec<f32>,
    mean: Vec<f32>,
    rows: Vec<i32>,
    decode: Vec<f32>,
}

impl ReceivedTable {
    fn add(&mut self, (seq, layer, head): Key, hs: &HeadStats, visible_rows: &[u32]) {
        for (slot, (&sum, &rows)) in hs.received_sum.iter().zip(visible_rows).enumerate() {
            push_key(&mut self.key, [seq, layer, head, slot as i32]);
            self.sum.push(sum as f32);
            self.mean.push(if rows > 0 {
                (sum / rows as f64) as f32
            } else {
                0.0
            });
            self.rows.push(rows as i32);
            self.decode.push(hs.received_decode[slot] as f32);
        }
    }

    fn into_table(self) -> Table {
        let mut t = key_table(["seq", "layer", "head", "slot"], self.key);
        t.push("received_sum", ColumnData::F32(self.sum))
            .push("received_mean", ColumnData::F32(self.mean))
            .push("visible_rows", ColumnData::I32(self.rows))
            .push("received_decode_sum", ColumnData::F32(self.decode));
        t
    }
}

#[derive(Default)]
struct DistanceTable {
    key: [Vec<i32>; 4],
    label: Vec<String>,
    lo: Vec<i64>,
    hi: Vec<i64>,
    sum: Vec<f64>,
    mean: Vec<f64>,
    rows: Vec<i32>,
}

impl DistanceTable {
    fn add(
        &mut self,
        (seq, layer, head): Key,
        hs: &HeadStats,
        n_rows: usize,
        max_bucket: usize,
        neg: bool,
    ) {
        let first = if neg { 0 } else { 1 };
        for bucket in first..=max_bucket {
            let (lo, hi) = bucket_range(bucket);
            let (lo, hi) = (lo.unwrap_or(i64::MIN), hi.unwrap_or(i64::MAX));
            let label = match bucket {
                0 => "<0".to_string(),
                _ if lo == hi => lo.to_string(),
                _ => format!("{lo}-{hi}"),
            };
            push_key(&mut self.key, [seq, layer, head, bucket as i32]);
            self.label.push(label);
            self.lo.push(lo);
            self.hi.push(hi);
            let sum = hs.distance_mass[bucket];
            self.sum.push(sum);
            self.mean
                .push(if n_rows > 0 { sum / n_rows as f64 } else { 0.0 });
            self.rows.push(n_rows as i32);
        }
    }

    fn into_table(self) -> Table {
        let mut t = key_table(["seq", "layer", "head", "bucket"], self.key);
        t.push("label", ColumnData::Utf8(self.label))
            .push("distance_min", ColumnData::I64(self.lo))
            .push("distance_max", ColumnData::I64(self.hi))
            .push("mass_sum", ColumnData::F64(self.sum))
            .push("mass_mean", ColumnData::F64(self.mean))
            .push("rows", ColumnData::I32(self.rows));
        t
    }
}

#[derive(Default)]
struct StepTable {
    key: [Vec<i32>; 5],
    kind: Vec<String>,
    mass: [Vec<f32>; 4],
    count: [Vec<i32>; 3],
    group_key: [Vec<i32>; 6],
    group_mass: Vec<f32>,
    group_n: Vec<i32>,
}

impl StepTable {
    fn add(&mut self, (seq, layer, head): Key, slots: &[SlotInfo], hs: &HeadStats) {
        for r in &hs.steps {
            let info = &slots[r.slot as usize];
            push_key(
                &mut self.key,
                [seq, info.step as i32, r.slot as i32, layer, head],
            );
            self.kind.push(info.kind.as_str().to_string());
            push_key(
                &mut self.mass,
                [
                    r.mass_prompt,
                    r.mass_generated,
                    r.mass_parallel,
                    r.mass_self,
                ],
            );
            push_key(
                &mut self.count,
                [r.n_prompt, r.n_generated, r.n_parallel].map(|n| n as i32),
            );
        }
        for g in &hs.step_groups {
            let step = slots[g.slot as usize].step as i32;
            push_key(
                &mut self.group_key,
                [seq, step, g.slot as i32, layer, head, g.group],
            );
            self.group_mass.push(g.mass);
            self.group_n.push(g.n_slots as i32);
        }
    }

    fn into_tables(self) -> (Table, Table) {
        let [prompt, generated, parallel, own] = self.mass;
        let [n_prompt, n_generated, n_parallel] = self.count;
        let mut t = key_table(["seq", "step", "slot", "layer", "head"], self.key);
        t.push("query_kind", ColumnData::Utf8(self.kind))
            .push("mass_prompt", ColumnData::F32(prompt))
            .push("mass_generated", ColumnData::F32(generated))
            .push("mass_parallel", ColumnData::F32(parallel))
            .push("mass_self", ColumnData::F32(own))
            .push("n_prompt", ColumnData::I32(n_prompt))
            .push("n_generated", ColumnData::I32(n_generated))
            .push("n_parallel", ColumnData::I32(n_parallel));
        let mut g = key_table(
            ["seq", "step", "slot", "layer", "head", "group"],
            self.group_key,
        );
        g.push("mass", ColumnData::F32(self.group_mass))
            .push("n_slots", ColumnData::I32(self.group_n));
        (t, g)
    }
}
