//! The weight files of a model directory: `model.safetensors`, or the shards `model.safetensors.index.json`
//! names. [`parse_shard_index`] reads the index from its bytes (no filesystem); [`read_layout`] then checks
//! that every shard it names is a regular file inside the model directory before anything opens one.

use crate::Error;
use crate::Result;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// The parsed shard index.
pub(super) struct Index {
    pub(super) path: PathBuf,
    pub(super) bytes: Vec<u8>,
    /// Tensor name → position in [`Layout::files`] of the shard the index places it in.
    pub(super) shard_of: BTreeMap<String, usize>,
}

/// The weight files of a model directory and, when sharded, its index.
pub(super) struct Layout {
    pub(super) files: Vec<PathBuf>,
    pub(super) index: Option<Index>,
}

/// A `model.safetensors.index.json` read from its bytes: the shard files it names and where it places each
/// tensor. Every shard name is a plain relative name (no absolute path, no `..`); whether the files exist
/// is not checked here.
pub struct ShardIndex {
    /// The distinct shard files, joined to the model directory, sorted.
    files: Vec<PathBuf>,
    /// Tensor name → the shard file name as the index writes it.
    named: BTreeMap<String, String>,
    /// Tensor name → position in `files`.
    shard_of: BTreeMap<String, usize>,
}

impl ShardIndex {
    /// The distinct shard files, joined to the model directory, sorted.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Tensor name → position in [`ShardIndex::files`] of the shard the index places it in.
    pub fn shard_of(&self) -> &BTreeMap<String, usize> {
        &self.shard_of
    }
}

/// Parses the shard index `bytes` of the model directory `dir`; `index_path` is the file named in errors.
/// Reads only `weight_map` (tensor name → shard file name); every error names the file and the field.
pub fn parse_shard_index(dir: &Path, index_path: &Path, bytes: &[u8]) -> Result<ShardIndex> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| Error::Json {
        path: index_path.to_path_buf(),
        message: format!("not valid JSON: {e}"),
    })?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::field(index_path, "weight_map", "missing or not an object"))?;
    let mut named: BTreeMap<String, String> = BTreeMap::new();
    for (name, file) in map {
        let field = || format!("weight_map.{name}");
        let file = file
            .as_str()
            .ok_or_else(|| Error::field(index_path, field(), "expected a file name"))?;
        if let Some(why) = bad_shard_name(file) {
            return Err(Error::field(
                index_path,
                field(),
                format!("`{file}`: {why}"),
            ));
        }
        named.insert(name.clone(), file.to_string());
    }
    // Paths compare by component, so `a.safetensors` and `./a.safetensors` are one shard.
    let positions: BTreeMap<PathBuf, usize> = named
        .values()
        .map(|f| dir.join(f))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .enumerate()
        .map(|(i, p)| (p, i))
        .collect();
    let mut shard_of = BTreeMap::new();
    for (name, file) in &named {
        let Some(&i) = positions.get(&dir.join(file)) else {
            return Err(Error::field(
                index_path,
                format!("weight_map.{name}"),
                format!("`{file}`: shard not found among the index's files"),
            ));
        };
        shard_of.insert(name.clone(), i);
    }
    Ok(ShardIndex {
        files: positions.into_keys().collect(),
        named,
        shard_of,
    })
}

/// Why a shard name from the index is unusable: shard files must be plain relative names inside the model
/// directory (no absolute path, no `..`).
fn bad_shard_name(file: &str) -> Option<&'static str> {
    use std::path::Component;
    let path = Path::new(file);
    if file.is_empty() {
        return Some("empty file name");
    }
    if path.has_root() || path.is_absolute() {
        return Some(
            "absolute path; shard files must be relative names inside the model directory",
        );
    }
    for c in path.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Some("`..` in the path; shard files must lie inside the model directory");
            }
            Component::RootDir | Component::Prefix(_) => {
                return Some(
                    "absolute path; shard files must be relative names inside the model directory",
                );
            }
        }
    }
    None
}

/// Whether `target` (canonical) may be read for the model directory `dir` (canonical): inside it, or in
/// the `blobs/` of a Hugging Face cache when `dir` is one of its `snapshots/<revision>` directories (the
/// hub stores every file there as a symlink to `../../blobs/<hash>`).
fn inside_model_dir(dir: &Path, target: &Path) -> bool {
    if target.starts_with(dir) {
        return true;
    }
    let repo = dir
        .parent()
        .filter(|p| p.file_name().is_some_and(|n| n == "snapshots"))
        .and_then(Path::parent);
    repo.is_some_and(|r| target.starts_with(r.join("blobs")))
}

/// What kind of non-regular file `meta` describes.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    let ft = meta.file_type();
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO";
        }
        if ft.is_char_device() || ft.is_block_device() {
            return "a device";
        }
        if ft.is_socket() {
            return "a socket";
        }
    }
    if ft.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Checks, without opening it, that `path` is a regular file (following symlinks) so that opening or
/// mapping it cannot block (a FIFO) or misbehave (a device, a directory); with `contain`, also that its
/// canonical path lies inside the model directory `dir`.
fn check_regular(dir: &Path, path: &Path, contain: bool) -> std::result::Result<(), String> {
    let link = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if contain {
        let canon_dir = std::fs::canonicalize(dir).map_err(|e| format!("model directory: {e}"))?;
        let target = std::fs::canonicalize(path).map_err(|e| {
            if link.file_type().is_symlink() {
                format!("dangling symlink ({e})")
            } else {
                e.to_string()
            }
        })?;
        if !inside_model_dir(&canon_dir, &target) {
            return Err(format!(
                "resolves to {}, outside the model directory",
                target.display()
            ));
        }
    }
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(format!("{}, not a regular file", file_kind(&meta)));
    }
    Ok(())
}

/// Reads and checks the shard index (or finds `model.safetensors`). Shard names must be plain relative
/// names that stay inside the model directory and name regular files; nothing is opened before these
/// checks pass.
pub(super) fn read_layout(dir: &Path) -> Result<Layout> {
    let index_path = dir.join("model.safetensors.index.json");
    if std::fs::symlink_metadata(&index_path).is_ok() {
        check_regular(dir, &index_path, false).map_err(|m| Error::weights(&index_path, m))?;
        let bytes = std::fs::read(&index_path).map_err(|e| Error::io(&index_path, e))?;
        let ShardIndex {
            files,
            named,
            shard_of,
        } = parse_shard_index(dir, &index_path, &bytes)?;
        let mut checked: HashSet<&str> = HashSet::new();
        for (name, file) in &named {
            if !checked.insert(file) {
                continue;
            }
            let path = dir.join(file);
            if let Err(why) = check_regular(dir, &path, true) {
                return Err(Error::field(
                    &index_path,
                    format!("weight_map.{name}"),
                    format!("`{file}`: {why}"),
                ));
            }
        }
        return Ok(Layout {
            files,
            index: Some(Index {
                path: index_path,
                bytes,
                shard_of,
            }),
        });
    }
    let single = dir.join("model.safetensors");
    if std::fs::symlink_metadata(&single).is_ok() {
        check_regular(dir, &single, false).map_err(|m| Error::weights(&single, m))?;
        return Ok(Layout {
            files: vec![single],
            index: None,
        });
    }
    Err(Error::weights(
        dir,
        "no model.safetensors or model.safetensors.index.json in the model directory",
    ))
}
