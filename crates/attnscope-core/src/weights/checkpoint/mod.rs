//! Reading safetensors checkpoints (single file or sharded via `model.safetensors.index.json`),
//! memory-mapped, converted to f32 (large matrices: to their storage dtype, tensor by tensor), with every
//! error naming the file and tensor. `index`: which files (the shard index, parsed from its bytes, and the
//! filesystem checks); `header`: each file's tensor table, parsed from its bytes; `convert`: tensor bytes →
//! f32 / bf16 / f16.

mod convert;
mod header;
mod index;

pub use index::{ShardIndex, parse_shard_index};

use crate::Error;
use crate::Result;
use crate::config::NormKind;
use crate::weights::{Linear, Norm, StorageDtype, WeightMatrix, WeightsInfo};
use convert::{to_f32, to_matrix};
use index::{Index, Layout, read_layout};
use memmap2::Mmap;
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Lists the safetensors files of a model directory: `model.safetensors.index.json` when present, else
/// `model.safetensors`. Every shard the index names is checked before anything opens it (see
/// [`read_layout`]).
pub fn weight_files(dir: &Path) -> Result<(Vec<PathBuf>, Option<Vec<u8>>)> {
    let layout = read_layout(dir)?;
    Ok((layout.files, layout.index.map(|i| i.bytes)))
}

/// A checkpoint tensor never read while loading: its name and file.
pub(super) type Unused = (String, PathBuf);

/// Memory-mapped checkpoint files with a name → file lookup.
struct Checkpoint {
    files: Vec<PathBuf>,
    maps: Vec<Mmap>,
    index: Option<Index>,
}

/// Opened safetensors headers borrowing the mappings.
struct Tensors<'a> {
    files: &'a [PathBuf],
    tables: Vec<SafeTensors<'a>>,
    by_name: HashMap<String, usize>,
    /// The shard index, when sharded (named by errors about tensors that are in no file).
    index_path: Option<&'a Path>,
    /// Names read so far (not merely probed with `has`), for the unused-tensor report.
    requested: Mutex<HashSet<String>>,
}

impl Checkpoint {
    fn open(layout: Layout) -> Result<Checkpoint> {
        let Layout { files, index } = layout;
        let mut maps = Vec::with_capacity(files.len());
        for path in &files {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            // SAFETY: the file is mapped read-only; attnscope never writes to checkpoint files, and a checkpoint
            // modified by another process while mapped is outside what any loader can guard against.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            maps.push(map);
        }
        Ok(Checkpoint { files, maps, index })
    }

    /// Reads every header (see [`header::read_headers`]).
    fn tensors(&self) -> Result<Tensors<'_>> {
        let maps: Vec<&[u8]> = self.maps.iter().map(|m| &m[..]).collect();
        let (tables, by_name) = header::read_headers(&self.files, &maps, self.index.as_ref())?;
        Ok(Tensors::new(
            &self.files,
            tables,
            by_name,
            self.index.as_ref().map(|i| i.path.as_path()),
        ))
    }
}

impl<'a> Tensors<'a> {
    fn new(
        files: &'a [PathBuf],
        tables: Vec<SafeTensors<'a>>,
        by_name: HashMap<String, usize>,
        index_path: Option<&'a Path>,
    ) -> Tensors<'a> {
        Tensors {
            files,
            tables,
            by_name,
            index_path,
            requested: Mutex::new(HashSet::new()),
        }
    }
}

