//! f32 linear weights laid out once, at load, the way the CPU's GEMM reads them ([`PanelMatrix`]), so that
//! no call repacks them: a `[rows, cols]` matrix is cut into panels of [`PANEL_ROWS`] consecutive rows, and
//! each panel is stored column by column (`[cols][rows of the panel]`, the last panel holding the remainder).
//! A panel is then exactly the operand gemm's microkernel streams (a run of contiguous rows per reduction
//! step), both for prefill blocks and for decode's few rows (`model::ops::project`).

use rayon::prelude::*;

/// Rows of one panel: the height of gemm's widest f32 microkernel (4 AVX-512 registers of 16 lanes).
pub const PANEL_ROWS: usize = 64;

/// A row-major `[rows, cols]` f32 matrix stored as row panels (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct PanelMatrix {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
}

/// One panel of a [`PanelMatrix`].
#[derive(Clone, Copy, Debug)]
pub struct Panel<'a> {
    /// Index of the panel's first row in the matrix.
    pub first_row: usize,
    /// Rows in this panel (also the distance between its columns in `data`).
    pub rows: usize,
    /// `[cols][rows]`: element (r, c) of the panel is `data[c * rows + r]`.
    pub data: &'a [f32],
}

impl PanelMatrix {
    /// Packs a row-major `[rows, cols]` matrix (in parallel, one panel per task).
    pub fn from_row_major(values: &[f32], rows: usize, cols: usize) -> PanelMatrix {
        assert_eq!(
            values.len(),
            rows * cols,
            "PanelMatrix: {rows}x{cols} from {} values",
            values.len()
        );
        let mut data = vec![0.0f32; rows * cols];
        if !data.is_empty() {
            data.par_chunks_mut(PANEL_ROWS * cols)
                .enumerate()
                .for_each(|(p, panel)| {
                    let first = p * PANEL_ROWS;
                    let height = panel.len() / cols;
                    for (r, row) in values[first * cols..(first + height) * cols]
                        .chunks_exact(cols)
                        .enumerate()
                    {
                        for (c, &v) in row.iter().enumerate() {
                            panel[c * height + r] = v;
                        }
                    }
                });
        }
        PanelMatrix { data, rows, cols }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of elements (`rows × cols`; panels are not padded).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Number of panels.
    pub fn panels(&self) -> usize {
        self.rows.div_ceil(PANEL_ROWS)
    }

    /// Panel `p` (< [`panels`](Self::panels)).
    pub fn panel(&self, p: usize) -> Panel<'_> {
        let first_row = p * PANEL_ROWS;
        let rows = PANEL_ROWS.min(self.rows - first_row);
        let start = first_row * self.cols;
        Panel {
            first_row,
            rows,
            data: &self.data[start..start + rows * self.cols],
        }
    }

    /// Element (row, col).
    pub fn get(&self, row: usize, col: usize) -> f32 {
        let p = self.panel(row / PANEL_ROWS);
        p.data[col * p.rows + row % PANEL_ROWS]
    }

    /// Writes the row-major elements `start..start + out.len()` into `out` (an embedding row, say).
    pub fn read_row_major(&self, start: usize, out: &mut [f32]) {
        let mut done = 0;
        while done < out.len() {
            let (row, col) = ((start + done) / self.cols, (start + done) % self.cols);
            let n = (self.cols - col).min(out.len() - done);
            let p = self.panel(row / PANEL_ROWS);
            let r = row % PANEL_ROWS;
            for (o, c) in out[done..done + n].iter_mut().zip(col..) {
                *o = p.data[c * p.rows + r];
            }
            done += n;
        }
    }

    /// The matrix row-major again.
    pub fn to_row_major(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.data.len()];
        if out.is_empty() {
            return out;
        }
        out.par_chunks_mut(PANEL_ROWS * self.cols)
            .enumerate()
            .for_each(|(p, rows)| {
                let panel = self.panel(p);
                for (r, row) in rows.chunks_exact_mut(self.cols).enumerate() {
                    for (c, o) in row.iter_mut().enumerate() {
                        *o = panel.data[c * panel.rows + r];
                    }
                }
            });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_hold_every_element_once() {
        for &(rows, cols) in &[(0, 5), (5, 0), (1, 1), (63, 3), (64, 7), (65, 2), (200, 33)] {
            let values: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let m = PanelMatrix::from_row_major(&values, rows, cols);
            assert_eq!(m.len(), rows * cols);
            assert_eq!(m.to_row_major(), values, "{rows}x{cols}");
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(m.get(r, c), values[r * cols + c]);
                }
            }
            // Spans of any start and length, across row and panel boundaries.
            for (start, len) in [
                (0, rows * cols),
                (1, (rows * cols).saturating_sub(2)),
                (cols / 2, cols + 3),
            ] {
                if start + len <= rows * cols {
                    let mut out = vec![f32::NAN; len];
                    m.read_row_major(start, &mut out);
                    assert_eq!(
                        out,
                        values[start..start + len],
                        "{rows}x{cols} {start}+{len}"
                    );
                }
            }
            let heights: usize = (0..m.panels()).map(|p| m.panel(p).rows).sum();
            assert_eq!(heights, rows);
        }
    }
}
