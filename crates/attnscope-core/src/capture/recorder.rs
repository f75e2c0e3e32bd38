//! Per-head recorders: exact weight rows and cheap statistics, computed from each probability row once.
//! CPU twin of the statistics epilogue of the CUDA attention kernels.

use crate::capture::stats::{HeadStats, RowStats};
use crate::capture::tile_stats::{self, PendingStep, TileView};
use crate::capture::weights::{WeightBuffer, WeightRows};
use crate::capture::{CaptureSpec, WeightsDtype};
use crate::slots::AttentionMask;
use crate::slots::{N_DISTANCE_BUCKETS, SlotInfo};

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

/// Collects what the capture spec asks for from one head's rows.
pub struct HeadRecorder {
    active: bool,
    capacity: usize,
    stats: Option<HeadStats>,
    /// `[capacity, capacity]` row-major.
    weights: Option<WeightBuffer>,
    /// Per-step tables of the generation-step rows begun last (from query slot `block_q0`), until they
    /// finish.
    pending: Vec<PendingStep>,
    block_q0: usize,
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
        let weights = spec
            .weights
            .then(|| WeightBuffer::zeros(spec.weights_dtype, capacity * capacity));
        HeadRecorder {
            active: true,
            capacity,
            stats,
            weights,
            pending: Vec::new(),
            block_q0: 0,
        }
    }

    /// A recorder for a head that is not selected.
    pub fn inactive() -> HeadRecorder {
        HeadRecorder {
            active: false,
            capacity: 0,
            stats: None,
            weights: None,
            pending: Vec::new(),
            block_q0: 0,
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
        self.weights.as_ref().map(WeightBuffer::dtype)
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
            (Some(WeightBuffer::F32(buf)), WeightRows::F32(r)) => {
                copy(buf, cap, q_start, row_len, r)
            }
            (Some(WeightBuffer::F16(buf)), WeightRows::F16(r)) => {
                copy(buf, cap, q_start, row_len, r)
            }
            _ => {}
        }
    }

    /// Records one whole row (the GPU's read-back rows): a block of one row with one tile.
    pub fn observe(&mut self, row: &RowView) {
        self.begin_rows(row.slot, 1, row.slots);
        self.observe_tile(&TileView {
            q0: row.slot,
            rows: 1,
            k0: 0,
            cols: row.probs.len(),
            probs: row.probs,
            stride: row.probs.len(),
            slots: row.slots,
            mask: row.mask,
            order: tile_stats::KeyOrder::of(&row.slots[..row.probs.len()]),
        });
        self.finish_rows(row.slot, &[row.lse], &[row.expected_score]);
    }

    /// Starts the query rows `q0..q0 + rows`: their tiles follow ([`HeadRecorder::observe_tile`], in
    /// ascending key order), then [`HeadRecorder::finish_rows`].
    pub fn begin_rows(&mut self, q0: usize, rows: usize, slots: &[SlotInfo]) {
        let Some(stats) = &mut self.stats else {
            return;
        };
        for q in q0..q0 + rows {
            stats.rows[q] = tile_stats::empty_row(slots, q);
        }
        self.block_q0 = q0;
        if self.pending.len() < rows {
            self.pending.resize_with(rows, PendingStep::default);
        }
        for (r, p) in self.pending[..rows].iter_mut().enumerate() {
            p.start(q0 + r, slots[q0 + r].step > 0);
        }
    }

    /// Records one tile of the rows begun last (any of their rows, any key range, keys in ascending order
    /// per row): weights into their rows of the square, statistics added.
    pub fn observe_tile(&mut self, tile: &TileView) {
        if let Some(w) = &mut self.weights {
            let cap = self.capacity;
            for r in 0..tile.rows {
                let start = (tile.q0 + r) * cap + tile.k0;
                let src = &tile.probs[r * tile.stride..r * tile.stride + tile.cols];
                match w {
                    WeightBuffer::F32(buf) => buf[start..start + tile.cols].copy_from_slice(src),
                    WeightBuffer::F16(buf) => {
                        for (dst, &p) in buf[start..start + tile.cols].iter_mut().zip(src) {
                            *dst = half::f16::from_f32(p);
                        }
                    }
                }
            }
        }
        if let Some(stats) = &mut self.stats {
            tile_stats::add_tile(tile, stats);
            for r in 0..tile.rows {
                let pending = &mut self.pending[tile.q0 + r - self.block_q0];
                if pending.active {
                    pending.add(tile, r, &mut stats.received_decode);
                }
            }
        }
    }

    /// Finishes the rows begun last with their log-sum-exp and Σ p·s: entropy, and the per-step tables of
    /// generation-step rows.
    pub fn finish_rows(&mut self, q0: usize, lse: &[f32], expected_score: &[f64]) {
        let Some(stats) = &mut self.stats else {
            return;
        };
        for (r, (&lse, &es)) in lse.iter().zip(expected_score).enumerate() {
            let q = q0 + r;
            let row = &mut stats.rows[q];
            row.entropy = (lse as f64 - es) as f32;
            let pending = &mut self.pending[r];
            if pending.active && pending.row.slot as usize == q {
                pending.active = false;
                stats.steps.push(pending.row);
                stats.step_groups.append(&mut pending.groups);
            }
        }
    }

    /// The slots it was made for: its weights are a `[capacity, capacity]` square.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Hands over the buffers: the statistics trimmed to `t` slots, the weights untrimmed, the
    /// `[capacity, capacity]` square whose leading `[t, t]` block holds them
    /// ([`super::SequenceWeights::gather`] copies that block out).
    pub fn finish(self, t: usize) -> (Option<WeightBuffer>, Option<HeadStats>) {
        let stats = self.stats.map(|mut s| {
            s.rows.truncate(t);
            s.received_sum.truncate(t);
            s.received_decode.truncate(t);
            s
        });
        (self.weights, stats)
    }
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
        assert_eq!(rec.capacity(), 4);
        let (w, _) = rec.finish(3);
        let Some(WeightBuffer::F16(w)) = w else {
            panic!("f16 weights")
        };
        // The untrimmed [4, 4] square.
        let w: Vec<f32> = w.iter().map(|x| x.to_f32()).collect();
        #[rustfmt::skip]
        let want = [
            0.0, 0.0, 0.0, 0.0,
            0.25, 0.75, 0.0, 0.0,
            0.5, 0.5, 1.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(w, want);
    }
}
