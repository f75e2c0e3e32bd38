//! The process's choice of CUDA libraries: [`lib_search`](crate::lib_search) fed with the real
//! environment (`ATTNSCOPE_NVRTC_LIB`, `CUDA_HOME`, `CUDA_PATH`, `/usr/local/cuda*`, `LD_LIBRARY_PATH`, the pip
//! wheels of `VIRTUAL_ENV`, `CONDA_PREFIX` and `python3` on PATH, the system library directories) and the
//! driver's CUDA version, computed once per process.

use crate::lib_search::{LibEnv, Selection, select};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Environment variable naming libnvrtc (file or directory); it replaces the NVRTC search.
pub const NVRTC_LIB_ENV: &str = "ATTNSCOPE_NVRTC_LIB";

/// `site-packages` directories under `prefix/lib/python*/`.
fn site_packages_of(prefix: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(prefix.join("lib")) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python"))
        .map(|e| e.path().join("site-packages"))
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

/// The site-packages of `python3` on PATH (empty when there is none or it fails).
fn python_site_packages() -> Vec<PathBuf> {
    let script =
        "import site\nprint('\\n'.join(site.getsitepackages() + [site.getusersitepackages()]))";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .collect(),
        _ => Vec::new(),
    }
}

/// The search inputs of this process, with the driver's CUDA version `driver_cuda`.
pub fn process_env(driver_cuda: Option<(u32, u32)>) -> LibEnv {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut toolkit_roots = Vec::new();
    for name in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(p) = var(name) {
            toolkit_roots.push((p, name.to_string()));
        }
    }
    toolkit_roots.push((PathBuf::from("/usr/local/cuda"), "/usr/local/cuda".into()));
    if let Ok(entries) = std::fs::read_dir("/usr/local") {
        let mut versioned: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("cuda-"))
            .map(|e| e.path())
            .collect();
        versioned.sort();
        versioned.reverse();
        toolkit_roots.extend(versioned.into_iter().map(|p| {
            let label = p.display().to_string();
            (p, label)
        }));
    }
    let ld_library_path = std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut site_packages = Vec::new();
    let mut other_dirs = Vec::new();
    for name in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(prefix) = var(name) {
            site_packages.extend(
                site_packages_of(&prefix)
                    .into_iter()
                    .map(|s| (s, name.to_string())),
            );
            if name == "CONDA_PREFIX" {
                other_dirs.push((prefix.join("lib"), name.to_string()));
            }
        }
    }
    for s in python_site_packages() {
        if !site_packages.iter().any(|(p, _)| *p == s) {
            site_packages.push((s, "python3 on PATH".into()));
        }
    }
    for d in ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"] {
        other_dirs.push((PathBuf::from(d), "system".into()));
    }
    LibEnv {
        nvrtc_override: var(NVRTC_LIB_ENV),
        toolkit_roots,
        ld_library_path,
        site_packages,
        other_dirs,
        driver_cuda,
    }
}

/// The libraries this process uses, chosen on first call.
pub fn selection() -> &'static Selection {
    static SELECTION: OnceLock<Selection> = OnceLock::new();
    SELECTION.get_or_init(|| select(&process_env(crate::device::driver_cuda_version().ok())))
}
