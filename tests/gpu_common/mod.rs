//! Helpers shared by the GPU kernel tests (tests/gpu_kernels.rs, tests/gpu_attention.rs, tests/gpu_probs_decode.rs,
//! tests/gpu_elementwise.rs): the engine's device context or a visible SKIP, device buffers, deterministic
//! inputs, element types, error measures. Kernels are launched only through `attnscope_cuda::ops`.
//!
//! Without a CUDA device every test prints `SKIP: no CUDA device (...)` and passes, unless
//! `ATTNSCOPE_REQUIRE_GPU=1` (set by scripts/gpu-validate.sh), which turns the skip into a failure.
#![allow(dead_code)]

pub mod attention;
pub mod runs;
pub mod tc_reference;

use attnscope_cuda::buffer::slice_ptr;
use attnscope_cuda::{CudaStatus, GpuContext, GpuDtype, probe};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits};
use std::sync::Arc;

/// The engine's device context (kernels loaded, launched through `attnscope_cuda::ops`) and its stream.
pub struct Gpu {
    pub g: Arc<GpuContext>,
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub arch: String,
}

/// The GPU, or `None` after printing SKIP.
pub fn gpu_or_skip() -> Option<Gpu> {
    match probe() {
        CudaStatus::Unavailable(reason) => {
            // scripts/gpu-validate.sh sets this on GPU hosts, where a missing device is a failure.
            if std::env::var("ATTNSCOPE_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("ATTNSCOPE_REQUIRE_GPU=1 but no CUDA device: {reason}");
            }
            println!("SKIP: no CUDA device ({reason})");
            None
        }
        CudaStatus::Available { .. } => {
            let g = GpuContext::shared(0).unwrap_or_else(|e| panic!("opening cuda:0: {e}"));
            Some(Gpu {
                ctx: g.ctx.clone(),
                stream: g.stream.clone(),
                arch: g.arch.clone(),
                g,
            })
        }
    }
}

/// Whether to run the reduced grid: scripts/gpu-validate.sh sets `ATTNSCOPE_GPU_SMALL=1` for the
/// compute-sanitizer runs, which are one to two orders of magnitude slower than plain runs.
pub fn small() -> bool {
    std::env::var("ATTNSCOPE_GPU_SMALL").is_ok_and(|v| v == "1")
}

/// A null device pointer for an optional kernel argument (pushed by value: 8 zero bytes).
pub const NULL: u64 = 0;

impl Gpu {
    /// Device address of a buffer, for the launchers of `attnscope_cuda::ops`.
    pub fn ptr<T>(&self, d: &CudaSlice<T>) -> u64 {
        slice_ptr(d, &self.stream)
    }

    pub fn upload<T: DeviceRepr>(&self, data: &[T]) -> CudaSlice<T> {
        self.stream.clone_htod(data).expect("upload")
    }

    pub fn download<T: DeviceRepr + Default + Clone>(&self, d: &CudaSlice<T>) -> Vec<T> {
        self.stream.clone_dtoh(d).expect("download")
    }

    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> CudaSlice<T> {
        self.stream.alloc_zeros::<T>(n.max(1)).expect("alloc")
    }

    /// Uploads f32 values converted to the element type `E`.
    pub fn upload_as<E: Elem>(&self, data: &[f32]) -> CudaSlice<E> {
        let conv: Vec<E> = data.iter().map(|&x| E::from_f32(x)).collect();
        self.upload(&conv)
    }

    /// Downloads `E` values as f32.
    pub fn download_f32<E: Elem>(&self, d: &CudaSlice<E>) -> Vec<f32> {
        self.download(d).into_iter().map(E::to_f32).collect()
    }
}

/// Element types of the kernels: f32 and the 16-bit storage types (`half` has the same bit layouts).
pub trait Elem: DeviceRepr + ValidAsZeroBits + Copy + Default + Unpin + 'static {
    /// Kernel-name suffix.
    const SUFFIX: &'static str;
    /// The engine's name for this storage type.
    const DTYPE: GpuDtype;
    /// Unit roundoff: the largest relative error of rounding an f32 (normal range) to this type,
    /// half an ulp: 2^-8 for bf16 (8 significant bits), 2^-11 for f16 (11), 0 for f32.
    const UNIT: f32;
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
}

impl Elem for f32 {
    const SUFFIX: &'static str = "f32";
    const DTYPE: GpuDtype = GpuDtype::F32;
    const UNIT: f32 = 0.0;
    fn from_f32(x: f32) -> Self {
        x
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl Elem for half::bf16 {
    const SUFFIX: &'static str = "bf16";
    const DTYPE: GpuDtype = GpuDtype::Bf16;
    const UNIT: f32 = 1.0 / 256.0;
    fn from_f32(x: f32) -> Self {
        half::bf16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
}

impl Elem for half::f16 {
    const SUFFIX: &'static str = "f16";
    const DTYPE: GpuDtype = GpuDtype::F16;
    const UNIT: f32 = 1.0 / 2048.0;
    fn from_f32(x: f32) -> Self {
        half::f16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
}

/// `x` rounded to `E` (round to nearest even, as the kernels' `cvt.rn`) and back to f32.
pub fn round_to<E: Elem>(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| E::from_f32(v).to_f32()).collect()
}

/// Deterministic values in [-1, 1): the engine's one seeded generator.
pub use attnscope_core::rng::uniform_values as values;

/// Largest |a − b| / (1 + |b|); a NaN in either operand counts as an infinite error (`f32::max` would drop it).
pub fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let e = (x - y).abs() / (1.0 + y.abs());
            if e.is_nan() { f32::INFINITY } else { e }
        })
        .fold(0.0, f32::max)
}

/// Asserts |got − want| ≤ tol(want) element by element, naming the first offending index.
pub fn assert_close(label: &str, got: &[f32], want: &[f32], tol: impl Fn(f32) -> f32) {
    assert_eq!(got.len(), want.len(), "{label}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let t = tol(w);
        assert!(
            (g - w).abs() <= t,
            "{label}: element {i}: got {g}, want {w} (|diff| {} > tol {t})",
            (g - w).abs()
        );
    }
}
