//! SIGINT and SIGTERM: remove the temporary directory of every run in progress
//! (`attnscope_io::run_dir::remove_live_temp_dirs_for_exit`), say so on one `error:` line and exit with
//! 128 + the signal number (130, 143), as a shell reports a process killed by it. SIGXFSZ (a write past
//! `ulimit -f`) is caught and ignored, so that the write fails with EFBIG and the run reports the file and
//! cleans up like any other write error, instead of being killed with its temporary directory left behind.

/// Starts the thread that waits for SIGINT/SIGTERM; called once, first thing in `main`. Should that fail,
/// a warning says so and the signals keep their default action (no cleanup).
#[cfg(unix)]
pub fn install() {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGXFSZ};
    use signal_hook::iterator::Signals;
    let ignored = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(SIGXFSZ, ignored) {
        eprintln!(
            "warning: cannot handle SIGXFSZ ({e}); a write past `ulimit -f` would kill the run and leave its temporary directory"
        );
    }
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "warning: cannot handle SIGINT/SIGTERM ({e}); an interrupted run may leave its temporary directory"
            );
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("attnscope-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let removed = attnscope_io::run_dir::remove_live_temp_dirs_for_exit();
                eprintln!("{}", message(sig, &removed));
                std::process::exit(128 + sig);
            }
        });
    if let Err(e) = spawned {
        eprintln!(
            "warning: cannot handle SIGINT/SIGTERM ({e}); an interrupted run may leave its temporary directory"
        );
    }
}

#[cfg(not(unix))]
pub fn install() {}

/// `error: interrupted (SIGINT); removed /path/.out.tmp-…` (without `; removed …` when nothing was).
#[cfg(unix)]
fn message(sig: i32, removed: &[std::path::PathBuf]) -> String {
    let name = match sig {
        signal_hook::consts::SIGINT => "SIGINT",
        signal_hook::consts::SIGTERM => "SIGTERM",
        _ => "signal",
    };
    let mut line = format!("error: interrupted ({name})");
    if !removed.is_empty() {
        let paths: Vec<String> = removed.iter().map(|p| p.display().to_string()).collect();
        line.push_str(&format!("; removed {}", paths.join(", ")));
    }
    line
}
