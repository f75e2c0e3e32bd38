//! Issue #12 item 7's reproducer: many tiny sequences in one `--input` spec (100,000 of ~85 KB of capture
//! each ran out of memory). Each sequence is written as it finishes, so the peak memory of a run of 4,000
//! sequences is that of a run of 20, not 200 times it. Peak RSS is the children's `ru_maxrss`; this file
//! holds one test, so no other child of this process is counted.

#![cfg(target_os = "linux")]

mod common;

use common::cli::{Scratch, default_model, input_file, read_parquet, run_ok};

/// The largest peak RSS of the children waited for so far, in MB.
fn children_peak_rss_mb() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `rusage` into the pointer, which is valid for it and zero-initialised.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage failed");
    // SAFETY: getrusage succeeded, so it filled the struct (and it was zeroed before).
    let usage = unsafe { usage.assume_init() };
    usage.ru_maxrss as f64 / 1024.0 // kilobytes on Linux
}

/// Runs `n` three-token sequences with the default capture (statistics); returns the run's peak RSS (MB,
/// as the children's maximum so far) and checks every sequence reached tokens.parquet.
fn run(n: usize) -> f64 {
    let s = Scratch::new();
    let seqs: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"token_ids": [5 + i % 7, 6, 7]}))
        .collect();
    let spec = input_file(&s, serde_json::json!({ "sequences": seqs }));
    let mut cmd = s.run_cmd();
    cmd.arg("--model")
        .arg(default_model())
        .arg("--input")
        .arg(&spec)
        .args(["--quiet", "--threads", "1"]);
    run_ok(&mut cmd);
    assert_eq!(read_parquet(&s.out().join("tokens.parquet")).len(), 3 * n);
    children_peak_rss_mb()
}

#[test]
fn peak_memory_does_not_grow_with_the_number_of_sequences() {
    let few = run(20);
    let many = run(4000);
    eprintln!("peak RSS: 20 sequences {few:.1} MB, 4000 sequences {many:.1} MB");
    // Held in memory until the end, the 4,000 captures took ~370 MB more than 20 (≈93 KB each); written
    // as each sequence ends, only the manifest's small per-sequence records remain.
    assert!(
        many < few + 48.0,
        "peak RSS grew from {few:.1} MB (20 sequences) to {many:.1} MB (4000)"
    );
}
