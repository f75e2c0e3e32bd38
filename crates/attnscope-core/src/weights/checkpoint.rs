//! Reading safetensors checkpoints (single file or sharded via `model.safetensors.index.json`),
//! memory-mapped, converted to f32 (large matrices: to their storage dtype, tensor by tensor), with every
//! error naming the file and tensor.

use crate::Error;
use crate::Result;
use crate::config::NormKind;
use crate::weights::{Linear, Norm, StorageDtype, WeightMatrix, WeightsInfo};
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Lists the safetensors files of a model directory: `model.safetensors.index.json` when present, else
/// `model.safetensors`.
pub fn weight_files(dir: &Path) -> Result<(Vec<PathBuf>, Option<Vec<u8>>)> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let bytes = std::fs::read(&index).map_err(|e| Error::io(&index, e))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::Json {
            path: index.clone(),
            message: format!("not valid JSON: {e}"),
        })?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::field(&index, "weight_map", "missing or not an object"))?;
        let mut files: Vec<PathBuf> = Vec::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| {
                Error::field(&index, format!("weight_map.{name}"), "expected a file name")
            })?;
            let path = dir.join(file);
            if !files.contains(&path) {
                files.push(path);
            }
        }
        files.sort();
        return Ok((files, Some(bytes)));
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok((vec![single], None));
    }
    Err(Error::weights(
        dir,
        "no model.safetensors or model.safetensors.index.json in the model directory",
    ))
}

/// Memory-mapped checkpoint files with a name → file lookup.
struct Checkpoint {
    files: Vec<PathBuf>,
    maps: Vec<Mmap>,
}

/// Opened safetensors headers borrowing the mappings.
struct Tensors<'a> {
    files: &'a [PathBuf],
    tables: Vec<SafeTensors<'a>>,
    by_name: HashMap<String, usize>,
}

impl Checkpoint {
    fn open(files: Vec<PathBuf>) -> Result<Checkpoint> {
        let mut maps = Vec::with_capacity(files.len());
        for path in &files {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            // SAFETY: the file is mapped read-only; attnscope never writes to checkpoint files, and a checkpoint
            // modified by another process while mapped is outside what any loader can guard against.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            maps.push(map);
        }
        Ok(Checkpoint { files, maps })
    }

    fn tensors(&self) -> Result<Tensors<'_>> {
        let mut tables = Vec::with_capacity(self.maps.len());
        let mut by_name = HashMap::new();
        for (i, (map, path)) in self.maps.iter().zip(&self.files).enumerate() {
            let table = SafeTensors::deserialize(map).map_err(|e| {
                Error::weights(
                    path,
                    format!("not a readable safetensors file ({e}); is it truncated?"),
                )
            })?;
            for name in table.names() {
                by_name.insert(name.to_string(), i);
            }
            tables.push(table);
        }
        Ok(Tensors {
            files: &self.files,
            tables,
            by_name,
        })
    }
}

impl Tensors<'_> {
    fn has(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    fn file_for_errors(&self) -> &Path {
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

/// Elements converted per parallel task.
const CHUNK: usize = 1 << 16;

/// Decodes one little-endian element to f32.
type Decode = fn(&[u8]) -> f32;

/// Bytes per element and the little-endian decoder of a checkpoint dtype.
fn decoder(dtype: Dtype) -> std::result::Result<(usize, Decode), String> {
    match dtype {
        Dtype::F32 => Ok((4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        Dtype::F16 => Ok((2, |b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())),
        Dtype::BF16 => Ok((2, |b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        other => Err(format!(
            "unsupported dtype {other:?} (supported: F32, F16, BF16)"
        )),
    }
}

/// Decodes every element of `data` and maps it, in parallel chunks.
fn decode_map<T: Send>(data: &[u8], size: usize, decode: impl Fn(&[u8]) -> T + Sync) -> Vec<T> {
    data.par_chunks(size * CHUNK)
        .flat_map_iter(|c| c.chunks_exact(size).map(&decode))
        .collect()
}

/// Converts little-endian tensor bytes to f32.
fn to_f32(dtype: Dtype, data: &[u8]) -> std::result::Result<Vec<f32>, String> {
    let (size, decode) = decoder(dtype)?;
    Ok(decode_map(data, size, decode))
}

/// Converts little-endian tensor bytes to a matrix stored as `storage`, element by element (bf16 → bf16 and
/// f16 → f16 keep the bits).
fn to_matrix(
    dtype: Dtype,
    data: &[u8],
    storage: StorageDtype,
) -> std::result::Result<WeightMatrix, String> {
    let (size, decode) = decoder(dtype)?;
    let bits = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
    Ok(match (dtype, storage) {
        (_, StorageDtype::F32) => WeightMatrix::F32(decode_map(data, size, decode)),
        (Dtype::BF16, StorageDtype::Bf16) => {
            WeightMatrix::Bf16(decode_map(data, 2, |b| half::bf16::from_bits(bits(b))))
        }
        (Dtype::F16, StorageDtype::F16) => {
            WeightMatrix::F16(decode_map(data, 2, |b| half::f16::from_bits(bits(b))))
        }
        (_, StorageDtype::Bf16) => {
            WeightMatrix::Bf16(decode_map(data, size, |b| half::bf16::from_f32(decode(b))))
        }
        (_, StorageDtype::F16) => {
            WeightMatrix::F16(decode_map(data, size, |b| half::f16::from_f32(decode(b))))
        }
    })
}

/// Reads only the headers of a model's weight files (for `inspect`).
pub fn inspect_weights(dir: &Path) -> Result<WeightsInfo> {
    let (files, index) = weight_files(dir)?;
    let ckpt = Checkpoint::open(files)?;
    let tensors = ckpt.tensors()?;
    Ok(tensors.info(index.as_deref()))
}

/// Opens the checkpoint of `dir` and hands its tensors to `read`; returns what `read` built and the
/// description of the files.
pub(super) fn with_tensors<T>(
    dir: &Path,
    storage: StorageDtype,
    read: impl FnOnce(&TensorLoader) -> Result<T>,
) -> Result<(T, WeightsInfo)> {
    let (files, index) = weight_files(dir)?;
    let ckpt = Checkpoint::open(files)?;
    let t = ckpt.tensors()?;
    let info = t.info(index.as_deref());
    Ok((read(&t.loader(storage))?, info))
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
