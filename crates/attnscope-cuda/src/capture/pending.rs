//! The captured chunks of one forward pass waiting for its synchronisation: each chunk (one layer of one
//! sequence, or a part of its heads when the weights are chunked) has its own pinned [`HostSet`], which no
//! later chunk of the pass overwrites, so every read-back of the pass can be in flight at once and the
//! recorders are filled after the pass's one synchronisation (`Backend::finish_capture`).
//!
//! Slot `i` serves the `i`-th chunk of every pass and keeps its pinned memory across passes (grown only
//! when a larger chunk comes), so a warm decode step allocates nothing. What a pass defers is bounded by
//! [`PENDING_BUDGET_BYTES`] ([`PendingCapture::defers`]); a chunk beyond it is recorded at once, with its
//! own synchronisation.

use crate::capture::layout::PackedLayout;
use crate::capture::pinned::HostSet;
use attnscope_core::capture::WeightsDtype;

/// Most bytes of read-back one pass keeps pending in pinned memory (requested bytes: the slots hold at
/// most 1.25 × that, `pinned::grown_len`). A decode step with weights or stats of every layer at a typical
/// shape (16 layers × 32 heads × 8 rows × 4096 keys × 4 B = 64 MiB) fits.
pub const PENDING_BUDGET_BYTES: usize = 256 << 20;

/// Whether a chunk of `entry` bytes joins a pass that already has `pending` bytes pending under `budget`.
/// The first chunk of a pass is deferred whenever it fits the budget alone.
pub fn fits_pending(pending: usize, entry: usize, budget: usize) -> bool {
    pending
        .checked_add(entry)
        .is_some_and(|total| total <= budget)
}

/// How a chunk was captured, and so how it is handed to its recorders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Prompt rows: statistics reduced on the device (when `stats`), weights in `weights`' dtype.
    Device {
        weights: Option<WeightsDtype>,
        stats: bool,
    },
    /// Generation-step rows: f32 probability rows and the first pass's lse / entropy, `observe`d per row.
    Rows,
}

/// What one captured chunk needs at finish time besides its read-back.
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkMeta {
    /// The sequence (its index in the pass's batch) and the layer.
    pub item: usize,
    pub layer: usize,
    pub route: Route,
    /// The packed buffer's layout; its `n_new`, `n_keys` are the chunk's rows and keys.
    pub layout: PackedLayout,
    /// Cache slot of the first row.
    pub q_start: usize,
    /// The chunk's query heads (capacity reused across passes).
    pub heads: Vec<usize>,
}

impl Default for ChunkMeta {
    fn default() -> Self {
        ChunkMeta {
            item: 0,
            layer: 0,
            route: Route::Rows,
            layout: PackedLayout::new(0, 0, 0, 0),
            q_start: 0,
            heads: Vec::new(),
        }
    }
}

impl ChunkMeta {
    /// Words of the packed buffer that come back: all of it with device statistics, the first pass's
    /// regions on the rows route, none for weights alone.
    pub fn packed_words(&self) -> usize {
        match self.route {
            Route::Device { stats: true, .. } => self.layout.words,
            Route::Device { stats: false, .. } => 0,
            Route::Rows => self.layout.first_words,
        }
    }

    /// Elements of weight / probability rows that come back, `[heads, n_new, n_keys]`.
    pub fn row_elems(&self) -> usize {
        let rows = self.heads.len() * self.layout.n_new * self.layout.n_keys;
        match self.route {
            Route::Device { weights: None, .. } => 0,
            _ => rows,
        }
    }

    /// Bytes of pinned memory its read-back takes.
    pub fn host_bytes(&self) -> usize {
        let elem = match self.route {
            Route::Device {
                weights: Some(WeightsDtype::F16),
                ..
            } => 2,
            _ => 4,
        };
        4 * self.packed_words() + elem * self.row_elems()
    }
}

/// One chunk's metadata and pinned read-back.
#[derive(Default)]
pub struct PendingSlot {
    pub meta: ChunkMeta,
    pub host: HostSet,
}

/// The chunks a pass has queued, in order.
#[derive(Default)]
pub struct PendingCapture {
    slots: Vec<PendingSlot>,
    /// Slots in use this pass.
    used: usize,
    /// Requested bytes of the used slots.
    bytes: usize,
    /// Whether copies were queued since the last synchronisation.
    pub unsynced: bool,
}

