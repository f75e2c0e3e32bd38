//! The on-disk cache of compiled kernels: one file per kernel file, keyed by the NVRTC version, the
//! architecture, the format and a hash of the full program (common.cuh and the generated defines included)
//! and of the NVRTC options.
//!
//! An entry is `ATSKRN01` + SHA-256 of the payload + the payload (CUBIN, or PTX text), written to a temporary
//! file and renamed into place; an entry that is short or does not match its hash is compiled again and
//! replaced. A cache directory that cannot be written is skipped (it only costs compile time).

use attnscope_core::Error;
use attnscope_core::Result;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Environment variable moving the cache (`$ATTNSCOPE_CACHE_DIR/kernels`).
pub const CACHE_DIR_ENV: &str = "ATTNSCOPE_CACHE_DIR";
/// Environment variable choosing what is loaded: `cubin` (default) or `ptx` (JIT by the driver).
pub const KERNEL_FORMAT_ENV: &str = "ATTNSCOPE_KERNEL_FORMAT";

const MAGIC: &[u8; 8] = b"ATSKRN01";
const HEADER: usize = MAGIC.len() + 32;

/// What the backend loads into the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// Machine code for the device's exact architecture (no JIT; loads on any driver of the same major).
    Cubin,
    /// PTX, compiled by the driver at load (needs a driver at least as new as the NVRTC's PTX ISA).
    Ptx,
}

impl KernelFormat {
    /// From `ATTNSCOPE_KERNEL_FORMAT` (unset or empty: CUBIN).
    pub fn from_env() -> Result<KernelFormat> {
        match std::env::var(KERNEL_FORMAT_ENV)
            .unwrap_or_default()
            .to_ascii_lowercase()
            .as_str()
        {
            "" | "cubin" => Ok(KernelFormat::Cubin),
            "ptx" => Ok(KernelFormat::Ptx),
            other => Err(Error::cuda(format!(
                "{KERNEL_FORMAT_ENV}={other:?}: expected cubin or ptx"
            ))),
        }
    }

    /// File extension of a cache entry.
    pub fn extension(self) -> &'static str {
        match self {
            KernelFormat::Cubin => "cubin",
            KernelFormat::Ptx => "ptx",
        }
    }
}

/// `$ATTNSCOPE_CACHE_DIR/kernels`, else `$XDG_CACHE_HOME/attnscope/kernels`, else
/// `~/.cache/attnscope/kernels`; `None` when none can be named.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |n: &str| {
        std::env::var_os(n)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var(CACHE_DIR_ENV) {
        return Some(d.join("kernels"));
    }
    let base = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))?;
    Some(base.join("attnscope").join("kernels"))
}

/// The file name of the entry for kernel file `file` (e.g. `norm-sm_90-nvrtc13.0-<hash>.cubin`).
pub fn entry_name(
    file: &str,
    nvrtc_version: (i32, i32),
    arch: &str,
    program: &str,
    options: &[String],
    format: KernelFormat,
) -> String {
    let mut h = Sha256::new();
    h.update(program.as_bytes());
    for o in options {
        h.update(b"\0");
        h.update(o.as_bytes());
    }
    h.update(
        format!(
            "\0{arch}\0{nvrtc_version:?}\0{format:?}\0{}",
            env!("CARGO_PKG_VERSION")
        )
        .as_bytes(),
    );
    let key = attnscope_core::weights::hex(&h.finalize()[..12]);
    let stem = file.trim_end_matches(".cu");
    let (ma, mi) = nvrtc_version;
    format!("{stem}-{arch}-nvrtc{ma}.{mi}-{key}.{}", format.extension())
}

/// The payload of the entry at `path`, or `None` when it is missing, short or corrupt.
pub fn read_entry(path: &Path) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() <= HEADER || &bytes[..MAGIC.len()] != MAGIC {
        return None;
    }
    let payload = &bytes[HEADER..];
    (Sha256::digest(payload).as_slice() == &bytes[MAGIC.len()..HEADER]).then(|| payload.to_vec())
}

