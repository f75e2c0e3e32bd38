//! `attnscope bench-serve` end to end, as scripts/bench_pair.py drives it: the binary is started on a tiny
//! random config, answers the ready line, one prefill, one decode and a bad request through the line
//! protocol on stdin/stdout, and exits 0 on `quit`; bad flags give one-line errors.

mod common;

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

#[test]
fn serves_prefill_and_decode_requests_over_stdin() {
    let config = common::cli::fixture("llama_gqa").join("config.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_attnscope"))
        .args(["bench-serve", "--config"])
        .arg(&config)
        .args(["--threads", "1", "--seed", "3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start attnscope bench-serve");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut next = || -> Value {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    };

    let ready = next();
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["engine"], "attnscope");
    assert_eq!(ready["threads"], 1);
    assert_eq!(ready["device"], "cpu");
    assert!(ready["parameters"].as_u64().unwrap() > 0);

    let mut ask = |request: &str| -> Value {
        writeln!(stdin, "{request}").unwrap();
        stdin.flush().unwrap();
        next()
    };
    let prefill = ask(r#"{"op":"prefill","t":16,"mode":"stats"}"#);
    assert_eq!(prefill["ok"], true, "{prefill}");
    assert!(prefill["seconds"].as_f64().unwrap() > 0.0);
    let decode = ask(r#"{"op":"decode","batch":2,"context":6,"steps":3,"mode":"none"}"#);
    assert_eq!(decode["ok"], true, "{decode}");
    assert_eq!(decode["steps"], 3);
    assert!(decode["seconds_per_step"].as_f64().unwrap() > 0.0);
    let bad = ask(r#"{"op":"prefill","t":16}"#);
    assert_eq!(bad["ok"], false, "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("mode"), "{bad}");
    let quit = ask(r#"{"op":"quit"}"#);
    assert_eq!(quit["ok"], true);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.is_empty(),
        "nothing after the quit reply: {out:?}"
    );
}

#[test]
fn bad_flags_give_one_line_errors() {
    for (args, expect) in [
        (&["bench-serve", "--model", "nosuch"][..], "nosuch"),
        (
            &["bench-serve", "--model", "llama-100m", "--threads", "0"][..],
            "--threads",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_attnscope"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        let errors: Vec<_> = stderr.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains(expect), "{stderr}");
        assert!(out.stdout.is_empty(), "no ready line on a bad flag");
    }
}
