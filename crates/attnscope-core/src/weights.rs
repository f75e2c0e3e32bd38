//! Loading safetensors checkpoints (single file or sharded), memory-mapped, f32/f16/bf16, into f32
//! [`ModelWeights`] laid out the same way for every family.
//!
//! Layout conventions: a [`Linear`] stores its weight as `[out, in]` row-major (PyTorch `nn.Linear`), so GPT-2's
//! `Conv1D` (`[in, out]`) is transposed on load and GPT-NeoX's fused `query_key_value` (per-head interleaved
//! `[heads, 3, head_dim]` rows) is split into q, k and v.

use crate::Error;
use crate::Result;
use crate::config::{Family, ModelConfig, NormKind};
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

/// y = x W^T + b with W stored `[out_dim, in_dim]`.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub in_dim: usize,
    pub out_dim: usize,
}

/// Scale (and shift, for LayerNorm) of a normalisation layer.
#[derive(Clone, Debug)]
pub struct Norm {
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

/// One transformer block. `L` and `N` are how a backend stores a linear layer and a norm: the host f32
/// [`Linear`] and [`Norm`] by default, device buffers for a GPU backend (see [`ModelWeights::try_map`]).
#[derive(Clone, Debug)]
pub struct LayerWeights<L = Linear, N = Norm> {
    pub attn_norm: N,
    pub q: L,
    pub k: L,
    pub v: L,
    pub o: L,
    /// Per-head RMSNorm of queries/keys (Qwen3), weight of length head_dim.
    pub q_norm: Option<N>,
    pub k_norm: Option<N>,
    pub mlp_norm: N,
    /// Gate projection of a gated MLP.
    pub gate: Option<L>,
    pub up: L,
    pub down: L,
}

/// All weights of a model: in f32 on the host by default; `T` is how a backend stores a table
/// (embeddings, learned positions).
#[derive(Clone, Debug)]
pub struct ModelWeights<L = Linear, N = Norm, T = Vec<f32>> {
    /// `[vocab, hidden]`
    pub embed: T,
    /// Learned positions `[max_positions, hidden]` (GPT-2).
    pub pos_embed: Option<T>,
    pub layers: Vec<LayerWeights<L, N>>,
    pub final_norm: N,
    /// Output head; `None` means tied to `embed`.
    pub lm_head: Option<L>,
}

impl<L, N, T> ModelWeights<L, N, T> {
    /// The same weights in another storage (a backend's upload): every linear layer, norm and table goes
    /// through its function, in model order.
    pub fn try_map<L2, N2, T2>(
        &self,
        linear: &dyn Fn(&L) -> Result<L2>,
        norm: &dyn Fn(&N) -> Result<N2>,
        table: &dyn Fn(&T) -> Result<T2>,
    ) -> Result<ModelWeights<L2, N2, T2>> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for lw in &self.layers {
            layers.push(LayerWeights {
                attn_norm: norm(&lw.attn_norm)?,
                q: linear(&lw.q)?,
                k: linear(&lw.k)?,
                v: linear(&lw.v)?,
                o: linear(&lw.o)?,
                q_norm: lw.q_norm.as_ref().map(norm).transpose()?,
                k_norm: lw.k_norm.as_ref().map(norm).transpose()?,
                mlp_norm: norm(&lw.mlp_norm)?,
                gate: lw.gate.as_ref().map(linear).transpose()?,
                up: linear(&lw.up)?,
                down: linear(&lw.down)?,
            });
        }
        Ok(ModelWeights {
            embed: table(&self.embed)?,
            pos_embed: self.pos_embed.as_ref().map(table).transpose()?,
            layers,
            final_norm: norm(&self.final_norm)?,
            lm_head: self.lm_head.as_ref().map(linear).transpose()?,
        })
    }
}

/// What was found in the checkpoint files, for `inspect` and the manifest.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WeightsInfo {
    pub files: Vec<PathBuf>,
    /// Tensor count per stored dtype.
    pub dtypes: BTreeMap<String, usize>,
    /// Number of stored scalars across all tensors.
    pub stored_parameters: usize,
    /// sha256 over the safetensors headers (names, dtypes, shapes, offsets) and the shard index.
    pub index_sha256: String,
}

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

    /// Loads a tensor as f32, checking its shape.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
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
        to_f32(view.dtype(), view.data())
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

/// Converts little-endian tensor bytes to f32.
fn to_f32(dtype: Dtype, data: &[u8]) -> std::result::Result<Vec<f32>, String> {
    const CHUNK: usize = 1 << 16;
    let out = match dtype {
        Dtype::F32 => data
            .par_chunks(4 * CHUNK)
            .flat_map_iter(|c| {
                c.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            })
            .collect(),
        Dtype::F16 => data
            .par_chunks(2 * CHUNK)
            .flat_map_iter(|c| {
                c.chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            })
            .collect(),
        Dtype::BF16 => data
            .par_chunks(2 * CHUNK)
            .flat_map_iter(|c| {
                c.chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            })
            .collect(),
        other => {
            return Err(format!(
                "unsupported dtype {other:?} (supported: F32, F16, BF16)"
            ));
        }
    };
    Ok(out)
}

/// Reads only the headers of a model's weight files (for `inspect`).
pub fn inspect_weights(dir: &Path) -> Result<WeightsInfo> {
    let (files, index) = weight_files(dir)?;
    let ckpt = Checkpoint::open(files)?;
    let tensors = ckpt.tensors()?;
    Ok(tensors.info(index.as_deref()))
}

/// Loads every weight the config calls for, converting to f32.
pub fn load_weights(dir: &Path, cfg: &ModelConfig) -> Result<(ModelWeights, WeightsInfo)> {
    let (files, index) = weight_files(dir)?;
    let ckpt = Checkpoint::open(files)?;
    let t = ckpt.tensors()?;
    let info = t.info(index.as_deref());
    let weights = match cfg.family {
        Family::Gpt2 => crate::weights_map::load_gpt2(&t.loader(), cfg)?,
        Family::GptNeox => crate::weights_map::load_neox(&t.loader(), cfg)?,
        _ => crate::weights_map::load_llama_like(&t.loader(), cfg)?,
    };
    Ok((weights, info))
}

/// The narrow interface the per-family name maps use.
pub struct TensorLoader<'t, 'a> {
    tensors: &'t Tensors<'a>,
}

impl<'a> Tensors<'a> {
    fn loader(&self) -> TensorLoader<'_, 'a> {
        TensorLoader { tensors: self }
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
        let weight = self.get(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
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
