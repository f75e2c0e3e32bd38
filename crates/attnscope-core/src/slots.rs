//! Slot metadata and visibility: the leaf module both backends share, and the Rust twin of
//! `kernels/common.cuh` (`slot_visible`, `distance_bucket`).
//!
//! Slots are physical (the order tokens entered the KV cache); positions are logical (what RoPE or the
//! learned position table sees), so parallel tokens can share one position. Visibility is a rule over slot
//! metadata ([`AttentionMask::allows`]), never a materialised T×T mask.

use serde::{Deserialize, Serialize};

/// How the tokens of a sequence may attend to each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Ordinary causal attention (the default).
    Visible,
    /// Tokens of different groups do not see each other.
    Isolated,
}

/// Why a slot is in the sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotKind {
    /// Given by the user (prompt text or `--input` token ids).
    Prompt,
    /// Produced by generation, one token per step.
    Generated,
    /// Produced by generation as a member of a parallel set sharing one position.
    Parallel,
}

impl SlotKind {
    /// Name used in output tables.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotKind::Prompt => "prompt",
            SlotKind::Generated => "generated",
            SlotKind::Parallel => "parallel",
        }
    }
}

/// Metadata of one cache slot.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SlotInfo {
    pub token: u32,
    /// Logical position (RoPE / learned position index).
    pub position: i64,
    /// Group id, −1 for none. Slots of one parallel set share a group.
    pub group: i32,
    /// 0 for the prompt, k for the k-th generation step.
    pub step: u32,
    pub kind: SlotKind,
    /// Whether the slot's keys/values were altered by an ablation.
    pub ablated: bool,
}

impl SlotInfo {
    /// A prompt slot.
    pub fn prompt(token: u32, position: i64, group: i32) -> SlotInfo {
        SlotInfo {
            token,
            position,
            group,
            step: 0,
            kind: SlotKind::Prompt,
            ablated: false,
        }
    }
}

/// Which keys each query slot may see (`slot_visible` in kernels/common.cuh).
#[derive(Clone, Copy, Debug)]
pub struct AttentionMask<'a> {
    pub slots: &'a [SlotInfo],
    pub visibility: Visibility,
    pub sliding_window: Option<usize>,
}

impl AttentionMask<'_> {
    /// Whether query slot `q` attends to key slot `k`: causal (k ≤ q), inside the sliding window
    /// (q − k < window, by slot index), and, for isolated sequences, k is not another member of q's group.
    #[inline]
    pub fn allows(&self, q: usize, k: usize) -> bool {
        if k > q {
            return false;
        }
        if self.sliding_window.is_some_and(|w| q - k >= w) {
            return false;
        }
        if self.visibility == Visibility::Isolated && k != q {
            let g = self.slots[q].group;
            if g >= 0 && self.slots[k].group == g {
                return false;
            }
        }
        true
    }

    /// For each key slot, how many query rows can see it (the denominator of the mean received weight).
    pub fn visible_rows_per_key(&self) -> Vec<u32> {
        let t = self.slots.len();
        let mut counts = vec![0u32; t];
        for q in 0..t {
            for (k, c) in counts.iter_mut().enumerate().take(q + 1) {
                if self.allows(q, k) {
                    *c += 1;
                }
            }
        }
        counts
    }
}

/// Number of relative-distance buckets: `d < 0`, `d = 0`, then `[2^(b−1), 2^b − 1]` for b = 1..=63
/// (`ATTN_DISTANCE_BUCKETS` in kernels/common.cuh).
pub const N_DISTANCE_BUCKETS: usize = 65;

/// Bucket index of a position distance `d = position[q] − position[k]`: 0 for d < 0, 1 for d = 0,
/// 1 + b for d in `[2^(b−1), 2^b)` (`distance_bucket` in kernels/common.cuh).
pub fn distance_bucket(d: i64) -> usize {
    if d < 0 {
        0
    } else if d == 0 {
        1
    } else {
        1 + (64 - d.leading_zeros() as usize)
    }
}

/// Inclusive distance range of a bucket (`None` bound for the open negative bucket).
pub fn bucket_range(bucket: usize) -> (Option<i64>, Option<i64>) {
    match bucket {
        0 => (None, Some(-1)),
        1 => (Some(0), Some(0)),
        b => {
            let lo = 1i64 << (b - 2);
            let hi = if b > 63 {
                i64::MAX
            } else {
                (1i64 << (b - 1)) - 1
            };
            (Some(lo), Some(hi))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(group: i32) -> SlotInfo {
        SlotInfo::prompt(0, 0, group)
    }

    #[test]
    fn mask_is_causal_windowed_and_isolates_groups() {
        let slots = [slot(-1), slot(0), slot(0), slot(-1)];
        let visible = AttentionMask {
            slots: &slots,
            visibility: Visibility::Visible,
            sliding_window: None,
        };
        assert!(visible.allows(2, 1) && visible.allows(2, 2) && !visible.allows(1, 2));
        let isolated = AttentionMask {
            visibility: Visibility::Isolated,
            ..visible
        };
        assert!(!isolated.allows(2, 1) && isolated.allows(2, 2) && isolated.allows(3, 1));
        assert_eq!(isolated.visible_rows_per_key(), vec![4, 2, 2, 1]);
        let windowed = AttentionMask {
            sliding_window: Some(2),
            ..visible
        };
        assert!(windowed.allows(3, 2) && !windowed.allows(3, 1));
    }

    #[test]
    fn buckets_are_log2() {
        assert_eq!(distance_bucket(-3), 0);
        assert_eq!(distance_bucket(0), 1);
        assert_eq!(distance_bucket(1), 2);
        assert_eq!(distance_bucket(3), 3);
        assert_eq!(distance_bucket(4), 4);
        assert_eq!(distance_bucket(i64::MAX), N_DISTANCE_BUCKETS - 1);
        for b in 1..N_DISTANCE_BUCKETS {
            let (lo, hi) = bucket_range(b);
            assert_eq!(distance_bucket(lo.unwrap()), b);
            assert_eq!(distance_bucket(hi.unwrap()), b);
        }
    }
}
