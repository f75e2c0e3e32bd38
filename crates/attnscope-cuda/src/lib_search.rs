//! Finding one consistent set of NVRTC + cuBLAS (CUDA 12 or 13) on disk, without opening anything.
//!
//! Pure: the environment, the directories and the driver's CUDA version are inputs ([`LibEnv`]), so the
//! choice is unit-tested on fake directory trees. `libraries` feeds it the real process environment.
//!
//! The rule: every `libnvrtc.so*` / `libcublas.so*` under the search directories is a candidate of the CUDA
//! major in its file name (`.so.13`, `.so.12.8.93`; an unversioned `.so` counts by the name its symlink
//! resolves to). A major is eligible when it is 12 or 13 and not newer than the CUDA version the driver
//! supports (any, when no driver is known). The newest eligible major with both an NVRTC and a cuBLAS wins;
//! within a major the first directory in search order wins. `ATTNSCOPE_NVRTC_LIB` (file or directory)
//! replaces the NVRTC search, and its directory is searched first for cuBLAS.

use std::path::{Path, PathBuf};

/// The CUDA majors this binary can drive (the NVRTC and cuBLAS C APIs it calls are the same in both).
pub const SUPPORTED_MAJORS: [u32; 2] = [13, 12];

/// What the search looks at. Every field is an input, so tests can point it at a fake tree.
#[derive(Clone, Debug, Default)]
pub struct LibEnv {
    /// `ATTNSCOPE_NVRTC_LIB`: a libnvrtc file or a directory holding one.
    pub nvrtc_override: Option<PathBuf>,
    /// `CUDA_HOME`, `CUDA_PATH`, then default toolkit roots (`/usr/local/cuda`, `/usr/local/cuda-*`).
    pub toolkit_roots: Vec<(PathBuf, String)>,
    /// `LD_LIBRARY_PATH` entries.
    pub ld_library_path: Vec<PathBuf>,
    /// Python site-packages directories (from `VIRTUAL_ENV`, `CONDA_PREFIX` and `python3` on PATH).
    pub site_packages: Vec<(PathBuf, String)>,
    /// Other library directories (`$CONDA_PREFIX/lib`, the system's).
    pub other_dirs: Vec<(PathBuf, String)>,
    /// The CUDA version the driver supports as (major, minor); `None` without a driver.
    pub driver_cuda: Option<(u32, u32)>,
}

/// The directories of the pip wheels that hold NVRTC or cuBLAS, relative to site-packages.
pub const WHEEL_LIB_DIRS: [&str; 3] = [
    "nvidia/cu13/lib",
    "nvidia/cuda_nvrtc/lib",
    "nvidia/cublas/lib",
];

/// Which library a candidate is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LibKind {
    Nvrtc,
    Cublas,
}

impl LibKind {
    /// The file-name stem, e.g. `libnvrtc.so`.
    pub fn stem(self) -> &'static str {
        match self {
            LibKind::Nvrtc => "libnvrtc.so",
            LibKind::Cublas => "libcublas.so",
        }
    }
}

/// One library file found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub path: PathBuf,
    /// CUDA major from the file name (or its symlink target).
    pub major: u32,
    /// The longest version in the names seen (e.g. "13.0.48"), else the major.
    pub version: String,
    /// Where it was found, e.g. "CUDA_HOME" or "pip wheel (/venv/lib/python3.11/site-packages)".
    pub origin: String,
}

impl std::fmt::Display for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}, from {})",
            self.path.display(),
            self.version,
            self.origin
        )
    }
}

/// A consistent NVRTC + cuBLAS of one major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LibSet {
    pub major: u32,
    pub nvrtc: Candidate,
    pub cublas: Candidate,
    /// Why this major, in one line.
    pub why: String,
}

impl Selection {
    /// The set, or why there is none followed by every place looked in (one line).
    pub fn set_or_why(&self) -> Result<&LibSet, String> {
        self.set
            .as_ref()
            .map_err(|e| format!("{e}; looked in {}", self.looked.join(", ")))
    }

    /// The NVRTC, or why there is none followed by every place looked in (one line).
    pub fn nvrtc_or_why(&self) -> Result<&Candidate, String> {
        self.nvrtc
            .as_ref()
            .map_err(|e| format!("{e}; looked in {}", self.looked.join(", ")))
    }
}

/// The outcome of the search.
#[derive(Clone, Debug)]
pub struct Selection {
    /// The set the GPU backend uses, or why there is none (one line, listing where it looked).
    pub set: Result<LibSet, String>,
    /// The NVRTC for compiling alone (no GPU needed): the set's, else the newest eligible one.
    pub nvrtc: Result<Candidate, String>,
    /// One line per library found but not usable, saying why.
    pub rejected: Vec<String>,
    /// Every directory looked in, with its origin.
    pub looked: Vec<String>,
}

