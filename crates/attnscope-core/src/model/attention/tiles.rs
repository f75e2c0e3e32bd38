//! Visibility per tile: which blocks of query rows × key slots the tiled attention can skip, take whole, or
//! must mask element by element. The rule is [`AttentionMask::allows`]; here it is decided once per tile
//! from ranges, and a partial tile is masked by ranges per row (causal edge, window edge) with a per-element
//! test only where an isolated group can hide keys.

use crate::slots::{AttentionMask, Visibility};
use std::ops::Range;

/// Block sizes of the tiled attention: query rows per block, key slots per tile.
#[derive(Clone, Copy, Debug)]
pub struct TileSizes {
    pub q: usize,
    pub k: usize,
}

/// Query rows per block and key slots per tile of the engine: a 128 × 512 f32 score tile is 256 KiB, in L2
/// beside the packed key and value tiles. On the 2-core Xeon of BENCHMARKS.md, `bench-attention` at
/// T = 2048 (12/4 heads, head_dim 64) took 117 ms with these sizes, 132–135 ms with 64 × 256 or 64 × 512,
/// 148 ms with 64 × 128 and 173 ms with 32 × 256.
pub const TILE_SIZES: TileSizes = TileSizes { q: 128, k: 512 };

/// How a tile of query slots × key slots is seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileVisibility {
    /// No query sees any key: skipped.
    Hidden,
    /// Every query sees every key: no test at all.
    Full,
    /// Some pairs are hidden: masked per row by ranges, and per element when `groups` (an isolated group
    /// may hide keys of the tile from a query of the block).
    Partial { groups: bool },
}

/// The first key slot query slot `q` can see (the sliding window's start).
pub fn first_visible_key(mask: &AttentionMask, q: usize) -> usize {
    mask.sliding_window.map_or(0, |w| (q + 1).saturating_sub(w))
}

/// Classifies the tile of query slots `qs` × key slots `ks` (both non-empty).
pub fn classify(mask: &AttentionMask, qs: Range<usize>, ks: Range<usize>) -> TileVisibility {
    let (q_first, q_last) = (qs.start, qs.end - 1);
    let (k_first, k_last) = (ks.start, ks.end - 1);
    if k_first > q_last || k_last < first_visible_key(mask, q_first) {
        return TileVisibility::Hidden;
    }
    let causal_full = k_last <= q_first;
    let window_full = k_first >= first_visible_key(mask, q_last);
    let groups = mask.visibility == Visibility::Isolated && groups_meet(mask, qs, ks);
    if causal_full && window_full && !groups {
        TileVisibility::Full
    } else {
        TileVisibility::Partial { groups }
    }
}

/// Whether some query slot's group (≥ 0) could also be the group of a key slot of the tile: the ranges of
/// group ids on both sides overlap.
fn groups_meet(mask: &AttentionMask, qs: Range<usize>, ks: Range<usize>) -> bool {
    let span = |r: Range<usize>| {
        mask.slots[r]
            .iter()
            .filter(|s| s.group >= 0)
            .fold(None, |acc: Option<(i32, i32)>, s| match acc {
                None => Some((s.group, s.group)),
                Some((lo, hi)) => Some((lo.min(s.group), hi.max(s.group))),
            })
    };
    match (span(qs), span(ks)) {
        (Some((q_lo, q_hi)), Some((k_lo, k_hi))) => q_lo <= k_hi && k_lo <= q_hi,
        _ => false,
    }
}

/// Sets the hidden scores of a partial tile to −∞: `s` holds `qs.len()` rows `stride` apart, each with the
/// scores of key slots `ks`.
pub fn mask_tile(
    mask: &AttentionMask,
    s: &mut [f32],
    stride: usize,
    qs: Range<usize>,
    ks: Range<usize>,
    groups: bool,
) {
    let n = ks.len();
    for (r, q) in qs.enumerate() {
        let row = &mut s[r * stride..r * stride + n];
        // Visible keys of q by the causal and window rules: lo..hi, as columns of the tile.
        let lo = first_visible_key(mask, q).clamp(ks.start, ks.end) - ks.start;
        let hi = (q + 1).clamp(ks.start, ks.end) - ks.start;
        let hi = hi.max(lo);
        row[..lo].fill(f32::NEG_INFINITY);
        row[hi..].fill(f32::NEG_INFINITY);
        let g = mask.slots[q].group;
        if groups && g >= 0 {
            for (c, v) in row[lo..hi].iter_mut().enumerate() {
                let k = ks.start + lo + c;
                if k != q && mask.slots[k].group == g {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::SlotInfo;

    /// Slots whose groups come in runs (some ungrouped), as parallel sets do.
    fn slots(t: usize) -> Vec<SlotInfo> {
        (0..t)
            .map(|i| {
                let group = if i % 11 < 4 { -1 } else { (i / 5) as i32 % 4 };
                SlotInfo::prompt(0, i as i64, group)
            })
            .collect()
    }

    /// Every tile's classification and masking agree with `allows` on every pair, for tile shapes that
    /// cut the diagonal, the window edge and the groups in every way.
    #[test]
    fn tiles_agree_with_the_mask_rule_on_every_pair() {
        let t = 61;
        let slots = slots(t);
        for visibility in [Visibility::Visible, Visibility::Isolated] {
            for window in [None, Some(1), Some(7), Some(20), Some(100)] {
                let mask = AttentionMask {
                    slots: &slots,
                    visibility,
                    sliding_window: window,
                };
                for (bq, bk) in [(1, 1), (3, 5), (8, 8), (16, 7), (64, 64)] {
                    for q0 in (0..t).step_by(bq) {
                        let qs = q0..(q0 + bq).min(t);
                        for k0 in (0..t).step_by(bk) {
                            let ks = k0..(k0 + bk).min(t);
                            check_tile(&mask, qs.clone(), ks);
                        }
                    }
                }
            }
        }
    }

    fn check_tile(mask: &AttentionMask, qs: Range<usize>, ks: Range<usize>) {
        let vis = classify(mask, qs.clone(), ks.clone());
        let stride = ks.len();
        let mut s = vec![1.0f32; qs.len() * stride];
        if let TileVisibility::Partial { groups } = vis {
            mask_tile(mask, &mut s, stride, qs.clone(), ks.clone(), groups);
        }
        for (r, q) in qs.clone().enumerate() {
            for (c, k) in ks.clone().enumerate() {
                let allowed = mask.allows(q, k);
                let seen = match vis {
                    TileVisibility::Hidden => false,
                    TileVisibility::Full => true,
                    TileVisibility::Partial { .. } => s[r * stride + c] == 1.0,
                };
                assert_eq!(seen, allowed, "q {q} k {k} tile {qs:?}×{ks:?}: {vis:?}");
            }
        }
    }
}
