//! Typed launchers for the kernels of `kernels/*.cu` and the cuBLAS matmul: one function per kernel, the
//! argument order of its `extern "C"` signature, the launch shape of its header comment. CPU twins are named
//! in each kernel file's header (and in kernels/README.md). The attention kernels, which take one
//! `AttnParams`, are in `attention.rs` (prefill), `decode.rs` (split-K decode and its plan) and `probs.rs`
//! (the capture's second pass).

mod attention;
mod decode;
mod probs;

pub use attention::*;
pub use decode::*;
pub use probs::*;

use crate::context::{Arg, GpuContext};
use crate::cublas::{CUBLAS_OP_N, CUBLAS_OP_T, GemmArgs};
use crate::dtype::GpuDtype;
use crate::kernels as k;
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::config::{Activation, NormKind};
use cudarc::driver::LaunchConfig;

/// Threads per block of the elementwise kernels.
const EW_THREADS: u32 = 256;

/// Launch shape of the elementwise and embedding kernels, whose loops stride over the grid: the engine's
/// (`Auto`) or a fixed one (the GPU tests use small grids and other block sizes to exercise the loops).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grid {
    /// Elementwise: one thread per element, up to 65535 blocks of 256; embedding: one block of 256 per row.
    Auto,
    /// `blocks` blocks of `threads` threads (a multiple of 32, at most 1024).
    Fixed { blocks: u32, threads: u32 },
}

impl Grid {
    fn config(self, auto_blocks: usize, auto_threads: u32) -> LaunchConfig {
        let (blocks, threads) = match self {
            Grid::Auto => (auto_blocks.clamp(1, 65535) as u32, auto_threads),
            Grid::Fixed { blocks, threads } => (blocks.max(1), threads),
        };
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        }
    }
}

/// A 1-D grid-stride launch over `n` elements.
fn elementwise(n: usize, grid: Grid) -> LaunchConfig {
    grid.config(n.div_ceil(EW_THREADS as usize), EW_THREADS)
}

/// Grid `(rows, y)` with `threads` per block.
pub(crate) fn rows_cfg(rows: usize, y: usize, threads: u32, shared: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows as u32, y as u32, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: shared,
    }
}

/// `y[rows, out] = x[rows, in] · W[out, in]ᵀ` (W row-major as in PyTorch's nn.Linear), f32 accumulation.
/// `x` and `W` are `dtype`; `y` is `y_dtype` (f32 for logits, else `dtype`). Row-major y = x·Wᵀ is, in
/// cuBLAS's column-major view, Y(out×rows) = Wᵀ(out×in) · X(in×rows): transa = T on W (ld = in),
/// transb = N on x (ld = in), ldc = out.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    g: &GpuContext,
    dtype: GpuDtype,
    x: u64,
    rows: usize,
    in_dim: usize,
    w: u64,
    out_dim: usize,
    y: u64,
    y_dtype: GpuDtype,
) -> Result<()> {
    if rows == 0 {
        return Ok(());
    }
    let args = GemmArgs {
        trans_a: CUBLAS_OP_T,
        trans_b: CUBLAS_OP_N,
        m: out_dim as i32,
        n: rows as i32,
        k: in_dim as i32,
        a: w,
        a_type: dtype.cublas(),
        lda: in_dim as i32,
        b: x,
        b_type: dtype.cublas(),
        ldb: in_dim as i32,
        c: y,
        c_type: y_dtype.cublas(),
        ldc: out_dim as i32,
    };
    // Strict f32 accumulation (CUBLAS_COMPUTE_32F, no TF32), so the f32 path matches the CPU reference to 1e-4.
    // SAFETY: cuBLAS FFI on the backend's handle (bound to its only stream). Pointers come from live
    // DeviceBufs holding rows·in (x), out·in (W) and rows·out (y) elements of the stated types.
    unsafe { g.blas.gemm_ex(&args) }.map_err(|e| {
        Error::cuda(format!(
            "cuBLAS gemm {rows}x{in_dim} · {out_dim}x{in_dim}ᵀ: {e:?}"
        ))
    })
}

/// `x[r, c] += bias[c]` (kernels/residual.cu).
pub fn bias_add(
    g: &GpuContext,
    dt: GpuDtype,
    x: u64,
    bias: u64,
    rows: usize,
    dim: usize,
    grid: Grid,
) -> Result<()> {
    let name = k::BIAS_ADD.of(dt);
    let args = [
        Arg::Ptr(x),
        Arg::Ptr(bias),
        Arg::I64(rows as i64),
        Arg::I32(dim as i32),
    ];
    g.launch(&name, elementwise(rows * dim, grid), &args)
}

/// `x += y` (kernels/residual.cu).
pub fn residual_add(
    g: &GpuContext,
    dt: GpuDtype,
    x: u64,
    y: u64,
    n: usize,
    grid: Grid,
) -> Result<()> {
    let args = [Arg::Ptr(x), Arg::Ptr(y), Arg::I64(n as i64)];
    g.launch(&k::RESIDUAL_ADD.of(dt), elementwise(n, grid), &args)
}

