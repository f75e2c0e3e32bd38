//! Atomic output directories and JSON files.
//!
//! A [`RunDir`] is written in a hidden sibling temp directory `.NAME.tmp-PID@HOST-NANOS` (HOST: 8 hex
//! digits of a hash of this machine's host name, [`host_tag`]) and renamed onto its
//! final path by [`RunDir::commit`], so readers never see a half-written run. Before the rename every file
//! in it is fsynced, then the directory itself; after it, the parent directory. A run that is dropped
//! without committing (error, panic unwinding) removes its temp directory.
//!
//! Interrupted runs: every live temp directory is listed in a process-wide registry
//! ([`remove_live_temp_dirs`]) that the binary's SIGINT/SIGTERM handler empties before it exits, and
//! [`RunDir::create`] removes *stale* siblings left by a process that was killed outright (`SIGKILL`,
//! power loss): any `.NAME.tmp-PID@HOST-NANOS` or `.NAME.old-PID@HOST-NANOS` in the parent whose HOST is
//! this machine's and whose PID is not a live process (on Linux: `/proc/PID` is absent while `/proc/self`
//! exists; elsewhere, or when unsure, they are left). A sibling written on another host is never removed
//! here: on a shared file system its PID says nothing about that host's processes (names of the older
//! `.NAME.tmp-PID-NANOS` form, without HOST, count as this host's). A stale `.old` whose final path is missing is the old run of a half-done `--overwrite`: it is
//! renamed back instead of deleted. One `note:` line on stderr tells of each removal or restore.
//!
//! Overwriting: on Linux the finished temp directory is exchanged with the existing run in one
//! `renameat2(RENAME_EXCHANGE)`, so the final path always holds a complete run; the old run, now at the
//! temp name, is then removed. Where that call is unavailable the old run is first renamed aside to
//! `.NAME.old-PID-NANOS` (see [`RunDir::commit`]).
//!
//! Names: `NAME` is the final path's file name as OS bytes (non-UTF-8 is fine). When the sibling's name
//! would exceed 255 bytes (NAME_MAX), `NAME` in it is shortened to a prefix plus `~` and a 16-digit hex
//! hash of the whole name ([`sibling_stem`]).

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use attnscope_core::Error;
use attnscope_core::Result;

/// Temp directories of the runs in progress in this process (see the module docs). Whoever renames or
/// removes one holds the lock meanwhile, so the signal handler never races a commit.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The temp directories of the runs in progress in this process.
pub fn live_temp_dirs() -> Vec<PathBuf> {
    live().clone()
}

/// For a signal handler about to exit the process: removes the temp directory of every run in progress
/// (and the old run an `--overwrite` commit is discarding) and returns their paths. The registry stays
/// locked afterwards, so every later [`RunDir`] call of another thread blocks instead of racing the exit.
pub fn remove_live_temp_dirs_for_exit() -> Vec<PathBuf> {
    let guard = live();
    let mut removed = Vec::new();
    for path in guard.iter() {
        // Another thread may still be creating files in it: retry a few times.
        for _ in 0..20 {
            match remove_any(path) {
                Ok(()) => removed.push(path.clone()),
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                }
                Err(_) => {}
            }
            break;
        }
    }
    std::mem::forget(guard);
    removed
}

/// An output directory under construction; see the module docs.
#[derive(Debug)]
pub struct RunDir {
    final_path: PathBuf,
    tmp_path: PathBuf,
    overwrite: bool,
    committed: bool,
}

/// Most bytes a file name may have (Linux NAME_MAX; also the limit of most other file systems).
const NAME_MAX: usize = 255;
/// Longest `.tag-PID@HOST-NANOS` suffix of a sibling: `.tmp-` + a u32 + `@` + 8 hex + `-` + 20 digits.
const SUFFIX_MAX: usize = 5 + 10 + 1 + 8 + 1 + 20;
/// Bytes of the name kept in front of the hash when a sibling's name is shortened.
const SHORT_PREFIX: usize = 160;

/// The `NAME` part of the siblings of a run named `name`: `name` itself, or, when `.NAME.tmp-PID-NANOS`
/// could exceed NAME_MAX, its first (at most) 160 bytes (lossy UTF-8, cut at a character boundary), `~`
/// and the 64-bit FNV-1a hash of all its bytes in 16 hex digits.
pub fn sibling_stem(name: &OsStr) -> OsString {
    let bytes = name.as_encoded_bytes();
    if 1 + bytes.len() + SUFFIX_MAX <= NAME_MAX {
        return name.to_os_string();
    }
    let lossy = name.to_string_lossy();
    let mut end = SHORT_PREFIX.min(lossy.len());
    while !lossy.is_char_boundary(end) {
        end -= 1;
    }
    OsString::from(format!("{}~{:016x}", &lossy[..end], fnv1a(bytes)))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// This machine's host name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`, else `unknown`).
pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The HOST part of this machine's sibling names: 8 hex digits of the FNV-1a hash of [`host_name`].
pub fn host_tag() -> String {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| format!("{:08x}", fnv1a(host_name().as_bytes()) as u32))
        .clone()
}

