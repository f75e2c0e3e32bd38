//! A CUDA device ready for the forward pass: context, one stream, cuBLAS on that stream, and every kernel of
//! `kernels/*.cu` compiled by NVRTC to CUBIN for the device's exact architecture (through the on-disk
//! `kernel_cache`) and loaded.
//!
//! Everything runs on one stream, so the order of launches is the order of calls; cudarc's per-buffer event
//! tracking (meant for several streams) is switched off and kernels receive raw device pointers
//! ([`DeviceBuf::ptr`]). Buffers are typed (`buffer.rs`).

use crate::buffer::{DeviceBuf, DeviceSlice, WithDType};
use crate::cublas::{BlasHandle, CublasLib};
use crate::dtype::GpuDtype;
use crate::kernel_cache::{KernelFormat, kernel_image};
use crate::on_slice;
use crate::params::{AttnParams, AttnParamsBatch};
use crate::{CudaStatus, Ptx, kernel_sources, probe};
use attnscope_core::Error;
use attnscope_core::Result;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg,
    ValidAsZeroBits,
};
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Which device `--device` asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceRequest {
    /// A GPU when one is usable, else the CPU.
    Auto,
    Cpu,
    /// `cuda:N`: that GPU or an error.
    Cuda(usize),
}

impl DeviceRequest {
    /// Parses `auto`, `cpu`, `cuda` or `cuda:N`.
    pub fn parse(text: &str) -> Result<DeviceRequest> {
        match text {
            "auto" => Ok(DeviceRequest::Auto),
            "cpu" => Ok(DeviceRequest::Cpu),
            "cuda" | "gpu" => Ok(DeviceRequest::Cuda(0)),
            t => match t.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceRequest::Cuda(n)),
                _ => Err(Error::input(format!(
                    "--device: {text:?} is not auto, cpu, cuda or cuda:N"
                ))),
            },
        }
    }
}

/// One kernel argument: a device pointer or a scalar.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    /// Device address (0 = null).
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
}

/// Device, stream, cuBLAS handle and loaded kernels.
pub struct GpuContext {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub blas: BlasHandle,
    functions: HashMap<String, CudaFunction>,
    /// "sm_90" etc.
    pub arch: String,
    /// Device name as the driver reports it.
    pub name: String,
    pub ordinal: usize,
    /// Stream synchronisations so far ([`GpuContext::sync`]), for tests and benchmarks.
    syncs: AtomicU64,
}

