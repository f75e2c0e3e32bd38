//! Per-head recorders: exact weight rows and cheap statistics, computed from each probability row once.
//! CPU twin of the statistics epilogue of the CUDA attention kernels.

use crate::capture::{CaptureSpec, HeadWeights, WeightsDtype};
use crate::slots::AttentionMask;
use crate::slots::{N_DISTANCE_BUCKETS, SlotInfo, distance_bucket};

/// One probability row as the attention hands it over.
pub struct RowView<'a> {
    /// Query slot.
    pub slot: usize,
    /// Probabilities over key slots `0..=slot` (0 where hidden).
    pub probs: &'a [f32],
    /// log Σ exp(s) over visible keys.
    pub lse: f32,
    /// Σ p·s over visible keys.
    pub expected_score: f64,
    /// Metadata of all filled slots.
    pub slots: &'a [SlotInfo],
    pub mask: &'a AttentionMask<'a>,
}

/// Statistics of one query row.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RowStats {
    /// −Σ p ln p, nats.
    pub entropy: f32,
    pub max_weight: f32,
    /// Key slot of the largest weight (lowest slot on ties).
    pub argmax: u32,
    /// Weight on slot 0.
    pub sink_mass: f32,
    /// Weight on slot q − 1 (0 for q = 0).
    pub prev_mass: f32,
    /// Weight on slot q.
    pub self_mass: f32,
    /// Weight on the other slots of q's group; `None` when q has no group.
    pub group_mass: Option<f32>,
}

/// Statistics of one head over a whole sequence.
#[derive(Clone, Debug)]
pub struct HeadStats {
    /// Indexed by query slot.
    pub rows: Vec<RowStats>,
    /// Σ over query rows of the weight each key slot receives.
    pub received_sum: Vec<f64>,
    /// Σ over query rows of the weight in each distance bucket.
    pub distance_mass: [f64; N_DISTANCE_BUCKETS],
    /// Σ over generation-step query rows (step > 0) of the weight each key slot receives.
    pub received_decode: Vec<f64>,
    /// Per generation-step query row: mass by key kind.
    pub steps: Vec<StepRow>,
    /// Per generation-step query row and key group: mass on that group's slots.
    pub step_groups: Vec<StepGroupMass>,
}

/// Where one generation-step query row puts its attention, by kind of key slot (itself excluded).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepRow {
    pub slot: u32,
    pub mass_prompt: f32,
    pub mass_generated: f32,
    pub mass_parallel: f32,
    pub mass_self: f32,
    /// Visible key slots of each kind (the query itself excluded).
    pub n_prompt: u32,
    pub n_generated: u32,
    pub n_parallel: u32,
}

/// Mass a generation-step query row puts on the visible slots of one group (itself excluded).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepGroupMass {
    pub slot: u32,
    pub group: i32,
    pub mass: f32,
    pub n_slots: u32,
}

/// Weight rows handed over in bulk ([`HeadRecorder::absorb_weight_rows`]).
#[derive(Clone, Copy, Debug)]
pub enum WeightRows<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
}

/// Collects what the capture spec asks for from one head's rows.
pub struct HeadRecorder {
    active: bool,
    capacity: usize,
    stats: Option<HeadStats>,
    weights: Option<HeadWeights>,
}

impl HeadRecorder {
    /// A recorder for a sequence of at most `capacity` slots.
    pub fn new(spec: &CaptureSpec, capacity: usize) -> HeadRecorder {
        let stats = spec.stats.then(|| HeadStats {
            rows: vec![RowStats::default(); capacity],
            received_sum: vec![0.0; capacity],
            distance_mass: [0.0; N_DISTANCE_BUCKETS],
            received_decode: vec![0.0; capacity],
            steps: Vec::new(),
            step_groups: Vec::new(),
        });
        let weights = spec.weights.then(|| match spec.weights_dtype {
            WeightsDtype::F32 => HeadWeights::F32(vec![0.0; capacity * capacity]),
            WeightsDtype::F16 => HeadWeights::F16(vec![half::f16::ZERO; capacity * capacity]),
        });
        HeadRecorder {
            active: true,
            capacity,
            stats,
            weights,
        }
    }

    /// A recorder for a head that is not selected.
    pub fn inactive() -> HeadRecorder {
        HeadRecorder {
            active: false,
            capacity: 0,
            stats: None,
            weights: None,
        }
    }

    /// Whether this head records anything.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Whether this head keeps exact weight rows.
    pub fn wants_weights(&self) -> bool {
        self.weights.is_some()
    }

