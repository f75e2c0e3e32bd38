//! The GPU half of `attnscope bench-attention` (`bench::attention`): the attention kernels alone on random
//! q/k/v, causal, batch 1, each implementation timed with CUDA events around one call.
//!
//!   prefill              fused prefill kernel: output + lse only (what a forward without capture runs)
//!   prefill_stats        the same kernel also writing entropy, max weight and argmax per row
//!   prefill_probs_stats  plus the second pass reducing sink/prev/self/group mass, received, distance
//!   prefill_weights      plus the second pass writing exact f32 weights of every head ([H, T, T])
//!   prefill_reference, prefill_stats_reference
//!                        `prefill` / `prefill_stats` on the reference tensor-core kernel
//!                        (`ops::PrefillKernel::Reference`; the others run the kernel that
//!                        `ATTNSCOPE_PREFILL_KERNEL` selects, the fast one by default)

use crate::buffer::{DeviceBuf, slice_ptr};
use crate::context::GpuContext;
use crate::dtype::GpuDtype;
use crate::ops::{self, AttentionCall, PrefillKernel, ProbsOutputs};
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::rng::uniform_values as values;
use attnscope_core::slots::N_DISTANCE_BUCKETS;
use cudarc::driver::CudaSlice;

/// The attention shape and timing settings of a benchmark.
#[derive(Clone, Copy, Debug)]
pub struct AttentionBenchShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub dtype: GpuDtype,
    pub warmup: usize,
    pub repeats: usize,
    /// Seed of q (k and v use seed + 1, seed + 2).
    pub seed: u64,
}

/// The millisecond samples of one implementation at one length.
#[derive(Clone, Debug)]
pub struct AttentionTiming {
    pub implementation: &'static str,
    pub samples_ms: Vec<f64>,
}

/// One implementation's call, timed repeatedly.
type TimedCall<'a> = Box<dyn Fn() -> Result<()> + 'a>;

/// Device inputs and outputs of the benchmark at one length `t`.
struct BenchBuffers {
    q: DeviceBuf,
    k: DeviceBuf,
    v: DeviceBuf,
    o: DeviceBuf,
    lse: CudaSlice<f32>,
    entropy: CudaSlice<f32>,
    max_weight: CudaSlice<f32>,
    argmax: CudaSlice<u32>,
    groups: CudaSlice<i32>,
    positions: CudaSlice<i64>,
    heads: CudaSlice<i32>,
    /// sink, prev, self and group mass `[n_heads, t]`.
    masses: [CudaSlice<f32>; 4],
    received: CudaSlice<f64>,
    /// The received partials of the engine's second-pass plan.
    recv_part: CudaSlice<f64>,
    distance: CudaSlice<f64>,
    /// `[n_heads, t, t]` f32, when under the size limit.
    weights: Option<CudaSlice<f32>>,
}

impl BenchBuffers {
    fn new(g: &GpuContext, sh: &AttentionBenchShape, t: usize, weights: bool) -> Result<Self> {
        let (nh, nkv, hd, dt) = (sh.n_heads, sh.n_kv_heads, sh.head_dim, sh.dtype);
        let stat = || g.zeros_of::<f32>(nh * t);
        Ok(BenchBuffers {
            q: g.upload(dt, &values(t * nh * hd, sh.seed))?,
            k: g.upload(dt, &values(t * nkv * hd, sh.seed + 1))?,
            v: g.upload(dt, &values(t * nkv * hd, sh.seed + 2))?,
            o: g.zeros(dt, t * nh * hd)?,
            lse: stat()?,
            entropy: stat()?,
            max_weight: stat()?,
            argmax: g.zeros_of(nh * t)?,
            groups: g.upload_slice(&vec![-1i32; t])?,
            positions: g.upload_slice(&(0..t as i64).collect::<Vec<_>>())?,
            heads: g.upload_slice(&(0..nh as i32).collect::<Vec<_>>())?,
            masses: [stat()?, stat()?, stat()?, stat()?],
            received: g.zeros_of(nh * t)?,
            recv_part: {
                let plan = ops::probs_plan(t, t, nh, ops::PROBS_KEY_SPLIT, ops::sm_count(g)?);
                g.zeros_of(plan.recv_part_len(nh, t))?
            },
            distance: g.zeros_of(nh * N_DISTANCE_BUCKETS)?,
            weights: weights.then(|| g.zeros_of(nh * t * t)).transpose()?,
        })
    }

    /// The causal self-attention call over all `t` rows (statistics beyond lse only when `stats`).
    fn call(
        &self,
        g: &GpuContext,
        sh: &AttentionBenchShape,
        t: usize,
        stats: bool,
    ) -> AttentionCall {
        let st = &g.stream;
        let opt = |p: u64| if stats { p } else { 0 };
        AttentionCall {
            dtype: sh.dtype,
            q: self.q.ptr(st),
            q_stride: sh.n_heads * sh.head_dim,
            k: self.k.ptr(st),
            v: self.v.ptr(st),
            kv_stride: sh.n_kv_heads * sh.head_dim,
            o: self.o.ptr(st),
            o_stride: sh.n_heads * sh.head_dim,
            lse: slice_ptr(&self.lse, st),
            entropy: opt(slice_ptr(&self.entropy, st)),
            max_weight: opt(slice_ptr(&self.max_weight, st)),
            argmax: opt(slice_ptr(&self.argmax, st)),
            groups: slice_ptr(&self.groups, st),
            isolated: false,
            window: 0,
            q_start: 0,
            n_new: t,
            n_heads: sh.n_heads,
            n_kv_heads: sh.n_kv_heads,
            head_dim: sh.head_dim,
            scale: 1.0 / (sh.head_dim as f32).sqrt(),
        }
    }

