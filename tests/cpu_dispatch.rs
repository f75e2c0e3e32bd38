//! The binary runs on an x86-64 CPU without AVX-512: the gemm crate's AVX-512 kernels (feature `avx512` of
//! attnscope-core, on by default) are chosen at run time only where the CPU has AVX-512F, and nothing else
//! in the binary needs it. Checked by running the same prefill natively and under qemu-user emulating a
//! Haswell (AVX2 + FMA, no AVX-512): the run must succeed and give the same attention weights of every
//! layer to 1e-5 (the kernels sum in another order). On an AVX-512 host that compares the AVX-512 path with the
//! AVX2 one.
//!
//! Needs `qemu-x86_64` (Debian's `qemu-user`; `ATTNSCOPE_QEMU` names another). Without it the test prints
//! SKIP, unless `ATTNSCOPE_REQUIRE_QEMU=1` (CI), which makes that a failure.

mod common;

use common::cli::{Scratch, default_model, run_ok};
use common::read_tensors;
use std::path::{Path, PathBuf};
use std::process::Command;

/// qemu-x86_64 from `ATTNSCOPE_QEMU` or PATH.
fn qemu() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ATTNSCOPE_QEMU") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("qemu-x86_64"))
        .find(|p| p.is_file())
}

/// `attnscope run` of a fixed prompt with the weights captured, into `out`; through `wrapper`
/// (qemu and its flags) when given.
fn run(wrapper: &[&str], out: &Path) {
    let bin = env!("CARGO_BIN_EXE_attnscope");
    let mut cmd = match wrapper.split_first() {
        Some((prog, flags)) => {
            let mut c = Command::new(prog);
            c.args(flags).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(["run", "--model"])
        .arg(default_model())
        .args([
            "--prompt",
            "Once upon a time there was a little robot",
            "--capture",
            "weights",
            "--device",
            "cpu",
            "--threads",
            "2",
            "--quiet",
            "--out",
        ])
        .arg(out);
    run_ok(&mut cmd);
}

#[test]
fn runs_without_avx512_under_an_emulated_haswell() {
    if !cfg!(target_arch = "x86_64") {
        println!("SKIP: not an x86-64 build");
        return;
    }
    let Some(qemu) = qemu() else {
        if std::env::var("ATTNSCOPE_REQUIRE_QEMU").is_ok_and(|v| v == "1") {
            panic!(
                "ATTNSCOPE_REQUIRE_QEMU=1 but qemu-x86_64 is not on PATH (apt-get install qemu-user)"
            );
        }
        println!("SKIP: qemu-x86_64 not found (Debian: apt-get install qemu-user)");
        return;
    };
    #[cfg(target_arch = "x86_64")]
    println!(
        "host: avx512f {}, emulated: Haswell (avx2 + fma, no avx512)",
        std::is_x86_feature_detected!("avx512f")
    );
    let s = Scratch::new();
    let (native, emulated) = (s.root().join("native"), s.root().join("haswell"));
    run(&[], &native);
    let q = qemu.to_string_lossy().into_owned();
    run(&[q.as_str(), "-cpu", "Haswell"], &emulated);
    for file in ["attention.safetensors"] {
        let (a, b) = (
            read_tensors(&native.join(file)),
            read_tensors(&emulated.join(file)),
        );
        assert_eq!(a.len(), b.len(), "{file}: tensors");
        assert!(!a.is_empty(), "{file}: no tensors");
        for (name, (shape, x)) in &a {
            let (shape_b, y) = &b[name];
            assert_eq!(shape, shape_b, "{file} {name}: shapes");
            let d = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max);
            assert!(d <= 1e-5, "{file} {name}: native and Haswell differ by {d}");
        }
    }
}
