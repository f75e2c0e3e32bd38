//! Writes named tensors to a safetensors file.
//!
//! The format is written directly: an 8-byte little-endian header length, a JSON header (padded with spaces
//! to a multiple of 8 bytes) mapping each name to its dtype, shape and byte range, then the raw
//! little-endian tensor bytes in order. Tensor data goes from the caller's slices straight to a buffered
//! file writer, so no extra copy of (possibly multi-GB) attention tensors is made on little-endian hosts.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use half::slice::HalfFloatSliceExt;
use serde_json::{Map, Value, json};

use attnscope_core::Error;
use attnscope_core::Result;

/// Key under which safetensors stores free-form string metadata.
const METADATA_KEY: &str = "__metadata__";

/// The element values of a tensor, in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// 32-bit floats (dtype "F32").
    F32(Vec<f32>),
    /// IEEE half floats (dtype "F16").
    F16(Vec<half::f16>),
    /// 64-bit signed integers (dtype "I64").
    I64(Vec<i64>),
    /// 32-bit floats (dtype "F32") held as consecutive blocks, e.g. one `[T, T]` block per attention head:
    /// the elements are the blocks' elements in order. Written block by block, never joined in memory.
    F32Blocks(Vec<Vec<f32>>),
    /// IEEE half floats (dtype "F16") held as consecutive blocks, like [`TensorData::F32Blocks`].
    F16Blocks(Vec<Vec<half::f16>>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F16(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::F32Blocks(b) => b.iter().map(Vec::len).sum(),
            TensorData::F16Blocks(b) => b.iter().map(Vec::len).sum(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The safetensors dtype string.
    pub fn dtype(&self) -> &'static str {
        match self {
            TensorData::F32(_) | TensorData::F32Blocks(_) => "F32",
            TensorData::F16(_) | TensorData::F16Blocks(_) => "F16",
            TensorData::I64(_) => "I64",
        }
    }

    /// Size of one element in bytes.
    pub fn elem_size(&self) -> usize {
        match self {
            TensorData::F32(_) | TensorData::F32Blocks(_) => 4,
            TensorData::F16(_) | TensorData::F16Blocks(_) => 2,
            TensorData::I64(_) => 8,
        }
    }
}

/// The elements of a tensor, borrowed, in row-major order: what
/// [`crate::SafetensorsWriter::append_view`] writes without copying them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TensorView<'a> {
    /// 32-bit floats (dtype "F32").
    F32(&'a [f32]),
    /// IEEE half floats (dtype "F16").
    F16(&'a [half::f16]),
    /// 64-bit signed integers (dtype "I64").
    I64(&'a [i64]),
}

impl TensorView<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorView::F32(v) => v.len(),
            TensorView::F16(v) => v.len(),
            TensorView::I64(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The safetensors dtype string.
    pub fn dtype(&self) -> &'static str {
        match self {
            TensorView::F32(_) => "F32",
            TensorView::F16(_) => "F16",
            TensorView::I64(_) => "I64",
        }
    }

    /// Size of one element in bytes.
    pub fn elem_size(&self) -> usize {
        match self {
            TensorView::F32(_) => 4,
            TensorView::F16(_) => 2,
            TensorView::I64(_) => 8,
        }
    }
}

/// A tensor with its name and shape.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// Name used as the key in the safetensors header.
    pub name: String,
    /// Dimensions; their product must equal the number of elements.
    pub shape: Vec<usize>,
    /// The elements.
    pub data: TensorData,
}

/// Writes `tensors` (in the given order) and string `metadata` to a safetensors file at `path`.
///
/// Errors when a name is empty, repeated or equal to `__metadata__`, or a shape does not match its data.
pub fn write_safetensors(
    path: &Path,
    tensors: &[NamedTensor],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut names = HashSet::new();
    let entries = tensors
        .iter()
        .map(|t| check_tensor(path, t, &mut names))
        .collect::<Result<Vec<_>>>()?;
    let header = header_bytes(path, &entries, metadata)?;
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let io_err = |e| Error::io(path, e);
    w.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io_err)?;
    w.write_all(&header).map_err(io_err)?;
    for t in tensors {
        write_le(&mut w, &t.data).map_err(io_err)?;
    }
    let file = w
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    Ok(())
}

/// What the header says of one tensor: name, dtype, shape and its size in bytes.
pub(crate) struct TensorEntry {
    name: String,
    dtype: &'static str,
    shape: Vec<usize>,
    pub(crate) bytes: usize,
}

