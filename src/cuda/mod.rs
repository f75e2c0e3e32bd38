//! CUDA backend groundwork: finding the driver and NVRTC at run time, and compiling the kernels of
//! `kernels/*.cu`.
//!
//! Nothing here needs CUDA at build time. `cudarc` is built with `dynamic-loading`: libcuda and libnvrtc are
//! opened with `dlopen` on first use. cudarc panics when a library is missing, so every entry point here
//! checks for the library first and reports its absence as [`CudaStatus::Unavailable`] or a
//! [`crate::Error::Cuda`] one-liner, never a panic.
//!
//! The kernels need no CUDA header (see `kernels/common.cuh`): NVRTC's built-ins are enough, so only
//! `libnvrtc.so` (+ its `libnvrtc-builtins.so`) must be found, e.g. from the `nvidia-cuda-nvrtc-cu12` wheel
//! (`scripts/install_nvrtc.sh`). Include directories are still passed when found, for kernels that may want
//! a header later.

pub mod device;
pub mod nvrtc;

pub use device::{CudaStatus, probe};
pub use nvrtc::{Ptx, common_header, compile_kernel, include_paths, kernel_sources, nvrtc_version};
