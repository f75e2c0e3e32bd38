//! Page-locked host memory that the capture's device→host copies land in ([`Pinned`]), the three
//! destinations of one captured chunk ([`HostSet`]), and how buffers grow ([`grown_len`]).
//!
//! A pinned buffer is only replaced (freed) when no copy into it is in flight: a pending slot is grown
//! only for a chunk of the current pass, whose previous contents were consumed (or discarded after a
//! synchronisation) before the pass began.

use crate::context::GpuContext;
use attnscope_core::Error;
use attnscope_core::Result;
use cudarc::driver::{CudaSlice, DeviceRepr, PinnedHostSlice, ValidAsZeroBits};

/// The length a buffer of `have` elements grows to so that it holds `need`: unchanged when it already
/// does, else `need` plus a quarter, so that a decode loop (one more key per step) reallocates only
/// logarithmically often, and a buffer never exceeds 1.25 × what was asked.
pub fn grown_len(have: usize, need: usize) -> usize {
    if have >= need {
        have
    } else {
        need.max(1) + need / 4
    }
}

/// A device buffer grown (by [`grown_len`]) to at least `len` elements.
pub fn reserve_dev<T: DeviceRepr + ValidAsZeroBits>(
    g: &GpuContext,
    buf: &mut CudaSlice<T>,
    len: usize,
) -> Result<()> {
    if buf.len() < len {
        *buf = g.zeros_of(grown_len(buf.len(), len))?;
    }
    Ok(())
}

/// Page-locked host memory, grown on demand.
pub struct Pinned<T: DeviceRepr> {
    host: Option<PinnedHostSlice<T>>,
}

impl<T: DeviceRepr + ValidAsZeroBits> Default for Pinned<T> {
    fn default() -> Self {
        Pinned { host: None }
    }
}

impl<T: DeviceRepr + ValidAsZeroBits> Pinned<T> {
    /// Elements held.
    pub fn len(&self) -> usize {
        self.host.as_ref().map_or(0, |h| h.len())
    }

    /// Whether nothing is held yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Grows to at least `len` elements (no-op when long enough). Only call when no copy into this buffer
    /// is in flight.
    pub fn reserve(&mut self, g: &GpuContext, len: usize) -> Result<()> {
        let have = self.len();
        if have < len {
            self.host = None; // free the old one first
            self.host = Some(alloc_pinned_zeroed(g, grown_len(have, len))?);
        }
        Ok(())
    }

    /// Queues the copy of the first `len` elements of `dev` here, growing first (asynchronous into
    /// page-locked memory: read them with [`Pinned::host`] after a stream synchronisation).
    pub fn copy_from(&mut self, g: &GpuContext, dev: &CudaSlice<T>, len: usize) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        if dev.len() < len {
            return Err(Error::cuda(format!(
                "capture download of {len} elements from a buffer of {}",
                dev.len()
            )));
        }
        self.reserve(g, len)?;
        let host = self
            .host
            .as_mut()
            .ok_or_else(|| Error::cuda("capture download: no pinned buffer"))?;
        let dst = &mut host.as_mut_slice().map_err(err)?[..len];
        g.stream.memcpy_dtoh(&dev.slice(0..len), dst).map_err(err)
    }

    /// The first `len` elements (call after the stream synchronisation that follows
    /// [`Pinned::copy_from`]).
    pub fn host(&self, len: usize) -> Result<&[T]> {
        if len == 0 {
            return Ok(&[]);
        }
        let host = self
            .host
            .as_ref()
            .filter(|h| h.len() >= len)
            .ok_or_else(|| Error::cuda(format!("capture read of {len} elements: not reserved")))?;
        Ok(&host.as_slice().map_err(err)?[..len])
    }
}

/// Where one captured chunk's read-back lands: packed statistics, f32 rows (weights or probability rows),
/// f16 weight rows.
#[derive(Default)]
pub struct HostSet {
    pub packed: Pinned<u32>,
    pub rows_f32: Pinned<f32>,
    pub rows_f16: Pinned<half::f16>,
}

impl HostSet {
    /// Bytes of pinned memory held.
    pub fn bytes(&self) -> usize {
        4 * (self.packed.len() + self.rows_f32.len()) + 2 * self.rows_f16.len()
    }
}

fn err(e: cudarc::driver::DriverError) -> Error {
    Error::cuda(format!("capture download: {e:?}"))
}

/// Page-locked host memory of `len` zeroed elements (plain flags: the host reads it, so not
/// write-combined).
fn alloc_pinned_zeroed<T: DeviceRepr + ValidAsZeroBits>(
    g: &GpuContext,
    len: usize,
) -> Result<PinnedHostSlice<T>> {
    // SAFETY: cuMemHostAlloc of `len` elements of T; the memory is uninitialised, so it is zeroed below
    // through the raw pointer before any slice of it is made (T is ValidAsZeroBits).
    let mut host = unsafe { g.ctx.alloc_pinned_with_flags::<T>(len, 0) }.map_err(|e| {
        Error::cuda(format!(
            "allocating {} bytes of pinned host memory for the capture: {e:?}",
            len * std::mem::size_of::<T>()
        ))
    })?;
    let ptr = host.as_mut_ptr().map_err(err)?;
    // SAFETY: `ptr` points at `len` elements of T owned by `host`; all-zero bytes are a valid T.
    unsafe { std::ptr::write_bytes(ptr, 0, len) };
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_grow_by_a_quarter_and_only_when_short() {
        assert_eq!(grown_len(100, 80), 100);
        assert_eq!(grown_len(100, 100), 100);
        assert_eq!(grown_len(100, 101), 126);
        assert_eq!(grown_len(0, 0), 0);
        assert_eq!(grown_len(0, 1), 1);
        // A decode loop adding one key row a step: few reallocations over 4096 steps.
        let (mut have, mut grows) = (0, 0);
        for need in 1..=4096 {
            let next = grown_len(have, need);
            if next != have {
                grows += 1;
                have = next;
            }
            assert!(have >= need && have <= need + need / 4 + 1);
        }
        assert!(grows < 40, "{grows} reallocations");
    }
}