/// A unique hidden sibling name `.<stem>.<tag>-<pid>@<host>-<nanos>` in `parent`.
fn sibling(parent: &Path, stem: &OsStr, tag: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut name = OsString::from(".");
    name.push(stem);
    name.push(format!(
        ".{tag}-{}@{}-{nanos}",
        std::process::id(),
        host_tag()
    ));
    parent.join(name)
}

/// Removes the temp siblings `.STEM.tmp-…` in `parent` whose STEM `owned` accepts and that no live process
/// of this host is writing: those of a dead process here and *any* of another host. Only for callers that
/// know no other process can be writing those runs, such as a sweep shard's own units (one process runs a
/// shard at a time); [`RunDir::create`] itself never touches another host's siblings. Returns one `note:`
/// (or `warning:`) line per removal.
pub fn remove_partial_runs(parent: &Path, owned: &dyn Fn(&[u8]) -> bool) -> Vec<String> {
    let Ok(dir) = fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut notes = Vec::new();
    for name in dir.filter_map(|e| e.ok().map(|e| e.file_name())) {
        let Some(s) = stale::parse(&name) else {
            continue;
        };
        let foreign = s.host.is_some_and(|h| h != host_tag().as_bytes());
        if s.tag != "tmp" || !owned(s.stem) || !(foreign || s.is_abandoned()) {
            continue;
        }
        let path = parent.join(&name);
        notes.push(match remove_any(&path) {
            Ok(()) => format!("note: removed partial run {}", path.display()),
            Err(e) => format!("warning: cannot remove partial run {}: {e}", path.display()),
        });
    }
    notes
}

/// Removes a file or directory tree at `path`.
fn remove_any(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path)?.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// The parent directory of `path` as [`RunDir`] uses it (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