impl GpuContext {
    /// Opens device `ordinal`, compiles and loads every kernel. Never panics: a missing driver, NVRTC or
    /// cuBLAS library is an [`Error::Cuda`] one-liner.
    pub fn new(ordinal: usize) -> Result<GpuContext> {
        let status = probe();
        let count = match &status {
            CudaStatus::Available { device_count, .. } => *device_count,
            CudaStatus::Unavailable(reason) => return Err(Error::cuda(reason.clone())),
        };
        if ordinal >= count {
            return Err(Error::cuda(format!(
                "cuda:{ordinal} requested but the driver reports {count} device(s)"
            )));
        }
        let cublas = CublasLib::loaded().map_err(Error::cuda)?;
        let format = KernelFormat::from_env()?;
        // Why catch_unwind: cudarc panics when a driver symbol is missing; that must become an error.
        let opened = catch_unwind(AssertUnwindSafe(|| -> Result<_> {
            let ctx = CudaContext::new(ordinal).map_err(|e| Error::cuda(format!("{e:?}")))?;
            // SAFETY: the backend uses a single stream, so no cross-stream synchronisation is needed; every
            // buffer outlives the launches and copies that use it: device buffers are freed stream-ordered,
            // results are read after a stream synchronisation, and the capture's pinned slots are freed or
            // reused only after the synchronisation that completes their copies (`capture::pending`).
            unsafe { ctx.disable_event_tracking() };
            let stream = ctx.default_stream();
            let blas = BlasHandle::new(cublas, stream.clone())
                .map_err(|e| Error::cuda(format!("cuBLAS init: {e}")))?;
            let (ma, mi) = ctx
                .compute_capability()
                .map_err(|e| Error::cuda(format!("{e:?}")))?;
            let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
            Ok((ctx, stream, blas, ma, mi, name))
        }));
        let (ctx, stream, blas, ma, mi, name) = match opened {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::cuda(
                    "the CUDA driver library lacks a required symbol (too old for the CUDA 12.8 driver API)",
                ));
            }
        };
        if ma < 8 {
            return Err(Error::cuda(format!(
                "{name} is sm_{ma}{mi}; the kernels need sm_80 or newer"
            )));
        }
        let arch = format!("sm_{ma}{mi}");
        let mut functions = HashMap::new();
        for (file, image) in compile_all(&arch, format)? {
            let module = ctx.load_module(image).map_err(|e| {
                Error::cuda(format!(
                    "kernels/{file}: loading the {} for {arch} failed: {e:?}",
                    format.extension().to_uppercase()
                ))
            })?;
            for name in kernel_names(file) {
                let f = module.load_function(&name).map_err(|e| {
                    Error::cuda(format!("kernels/{file}: kernel {name} not found: {e:?}"))
                })?;
                functions.insert(name, f);
            }
        }
        Ok(GpuContext {
            ctx,
            stream,
            blas,
            functions,
            arch,
            name,
            ordinal,
            syncs: AtomicU64::new(0),
        })
    }

    /// How many stream synchronisations [`GpuContext::sync`] has done (every thread using this context
    /// counts: compare two readings only where nothing else runs on it).
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// How many kernels are loaded (every name of the kernel table).
    pub fn kernel_count(&self) -> usize {
        self.functions.len()
    }

    /// The context of GPU `ordinal`, opened once per process and shared (kernels compile once).
    pub fn shared(ordinal: usize) -> Result<Arc<GpuContext>> {
        static OPENED: std::sync::Mutex<Vec<(usize, Arc<GpuContext>)>> =
            std::sync::Mutex::new(Vec::new());
        let mut opened = OPENED
            .lock()
            .map_err(|_| Error::cuda("a thread panicked while opening the GPU"))?;
        if let Some((_, g)) = opened.iter().find(|(o, _)| *o == ordinal) {
            return Ok(g.clone());
        }
        let g = Arc::new(GpuContext::new(ordinal)?);
        opened.push((ordinal, g.clone()));
        Ok(g)
    }

    /// A loaded kernel by name.
    pub fn function(&self, name: &str) -> Result<&CudaFunction> {
        self.functions
            .get(name)
            .ok_or_else(|| Error::cuda(format!("no kernel named {name} in kernels/*.cu")))
    }

    /// Launches kernel `name` with `args` in the order of its signature.
    pub fn launch(&self, name: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        let f = self.function(name)?;
        let mut b = self.stream.launch_builder(f);
        for a in args {
            match a {
                Arg::Ptr(p) => b.arg(p),
                Arg::I32(v) => b.arg(v),
                Arg::I64(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
            };
        }
        // SAFETY: every launcher in cuda/ops.rs passes the arguments of the kernel's `extern "C"` signature in
        // order, with pointers to live buffers of the sizes documented in the kernel's header comment.
        unsafe { b.launch(cfg) }
            .map(|_| ())
            .map_err(|e| Error::cuda(format!("launching {name}: {e:?}")))
    }

    /// Launches attention kernel `name`, whose one argument is the parameter block `params` by value.
    pub fn launch_attention(
        &self,
        name: &str,
        cfg: LaunchConfig,
        params: &AttnParams,
    ) -> Result<()> {
        let f = self.function(name)?;
        let mut b = self.stream.launch_builder(f);
        b.arg(params);
        // SAFETY: every attention kernel takes exactly one `const AttnParams` by value, whose layout is the
        // Rust struct's (asserted at NVRTC compile time); its pointers are live buffers of the sizes the
        // kernel's header comment gives, or null where the kernel allows it (cuda/ops.rs builds them).
        unsafe { b.launch(cfg) }
            .map(|_| ())
            .map_err(|e| Error::cuda(format!("launching {name}: {e:?}")))
    }

    /// Launches a batched decode kernel, whose one argument is `batch` by value.
    pub fn launch_attention_batch(
        &self,
        name: &str,
        cfg: LaunchConfig,
        batch: &AttnParamsBatch,
    ) -> Result<()> {
        let f = self.function(name)?;
        let mut b = self.stream.launch_builder(f);
        b.arg(batch);
        // SAFETY: the batched decode kernels take exactly one `const AttnParamsBatch` by value (layout asserted
        // at NVRTC compile time); entry z < gridDim.z holds live buffers as for `launch_attention`.
        unsafe { b.launch(cfg) }
            .map(|_| ())
            .map_err(|e| Error::cuda(format!("launching {name}: {e:?}")))
    }

    /// Allocates `len` zeroed elements of `dtype`.
    pub fn zeros(&self, dtype: GpuDtype, len: usize) -> Result<DeviceBuf> {
        let data = match dtype {
            GpuDtype::F32 => DeviceSlice::F32(self.zeros_of(len)?),
            GpuDtype::Bf16 => DeviceSlice::Bf16(self.zeros_of(len)?),
            GpuDtype::F16 => DeviceSlice::F16(self.zeros_of(len)?),
        };
        Ok(DeviceBuf { data, len })
    }

    /// Allocates `len` zeroed elements of a fixed element type (ids, positions, statistics, partials).
    pub fn zeros_of<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros::<T>(len.max(1))
            .map_err(|e| oom(e, len * std::mem::size_of::<T>()))
    }

    /// Uploads host values of a fixed element type.
    pub fn upload_slice<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        values: &[T],
    ) -> Result<CudaSlice<T>> {
        let mut buf = self.zeros_of::<T>(values.len())?;
        if !values.is_empty() {
            self.stream
                .memcpy_htod(values, &mut buf)
                .map_err(|e| Error::cuda(format!("upload: {e:?}")))?;
        }
        Ok(buf)
    }

    /// Uploads f32 values converted to `dtype`.
    pub fn upload(&self, dtype: GpuDtype, values: &[f32]) -> Result<DeviceBuf> {
        fn typed<T: WithDType>(g: &GpuContext, values: &[f32]) -> Result<DeviceBuf> {
            let host: Vec<T> = values.iter().map(|&v| T::from_f32(v)).collect();
            Ok(DeviceBuf {
                data: T::wrap(g.upload_slice(&host)?),
                len: values.len(),
            })
        }
        match dtype {
            GpuDtype::F32 => typed::<f32>(self, values),
            GpuDtype::Bf16 => typed::<half::bf16>(self, values),
            GpuDtype::F16 => typed::<half::f16>(self, values),
        }
    }

    /// Writes f32 values, converted to the buffer's dtype, into `buf` starting at element `offset`.
    pub fn write_f32(&self, buf: &mut DeviceBuf, offset: usize, values: &[f32]) -> Result<()> {
        fn typed<T: WithDType>(
            g: &GpuContext,
            dst: &mut CudaSlice<T>,
            offset: usize,
            values: &[f32],
        ) -> Result<()> {
            let host: Vec<T> = values.iter().map(|&v| T::from_f32(v)).collect();
            let mut view = dst.slice_mut(offset..offset + values.len());
            g.stream
                .memcpy_htod(&host, &mut view)
                .map_err(|e| Error::cuda(format!("upload: {e:?}")))
        }
        if offset + values.len() > buf.len {
            return Err(Error::cuda(format!(
                "upload of {} elements at element {offset} beyond {buf:?}",
                values.len()
            )));
        }
        on_slice!(&mut buf.data, s => typed(self, s, offset, values))
    }

    /// Reads elements `range` of a typed buffer (synchronises the stream).
    pub fn read_slice<T: DeviceRepr>(
        &self,
        buf: &CudaSlice<T>,
        range: std::ops::Range<usize>,
    ) -> Result<Vec<T>> {
        if range.end > buf.len() {
            return Err(Error::cuda(format!(
                "download of elements {range:?} from a buffer of {}",
                buf.len()
            )));
        }
        self.stream
            .clone_dtoh(&buf.slice(range))
            .map_err(|e| Error::cuda(format!("download: {e:?}")))
    }

    /// Reads elements `range` of `buf` converted to f32 (synchronises the stream).
    pub fn read_f32(&self, buf: &DeviceBuf, range: std::ops::Range<usize>) -> Result<Vec<f32>> {
        fn typed<T: WithDType>(
            g: &GpuContext,
            src: &CudaSlice<T>,
            range: std::ops::Range<usize>,
        ) -> Result<Vec<f32>> {
            Ok(g.read_slice(src, range)?
                .into_iter()
                .map(T::to_f32)
                .collect())
        }
        if range.start > range.end || range.end > buf.len {
            return Err(Error::cuda(format!(
                "download of elements {range:?} from {buf:?}"
            )));
        }
        on_slice!(&buf.data, s => typed(self, s, range))
    }

    /// Copies `n` elements from `src[src_off..]` to `dst[dst_off..]` on the device (same dtype).
    pub fn copy(
        &self,
        src: &DeviceBuf,
        src_off: usize,
        dst: &mut DeviceBuf,
        dst_off: usize,
        n: usize,
    ) -> Result<()> {
        fn typed<T: WithDType>(
            g: &GpuContext,
            src: &CudaSlice<T>,
            dst: &mut CudaSlice<T>,
            (src_off, dst_off, n): (usize, usize, usize),
        ) -> Result<()> {
            let from = src.slice(src_off..src_off + n);
            let mut to = dst.slice_mut(dst_off..dst_off + n);
            g.stream
                .memcpy_dtod(&from, &mut to)
                .map_err(|e| Error::cuda(format!("device copy: {e:?}")))
        }
        let what = format!(
            "device copy of {n} elements from {src:?} at {src_off} to {dst:?} at {dst_off}"
        );
        let bad = move |why: &str| Error::cuda(format!("{what}: {why}"));
        if src_off + n > src.len || dst_off + n > dst.len {
            return Err(bad("out of bounds"));
        }
        let at = (src_off, dst_off, n);
        match (&src.data, &mut dst.data) {
            (DeviceSlice::F32(a), DeviceSlice::F32(b)) => typed(self, a, b, at),
            (DeviceSlice::Bf16(a), DeviceSlice::Bf16(b)) => typed(self, a, b, at),
            (DeviceSlice::F16(a), DeviceSlice::F16(b)) => typed(self, a, b, at),
            _ => Err(bad("the dtypes differ")),
        }
    }

    /// Zeroes a whole buffer.
    pub fn clear(&self, buf: &mut DeviceBuf) -> Result<()> {
        on_slice!(&mut buf.data, s => self.stream.memset_zeros(s))
            .map_err(|e| Error::cuda(format!("memset: {e:?}")))
    }

    /// Waits for all queued work.
    pub fn sync(&self) -> Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.stream
            .synchronize()
            .map_err(|e| Error::cuda(format!("stream synchronize: {e:?}")))
    }
}

