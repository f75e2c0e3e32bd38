//! Launcher of the split-K decode (kernels/attention_decode.cu): the plan (keys per split, query-head chunks
//! per kv head) chosen from the context length and the SM count, the partial and combine launches, and the
//! size of the partials' scratch as a pure function of the cache capacity, so the engine allocates it once.

use super::AttentionCall;
use super::rows_cfg;
use crate::context::GpuContext;
use crate::kernels as k;
use crate::params::{AttnParams, AttnParamsBatch, DECODE_MAX_BATCH};
use attnscope_core::Error;
use attnscope_core::Result;
use cudarc::driver::LaunchConfig;

/// Most query rows the decode kernel takes at once (DECODE_MAX_Q in kernels/attention_decode.cu).
pub const DECODE_MAX_Q: usize = 8;
/// Most rows (query heads × query rows) of one partial block (DECODE_MAX_ROWS).
pub const DECODE_MAX_ROWS: usize = 32;
/// Longest split the planner picks (the tests may ask for others through [`attention_decode_split`]).
pub const DECODE_SPLIT: usize = 256;
/// Shortest split the planner picks.
pub const DECODE_MIN_SPLIT: usize = 16;
/// Dynamic shared memory a partial block may use without raising the kernel's limit.
const DECODE_SHARED_MAX: usize = 48 * 1024;
/// Partial blocks per SM the planner aims at (so short contexts still fill the device).
const DECODE_BLOCKS_PER_SM: usize = 2;
/// Head dims above this have no decode kernel.
const DECODE_MAX_HD: usize = 256;

/// Scratch of the split-K decode: part_stat f32 [n_heads, n_splits, n_q, 4], part_arg i32 [.., n_q],
/// part_o f32 [.., n_q, head_dim].
pub struct DecodeScratch {
    pub stat: u64,
    pub arg: u64,
    pub o: u64,
}

/// What the decode plan depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeShape {
    pub n_keys: usize,
    pub n_q: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl DecodeShape {
    /// The shape of an attention call (`n_keys = q_start + n_new`).
    pub fn of(c: &AttentionCall) -> DecodeShape {
        DecodeShape {
            n_keys: c.q_start + c.n_new,
            n_q: c.n_new,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
        }
    }

    /// Query heads per kv head.
    fn group(&self) -> usize {
        self.n_heads / self.n_kv_heads.max(1)
    }
}

/// The launch shape of one decode call: grid (n_splits, n_kv_heads · chunks), each block `heads_per_block`
/// query heads of one kv head over `split_len` keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodePlan {
    pub split_len: usize,
    pub n_splits: usize,
    /// Blocks per kv head along y (1 = every query head of the group in one block: K/V read once).
    pub chunks: usize,
    /// ceil(G / chunks), as the kernel recomputes it from gridDim.y.
    pub heads_per_block: usize,
}

impl DecodePlan {
    /// Partial rows (heads × splits × query rows) the plan writes.
    pub fn partial_rows(&self, s: &DecodeShape) -> usize {
        s.n_heads * self.n_splits * s.n_q
    }

    /// Dynamic shared memory of a partial block: R·(head_dim + split_len)·4 bytes.
    pub fn shared_bytes(&self, s: &DecodeShape) -> usize {
        shared_bytes(self.heads_per_block * s.n_q, s.head_dim, self.split_len)
    }
}

fn shared_bytes(rows: usize, head_dim: usize, split_len: usize) -> usize {
    rows * (head_dim + split_len) * 4
}

/// Checks the limits of the kernel.
fn check_shape(s: &DecodeShape) -> Result<()> {
    let ok = (1..=DECODE_MAX_Q).contains(&s.n_q)
        && s.head_dim <= DECODE_MAX_HD
        && s.n_kv_heads > 0
        && s.n_heads.is_multiple_of(s.n_kv_heads);
    if !ok {
        return Err(Error::cuda(format!(
            "decode attention takes 1..={DECODE_MAX_Q} rows, head_dim <= {DECODE_MAX_HD} and n_heads a \
             multiple of n_kv_heads ({} rows, head_dim {}, {} / {} heads)",
            s.n_q, s.head_dim, s.n_heads, s.n_kv_heads
        )));
    }
    Ok(())
}