/// Writes the entry atomically (temporary file + rename); whether it was stored.
pub fn write_entry(path: &Path, payload: &[u8]) -> bool {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let Some(dir) = path.parent() else {
        return false;
    };
    if std::fs::create_dir_all(dir).is_err() {
        return false;
    }
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let mut bytes = Vec::with_capacity(HEADER + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&Sha256::digest(payload));
    bytes.extend_from_slice(payload);
    if std::fs::write(&tmp, &bytes).is_ok() && std::fs::rename(&tmp, path).is_ok() {
        return true;
    }
    let _ = std::fs::remove_file(&tmp);
    false
}

/// The compiled kernel file `file` for `arch` in `format`: from the cache ([`cache_dir`]) when a valid entry
/// exists, else compiled with the loaded NVRTC and stored.
pub fn kernel_image(file: &str, source: &str, arch: &str, format: KernelFormat) -> Result<Vec<u8>> {
    kernel_image_in(cache_dir().as_deref(), file, source, arch, format)
}

/// [`kernel_image`] with the cache in `dir` (`None`: no cache).
pub fn kernel_image_in(
    dir: Option<&Path>,
    file: &str,
    source: &str,
    arch: &str,
    format: KernelFormat,
) -> Result<Vec<u8>> {
    let version = crate::nvrtc::nvrtc_version()?;
    let program = crate::nvrtc::kernel_program(file, source)?;
    let options = crate::nvrtc::compile_options(arch);
    let path = dir.map(|d| d.join(entry_name(file, version, arch, &program, &options, format)));
    if let Some(payload) = path.as_deref().and_then(read_entry) {
        return Ok(payload);
    }
    let compiled = crate::nvrtc::compile_kernel_image(file, source, arch)?;
    let payload = match format {
        KernelFormat::Cubin => compiled.cubin,
        KernelFormat::Ptx => compiled.ptx.into_bytes(),
    };
    if let Some(p) = &path {
        write_entry(p, &payload);
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_is_detected() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("sub/norm-sm_90-nvrtc13.0-x.cubin");
        assert!(read_entry(&path).is_none());
        assert!(write_entry(&path, b"\x7fELF payload"));
        assert_eq!(read_entry(&path).as_deref(), Some(&b"\x7fELF payload"[..]));
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 1]).unwrap();
        assert!(read_entry(&path).is_none(), "short entry");
        let mut flipped = full.clone();
        flipped[HEADER] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert!(read_entry(&path).is_none(), "corrupt entry");
        std::fs::write(&path, b"ATSKRN01").unwrap();
        assert!(read_entry(&path).is_none(), "header only");
        assert!(write_entry(&path, b"again"), "a bad entry is replaced");
        assert_eq!(read_entry(&path).as_deref(), Some(&b"again"[..]));
        let leftovers = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary files left");
        // A directory that cannot be created (below a file) is skipped.
        assert!(!write_entry(&path.join("below-a-file.cubin"), b"x"));
    }

    #[test]
    fn the_key_covers_program_options_arch_version_and_format() {
        let opts = vec!["--gpu-architecture=sm_90".to_string()];
        let base = entry_name(
            "norm.cu",
            (13, 0),
            "sm_90",
            "src",
            &opts,
            KernelFormat::Cubin,
        );
        assert!(
            base.starts_with("norm-sm_90-nvrtc13.0-") && base.ends_with(".cubin"),
            "{base}"
        );
        let others = [
            entry_name(
                "norm.cu",
                (12, 8),
                "sm_90",
                "src",
                &opts,
                KernelFormat::Cubin,
            ),
            entry_name(
                "norm.cu",
                (13, 0),
                "sm_80",
                "src",
                &opts,
                KernelFormat::Cubin,
            ),
            entry_name(
                "norm.cu",
                (13, 0),
                "sm_90",
                "src2",
                &opts,
                KernelFormat::Cubin,
            ),
            entry_name("norm.cu", (13, 0), "sm_90", "src", &[], KernelFormat::Cubin),
            entry_name("norm.cu", (13, 0), "sm_90", "src", &opts, KernelFormat::Ptx),
        ];
        for o in others {
            assert_ne!(o, base);
        }
    }
}
