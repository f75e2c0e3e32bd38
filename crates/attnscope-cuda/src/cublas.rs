//! libcublas opened by full path (CUDA 12 or 13, the major of the chosen set), with the functions the backend
//! calls: create/destroy a handle, bind it to the stream, `cublasGemmEx`, and the version for `doctor`.
//!
//! Enums are passed as the plain C ints of cublas_api.h / library_types.h, which are the same in 12 and 13.

use crate::nvrtc_lib::{open_library, symbol};
use cudarc::driver::CudaStream;
use libloading::Library;
use std::ffi::{c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// `cudaDataType_t` values (library_types.h).
pub const CUDA_R_32F: c_int = 0;
pub const CUDA_R_16F: c_int = 2;
pub const CUDA_R_16BF: c_int = 14;
/// `cublasOperation_t`.
pub const CUBLAS_OP_N: c_int = 0;
pub const CUBLAS_OP_T: c_int = 1;
/// `cublasComputeType_t::CUBLAS_COMPUTE_32F` (strict f32, no TF32).
pub const CUBLAS_COMPUTE_32F: c_int = 68;
/// `cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT`.
pub const CUBLAS_GEMM_DEFAULT: c_int = -1;

type Handle = *mut c_void;
type Create = unsafe extern "C" fn(*mut Handle) -> c_int;
type Destroy = unsafe extern "C" fn(Handle) -> c_int;
type SetStream = unsafe extern "C" fn(Handle, *mut c_void) -> c_int;
type GetProperty = unsafe extern "C" fn(c_int, *mut c_int) -> c_int;
#[allow(clippy::type_complexity)]
type GemmEx = unsafe extern "C" fn(
    Handle,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    *const c_void,
    *const c_void,
    c_int,
    c_int,
    *const c_void,
    c_int,
    c_int,
    *const c_void,
    *mut c_void,
    c_int,
    c_int,
    c_int,
    c_int,
) -> c_int;

/// A loaded libcublas.
pub struct CublasLib {
    pub path: PathBuf,
    /// (major, minor, patch) from cublasGetProperty.
    pub version: (i32, i32, i32),
    create: Create,
    destroy: Destroy,
    set_stream: SetStream,
    gemm_ex: GemmEx,
    /// Keeps the function pointers valid (dropped after them).
    _lib: Library,
    _lt: Option<Library>,
}

impl CublasLib {
    /// Opens libcublas at `path`; first libcublasLt of the same major beside it, so that libcublas's
    /// dependency on it resolves to that file whatever the loader path holds.
    pub fn open(path: &Path, major: u32) -> Result<CublasLib, String> {
        let lt = path
            .parent()
            .map(|d| d.join(format!("libcublasLt.so.{major}")))
            .filter(|p| p.exists())
            .and_then(|p| open_library(&p).ok());
        let lib = open_library(path)?;
        // SAFETY: each alias is the C signature of the cuBLAS function of that name (cublas_api.h, the same in
        // CUDA 12 and 13); the pointers live in the struct that owns `lib`.
        unsafe {
            let get_property: GetProperty = symbol(&lib, path, "cublasGetProperty")?;
            let mut v = [0; 3];
            for (i, slot) in v.iter_mut().enumerate() {
                if get_property(i as c_int, slot) != 0 {
                    return Err(format!("{}: cublasGetProperty failed", path.display()));
                }
            }
            Ok(CublasLib {
                path: path.to_path_buf(),
                version: (v[0], v[1], v[2]),
                create: symbol(&lib, path, "cublasCreate_v2")?,
                destroy: symbol(&lib, path, "cublasDestroy_v2")?,
                set_stream: symbol(&lib, path, "cublasSetStream_v2")?,
                gemm_ex: symbol(&lib, path, "cublasGemmEx")?,
                _lib: lib,
                _lt: lt,
            })
        }
    }

    /// The cuBLAS of the process's consistent library set, opened once.
    pub fn loaded() -> Result<&'static CublasLib, String> {
        static LIB: OnceLock<Result<CublasLib, String>> = OnceLock::new();
        LIB.get_or_init(|| {
            let set = crate::libraries::selection().set_or_why()?;
            CublasLib::open(&set.cublas.path, set.major)
        })
        .as_ref()
        .map_err(Clone::clone)
    }
}

/// A cuBLAS handle bound to one stream; destroyed on drop (the stream keeps its CUDA context alive until then).
pub struct BlasHandle {
    lib: &'static CublasLib,
    handle: Handle,
    stream: Arc<CudaStream>,
}

