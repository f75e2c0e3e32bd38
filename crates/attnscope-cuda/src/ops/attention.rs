//! Launchers of the attention kernels (kernels/attention_prefill.cu, attention_decode.cu,
//! attention_probs.cu): each builds the one `AttnParams` of the call and launches with the shape of the
//! kernel's header comment.

use super::rows_cfg;
use crate::context::GpuContext;
use crate::dtype::GpuDtype;
use crate::kernels::{self as k, FA2_HEAD_DIMS, TC_HEAD_DIMS};
use crate::params::AttnParams;
use attnscope_core::Error;
use attnscope_core::Result;
use std::sync::OnceLock;

/// Operands of one attention call over the KV cache (layouts as in kernels/attention_prefill.cu).
#[derive(Clone, Copy, Debug)]
pub struct AttentionCall {
    pub dtype: GpuDtype,
    pub q: u64,
    pub q_stride: usize,
    pub k: u64,
    pub v: u64,
    pub kv_stride: usize,
    pub o: u64,
    pub o_stride: usize,
    /// `[n_heads, n_new]` f32 (always written).
    pub lse: u64,
    /// `[n_heads, n_new]` f32 entropy, f32 max weight, u32 argmax; 0 = not computed.
    pub entropy: u64,
    pub max_weight: u64,
    pub argmax: u64,
    /// `[n_keys]` int32 group per slot.
    pub groups: u64,
    pub isolated: bool,
    /// 0 = no sliding window.
    pub window: usize,
    pub q_start: usize,
    pub n_new: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
}

impl AttentionCall {
    /// The fields of the kernels' parameter block that every attention kernel reads.
    pub fn params(&self) -> AttnParams {
        AttnParams {
            q: self.q,
            k: self.k,
            v: self.v,
            o: self.o,
            lse: self.lse,
            entropy: self.entropy,
            max_weight: self.max_weight,
            argmax: self.argmax,
            groups: self.groups,
            q_stride: self.q_stride as i32,
            kv_stride: self.kv_stride as i32,
            o_stride: self.o_stride as i32,
            isolated: self.isolated as i32,
            window: self.window as i32,
            q_start: self.q_start as i32,
            n_new: self.n_new as i32,
            n_heads: self.n_heads as i32,
            n_kv_heads: self.n_kv_heads as i32,
            head_dim: self.head_dim as i32,
            scale: self.scale,
            ..AttnParams::default()
        }
    }
}

/// Dynamic shared memory of the SIMT prefill kernel: Ks [32][hd + 1] + Vs [32][hd] + Qs [4][hd] f32, i.e.
/// (68·hd + 32)·4 bytes, as the kernel's header comment says (the test models have head_dim down to 8).
fn simt_shared(head_dim: usize) -> u32 {
    ((32 * (head_dim + 1) + 32 * head_dim + 4 * head_dim) * 4) as u32
}

/// Which tensor-core prefill kernel runs: the fast one (kernels/attention_prefill_fa2.cu, the default) or
/// the reference one (`attn_prefill_<T>_hd<HD>` of kernels/attention_prefill.cu).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefillKernel {
    Reference,
    Fast,
}

/// Environment variable choosing the tensor-core prefill kernel: `fast` (default) or `reference`.
pub const PREFILL_KERNEL_ENV: &str = "ATTNSCOPE_PREFILL_KERNEL";

impl PrefillKernel {
    /// Both kernels, for tests and benchmarks that compare them.
    pub const ALL: [PrefillKernel; 2] = [PrefillKernel::Reference, PrefillKernel::Fast];

    /// Parses a value of [`PREFILL_KERNEL_ENV`].
    pub fn parse(value: &str) -> Result<PrefillKernel> {
        match value.trim() {
            "" | "fast" => Ok(PrefillKernel::Fast),
            "reference" => Ok(PrefillKernel::Reference),
            other => Err(Error::cuda(format!(
                "{PREFILL_KERNEL_ENV}={other:?}: expected \"fast\" or \"reference\""
            ))),
        }
    }

    /// The kernel chosen by [`PREFILL_KERNEL_ENV`] (read once per process; unset = fast).
    pub fn from_env() -> Result<PrefillKernel> {
        static CHOICE: OnceLock<std::result::Result<PrefillKernel, String>> = OnceLock::new();
        CHOICE
            .get_or_init(|| {
                let value = std::env::var(PREFILL_KERNEL_ENV).unwrap_or_default();
                PrefillKernel::parse(&value).map_err(|e| e.to_string())
            })
            .clone()
            .map_err(Error::cuda)
    }

    /// Short name (`fast`, `reference`), as the environment variable spells it.
    pub fn label(self) -> &'static str {
        match self {
            PrefillKernel::Reference => "reference",
            PrefillKernel::Fast => "fast",
        }
    }
}

