//! The CUDA backend: finding the driver and NVRTC at run time, compiling `kernels/*.cu`, device buffers,
//! kernel launchers, and the GPU forward pass with capture (the twin of `model::forward` on the CPU).
//!
//! Nothing here needs CUDA at build time. `cudarc` is built with `dynamic-loading`: libcuda, libnvrtc and
//! libcublas are opened with `dlopen` on first use. cudarc panics when a library is missing, so every entry
//! point checks for the library first and reports its absence as [`CudaStatus::Unavailable`] or a
//! [`attnscope_core::Error::Cuda`] one-liner, never a panic.
//!
//! The kernels need no CUDA header (see `kernels/common.cuh`): NVRTC's built-ins are enough, so only
//! `libnvrtc.so` (+ its `libnvrtc-builtins.so`) must be found, e.g. from the `nvidia-cuda-nvrtc-cu12` wheel
//! (`scripts/install_nvrtc.sh`). Include directories are still passed when found, for kernels that may want
//! a header later.

pub mod backend;
pub mod bench;
pub mod buffer;
pub mod capture;
pub mod context;
pub mod device;
pub mod dtype;
pub mod kernels;
pub mod kv;
pub mod lib_search;
pub mod nvrtc;
pub mod ops;
pub mod params;
pub mod scratch;
pub mod weights;

pub use backend::CudaBackend;
pub use context::{DeviceRequest, GpuContext};
pub use device::{CudaStatus, probe};
pub use dtype::GpuDtype;
pub use kv::DeviceKv;
pub use nvrtc::{Ptx, common_header, compile_kernel, include_paths, kernel_sources, nvrtc_version};