/// The fewest query-head chunks per kv head whose blocks hold at most DECODE_MAX_ROWS rows and fit the
/// shared memory with `split_len` keys; `None` if even one head per block does not fit.
fn chunks_for(s: &DecodeShape, split_len: usize) -> Option<(usize, usize)> {
    let g = s.group().max(1);
    (1..=g).find_map(|chunks| {
        let hpb = g.div_ceil(chunks);
        let rows = hpb * s.n_q;
        let fits = rows <= DECODE_MAX_ROWS
            && shared_bytes(rows, s.head_dim, split_len) <= DECODE_SHARED_MAX;
        fits.then_some((chunks, hpb))
    })
}

/// The plan with a fixed `split_len` (the tests vary it).
pub fn decode_plan_with_split(s: &DecodeShape, split_len: usize) -> Result<DecodePlan> {
    check_shape(s)?;
    let split_len = split_len.max(1);
    let (chunks, heads_per_block) = chunks_for(s, split_len).ok_or_else(|| {
        Error::cuda(format!(
            "decode split of {split_len} keys does not fit shared memory at head_dim {}",
            s.head_dim
        ))
    })?;
    Ok(DecodePlan {
        split_len,
        n_splits: s.n_keys.div_ceil(split_len),
        chunks,
        heads_per_block,
    })
}

/// Longest split the shared memory allows for blocks of `rows` rows (a multiple of 16, at most
/// [`DECODE_SPLIT`]); at least [`DECODE_MIN_SPLIT`] since rows <= 32 and head_dim <= 256.
fn max_split(rows: usize, head_dim: usize) -> usize {
    let by_shared = (DECODE_SHARED_MAX / 4 / rows.max(1)).saturating_sub(head_dim);
    (by_shared.min(DECODE_SPLIT) / 16 * 16).max(DECODE_MIN_SPLIT)
}

/// Splits the planner aims at for `s`: enough partial blocks for `sms` SMs.
fn wanted_splits(s: &DecodeShape, chunks: usize, sms: usize) -> usize {
    let blocks_per_split = s.n_kv_heads * chunks;
    (DECODE_BLOCKS_PER_SM * sms.max(1)).div_ceil(blocks_per_split.max(1))
}

/// The engine's plan: query heads grouped per kv head (chunks chosen at the longest split, so a shorter
/// split always fits), then keys per split so that splits × kv heads × chunks ≥ 2 blocks per SM, between
/// [`DECODE_MIN_SPLIT`] and the longest split that fits shared memory. The plan of a batch of one.
pub fn decode_plan(s: &DecodeShape, sms: usize) -> Result<DecodePlan> {
    decode_batch_plan(std::slice::from_ref(s), sms)
}

/// One plan for the decode calls of one batched forward pass (one layer shape, each sequence its own
/// context and rows): the query-head chunks of the largest row count, and one split length chosen so that
/// the splits of all sequences together × kv heads × chunks give ≥ 2 blocks per SM; `n_splits` is the
/// longest sequence's (the grid's x), the others use `n_keys.div_ceil(split_len)`.
pub fn decode_batch_plan(shapes: &[DecodeShape], sms: usize) -> Result<DecodePlan> {
    let first = *shapes
        .first()
        .ok_or_else(|| Error::cuda("decode plan of an empty batch"))?;
    for s in shapes {
        check_shape(s)?;
        if (s.n_heads, s.n_kv_heads, s.head_dim)
            != (first.n_heads, first.n_kv_heads, first.head_dim)
        {
            return Err(Error::cuda(format!(
                "decode batch mixes attention shapes ({s:?} vs {first:?})"
            )));
        }
    }
    let n_q = shapes.iter().map(|s| s.n_q).max().unwrap_or(1);
    let n_keys = shapes.iter().map(|s| s.n_keys).max().unwrap_or(1);
    let total_keys: usize = shapes.iter().map(|s| s.n_keys).sum();
    let widest = DecodeShape {
        n_keys,
        n_q,
        ..first
    };
    let g = widest.group().max(1);
    let hpb0 = g.min((DECODE_MAX_ROWS / n_q).max(1));
    let chunks = g.div_ceil(hpb0);
    let heads_per_block = g.div_ceil(chunks);
    let longest = max_split(heads_per_block * n_q, widest.head_dim);
    let want = wanted_splits(&widest, chunks, sms);
    let split_len = total_keys
        .div_ceil(want)
        .next_multiple_of(16)
        .clamp(DECODE_MIN_SPLIT, longest);
    Ok(DecodePlan {
        split_len,
        n_splits: n_keys.div_ceil(split_len),
        chunks,
        heads_per_block,
    })
}

