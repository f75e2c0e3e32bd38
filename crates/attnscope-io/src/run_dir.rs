//! Atomic output directories and JSON files.
//!
//! A [`RunDir`] is written in a hidden sibling temp directory and renamed onto its final path by
//! [`RunDir::commit`], so readers never see a half-written run. A run that is dropped without committing
//! (error, panic unwinding) removes its temp directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use attnscope_core::Error;
use attnscope_core::Result;

/// An output directory under construction; see the module docs.
#[derive(Debug)]
pub struct RunDir {
    final_path: PathBuf,
    tmp_path: PathBuf,
    overwrite: bool,
    committed: bool,
}

/// A unique hidden sibling name `.<name>.<tag>-<pid>-<nanos>` next to `path`.
fn sibling(parent: &Path, name: &str, tag: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    parent.join(format!(".{name}.{tag}-{}-{nanos}", std::process::id()))
}

/// Removes a file or directory tree at `path`.
fn remove_any(path: &Path) -> std::io::Result<()> {
    if fs::symlink_metadata(path)?.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

impl RunDir {
    /// Creates the temp directory for a run that will end up at `final_path`.
    ///
    /// Errors (naming `final_path`) when it already exists and `overwrite` is false, or when its parent
    /// does not exist, is not a directory, or is not writable.
    pub fn create(final_path: &Path, overwrite: bool) -> Result<RunDir> {
        let name = final_path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::output(final_path, "not a usable directory name"))?;
        let parent = match final_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        match fs::metadata(parent) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                let msg = format!("parent {} is not a directory", parent.display());
                return Err(Error::output(final_path, msg));
            }
            Err(e) => {
                let msg = format!("parent directory {} is unusable: {e}", parent.display());
                return Err(Error::output(final_path, msg));
            }
        }
        if fs::symlink_metadata(final_path).is_ok() && !overwrite {
            return Err(Error::output(
                final_path,
                "already exists (pass --overwrite to replace it)",
            ));
        }
        let tmp_path = sibling(parent, name, "tmp");
        fs::create_dir(&tmp_path).map_err(|e| {
            let msg = format!("cannot create {}: {e}", tmp_path.display());
            Error::output(final_path, msg)
        })?;
        Ok(RunDir {
            final_path: final_path.to_path_buf(),
            tmp_path,
            overwrite,
            committed: false,
        })
    }

    /// The temp directory to write into until [`RunDir::commit`].
    pub fn path(&self) -> &Path {
        &self.tmp_path
    }

    /// Path of the file `name` inside the temp directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.tmp_path.join(name)
    }

    /// The path the run will have once committed.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Renames the temp directory onto the final path, replacing an existing one when `overwrite` was
    /// given, and returns the final path.
    pub fn commit(mut self) -> Result<PathBuf> {
        let final_path = self.final_path.clone();
        let mut old = None;
        if fs::symlink_metadata(&final_path).is_ok() {
            if !self.overwrite {
                return Err(Error::output(
                    &final_path,
                    "appeared while the run was written",
                ));
            }
            // Move the old run aside first so the final path is never missing a complete run for long.
            let parent = self.tmp_path.parent().unwrap_or(Path::new("."));
            let name = final_path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("run");
            let aside = sibling(parent, name, "old");
            fs::rename(&final_path, &aside).map_err(|e| Error::io(&final_path, e))?;
            old = Some(aside);
        }
        if let Err(e) = fs::rename(&self.tmp_path, &final_path) {
            if let Some(aside) = &old {
                let _ = fs::rename(aside, &final_path);
            }
            return Err(Error::io(&final_path, e));
        }
        self.committed = true;
        if let Some(aside) = old {
            remove_any(&aside).map_err(|e| Error::io(&aside, e))?;
        }
        Ok(final_path)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp_path);
        }
    }
}

/// Writes `value` as pretty-printed JSON with a trailing newline.
pub fn write_json<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::output(path, format!("cannot serialize JSON: {e}")))?;
    bytes.push(b'\n');
    fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// Writes `value` as pretty JSON to `path` through a temporary sibling renamed into place, so a reader
/// never sees a half-written file and a failure leaves none behind (the name is what the error cites).
pub fn write_json_atomic<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::output(path, "--json: not a file name"))?;
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = write_json(&tmp, value)
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn create_and_commit() {
        let parent = tempfile::tempdir().unwrap();
        let target = parent.path().join("run1");
        let run = RunDir::create(&target, false).unwrap();
        assert!(run.path().starts_with(parent.path()));
        assert!(!target.exists());
        write_json(&run.file("meta.json"), &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(run.commit().unwrap(), target);
        assert_eq!(entries(parent.path()), vec!["run1"]);
        let text = fs::read_to_string(target.join("meta.json")).unwrap();
        assert_eq!(text, "{\n  \"a\": 1\n}\n");
    }

    #[test]
    fn drop_without_commit_leaves_nothing() {
        let parent = tempfile::tempdir().unwrap();
        {
            let run = RunDir::create(&parent.path().join("run"), false).unwrap();
            fs::create_dir(run.file("sub")).unwrap();
            fs::write(run.file("sub/x.bin"), b"data").unwrap();
            assert_eq!(entries(parent.path()).len(), 1);
        }
        assert!(entries(parent.path()).is_empty());
    }

    #[test]
    fn existing_target_needs_overwrite() {
        let parent = tempfile::tempdir().unwrap();
        let target = parent.path().join("run");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("old.txt"), b"old").unwrap();
        let err = RunDir::create(&target, false).unwrap_err().to_string();
        assert!(err.contains(&target.display().to_string()), "{err}");

        let run = RunDir::create(&target, true).unwrap();
        fs::write(run.file("new.txt"), b"new").unwrap();
        run.commit().unwrap();
        assert_eq!(entries(&target), vec!["new.txt"]);
        assert_eq!(entries(parent.path()), vec!["run"]);
    }

    #[test]
    fn unusable_parents_error() {
        let parent = tempfile::tempdir().unwrap();
        let missing = parent.path().join("nope").join("run");
        let err = RunDir::create(&missing, false).unwrap_err().to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");

        let file = parent.path().join("plain");
        fs::write(&file, b"x").unwrap();
        let under_file = file.join("run");
        let err = RunDir::create(&under_file, true).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
        assert_eq!(entries(parent.path()), vec!["plain"]);
    }
}
