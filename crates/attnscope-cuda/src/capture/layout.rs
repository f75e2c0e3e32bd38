//! The packed statistics buffer of one captured chunk, in 32-bit words (f64 regions start on an even
//! word): lse, entropy, max weight, argmax of the first pass `[n_heads, n_new]` each (copied on the
//! device), then sink, prev, self, group mass `[n_sel, n_new]` f32, then received `[n_sel, n_keys]` f64
//! and distance `[n_sel, 65]` f64. One device→pinned copy reads it back.

use attnscope_core::capture::RowStats;
use attnscope_core::slots::{N_DISTANCE_BUCKETS, SlotInfo};

/// Word offsets of the regions of one packed statistics buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedLayout {
    pub n_heads: usize,
    pub n_sel: usize,
    pub n_new: usize,
    pub n_keys: usize,
    /// First-pass lse, entropy, max weight, argmax.
    pub first: [usize; 4],
    /// Sink, prev, self, group mass.
    pub masses: [usize; 4],
    pub received: usize,
    pub distance: usize,
    /// Words of the whole buffer.
    pub words: usize,
    /// Words up to the end of the first-pass regions (all the rows route reads).
    pub first_words: usize,
}

impl PackedLayout {
    pub fn new(n_heads: usize, n_sel: usize, n_new: usize, n_keys: usize) -> PackedLayout {
        let per_head = n_heads * n_new;
        let first = [0, per_head, 2 * per_head, 3 * per_head];
        let m0 = 4 * per_head;
        let per_sel = n_sel * n_new;
        let masses = [m0, m0 + per_sel, m0 + 2 * per_sel, m0 + 3 * per_sel];
        let received = (m0 + 4 * per_sel).next_multiple_of(2);
        let distance = received + 2 * n_sel * n_keys;
        PackedLayout {
            n_heads,
            n_sel,
            n_new,
            n_keys,
            first,
            masses,
            received,
            distance,
            words: distance + 2 * n_sel * N_DISTANCE_BUCKETS,
            first_words: m0,
        }
    }

    /// Unpacks selected head `si` (query head `h`): the row statistics of query slots `q_start..q_start +
    /// n_new` into `rows` (group mass only where the slot has a group, as the CPU), the weight each key
    /// received into `received` (both cleared first, capacity reused), and returns the distance buckets.
    #[allow(clippy::too_many_arguments)]
    pub fn unpack_head(
        &self,
        words: &[u32],
        si: usize,
        h: usize,
        q_start: usize,
        slots: &[SlotInfo],
        rows: &mut Vec<RowStats>,
        received: &mut Vec<f64>,
    ) -> [f64; N_DISTANCE_BUCKETS] {
        let (n_new, n_keys) = (self.n_new, self.n_keys);
        let f = PackedLayout::f32_at;
        rows.clear();
        rows.extend((0..n_new).map(|i| {
            let (fi, ri) = (h * n_new + i, si * n_new + i);
            RowStats {
                entropy: f(words, self.first[1], fi),
                max_weight: f(words, self.first[2], fi),
                argmax: words[self.first[3] + fi],
                sink_mass: f(words, self.masses[0], ri),
                prev_mass: f(words, self.masses[1], ri),
                self_mass: f(words, self.masses[2], ri),
                group_mass: (slots[q_start + i].group >= 0).then(|| f(words, self.masses[3], ri)),
            }
        }));
        received.clear();
        let recv0 = self.received + 2 * si * n_keys;
        received.extend((0..n_keys).map(|k| PackedLayout::f64_at(words, recv0, k)));
        let mut dist = [0.0f64; N_DISTANCE_BUCKETS];
        let d0 = self.distance + 2 * si * N_DISTANCE_BUCKETS;
        for (b, d) in dist.iter_mut().enumerate() {
            *d = PackedLayout::f64_at(words, d0, b);
        }
        dist
    }

    /// f32 word `i` of region `at`.
    pub fn f32_at(words: &[u32], at: usize, i: usize) -> f32 {
        f32::from_bits(words[at + i])
    }

    /// f64 element `i` of the region starting at word `at` (little endian: low word first).
    pub fn f64_at(words: &[u32], at: usize, i: usize) -> f64 {
        let (lo, hi) = (words[at + 2 * i] as u64, words[at + 2 * i + 1] as u64);
        f64::from_bits(lo | (hi << 32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_regions_follow_each_other_and_f64_are_aligned() {
        let l = PackedLayout::new(4, 3, 5, 7);
        assert_eq!(l.first, [0, 20, 40, 60]);
        assert_eq!(l.masses, [80, 95, 110, 125]);
        assert_eq!(l.first_words, 80);
        assert_eq!(l.received, 140);
        assert_eq!(l.received % 2, 0);
        assert_eq!(l.distance, 140 + 2 * 3 * 7);
        assert_eq!(l.words, l.distance + 2 * 3 * 65);
        let x = 0.1f64.to_bits();
        let words = [1.5f32.to_bits(), x as u32, (x >> 32) as u32];
        assert_eq!(PackedLayout::f32_at(&words, 0, 0), 1.5);
        assert_eq!(PackedLayout::f64_at(&words, 1, 0), 0.1);
    }

    #[test]
    fn a_head_unpacks_from_its_regions() {
        // 2 heads, 2 selected (query heads 1 then 0), 3 rows at slots 2..5 of 5 keys.
        let l = PackedLayout::new(2, 2, 3, 5);
        let mut words = vec![0u32; l.words];
        let put = |w: &mut Vec<u32>, at: usize, x: f32| w[at] = x.to_bits();
        let put64 = |w: &mut Vec<u32>, at: usize, i: usize, x: f64| {
            let b = x.to_bits();
            w[at + 2 * i] = b as u32;
            w[at + 2 * i + 1] = (b >> 32) as u32;
        };
        // Selected index 1 is query head 0: first-pass row 2 of head 0 is word 2 of each region.
        put(&mut words, l.first[1] + 2, 0.7);
        put(&mut words, l.first[2] + 2, 0.4);
        words[l.first[3] + 2] = 3;
        put(&mut words, l.masses[0] + 3 + 2, 0.1);
        put(&mut words, l.masses[1] + 3 + 2, 0.2);
        put(&mut words, l.masses[2] + 3 + 2, 0.3);
        put(&mut words, l.masses[3] + 3 + 2, 0.05);
        put64(&mut words, l.received + 2 * 5, 4, 1.25);
        put64(&mut words, l.distance + 2 * 65, 3, 2.5);
        let slots: Vec<SlotInfo> = (0..5)
            .map(|i| SlotInfo::prompt(0, i as i64, if i == 4 { 7 } else { -1 }))
            .collect();
        let (mut rows, mut recv) = (Vec::new(), Vec::new());
        let dist = l.unpack_head(&words, 1, 0, 2, &slots, &mut rows, &mut recv);
        assert_eq!(rows.len(), 3);
        let r = rows[2];
        assert_eq!((r.entropy, r.max_weight, r.argmax), (0.7, 0.4, 3));
        assert_eq!((r.sink_mass, r.prev_mass, r.self_mass), (0.1, 0.2, 0.3));
        assert_eq!(r.group_mass, Some(0.05));
        assert_eq!(rows[0].group_mass, None, "slot 2 has no group");
        assert_eq!(recv, [0.0, 0.0, 0.0, 0.0, 1.25]);
        assert_eq!(dist[3], 2.5);
        assert_eq!(dist.iter().sum::<f64>(), 2.5);
    }
}
