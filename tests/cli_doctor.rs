//! `attnscope doctor`: on a host without a usable GPU (CI, this repository's machines) it prints its lines and
//! exits non-zero with one `error:` line, never a panic; on a GPU host it exits 0 ending with `ok:`.

mod common;

use common::cli::{Scratch, attnscope, run_ok};

#[test]
fn doctor_reports_each_finding_and_fails_without_a_gpu() {
    let scratch = Scratch::new();
    let mut cmd = attnscope(scratch.root());
    cmd.arg("doctor")
        .env("ATTNSCOPE_CACHE_DIR", scratch.root().join("cache"));
    let output = cmd.output().expect("cannot start attnscope");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let ctx = format!(
        "--- status {:?}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}",
        output.status
    );
    assert!(!stderr.contains("panicked"), "{ctx}");
    for prefix in [
        "libcuda: ",
        "GPU",
        "NVRTC: ",
        "cuBLAS: ",
        "chosen: ",
        "searched: ",
        "kernel format: ",
        "kernel cache: ",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(prefix)),
            "a line starting {prefix:?}\n{ctx}"
        );
    }
    assert!(
        stdout.contains(&scratch.root().join("cache/kernels").display().to_string()),
        "{ctx}"
    );
    if output.status.success() {
        assert!(
            attnscope_cuda::probe().is_available(),
            "ok without a GPU?\n{ctx}"
        );
        assert!(
            stdout.lines().last().is_some_and(|l| l.starts_with("ok: ")),
            "{ctx}"
        );
        return;
    }
    assert_eq!(output.status.code(), Some(1), "{ctx}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{ctx}");
    assert!(errors[0].starts_with("error: no usable GPU: "), "{ctx}");
    println!("doctor here:\n{stdout}{stderr}");
}

#[test]
fn doctor_has_help() {
    let scratch = Scratch::new();
    let out = run_ok(attnscope(scratch.root()).args(["doctor", "--help"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CUDA 12 or 13"), "{text}");
}
