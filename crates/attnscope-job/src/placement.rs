//! Placing a model on a device: `--device auto|cpu|cuda[:N]` and `--dtype` resolved to a backend.

use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::model::Model;
use attnscope_core::weights::StorageDtype;
use attnscope_cuda::{CudaBackend, DeviceRequest, GpuDtype};

/// `--dtype`: `Auto` is bf16 on a GPU and exact f32 on the CPU. An explicit dtype is the GPU's storage
/// type, and on the CPU the storage of the linear layers and the embedding table (computed in f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtypeRequest {
    Auto,
    Explicit(GpuDtype),
}

impl DtypeRequest {
    /// Parses `--dtype`: auto, f32, bf16 or f16.
    pub fn parse(text: &str) -> Result<DtypeRequest> {
        match text {
            "auto" => Ok(DtypeRequest::Auto),
            other => GpuDtype::parse(other)
                .map(DtypeRequest::Explicit)
                .map_err(|_| {
                    Error::input(format!(
                        "--dtype: unknown dtype {other:?} (expected auto, f32, bf16 or f16)"
                    ))
                }),
        }
    }

    /// The storage dtype on a GPU.
    pub fn gpu(self) -> GpuDtype {
        match self {
            DtypeRequest::Auto => GpuDtype::Bf16,
            DtypeRequest::Explicit(d) => d,
        }
    }

    /// The storage dtype of the CPU's large matrices.
    pub fn cpu_weights(self) -> StorageDtype {
        match self {
            DtypeRequest::Auto | DtypeRequest::Explicit(GpuDtype::F32) => StorageDtype::F32,
            DtypeRequest::Explicit(GpuDtype::Bf16) => StorageDtype::Bf16,
            DtypeRequest::Explicit(GpuDtype::F16) => StorageDtype::F16,
        }
    }
}

/// Whether `request` runs on the CPU without trying a GPU (`cpu`, or `auto` where no GPU is usable), so
/// that the weights can be loaded in the CPU's storage dtype.
pub fn runs_on_cpu(request: DeviceRequest) -> bool {
    match request {
        DeviceRequest::Cpu => true,
        DeviceRequest::Auto => !attnscope_cuda::probe().is_available(),
        DeviceRequest::Cuda(_) => false,
    }
}

/// Where a model runs, as resolved by [`place`].
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Placement {
    /// "cpu" or "cuda:N".
    pub device: String,
    /// GPU name, when on a GPU.
    pub gpu_name: Option<String>,
    /// Storage dtype: "f32" on the CPU ("f32 (weights bf16)" with bf16 weight storage); the GPU dtype
    /// otherwise.
    pub dtype: String,
    /// Why `auto` chose the CPU, when it did.
    pub note: Option<String>,
}

impl Placement {
    /// Where `model` runs now, with `note`.
    fn of(model: &Model, note: Option<String>) -> Placement {
        let d = model.device();
        Placement {
            device: d.device,
            gpu_name: d.name,
            dtype: d.dtype,
            note,
        }
    }
}

/// Moves `model`'s forward pass to the device `request` names. `Auto` uses GPU 0 when it is usable and the
/// CPU otherwise (saying why in `Placement::note`); `Cuda(n)` fails with a one-line reason when that GPU
/// cannot be used. `dtype` is the GPU storage type; on the CPU the model keeps the storage it was loaded
/// with (computed in f32).
pub fn place(model: &mut Model, request: DeviceRequest, dtype: GpuDtype) -> Result<Placement> {
    let ordinal = match request {
        DeviceRequest::Cpu => {
            model.use_cpu();
            return Ok(Placement::of(model, None));
        }
        // No driver or no device: the CPU, silently (the common case on laptops and CI).
        DeviceRequest::Auto if !attnscope_cuda::probe().is_available() => {
            model.use_cpu();
            return Ok(Placement::of(model, None));
        }
        DeviceRequest::Auto => 0,
        DeviceRequest::Cuda(n) => n,
    };
    let opened = CudaBackend::open(ordinal, dtype).and_then(|b| model.use_backend(b));
    match (opened, request) {
        (Ok(()), _) => Ok(Placement::of(model, None)),
        (Err(e), DeviceRequest::Auto) => {
            model.use_cpu();
            Ok(Placement::of(model, Some(e.to_string())))
        }
        (Err(e), _) => {
            model.use_cpu();
            Err(Error::cuda(format!(
                "--device cuda:{ordinal}: {e} (--device cpu runs on the CPU)"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Session;
    use std::path::Path;

    #[test]
    fn dtype_requests_parse_and_resolve() {
        assert_eq!(DtypeRequest::parse("auto").unwrap(), DtypeRequest::Auto);
        assert_eq!(DtypeRequest::Auto.gpu(), GpuDtype::Bf16);
        assert_eq!(DtypeRequest::Auto.cpu_weights(), StorageDtype::F32);
        let bf16 = DtypeRequest::parse("bf16").unwrap();
        assert_eq!(
            (bf16.gpu(), bf16.cpu_weights()),
            (GpuDtype::Bf16, StorageDtype::Bf16)
        );
        let f16 = DtypeRequest::parse("float16").unwrap();
        assert_eq!(f16.cpu_weights(), StorageDtype::F16);
        let e = DtypeRequest::parse("int8").unwrap_err().to_string();
        assert!(e.contains("--dtype") && e.contains("auto"), "{e}");
    }

    /// `--device cpu --dtype bf16` stores the weights as bf16 and says so; the default stays f32.
    #[test]
    fn cpu_sessions_report_their_weight_storage() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llama_gqa");
        let cases = [
            (DtypeRequest::Auto, "f32"),
            (DtypeRequest::Explicit(GpuDtype::F32), "f32"),
            (DtypeRequest::Explicit(GpuDtype::Bf16), "f32 (weights bf16)"),
            (DtypeRequest::Explicit(GpuDtype::F16), "f32 (weights f16)"),
        ];
        for (dtype, want) in cases {
            let s = Session::open(&dir, DeviceRequest::Cpu, dtype).unwrap();
            assert_eq!(s.placement.device, "cpu");
            assert_eq!(s.placement.dtype, want, "{dtype:?}");
            assert_eq!(s.model.weights.storage(), dtype.cpu_weights());
        }
    }
}