    /// Outputs of the second pass's reductions route.
    fn reductions(&self, g: &GpuContext, t: usize) -> ProbsOutputs {
        let st = &g.stream;
        ProbsOutputs {
            sink: slice_ptr(&self.masses[0], st),
            prev: slice_ptr(&self.masses[1], st),
            self_mass: slice_ptr(&self.masses[2], st),
            group_mass: slice_ptr(&self.masses[3], st),
            received: slice_ptr(&self.received, st),
            received_stride: t,
            recv_part: slice_ptr(&self.recv_part, st),
            distance: slice_ptr(&self.distance, st),
            ..ProbsOutputs::default()
        }
    }

    /// Outputs of the second pass writing every head's f32 weights, when allocated.
    fn weights_out(&self, g: &GpuContext, t: usize) -> Option<ProbsOutputs> {
        self.weights.as_ref().map(|w| ProbsOutputs {
            weights: slice_ptr(w, &g.stream),
            w_head_stride: t * t,
            w_row_stride: t,
            ..ProbsOutputs::default()
        })
    }
}

/// Times every implementation at length `t`: modes interleaved within each repeat. `prefill_weights` is
/// skipped (with a note) when its `[H, T, T]` f32 weights exceed `max_weights_bytes`.
pub fn time_attention(
    g: &GpuContext,
    sh: &AttentionBenchShape,
    t: usize,
    max_weights_bytes: usize,
) -> Result<(Vec<AttentionTiming>, Option<String>)> {
    let nh = sh.n_heads;
    let weights_bytes = nh * t * t * 4;
    let with_weights = weights_bytes <= max_weights_bytes;
    let note = (!with_weights).then(|| {
        format!(
            "prefill_weights T={t}: [H, T, T] f32 is {:.1} GiB, over the limit",
            weights_bytes as f64 / (1u64 << 30) as f64
        )
    });
    let b = BenchBuffers::new(g, sh, t, with_weights)?;
    let (plain, stats) = (b.call(g, sh, t, false), b.call(g, sh, t, true));
    let (heads, pos) = (
        slice_ptr(&b.heads, &g.stream),
        slice_ptr(&b.positions, &g.stream),
    );
    let reductions = b.reductions(g, t);
    let mut impls: Vec<(&'static str, TimedCall)> = vec![
        ("prefill", Box::new(|| ops::attention_prefill(g, &plain))),
        (
            "prefill_stats",
            Box::new(|| ops::attention_prefill(g, &stats)),
        ),
        (
            "prefill_probs_stats",
            Box::new(|| {
                ops::attention_prefill(g, &stats)?;
                ops::attention_probs(g, &stats, heads, nh, pos, &reductions)
            }),
        ),
    ];
    let reference = PrefillKernel::Reference;
    impls.push((
        "prefill_reference",
        Box::new(move || ops::attention_prefill_with(g, &plain, reference)),
    ));
    impls.push((
        "prefill_stats_reference",
        Box::new(move || ops::attention_prefill_with(g, &stats, reference)),
    ));
    if let Some(w) = b.weights_out(g, t) {
        impls.push((
            "prefill_weights",
            Box::new(move || {
                ops::attention_prefill(g, &stats)?;
                ops::attention_probs(g, &stats, heads, nh, pos, &w)
            }),
        ));
    }
    let samples = time_interleaved(g, &impls, sh.warmup, sh.repeats)?;
    let timings = impls
        .iter()
        .zip(samples)
        .map(|((name, _), samples_ms)| AttentionTiming {
            implementation: name,
            samples_ms,
        })
        .collect();
    Ok((timings, note))
}

/// Runs every call `warmup + repeats` times, interleaved, timing each with CUDA events; returns the
/// samples after the warmup, per call.
fn time_interleaved(
    g: &GpuContext,
    impls: &[(&'static str, TimedCall)],
    warmup: usize,
    repeats: usize,
) -> Result<Vec<Vec<f64>>> {
    let st = &g.stream;
    let err = |e: cudarc::driver::DriverError| Error::cuda(format!("timing event: {e:?}"));
    let event = || {
        g.ctx
            .new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(err)
    };
    let (start, stop) = (event()?, event()?);
    let mut ms = vec![Vec::new(); impls.len()];
    for r in 0..warmup + repeats {
        for (i, (_, f)) in impls.iter().enumerate() {
            start.record(st).map_err(err)?;
            f()?;
            stop.record(st).map_err(err)?;
            stop.synchronize().map_err(err)?;
            let elapsed = start.elapsed_ms(&stop).map_err(err)?;
            if r >= warmup {
                ms[i].push(elapsed as f64);
            }
        }
    }
    Ok(ms)
}
