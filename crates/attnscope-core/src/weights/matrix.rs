//! How the host stores a large weight matrix (a linear layer's weight, the embedding table, the tied LM
//! head): f32, or bf16 / f16 to halve the memory, always computed in f32 ([`WeightMatrix`]). Norm weights,
//! biases and learned positions stay f32.

use crate::weights::panels::PanelMatrix;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;
use std::borrow::Cow;
use std::ops::Range;

/// Element type of the host's large weight matrices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum StorageDtype {
    /// Exact (the default).
    #[default]
    F32,
    Bf16,
    F16,
}

impl StorageDtype {
    /// Name as in flags and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageDtype::F32 => "f32",
            StorageDtype::Bf16 => "bf16",
            StorageDtype::F16 => "f16",
        }
    }

    /// Bytes per stored element.
    pub fn bytes(self) -> usize {
        match self {
            StorageDtype::F32 => 4,
            StorageDtype::Bf16 | StorageDtype::F16 => 2,
        }
    }
}

/// A matrix of weights in its storage dtype: row-major (the shape is kept by the owner, e.g. `Linear`), or,
/// for f32 linear layers on the host, row panels for the CPU's GEMM ([`PanelMatrix`], which knows its shape).
/// Element offsets (`read_f32`, `slice`, `to_f32`) always mean row-major order.
#[derive(Clone, Debug, PartialEq)]
pub enum WeightMatrix {
    F32(Vec<f32>),
    F32Panels(PanelMatrix),
    Bf16(Vec<bf16>),
    F16(Vec<f16>),
}

impl Default for WeightMatrix {
    fn default() -> Self {
        WeightMatrix::F32(Vec::new())
    }
}

impl From<Vec<f32>> for WeightMatrix {
    fn from(values: Vec<f32>) -> Self {
        WeightMatrix::F32(values)
    }
}

/// Elements converted per parallel task.
const CONVERT_CHUNK: usize = 1 << 16;

impl WeightMatrix {
    /// `values` stored as `dtype` (rounded to nearest even; f32 is moved, not copied).
    pub fn from_f32(values: Vec<f32>, dtype: StorageDtype) -> WeightMatrix {
        match dtype {
            StorageDtype::F32 => WeightMatrix::F32(values),
            StorageDtype::Bf16 => WeightMatrix::Bf16(convert(&values, bf16::from_f32)),
            StorageDtype::F16 => WeightMatrix::F16(convert(&values, f16::from_f32)),
        }
    }

    /// The same values stored as `dtype` (a move when it already is).
    pub fn into_dtype(self, dtype: StorageDtype) -> WeightMatrix {
        if self.dtype() == dtype {
            return self;
        }
        match self {
            WeightMatrix::F32(v) => WeightMatrix::from_f32(v, dtype),
            WeightMatrix::F32Panels(p) => WeightMatrix::from_f32(p.to_row_major(), dtype),
            other => WeightMatrix::from_f32(other.to_f32().into_owned(), dtype),
        }
    }

    /// The storage dtype.
    pub fn dtype(&self) -> StorageDtype {
        match self {
            WeightMatrix::F32(_) | WeightMatrix::F32Panels(_) => StorageDtype::F32,
            WeightMatrix::Bf16(_) => StorageDtype::Bf16,
            WeightMatrix::F16(_) => StorageDtype::F16,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            WeightMatrix::F32(v) => v.len(),
            WeightMatrix::F32Panels(p) => p.len(),
            WeightMatrix::Bf16(v) => v.len(),
            WeightMatrix::F16(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the elements take in memory.
    pub fn stored_bytes(&self) -> usize {
        self.len() * self.dtype().bytes()
    }

    /// The elements, when stored as row-major f32.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            WeightMatrix::F32(v) => Some(v),
            _ => None,
        }
    }

    /// All elements in f32 (borrowed when stored as f32).
    pub fn to_f32(&self) -> Cow<'_, [f32]> {
        match self {
            WeightMatrix::F32(v) => Cow::Borrowed(v),
            WeightMatrix::F32Panels(p) => Cow::Owned(p.to_row_major()),
            WeightMatrix::Bf16(v) => Cow::Owned(convert(v, bf16::to_f32)),
            WeightMatrix::F16(v) => Cow::Owned(convert(v, f16::to_f32)),
        }
    }

    /// Writes elements `start..start + out.len()` into `out` as f32.
    pub fn read_f32(&self, start: usize, out: &mut [f32]) {
        let range = start..start + out.len();
        match self {
            WeightMatrix::F32(v) => out.copy_from_slice(&v[range]),
            WeightMatrix::F32Panels(p) => p.read_row_major(start, out),
            // A bf16 is the high half of its f32 (a plain shift vectorises; `bf16::to_f32` branches on NaN).
            WeightMatrix::Bf16(v) => out
                .iter_mut()
                .zip(&v[range])
                .for_each(|(o, w)| *o = f32::from_bits(u32::from(w.to_bits()) << 16)),
            WeightMatrix::F16(v) => v[range].convert_to_f32_slice(out),
        }
    }

    /// The same values laid out for the CPU's GEMM when stored as f32 (`rows × cols` row-major): f32 becomes
    /// row panels ([`PanelMatrix`]); other dtypes, and matrices already in panels, are returned as they are.
    pub fn into_panels(self, rows: usize, cols: usize) -> WeightMatrix {
        match self {
            WeightMatrix::F32(v) => {
                WeightMatrix::F32Panels(PanelMatrix::from_row_major(&v, rows, cols))
            }
            other => other,
        }
    }

    /// A copy of elements `range`, in the same dtype (row-major).
    pub fn slice(&self, range: Range<usize>) -> WeightMatrix {
        match self {
            WeightMatrix::F32(v) => WeightMatrix::F32(v[range].to_vec()),
            WeightMatrix::F32Panels(p) => WeightMatrix::F32(p.to_row_major()[range].to_vec()),
            WeightMatrix::Bf16(v) => WeightMatrix::Bf16(v[range].to_vec()),
            WeightMatrix::F16(v) => WeightMatrix::F16(v[range].to_vec()),
        }
    }
}

/// Converts elementwise, in parallel chunks.
fn convert<A: Copy + Sync, B: Copy + Send>(values: &[A], f: impl Fn(A) -> B + Sync) -> Vec<B> {
    values
        .par_iter()
        .with_min_len(CONVERT_CHUNK)
        .map(|&v| f(v))
        .collect()
}
