//! The device half of a KV cache: per-layer key and value buffers `[capacity, n_kv_heads · head_dim]` in
//! the backend's dtype, and the per-slot int32 groups and int64 positions the attention kernels read.
//! The slot metadata itself (token, position, group, step, kind, ablated) stays in `KvCache` on the host,
//! shared by both backends; [`DeviceKv::write_slots`] mirrors what the kernels need.

use crate::buffer::DeviceBuf;
use crate::context::GpuContext;
use crate::dtype::GpuDtype;
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::config::ModelConfig;
use attnscope_core::model::backend::KvStore;
use attnscope_core::slots::SlotInfo;
use cudarc::driver::{CudaSlice, DevicePtr};
use std::any::Any;
use std::sync::Arc;

/// Device storage of one KV cache.
pub struct DeviceKv {
    pub gpu: Arc<GpuContext>,
    pub dtype: GpuDtype,
    pub keys: Vec<DeviceBuf>,
    pub values: Vec<DeviceBuf>,
    pub groups: CudaSlice<i32>,
    pub positions: CudaSlice<i64>,
    /// Elements per slot of one layer's keys (or values): `n_kv_heads · head_dim`.
    pub kv_dim: usize,
    /// Slots per layer.
    pub capacity: usize,
    /// Host staging of [`DeviceKv::write_slots`], reused so a decode step allocates nothing.
    host_groups: Vec<i32>,
    host_positions: Vec<i64>,
}

impl DeviceKv {
    /// Allocates room for `capacity` slots in every layer.
    pub fn new(
        gpu: &Arc<GpuContext>,
        cfg: &ModelConfig,
        capacity: usize,
        dtype: GpuDtype,
    ) -> Result<DeviceKv> {
        let kv_dim = cfg.n_kv_heads * cfg.head_dim;
        let layer = || gpu.zeros(dtype, capacity * kv_dim);
        let keys = (0..cfg.n_layers).map(|_| layer()).collect::<Result<_>>()?;
        let values = (0..cfg.n_layers).map(|_| layer()).collect::<Result<_>>()?;
        let err = |e| Error::cuda(format!("allocating the KV cache metadata: {e:?}"));
        Ok(DeviceKv {
            gpu: gpu.clone(),
            dtype,
            keys,
            values,
            groups: gpu
                .stream
                .alloc_zeros::<i32>(capacity.max(1))
                .map_err(err)?,
            positions: gpu
                .stream
                .alloc_zeros::<i64>(capacity.max(1))
                .map_err(err)?,
            kv_dim,
            capacity,
            host_groups: Vec::new(),
            host_positions: Vec::new(),
        })
    }

    /// Uploads the groups and positions of `slots`, which occupy slots `start..start + slots.len()`.
    pub fn write_slots(&mut self, start: usize, slots: &[SlotInfo]) -> Result<()> {
        if start + slots.len() > self.capacity {
            return Err(Error::cuda(format!(
                "slots {start}..{} beyond the device cache's {} slots",
                start + slots.len(),
                self.capacity
            )));
        }
        if slots.is_empty() {
            return Ok(());
        }
        self.host_groups.clear();
        self.host_groups.extend(slots.iter().map(|s| s.group));
        self.host_positions.clear();
        self.host_positions.extend(slots.iter().map(|s| s.position));
        let end = start + slots.len();
        let err = |e| Error::cuda(format!("uploading slot metadata: {e:?}"));
        let s = &self.gpu.stream;
        // From pageable memory the driver stages the bytes before returning; no stream synchronisation.
        s.memcpy_htod(&self.host_groups, &mut self.groups.slice_mut(start..end))
            .map_err(err)?;
        s.memcpy_htod(
            &self.host_positions,
            &mut self.positions.slice_mut(start..end),
        )
        .map_err(err)
    }

    /// Device address of the groups array.
    pub fn groups_ptr(&self) -> u64 {
        self.groups.device_ptr(&self.gpu.stream).0
    }

    /// Device address of the positions array.
    pub fn positions_ptr(&self) -> u64 {
        self.positions.device_ptr(&self.gpu.stream).0
    }
}

impl KvStore for DeviceKv {
    /// Keys (`values = false`) or values of layer `l`, slots `0..n`, as f32 `[n, kv_dim]`.
    fn read_layer(&self, l: usize, values: bool, n: usize) -> Result<Vec<f32>> {
        if l >= self.keys.len() || n > self.capacity {
            return Err(Error::cuda(format!(
                "read of {n} slots of layer {l} from a device cache of {} layers × {} slots",
                self.keys.len(),
                self.capacity
            )));
        }
        let buf = if values {
            &self.values[l]
        } else {
            &self.keys[l]
        };
        self.gpu.read_f32(buf, 0..n * self.kv_dim)
    }

    /// Overwrites keys or values of layer `l`, slots `0..data.len() / kv_dim`, from f32.
    fn write_layer(&mut self, l: usize, values: bool, data: &[f32]) -> Result<()> {
        if l >= self.keys.len() || data.len() > self.capacity * self.kv_dim {
            return Err(Error::cuda(format!(
                "write of {} elements into layer {l} of a device cache of {} layers × {} slots",
                data.len(),
                self.keys.len(),
                self.capacity
            )));
        }
        let buf = if values {
            &mut self.values[l]
        } else {
            &mut self.keys[l]
        };
        self.gpu.write_f32(buf, 0, data)
    }

    fn try_clone(&self) -> Result<Box<dyn KvStore>> {
        Err(Error::cuda(
            "copying a KV cache that lives on the GPU is not supported",
        ))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl std::fmt::Debug for DeviceKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceKv({} layers, {} on {})",
            self.keys.len(),
            self.dtype,
            self.gpu.name
        )
    }
}