/// The header entry of `t` after validating its name (not empty, not `__metadata__`, not in `names`, to
/// which it is added) and its shape against its data; errors name the file `path`.
pub(crate) fn check_tensor(
    path: &Path,
    t: &NamedTensor,
    names: &mut HashSet<String>,
) -> Result<TensorEntry> {
    let data = (t.data.len(), t.data.dtype(), t.data.elem_size());
    check_entry(path, &t.name, &t.shape, data, names)
}

/// [`check_tensor`] of a tensor given by parts: `data` is (elements, dtype string, element size).
pub(crate) fn check_entry(
    path: &Path,
    name: &str,
    shape: &[usize],
    (len, dtype, elem_size): (usize, &'static str, usize),
    names: &mut HashSet<String>,
) -> Result<TensorEntry> {
    if name.is_empty() || name == METADATA_KEY {
        return Err(Error::output(path, format!("invalid tensor name `{name}`")));
    }
    if names.contains(name) {
        return Err(Error::output(
            path,
            format!("tensor `{name}` appears more than once"),
        ));
    }
    let numel = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if numel != Some(len) {
        return Err(Error::output(
            path,
            format!("tensor `{name}`: shape {shape:?} does not match {len} elements"),
        ));
    }
    let bytes = len
        .checked_mul(elem_size)
        .ok_or_else(|| Error::output(path, "tensor data size overflows"))?;
    names.insert(name.to_string());
    Ok(TensorEntry {
        name: name.to_string(),
        dtype,
        shape: shape.to_vec(),
        bytes,
    })
}

/// The padded JSON header of tensors laid out one after another in the order of `entries`.
pub(crate) fn header_bytes(
    path: &Path,
    entries: &[TensorEntry],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut map = Map::new();
    if !metadata.is_empty() {
        map.insert(METADATA_KEY.to_string(), json!(metadata));
    }
    let mut offset = 0usize;
    for t in entries {
        let end = offset
            .checked_add(t.bytes)
            .ok_or_else(|| Error::output(path, "tensor data size overflows"))?;
        map.insert(
            t.name.clone(),
            json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut header = serde_json::to_vec(&Value::Object(map))
        .map_err(|e| Error::output(path, format!("safetensors header: {e}")))?;
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    Ok(header)
}

/// Writes the elements as little-endian bytes, one bulk write per buffer (per block for the block variants).
pub(crate) fn write_le<W: Write>(w: &mut W, data: &TensorData) -> std::io::Result<()> {
    match data {
        TensorData::F32(v) => write_words(w, v, f32::to_le_bytes),
        TensorData::F16(v) => write_words(w, v.reinterpret_cast(), u16::to_le_bytes),
        TensorData::I64(v) => write_words(w, v, i64::to_le_bytes),
        TensorData::F32Blocks(b) => b
            .iter()
            .try_for_each(|v| write_words(w, v, f32::to_le_bytes)),
        TensorData::F16Blocks(b) => b
            .iter()
            .try_for_each(|v| write_words(w, v.reinterpret_cast(), u16::to_le_bytes)),
    }
}

/// Writes the borrowed elements as little-endian bytes, in one bulk write on little-endian hosts.
pub(crate) fn write_view_le<W: Write>(w: &mut W, data: TensorView) -> std::io::Result<()> {
    match data {
        TensorView::F32(v) => write_words(w, v, f32::to_le_bytes),
        TensorView::F16(v) => write_words(w, v.reinterpret_cast(), u16::to_le_bytes),
        TensorView::I64(v) => write_words(w, v, i64::to_le_bytes),
    }
}

/// Writes `v` as little-endian bytes: the buffer's own bytes in one write on little-endian hosts,
/// `to_le` element by element elsewhere.
fn write_words<W: Write, T: bytemuck::Pod, const N: usize>(
    w: &mut W,
    v: &[T],
    to_le: fn(T) -> [u8; N],
) -> std::io::Result<()> {
    if cfg!(target_endian = "little") {
        return w.write_all(bytemuck::cast_slice(v));
    }
    v.iter().try_for_each(|&x| w.write_all(&to_le(x)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::{Dtype, SafeTensors};

    fn sample() -> Vec<NamedTensor> {
        vec![
            NamedTensor {
                name: "attn.0".into(),
                shape: vec![2, 3],
                data: TensorData::F32(vec![0.0, 1.5, -2.0, 3.25, f32::MAX, 1e-30]),
            },
            NamedTensor {
                name: "half".into(),
                shape: vec![3],
                data: TensorData::F16([1.0f32, -0.5, 65504.0].map(half::f16::from_f32).to_vec()),
            },
            NamedTensor {
                name: "ids".into(),
                shape: vec![1, 2],
                data: TensorData::I64(vec![-1, i64::MAX]),
            },
            NamedTensor {
                name: "empty".into(),
                shape: vec![0, 4],
                data: TensorData::F32(vec![]),
            },
        ]
    }

    #[test]
    fn roundtrip_with_safetensors_crate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.safetensors");
        let meta = BTreeMap::from([("model".to_string(), "tiny".to_string())]);
        let tensors = sample();
        write_safetensors(&path, &tensors, &meta).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(header_len % 8, 0);

        let (_, md) = SafeTensors::read_metadata(&bytes).unwrap();
        let got_meta = md.metadata().clone().unwrap();
        assert_eq!(got_meta.get("model").map(String::as_str), Some("tiny"));
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.len(), 4);
        for t in &tensors {
            let view = st.tensor(&t.name).unwrap();
            assert_eq!(view.shape(), t.shape.as_slice());
            let (dtype, expect): (Dtype, Vec<u8>) = match &t.data {
                TensorData::F32(v) => {
                    (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
                TensorData::F16(v) => {
                    (Dtype::F16, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
                TensorData::I64(v) => {
                    (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
                TensorData::F32Blocks(b) => (
                    Dtype::F32,
                    b.iter().flatten().flat_map(|x| x.to_le_bytes()).collect(),
                ),
                TensorData::F16Blocks(b) => (
                    Dtype::F16,
                    b.iter().flatten().flat_map(|x| x.to_le_bytes()).collect(),
                ),
            };
            assert_eq!(view.dtype(), dtype);
            assert_eq!(view.data(), expect.as_slice());
        }
    }

    #[test]
    fn blocks_write_the_same_file_as_joined_data() {
        let dir = tempfile::tempdir().unwrap();
        let f32_blocks = vec![
            vec![0.25f32, -1.0, 3.5],
            vec![],
            vec![f32::MIN_POSITIVE, 7.0, 1e9],
        ];
        let f16_blocks: Vec<Vec<half::f16>> = [vec![1.0f32, -0.5], vec![65504.0, 0.0, 2e-5]]
            .iter()
            .map(|b| b.iter().copied().map(half::f16::from_f32).collect())
            .collect();
        let file = |name: &str, a: TensorData, b: TensorData| {
            let path = dir.path().join(name);
            let tensors = [
                NamedTensor {
                    name: "a".into(),
                    shape: vec![a.len()],
                    data: a,
                },
                NamedTensor {
                    name: "b".into(),
                    shape: vec![b.len()],
                    data: b,
                },
            ];
            write_safetensors(&path, &tensors, &BTreeMap::new()).unwrap();
            std::fs::read(&path).unwrap()
        };
        let blocks = file(
            "blocks.safetensors",
            TensorData::F32Blocks(f32_blocks.clone()),
            TensorData::F16Blocks(f16_blocks.clone()),
        );
        let joined = file(
            "joined.safetensors",
            TensorData::F32(f32_blocks.concat()),
            TensorData::F16(f16_blocks.concat()),
        );
        assert_eq!(blocks, joined);
        let st = SafeTensors::deserialize(&blocks).unwrap();
        let want: Vec<u8> = f32_blocks
            .iter()
            .flatten()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(st.tensor("a").unwrap().data(), want.as_slice());
        assert_eq!(st.tensor("a").unwrap().dtype(), Dtype::F32);
        let want: Vec<u8> = f16_blocks
            .iter()
            .flatten()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(st.tensor("b").unwrap().data(), want.as_slice());
        assert_eq!(st.tensor("b").unwrap().dtype(), Dtype::F16);
    }

    #[test]
    fn no_metadata_and_no_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.safetensors");
        write_safetensors(&path, &[], &BTreeMap::new()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert!(st.is_empty());
    }

    #[test]
    fn rejects_bad_shapes_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        let mut t = sample();
        t[1].shape = vec![2, 2];
        let msg = write_safetensors(&path, &t, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("bad.safetensors") && msg.contains("half"),
            "{msg}"
        );

        let mut t = sample();
        t[2].name = "attn.0".into();
        assert!(write_safetensors(&path, &t, &BTreeMap::new()).is_err());
        t[2].name = METADATA_KEY.into();
        assert!(write_safetensors(&path, &t, &BTreeMap::new()).is_err());
        assert!(!path.exists());
    }
}
