//! The linear layers' product for f32 weights stored in row panels ([`PanelMatrix`], laid out at load):
//! gemm straight on the panels, so no call repacks the weights, for prefill blocks and batched decode alike
//! (`ops::project` dispatches here); a single input row (decode at batch 1) streams each panel once through
//! [`PanelMatVec`] instead. Tasks are independent of the thread count, so results are too.

use crate::weights::{PANEL_ROWS, Panel, PanelMatrix};
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

/// Input rows of one task of [`project_panels`]: a block of x (256 × in_dim) stays in cache while the
/// weight's panels stream past it.
const PANEL_BLOCK_ROWS: usize = 256;

/// out `[t, out_dim]` = x `[t, in_dim]` · Wᵀ for W in row panels, any t: one single-threaded gemm call per
/// (block of input rows, panel), the tasks in parallel. A panel is already laid out as gemm's microkernel
/// reads it, so no call repacks the weights, and each weight is read once per block of input rows (once
/// per call in decode).
pub fn project_panels(x: &[f32], t: usize, w: &PanelMatrix, out: &mut [f32]) {
    keep_panels_unpacked();
    let (out_dim, in_dim) = (w.rows(), w.cols());
    assert!(
        x.len() >= t * in_dim && out.len() >= t * out_dim,
        "project_panels: operands too small"
    );
    if t == 0 || out_dim == 0 {
        return;
    }
    if in_dim == 0 {
        out[..t * out_dim].fill(0.0);
        return;
    }
    if t == 1 {
        let arch = Arch::new();
        out[..out_dim]
            .par_chunks_mut(PANEL_ROWS)
            .enumerate()
            .for_each(|(p, out)| {
                arch.dispatch(PanelMatVec {
                    panel: w.panel(p),
                    x: &x[..in_dim],
                    out,
                })
            });
        return;
    }
    let panels = w.panels();
    let tasks = t.div_ceil(PANEL_BLOCK_ROWS) * panels;
    let out_addr = out.as_mut_ptr().expose_provenance();
    (0..tasks).into_par_iter().for_each(|task| {
        let (block, panel) = (task / panels, task % panels);
        let row0 = block * PANEL_BLOCK_ROWS;
        let rows = PANEL_BLOCK_ROWS.min(t - row0);
        let p = w.panel(panel);
        let dst = std::ptr::with_exposed_provenance_mut::<f32>(out_addr);
        // SAFETY: rows row0..row0+rows of x and of out are in bounds (assert above); the panel holds p.rows ×
        // in_dim values, element (c, k) of its transpose at k * p.rows + c. Each task writes only its own
        // [rows × p.rows] window of out (rows row0.., columns p.first_row..), disjoint from every other task's,
        // and `out` is borrowed mutably for the whole loop, so nothing else reads or writes it meanwhile.
        unsafe {
            gemm::gemm(
                rows,
                p.rows,
                in_dim,
                dst.add(row0 * out_dim + p.first_row),
                1,
                out_dim as isize,
                false,
                x.as_ptr().add(row0 * in_dim),
                1,
                in_dim as isize,
                p.data.as_ptr(),
                1,
                p.rows as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
}

/// Tells gemm (process-wide, once) not to repack a left operand whose columns are already contiguous
/// unless a call has more than 256 · NR (1536) right-hand columns. gemm's default (8 · NR = 48) repacked
/// every weight panel at every call of [`project_panels`] (256 input rows a call) although a panel is
/// exactly gemm's packed layout (columns of 64 = MR contiguous rows): 15 % of a T = 128 prefill was that
/// copy. Single-threaded calls only; operands that need packing (strided columns, as the attention's key
/// tiles) are packed as before.
fn keep_panels_unpacked() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| gemm::set_lhs_packing_threshold_single_thread(256));
}

/// out (one panel's rows) = panel · x for a single input row: the panel is read once, front to back, one
/// column (PANEL_ROWS contiguous weights, a few SIMD vectors) per input element, into one accumulator
/// vector per group of rows (f32, fused multiply-add).
struct PanelMatVec<'a> {
    panel: Panel<'a>,
    x: &'a [f32],
    out: &'a mut [f32],
}

/// Most SIMD vectors of one panel column (PANEL_ROWS f32 in 4-lane vectors, NEON).
const MAX_COLUMN_VECTORS: usize = PANEL_ROWS / 4;

impl WithSimd for PanelMatVec<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let PanelMatVec { panel, x, out } = self;
        let h = panel.rows;
        let vectors = PANEL_ROWS / S::F32_LANES;
        if h != PANEL_ROWS
            || vectors > MAX_COLUMN_VECTORS
            || !PANEL_ROWS.is_multiple_of(S::F32_LANES)
        {
            // A partial last panel: plain loops (once per matrix at most).
            out.fill(0.0);
            for (column, &xc) in panel.data.chunks_exact(h).zip(x) {
                for (o, &w) in out.iter_mut().zip(column) {
                    *o = w.mul_add(xc, *o);
                }
            }
            return;
        }
        let mut acc = [simd.splat_f32s(0.0); MAX_COLUMN_VECTORS];
        for (column, &xc) in panel.data.chunks_exact(PANEL_ROWS).zip(x) {
            let xv = simd.splat_f32s(xc);
            let (w, _) = S::as_simd_f32s(column);
            for (a, &w) in acc[..vectors].iter_mut().zip(w) {
                *a = simd.mul_add_f32s(w, xv, *a);
            }
        }
        let (o, _) = S::as_mut_simd_f32s(out);
        o.copy_from_slice(&acc[..vectors]);
    }
}