impl RunDir {
    /// Creates the temp directory for a run that will end up at `final_path`, after removing stale
    /// siblings of dead processes from its parent (module docs).
    ///
    /// Errors (naming `final_path`) when it already exists and `overwrite` is false, or when its parent
    /// does not exist, is not a directory, or is not writable.
    pub fn create(final_path: &Path, overwrite: bool) -> Result<RunDir> {
        let name = final_path
            .file_name()
            .ok_or_else(|| Error::output(final_path, "not a usable directory name"))?;
        let parent = parent_of(final_path);
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
        for note in stale::clean(parent) {
            eprintln!("{note}");
        }
        if fs::symlink_metadata(final_path).is_ok() && !overwrite {
            return Err(Error::output(
                final_path,
                "already exists (pass --overwrite to replace it)",
            ));
        }
        let tmp_path = sibling(parent, &sibling_stem(name), "tmp");
        let mut live = live();
        fs::create_dir(&tmp_path).map_err(|e| {
            let msg = format!("cannot create {}: {e}", tmp_path.display());
            Error::output(final_path, msg)
        })?;
        live.push(tmp_path.clone());
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

    /// Fsyncs every file and directory of the temp directory, renames it onto the final path (replacing
    /// an existing one when `overwrite` was given), fsyncs the parent directory and returns the final path.
    pub fn commit(self) -> Result<PathBuf> {
        self.commit_with(true)
    }

    /// [`RunDir::commit`]; `exchange: false` skips the atomic exchange (tests of the fallback).
    fn commit_with(mut self, exchange: bool) -> Result<PathBuf> {
        sync_tree(&self.tmp_path)?;
        let final_path = self.final_path.clone();
        let parent = parent_of(&final_path).to_path_buf();
        let discard = {
            let mut live = live();
            let discard = self.swap_in(exchange)?;
            live.retain(|p| p != &self.tmp_path);
            if let Some(old) = &discard {
                live.push(old.clone());
            }
            discard
        };
        sync_dir(&parent)?;
        if let Some(old) = discard {
            let removed = remove_any(&old).map_err(|e| Error::io(&old, e));
            live().retain(|p| p != &old);
            removed?;
        }
        Ok(final_path)
    }

    /// Puts the temp directory at the final path (the registry is locked by the caller) and returns where
    /// the old run now is, when there was one.
    fn swap_in(&mut self, exchange: bool) -> Result<Option<PathBuf>> {
        let final_path = &self.final_path;
        if fs::symlink_metadata(final_path).is_err() {
            fs::rename(&self.tmp_path, final_path).map_err(|e| Error::io(final_path, e))?;
            self.committed = true;
            return Ok(None);
        }
        if !self.overwrite {
            return Err(Error::output(
                final_path,
                "appeared while the run was written",
            ));
        }
        if exchange
            && exchange_paths(&self.tmp_path, final_path).map_err(|e| Error::io(final_path, e))?
        {
            // One step: the final path went from the old complete run to the new one; the old run is now
            // at the temp name.
            self.committed = true;
            return Ok(Some(self.tmp_path.clone()));
        }
        // Two steps, where an atomic exchange is unavailable: the old run is renamed aside, intact, to
        // `.NAME.old-PID-NANOS`, then the new one into place. The final path is missing in between; should
        // the process die there (SIGKILL, power loss), the next `RunDir::create` in this parent finds the
        // stale `.old` with no final path and renames it back (module docs).
        let name = final_path.file_name().unwrap_or(OsStr::new("run"));
        let aside = sibling(parent_of(final_path), &sibling_stem(name), "old");
        fs::rename(final_path, &aside).map_err(|e| Error::io(final_path, e))?;
        if let Err(e) = fs::rename(&self.tmp_path, final_path) {
            let _ = fs::rename(&aside, final_path);
            return Err(Error::io(final_path, e));
        }
        self.committed = true;
        Ok(Some(aside))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if !self.committed {
            let mut live = live();
            let _ = fs::remove_dir_all(&self.tmp_path);
            live.retain(|p| p != &self.tmp_path);
        }
    }
}

/// Exchanges the directory entries `a` and `b` atomically (`renameat2(RENAME_EXCHANGE)`). `Ok(false)`
/// where the system or the file system cannot (EINVAL, ENOSYS, EOPNOTSUPP; any OS but Linux).
#[cfg(target_os = "linux")]
fn exchange_paths(a: &Path, b: &Path) -> io::Result<bool> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: FFI call; both pointers are NUL-terminated strings alive for the whole call, which only
    // reads them; the other arguments are plain integers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => Ok(false),
        _ => Err(err),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange_paths(_a: &Path, _b: &Path) -> io::Result<bool> {
    Ok(false)
}

/// Fsyncs every regular file under `dir`, then each directory (innermost first).
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            sync_and_close(file, &path)?;
        }
    }
    sync_dir(dir)
}

/// Fsyncs a directory (its entries); a no-op where directories cannot be opened as files.
fn sync_dir(dir: &Path) -> Result<()> {
    if cfg!(unix) {
        let file = File::open(dir).map_err(|e| Error::io(dir, e))?;
        sync_and_close(file, dir)?;
    }
    Ok(())
}

/// `fsync` then `close`, either failure an error naming `path` (dropping a `File` ignores close errors).
fn sync_and_close(file: File, path: &Path) -> Result<()> {
    file.sync_all()
        .map_err(|e| Error::output(path, format!("cannot sync to disk: {e}")))?;
    close(file).map_err(|e| Error::output(path, format!("cannot close: {e}")))
}

#[cfg(unix)]
fn close(file: File) -> io::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = file.into_raw_fd();
    // SAFETY: FFI call; `fd` was just taken out of the `File`, so it is open and owned here, and nothing
    // else closes or uses it.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn close(file: File) -> io::Result<()> {
    drop(file);
    Ok(())
}

/// Stale siblings of dead processes (module docs).
mod stale {
    use super::*;

