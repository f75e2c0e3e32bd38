//! Interrupted and hostile runs (issue #12 items 5 and 6): SIGINT/SIGTERM during `attnscope run` remove the
//! temporary sibling of `--out` and exit 130/143 with one `error:` line; a non-UTF-8 `--out`/`--model` and a
//! 250-byte `--out` name work, the former recorded losslessly (escaped) in manifest.json; what a SIGKILL or an
//! interrupted `--overwrite` left is cleaned up or restored by the next run; `ulimit -f` is an error.

#![cfg(unix)]

mod common;

use common::cli::{Scratch, copy_dir, default_model, entries, manifest, run_ok};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Kills the child when a failed assertion unwinds past it.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts a long `run` into `s.out()` and returns it once its temp directory exists.
fn start_long_run(s: &Scratch) -> KillOnDrop {
    let mut cmd = s.run_cmd();
    // Many long generations of the tiny model: seconds of work, nothing large written.
    cmd.args(["--capture", "none", "--generate", "1000", "--ignore-eos"])
        .args(["--device", "cpu", "--threads", "1", "--quiet"]);
    for _ in 0..64 {
        cmd.args(["--prompt", "Once upon a time"]);
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut guard = KillOnDrop(Some(cmd.spawn().expect("cannot start attnscope")));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if entries(&s.outs())
            .iter()
            .any(|n| n.starts_with(".run.tmp-"))
        {
            break;
        }
        let child = guard.0.as_mut().unwrap();
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status:?}) before its temp directory was seen");
        }
        assert!(Instant::now() < deadline, "no temp directory appeared");
        sleep(Duration::from_millis(2));
    }
    guard
}

/// Sends `signal` (a `kill -s` name) once `run`'s temp directory exists, and checks the outcome.
fn interrupt(signal: &str, code: i32) {
    let s = Scratch::new();
    let mut guard = start_long_run(&s);
    let child = guard.0.take().unwrap();
    let sent = Command::new("kill")
        .args(["-s", signal, &child.id().to_string()])
        .status()
        .expect("cannot run kill");
    assert!(sent.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "stderr:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "stderr:\n{stderr}");
    let want = format!("error: interrupted (SIG{signal}); removed ");
    assert!(errors[0].starts_with(&want), "stderr:\n{stderr}");
    assert!(errors[0].contains("/.run.tmp-"), "stderr:\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr:\n{stderr}");
    assert!(entries(&s.outs()).is_empty(), "{:?}", entries(&s.outs()));
}

/// SIGKILL cannot be handled: the killed run's temp directory stays, and the next run into the same
/// parent removes it (its process is gone) with a `note:` line, then writes its own run.
#[test]
fn the_next_run_removes_what_a_sigkilled_run_left() {
    let s = Scratch::new();
    let mut guard = start_long_run(&s);
    let mut child = guard.0.take().unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let left: Vec<String> = entries(&s.outs());
    assert!(
        left.len() == 1 && left[0].starts_with(".run.tmp-"),
        "{left:?}"
    );
    let mut cmd = s.run_cmd();
    cmd.args(["--prompt", "hello", "--quiet"]);
    let out = run_ok(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let note = format!("note: removed stale {}", s.outs().join(&left[0]).display());
    assert!(stderr.contains(&note), "stderr:\n{stderr}");
    assert_eq!(entries(&s.outs()), vec!["run"]);
}

#[test]
fn sigint_removes_the_temp_directory() {
    interrupt("INT", 130);
}

#[test]
fn sigterm_removes_the_temp_directory() {
    interrupt("TERM", 143);
}

#[test]
fn non_utf8_out_and_model() {
    let s = Scratch::new();
    let model = s.root().join(OsStr::from_bytes(b"model-\xfe"));
    copy_dir(&default_model(), &model);
    let out = s.outs().join(OsStr::from_bytes(b"run-\xff"));
    let mut cmd = common::cli::attnscope(s.root());
    cmd.arg("run")
        .arg("--model")
        .arg(&model)
        .arg("--out")
        .arg(&out);
    cmd.args([
        "--prompt",
        "Hello",
        "--generate",
        "2",
        "--device",
        "cpu",
        "--quiet",
    ]);
    run_ok(&mut cmd);
    assert_eq!(entries(&s.outs()).len(), 1);
    let m = manifest(&out);
    let command: Vec<&str> = m["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let escaped: Vec<u64> = m["command_escaped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap())
        .collect();
    assert_eq!(escaped.len(), 2, "{command:?}");
    assert!(
        command[escaped[0] as usize].ends_with("model-\\xfe"),
        "{command:?}"
    );
    assert!(
        command[escaped[1] as usize].ends_with("run-\\xff"),
        "{command:?}"
    );
    assert_eq!(m["model"]["path_escaped"], true);
    let path = m["model"]["path"].as_str().unwrap();
    assert!(path.ends_with("model-\\xfe"), "{path}");
    assert_eq!(
        m["model"]["weights"]["files_escaped"],
        serde_json::json!([0])
    );
}

#[test]
fn long_out_name() {
    let s = Scratch::new();
    let name = "n".repeat(250);
    let out = s.outs().join(&name);
    for overwrite in [false, true] {
        let mut cmd = common::cli::attnscope(s.root());
        cmd.arg("run").arg("--out").arg(&out);
        cmd.args(["--prompt", "Hello", "--device", "cpu", "--quiet"]);
        if overwrite {
            cmd.arg("--overwrite");
        }
        run_ok(&mut cmd);
        assert_eq!(entries(&s.outs()), vec![name.clone()]);
        assert!(out.join("manifest.json").is_file());
    }
}

/// Under `ulimit -f`, a write past the limit fails with EFBIG (SIGXFSZ is caught) instead of killing the
/// run: one `error:` line naming the file, a non-zero exit, and no temporary directory left behind.
#[test]
fn file_size_limit_is_an_error_naming_the_file_not_a_kill() {
    let s = Scratch::new();
    let model = default_model();
    // 16 KiB: the manifest and tokens fit, 8 heads × 4 layers × T² f32 weights of a long prompt do not.
    let script = format!(
        "ulimit -f 16 && exec \"{}\" run --model \"{}\" --out \"{}\" --capture all --generate 40 --ignore-eos --prompt 'Once upon a time there was a cat'",
        env!("CARGO_BIN_EXE_attnscope"),
        model.display(),
        s.out().display()
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).current_dir(s.root());
    let line = common::cli::expect_error(cmd, &s.outs(), &["File too large"]);
    assert!(
        line.contains(".run.tmp-"),
        "the error names the file: {line}"
    );
}

/// A two-step `--overwrite` killed between its renames leaves the old run in `.run.old-PID-…` and no
/// `run`: the next run into that parent renames it back (and says so) before anything else, so `--out`
/// is never found absent; without `--overwrite` it then refuses to replace it.
#[test]
fn a_stranded_old_run_is_restored_by_the_next_run() {
    let s = Scratch::new();
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let stranded = s.outs().join(format!(".run.old-{dead}-7"));
    std::fs::create_dir(&stranded).unwrap();
    std::fs::write(stranded.join("manifest.json"), "{}").unwrap();
    let mut cmd = s.run_cmd();
    cmd.args(["--prompt", "hello", "--quiet"]);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "stderr:\n{stderr}");
    assert!(stderr.contains("note: restored "), "stderr:\n{stderr}");
    assert!(stderr.contains("already exists"), "stderr:\n{stderr}");
    assert_eq!(entries(&s.outs()), vec!["run"]);
    assert_eq!(entries(&s.out()), vec!["manifest.json"]);
}
