//! `--threads`: the size of rayon's global pool, bounded by the machine's cores unless forced.

use attnscope_core::Error;
use attnscope_core::Result;

/// Set to 1 to let `--threads` exceed the machine's cores (e.g. to measure oversubscription).
pub const FORCE_THREADS_ENV: &str = "ATTNSCOPE_FORCE_THREADS";

/// Most threads even when forced: beyond this, creating them alone takes the machine down.
const MAX_FORCED_THREADS: usize = 1024;

/// The thread count to use for `--threads requested` on a machine of `cores` cores: at least 1 (0 is an
/// error); above the cores, capped to them with a warning unless `forced` (then at most
/// [`MAX_FORCED_THREADS`]).
pub fn thread_count(
    requested: usize,
    cores: usize,
    forced: bool,
) -> Result<(usize, Option<String>)> {
    if requested == 0 {
        return Err(Error::input("--threads: must be at least 1"));
    }
    if requested <= cores {
        return Ok((requested, None));
    }
    if forced {
        if requested > MAX_FORCED_THREADS {
            return Err(Error::input(format!(
                "--threads {requested}: at most {MAX_FORCED_THREADS} even with {FORCE_THREADS_ENV}=1"
            )));
        }
        return Ok((requested, None));
    }
    let warning = format!(
        "warning: --threads {requested} is more than the {cores} cores of this machine; using {cores} \
         (set {FORCE_THREADS_ENV}=1 to use {requested})"
    );
    Ok((cores, Some(warning)))
}

/// Sizes rayon's global pool for `--threads` (all cores when absent), printing the cap's warning.
pub fn init_pool(requested: Option<usize>) -> Result<()> {
    let Some(requested) = requested else {
        return Ok(());
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let forced = std::env::var_os(FORCE_THREADS_ENV).is_some_and(|v| v == "1");
    let (n, warning) = thread_count(requested, cores, forced)?;
    if let Some(w) = warning {
        eprintln!("{w}");
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| Error::input(format!("--threads {n}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_capped_at_the_cores_unless_forced() {
        assert!(thread_count(0, 4, false).is_err());
        assert_eq!(thread_count(3, 4, false).ok(), Some((3, None)));
        let (n, w) = thread_count(100_000, 2, false).expect("capped");
        assert_eq!(n, 2);
        assert!(w.is_some_and(
            |w| w.starts_with("warning: --threads 100000") && w.contains(FORCE_THREADS_ENV)
        ));
        assert_eq!(thread_count(8, 2, true).ok(), Some((8, None)));
        assert!(thread_count(100_000, 2, true).is_err());
    }
}
