//! `attnscope doctor`: what the CUDA backend finds on this host, one line each, and whether a GPU is usable
//! with a consistent set of libraries (and if not, why).

use crate::cublas::CublasLib;
use crate::device::{driver_cuda_version, libcuda_path, list_gpus};
use crate::kernel_cache::{KernelFormat, cache_dir};
use crate::libraries::selection;
use crate::nvrtc_lib;

/// The findings, and the verdict: `Ok(summary)` when GPU 0 is usable, else the first reason it is not.
#[derive(Clone, Debug)]
pub struct DoctorReport {
    pub lines: Vec<String>,
    pub verdict: Result<String, String>,
}

/// Whether files can be written in `dir` (creating it), tried with a probe file that is removed again.
fn writable(dir: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let probe = dir.join(format!(".doctor-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Looks at the driver, the GPUs, the libraries and the kernel cache. Never panics.
pub fn doctor() -> DoctorReport {
    let mut lines = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let driver = driver_cuda_version();
    match &driver {
        Ok((a, b)) => {
            let path =
                libcuda_path().map_or("libcuda.so.1".to_string(), |p| p.display().to_string());
            lines.push(format!(
                "libcuda: {path} (the driver supports CUDA {a}.{b})"
            ));
        }
        Err(e) => {
            lines.push(format!("libcuda: not usable: {e}"));
            problems.push(e.clone());
        }
    }
    let mut arch0 = None;
    if driver.is_ok() {
        match list_gpus() {
            Ok(gpus) => {
                for g in &gpus {
                    let (ma, mi) = g.compute_capability;
                    let gib = g.total_memory as f64 / (1u64 << 30) as f64;
                    let note = if ma < 8 {
                        " (not usable: the kernels need sm_80 or newer)"
                    } else {
                        ""
                    };
                    lines.push(format!(
                        "GPU {}: {}, sm_{ma}{mi}, {gib:.1} GiB{note}",
                        g.ordinal, g.name
                    ));
                }
                match gpus.first() {
                    Some(g) if g.compute_capability.0 >= 8 => arch0 = Some(g.compute_capability),
                    Some(g) => problems.push(format!("GPU 0 ({}) is older than sm_80", g.name)),
                    None => problems.push("the driver reports no GPU".into()),
                }
            }
            Err(e) => {
                lines.push(format!("GPU: none: {e}"));
                problems.push(e);
            }
        }
    } else {
        lines.push("GPU: none (no driver)".into());
    }
    let sel = selection();
    for r in &sel.rejected {
        lines.push(format!("unusable: {r}"));
    }
    let origin = |c: &Result<crate::lib_search::Candidate, String>| {
        c.as_ref().map_or(String::new(), |c| c.origin.clone())
    };
    let nvrtc = nvrtc_lib::loaded();
    match &nvrtc {
        Ok(l) => {
            let (ma, mi) = l.version;
            lines.push(format!(
                "NVRTC: {} (version {ma}.{mi}, from {})",
                l.path.display(),
                origin(&sel.nvrtc)
            ));
            if let (Some((cc_ma, cc_mi)), Some(archs)) = (arch0, &l.supported_archs)
                && !archs.contains(&(cc_ma * 10 + cc_mi))
            {
                problems.push(format!(
                    "NVRTC {ma}.{mi} ({}) does not know sm_{cc_ma}{cc_mi}; use a newer NVRTC",
                    l.path.display()
                ));
            }
        }
        Err(e) => {
            let short = sel.nvrtc.as_ref().err().unwrap_or(e);
            lines.push(format!("NVRTC: not usable: {short}"));
            problems.push(short.clone());
        }
    }
    let cublas = CublasLib::loaded();
    match &cublas {
        Ok(c) => {
            let (a, b, p) = c.version;
            let from = sel
                .set
                .as_ref()
                .map_or(String::new(), |s| s.cublas.origin.clone());
            lines.push(format!(
                "cuBLAS: {} (version {a}.{b}.{p}, from {from})",
                c.path.display()
            ));
        }
        Err(e) => {
            let short = sel.set.as_ref().err().unwrap_or(e);
            lines.push(format!("cuBLAS: not usable: {short}"));
            problems.push(short.clone());
        }
    }
    match &sel.set {
        Ok(set) => {
            lines.push(format!("chosen: {}", set.why));
            if let Ok(l) = &nvrtc
                && l.version.0 as u32 != set.major
            {
                problems.push(format!(
                    "{} reports NVRTC {}.{}, not CUDA {}",
                    l.path.display(),
                    l.version.0,
                    l.version.1,
                    set.major
                ));
            }
            if let Ok(c) = &cublas
                && c.version.0 as u32 != set.major
            {
                problems.push(format!(
                    "{} reports cuBLAS {}, not CUDA {}",
                    c.path.display(),
                    c.version.0,
                    set.major
                ));
            }
        }
        Err(_) => lines.push("chosen: none (see the cuBLAS line)".into()),
    }
    lines.push(format!("searched: {}", sel.looked.join(", ")));
    match KernelFormat::from_env() {
        Ok(KernelFormat::Cubin) => {
            lines.push("kernel format: CUBIN for the GPU's exact architecture".into())
        }
        Ok(KernelFormat::Ptx) => {
            lines.push("kernel format: PTX (ATTNSCOPE_KERNEL_FORMAT=ptx), JIT by the driver".into())
        }
        Err(e) => {
            lines.push(format!("kernel format: {e}"));
            problems.push(e.to_string());
        }
    }
    match cache_dir() {
        Some(d) => match writable(&d) {
            Ok(()) => lines.push(format!("kernel cache: {}", d.display())),
            Err(e) => lines.push(format!(
                "kernel cache: {} is not writable ({e}): kernels compile on every run",
                d.display()
            )),
        },
        None => lines.push(
            "kernel cache: none (set ATTNSCOPE_CACHE_DIR or HOME): kernels compile on every run"
                .into(),
        ),
    }
    let verdict = match problems.into_iter().next() {
        Some(p) => Err(format!("no usable GPU: {p}")),
        None => {
            let set = sel.set.as_ref().map_or(0, |s| s.major);
            Ok(format!(
                "GPU 0 is usable with CUDA {set} (NVRTC and cuBLAS of one major)"
            ))
        }
    };
    DoctorReport { lines, verdict }
}