/// Every kernel file compiled for `arch` in `format`, in parallel, through the on-disk kernel cache, as the
/// images the driver loads. PTX is checked against the driver's PTX ISA first (`ptx_isa`).
fn compile_all(arch: &str, format: KernelFormat) -> Result<Vec<(&'static str, Ptx)>> {
    let results: Vec<Result<(&'static str, Vec<u8>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = kernel_sources()
            .iter()
            .map(|&(file, source)| {
                scope.spawn(move || kernel_image(file, source, arch, format).map(|p| (file, p)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::cuda("a kernel compile thread panicked")))
            })
            .collect()
    });
    let driver = crate::device::driver_cuda_version().map_err(Error::cuda)?;
    let mut images = Vec::new();
    for r in results {
        let (file, bytes) = r?;
        let image = match format {
            KernelFormat::Cubin => Ptx::from_binary(bytes),
            KernelFormat::Ptx => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                crate::ptx_isa::check_ptx_loadable(file, &text, driver).map_err(Error::cuda)?;
                Ptx::from_src(text)
            }
        };
        images.push((file, image));
    }
    Ok(images)
}

/// An allocation failure as a one-line error.
fn oom(e: cudarc::driver::DriverError, bytes: usize) -> Error {
    Error::cuda(format!(
        "allocating {:.1} MiB on the GPU failed: {e:?}",
        bytes as f64 / (1 << 20) as f64
    ))
}

pub use crate::kernels::{TC_HEAD_DIMS, kernel_names};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_file_lists_its_kernels() {
        for (file, source) in kernel_sources() {
            let names = kernel_names(file);
            assert!(!names.is_empty(), "{file}: no kernel names listed");
            assert!(source.contains("extern \"C\""), "{file}");
        }
        assert!(kernel_names("nothing.cu").is_empty());
        assert_eq!(
            DeviceRequest::parse("cuda:1").unwrap(),
            DeviceRequest::Cuda(1)
        );
        assert_eq!(DeviceRequest::parse("auto").unwrap(), DeviceRequest::Auto);
        assert!(DeviceRequest::parse("tpu").is_err());
        assert!(DeviceRequest::parse("cuda:x").is_err());
    }
}
