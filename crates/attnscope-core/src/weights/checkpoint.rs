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

/// The parsed shard index.
struct Index {
    path: PathBuf,
    bytes: Vec<u8>,
    /// Tensor name → position in [`Layout::files`] of the shard the index places it in.
    shard_of: BTreeMap<String, usize>,
}

/// The weight files of a model directory and, when sharded, its index.
struct Layout {
    files: Vec<PathBuf>,
    index: Option<Index>,
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
fn read_layout(dir: &Path) -> Result<Layout> {
    let index_path = dir.join("model.safetensors.index.json");
    if std::fs::symlink_metadata(&index_path).is_ok() {
        check_regular(dir, &index_path, false).map_err(|m| Error::weights(&index_path, m))?;
        let bytes = std::fs::read(&index_path).map_err(|e| Error::io(&index_path, e))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::Json {
            path: index_path.clone(),
            message: format!("not valid JSON: {e}"),
        })?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::field(&index_path, "weight_map", "missing or not an object"))?;
        let mut named: BTreeMap<String, &str> = BTreeMap::new();
        for (name, file) in map {
            let field = || format!("weight_map.{name}");
            let file = file
                .as_str()
                .ok_or_else(|| Error::field(&index_path, field(), "expected a file name"))?;
            if let Some(why) = bad_shard_name(file) {
                return Err(Error::field(
                    &index_path,
                    field(),
                    format!("`{file}`: {why}"),
                ));
            }
            named.insert(name.clone(), file);
        }
        let mut files: Vec<PathBuf> = named.values().map(|f| dir.join(f)).collect();
        files.sort();
        files.dedup();
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
        let shard_of = named
            .into_iter()
            .map(|(name, file)| {
                let path = dir.join(file);
                let i = files.binary_search(&path).expect("listed above");
                (name, i)
            })
            .collect();
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

/// Bytes per element of a safetensors dtype name (`None` for names this diagnosis does not know).
fn dtype_bytes(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "F8_E4M3" | "F8_E5M2" | "I8" | "U8" | "BOOL" => 1,
        _ => return None,
    })
}