/// Partial rows a batch writes under `plan` (each sequence its heads × own splits × rows).
pub fn batch_partial_rows(shapes: &[DecodeShape], plan: &DecodePlan) -> usize {
    shapes
        .iter()
        .map(|s| s.n_heads * s.n_keys.div_ceil(plan.split_len) * s.n_q)
        .sum()
}

/// Partial rows that cover every [`decode_plan`] of a cache of `capacity` slots (any `n_keys <=
/// capacity`, any `n_q <= DECODE_MAX_Q`): the planner never uses more than max(wanted splits,
/// ceil(capacity / longest split)) splits. `tests` check it against the planner by enumeration.
pub fn decode_scratch_rows(
    capacity: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    sms: usize,
) -> usize {
    (1..=DECODE_MAX_Q)
        .map(|n_q| {
            let s = DecodeShape {
                n_keys: capacity.max(1),
                n_q,
                n_heads,
                n_kv_heads,
                head_dim,
            };
            let g = s.group().max(1);
            let chunks = g.div_ceil(g.min((DECODE_MAX_ROWS / n_q).max(1)));
            let longest = max_split(g.div_ceil(chunks) * n_q, head_dim);
            let splits = wanted_splits(&s, chunks, sms).max(s.n_keys.div_ceil(longest));
            n_heads * splits * n_q
        })
        .max()
        .unwrap_or(0)
}

/// The number of SMs of the context's device (the decode planner's target).
pub fn sm_count(g: &GpuContext) -> Result<usize> {
    use cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT as SMS;
    g.ctx
        .attribute(SMS)
        .map(|n| n.max(1) as usize)
        .map_err(|e| Error::cuda(format!("reading the SM count: {e:?}")))
}

/// Split-K decode attention for `n_new <= 8` rows (kernels/attention_decode.cu) with the engine's plan for
/// this device; `s` must hold [`decode_scratch_rows`] of the cache (or the plan's `partial_rows`).
pub fn attention_decode(g: &GpuContext, c: &AttentionCall, s: &DecodeScratch) -> Result<()> {
    let plan = decode_plan(&DecodeShape::of(c), sm_count(g)?)?;
    attention_decode_planned(g, c, s, &plan)
}

/// [`attention_decode`] with `split_len` keys per split; `s` must hold `n_heads · ceil(n_keys /
/// split_len) · n_new` partial rows.
pub fn attention_decode_split(
    g: &GpuContext,
    c: &AttentionCall,
    s: &DecodeScratch,
    split_len: usize,
) -> Result<()> {
    let plan = decode_plan_with_split(&DecodeShape::of(c), split_len)?;
    attention_decode_planned(g, c, s, &plan)
}

/// The partial and combine launches of `plan`.
pub fn attention_decode_planned(
    g: &GpuContext,
    c: &AttentionCall,
    s: &DecodeScratch,
    plan: &DecodePlan,
) -> Result<()> {
    let shape = DecodeShape::of(c);
    check_shape(&shape)?;
    let shared = plan.shared_bytes(&shape);
    if plan.heads_per_block * shape.n_q > DECODE_MAX_ROWS || shared > DECODE_SHARED_MAX {
        return Err(Error::cuda(format!(
            "decode plan {plan:?} exceeds the kernel's limits"
        )));
    }
    let params = AttnParams {
        split_len: plan.split_len as i32,
        n_splits: plan.n_splits as i32,
        part_stat: s.stat,
        part_arg: s.arg,
        part_o: s.o,
        ..c.params()
    };
    let name = k::ATTN_DECODE_PARTIAL.of(c.dtype);
    let y = c.n_kv_heads * plan.chunks;
    let cfg = rows_cfg(plan.n_splits, y, 128, shared as u32);
    g.launch_attention(&name, cfg, &params)?;
    let name = k::ATTN_DECODE_COMBINE.of(c.dtype);
    g.launch_attention(&name, rows_cfg(c.n_heads, c.n_new, 128, 0), &params)
}

