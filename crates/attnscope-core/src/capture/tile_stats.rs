//! The statistics of probability rows, fed one tile (a block of query rows × a range of key slots) at a
//! time, as the tiled attention computes them. Every statistic is a sum or a maximum over keys, so the tiles
//! of a row can come in any number; [`HeadRecorder`](super::HeadRecorder) starts a block of rows, takes its
//! tiles in ascending key order and then finishes the rows (entropy, per-step tables).

use crate::capture::stats::{HeadStats, RowStats, StepGroupMass, StepRow};
use crate::lanes::{first_index_of, max_f32, sum_blocked};
use crate::slots::{AttentionMask, SlotInfo, SlotKind, distance_bucket};
use pulp::{Arch, Simd, WithSimd};

/// Probabilities of query slots `q0..q0 + rows` over key slots `k0..k0 + cols`: element (r, c) is
/// `probs[r * stride + c]`, 0 where the mask hides the key (and for keys after the query slot).
pub struct TileView<'a> {
    pub q0: usize,
    pub rows: usize,
    pub k0: usize,
    pub cols: usize,
    pub probs: &'a [f32],
    pub stride: usize,
    /// Metadata of all filled slots.
    pub slots: &'a [SlotInfo],
    pub mask: &'a AttentionMask<'a>,
    /// How the key positions run along the tile ([`KeyOrder::of`]): how distance buckets are found.
    pub order: KeyOrder,
}

/// How the positions of a tile's keys run, which decides how their distance buckets are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOrder {
    /// Positions step back somewhere (explicit positions): each key's bucket is looked up.
    Unsorted,
    /// Positions never decrease (parallel sets share one): the distance to a query only shrinks along
    /// the tile, so each bucket is one run of keys, found by binary search.
    Sorted,
    /// Positions rise by exactly one per key (a prompt, generated tokens): each run's end is computed.
    Contiguous,
}

impl KeyOrder {
    /// The order of `keys`' positions.
    pub fn of(keys: &[SlotInfo]) -> KeyOrder {
        if keys.windows(2).all(|w| w[1].position == w[0].position + 1) {
            KeyOrder::Contiguous
        } else if keys.windows(2).all(|w| w[0].position <= w[1].position) {
            KeyOrder::Sorted
        } else {
            KeyOrder::Unsorted
        }
    }
}

impl TileView<'_> {
    /// Row `r` of the tile, cut at the query slot (keys after it are never visible).
    pub fn row(&self, r: usize) -> &[f32] {
        let q = self.q0 + r;
        let cols = self.cols.min((q + 1).saturating_sub(self.k0));
        &self.probs[r * self.stride..r * self.stride + cols]
    }
}

/// A row statistic before its first tile: nothing seen yet.
pub fn empty_row(slots: &[SlotInfo], q: usize) -> RowStats {
    RowStats {
        max_weight: f32::NEG_INFINITY,
        group_mass: (slots[q].group >= 0).then_some(0.0),
        ..RowStats::default()
    }
}

/// Adds one tile to the row statistics (`stats.rows`), the received weight and the distance mass; the
/// element loops compiled for the CPU's widest vectors (`pulp`'s run-time dispatch).
pub fn add_tile(tile: &TileView, stats: &mut HeadStats) {
    struct Op<'a, 'b> {
        tile: &'a TileView<'b>,
        stats: &'a mut HeadStats,
    }
    impl WithSimd for Op<'_, '_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, _simd: S) {
            let Op { tile, stats } = self;
            let keys = &tile.slots[tile.k0..tile.k0 + tile.cols];
            for r in 0..tile.rows {
                let q = tile.q0 + r;
                let probs = tile.row(r);
                if probs.is_empty() {
                    continue;
                }
                let keys = &keys[..probs.len()];
                let received = &mut stats.received_sum[tile.k0..tile.k0 + probs.len()];
                for (acc, &p) in received.iter_mut().zip(probs) {
                    *acc += p as f64;
                }
                let q_pos = tile.slots[q].position;
                let distance = &mut stats.distance_mass;
                match tile.order {
                    KeyOrder::Contiguous => add_distance_contiguous(q_pos, keys, probs, distance),
                    KeyOrder::Sorted => add_distance_runs(q_pos, keys, probs, distance),
                    KeyOrder::Unsorted => add_distance(q_pos, keys, probs, distance),
                }
                let max = max_f32(probs);
                add_row(tile.slots, q, tile.k0, probs, max, &mut stats.rows[q]);
            }
        }
    }
    Arch::new().dispatch(Op { tile, stats })
}

