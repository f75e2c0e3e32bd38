//! The CUDA backend: finding the driver, NVRTC and cuBLAS at run time, compiling `kernels/*.cu`, device
//! buffers, kernel launchers, and the GPU forward pass with capture (the twin of `model::forward` on the CPU).
//!
//! Nothing here needs CUDA at build time, and one binary serves CUDA 12 and 13 hosts. The driver API comes
//! from `cudarc` (`dynamic-loading`: libcuda.so.1 is opened by name; its CUDA 12.8 bindings work with newer
//! drivers); NVRTC and cuBLAS are our own small FFI (`nvrtc_lib`, `cublas`) over libraries opened by full
//! path: `lib_search` picks one consistent set of CUDA 12 or 13 that the driver supports (`libraries` feeds
//! it the environment). Every entry point reports a missing piece as [`CudaStatus::Unavailable`] or an
//! [`attnscope_core::Error::Cuda`] one-liner, never a panic; `doctor` says what was found and why.
//!
//! The kernels need no CUDA header (see `kernels/common.cuh`): NVRTC's built-ins are enough, so only
//! `libnvrtc.so.12`/`.so.13` (+ its `libnvrtc-builtins`) must be found, e.g. from the `nvidia-cuda-nvrtc-cu12`
//! or `nvidia-cuda-nvrtc` (13) wheel (`scripts/install_nvrtc.sh`). Include directories are still passed when
//! found, for kernels that may want a header later.

pub mod backend;
pub mod bench;
pub mod buffer;
pub mod capture;
pub mod context;
pub mod cublas;
pub mod decode_queue;
pub mod device;
pub mod doctor;
pub mod dtype;
pub mod kernel_cache;
pub mod kernels;
pub mod kv;
pub mod lib_search;
pub mod libraries;
pub mod nvrtc;
pub mod nvrtc_lib;
pub mod ops;
pub mod params;
pub mod ptx_isa;
pub mod scratch;
pub mod weights;

pub use backend::CudaBackend;
pub use context::{DeviceRequest, GpuContext};
pub use device::{CudaStatus, probe};
pub use dtype::GpuDtype;
pub use kv::DeviceKv;
pub use nvrtc::{
    Ptx, common_header, compile_kernel, compile_kernel_cubin, compile_kernel_image, include_paths,
    kernel_sources, loaded_nvrtc, nvrtc_version,
};