    /// A parsed sibling name `.STEM.TAG-PID[@HOST]-NANOS`.
    pub(super) struct Sibling<'a> {
        pub stem: &'a [u8],
        pub tag: &'static str,
        pub pid: u32,
        /// The 8-hex-digit host tag; `None` for names of the older form without one.
        pub host: Option<&'a [u8]>,
    }

    impl Sibling<'_> {
        /// Whether the process that made it is surely gone: it ran on this host and its PID is dead.
        pub(super) fn is_abandoned(&self) -> bool {
            self.host.is_none_or(|h| h == host_tag().as_bytes()) && is_dead(self.pid)
        }
    }

    /// Splits `.STEM.TAG-PID[@HOST]-NANOS` (TAG `tmp` or `old`, PID and NANOS decimal, HOST 8 lowercase hex
    /// digits, STEM non-empty).
    pub(super) fn parse(name: &OsStr) -> Option<Sibling<'_>> {
        let rest = name.as_encoded_bytes().strip_prefix(b".")?;
        let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
        let dash = rest.iter().rposition(|&b| b == b'-')?;
        let (rest, nanos) = (&rest[..dash], &rest[dash + 1..]);
        let dash = rest.iter().rposition(|&b| b == b'-')?;
        let (rest, owner) = (&rest[..dash], &rest[dash + 1..]);
        let (pid, host) = match owner.iter().position(|&b| b == b'@') {
            Some(at) => {
                let host = &owner[at + 1..];
                let hex =
                    host.len() == 8 && host.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                if !hex {
                    return None;
                }
                (&owner[..at], Some(host))
            }
            None => (owner, None),
        };
        if !digits(nanos) || !digits(pid) {
            return None;
        }
        let pid: u32 = std::str::from_utf8(pid).ok()?.parse().ok()?;
        let (stem, tag) = if let Some(s) = rest.strip_suffix(b".tmp") {
            (s, "tmp")
        } else {
            (rest.strip_suffix(b".old")?, "old")
        };
        (!stem.is_empty()).then_some(Sibling {
            stem,
            tag,
            pid,
            host,
        })
    }

    /// Whether `pid` is surely not a live process: `/proc/PID` is absent while `/proc/self` exists.
    #[cfg(target_os = "linux")]
    pub(super) fn is_dead(pid: u32) -> bool {
        if pid == std::process::id() || !Path::new("/proc/self").exists() {
            return false;
        }
        matches!(
            fs::symlink_metadata(format!("/proc/{pid}")),
            Err(e) if e.kind() == io::ErrorKind::NotFound
        )
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn is_dead(_pid: u32) -> bool {
        false
    }

    /// Removes the stale siblings in `parent`, restoring a stranded `.old` where its run's path is free,
    /// and returns one `note:` (or `warning:`) line per action.
    pub(super) fn clean(parent: &Path) -> Vec<String> {
        let Ok(dir) = fs::read_dir(parent) else {
            return Vec::new();
        };
        let names: Vec<OsString> = dir.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
        let mut notes = Vec::new();
        for name in &names {
            let Some(Sibling { stem, tag, pid, .. }) = parse(name).filter(Sibling::is_abandoned)
            else {
                continue;
            };
            let path = parent.join(name);
            if tag == "old" {
                let run_present = names
                    .iter()
                    .any(|n| parse(n).is_none() && sibling_stem(n).as_encoded_bytes() == stem);
                if !run_present {
                    notes.extend(restore(parent, &path, stem));
                    continue;
                }
            }
            notes.push(match remove_any(&path) {
                Ok(()) => format!(
                    "note: removed stale {} (left by dead process {pid})",
                    path.display()
                ),
                Err(e) => format!("warning: cannot remove stale {}: {e}", path.display()),
            });
        }
        notes
    }

    /// Whether `stem` has the form of a shortened name ([`sibling_stem`]): a 157–160-byte prefix (cut at a
    /// character boundary), `~` and 16 lowercase hex digits.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(super) fn is_shortened(stem: &[u8]) -> bool {
        let Some((prefix, hash)) = stem.len().checked_sub(17).map(|n| stem.split_at(n)) else {
            return false;
        };
        (SHORT_PREFIX - 3..=SHORT_PREFIX).contains(&prefix.len())
            && hash[0] == b'~'
            && hash[1..]
                .iter()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    /// Renames the stranded old run `path` back to `parent/STEM`, unless STEM is a shortened name (the
    /// full name is then unknown and the directory is left as it is).
    #[cfg(unix)]
    fn restore(parent: &Path, path: &Path, stem: &[u8]) -> Option<String> {
        use std::os::unix::ffi::OsStrExt;
        if is_shortened(stem) {
            return None;
        }
        let name = OsStr::from_bytes(stem);
        let target = parent.join(name);
        if fs::symlink_metadata(&target).is_ok() {
            return None;
        }
        Some(match fs::rename(path, &target) {
            Ok(()) => format!(
                "note: restored {} from stale {} (an interrupted --overwrite)",
                target.display(),
                path.display()
            ),
            Err(e) => format!(
                "warning: cannot restore {} to {}: {e}",
                path.display(),
                target.display()
            ),
        })
    }

    #[cfg(not(unix))]
    fn restore(_parent: &Path, _path: &Path, _stem: &[u8]) -> Option<String> {
        None
    }
}

/// Writes `value` as pretty-printed JSON with a trailing newline, fsynced.
pub fn write_json<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::output(path, format!("cannot serialize JSON: {e}")))?;
    bytes.push(b'\n');
    let mut file = File::create(path).map_err(|e| Error::io(path, e))?;
    file.write_all(&bytes).map_err(|e| Error::io(path, e))?;
    sync_and_close(file, path)
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
mod tests;