impl Tensors<'_> {
    fn has(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    fn file_for_errors(&self) -> &Path {
        if let Some(index) = self.index_path {
            return index;
        }
        self.files
            .first()
            .map(PathBuf::as_path)
            .unwrap_or(Path::new("model.safetensors"))
    }

    /// A tensor of the given shape (checked) and the file it is in.
    fn view(&self, name: &str, shape: &[usize]) -> Result<(TensorView<'_>, &Path)> {
        let Some(&i) = self.by_name.get(name) else {
            return Err(Error::weights(
                self.file_for_errors(),
                format!("missing tensor `{name}` (expected shape {shape:?})"),
            ));
        };
        self.requested
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
        let path = &self.files[i];
        let view = self.tables[i]
            .tensor(name)
            .map_err(|e| Error::weights(path, format!("tensor `{name}`: {e}")))?;
        if view.shape() != shape {
            return Err(Error::weights(
                path,
                format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    view.shape()
                ),
            ));
        }
        Ok((view, path))
    }

    /// Loads a tensor as f32, checking its shape.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (view, path) = self.view(name, shape)?;
        to_f32(view.dtype(), view.data())
            .map_err(|m| Error::weights(path, format!("tensor `{name}`: {m}")))
    }

    /// Loads a tensor straight into `storage` (a copy when the checkpoint has that dtype already; never the
    /// whole tensor in f32 first), checking its shape.
    fn matrix(&self, name: &str, shape: &[usize], storage: StorageDtype) -> Result<WeightMatrix> {
        let (view, path) = self.view(name, shape)?;
        to_matrix(view.dtype(), view.data(), storage)
            .map_err(|m| Error::weights(path, format!("tensor `{name}`: {m}")))
    }

    fn opt(&self, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
        if self.has(name) {
            self.get(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Tensors present in the checkpoint but never read, sorted, each with its file.
    fn unused(&self) -> Vec<Unused> {
        let requested = self.requested.lock().unwrap_or_else(|e| e.into_inner());
        let mut unused: Vec<Unused> = self
            .by_name
            .iter()
            .filter(|(n, _)| !requested.contains(n.as_str()))
            .map(|(n, &i)| (n.clone(), self.files[i].clone()))
            .collect();
        unused.sort();
        unused
    }

    fn info(&self, index_bytes: Option<&[u8]>) -> WeightsInfo {
        let mut dtypes = BTreeMap::new();
        let mut stored_parameters = 0;
        let mut hasher = Sha256::new();
        if let Some(bytes) = index_bytes {
            hasher.update(bytes);
        }
        for table in &self.tables {
            let mut entries: Vec<_> = table.tensors();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, view) in entries {
                *dtypes.entry(format!("{:?}", view.dtype())).or_insert(0) += 1;
                stored_parameters += view.shape().iter().product::<usize>();
                hasher.update(format!(
                    "{name}:{:?}:{:?}:{};",
                    view.dtype(),
                    view.shape(),
                    view.data().len()
                ));
            }
        }
        WeightsInfo {
            files: self.files.to_vec(),
            dtypes,
            stored_parameters,
            index_sha256: hex(&hasher.finalize()),
        }
    }
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the header of one safetensors file from its bytes (no filesystem; `path` is the file named in
/// errors) and describes it as [`inspect_weights`] does a single-file checkpoint.
pub fn inspect_safetensors(path: &Path, bytes: &[u8]) -> Result<WeightsInfo> {
    let files = [path.to_path_buf()];
    let (tables, by_name) = header::read_headers(&files, &[bytes], None)?;
    Ok(Tensors::new(&files, tables, by_name, None).info(None))
}

/// Reads only the headers of a model's weight files (for `inspect`).
pub fn inspect_weights(dir: &Path) -> Result<WeightsInfo> {
    let ckpt = Checkpoint::open(read_layout(dir)?)?;
    let tensors = ckpt.tensors()?;
    Ok(tensors.info(ckpt.index.as_ref().map(|i| i.bytes.as_slice())))
}

/// Opens the checkpoint of `dir` and hands its tensors to `read`; returns what `read` built, the
/// description of the files, and the tensors `read` never read (name and file, sorted).
pub(super) fn with_tensors<T>(
    dir: &Path,
    storage: StorageDtype,
    read: impl FnOnce(&TensorLoader) -> Result<T>,
) -> Result<(T, WeightsInfo, Vec<Unused>)> {
    let ckpt = Checkpoint::open(read_layout(dir)?)?;
    let t = ckpt.tensors()?;
    let info = t.info(ckpt.index.as_ref().map(|i| i.bytes.as_slice()));
    let built = read(&t.loader(storage))?;
    Ok((built, info, t.unused()))
}

/// The narrow interface the per-family name maps use; `storage` is the dtype of the large matrices it
/// returns (linear weights, embedding tables).
pub struct TensorLoader<'t, 'a> {
    tensors: &'t Tensors<'a>,
    storage: StorageDtype,
}

impl<'a> Tensors<'a> {
    fn loader(&self, storage: StorageDtype) -> TensorLoader<'_, 'a> {
        TensorLoader {
            tensors: self,
            storage,
        }
    }
}

impl TensorLoader<'_, '_> {
    /// Whether a tensor of this name exists.
    pub fn has(&self, name: &str) -> bool {
        self.tensors.has(name)
    }
    /// A required tensor of the given shape, as f32.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.tensors.get(name, shape)
    }
    /// A required large matrix (an embedding table) of the given shape, in the loader's storage dtype.
    pub fn matrix(&self, name: &str, shape: &[usize]) -> Result<WeightMatrix> {
        self.tensors.matrix(name, shape, self.storage)
    }
    /// The storage dtype of the large matrices.
    pub fn storage(&self) -> StorageDtype {
        self.storage
    }
    /// An optional tensor of the given shape.
    pub fn opt(&self, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
        self.tensors.opt(name, shape)
    }
    /// A Linear stored as `[out, in]` (+ optional or required bias `[out]`).
    pub fn linear(
        &self,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Linear> {
        let weight = self.matrix(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let bias = if bias {
            Some(self.get(&format!("{prefix}.bias"), &[out_dim])?)
        } else {
            None
        };
        Ok(Linear {
            weight,
            bias,
            in_dim,
            out_dim,
        })
    }
    /// A norm of width `dim`; LayerNorm has a bias.
    pub fn norm(&self, prefix: &str, dim: usize, kind: NormKind) -> Result<Norm> {
        let weight = self.get(&format!("{prefix}.weight"), &[dim])?;
        let bias = match kind {
            NormKind::LayerNorm => Some(self.get(&format!("{prefix}.bias"), &[dim])?),
            NormKind::RmsNorm => None,
        };
        Ok(Norm { weight, bias })
    }
    /// The first of `candidates` that exists, else the first (so that the error names it).
    pub fn pick_prefix<'p>(&self, probe: &str, candidates: &[&'p str]) -> &'p str {
        candidates
            .iter()
            .copied()
            .find(|p| self.has(&format!("{p}{probe}")))
            .unwrap_or(candidates[0])
    }
}

#[cfg(test)]
mod tests;
