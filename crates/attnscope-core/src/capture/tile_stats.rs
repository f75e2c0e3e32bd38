//! The statistics of probability rows, fed one tile (a block of query rows × a range of key slots) at a
//! time, as the tiled attention computes them. Every statistic is a sum or a maximum over keys, so the tiles
//! of a row can come in any number; [`HeadRecorder`](super::HeadRecorder) starts a block of rows, takes its
//! tiles in ascending key order and then finishes the rows (entropy, per-step tables).

use crate::capture::stats::{HeadStats, RowStats, StepGroupMass, StepRow};
use crate::lanes::max_f32;
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
    /// Whether the key positions never decrease along the tile ([`positions_sorted`]): each distance
    /// bucket is then one run of keys.
    pub sorted: bool,
}

/// Whether the positions of `keys` never decrease (a prompt, parallel sets sharing a position); explicit
/// positions may step back.
pub fn positions_sorted(keys: &[SlotInfo]) -> bool {
    keys.windows(2).all(|w| w[0].position <= w[1].position)
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
                add_row(tile.slots, q, tile.k0, probs, &mut stats.rows[q]);
                let received = &mut stats.received_sum[tile.k0..tile.k0 + probs.len()];
                for (acc, &p) in received.iter_mut().zip(probs) {
                    *acc += p as f64;
                }
                let q_pos = tile.slots[q].position;
                if tile.sorted {
                    add_distance_runs(q_pos, keys, probs, &mut stats.distance_mass);
                } else {
                    add_distance(q_pos, keys, probs, &mut stats.distance_mass);
                }
            }
        }
    }
    Arch::new().dispatch(Op { tile, stats })
}

/// Σ x in f64, eight independent lanes.
#[inline(always)]
fn sum_f64(x: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l] as f64;
        }
    }
    acc.iter().sum::<f64>() + tail.iter().map(|&v| v as f64).sum::<f64>()
}

/// One row's share of a tile: largest weight (lowest slot on ties: tiles come in ascending key order),
/// sink / previous / self weight when their key is in the tile, and the mass on the query's group.
#[inline(always)]
fn add_row(slots: &[SlotInfo], q: usize, k0: usize, probs: &[f32], row: &mut RowStats) {
    let max = max_f32(probs);
    if max > row.max_weight {
        row.max_weight = max;
        let at = probs.iter().position(|&p| p == max).unwrap_or(0);
        row.argmax = (k0 + at) as u32;
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
        distance[b] += sum_f64(&probs[c..c + len]);
        c += len;
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
