//! Every kernel in `kernels/*.cu` compiles with NVRTC to CUBIN (what the backend loads) for sm_80 and sm_90.
//! Needs no GPU: only libnvrtc. CI runs this file once per CUDA major, with NVRTC 12 and NVRTC 13 from their
//! pip wheels (`scripts/install_nvrtc.sh 12|13`, which sets ATTNSCOPE_NVRTC_LIB).
//!
//! Without NVRTC the tests print `SKIP: NVRTC not found (...)`, unless `ATTNSCOPE_REQUIRE_NVRTC=1`
//! (set by CI), in which case a missing NVRTC fails.

use attnscope_cuda::context::kernel_names;
use attnscope_cuda::{
    compile_kernel, compile_kernel_cubin, compile_kernel_image, kernel_sources, loaded_nvrtc,
    nvrtc_version,
};

const ARCHS: [&str; 2] = ["sm_80", "sm_90"];

/// NVRTC's version, or `None` after printing SKIP (panics instead when CI requires NVRTC).
fn nvrtc_or_skip() -> Option<(i32, i32)> {
    match nvrtc_version() {
        Ok(v) => Some(v),
        Err(e) => {
            let required = std::env::var("ATTNSCOPE_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
            assert!(!required, "ATTNSCOPE_REQUIRE_NVRTC=1 but {e}");
            println!("SKIP: NVRTC not found ({e})");
            None
        }
    }
}

#[test]
fn every_kernel_compiles_for_sm80_and_sm90() {
    let Some((major, minor)) = nvrtc_or_skip() else {
        return;
    };
    let path = loaded_nvrtc()
        .map(|l| l.path.display().to_string())
        .unwrap_or_default();
    println!("NVRTC {major}.{minor} from {path}");
    let jobs: Vec<(&str, &str, &str)> = kernel_sources()
        .iter()
        .flat_map(|&(name, src)| ARCHS.iter().map(move |&arch| (name, src, arch)))
        .collect();
    // Compile on every core: the tensor-core attention file alone takes tens of seconds per architecture.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.min(jobs.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&(name, src, arch)) = jobs.get(i) else {
                        break;
                    };
                    let t0 = std::time::Instant::now();
                    let outcome = compile_kernel_image(name, src, arch).map(|k| {
                        let text = k.ptx;
                        let entries = text.matches(".entry").count();
                        // Every name the backend loads must be an entry of this file's PTX (same NVRTC run)
                        // and a symbol of its CUBIN.
                        let mut missing: Vec<String> = kernel_names(name)
                            .into_iter()
                            .filter(|k| !text.contains(&format!(".entry {k}(")))
                            .collect();
                        missing.extend(cubin_problems(&k.cubin, arch, &kernel_names(name)));
                        (entries, text.contains(&format!(".target {arch}")), missing)
                    });
                    let secs = t0.elapsed().as_secs_f32();
                    results
                        .lock()
                        .expect("no thread panics while holding the lock")
                        .push((name, arch, outcome, secs));
                }
            });
        }
    });
    let results = results.into_inner().expect("lock not poisoned");
    let mut failures = Vec::new();
    for (name, arch, outcome, secs) in &results {
        match outcome {
            Ok((entries, target_ok, missing)) => {
                println!("{name} {arch}: {entries} kernels (PTX and CUBIN), {secs:.1}s");
                if *entries == 0 || !target_ok {
                    failures.push(format!(
                        "{name} {arch}: PTX has {entries} entries, target ok {target_ok}"
                    ));
                }
                if !missing.is_empty() {
                    failures.push(format!(
                        "{name} {arch}: the backend loads kernels the PTX/CUBIN lack: {missing:?}"
                    ));
                }
                if *entries != kernel_names(name).len() {
                    failures.push(format!(
                        "{name} {arch}: PTX has {entries} entries, cuda::context::kernel_names lists {}",
                        kernel_names(name).len()
                    ));
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert_eq!(results.len(), jobs.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What is wrong with a CUBIN: not a CUDA ELF image, or lacking a symbol named in `names`.
fn cubin_problems(cubin: &[u8], arch: &str, names: &[String]) -> Vec<String> {
    const EM_CUDA: u16 = 190;
    if cubin.len() < 64 || &cubin[..4] != b"\x7fELF" || cubin[4] != 2 {
        return vec![format!(
            "CUBIN for {arch} is not a 64-bit ELF image ({} bytes)",
            cubin.len()
        )];
    }
    let machine = u16::from_le_bytes([cubin[18], cubin[19]]);
    if machine != EM_CUDA {
        return vec![format!(
            "CUBIN for {arch}: ELF machine {machine}, not EM_CUDA"
        )];
    }
    // Symbol names are NUL-terminated entries of the string table.
    names
        .iter()
        .filter(|n| {
            let needle = [b"\0", n.as_bytes(), b"\0"].concat();
            !cubin.windows(needle.len()).any(|w| w == needle.as_slice())
        })
        .map(|n| format!("CUBIN symbol {n}"))
        .collect()
}

#[test]
fn compile_errors_are_one_line_naming_the_file() {
    if nvrtc_or_skip().is_none() {
        return;
    }
    let src = "extern \"C\" __global__ void broken(float* x) {\n  x[0] = not_declared;\n}\n";
    let err = match compile_kernel("broken.cu", src, "sm_80") {
        Ok(_) => panic!("a kernel with an undeclared identifier compiled"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.starts_with("kernels/broken.cu: NVRTC compile for sm_80 failed:"),
        "{err}"
    );
    assert!(err.contains("broken.cu(2)"), "points at line 2: {err}");
    assert!(err.contains("not_declared"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
}

#[test]
fn an_architecture_newer_than_nvrtc_is_one_line() {
    if nvrtc_or_skip().is_none() {
        return;
    }
    let err = match compile_kernel("norm.cu", "", "sm_990") {
        Ok(_) => panic!("NVRTC compiled for sm_990"),
        Err(e) => e.to_string(),
    };
    assert!(err.starts_with("kernels/norm.cu: NVRTC "), "{err}");
    assert!(err.contains("does not know sm_990"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn a_virtual_architecture_gives_ptx_only() {
    if nvrtc_or_skip().is_none() {
        return;
    }
    let (file, src) = kernel_sources()[0];
    let ptx = compile_kernel(file, src, "compute_80").expect("PTX for compute_80");
    assert!(ptx.to_src().contains(".target sm_80"));
    let err = compile_kernel_cubin(file, src, "compute_80")
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("needs a real architecture")));
}

#[test]
fn the_kernel_cache_returns_what_was_compiled_and_recompiles_damage() {
    use attnscope_cuda::kernel_cache::{KernelFormat, kernel_image_in};
    if nvrtc_or_skip().is_none() {
        return;
    }
    let dir = tempfile::TempDir::new().expect("temp dir");
    let (file, src) = kernel_sources()
        .iter()
        .copied()
        .find(|(n, _)| *n == "residual.cu")
        .expect("residual.cu is a kernel file");
    let first = kernel_image_in(Some(dir.path()), file, src, "sm_80", KernelFormat::Cubin)
        .expect("compiles");
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .expect("cache dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert!(entry.to_string_lossy().ends_with(".cubin"), "{entry:?}");
    let t0 = std::time::Instant::now();
    let again =
        kernel_image_in(Some(dir.path()), file, src, "sm_80", KernelFormat::Cubin).expect("cached");
    assert_eq!(again, first);
    println!(
        "cached {file} sm_80 read in {:.3}s",
        t0.elapsed().as_secs_f32()
    );
    let bytes = std::fs::read(entry).expect("entry");
    std::fs::write(entry, &bytes[..bytes.len() / 2]).expect("truncate");
    let fixed = kernel_image_in(Some(dir.path()), file, src, "sm_80", KernelFormat::Cubin)
        .expect("recompiles");
    assert_eq!(fixed.len(), first.len(), "a short entry is compiled again");
    assert_eq!(
        std::fs::read(entry).expect("entry").len(),
        bytes.len(),
        "and replaced"
    );
    let ptx =
        kernel_image_in(Some(dir.path()), file, src, "sm_80", KernelFormat::Ptx).expect("ptx");
    assert!(
        String::from_utf8_lossy(&ptx).contains(".version"),
        "PTX is a separate entry"
    );
}