impl PendingCapture {
    /// Whether a chunk of `bytes` is deferred to the end of the pass (else it is recorded at once).
    pub fn defers(&self, bytes: usize) -> bool {
        fits_pending(self.bytes, bytes, PENDING_BUDGET_BYTES)
    }

    /// The next free slot (a new one only while the first passes warm up).
    pub fn next_slot(&mut self) -> &mut PendingSlot {
        if self.slots.len() == self.used {
            self.slots.push(PendingSlot::default());
        }
        &mut self.slots[self.used]
    }

    /// Marks the slot [`PendingCapture::next_slot`] gave as pending, with `bytes` of read-back.
    pub fn commit(&mut self, bytes: usize) {
        self.used += 1;
        self.bytes += bytes;
    }

    /// The pending slots, in the order they were queued.
    pub fn pending(&self) -> &[PendingSlot] {
        &self.slots[..self.used]
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Forgets the pending chunks (their slots and pinned memory stay for the next pass).
    pub fn clear(&mut self) {
        self.used = 0;
        self.bytes = 0;
    }

    /// Requested bytes pending.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes of pinned memory all slots hold.
    pub fn held_bytes(&self) -> usize {
        self.slots.iter().map(|s| s.host.bytes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_chunk(heads: usize, n_new: usize, n_keys: usize) -> ChunkMeta {
        ChunkMeta {
            layout: PackedLayout::new(heads, 0, n_new, n_keys),
            heads: (0..heads).collect(),
            ..ChunkMeta::default()
        }
    }

    #[test]
    fn the_budget_decides_what_is_deferred() {
        assert!(fits_pending(0, 10, 10));
        assert!(!fits_pending(1, 10, 10));
        assert!(!fits_pending(usize::MAX, 1, usize::MAX));
        assert!(
            !fits_pending(0, 11, 10),
            "a chunk larger than the budget is recorded at once"
        );
    }

    #[test]
    fn a_typical_decode_step_defers_every_layer() {
        // 16 layers × 32 heads × 8 rows × 4096 keys of f32 probability rows (+ the first pass's words).
        let chunk = rows_chunk(32, 8, 4096);
        assert_eq!(chunk.row_elems(), 32 * 8 * 4096);
        assert_eq!(chunk.packed_words(), 4 * 32 * 8);
        let mut p = PendingCapture::default();
        for _ in 0..16 {
            assert!(p.defers(chunk.host_bytes()));
            p.next_slot();
            p.commit(chunk.host_bytes());
        }
        assert_eq!(p.pending().len(), 16);
        assert!(p.bytes() <= 65 << 20);
        p.clear();
        assert!(p.is_empty());
        assert_eq!(p.bytes(), 0);
    }

    #[test]
    fn a_pass_over_the_budget_records_the_rest_at_once() {
        // A long prompt with f32 weights: 32 heads × 2048 × 2048 × 4 B = 512 MiB a layer, chunked by
        // ROWS_BUDGET_BYTES into 256 MiB: the first chunk is deferred, the next ones are not.
        let chunk = ChunkMeta {
            route: Route::Device {
                weights: Some(WeightsDtype::F32),
                stats: false,
            },
            layout: PackedLayout::new(32, 16, 2048, 2048),
            heads: (0..16).collect(),
            ..ChunkMeta::default()
        };
        assert_eq!(chunk.host_bytes(), 256 << 20);
        let mut p = PendingCapture::default();
        assert!(p.defers(chunk.host_bytes()));
        p.next_slot();
        p.commit(chunk.host_bytes());
        assert!(!p.defers(chunk.host_bytes()));
        assert!(p.defers(0));
    }

    #[test]
    fn chunk_sizes_follow_the_route() {
        let mut c = rows_chunk(2, 3, 5);
        c.route = Route::Device {
            weights: None,
            stats: true,
        };
        assert_eq!((c.packed_words(), c.row_elems()), (c.layout.words, 0));
        c.route = Route::Device {
            weights: Some(WeightsDtype::F16),
            stats: false,
        };
        assert_eq!((c.packed_words(), c.row_elems()), (0, 30));
        assert_eq!(c.host_bytes(), 60);
    }
}