/// One row's share of a tile, whose largest weight is `max`: largest weight (lowest slot on ties: tiles
/// come in ascending key order), sink / previous / self weight when their key is in the tile, and the mass
/// on the query's group.
#[inline(always)]
fn add_row(slots: &[SlotInfo], q: usize, k0: usize, probs: &[f32], max: f32, row: &mut RowStats) {
    if max > row.max_weight {
        row.max_weight = max;
        row.argmax = (k0 + first_index_of(probs, max)) as u32;
    }
    let at_key = |k: usize| k.checked_sub(k0).and_then(|c| probs.get(c)).copied();
    if let Some(p) = at_key(0) {
        row.sink_mass = p;
    }
    if let Some(p) = q.checked_sub(1).and_then(at_key) {
        row.prev_mass = p;
    }
    if let Some(p) = at_key(q) {
        row.self_mass = p;
    }
    let g = slots[q].group;
    if let (true, Some(mass)) = (g >= 0, row.group_mass.as_mut()) {
        let keys = &slots[k0..k0 + probs.len()];
        let mut sum = 0.0f64;
        for (c, (info, &p)) in keys.iter().zip(probs).enumerate() {
            if info.group == g && k0 + c != q {
                sum += p as f64;
            }
        }
        *mass += sum as f32;
    }
}

/// [`add_distance`] for keys whose positions do not decrease: the distance to the query then only shrinks
/// along the tile, so each bucket is one run of keys, found by binary search and summed in SIMD.
#[inline(always)]
fn add_distance_runs(q_pos: i64, keys: &[SlotInfo], probs: &[f32], distance: &mut [f64]) {
    let mut c = 0;
    while c < probs.len() {
        let b = distance_bucket(q_pos - keys[c].position);
        let len = keys[c..].partition_point(|k| distance_bucket(q_pos - k.position) == b);
        distance[b] += sum_blocked(&probs[c..c + len]);
        c += len;
    }
}

/// [`add_distance_runs`] for keys at consecutive positions: the run of a bucket ends where the distance
/// falls below the bucket's smallest, an index computed, not searched.
#[inline(always)]
fn add_distance_contiguous(q_pos: i64, keys: &[SlotInfo], probs: &[f32], distance: &mut [f64]) {
    let Some(first) = keys.first() else {
        return;
    };
    // Key c sits at distance d0 − c.
    let d0 = q_pos - first.position;
    let n = probs.len();
    let mut c = 0;
    while c < n {
        let d = d0 - c as i64;
        let b = distance_bucket(d);
        let end = match bucket_low(b) {
            // The last key of the run is at distance `low`, index d0 − low.
            Some(low) => ((d0 - low + 1).max(c as i64 + 1) as usize).min(n),
            None => n,
        };
        distance[b] += sum_blocked(&probs[c..end]);
        c = end;
    }
}

/// The smallest distance of bucket `b` ([`distance_bucket`]'s inverse); `None` for the negative bucket.
#[inline(always)]
fn bucket_low(b: usize) -> Option<i64> {
    match b {
        0 => None,
        1 => Some(0),
        b => Some(1i64 << (b - 2)),
    }
}