    /// Whether this head keeps statistics.
    pub fn wants_stats(&self) -> bool {
        self.stats.is_some()
    }

    /// Takes statistics reduced elsewhere (the GPU's second pass) for the query slots
    /// `q_start..q_start + rows.len()`: their row statistics, the weight each key slot received from them,
    /// and their distance-bucket mass. Only for prompt-step rows (step 0): generation-step rows need the
    /// whole row ([`HeadRecorder::observe`]) for the per-step tables.
    pub fn absorb_reduced(
        &mut self,
        q_start: usize,
        rows: &[RowStats],
        received: &[f64],
        distance: &[f64; N_DISTANCE_BUCKETS],
    ) {
        if let Some(stats) = &mut self.stats {
            stats.rows[q_start..q_start + rows.len()].copy_from_slice(rows);
            for (acc, r) in stats.received_sum.iter_mut().zip(received) {
                *acc += r;
            }
            for (acc, d) in stats.distance_mass.iter_mut().zip(distance) {
                *acc += d;
            }
        }
    }

    /// The dtype its weight rows are kept in (`None` when it keeps none).
    pub fn weights_dtype(&self) -> Option<WeightsDtype> {
        self.weights.as_ref().map(|w| match w {
            HeadWeights::F32(_) => WeightsDtype::F32,
            HeadWeights::F16(_) => WeightsDtype::F16,
        })
    }

    /// Takes exact weight rows computed elsewhere (the GPU's second pass, already in this recorder's
    /// dtype) for the query slots `q_start..q_start + rows.len() / row_len`: `rows` is row-major with
    /// `row_len <= capacity` columns (zeros where hidden), copied one row at a time. A dtype that is not the
    /// recorder's is ignored (the caller asks [`HeadRecorder::weights_dtype`]).
    pub fn absorb_weight_rows(&mut self, q_start: usize, row_len: usize, rows: WeightRows) {
        let cap = self.capacity;
        if row_len == 0 || row_len > cap {
            return;
        }
        fn copy<T: Copy>(buf: &mut [T], cap: usize, q_start: usize, row_len: usize, rows: &[T]) {
            for (i, row) in rows.chunks_exact(row_len).enumerate() {
                let start = (q_start + i) * cap;
                if let Some(dst) = buf.get_mut(start..start + row_len) {
                    dst.copy_from_slice(row);
                }
            }
        }
        match (&mut self.weights, rows) {
            (Some(HeadWeights::F32(buf)), WeightRows::F32(r)) => {
                copy(buf, cap, q_start, row_len, r)
            }
            (Some(HeadWeights::F16(buf)), WeightRows::F16(r)) => {
                copy(buf, cap, q_start, row_len, r)
            }
            _ => {}
        }
    }

    /// Records one row.
    pub fn observe(&mut self, row: &RowView) {
        let q = row.slot;
        if let Some(w) = &mut self.weights {
            let start = q * self.capacity;
            match w {
                HeadWeights::F32(buf) => {
                    buf[start..start + row.probs.len()].copy_from_slice(row.probs)
                }
                HeadWeights::F16(buf) => {
                    for (dst, &p) in buf[start..start + row.probs.len()]
                        .iter_mut()
                        .zip(row.probs)
                    {
                        *dst = half::f16::from_f32(p);
                    }
                }
            }
        }
        if let Some(stats) = &mut self.stats {
            stats.rows[q] = row_stats(row, &mut stats.received_sum, &mut stats.distance_mass);
            if row.slots[q].step > 0 {
                step_stats(row, stats);
            }
        }
    }

    /// Trims to `t` slots and hands over the buffers.
    pub fn finish(self, t: usize) -> (Option<HeadWeights>, Option<HeadStats>) {
        let cap = self.capacity;
        let weights = self.weights.map(|w| match w {
            HeadWeights::F32(buf) => HeadWeights::F32(trim_square(buf, cap, t)),
            HeadWeights::F16(buf) => HeadWeights::F16(trim_square(buf, cap, t)),
        });
        let stats = self.stats.map(|mut s| {
            s.rows.truncate(t);
            s.received_sum.truncate(t);
            s.received_decode.truncate(t);
            s
        });
        (weights, stats)
    }
}

/// The leading `[t, t]` block of a `[cap, cap]` row-major matrix.
fn trim_square<T: Copy>(buf: Vec<T>, cap: usize, t: usize) -> Vec<T> {
    if t == cap {
        return buf;
    }
    let mut out = Vec::with_capacity(t * t);
    for r in 0..t {
        out.extend_from_slice(&buf[r * cap..r * cap + t]);
    }
    out
}

