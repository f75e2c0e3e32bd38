//! Writing a run directory, the steps [`crate::Job::write_run`] (streaming, sequence by sequence) and
//! [`crate::JobResults::write_run`] (from results in memory) share: claim `--out` as a temporary sibling
//! (creating missing parents, removed again on failure), write the sequences through a [`RunWriter`], then
//! close its files, write the manifest last and rename the directory into place.

use crate::manifest::{RunRecord, build_manifest};
use crate::session::Session;
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_io::manifest::Manifest;
use attnscope_io::{RunDir, RunWriter, write_json};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Claims `out` (creating its missing parents) and hands the temporary directory to `write`. On any
/// failure nothing is left behind: `write` drops the [`RunDir`] (removing the temporary directory) and the
/// parents this call created are removed.
pub(crate) fn with_run_dir<T>(
    out: &Path,
    overwrite: bool,
    write: impl FnOnce(RunDir) -> Result<T>,
) -> Result<T> {
    let created = create_parents(out)?;
    let result = RunDir::create(out, overwrite).and_then(write);
    if result.is_err() {
        for dir in created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
    result
}

/// The writer of a run into `run_dir` for a model of `session`.
pub(crate) fn run_writer<'a>(run_dir: &RunDir, session: &'a Session) -> RunWriter<'a> {
    RunWriter::new(
        run_dir.path(),
        session.model.cfg.sliding_window,
        session.tokenizer.as_ref(),
    )
}

/// Ends a run whose sequences `writer` wrote into `run_dir`: closes the files, writes the manifest of
/// `record` (`write_seconds` spent writing so far, the run `started` then) and commits the directory.
pub(crate) fn finish_run(
    run_dir: RunDir,
    writer: RunWriter,
    record: &RunRecord,
    session: &Session,
    write_seconds: f64,
    started: Instant,
) -> Result<(PathBuf, Manifest)> {
    let write_started = Instant::now();
    writer.finish()?;
    let write_seconds = write_seconds + write_started.elapsed().as_secs_f64();
    let manifest = build_manifest(record, session, write_seconds, started)?;
    write_json(&run_dir.file("manifest.json"), &manifest)?;
    Ok((run_dir.commit()?, manifest))
}

/// Creates the missing ancestors of `out`, returning them outermost first. An ancestor that exists but is
/// not a directory is reported by name.
pub fn create_parents(out: &Path) -> Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    for dir in out
        .ancestors()
        .skip(1)
        .filter(|p| !p.as_os_str().is_empty())
    {
        if dir.is_dir() {
            break;
        }
        if dir.exists() {
            return Err(Error::output(
                dir,
                format!(
                    "is not a directory, so --out {} cannot be created",
                    out.display()
                ),
            ));
        }
        missing.push(dir.to_path_buf());
    }
    missing.reverse();
    for dir in &missing {
        std::fs::create_dir(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(missing)
}
