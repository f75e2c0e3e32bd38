//! One generation step of a sequence, shared by [`super::run_batch`] (and so by [`super::run_sequence`]):
//! the slots it appends, and the logits rows its pass must return.

use super::GenerateOptions;
use super::parallel::{self, SetDistribution};
use crate::model::LogitRows;
use crate::sampling::Sampler;
use crate::slots::{SlotInfo, SlotKind};

/// Which logits step `step` must return, and how a parallel set's rows make the next distribution: none
/// after the last step, every row of a set whose next distribution is not its last row's, else the last.
pub(super) fn logit_rows_after(
    step: usize,
    generation: &GenerateOptions,
    is_set: bool,
) -> (LogitRows, SetDistribution) {
    let how = generation
        .parallel
        .map_or(SetDistribution::Last, |p| p.next);
    let rows = if step == generation.max_new_tokens {
        LogitRows::None
    } else if is_set && how != SetDistribution::Last {
        LogitRows::All
    } else {
        LogitRows::Last
    };
    (rows, how)
}

/// The slots of generation step `step` at `position`: one sampled token, or a parallel set (a new group)
/// when at least two tokens pass the parallel threshold.
pub(super) fn next_slots(
    logits: &[f32],
    generation: &GenerateOptions,
    sampler: &mut Sampler,
    step: usize,
    position: i64,
    next_group: &mut i32,
) -> Vec<SlotInfo> {
    let set = match generation.parallel {
        Some(p) => parallel::parallel_candidates(logits, p.threshold, p.max_set),
        None => Vec::new(),
    };
    let tokens = if set.len() >= 2 {
        set
    } else {
        vec![sampler.sample(logits)]
    };
    let (group, kind) = if tokens.len() >= 2 {
        *next_group += 1;
        (*next_group - 1, SlotKind::Parallel)
    } else {
        (-1, SlotKind::Generated)
    };
    tokens
        .iter()
        .map(|&token| SlotInfo {
            token,
            position,
            group,
            step: step as u32,
            kind,
            ablated: false,
        })
        .collect()
}