/// Finds the tensor that makes a safetensors header unreadable (shape × dtype not matching its offsets, a
/// gap or overlap, data past the end of the file), for an error that names it.
fn diagnose_header(map: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(map.get(..8)?.try_into().ok()?) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(map.get(8..8usize.checked_add(n)?)?).ok()?;
    let data_len = map.len() - 8 - n;
    let mut entries: Vec<(String, String, Vec<usize>, usize, usize)> = Vec::new();
    for (name, info) in &header {
        if name == "__metadata__" {
            continue;
        }
        let dtype = info.get("dtype")?.as_str()?.to_string();
        let shape: Vec<usize> = info
            .get("shape")?
            .as_array()?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()?;
        let offs = info.get("data_offsets")?.as_array()?;
        let (b, e) = (
            offs.first()?.as_u64()? as usize,
            offs.get(1)?.as_u64()? as usize,
        );
        entries.push((name.clone(), dtype, shape, b, e));
    }
    entries.sort_by_key(|e| (e.3, e.4));
    let mut expected_start = 0;
    for (name, dtype, shape, b, e) in &entries {
        if *b != expected_start || e < b {
            return Some(format!(
                "tensor `{name}`: data_offsets [{b}, {e}] do not follow the previous tensor (which ends at {expected_start})"
            ));
        }
        if let Some(size) = dtype_bytes(dtype) {
            let need = shape.iter().try_fold(size, |acc, &d| acc.checked_mul(d));
            if need != Some(e - b) {
                return Some(format!(
                    "tensor `{name}`: shape {shape:?} of {dtype} needs {} bytes but its data_offsets span {}",
                    need.map_or("too many".to_string(), |n| n.to_string()),
                    e - b
                ));
            }
        }
        if *e > data_len {
            return Some(format!(
                "tensor `{name}`: data ends at byte {e} but the file holds only {data_len} data bytes; is it truncated?"
            ));
        }
        expected_start = *e;
    }
    (expected_start != data_len).then(|| {
        format!(
            "the tensors' data ends at byte {expected_start} but the file holds {data_len} data bytes"
        )
    })
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

    /// Reads every header. A tensor stored in two files is an error naming both; with an index, so is a
    /// tensor missing from the shard the index places it in.
    fn tensors(&self) -> Result<Tensors<'_>> {
        let mut tables = Vec::with_capacity(self.maps.len());
        let mut by_name: HashMap<String, usize> = HashMap::new();
        for (i, (map, path)) in self.maps.iter().zip(&self.files).enumerate() {
            let table = SafeTensors::deserialize(map).map_err(|e| {
                let why = diagnose_header(map).unwrap_or_else(|| e.to_string());
                Error::weights(path, format!("not a readable safetensors file: {why}"))
            })?;
            let mut names = table.names();
            names.sort();
            for name in names {
                if let Some(prev) = by_name.insert(name.to_string(), i) {
                    return Err(Error::weights(
                        path,
                        format!(
                            "tensor `{name}` is also in {}; a tensor must be stored in one file only",
                            self.files[prev].display()
                        ),
                    ));
                }
            }
            tables.push(table);
        }
        if let Some(index) = &self.index {
            for (name, &want) in &index.shard_of {
                let shard = &self.files[want];
                match by_name.get(name) {
                    Some(&got) if got == want => {}
                    Some(&got) => {
                        return Err(Error::weights(
                            shard,
                            format!(
                                "tensor `{name}` is not in this file, where {} places it, but in {}",
                                index.path.display(),
                                self.files[got].display()
                            ),
                        ));
                    }
                    None => {
                        return Err(Error::weights(
                            shard,
                            format!(
                                "tensor `{name}` is missing from this file, where {} places it",
                                index.path.display()
                            ),
                        ));
                    }
                }
            }
        }
        Ok(Tensors {
            files: &self.files,
            tables,
            by_name,
            index_path: self.index.as_ref().map(|i| i.path.as_path()),
            requested: Mutex::new(HashSet::new()),
        })
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

/// Decodes every element of `data` and maps it, in parallel chunks, counting the non-finite results
/// (`finite` says which are fine) in the same pass; any NaN or infinity is an error giving the count and
/// the first flat index.
fn decode_map<T: Send + Sync + Copy + Default>(
    data: &[u8],
    size: usize,
    decode: impl Fn(&[u8]) -> T + Sync,
    finite: impl Fn(T) -> bool + Sync,
) -> std::result::Result<Vec<T>, String> {
    let n = data.len() / size;
    let mut out = vec![T::default(); n];
    let bad: usize = out
        .par_chunks_mut(CHUNK)
        .zip(data.par_chunks(size * CHUNK))
        .map(|(dst, src)| {
            let mut bad = 0usize;
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(size)) {
                let v = decode(s);
                bad += usize::from(!finite(v));
                *d = v;
            }
            bad
        })
        .sum();
    if bad > 0 {
        let first = out.iter().position(|&v| !finite(v)).unwrap_or(0);
        return Err(format!(
            "{bad} non-finite value(s) (NaN or infinity) among {n}, the first at flat index {first}"
        ));
    }
    Ok(out)
}

/// Converts little-endian tensor bytes to f32, rejecting NaN and infinity.
fn to_f32(dtype: Dtype, data: &[u8]) -> std::result::Result<Vec<f32>, String> {
    let (size, decode) = decoder(dtype)?;
    decode_map(data, size, decode, f32::is_finite)
}

/// Converts little-endian tensor bytes to a matrix stored as `storage`, element by element (bf16 → bf16 and
/// f16 → f16 keep the bits), rejecting NaN and infinity (checked on the stored value, so an f32 that
/// overflows f16 is rejected too).
fn to_matrix(
    dtype: Dtype,
    data: &[u8],
    storage: StorageDtype,
) -> std::result::Result<WeightMatrix, String> {
    let (size, decode) = decoder(dtype)?;
    let bits = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
    let bf_ok = |v: half::bf16| v.is_finite();
    let f16_ok = |v: half::f16| v.is_finite();
    Ok(match (dtype, storage) {
        (_, StorageDtype::F32) => {
            WeightMatrix::F32(decode_map(data, size, decode, f32::is_finite)?)
        }
        (Dtype::BF16, StorageDtype::Bf16) => WeightMatrix::Bf16(decode_map(
            data,
            2,
            |b| half::bf16::from_bits(bits(b)),
            bf_ok,
        )?),
        (Dtype::F16, StorageDtype::F16) => WeightMatrix::F16(decode_map(
            data,
            2,
            |b| half::f16::from_bits(bits(b)),
            f16_ok,
        )?),
        (_, StorageDtype::Bf16) => WeightMatrix::Bf16(decode_map(
            data,
            size,
            |b| half::bf16::from_f32(decode(b)),
            bf_ok,
        )?),
        (_, StorageDtype::F16) => WeightMatrix::F16(decode_map(
            data,
            size,
            |b| half::f16::from_f32(decode(b)),
            f16_ok,
        )?),
    })
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
