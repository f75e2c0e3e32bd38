//! Every kernel in `kernels/*.cu` compiles with NVRTC for sm_80 and sm_90. Needs no GPU: only libnvrtc
//! (CI installs it from the `nvidia-cuda-nvrtc-cu12` wheel with scripts/install_nvrtc.sh).
//!
//! Without NVRTC the tests print `SKIP: NVRTC not found (...)`, unless `ATTNSCOPE_REQUIRE_NVRTC=1`
//! (set by CI), in which case a missing NVRTC fails.

use attnscope_cuda::context::kernel_names;
use attnscope_cuda::{compile_kernel, kernel_sources, nvrtc_version};

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
    println!("NVRTC {major}.{minor}");
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
                    let outcome = compile_kernel(name, src, arch).map(|ptx| {
                        let text = ptx.to_src();
                        let entries = text.matches(".entry").count();
                        // Every name the backend loads must be an entry of this file's PTX.
                        let missing: Vec<String> = kernel_names(name)
                            .into_iter()
                            .filter(|k| !text.contains(&format!(".entry {k}(")))
                            .collect();
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
                println!("{name} {arch}: {entries} kernels, {secs:.1}s");
                if *entries == 0 || !target_ok {
                    failures.push(format!(
                        "{name} {arch}: PTX has {entries} entries, target ok {target_ok}"
                    ));
                }
                if !missing.is_empty() {
                    failures.push(format!(
                        "{name} {arch}: the backend loads kernels the PTX lacks: {missing:?}"
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
