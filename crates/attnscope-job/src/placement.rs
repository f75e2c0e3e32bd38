//! Placing a model on a device: `--device auto|cpu|cuda[:N]` and `--dtype` resolved to a backend.

use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::model::Model;
use attnscope_cuda::{CudaBackend, DeviceRequest, GpuDtype};

/// Where a model runs, as resolved by [`place`].
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Placement {
    /// "cpu" or "cuda:N".
    pub device: String,
    /// GPU name, when on a GPU.
    pub gpu_name: Option<String>,
    /// Storage dtype: "f32" on the CPU; the GPU dtype otherwise.
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
/// cannot be used. `dtype` is the GPU storage type (the CPU always computes in f32).
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
