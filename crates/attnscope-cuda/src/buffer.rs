//! Typed device storage (candle's `CudaStorageSlice` / `WithDType` are the model): a buffer of the storage
//! dtype is a `CudaSlice` of that element type, so an f32 buffer is `CudaSlice<f32>` and a bf16 one
//! `CudaSlice<half::bf16>`; buffers whose type never changes (ids, positions, statistics, partials) are plain
//! typed `CudaSlice`s. Kernels receive raw device pointers ([`DeviceBuf::ptr`]) on the backend's one stream.

use crate::dtype::GpuDtype;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DeviceRepr, ValidAsZeroBits};

/// An element type of device storage, and its conversions from and to the f32 the host computes in
/// (round to nearest even, as PyTorch's `.to(dtype)`).
pub trait WithDType:
    DeviceRepr + ValidAsZeroBits + Copy + Default + Unpin + Send + Sync + 'static
{
    const DTYPE: GpuDtype;
    fn from_f32(v: f32) -> Self;
    fn to_f32(self) -> f32;
    /// The slice as the storage enum.
    fn wrap(slice: CudaSlice<Self>) -> DeviceSlice;
}

impl WithDType for f32 {
    const DTYPE: GpuDtype = GpuDtype::F32;
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn wrap(slice: CudaSlice<Self>) -> DeviceSlice {
        DeviceSlice::F32(slice)
    }
}

impl WithDType for half::bf16 {
    const DTYPE: GpuDtype = GpuDtype::Bf16;
    fn from_f32(v: f32) -> Self {
        half::bf16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    fn wrap(slice: CudaSlice<Self>) -> DeviceSlice {
        DeviceSlice::Bf16(slice)
    }
}

impl WithDType for half::f16 {
    const DTYPE: GpuDtype = GpuDtype::F16;
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    fn wrap(slice: CudaSlice<Self>) -> DeviceSlice {
        DeviceSlice::F16(slice)
    }
}

/// Device storage in one of the storage dtypes.
pub enum DeviceSlice {
    F32(CudaSlice<f32>),
    Bf16(CudaSlice<half::bf16>),
    F16(CudaSlice<half::f16>),
}

/// Runs `$body` with `$s` bound to the typed slice of `$slice`, whatever its element type.
#[macro_export]
macro_rules! on_slice {
    ($slice:expr, $s:ident => $body:expr) => {
        match $slice {
            $crate::buffer::DeviceSlice::F32($s) => $body,
            $crate::buffer::DeviceSlice::Bf16($s) => $body,
            $crate::buffer::DeviceSlice::F16($s) => $body,
        }
    };
}

/// A buffer of `len` elements of the storage dtype.
pub struct DeviceBuf {
    pub data: DeviceSlice,
    pub len: usize,
}

impl DeviceBuf {
    /// The element type.
    pub fn dtype(&self) -> GpuDtype {
        match self.data {
            DeviceSlice::F32(_) => GpuDtype::F32,
            DeviceSlice::Bf16(_) => GpuDtype::Bf16,
            DeviceSlice::F16(_) => GpuDtype::F16,
        }
    }

    /// Device address of element `offset`.
    pub fn ptr_at(&self, stream: &CudaStream, offset: usize) -> u64 {
        debug_assert!(offset <= self.len, "offset {offset} beyond {}", self.len);
        let base = on_slice!(&self.data, s => s.device_ptr(stream).0);
        base + (offset * self.dtype().size()) as u64
    }

    /// Device address of element 0.
    pub fn ptr(&self, stream: &CudaStream) -> u64 {
        self.ptr_at(stream, 0)
    }
}

/// Device address of element 0 of a typed buffer (the backend's single stream needs no event tracking).
pub fn slice_ptr<T>(slice: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    slice.device_ptr(stream).0
}

impl std::fmt::Debug for DeviceBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBuf({} x {})", self.len, self.dtype())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_to_nearest_even() {
        let v = [0.0f32, 1.0, -2.5, 1.0 + 1.0 / 256.0, 65504.0, 1e-8];
        for x in v {
            assert_eq!(<f32 as WithDType>::from_f32(x).to_f32(), x);
        }
        // 1 + 2^-8 is halfway between two bf16 values: ties go to the even mantissa (1.0).
        assert_eq!(
            <half::bf16 as WithDType>::from_f32(1.0 + 1.0 / 256.0).to_f32(),
            1.0
        );
        assert_eq!(
            <half::f16 as WithDType>::from_f32(65504.0).to_f32(),
            65504.0
        );
        assert_eq!(<half::bf16 as WithDType>::DTYPE, GpuDtype::Bf16);
    }
}
