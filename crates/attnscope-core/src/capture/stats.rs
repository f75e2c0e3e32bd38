//! What a recorder keeps of a head: per-row statistics, received weight, distance mass and the per-step
//! tables of generation rows (the leaf both the recorder and its tile arithmetic build on).

use crate::slots::N_DISTANCE_BUCKETS;

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
