//! Tensor bytes → f32, or → the storage dtype of the large matrices, element by element in parallel
//! chunks, rejecting NaN and infinity.

use crate::weights::{StorageDtype, WeightMatrix};
use rayon::prelude::*;
use safetensors::Dtype;

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
pub(super) fn to_f32(dtype: Dtype, data: &[u8]) -> std::result::Result<Vec<f32>, String> {
    let (size, decode) = decoder(dtype)?;
    decode_map(data, size, decode, f32::is_finite)
}

/// Converts little-endian tensor bytes to a matrix stored as `storage`, element by element (bf16 → bf16 and
/// f16 → f16 keep the bits), rejecting NaN and infinity (checked on the stored value, so an f32 that
/// overflows f16 is rejected too).
pub(super) fn to_matrix(
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
