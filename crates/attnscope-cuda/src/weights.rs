//! Weights of a model on the device, as `CudaBackend` stores them (`Backend::Linear`, `Norm`, `Table`,
//! `Rope`): every buffer in the storage dtype, except the output head's bias and the rotary frequencies,
//! which are f32.

use crate::buffer::DeviceBuf;
use cudarc::driver::CudaSlice;

/// A linear layer on the device: `W [out, in]` and optional bias `[out]` in the storage dtype.
pub struct DeviceLinear {
    pub w: DeviceBuf,
    pub bias: Option<DeviceBuf>,
    /// The bias in f32, on the output head only (logits are f32, so its bias is added in f32).
    pub logit_bias: Option<CudaSlice<f32>>,
    pub in_dim: usize,
    pub out_dim: usize,
}

/// A norm's weight (and LayerNorm bias) on the device.
pub struct DeviceNorm {
    pub w: DeviceBuf,
    pub b: Option<DeviceBuf>,
}

/// A table of rows `[n, width]` on the device (token embeddings, learned positions).
pub struct DeviceTable {
    pub data: DeviceBuf,
    pub width: usize,
}

impl DeviceTable {
    /// Rows in the table.
    pub fn rows(&self) -> usize {
        self.data.len / self.width.max(1)
    }
}

/// The rotary table on the device: `rotary_dim / 2` f32 inverse frequencies.
pub struct DeviceRope {
    pub inv_freq: CudaSlice<f32>,
    pub rotary_dim: usize,
}
