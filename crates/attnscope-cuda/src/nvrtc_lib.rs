//! libnvrtc opened by full path (CUDA 12 or 13), with the few functions the kernels need.
//!
//! Our own FFI instead of cudarc's NVRTC bindings: those open libnvrtc by name only (`.so.12`, unversioned),
//! lazily, and panic on a missing symbol. Here every symbol is resolved when the library is opened, so a
//! missing one is a one-line error naming the file; the C API used is the same in CUDA 12 and 13.

use libloading::Library;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

type Program = *mut c_void;
type CreateProgram = unsafe extern "C" fn(
    *mut Program,
    *const c_char,
    *const c_char,
    c_int,
    *const *const c_char,
    *const *const c_char,
) -> c_int;
type CompileProgram = unsafe extern "C" fn(Program, c_int, *const *const c_char) -> c_int;
type DestroyProgram = unsafe extern "C" fn(*mut Program) -> c_int;
type GetSize = unsafe extern "C" fn(Program, *mut usize) -> c_int;
type GetBytes = unsafe extern "C" fn(Program, *mut c_char) -> c_int;
type Version = unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int;
type GetErrorString = unsafe extern "C" fn(c_int) -> *const c_char;
type GetNumSupportedArchs = unsafe extern "C" fn(*mut c_int) -> c_int;
type GetSupportedArchs = unsafe extern "C" fn(*mut c_int) -> c_int;

/// What one compile produced: the PTX text and the CUBIN of the real architecture it was compiled for (empty
/// for a virtual `compute_XX`).
#[derive(Clone, Debug)]
pub struct CompiledKernel {
    pub ptx: String,
    pub cubin: Vec<u8>,
}

/// Why a compile failed: the NVRTC error name and the program log.
#[derive(Clone, Debug)]
pub struct CompileFailure {
    pub error: String,
    pub log: String,
}

/// A loaded libnvrtc.
pub struct NvrtcLib {
    pub path: PathBuf,
    /// (major, minor) from nvrtcVersion.
    pub version: (i32, i32),
    /// The SM numbers it can compile for (80, 90, …); `None` when it cannot say.
    pub supported_archs: Option<Vec<i32>>,
    create: CreateProgram,
    compile: CompileProgram,
    destroy: DestroyProgram,
    log_size: GetSize,
    log: GetBytes,
    ptx_size: GetSize,
    ptx: GetBytes,
    cubin_size: GetSize,
    cubin: GetBytes,
    error_string: GetErrorString,
    /// Keeps the function pointers above valid; never unloaded before them (dropped last).
    _lib: Library,
    _builtins: Option<Library>,
}

/// Opens a library file by full path, as a one-line error naming it.
pub(crate) fn open_library(path: &Path) -> Result<Library, String> {
    // SAFETY: FFI boundary: loading a CUDA library runs only its own initialisers, which have no
    // preconditions; the handle is kept as long as anything resolved from it.
    unsafe { Library::new(path) }.map_err(|e| format!("{}: cannot be opened: {e}", path.display()))
}

/// Resolves symbol `name` of `lib` as a function pointer of type `F`.
///
/// # Safety
/// `F` must be the C signature of `name`, and the pointer must not outlive `lib`.
pub(crate) unsafe fn symbol<F: Copy>(lib: &Library, path: &Path, name: &str) -> Result<F, String> {
    // SAFETY: the caller guarantees that `F` is the symbol's signature.
    unsafe { lib.get::<F>(name.as_bytes()) }
        .map(|s| *s)
        .map_err(|_| format!("{}: lacks the symbol {name}", path.display()))
}

/// `libnvrtc-builtins.so.<major>.<minor>` beside `nvrtc`, which libnvrtc opens by soname when it compiles.
fn builtins_beside(nvrtc: &Path) -> Option<PathBuf> {
    let dir = nvrtc.parent()?;
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libnvrtc-builtins.so."))
        })
        .collect();
    names.sort();
    names.into_iter().next()
}

impl NvrtcLib {
    /// Opens libnvrtc at `path` (and, first, the builtins library beside it, so that libnvrtc's own
    /// open by soname finds it already loaded), resolving every function used.
    pub fn open(path: &Path) -> Result<NvrtcLib, String> {
        let builtins = builtins_beside(path).and_then(|b| open_library(&b).ok());
        let lib = open_library(path)?;
        // SAFETY: each type alias is the C signature of the NVRTC function of that name (nvrtc.h, identical
        // in CUDA 12 and 13); the pointers live in the same struct as `lib`, which is dropped after them.
        unsafe {
            let version: Version = symbol(&lib, path, "nvrtcVersion")?;
            let (mut major, mut minor) = (0, 0);
            let rc = version(&mut major, &mut minor);
            if rc != 0 {
                return Err(format!("{}: nvrtcVersion failed ({rc})", path.display()));
            }
            let supported_archs =
                symbol::<GetNumSupportedArchs>(&lib, path, "nvrtcGetNumSupportedArchs")
                    .ok()
                    .zip(symbol::<GetSupportedArchs>(&lib, path, "nvrtcGetSupportedArchs").ok())
                    .and_then(|(num, get)| {
                        let mut n = 0;
                        if num(&mut n) != 0 || n <= 0 {
                            return None;
                        }
                        let mut archs = vec![0; n as usize];
                        (get(archs.as_mut_ptr()) == 0).then_some(archs)
                    });
            Ok(NvrtcLib {
                path: path.to_path_buf(),
                version: (major, minor),
                supported_archs,
                create: symbol(&lib, path, "nvrtcCreateProgram")?,
                compile: symbol(&lib, path, "nvrtcCompileProgram")?,
                destroy: symbol(&lib, path, "nvrtcDestroyProgram")?,
                log_size: symbol(&lib, path, "nvrtcGetProgramLogSize")?,
                log: symbol(&lib, path, "nvrtcGetProgramLog")?,
                ptx_size: symbol(&lib, path, "nvrtcGetPTXSize")?,
                ptx: symbol(&lib, path, "nvrtcGetPTX")?,
                cubin_size: symbol(&lib, path, "nvrtcGetCUBINSize")?,
                cubin: symbol(&lib, path, "nvrtcGetCUBIN")?,
                error_string: symbol(&lib, path, "nvrtcGetErrorString")?,
                _lib: lib,
                _builtins: builtins,
            })
        }
    }

