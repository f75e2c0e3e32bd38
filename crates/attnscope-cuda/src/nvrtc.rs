//! Run-time compilation of `kernels/*.cu` with NVRTC, loaded dynamically.
//!
//! How libnvrtc is found, in order:
//! 1. the system loader's search (`LD_LIBRARY_PATH`, ldconfig cache, rpath) under the names cudarc tries
//!    (`libnvrtc.so`, `libnvrtc.so.12`, …);
//! 2. otherwise `ATTNSCOPE_NVRTC_LIB` (a `libnvrtc.so*` file, or a directory holding one), then
//!    `$CUDA_HOME/lib64`, `$CUDA_PATH/lib64`, `/usr/local/cuda/lib64`: the library is opened there by full
//!    path and kept loaded, so cudarc's later `dlopen("libnvrtc.so.12")` resolves to it by soname. NVRTC finds
//!    its `libnvrtc-builtins.so` next to itself.
//!
//! The kernels include no CUDA header, so no include directory is required; [`include_paths`] passes the
//! ones that exist anyway.

use attnscope_core::Error;
use attnscope_core::Result;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use cudarc::nvrtc::Ptx;

/// Every kernel file, as `(file name, source)`, embedded at build time.
const KERNELS: &[(&str, &str)] = &[
    (
        "embedding.cu",
        include_str!("../../../kernels/embedding.cu"),
    ),
    ("norm.cu", include_str!("../../../kernels/norm.cu")),
    ("rope.cu", include_str!("../../../kernels/rope.cu")),
    (
        "activation.cu",
        include_str!("../../../kernels/activation.cu"),
    ),
    ("residual.cu", include_str!("../../../kernels/residual.cu")),
    (
        "attention_prefill.cu",
        include_str!("../../../kernels/attention_prefill.cu"),
    ),
    (
        "attention_prefill_fa2.cu",
        include_str!("../../../kernels/attention_prefill_fa2.cu"),
    ),
    (
        "attention_probs.cu",
        include_str!("../../../kernels/attention_probs.cu"),
    ),
    (
        "attention_decode.cu",
        include_str!("../../../kernels/attention_decode.cu"),
    ),
];

/// `kernels/common.cuh`, prepended to every kernel before compiling.
const COMMON: &str = include_str!("../../../kernels/common.cuh");

/// Every `kernels/*.cu` file as `(file name, source)`.
pub fn kernel_sources() -> &'static [(&'static str, &'static str)] {
    KERNELS
}

/// What [`compile_kernel`] prepends to each kernel: the `AttnParams` layout defines generated from
/// `cuda::params` (asserted by common.cuh), then the shared helpers of `kernels/common.cuh`.
pub fn common_header() -> String {
    format!("{}{COMMON}", crate::params::layout_defines())
}

/// Environment variable naming libnvrtc (file or directory) when the loader cannot find it.
pub const NVRTC_LIB_ENV: &str = "ATTNSCOPE_NVRTC_LIB";
/// Environment variable with extra include directories (`:`-separated).
pub const CUDA_INCLUDE_ENV: &str = "ATTNSCOPE_CUDA_INCLUDE";

/// Makes libnvrtc loadable, or says why it is not. The outcome is computed once per process.
fn ensure_nvrtc() -> Result<()> {
    static STATE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    STATE.get_or_init(locate_nvrtc).clone().map_err(Error::cuda)
}