/// The CUDA major and version in a library file name: `libnvrtc.so.13.0.48` → (13, "13.0.48"); `None`
/// for other names (`libnvrtc.so`, `libnvrtc.alt.so.13`, `libnvrtc-builtins.so.13.0`, `libcublasLt.so.13`).
pub fn parse_lib_name(kind: LibKind, file_name: &str) -> Option<(u32, String)> {
    let rest = file_name.strip_prefix(kind.stem())?.strip_prefix('.')?;
    let parts: Vec<&str> = rest.split('.').collect();
    if parts.is_empty()
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let major = parts[0].parse().ok()?;
    Some((major, rest.to_string()))
}

/// The candidates of `kind` in `dir`, one per distinct file (a `.so.13` link and the `.so.13.0.48` it points
/// to are one candidate, named by the shorter link).
fn scan_dir(kind: LibKind, dir: &Path, origin: &str) -> Vec<Candidate> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(kind.stem()))
        .collect();
    // `.so.13` before `.so.13.0.48` before `.so`: the soname-like link names the candidate.
    names.sort_by_key(|n| (n == kind.stem(), n.len(), n.clone()));
    let mut out: Vec<(Candidate, PathBuf)> = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let real = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if !real.is_file() {
            continue;
        }
        let target_name = real.file_name().map(|n| n.to_string_lossy().into_owned());
        let parsed = parse_lib_name(kind, &name);
        let from_target = target_name.as_deref().and_then(|t| parse_lib_name(kind, t));
        let Some((major, mut version)) = parsed.clone().or(from_target.clone()) else {
            continue;
        };
        if let Some((m, v)) = from_target
            && m == major
            && v.len() > version.len()
        {
            version = v;
        }
        if let Some((seen, _)) = out.iter_mut().find(|(_, r)| *r == real) {
            if version.len() > seen.version.len() {
                seen.version = version;
            }
            continue;
        }
        let candidate = Candidate {
            path,
            major,
            version,
            origin: origin.to_string(),
        };
        out.push((candidate, real));
    }
    out.into_iter().map(|(c, _)| c).collect()
}

/// The directories searched, in order, with their origin (the NVRTC override comes separately).
pub fn search_dirs(env: &LibEnv) -> Vec<(PathBuf, String)> {
    let mut dirs: Vec<(PathBuf, String)> = Vec::new();
    for (root, origin) in &env.toolkit_roots {
        dirs.push((root.join("lib64"), origin.clone()));
        dirs.push((root.join("targets/x86_64-linux/lib"), origin.clone()));
    }
    for d in &env.ld_library_path {
        dirs.push((d.clone(), "LD_LIBRARY_PATH".into()));
    }
    for (site, origin) in &env.site_packages {
        for sub in WHEEL_LIB_DIRS {
            dirs.push((site.join(sub), format!("pip wheel, {origin}")));
        }
    }
    dirs.extend(env.other_dirs.iter().cloned());
    let mut seen = Vec::new();
    dirs.retain(|(d, _)| {
        let fresh = !seen.contains(d);
        seen.push(d.clone());
        fresh
    });
    dirs
}

/// Whether the driver can run code of CUDA major `major`, or why not.
fn eligible(major: u32, driver: Option<(u32, u32)>) -> Result<(), String> {
    if !SUPPORTED_MAJORS.contains(&major) {
        return Err(format!(
            "CUDA {major} is not supported (this binary drives CUDA 12 or 13)"
        ));
    }
    match driver {
        Some((dmaj, dmin)) if major > dmaj => Err(format!(
            "CUDA {major} is newer than the driver's CUDA {dmaj}.{dmin}"
        )),
        _ => Ok(()),
    }
}

