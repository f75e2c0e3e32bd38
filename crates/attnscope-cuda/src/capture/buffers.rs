//! The capture's buffers, owned by the scratch (`DeviceScratch::capture`) and grown only when a larger
//! chunk comes, so a captured decode step allocates nothing once warm: on the device the selected heads,
//! the received partials, one packed statistics buffer and the weight / probability rows (f32 or f16), all
//! shared by the chunks of a pass (the stream orders each chunk's kernels after the previous chunk's
//! copies out); on the host the pinned read-back of every chunk of the pass ([`PendingCapture`]) and one
//! for a chunk recorded at once (`immediate`).

use crate::buffer::slice_ptr;
use crate::capture::pending::{PendingCapture, PendingSlot};
use crate::context::GpuContext;
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::capture::RowStats;
use cudarc::driver::CudaSlice;

/// Device buffers of the second pass, reused by every chunk.
pub struct DeviceBuffers {
    /// The selected heads as uploaded (`d_heads` holds them as int32).
    heads: Vec<usize>,
    heads_i32: Vec<i32>,
    d_heads: CudaSlice<i32>,
    /// f64 received partials of the second pass.
    pub recv_part: CudaSlice<f64>,
    /// The packed statistics of one chunk.
    pub packed: CudaSlice<u32>,
    /// f32 weight or probability rows of one chunk.
    pub rows_f32: CudaSlice<f32>,
    /// f16 weight rows of one chunk.
    pub rows_f16: CudaSlice<half::f16>,
}

impl DeviceBuffers {
    fn new(g: &GpuContext) -> Result<DeviceBuffers> {
        Ok(DeviceBuffers {
            heads: Vec::new(),
            heads_i32: Vec::new(),
            d_heads: g.zeros_of(1)?,
            recv_part: g.zeros_of(1)?,
            packed: g.zeros_of(1)?,
            rows_f32: g.zeros_of(1)?,
            rows_f16: g.zeros_of(1)?,
        })
    }

    /// Device address of `heads` as int32, uploaded only when the list differs from the last one (the
    /// upload is stream-ordered after the launches that read the previous list).
    pub fn heads_ptr(&mut self, g: &GpuContext, heads: &[usize]) -> Result<u64> {
        if self.heads != heads {
            if self.d_heads.len() < heads.len() {
                self.d_heads = g.zeros_of(heads.len())?;
            }
            self.heads_i32.clear();
            self.heads_i32.extend(heads.iter().map(|&h| h as i32));
            if !heads.is_empty() {
                g.stream
                    .memcpy_htod(&self.heads_i32, &mut self.d_heads.slice_mut(0..heads.len()))
                    .map_err(|e| Error::cuda(format!("uploading the captured heads: {e:?}")))?;
            }
            self.heads.clear();
            self.heads.extend_from_slice(heads);
        }
        Ok(slice_ptr(&self.d_heads, &g.stream))
    }
}

/// The capture's buffers.
pub struct CaptureBuffers {
    pub dev: DeviceBuffers,
    /// The chunks of the current pass waiting for its synchronisation.
    pub pending: PendingCapture,
    /// A chunk recorded at once (beyond the pending budget).
    pub immediate: PendingSlot,
    /// Host vectors reused across layers.
    pub host_heads: Vec<usize>,
    pub host_received: Vec<f64>,
    pub host_rows: Vec<RowStats>,
}

impl CaptureBuffers {
    /// Empty buffers (one element each on the device; the first captured chunks size them).
    pub fn new(g: &GpuContext) -> Result<CaptureBuffers> {
        Ok(CaptureBuffers {
            dev: DeviceBuffers::new(g)?,
            pending: PendingCapture::default(),
            immediate: PendingSlot::default(),
            host_heads: Vec::new(),
            host_received: Vec::new(),
            host_rows: Vec::new(),
        })
    }

    /// Drops what a failed pass left pending (after waiting for its copies, which may still be landing in
    /// the pinned slots): called when a pass begins.
    pub fn discard_stale(&mut self, g: &GpuContext) -> Result<()> {
        if self.pending.unsynced {
            g.sync()?;
            self.pending.unsynced = false;
        }
        self.pending.clear();
        Ok(())
    }
}