/// Whether cudarc can open libnvrtc under one of its candidate names.
fn nvrtc_loadable() -> bool {
    // SAFETY: `is_culib_present` only dlopens candidate names of libnvrtc and closes them; loading libnvrtc
    // runs no code of ours and has no preconditions.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

fn locate_nvrtc() -> std::result::Result<(), String> {
    if nvrtc_loadable() {
        return Ok(());
    }
    let mut tried = Vec::new();
    for candidate in nvrtc_candidates() {
        tried.push(candidate.display().to_string());
        if preload(&candidate) && nvrtc_loadable() {
            return Ok(());
        }
    }
    Err(format!(
        "libnvrtc.so.12 could not be loaded: not on the loader path (LD_LIBRARY_PATH) and not at {} \
         (set {NVRTC_LIB_ENV} to the library or its directory, or run scripts/install_nvrtc.sh)",
        if tried.is_empty() {
            "any known location".to_string()
        } else {
            tried.join(", ")
        }
    ))
}

/// Library files worth trying by full path.
fn nvrtc_candidates() -> Vec<PathBuf> {
    let mut dirs_or_files: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os(NVRTC_LIB_ENV) {
        dirs_or_files.push(PathBuf::from(p));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(p) = std::env::var_os(var) {
            dirs_or_files.push(Path::new(&p).join("lib64"));
        }
    }
    dirs_or_files.push(PathBuf::from("/usr/local/cuda/lib64"));
    let mut out = Vec::new();
    for p in dirs_or_files {
        if p.is_file() {
            out.push(p);
        } else if p.is_dir() {
            // Prefer the exact soname cudarc asks for, then the unversioned link.
            for name in ["libnvrtc.so.12", "libnvrtc.so"] {
                let f = p.join(name);
                if f.is_file() {
                    out.push(f);
                }
            }
        }
    }
    out
}

/// Opens `path` and keeps it loaded for the life of the process (so that a later open by soname finds it).
#[cfg(unix)]
fn preload(path: &Path) -> bool {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: loading libnvrtc runs only its own initialisers, which have no preconditions; the handle is
    // stored in a static and never closed, so nothing resolved from it can dangle.
    match unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) } {
        Ok(lib) => {
            static KEEP: OnceLock<std::sync::Mutex<Vec<Library>>> = OnceLock::new();
            if let Ok(mut v) = KEEP.get_or_init(Default::default).lock() {
                v.push(lib);
            } else {
                // A poisoned lock: leak the handle instead, which keeps it loaded just the same.
                std::mem::forget(lib);
            }
            true
        }
        Err(_) => false,
    }
}

#[cfg(not(unix))]
fn preload(_path: &Path) -> bool {
    false
}

/// The NVRTC version as (major, minor), or a one-line error when NVRTC cannot be loaded.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    ensure_nvrtc()?;
    let call = || {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: FFI call writing two ints through valid pointers to locals.
        let rc = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
        (rc, major, minor)
    };
    // Why catch_unwind: cudarc panics when a symbol is missing from the loaded library.
    match catch_unwind(call) {
        Ok((cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS, major, minor)) => Ok((major, minor)),
        Ok((rc, _, _)) => Err(Error::cuda(format!("nvrtcVersion failed: {rc:?}"))),
        Err(_) => Err(Error::cuda("libnvrtc lacks the symbol nvrtcVersion")),
    }
}