/// Adds each key's weight to the bucket of its position distance. Consecutive keys usually share a bucket,
/// so runs are summed locally and flushed when the bucket changes.
#[inline(always)]
fn add_distance(q_pos: i64, keys: &[SlotInfo], probs: &[f32], distance: &mut [f64]) {
    let mut bucket = usize::MAX;
    let mut run = 0.0f64;
    for (info, &p) in keys.iter().zip(probs) {
        let b = distance_bucket(q_pos - info.position);
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
}

/// The per-step tables of one generation-step query row (step > 0) while its tiles come in.
#[derive(Debug, Default)]
pub struct PendingStep {
    /// Whether the row is a generation-step row being recorded.
    pub active: bool,
    pub row: StepRow,
    /// Mass per key group, in order of the group's first visible key.
    pub groups: Vec<StepGroupMass>,
}

impl PendingStep {
    /// Starts the row of query slot `q` (`active`: a generation-step row).
    pub fn start(&mut self, q: usize, active: bool) {
        self.active = active;
        self.row = StepRow {
            slot: q as u32,
            ..StepRow::default()
        };
        self.groups.clear();
    }

    /// Adds row `r` of a tile: mass by key kind and group over the visible keys before the query slot, and
    /// the weight every visible key (the query's own included) receives from generation steps.
    pub fn add(&mut self, tile: &TileView, r: usize, received_decode: &mut [f64]) {
        let q = tile.q0 + r;
        let probs = tile.row(r);
        for (c, &p) in probs.iter().enumerate() {
            let k = tile.k0 + c;
            if k == q {
                self.row.mass_self = p;
                received_decode[q] += p as f64;
                continue;
            }
            if !tile.mask.allows(q, k) {
                continue;
            }
            received_decode[k] += p as f64;
            let info = &tile.slots[k];
            let (mass, n) = match info.kind {
                SlotKind::Prompt => (&mut self.row.mass_prompt, &mut self.row.n_prompt),
                SlotKind::Generated => (&mut self.row.mass_generated, &mut self.row.n_generated),
                SlotKind::Parallel => (&mut self.row.mass_parallel, &mut self.row.n_parallel),
            };
            *mass += p;
            *n += 1;
            if info.group >= 0 {
                match self.groups.iter_mut().find(|g| g.group == info.group) {
                    Some(g) => {
                        g.mass += p;
                        g.n_slots += 1;
                    }
                    None => self.groups.push(StepGroupMass {
                        slot: q as u32,
                        group: info.group,
                        mass: p,
                        n_slots: 1,
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Rng, uniform_values};
    use crate::slots::N_DISTANCE_BUCKETS;

    fn keys(positions: &[i64]) -> Vec<SlotInfo> {
        positions
            .iter()
            .map(|&p| SlotInfo::prompt(0, p, -1))
            .collect()
    }

    /// The computed runs (contiguous positions) and the searched ones (sorted) give the per-key lookup's
    /// distance mass, for queries before, inside and after the keys and tiles of every length.
    #[test]
    fn distance_runs_equal_the_per_key_buckets() {
        let mut rng = Rng::new(11);
        for len in [0usize, 1, 2, 3, 15, 16, 17, 100, 129, 513] {
            let probs = uniform_values(len, len as u64);
            let start = rng.below(50) as i64;
            let contiguous = keys(&(start..start + len as i64).collect::<Vec<_>>());
            assert!(len < 2 || KeyOrder::of(&contiguous) == KeyOrder::Contiguous);
            let mut pos = start;
            let sorted: Vec<i64> = (0..len)
                .map(|_| {
                    pos += rng.below(3) as i64;
                    pos
                })
                .collect();
            let sorted = keys(&sorted);
            for q_pos in [
                start - 3,
                start,
                start + len as i64 / 2,
                start + len as i64 + 700,
            ] {
                for (name, k) in [("contiguous", &contiguous), ("sorted", &sorted)] {
                    let mut want = vec![0.0f64; N_DISTANCE_BUCKETS];
                    add_distance(q_pos, k, &probs, &mut want);
                    let mut got = vec![0.0f64; N_DISTANCE_BUCKETS];
                    if name == "contiguous" {
                        add_distance_contiguous(q_pos, k, &probs, &mut got);
                    } else {
                        add_distance_runs(q_pos, k, &probs, &mut got);
                    }
                    for (b, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                            "{name} len {len} q {q_pos} bucket {b}: {g} vs {w}"
                        );
                    }
                }
            }
        }
        assert_eq!(KeyOrder::of(&keys(&[3, 3, 5])), KeyOrder::Sorted);
        assert_eq!(KeyOrder::of(&keys(&[3, 2])), KeyOrder::Unsorted);
    }
}