    /// The name of NVRTC result code `rc`, e.g. `NVRTC_ERROR_COMPILATION`.
    fn error_name(&self, rc: c_int) -> String {
        // SAFETY: nvrtcGetErrorString returns a static NUL-terminated string (or null) for any code.
        let p = unsafe { (self.error_string)(rc) };
        if p.is_null() {
            return format!("NVRTC error {rc}");
        }
        // SAFETY: non-null, NUL-terminated and static, as above.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// Reads one of the program's outputs (log, PTX, CUBIN) through its size and copy functions.
    fn output(&self, prog: Program, size: GetSize, get: GetBytes) -> Result<Vec<u8>, c_int> {
        let mut n = 0usize;
        // SAFETY: `prog` is a live program (created and not yet destroyed); `n` is a valid out-pointer.
        let rc = unsafe { size(prog, &mut n) };
        if rc != 0 {
            return Err(rc);
        }
        let mut buf = vec![0u8; n];
        if n > 0 {
            // SAFETY: `buf` holds exactly the `n` bytes NVRTC said it will write.
            let rc = unsafe { get(prog, buf.as_mut_ptr().cast()) };
            if rc != 0 {
                return Err(rc);
            }
        }
        Ok(buf)
    }

    /// Compiles CUDA `source` (named `name` in messages) with `options` to PTX and CUBIN. The options must
    /// name a real architecture (`--gpu-architecture=sm_XX`) for a CUBIN to exist.
    pub fn compile(
        &self,
        name: &str,
        source: &str,
        options: &[String],
    ) -> Result<CompiledKernel, CompileFailure> {
        let fail = |error: String, log: String| CompileFailure { error, log };
        let c_src = CString::new(source)
            .map_err(|_| fail("the source contains a NUL byte".into(), String::new()))?;
        let c_name = CString::new(name)
            .map_err(|_| fail("the name contains a NUL byte".into(), String::new()))?;
        let c_opts: Vec<CString> = options
            .iter()
            .map(|o| CString::new(o.as_str()))
            .collect::<Result<_, _>>()
            .map_err(|_| fail("an option contains a NUL byte".into(), String::new()))?;
        let opt_ptrs: Vec<*const c_char> = c_opts.iter().map(|o| o.as_ptr()).collect();
        let mut prog: Program = std::ptr::null_mut();
        // SAFETY: the strings are NUL-terminated and outlive the call; no headers are passed (0, null).
        let rc = unsafe {
            (self.create)(
                &mut prog,
                c_src.as_ptr(),
                c_name.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(fail(
                format!("nvrtcCreateProgram: {}", self.error_name(rc)),
                String::new(),
            ));
        }
        // SAFETY: `prog` was created above; `opt_ptrs` holds options.len() pointers to live C strings.
        let rc = unsafe { (self.compile)(prog, opt_ptrs.len() as c_int, opt_ptrs.as_ptr()) };
        let log = self
            .output(prog, self.log_size, self.log)
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .trim_end_matches('\0')
                    .to_string()
            })
            .unwrap_or_default();
        let outputs = if rc != 0 {
            Err(fail(self.error_name(rc), log))
        } else {
            let ptx = self.output(prog, self.ptx_size, self.ptx);
            // A virtual architecture (compute_XX) gives PTX only: its CUBIN is left empty.
            let virtual_arch = options
                .iter()
                .any(|o| o.starts_with("--gpu-architecture=compute_"));
            let cubin = if virtual_arch {
                Ok(Vec::new())
            } else {
                self.output(prog, self.cubin_size, self.cubin)
            };
            match (ptx, cubin) {
                (Ok(p), Ok(c)) => Ok(CompiledKernel {
                    ptx: String::from_utf8_lossy(&p)
                        .trim_end_matches('\0')
                        .to_string(),
                    cubin: c,
                }),
                (Err(e), _) => Err(fail(format!("nvrtcGetPTX: {}", self.error_name(e)), log)),
                (_, Err(e)) => Err(fail(
                    format!(
                        "nvrtcGetCUBIN: {} (was a real sm_XX given?)",
                        self.error_name(e)
                    ),
                    log,
                )),
            }
        };
        // SAFETY: `prog` is live and destroyed exactly once, after its last use.
        unsafe { (self.destroy)(&mut prog) };
        outputs
    }
}

/// The NVRTC this process compiles with (the chosen set's, else the newest usable one), opened once.
pub fn loaded() -> Result<&'static NvrtcLib, String> {
    static LIB: OnceLock<Result<NvrtcLib, String>> = OnceLock::new();
    LIB.get_or_init(|| {
        let chosen = crate::libraries::selection().nvrtc_or_why()?;
        NvrtcLib::open(&chosen.path)
    })
    .as_ref()
    .map_err(Clone::clone)
}
