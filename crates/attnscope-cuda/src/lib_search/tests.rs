//! The library choice on fake directory trees: empty files and symlinks named like the real libraries.

use super::*;
use std::fs;
use tempfile::TempDir;

/// Creates empty files `names` in `dir` (made first).
fn touch(dir: &Path, names: &[&str]) {
    fs::create_dir_all(dir).unwrap();
    for n in names {
        fs::write(dir.join(n), b"").unwrap();
    }
}

/// site-packages with the cu13 wheel layout (NVRTC and cuBLAS both in nvidia/cu13/lib).
fn cu13_wheel(root: &Path) -> PathBuf {
    let site = root.join("venv/lib/python3.12/site-packages");
    touch(
        &site.join("nvidia/cu13/lib"),
        &[
            "libnvrtc.so.13",
            "libnvrtc-builtins.so.13.0",
            "libnvrtc.alt.so.13",
            "libcublas.so.13",
            "libcublasLt.so.13",
        ],
    );
    site
}

/// site-packages with the cu12 wheels (nvidia/cuda_nvrtc/lib, nvidia/cublas/lib).
fn cu12_wheels(root: &Path) -> PathBuf {
    let site = root.join("py/site-packages");
    touch(
        &site.join("nvidia/cuda_nvrtc/lib"),
        &["libnvrtc.so.12", "libnvrtc-builtins.so.12.8"],
    );
    touch(
        &site.join("nvidia/cublas/lib"),
        &["libcublas.so.12", "libcublasLt.so.12"],
    );
    site
}

fn env_with_sites(sites: &[&Path], driver: Option<(u32, u32)>) -> LibEnv {
    LibEnv {
        site_packages: sites
            .iter()
            .map(|s| (s.to_path_buf(), "test".to_string()))
            .collect(),
        driver_cuda: driver,
        ..Default::default()
    }
}

fn chosen(sel: &Selection) -> (u32, String, String) {
    let set = sel.set.as_ref().unwrap_or_else(|e| panic!("no set: {e}"));
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    (set.major, name(&set.nvrtc.path), name(&set.cublas.path))
}

#[test]
fn file_names_give_the_major() {
    let n = LibKind::Nvrtc;
    assert_eq!(parse_lib_name(n, "libnvrtc.so.13"), Some((13, "13".into())));
    assert_eq!(
        parse_lib_name(n, "libnvrtc.so.13.0.48"),
        Some((13, "13.0.48".into()))
    );
    assert_eq!(parse_lib_name(n, "libnvrtc.so.12"), Some((12, "12".into())));
    for other in [
        "libnvrtc.so",
        "libnvrtc.alt.so.13",
        "libnvrtc-builtins.so.13.0",
        "libnvrtc.so.13.x",
        "libnvrtc.so.",
    ] {
        assert_eq!(parse_lib_name(n, other), None, "{other}");
    }
    assert_eq!(parse_lib_name(LibKind::Cublas, "libcublasLt.so.13"), None);
    assert_eq!(
        parse_lib_name(LibKind::Cublas, "libcublas.so.12.8.4.1"),
        Some((12, "12.8.4.1".into()))
    );
}

#[test]
fn cu13_wheel_alone_with_a_13_driver() {
    let t = TempDir::new().unwrap();
    let site = cu13_wheel(t.path());
    let sel = select(&env_with_sites(&[&site], Some((13, 0))));
    assert_eq!(
        chosen(&sel),
        (13, "libnvrtc.so.13".into(), "libcublas.so.13".into())
    );
    assert!(sel.rejected.is_empty(), "{:?}", sel.rejected);
}

#[test]
fn cu13_wheel_alone_with_a_12_driver_is_refused_saying_why() {
    let t = TempDir::new().unwrap();
    let site = cu13_wheel(t.path());
    let sel = select(&env_with_sites(&[&site], Some((12, 4))));
    let err = sel.set.unwrap_err();
    assert!(
        err.contains("CUDA 13 is newer than the driver's CUDA 12.4"),
        "{err}"
    );
    assert!(
        err.contains("nvidia/cu13/lib"),
        "lists where it looked: {err}"
    );
    assert!(!err.contains('\n'));
    assert!(sel.nvrtc.is_err());
    assert!(
        sel.rejected
            .iter()
            .any(|r| r.starts_with("libnvrtc.so.13 (")),
        "{:?}",
        sel.rejected
    );
}

#[test]
fn cu12_wheels_alone() {
    let t = TempDir::new().unwrap();
    let site = cu12_wheels(t.path());
    let sel = select(&env_with_sites(&[&site], Some((12, 2))));
    assert_eq!(
        chosen(&sel),
        (12, "libnvrtc.so.12".into(), "libcublas.so.12".into())
    );
}

#[test]
fn both_majors_with_a_12_driver_picks_12() {
    let t = TempDir::new().unwrap();
    let (s13, s12) = (cu13_wheel(t.path()), cu12_wheels(t.path()));
    let sel = select(&env_with_sites(&[&s13, &s12], Some((12, 8))));
    assert_eq!(chosen(&sel).0, 12);
    assert!(sel.set.as_ref().unwrap().why.contains("driver's CUDA 12.8"));
    assert_eq!(sel.nvrtc.as_ref().unwrap().major, 12);
    assert_eq!(
        sel.rejected.len(),
        2,
        "NVRTC 13 and cuBLAS 13: {:?}",
        sel.rejected
    );
}

#[test]
fn both_majors_with_a_13_driver_picks_13() {
    let t = TempDir::new().unwrap();
    let (s13, s12) = (cu13_wheel(t.path()), cu12_wheels(t.path()));
    // The cu12 site comes first in search order: the newer major still wins.
    let sel = select(&env_with_sites(&[&s12, &s13], Some((13, 0))));
    assert_eq!(chosen(&sel).0, 13);
}

