//! Launcher of the capture's second pass (kernels/attention_probs.cu): the plan (keys per z-block, row
//! groups so that the grid fills the device), the probabilities launch and the one reduction of the
//! received partials.

use super::{AttentionCall, sm_count};
use crate::context::GpuContext;
use crate::kernels as k;
use crate::params::AttnParams;
use attnscope_core::Error;
use attnscope_core::Result;
use cudarc::driver::LaunchConfig;

/// Outputs of the second pass (kernels/attention_probs.cu); 0 = not computed.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProbsOutputs {
    /// f32 or f16 (see `weights_f16`) rows: selected head s, row i at `weights + s·w_head_stride +
    /// i·w_row_stride`.
    pub weights: u64,
    pub weights_f16: bool,
    pub w_head_stride: usize,
    pub w_row_stride: usize,
    /// f32 [n_sel, n_new] each; zeroed by the caller.
    pub sink: u64,
    pub prev: u64,
    pub self_mass: u64,
    pub group_mass: u64,
    /// f64 [n_sel, received_stride], accumulated (needs `recv_part`).
    pub received: u64,
    pub received_stride: usize,
    /// f64 scratch of [`ProbsPlan::recv_part_len`] elements for the received partials (no zeroing needed).
    pub recv_part: u64,
    /// f64 [n_sel, 65], accumulated.
    pub distance: u64,
}

/// Keys per z-block of the second pass (the kernel's maximum, PROBS_MAX_CHUNKS · 128).
pub const PROBS_KEY_SPLIT: usize = 1024;
/// Rows per tile of the kernel (PROBS_ROWS).
const PROBS_ROWS: usize = 16;
/// Blocks per SM the row groups aim at (16 blocks of 128 threads = the 2048 threads an SM holds, so the
/// latency of the K reads is hidden; the partials stay ≈ 16 · SMs · 1024 · 8 bytes + n_sel · n_keys · 8).
const PROBS_BLOCKS_PER_SM: usize = 16;

/// The launch shape of one second pass: grid (row_groups, n_sel, n_z).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbsPlan {
    pub key_split: usize,
    pub n_z: usize,
    pub row_groups: usize,
}

impl ProbsPlan {
    /// f64 elements of the received partials `[n_sel, row_groups, n_keys]`.
    pub fn recv_part_len(&self, n_sel: usize, n_keys: usize) -> usize {
        n_sel * self.row_groups * n_keys
    }
}

/// The plan for `n_new` rows against `n_keys` keys and `n_sel` heads: `key_split` rounded up to a multiple
/// of 128 (at most [`PROBS_KEY_SPLIT`]), then as many row groups (≤ the 16-row tiles) as give about 16
/// blocks per SM.
pub fn probs_plan(
    n_new: usize,
    n_keys: usize,
    n_sel: usize,
    key_split: usize,
    sms: usize,
) -> ProbsPlan {
    let key_split = key_split.next_multiple_of(128).clamp(128, PROBS_KEY_SPLIT);
    let n_z = n_keys.div_ceil(key_split).max(1);
    let tiles = n_new.div_ceil(PROBS_ROWS).max(1);
    let row_groups = (PROBS_BLOCKS_PER_SM * sms.max(1))
        .div_ceil(n_sel.max(1) * n_z)
        .clamp(1, tiles);
    ProbsPlan {
        key_split,
        n_z,
        row_groups,
    }
}

/// Recomputes probabilities of the selected heads from the saved lse (kernels/attention_probs.cu) with the
/// engine's plan for this device. `heads` is a device int32 array of `n_sel` query heads; `positions` int64
/// per slot; `out.recv_part` (when `out.received` is set) holds the plan's `recv_part_len`.
pub fn attention_probs(
    g: &GpuContext,
    c: &AttentionCall,
    heads: u64,
    n_sel: usize,
    positions: u64,
    out: &ProbsOutputs,
) -> Result<()> {
    let plan = probs_plan(
        c.n_new,
        c.q_start + c.n_new,
        n_sel,
        PROBS_KEY_SPLIT,
        sm_count(g)?,
    );
    attention_probs_planned(g, c, heads, n_sel, positions, out, &plan)
}

/// The probabilities launch of `plan`, then (when `out.received` is set) the reduction of the received
/// partials into it.
pub fn attention_probs_planned(
    g: &GpuContext,
    c: &AttentionCall,
    heads: u64,
    n_sel: usize,
    positions: u64,
    out: &ProbsOutputs,
    plan: &ProbsPlan,
) -> Result<()> {
    let n_keys = c.q_start + c.n_new;
    if !plan.key_split.is_multiple_of(128)
        || plan.key_split > PROBS_KEY_SPLIT
        || plan.row_groups == 0
    {
        return Err(Error::cuda(format!(
            "second pass plan {plan:?}: key_split must be a multiple of 128 up to {PROBS_KEY_SPLIT}"
        )));
    }
    if (out.received != 0) != (out.recv_part != 0) {
        return Err(Error::cuda(
            "second pass: received sums need the recv_part scratch (and only they use it)",
        ));
    }
    if n_sel == 0 || c.n_new == 0 {
        return Ok(());
    }
    let params = AttnParams {
        heads,
        n_sel: n_sel as i32,
        positions,
        split_len: plan.key_split as i32,
        row_groups: plan.row_groups as i32,
        weights: out.weights,
        w_head_stride: out.w_head_stride as i64,
        w_row_stride: out.w_row_stride as i64,
        sink: out.sink,
        prev: out.prev,
        self_mass: out.self_mass,
        group_mass: out.group_mass,
        recv_part: out.recv_part,
        received: out.received,
        received_stride: out.received_stride as i32,
        distance: out.distance,
        ..c.params()
    };
    let w = if out.weights_f16 { "_wf16" } else { "_wf32" };
    let name = k::ATTN_PROBS.name(c.dtype, w);
    let cfg = LaunchConfig {
        grid_dim: (plan.row_groups as u32, n_sel as u32, plan.n_z as u32),
        block_dim: (128, 1, 1),
        shared_mem_bytes: (PROBS_ROWS * c.head_dim * 4) as u32,
    };
    g.launch_attention(&name, cfg, &params)?;
    if out.received == 0 {
        return Ok(());
    }
    let name = k::ATTN_PROBS_RECEIVED.of(crate::dtype::GpuDtype::F32);
    let cfg = LaunchConfig {
        grid_dim: (n_keys.div_ceil(128) as u32, n_sel as u32, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    g.launch_attention(&name, cfg, &params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_fill_the_device_and_bound_the_partials() {
        // Prefill of 4096 rows, 32 heads: 4 z-blocks × 32 heads = 128, so 17 row groups reach 16 blocks/SM.
        let p = probs_plan(4096, 4096, 32, PROBS_KEY_SPLIT, 132);
        assert_eq!((p.n_z, p.row_groups), (4, 17));
        assert_eq!(p.recv_part_len(32, 4096), 32 * 17 * 4096);
        // A long context already has many blocks: few row groups, partials a few × n_sel · n_keys (24 MiB).
        let p = probs_plan(32768, 32768, 32, PROBS_KEY_SPLIT, 132);
        assert_eq!(p.row_groups, 3);
        assert!(p.recv_part_len(32, 32768) * 8 <= 24 << 20);
        // Few rows: no more row groups than tiles; key splits rounded to 128.
        let p = probs_plan(8, 4133, 2, 1000, 132);
        assert_eq!((p.key_split, p.row_groups, p.n_z), (1024, 1, 5));
        assert_eq!(probs_plan(300, 300, 2, 1, 132).key_split, 128);
    }
}