/// Chooses the libraries as the module documentation says.
pub fn select(env: &LibEnv) -> Selection {
    let dirs = search_dirs(env);
    let mut looked: Vec<String> = Vec::new();
    let mut nvrtc: Vec<Candidate> = Vec::new();
    let mut cublas: Vec<Candidate> = Vec::new();
    let mut override_error = None;
    if let Some(p) = &env.nvrtc_override {
        let origin = "ATTNSCOPE_NVRTC_LIB";
        looked.push(format!("{} ({origin})", p.display()));
        let dir = if p.is_file() {
            p.parent().map(Path::to_path_buf)
        } else {
            Some(p.clone())
        };
        if p.is_file() {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let real = std::fs::canonicalize(p).ok();
            let from_target = real
                .as_ref()
                .and_then(|r| r.file_name())
                .and_then(|n| parse_lib_name(LibKind::Nvrtc, &n.to_string_lossy()));
            match parse_lib_name(LibKind::Nvrtc, &name).or(from_target) {
                Some((major, version)) => nvrtc.push(Candidate {
                    path: p.clone(),
                    major,
                    version,
                    origin: origin.into(),
                }),
                None => {
                    override_error = Some(format!(
                        "{origin}={}: not a libnvrtc.so.12 / .so.13 file name",
                        p.display()
                    ))
                }
            }
        } else {
            nvrtc.extend(scan_dir(LibKind::Nvrtc, p, origin));
            if nvrtc.is_empty() {
                override_error = Some(format!(
                    "{origin}={}: no libnvrtc.so.12 or .so.13 there",
                    p.display()
                ));
            }
        }
        if let Some(d) = dir {
            cublas.extend(scan_dir(LibKind::Cublas, &d, origin));
        }
    }
    for (dir, origin) in &dirs {
        looked.push(format!("{} ({origin})", dir.display()));
        if env.nvrtc_override.is_none() {
            nvrtc.extend(scan_dir(LibKind::Nvrtc, dir, origin));
        }
        cublas.extend(scan_dir(LibKind::Cublas, dir, origin));
    }
    let mut rejected = Vec::new();
    for c in nvrtc.iter().chain(cublas.iter()) {
        if let Err(why) = eligible(c.major, env.driver_cuda) {
            let name = c
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            rejected.push(format!("{name} ({}): {why}", c.path.display()));
        }
    }
    let driver_text = match env.driver_cuda {
        Some((a, b)) => format!("not newer than the driver's CUDA {a}.{b}"),
        None => "no driver found, so no limit from it".to_string(),
    };
    let first_of = |list: &[Candidate], major: u32| list.iter().find(|c| c.major == major).cloned();
    let mut set: Option<LibSet> = None;
    let mut gaps: Vec<String> = Vec::new();
    for major in SUPPORTED_MAJORS
        .into_iter()
        .filter(|&m| eligible(m, env.driver_cuda).is_ok())
    {
        match (first_of(&nvrtc, major), first_of(&cublas, major)) {
            (Some(n), Some(b)) => {
                let why = format!(
                    "CUDA {major}: the newest major with both NVRTC and cuBLAS, {driver_text}"
                );
                set = Some(LibSet {
                    major,
                    nvrtc: n,
                    cublas: b,
                    why,
                });
                break;
            }
            (Some(n), None) => gaps.push(format!(
                "NVRTC {} at {} but no cuBLAS {major}",
                n.version,
                n.path.display()
            )),
            (None, Some(b)) => gaps.push(format!(
                "cuBLAS {} at {} but no NVRTC {major}",
                b.version,
                b.path.display()
            )),
            (None, None) => {}
        }
    }
    let set = match (&override_error, set) {
        (Some(e), _) => Err(e.clone()),
        (None, Some(s)) => Ok(s),
        (None, None) => {
            let mut why = gaps;
            why.extend(rejected.iter().cloned());
            let detail = if why.is_empty() {
                "nothing found".to_string()
            } else {
                why.join("; ")
            };
            Err(format!(
                "no consistent NVRTC + cuBLAS of CUDA 12 or 13 ({driver_text}): {detail}"
            ))
        }
    };
    let newest_nvrtc = || {
        SUPPORTED_MAJORS
            .into_iter()
            .filter(|&m| eligible(m, env.driver_cuda).is_ok())
            .find_map(|m| first_of(&nvrtc, m))
    };
    let nvrtc_choice = match (&override_error, &set) {
        (Some(e), _) => Err(e.clone()),
        (None, Ok(s)) => Ok(s.nvrtc.clone()),
        (None, Err(_)) => newest_nvrtc().ok_or_else(|| {
            let why: Vec<String> = rejected
                .iter()
                .filter(|r| r.starts_with("libnvrtc"))
                .cloned()
                .collect();
            let detail = if why.is_empty() {
                "none found".to_string()
            } else {
                why.join("; ")
            };
            format!(
                "no usable libnvrtc.so.12 or .so.13 ({detail}); set ATTNSCOPE_NVRTC_LIB to \
                 the library or its directory, or run scripts/install_nvrtc.sh"
            )
        }),
    };
    Selection {
        set,
        nvrtc: nvrtc_choice,
        rejected,
        looked,
    }
}

#[cfg(test)]
mod tests;