/// Computes the row statistics and accumulates received weight and distance mass.
fn row_stats(
    row: &RowView,
    received: &mut [f64],
    distance: &mut [f64; N_DISTANCE_BUCKETS],
) -> RowStats {
    let q = row.slot;
    let probs = row.probs;
    let qpos = row.slots[q].position;
    let qgroup = row.slots[q].group;
    // Separate simple loops: each is branch-light and the received sums vectorise.
    let mut max_weight = f32::NEG_INFINITY;
    let mut argmax = 0u32;
    for (k, &p) in probs.iter().enumerate() {
        if p > max_weight {
            max_weight = p;
            argmax = k as u32;
        }
    }
    for (r, &p) in received.iter_mut().zip(probs) {
        *r += p as f64;
    }
    // Distance buckets: consecutive keys usually share a bucket, so sum runs locally and flush on change.
    let mut bucket = usize::MAX;
    let mut run = 0.0f64;
    for (info, &p) in row.slots.iter().zip(probs) {
        let b = distance_bucket(qpos - info.position);
        if b != bucket {
            if bucket != usize::MAX {
                distance[bucket] += run;
            }
            bucket = b;
            run = 0.0;
        }
        run += p as f64;
    }
    if bucket != usize::MAX {
        distance[bucket] += run;
    }
    let mut group_mass = 0.0f64;
    if qgroup >= 0 {
        for (k, (info, &p)) in row.slots.iter().zip(probs).enumerate() {
            if info.group == qgroup && k != q {
                group_mass += p as f64;
            }
        }
    }
    RowStats {
        entropy: (row.lse as f64 - row.expected_score) as f32,
        max_weight,
        argmax,
        sink_mass: probs[0],
        prev_mass: if q > 0 { probs[q - 1] } else { 0.0 },
        self_mass: probs[q],
        group_mass: (qgroup >= 0).then_some(group_mass as f32),
    }
}

/// Per-step instrumentation of a generation-step row: mass by key kind and by group, received mass.
fn step_stats(row: &RowView, stats: &mut HeadStats) {
    use crate::slots::SlotKind;
    let q = row.slot;
    let mut out = StepRow {
        slot: q as u32,
        mass_self: row.probs[q],
        ..StepRow::default()
    };
    let mut groups: Vec<StepGroupMass> = Vec::new();
    for (k, &p) in row.probs.iter().enumerate().take(q) {
        if !row.mask.allows(q, k) {
            continue;
        }
        stats.received_decode[k] += p as f64;
        let info = &row.slots[k];
        let (mass, n) = match info.kind {
            SlotKind::Prompt => (&mut out.mass_prompt, &mut out.n_prompt),
            SlotKind::Generated => (&mut out.mass_generated, &mut out.n_generated),
            SlotKind::Parallel => (&mut out.mass_parallel, &mut out.n_parallel),
        };
        *mass += p;
        *n += 1;
        if info.group >= 0 {
            match groups.iter_mut().find(|g| g.group == info.group) {
                Some(g) => {
                    g.mass += p;
                    g.n_slots += 1;
                }
                None => groups.push(StepGroupMass {
                    slot: q as u32,
                    group: info.group,
                    mass: p,
                    n_slots: 1,
                }),
            }
        }
    }
    stats.received_decode[q] += row.probs[q] as f64;
    stats.steps.push(out);
    stats.step_groups.extend(groups);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_rows_are_copied_in_bulk_into_the_square() {
        let spec = CaptureSpec {
            weights: true,
            weights_dtype: WeightsDtype::F16,
            ..CaptureSpec::default()
        };
        let mut rec = HeadRecorder::new(&spec, 4);
        assert_eq!(rec.weights_dtype(), Some(WeightsDtype::F16));
        let rows: Vec<half::f16> = [0.25f32, 0.75, 0.0, 0.5, 0.5, 1.0]
            .iter()
            .map(|&x| half::f16::from_f32(x))
            .collect();
        // Rows of slots 1 and 2, three columns each; an f32 hand-over is ignored by an f16 recorder.
        rec.absorb_weight_rows(1, 3, WeightRows::F16(&rows));
        rec.absorb_weight_rows(0, 3, WeightRows::F32(&[9.0; 3]));
        let (w, _) = rec.finish(3);
        let Some(HeadWeights::F16(w)) = w else {
            panic!("f16 weights")
        };
        let w: Vec<f32> = w.iter().map(|x| x.to_f32()).collect();
        assert_eq!(w, [0.0, 0.0, 0.0, 0.25, 0.75, 0.0, 0.5, 0.5, 1.0]);
    }
}