/// Fused prefill attention (kernels/attention_prefill.cu): tensor cores for bf16/f16 at the head dims that
/// have a kernel (the one [`PrefillKernel::from_env`] picks), else the exact SIMT path.
pub fn attention_prefill(g: &GpuContext, c: &AttentionCall) -> Result<()> {
    attention_prefill_with(g, c, PrefillKernel::from_env()?)
}

/// [`attention_prefill`] with the tensor-core kernel given explicitly.
pub fn attention_prefill_with(
    g: &GpuContext,
    c: &AttentionCall,
    kernel: PrefillKernel,
) -> Result<()> {
    if c.dtype != GpuDtype::F32 && TC_HEAD_DIMS.contains(&c.head_dim) {
        attention_prefill_tc(g, c, kernel)
    } else {
        attention_prefill_simt(g, c)
    }
}

/// The tensor-core prefill of `kernel`; the fast one falls back to the reference kernel where it has no
/// instance ([`fa2_supports`]).
pub fn attention_prefill_tc(
    g: &GpuContext,
    c: &AttentionCall,
    kernel: PrefillKernel,
) -> Result<()> {
    match kernel {
        PrefillKernel::Fast if fa2_supports(c) => attention_prefill_fa2(g, c),
        _ => attention_prefill_tensor_core(g, c),
    }
}

/// Whether the fast kernel takes `c`: bf16/f16, a head dim of [`FA2_HEAD_DIMS`], and K/V rows it can copy in
/// 16-byte chunks (kv_stride a multiple of 8 elements, k and v 16-byte aligned).
pub fn fa2_supports(c: &AttentionCall) -> bool {
    c.dtype != GpuDtype::F32
        && FA2_HEAD_DIMS.contains(&c.head_dim)
        && c.kv_stride.is_multiple_of(8)
        && c.k.is_multiple_of(16)
        && c.v.is_multiple_of(16)
}

/// The fast prefill `attn_prefill_fa2_<bf16|f16>_hd<HD>[_stats]` (kernels/attention_prefill_fa2.cu): the
/// `_stats` instance when entropy, max weight or argmax is asked. Grid (ceil(n_new/64), n_heads), block 128,
/// static shared memory only.
pub fn attention_prefill_fa2(g: &GpuContext, c: &AttentionCall) -> Result<()> {
    if !fa2_supports(c) {
        return Err(Error::cuda(format!(
            "no fast prefill kernel for {} at head_dim {} (kv_stride {})",
            c.dtype, c.head_dim, c.kv_stride
        )));
    }
    let stats = c.entropy != 0 || c.max_weight != 0 || c.argmax != 0;
    let name = k::ATTN_PREFILL_FA2.name(c.dtype, &k::fa2_variant(c.head_dim, stats));
    let cfg = rows_cfg(c.n_new.div_ceil(64), c.n_heads, 128, 0);
    g.launch_attention(&name, cfg, &c.params())
}

/// The tensor-core prefill `attn_prefill_<bf16|f16>_hd<HD>`: grid (ceil(n_new/64), n_heads), block 128,
/// static shared memory only.
pub fn attention_prefill_tensor_core(g: &GpuContext, c: &AttentionCall) -> Result<()> {
    if c.dtype == GpuDtype::F32 || !TC_HEAD_DIMS.contains(&c.head_dim) {
        return Err(Error::cuda(format!(
            "no tensor-core prefill kernel for {} at head_dim {}",
            c.dtype, c.head_dim
        )));
    }
    let name = k::ATTN_PREFILL_TC.name(c.dtype, &format!("_hd{}", c.head_dim));
    let cfg = rows_cfg(c.n_new.div_ceil(64), c.n_heads, 128, 0);
    g.launch_attention(&name, cfg, &c.params())
}

/// The exact SIMT prefill `attn_prefill_simt_<T>`: grid (ceil(n_new/4), n_heads), block 128, (68·hd + 32)·4
/// bytes of dynamic shared memory.
pub fn attention_prefill_simt(g: &GpuContext, c: &AttentionCall) -> Result<()> {
    if c.head_dim > 256 {
        return Err(Error::cuda(format!(
            "head_dim {} is larger than the kernels' 256",
            c.head_dim
        )));
    }
    let name = k::ATTN_PREFILL_SIMT.of(c.dtype);
    let shared = simt_shared(c.head_dim);
    if shared > 48 * 1024 {
        raise_shared_limit(g, &name, shared)?;
    }
    let cfg = rows_cfg(c.n_new.div_ceil(4), c.n_heads, 128, shared);
    g.launch_attention(&name, cfg, &c.params())
}

/// Allows a kernel more than 48 KiB of dynamic shared memory.
fn raise_shared_limit(g: &GpuContext, name: &str, bytes: u32) -> Result<()> {
    g.function(name)?
        .set_attribute(
            cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            bytes as i32,
        )
        .map_err(|e| Error::cuda(format!("{name}: raising shared memory to {bytes} B: {e:?}")))
}