#[test]
fn toolkit_first_then_wheel_and_full_versions_come_from_links() {
    let t = TempDir::new().unwrap();
    let root = t.path().join("usr/local/cuda");
    let lib = root.join("targets/x86_64-linux/lib");
    touch(&lib, &["libnvrtc.so.13.0.48", "libcublas.so.13.0.2.14"]);
    std::os::unix::fs::symlink("libnvrtc.so.13.0.48", lib.join("libnvrtc.so.13")).unwrap();
    std::os::unix::fs::symlink("libnvrtc.so.13", lib.join("libnvrtc.so")).unwrap();
    std::os::unix::fs::symlink("libcublas.so.13.0.2.14", lib.join("libcublas.so")).unwrap();
    let site = cu13_wheel(t.path());
    let mut env = env_with_sites(&[&site], Some((13, 0)));
    env.toolkit_roots = vec![(root.clone(), "/usr/local/cuda".into())];
    let sel = select(&env);
    let set = sel.set.unwrap();
    assert_eq!(
        set.nvrtc.path,
        lib.join("libnvrtc.so.13"),
        "the soname link names the one file"
    );
    assert_eq!(set.nvrtc.version, "13.0.48");
    assert_eq!(set.nvrtc.origin, "/usr/local/cuda");
    assert_eq!(set.cublas.path, lib.join("libcublas.so.13.0.2.14"));
    assert!(
        sel.looked.iter().any(|l| l.contains("lib64")),
        "{:?}",
        sel.looked
    );
}

#[test]
fn nvrtc_13_with_only_cublas_12_falls_back_to_a_consistent_12() {
    let t = TempDir::new().unwrap();
    let a = t.path().join("a");
    touch(&a, &["libnvrtc.so.13", "libnvrtc.so.12", "libcublas.so.12"]);
    let mut env = LibEnv {
        driver_cuda: Some((13, 0)),
        ..Default::default()
    };
    env.ld_library_path = vec![a.clone()];
    let sel = select(&env);
    assert_eq!(
        chosen(&sel),
        (12, "libnvrtc.so.12".into(), "libcublas.so.12".into())
    );
    // Without an NVRTC 12 there is no consistent set, and the error says what is missing.
    fs::remove_file(a.join("libnvrtc.so.12")).unwrap();
    let sel = select(&env);
    let err = sel.set.unwrap_err();
    assert!(err.contains("but no cuBLAS 13"), "{err}");
    assert!(err.contains("but no NVRTC 12"), "{err}");
    // Compiling alone still has an NVRTC.
    assert_eq!(sel.nvrtc.unwrap().major, 13);
}

#[test]
fn nothing_found_lists_where_it_looked() {
    let t = TempDir::new().unwrap();
    let mut env = env_with_sites(&[t.path()], None);
    env.toolkit_roots = vec![(t.path().join("cuda"), "CUDA_HOME".into())];
    env.ld_library_path = vec![t.path().join("ld")];
    let sel = select(&env);
    assert!(
        sel.set.as_ref().unwrap_err().ends_with("nothing found"),
        "{:?}",
        sel.set
    );
    let err = sel.set_or_why().unwrap_err();
    assert!(err.contains("nothing found"), "{err}");
    for part in [
        "cuda/lib64 (CUDA_HOME)",
        "ld (LD_LIBRARY_PATH)",
        "nvidia/cu13/lib (pip wheel, test)",
    ] {
        assert!(err.contains(part), "{part} in {err}");
    }
    let nv = sel.nvrtc_or_why().unwrap_err();
    assert!(
        nv.contains("ATTNSCOPE_NVRTC_LIB") && nv.contains("ld (LD_LIBRARY_PATH)"),
        "{nv}"
    );
}

#[test]
fn nvrtc_override_names_a_so_13_file_or_directory() {
    let t = TempDir::new().unwrap();
    let (s13, s12) = (cu13_wheel(t.path()), cu12_wheels(t.path()));
    let lib13 = s13.join("nvidia/cu13/lib");
    for named in [lib13.join("libnvrtc.so.13"), lib13.clone()] {
        // The override wins over the cu12 NVRTC, and its directory's cuBLAS over later ones.
        let mut env = env_with_sites(&[&s12], None);
        env.nvrtc_override = Some(named.clone());
        let sel = select(&env);
        assert_eq!(
            chosen(&sel),
            (13, "libnvrtc.so.13".into(), "libcublas.so.13".into()),
            "{named:?}"
        );
        assert_eq!(sel.nvrtc.unwrap().origin, "ATTNSCOPE_NVRTC_LIB");
    }
    // An override the driver cannot run is refused, not replaced by another NVRTC.
    let mut env = env_with_sites(&[&s12], Some((12, 9)));
    env.nvrtc_override = Some(lib13.join("libnvrtc.so.13"));
    let sel = select(&env);
    assert!(sel.nvrtc.is_err());
    let bad = t.path().join("libfoo.so");
    touch(t.path(), &["libfoo.so"]);
    env.nvrtc_override = Some(bad);
    let err = select(&env).nvrtc.unwrap_err();
    assert!(err.starts_with("ATTNSCOPE_NVRTC_LIB="), "{err}");
}

#[test]
fn cuda_11_libraries_are_rejected() {
    let t = TempDir::new().unwrap();
    touch(t.path(), &["libnvrtc.so.11.2", "libcublas.so.11"]);
    let env = LibEnv {
        ld_library_path: vec![t.path().to_path_buf()],
        driver_cuda: Some((12, 0)),
        ..Default::default()
    };
    let sel = select(&env);
    assert!(sel.set.unwrap_err().contains("CUDA 11 is not supported"));
}