/// The decode calls of up to [`DECODE_MAX_BATCH`] sequences (one layer, [`decode_batch_plan`]) in one
/// partial and one combine launch (`attn_decode_*_batch_<T>`, blockIdx.z = sequence). Sequence i's partials
/// start after those of sequences 0..i in `s`, which must hold [`batch_partial_rows`] rows.
pub fn attention_decode_batch(
    g: &GpuContext,
    calls: &[AttentionCall],
    s: &DecodeScratch,
    plan: &DecodePlan,
) -> Result<()> {
    let Some(first) = calls.first() else {
        return Ok(());
    };
    if calls.len() > DECODE_MAX_BATCH {
        return Err(Error::cuda(format!(
            "a batched decode launch takes at most {DECODE_MAX_BATCH} sequences ({})",
            calls.len()
        )));
    }
    let n_q = calls.iter().map(|c| c.n_new).max().unwrap_or(1);
    let hd = first.head_dim;
    let shared = shared_bytes(plan.heads_per_block * n_q, hd, plan.split_len);
    if plan.heads_per_block * n_q > DECODE_MAX_ROWS || shared > DECODE_SHARED_MAX {
        return Err(Error::cuda(format!(
            "decode batch plan {plan:?} exceeds the kernel's limits"
        )));
    }
    let mut batch = AttnParamsBatch::default();
    let mut row = 0u64;
    for (slot, c) in batch.p.iter_mut().zip(calls) {
        let n_splits = (c.q_start + c.n_new).div_ceil(plan.split_len);
        if n_splits > plan.n_splits || c.dtype != first.dtype {
            return Err(Error::cuda(format!(
                "decode call of {} keys does not fit the batch plan {plan:?}",
                c.q_start + c.n_new
            )));
        }
        *slot = AttnParams {
            split_len: plan.split_len as i32,
            n_splits: n_splits as i32,
            part_stat: s.stat + row * 16,
            part_arg: s.arg + row * 4,
            part_o: s.o + row * (hd as u64) * 4,
            ..c.params()
        };
        row += (c.n_heads * n_splits * c.n_new) as u64;
    }
    let z = calls.len() as u32;
    let partial = LaunchConfig {
        grid_dim: (
            plan.n_splits as u32,
            (first.n_kv_heads * plan.chunks) as u32,
            z,
        ),
        block_dim: (128, 1, 1),
        shared_mem_bytes: shared as u32,
    };
    g.launch_attention_batch(
        &k::ATTN_DECODE_PARTIAL_BATCH.of(first.dtype),
        partial,
        &batch,
    )?;
    let combine = LaunchConfig {
        grid_dim: (first.n_heads as u32, n_q as u32, z),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    g.launch_attention_batch(
        &k::ATTN_DECODE_COMBINE_BATCH.of(first.dtype),
        combine,
        &batch,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(n_keys: usize, n_q: usize, heads: (usize, usize), head_dim: usize) -> DecodeShape {
        DecodeShape {
            n_keys,
            n_q,
            n_heads: heads.0,
            n_kv_heads: heads.1,
            head_dim,
        }
    }

    #[test]
    fn short_contexts_fill_the_device() {
        // T = 512, 8 kv heads of 4 query heads, one row, 132 SMs: at least one block per SM.
        let p = decode_plan(&shape(512, 1, (32, 8), 128), 132).expect("plan");
        assert_eq!(p.chunks, 1, "all four query heads in one block");
        assert!(p.n_splits * 8 >= 132, "{p:?}");
        // T = 1 and T = 7: one split (nothing to split), still valid.
        for t in [1, 7] {
            let p = decode_plan(&shape(t, 1, (32, 8), 128), 132).expect("plan");
            assert_eq!(p.n_splits, 1);
        }
    }

    #[test]
    fn gqa_groups_share_a_block_when_they_fit() {
        for (heads, n_q, chunks) in [
            ((32, 8), 1, 1),
            ((32, 4), 1, 1),
            ((32, 4), 8, 2),
            ((64, 1), 1, 2),
        ] {
            let s = shape(4096, n_q, heads, 128);
            let p = decode_plan(&s, 132).expect("plan");
            assert_eq!(p.chunks, chunks, "{s:?}");
            assert!(p.heads_per_block * n_q <= DECODE_MAX_ROWS);
            assert!(p.shared_bytes(&s) <= DECODE_SHARED_MAX, "{p:?}");
        }
    }

    #[test]
    fn scratch_rows_cover_every_plan_up_to_the_capacity() {
        // "No allocation per decode step": the scratch is sized once from the capacity and must hold the
        // partials of every step (every n_keys <= capacity, every n_q), whatever the planner picks.
        for (heads, hd) in [
            ((4, 4), 64),
            ((8, 2), 128),
            ((32, 8), 128),
            ((32, 4), 256),
            ((6, 1), 80),
        ] {
            for sms in [1, 108, 132] {
                for cap in [1, 7, 64, 300, 2000] {
                    let rows = decode_scratch_rows(cap, heads.0, heads.1, hd, sms);
                    for n_keys in 1..=cap {
                        for n_q in 1..=DECODE_MAX_Q.min(n_keys) {
                            let s = shape(n_keys, n_q, heads, hd);
                            let p = decode_plan(&s, sms).expect("plan");
                            assert!(p.partial_rows(&s) <= rows, "{s:?} {p:?} > {rows}");
                            assert!(p.shared_bytes(&s) <= DECODE_SHARED_MAX, "{s:?} {p:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn fixed_splits_shrink_the_head_chunk_to_fit() {
        let s = shape(1000, 8, (32, 4), 256);
        let p = decode_plan_with_split(&s, 256).expect("plan");
        assert!(p.shared_bytes(&s) <= DECODE_SHARED_MAX, "{p:?}");
        assert_eq!(p.n_splits, 4);
        assert!(decode_plan_with_split(&shape(10, 9, (4, 4), 64), 256).is_err());
    }

    #[test]
    fn a_batch_of_short_contexts_fills_the_device_in_one_launch() {
        // Eight sequences at contexts 40..320, Llama-3.2-1B attention (32 / 8 heads, head_dim 64), H200.
        let shapes: Vec<DecodeShape> = (0..8).map(|i| shape(40 + 40 * i, 1, (32, 8), 64)).collect();
        let plan = decode_batch_plan(&shapes, 132).unwrap();
        let blocks: usize = shapes
            .iter()
            .map(|s| s.n_keys.div_ceil(plan.split_len) * s.n_kv_heads * plan.chunks)
            .sum();
        assert!(blocks >= 2 * 132, "{blocks} blocks for {plan:?}");
        assert_eq!(plan.n_splits, 320usize.div_ceil(plan.split_len));
        assert!(plan.heads_per_block <= DECODE_MAX_ROWS);
        assert!(plan.shared_bytes(&shapes[7]) <= DECODE_SHARED_MAX);
        let rows = batch_partial_rows(&shapes, &plan);
        let want: usize = shapes
            .iter()
            .map(|s| 32 * s.n_keys.div_ceil(plan.split_len))
            .sum();
        assert_eq!(rows, want);
    }

    #[test]
    fn a_batch_takes_the_chunks_of_its_largest_row_count() {
        // A parallel set of 8 rows beside single tokens: blocks must hold 8 rows × the heads per block.
        let shapes = [
            shape(500, 1, (32, 4), 128),
            shape(900, 8, (32, 4), 128),
            shape(70, 3, (32, 4), 128),
        ];
        let plan = decode_batch_plan(&shapes, 132).unwrap();
        assert!(plan.heads_per_block * 8 <= DECODE_MAX_ROWS, "{plan:?}");
        for s in &shapes {
            assert!(s.n_keys.div_ceil(plan.split_len) <= plan.n_splits);
            assert!(plan.shared_bytes(&DecodeShape { n_q: 8, ..*s }) <= DECODE_SHARED_MAX);
        }
        // A batch of one is the single plan.
        assert_eq!(
            decode_batch_plan(&shapes[1..2], 132).unwrap(),
            decode_plan(&shapes[1], 132).unwrap()
        );
        // Mixed shapes are refused.
        assert!(decode_batch_plan(&[shapes[0], shape(10, 1, (16, 4), 128)], 132).is_err());
    }
}
