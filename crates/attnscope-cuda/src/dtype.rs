//! The storage dtypes of the GPU backend, and the one place where a dtype picks a kernel suffix, an element
//! size and a cuBLAS data type (host conversions are `buffer::WithDType`).

use attnscope_core::Error;
use attnscope_core::Result;

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

    /// cuBLAS data type (`cudaDataType_t` as its C int).
    pub fn cublas(self) -> std::ffi::c_int {
        match self {
            GpuDtype::F32 => crate::cublas::CUDA_R_32F,
            GpuDtype::Bf16 => crate::cublas::CUDA_R_16BF,
            GpuDtype::F16 => crate::cublas::CUDA_R_16F,
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
    fn parses_dtype_names() {
        assert!(GpuDtype::parse("int8").is_err());
        assert_eq!(GpuDtype::parse("bfloat16").unwrap(), GpuDtype::Bf16);
        assert_eq!(GpuDtype::parse("f16").unwrap().size(), 2);
    }
}
