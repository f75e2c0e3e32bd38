//! Run-time compilation of `kernels/*.cu` with NVRTC (our own FFI, `nvrtc_lib`), to CUBIN for the device's
//! exact architecture, or to PTX on request.
//!
//! Which libnvrtc: the one `libraries` chose (CUDA 12 or 13, consistent with cuBLAS and not newer than the
//! driver; `ATTNSCOPE_NVRTC_LIB` names one explicitly), opened by full path.
//!
//! The kernels include no CUDA header, so no include directory is required; [`include_paths`] passes the
//! ones that exist anyway.

use attnscope_core::Error;
use attnscope_core::Result;
use std::path::{Path, PathBuf};

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

pub use crate::libraries::NVRTC_LIB_ENV;
/// Environment variable with extra include directories (`:`-separated).
pub const CUDA_INCLUDE_ENV: &str = "ATTNSCOPE_CUDA_INCLUDE";

/// The loaded NVRTC, or why there is none (one line).
pub fn loaded_nvrtc() -> Result<&'static crate::nvrtc_lib::NvrtcLib> {
    crate::nvrtc_lib::loaded().map_err(Error::cuda)
}

/// The NVRTC version as (major, minor), or a one-line error when NVRTC cannot be loaded.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    loaded_nvrtc().map(|l| l.version)
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

/// The program NVRTC compiles for kernel file `name`: the generated `AttnParams` defines and
/// `kernels/common.cuh`, then a `#line 1 "<name>"` directive (so messages point into the kernel file) and the
/// source. Errors name the file.
pub fn kernel_program(name: &str, source: &str) -> Result<String> {
    if source.contains('\0') || name.contains('\0') || name.contains('"') {
        return Err(Error::cuda(format!(
            "kernels/{name}: the source or name contains a NUL byte or quote"
        )));
    }
    Ok(format!("{}\n#line 1 \"{name}\"\n{source}", common_header()))
}

/// The NVRTC options for `arch`: the architecture, C++17, and `--include-path=` for each [`include_paths`].
pub fn compile_options(arch: &str) -> Vec<String> {
    let mut opts = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
    ];
    opts.extend(
        include_paths()
            .iter()
            .map(|p| format!("--include-path={}", p.display())),
    );
    opts
}

/// Checks that `arch` is well formed and that the loaded NVRTC can compile for it.
fn check_arch(name: &str, arch: &str, lib: Option<&crate::nvrtc_lib::NvrtcLib>) -> Result<()> {
    if !valid_arch(arch) {
        return Err(Error::cuda(format!(
            "kernels/{name}: invalid GPU architecture {arch:?} (expected e.g. sm_80)"
        )));
    }
    let number: i32 = arch
        .trim_start_matches("sm_")
        .trim_start_matches("compute_")
        .trim_end_matches('a')
        .parse()
        .unwrap_or(0);
    if let Some(lib) = lib
        && let Some(archs) = &lib.supported_archs
        && !archs.contains(&number)
    {
        let (ma, mi) = lib.version;
        let newest = archs.iter().max().copied().unwrap_or(0);
        return Err(Error::cuda(format!(
            "kernels/{name}: NVRTC {ma}.{mi} ({}) does not know {arch} (newest it knows: sm_{newest}); use a newer NVRTC",
            lib.path.display()
        )));
    }
    Ok(())
}

/// Compiles one kernel file (`name` as in [`kernel_sources`], e.g. `"norm.cu"`) for the real architecture
/// `arch` (e.g. `"sm_90"`): the PTX and the CUBIN of one NVRTC run. Errors are one line: the kernel file,
/// the architecture and the first compiler error lines; or why NVRTC could not be loaded.
pub fn compile_kernel_image(
    name: &str,
    source: &str,
    arch: &str,
) -> Result<crate::nvrtc_lib::CompiledKernel> {
    check_arch(name, arch, None)?;
    let program = kernel_program(name, source)?;
    let lib = loaded_nvrtc()?;
    check_arch(name, arch, Some(lib))?;
    lib.compile(name, &program, &compile_options(arch))
        .map_err(|f| {
            Error::cuda(format!(
                "kernels/{name}: NVRTC compile for {arch} failed: {}",
                summarize(&f)
            ))
        })
}

/// [`compile_kernel_image`]'s PTX (e.g. for dumping; the backend loads CUBIN unless
/// `ATTNSCOPE_KERNEL_FORMAT=ptx`).
pub fn compile_kernel(name: &str, source: &str, arch: &str) -> Result<Ptx> {
    compile_kernel_image(name, source, arch).map(|k| Ptx::from_src(k.ptx))
}

/// [`compile_kernel_image`]'s CUBIN: what the backend loads.
pub fn compile_kernel_cubin(name: &str, source: &str, arch: &str) -> Result<Vec<u8>> {
    if !arch.starts_with("sm_") {
        return Err(Error::cuda(format!(
            "kernels/{name}: a CUBIN needs a real architecture (sm_XX), not {arch:?}"
        )));
    }
    compile_kernel_image(name, source, arch).map(|k| k.cubin)
}

/// The first error lines of an NVRTC failure, joined into one line.
fn summarize(f: &crate::nvrtc_lib::CompileFailure) -> String {
    let lines: Vec<&str> = f
        .log
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
        f.error.clone()
    } else {
        picked.join(" | ")
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
