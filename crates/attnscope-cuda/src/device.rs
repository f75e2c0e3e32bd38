//! Probing for a CUDA device through the driver API, without ever panicking when the driver is absent.

use cudarc::driver::{result, sys};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// What [`probe`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CudaStatus {
    /// The driver loaded and reports at least one device; the details are those of device 0.
    Available {
        /// Number of CUDA devices.
        device_count: usize,
        /// Name of device 0, e.g. "NVIDIA H100 80GB HBM3".
        name: String,
        /// Compute capability of device 0 as (major, minor), e.g. (9, 0).
        compute_capability: (i32, i32),
        /// CUDA version the driver supports as (major, minor), e.g. (12, 8).
        driver_version: (i32, i32),
    },
    /// No usable device, with the reason in one line.
    Unavailable(String),
}

impl CudaStatus {
    /// Whether a device can be used.
    pub fn is_available(&self) -> bool {
        matches!(self, CudaStatus::Available { .. })
    }
}

impl std::fmt::Display for CudaStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CudaStatus::Available {
                device_count,
                name,
                compute_capability: (ma, mi),
                driver_version: (dma, dmi),
            } => write!(
                f,
                "{device_count} CUDA device(s); device 0: {name}, sm_{ma}{mi}, driver supports CUDA {dma}.{dmi}"
            ),
            CudaStatus::Unavailable(reason) => write!(f, "CUDA unavailable: {reason}"),
        }
    }
}

/// Looks for the CUDA driver library and a device. Never panics: a missing libcuda, a driver that fails to
/// initialise (no device, no permission, version too old) and zero devices all give
/// [`CudaStatus::Unavailable`].
pub fn probe() -> CudaStatus {
    // SAFETY: `is_culib_present` only tries to dlopen the candidate names of libcuda and closes them again;
    // loading libcuda runs no code of ours and has no preconditions.
    if !unsafe { sys::is_culib_present() } {
        return CudaStatus::Unavailable(
            "the CUDA driver library (libcuda.so) was not found; is an NVIDIA driver installed?"
                .into(),
        );
    }
    // Why catch_unwind: cudarc resolves each driver symbol on first use and panics when a symbol is absent
    // (a driver older than the bindings). That is the only panic path left once the library is known to load,
    // and it must become an `Unavailable`, not abort the caller.
    match catch_unwind(AssertUnwindSafe(probe_loaded)) {
        Ok(status) => status,
        Err(_) => CudaStatus::Unavailable(
            "the CUDA driver library lacks a required symbol (driver too old for CUDA 12.8 bindings)".into(),
        ),
    }
}

/// The probe proper, once libcuda is known to load.
fn probe_loaded() -> CudaStatus {
    let fail =
        |what: &str, e: result::DriverError| CudaStatus::Unavailable(format!("{what}: {e:?}"));
    if let Err(e) = result::init() {
        return fail("cuInit failed", e);
    }
    let count = match result::device::get_count() {
        Ok(n) => n,
        Err(e) => return fail("cuDeviceGetCount failed", e),
    };
    if count <= 0 {
        return CudaStatus::Unavailable("the CUDA driver reports no device".into());
    }
    let dev = match result::device::get(0) {
        Ok(d) => d,
        Err(e) => return fail("cuDeviceGet(0) failed", e),
    };
    let name = match result::device::get_name(dev) {
        Ok(n) => n,
        Err(e) => return fail("cuDeviceGetName failed", e),
    };
    let attr = |a| {
        // SAFETY: `dev` was returned by cuDeviceGet above, as `get_attribute` requires.
        unsafe { result::device::get_attribute(dev, a) }
    };
    let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
    let minor = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
    let (major, minor) = match (major, minor) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return fail("cuDeviceGetAttribute failed", e),
    };
    let mut version: std::ffi::c_int = 0;
    // SAFETY: FFI call writing one int through a valid pointer to a local.
    let rc = unsafe { sys::cuDriverGetVersion(&mut version) };
    if rc != sys::CUresult::CUDA_SUCCESS {
        return CudaStatus::Unavailable(format!("cuDriverGetVersion failed: {rc:?}"));
    }
    CudaStatus::Available {
        device_count: count as usize,
        name,
        compute_capability: (major, minor),
        driver_version: (version / 1000, (version % 1000) / 10),
    }
}

/// One GPU as the driver reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub total_memory: usize,
}

/// The CUDA version the driver supports as (major, minor), from `cuDriverGetVersion` (needs no device), or
/// why there is none.
pub fn driver_cuda_version() -> Result<(u32, u32), String> {
    // SAFETY: only tries to dlopen the candidate names of libcuda and closes them again.
    if !unsafe { sys::is_culib_present() } {
        return Err("libcuda.so.1 was not found; is an NVIDIA driver installed?".into());
    }
    // Why catch_unwind: cudarc panics when the symbol is missing from libcuda.
    let call = catch_unwind(|| {
        let mut version: std::ffi::c_int = 0;
        // SAFETY: FFI call writing one int through a valid pointer to a local.
        let rc = unsafe { sys::cuDriverGetVersion(&mut version) };
        (rc, version)
    });
    match call {
        Ok((sys::CUresult::CUDA_SUCCESS, v)) if v > 0 => {
            Ok(((v / 1000) as u32, ((v % 1000) / 10) as u32))
        }
        Ok((rc, _)) => Err(format!("cuDriverGetVersion failed: {rc:?}")),
        Err(_) => Err("libcuda lacks the symbol cuDriverGetVersion".into()),
    }
}

/// The file libcuda was loaded from, read from `/proc/self/maps` once it is loaded.
pub fn libcuda_path() -> Option<std::path::PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("libcuda.so"))
        })
        .map(std::path::PathBuf::from)
}

/// Every GPU with its name, compute capability and memory, or why they cannot be listed.
pub fn list_gpus() -> Result<Vec<GpuInfo>, String> {
    if let CudaStatus::Unavailable(why) = probe() {
        return Err(why);
    }
    // Why catch_unwind: cudarc panics on a symbol missing from libcuda.
    let listed = catch_unwind(|| -> Result<Vec<GpuInfo>, String> {
        let count =
            result::device::get_count().map_err(|e| format!("cuDeviceGetCount failed: {e:?}"))?;
        let mut out = Vec::new();
        for ordinal in 0..count.max(0) {
            let dev = result::device::get(ordinal)
                .map_err(|e| format!("cuDeviceGet({ordinal}) failed: {e:?}"))?;
            let name = result::device::get_name(dev).unwrap_or_else(|_| "unknown GPU".into());
            let attr = |a| {
                // SAFETY: `dev` was returned by cuDeviceGet above, as `get_attribute` requires.
                unsafe { result::device::get_attribute(dev, a) }.unwrap_or(0)
            };
            let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
            let minor = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
            // SAFETY: `dev` is a valid device handle from cuDeviceGet.
            let total_memory = unsafe { result::device::total_mem(dev) }.unwrap_or(0);
            out.push(GpuInfo {
                ordinal: ordinal as usize,
                name,
                compute_capability: (major, minor),
                total_memory,
            });
        }
        Ok(out)
    });
    listed.unwrap_or_else(|_| Err("the CUDA driver library lacks a required symbol".into()))
}