/// `x += a + b` (GPT-NeoX parallel residual; kernels/residual.cu).
#[allow(clippy::too_many_arguments)]
pub fn residual_add2(
    g: &GpuContext,
    dt: GpuDtype,
    x: u64,
    a: u64,
    b: u64,
    n: usize,
    grid: Grid,
) -> Result<()> {
    let args = [Arg::Ptr(x), Arg::Ptr(a), Arg::Ptr(b), Arg::I64(n as i64)];
    g.launch(&k::RESIDUAL_ADD2.of(dt), elementwise(n, grid), &args)
}

/// RMSNorm / LayerNorm of `rows` rows of `dim` (kernels/norm.cu); `b` = 0 for no bias.
#[allow(clippy::too_many_arguments)]
pub fn norm(
    g: &GpuContext,
    dt: GpuDtype,
    kind: NormKind,
    x: u64,
    w: u64,
    b: u64,
    out: u64,
    rows: usize,
    dim: usize,
    eps: f32,
) -> Result<()> {
    let cfg = rows_cfg(rows, 1, 256, 0);
    let (r, d) = (Arg::I32(rows as i32), Arg::I32(dim as i32));
    match kind {
        NormKind::RmsNorm => g.launch(
            &k::RMSNORM.of(dt),
            cfg,
            &[Arg::Ptr(x), Arg::Ptr(w), Arg::Ptr(out), r, d, Arg::F32(eps)],
        ),
        NormKind::LayerNorm => g.launch(
            &k::LAYERNORM.of(dt),
            cfg,
            &[
                Arg::Ptr(x),
                Arg::Ptr(w),
                Arg::Ptr(b),
                Arg::Ptr(out),
                r,
                d,
                Arg::F32(eps),
            ],
        ),
    }
}

/// RoPE in place at explicit positions (kernels/rope.cu).
#[allow(clippy::too_many_arguments)]
pub fn rope(
    g: &GpuContext,
    dt: GpuDtype,
    x: u64,
    positions: u64,
    inv_freq: u64,
    t: usize,
    n_heads: usize,
    head_dim: usize,
    rotary_dim: usize,
    row_stride: usize,
) -> Result<()> {
    let args = [
        Arg::Ptr(x),
        Arg::Ptr(positions),
        Arg::Ptr(inv_freq),
        Arg::I32(t as i32),
        Arg::I32(n_heads as i32),
        Arg::I32(head_dim as i32),
        Arg::I32(rotary_dim as i32),
        Arg::I32(row_stride as i32),
    ];
    g.launch(&k::ROPE.of(dt), rows_cfg(t, n_heads, 64, 0), &args)
}

/// `out[i] = table[ids[i]]` (kernels/embedding.cu).
#[allow(clippy::too_many_arguments)]
pub fn embedding_gather(
    g: &GpuContext,
    dt: GpuDtype,
    table: u64,
    ids: u64,
    out: u64,
    n: usize,
    dim: usize,
    vocab: usize,
    grid: Grid,
) -> Result<()> {
    let args = [
        Arg::Ptr(table),
        Arg::Ptr(ids),
        Arg::Ptr(out),
        Arg::I32(n as i32),
        Arg::I32(dim as i32),
        Arg::I32(vocab as i32),
    ];
    g.launch(&k::EMBEDDING_GATHER.of(dt), grid.config(n, 256), &args)
}

/// `x[i] += table[positions[i]]` (learned positions; kernels/embedding.cu).
#[allow(clippy::too_many_arguments)]
pub fn position_add(
    g: &GpuContext,
    dt: GpuDtype,
    table: u64,
    positions: u64,
    x: u64,
    n: usize,
    dim: usize,
    max_positions: usize,
    grid: Grid,
) -> Result<()> {
    let args = [
        Arg::Ptr(table),
        Arg::Ptr(positions),
        Arg::Ptr(x),
        Arg::I32(n as i32),
        Arg::I32(dim as i32),
        Arg::I32(max_positions as i32),
    ];
    g.launch(&k::POSITION_ADD.of(dt), grid.config(n, 256), &args)
}

/// `x = act(x)` in place.
pub fn activate(
    g: &GpuContext,
    dt: GpuDtype,
    act: Activation,
    x: u64,
    n: usize,
    grid: Grid,
) -> Result<()> {
    let name = k::activation(act, false).of(dt);
    g.launch(
        &name,
        elementwise(n, grid),
        &[Arg::Ptr(x), Arg::I64(n as i64)],
    )
}

/// `up = up · act(gate)` (gated MLP).
pub fn activate_gated(
    g: &GpuContext,
    dt: GpuDtype,
    act: Activation,
    gate: u64,
    up: u64,
    n: usize,
    grid: Grid,
) -> Result<()> {
    let name = k::activation(act, true).of(dt);
    let args = [Arg::Ptr(gate), Arg::Ptr(up), Arg::I64(n as i64)];
    g.launch(&name, elementwise(n, grid), &args)
}
