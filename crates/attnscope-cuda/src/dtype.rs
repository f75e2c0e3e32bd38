//! The element types of the GPU backend, and the one place where a dtype picks a kernel suffix, an element
//! size, a cuBLAS data type and a host conversion.

use attnscope_core::Error;
use attnscope_core::Result;
use cudarc::cublas::sys::cudaDataType_t;

/// Storage type of weights, activations and the KV cache on the GPU (arithmetic is f32 in every kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuDtype {
    F32,
    Bf16,
    F16,
}

impl GpuDtype {
    /// Parses `--dtype`.
    pub fn parse(text: &str) -> Result<GpuDtype> {
        match text {
            "f32" | "float32" => Ok(GpuDtype::F32),
            "bf16" | "bfloat16" => Ok(GpuDtype::Bf16),
            "f16" | "float16" => Ok(GpuDtype::F16),
            other => Err(Error::input(format!(
                "--dtype: unknown dtype {other:?} (expected f32, bf16 or f16)"
            ))),
        }
    }

    /// Name as in flags and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            GpuDtype::F32 => "f32",
            GpuDtype::Bf16 => "bf16",
            GpuDtype::F16 => "f16",
        }
    }

    /// Suffix of the kernel names in kernels/*.cu (`rmsnorm_bf16`, ...).
    pub fn suffix(self) -> &'static str {
        self.as_str()
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            GpuDtype::F32 => 4,
            GpuDtype::Bf16 | GpuDtype::F16 => 2,
        }
    }

    /// cuBLAS data type.
    pub fn cublas(self) -> cudaDataType_t {
        match self {
            GpuDtype::F32 => cudaDataType_t::CUDA_R_32F,
            GpuDtype::Bf16 => cudaDataType_t::CUDA_R_16BF,
            GpuDtype::F16 => cudaDataType_t::CUDA_R_16F,
        }
    }

    /// Encodes f32 values as this dtype's bytes (round to nearest even, as PyTorch's `.to(dtype)`).
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            GpuDtype::F32 => bytemuck::cast_slice(values).to_vec(),
            GpuDtype::Bf16 => values
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
            GpuDtype::F16 => values
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
        }
    }

    /// Decodes this dtype's bytes to f32.
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            GpuDtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            GpuDtype::Bf16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            GpuDtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        }
    }
}

impl std::fmt::Display for GpuDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trips_and_rounds() {
        let v = [1.0f32, -2.5, 0.1, 65504.0];
        assert_eq!(GpuDtype::F32.decode(&GpuDtype::F32.encode(&v)), v);
        let b = GpuDtype::Bf16.decode(&GpuDtype::Bf16.encode(&v));
        assert_eq!(b[0], 1.0);
        assert_eq!(b[1], -2.5);
        assert!((b[2] - 0.1).abs() < 1e-3 && b[2] != 0.1);
        let h = GpuDtype::F16.decode(&GpuDtype::F16.encode(&v));
        assert_eq!(h[3], 65504.0);
        assert!(GpuDtype::parse("int8").is_err());
        assert_eq!(GpuDtype::parse("bfloat16").unwrap(), GpuDtype::Bf16);
    }
}