/// Include directories that exist among `ATTNSCOPE_CUDA_INCLUDE`, `$CUDA_HOME/include`,
/// `$CUDA_PATH/include`, `/usr/local/cuda/include`, `/opt/cuda/include` and the pip wheels' include
/// directories (`nvidia/{cuda_runtime,cuda_nvrtc,cu13}/include` under the active virtualenv's
/// site-packages, or beside the library named by `ATTNSCOPE_NVRTC_LIB`).
pub fn include_paths() -> Vec<PathBuf> {
    let mut cands: Vec<PathBuf> = Vec::new();
    if let Some(list) = std::env::var_os(CUDA_INCLUDE_ENV) {
        cands.extend(std::env::split_paths(&list));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(p) = std::env::var_os(var) {
            cands.push(Path::new(&p).join("include"));
        }
    }
    cands.push(PathBuf::from("/usr/local/cuda/include"));
    cands.push(PathBuf::from("/opt/cuda/include"));
    let mut nvidia_dirs = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV")
        && let Ok(entries) = std::fs::read_dir(Path::new(&venv).join("lib"))
    {
        for e in entries.flatten() {
            nvidia_dirs.push(e.path().join("site-packages").join("nvidia"));
        }
    }
    if let Some(lib) = std::env::var_os(NVRTC_LIB_ENV) {
        // …/site-packages/nvidia/cuda_nvrtc/lib[/libnvrtc.so.12] → …/site-packages/nvidia
        let lib = PathBuf::from(lib);
        let lib_dir = if lib.is_file() {
            lib.parent().map(Path::to_path_buf)
        } else {
            Some(lib)
        };
        if let Some(nvidia) = lib_dir
            .as_deref()
            .and_then(Path::parent)
            .and_then(Path::parent)
        {
            nvidia_dirs.push(nvidia.to_path_buf());
        }
    }
    for nv in nvidia_dirs {
        for pkg in ["cuda_runtime", "cuda_nvrtc", "cu13"] {
            cands.push(nv.join(pkg).join("include"));
        }
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for c in cands {
        if c.is_dir() && !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// Whether `arch` looks like `sm_80`, `sm_90a` or `compute_86`.
fn valid_arch(arch: &str) -> bool {
    let digits = arch
        .strip_prefix("sm_")
        .or_else(|| arch.strip_prefix("compute_"));
    match digits {
        Some(d) => {
            let d = d.strip_suffix('a').unwrap_or(d);
            d.len() >= 2 && d.chars().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

/// Compiles one kernel file (`name` as in [`kernel_sources`], e.g. `"norm.cu"`) for `arch` (e.g. `"sm_80"`)
/// to PTX. `kernels/common.cuh` is prepended, followed by a `#line 1 "<name>"` directive so that compiler
/// messages point into the kernel file. Errors are one line: the kernel file, the architecture and the
/// first compiler error lines; or why NVRTC could not be loaded.
pub fn compile_kernel(name: &str, source: &str, arch: &str) -> Result<Ptx> {
    if !valid_arch(arch) {
        return Err(Error::cuda(format!(
            "kernels/{name}: invalid GPU architecture {arch:?} (expected e.g. sm_80)"
        )));
    }
    if source.contains('\0') || name.contains('\0') || name.contains('"') {
        return Err(Error::cuda(format!(
            "kernels/{name}: the source or name contains a NUL byte or quote"
        )));
    }
    ensure_nvrtc()?;
    let full = format!("{}\n#line 1 \"{name}\"\n{source}", common_header());
    let opts = cudarc::nvrtc::CompileOptions {
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        include_paths: include_paths()
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        name: Some(name.to_string()),
        ..Default::default()
    };
    // Why catch_unwind: cudarc panics on a missing NVRTC symbol and unwraps the retrieval of the log; both
    // must surface as an error naming the kernel rather than a panic.
    let compiled = catch_unwind(AssertUnwindSafe(|| {
        cudarc::nvrtc::compile_ptx_with_opts(&full, opts)
    }));
    match compiled {
        Ok(Ok(ptx)) => Ok(ptx),
        Ok(Err(e)) => Err(Error::cuda(format!(
            "kernels/{name}: NVRTC compile for {arch} failed: {}",
            summarize(&e)
        ))),
        Err(_) => Err(Error::cuda(format!(
            "kernels/{name}: NVRTC panicked while compiling for {arch} (incompatible libnvrtc?)"
        ))),
    }
}

/// The first error lines of an NVRTC failure, joined into one line.
fn summarize(e: &cudarc::nvrtc::CompileError) -> String {
    match e {
        cudarc::nvrtc::CompileError::CompileError { nvrtc, log, .. } => {
            let log = log.to_string_lossy();
            let lines: Vec<&str> = log
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let errors: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.contains("error"))
                .take(3)
                .collect();
            let picked = if errors.is_empty() {
                lines.into_iter().take(3).collect()
            } else {
                errors
            };
            if picked.is_empty() {
                format!("{nvrtc:?}")
            } else {
                picked.join(" | ")
            }
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names_are_checked() {
        for ok in ["sm_80", "sm_90", "sm_90a", "compute_86", "sm_120"] {
            assert!(valid_arch(ok), "{ok}");
        }
        for bad in ["", "sm_", "sm80", "sm_8x", "-arch=sm_80", "sm_80;rm"] {
            assert!(!valid_arch(bad), "{bad}");
        }
        let err = compile_kernel("norm.cu", "", "sm80")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.starts_with("kernels/norm.cu: invalid GPU architecture")));
    }

    #[test]
    fn every_kernel_file_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".cu"))
                    .collect()
            })
            .unwrap_or_default();
        on_disk.sort();
        let mut embedded: Vec<String> = kernel_sources()
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        embedded.sort();
        assert_eq!(
            on_disk, embedded,
            "kernels/*.cu and kernel_sources() differ"
        );
    }

    #[test]
    fn every_kernel_has_a_header_naming_its_cpu_twin() {
        for (name, src) in kernel_sources() {
            let head: String = src.lines().take(6).collect::<Vec<_>>().join("\n");
            assert!(
                head.starts_with(&format!("// {name}:")),
                "{name}: header comment"
            );
            assert!(head.contains("CPU twin"), "{name}: names its CPU twin");
            assert!(
                src.contains("Launch:"),
                "{name}: documents its launch shape"
            );
        }
    }
}