// SAFETY: a cuBLAS handle may be used from any thread as long as calls are not concurrent; the backend issues
// all of them on its one stream from one thread at a time (GpuContext is shared read-only, and every caller
// holds the engine exclusively while it runs).
unsafe impl Send for BlasHandle {}
// SAFETY: as above.
unsafe impl Sync for BlasHandle {}

/// One `cublasGemmEx` call, in cuBLAS's column-major terms.
pub struct GemmArgs {
    pub trans_a: c_int,
    pub trans_b: c_int,
    pub m: i32,
    pub n: i32,
    pub k: i32,
    pub a: u64,
    pub a_type: c_int,
    pub lda: i32,
    pub b: u64,
    pub b_type: c_int,
    pub ldb: i32,
    pub c: u64,
    pub c_type: c_int,
    pub ldc: i32,
}

impl BlasHandle {
    /// Creates a handle in the context of `stream` and binds it to that stream.
    pub fn new(lib: &'static CublasLib, stream: Arc<CudaStream>) -> Result<BlasHandle, String> {
        stream
            .context()
            .bind_to_thread()
            .map_err(|e| format!("binding the CUDA context for cuBLAS: {e:?}"))?;
        let mut handle: Handle = std::ptr::null_mut();
        // SAFETY: `handle` is a valid out-pointer; the stream's CUDA context is current (bound above).
        let rc = unsafe { (lib.create)(&mut handle) };
        if rc != 0 {
            return Err(format!(
                "{}: cublasCreate_v2 failed (status {rc})",
                lib.path.display()
            ));
        }
        let cu_stream: *mut c_void = stream.cu_stream().cast();
        let blas = BlasHandle {
            lib,
            handle,
            stream,
        };
        // SAFETY: `handle` was just created; `cu_stream` is the live stream that `blas` holds.
        let rc = unsafe { (lib.set_stream)(blas.handle, cu_stream) };
        if rc != 0 {
            return Err(format!(
                "{}: cublasSetStream_v2 failed (status {rc})",
                lib.path.display()
            ));
        }
        Ok(blas)
    }

    /// `C = A·B` with f32 alpha = 1, beta = 0 and f32 accumulation ([`CUBLAS_COMPUTE_32F`]).
    ///
    /// # Safety
    /// `a`, `b` and `c` must be live device buffers of the stated types holding the elements that the
    /// dimensions and leading dimensions address.
    pub unsafe fn gemm_ex(&self, g: &GemmArgs) -> Result<(), String> {
        let (alpha, beta) = (1.0f32, 0.0f32);
        // SAFETY: the handle is live; alpha/beta are f32 as CUBLAS_COMPUTE_32F requires and outlive the call;
        // the caller vouches for the device pointers.
        let rc = unsafe {
            (self.lib.gemm_ex)(
                self.handle,
                g.trans_a,
                g.trans_b,
                g.m,
                g.n,
                g.k,
                (&alpha as *const f32).cast(),
                g.a as *const c_void,
                g.a_type,
                g.lda,
                g.b as *const c_void,
                g.b_type,
                g.ldb,
                (&beta as *const f32).cast(),
                g.c as *mut c_void,
                g.c_type,
                g.ldc,
                CUBLAS_COMPUTE_32F,
                CUBLAS_GEMM_DEFAULT,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(format!("cublasGemmEx status {rc}"))
        }
    }
}

impl Drop for BlasHandle {
    fn drop(&mut self) {
        // Best effort: the handle belongs to this context; a failure here only leaks it.
        let _ = self.stream.context().bind_to_thread();
        // SAFETY: the handle was created by cublasCreate_v2 and is destroyed exactly once.
        unsafe { (self.lib.destroy)(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_no_library_is_a_one_line_error_naming_it() {
        let dir = tempfile::TempDir::new().unwrap();
        let fake = dir.path().join("libcublas.so.13");
        std::fs::write(&fake, b"not an ELF file").unwrap();
        let err = CublasLib::open(&fake, 13).err().unwrap();
        assert!(
            err.starts_with(&format!("{}: cannot be opened", fake.display())),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
        let fake = dir.path().join("libnvrtc.so.13");
        std::fs::write(&fake, b"").unwrap();
        let err = crate::nvrtc_lib::NvrtcLib::open(&fake).err().unwrap();
        assert!(
            err.starts_with(&format!("{}: cannot be opened", fake.display())),
            "{err}"
        );
    }
}
