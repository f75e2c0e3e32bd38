//! Captured attention weights of one sequence in one allocation: `[layers, heads, t, t]` row-major, so a
//! layer's `[heads, t, t]` tensor (what attention.safetensors holds) is one contiguous slice of it.
//! [`SequenceWeights::gather`] builds it from the recorders' `[capacity, capacity]` squares.

use super::WeightsDtype;

/// Weights borrowed in the capture's storage type: rows handed over in bulk
/// ([`super::HeadRecorder::absorb_weight_rows`]) or a slice of a [`SequenceWeights`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WeightRows<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
}

/// A buffer of attention weights in the capture's storage type.
#[derive(Clone, Debug, PartialEq)]
pub enum WeightBuffer {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
}

impl WeightBuffer {
    /// `len` zeros of `dtype`.
    pub fn zeros(dtype: WeightsDtype, len: usize) -> WeightBuffer {
        match dtype {
            WeightsDtype::F32 => WeightBuffer::F32(vec![0.0; len]),
            WeightsDtype::F16 => WeightBuffer::F16(vec![half::f16::ZERO; len]),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            WeightBuffer::F32(v) => v.len(),
            WeightBuffer::F16(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The storage type.
    pub fn dtype(&self) -> WeightsDtype {
        match self {
            WeightBuffer::F32(_) => WeightsDtype::F32,
            WeightBuffer::F16(_) => WeightsDtype::F16,
        }
    }

    /// The elements `range` (clamped to the buffer), borrowed.
    pub fn slice(&self, range: std::ops::Range<usize>) -> WeightRows<'_> {
        fn clamp<T>(v: &[T], r: std::ops::Range<usize>) -> &[T] {
            let end = r.end.min(v.len());
            &v[r.start.min(end)..end]
        }
        match self {
            WeightBuffer::F32(v) => WeightRows::F32(clamp(v, range)),
            WeightBuffer::F16(v) => WeightRows::F16(clamp(v, range)),
        }
    }

    /// The first non-finite element of `range`: its index relative to `range.start`, and its value.
    pub fn first_non_finite_in(&self, range: std::ops::Range<usize>) -> Option<(usize, f64)> {
        match self.slice(range) {
            WeightRows::F32(v) => v
                .iter()
                .position(|x| !x.is_finite())
                .map(|k| (k, f64::from(v[k]))),
            WeightRows::F16(v) => v
                .iter()
                .position(|x| !x.is_finite())
                .map(|k| (k, f64::from(v[k].to_f32()))),
        }
    }
}

/// Captured weights of one sequence: `[layers.len(), heads.len(), t, t]` row-major, one allocation.
/// Element `[i, j, q, k]` is the probability with which query slot `q` attended to key slot `k` in head
/// `heads[j]` of layer `layers[i]` (0 where hidden).
#[derive(Clone, Debug, PartialEq)]
pub struct SequenceWeights {
    /// The captured layers, ascending.
    pub layers: Vec<usize>,
    /// The captured query heads (the same in every captured layer), ascending.
    pub heads: Vec<usize>,
    /// Slots of the sequence (prompt and generated).
    pub t: usize,
    pub data: WeightBuffer,
}

impl SequenceWeights {
    /// Builds the buffer from each captured layer's heads (`squares[i][j]`: head `heads[j]` of layer
    /// `layers[i]`, a `[cap, cap]` row-major square with `cap >= t`), copying the leading `[t, t]` block
    /// of each row by row and dropping each square once it is copied, so that besides the squares not yet
    /// gathered only the final buffer is held. The first square's allocation becomes the final buffer (its
    /// rows moved to the front in place, then grown). A square in the other dtype (one spec never mixes
    /// them) is converted.
    pub fn gather(
        layers: Vec<usize>,
        heads: Vec<usize>,
        t: usize,
        squares: Vec<Vec<(WeightBuffer, usize)>>,
    ) -> SequenceWeights {
        let total = layers.len() * heads.len() * t * t;
        let mut squares = squares.into_iter().flatten();
        let data = match squares.next() {
            None => WeightBuffer::F32(Vec::new()),
            Some((WeightBuffer::F32(first), cap)) => {
                WeightBuffer::F32(gather_into(first, cap, t, total, squares, |b| match b {
                    WeightBuffer::F32(v) => v,
                    WeightBuffer::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
                }))
            }
            Some((WeightBuffer::F16(first), cap)) => {
                WeightBuffer::F16(gather_into(first, cap, t, total, squares, |b| match b {
                    WeightBuffer::F16(v) => v,
                    WeightBuffer::F32(v) => v.iter().map(|&x| half::f16::from_f32(x)).collect(),
                }))
            }
        };
        SequenceWeights {
            layers,
            heads,
            t,
            data,
        }
    }

    /// The index of `layer` in [`SequenceWeights::layers`], when it was captured.
    pub fn layer_index(&self, layer: usize) -> Option<usize> {
        self.layers.iter().position(|&l| l == layer)
    }

    /// The index of query head `head` in [`SequenceWeights::heads`], when it was captured.
    pub fn head_index(&self, head: usize) -> Option<usize> {
        self.heads.iter().position(|&h| h == head)
    }

    /// Elements of one head: `t · t`.
    pub fn head_len(&self) -> usize {
        self.t * self.t
    }

    /// Elements of one layer: `heads · t · t`.
    pub fn layer_len(&self) -> usize {
        self.heads.len() * self.head_len()
    }

    /// Elements of the whole buffer: `layers · heads · t · t`.
    pub fn len(&self) -> usize {
        self.layers.len() * self.layer_len()
    }

    /// True when nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The storage type.
    pub fn dtype(&self) -> WeightsDtype {
        self.data.dtype()
    }

    /// The `[heads, t, t]` weights of the `index`-th captured layer (empty when out of range).
    pub fn layer(&self, index: usize) -> WeightRows<'_> {
        let n = self.layer_len();
        self.data.slice(index * n..(index + 1) * n)
    }

    /// The `[t, t]` weights of head `head` of layer `layer` (model indices), when both were captured.
    pub fn head(&self, layer: usize, head: usize) -> Option<WeightRows<'_>> {
        let (i, j) = (self.layer_index(layer)?, self.head_index(head)?);
        let n = self.head_len();
        let start = (i * self.heads.len() + j) * n;
        Some(self.data.slice(start..start + n))
    }

    /// Like [`SequenceWeights::head`], as f32.
    pub fn head_f32(&self, layer: usize, head: usize) -> Option<Vec<f32>> {
        Some(match self.head(layer, head)? {
            WeightRows::F32(v) => v.to_vec(),
            WeightRows::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        })
    }
}

/// Moves the leading `[t, t]` block of the `[cap, cap]` square `first` to its front in place, grows it to
/// `total` elements with the leading blocks of `rest` (converted by `own`), and returns it.
fn gather_into<T: Copy>(
    mut first: Vec<T>,
    cap: usize,
    t: usize,
    total: usize,
    rest: impl Iterator<Item = (WeightBuffer, usize)>,
    own: impl Fn(WeightBuffer) -> Vec<T>,
) -> Vec<T> {
    compact_square(&mut first, cap, t);
    first.reserve_exact(total.saturating_sub(first.len()));
    for (square, cap) in rest {
        let square = own(square);
        append_block(&mut first, &square, cap, t);
        // `square` is dropped here, before the next one is copied.
    }
    first
}

/// Keeps the leading `[t, t]` block of a `[cap, cap]` row-major square, rows moved to the front in place.
fn compact_square<T: Copy>(buf: &mut Vec<T>, cap: usize, t: usize) {
    if t < cap {
        for r in 1..t {
            if r * cap + t > buf.len() {
                break;
            }
            buf.copy_within(r * cap..r * cap + t, r * t);
        }
    }
    buf.truncate(t * t);
}

/// Appends the leading `[t, t]` block of the `[cap, cap]` square `src` to `out`: one copy when `t == cap`,
/// else one per row.
fn append_block<T: Copy>(out: &mut Vec<T>, src: &[T], cap: usize, t: usize) {
    if t == cap {
        out.extend_from_slice(&src[..(t * t).min(src.len())]);
        return;
    }
    for r in 0..t {
        let start = (r * cap).min(src.len());
        out.extend_from_slice(&src[start..(start + t).min(src.len())]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `[cap, cap]` square whose element `(r, c)` is `base + r·cap + c` (exact in f16).
    fn square(base: usize, cap: usize) -> Vec<f32> {
        (0..cap * cap).map(|i| (base + i) as f32).collect()
    }

    /// The leading `[t, t]` block, by indexing.
    fn block(v: &[f32], cap: usize, t: usize) -> Vec<f32> {
        (0..t)
            .flat_map(|r| (0..t).map(move |c| (r, c)))
            .map(|(r, c)| v[r * cap + c])
            .collect()
    }

    #[test]
    fn gathered_weights_are_the_trimmed_squares_in_layer_then_head_order() {
        for (cap, t) in [(5, 5), (5, 3), (4, 1), (3, 0)] {
            let layers = vec![1, 4];
            let heads = vec![0, 2, 3];
            let squares: Vec<Vec<Vec<f32>>> = (0..2)
                .map(|i| (0..3).map(|j| square(100 * (i * 3 + j), cap)).collect())
                .collect();
            let want: Vec<f32> = squares
                .iter()
                .flatten()
                .flat_map(|s| block(s, cap, t))
                .collect();
            let given = |f16: bool| {
                squares
                    .iter()
                    .map(|l| {
                        l.iter()
                            .map(|s| {
                                let b = if f16 {
                                    WeightBuffer::F16(
                                        s.iter().map(|&x| half::f16::from_f32(x)).collect(),
                                    )
                                } else {
                                    WeightBuffer::F32(s.clone())
                                };
                                (b, cap)
                            })
                            .collect()
                    })
                    .collect()
            };
            let w = SequenceWeights::gather(layers.clone(), heads.clone(), t, given(false));
            assert_eq!(w.data, WeightBuffer::F32(want.clone()), "cap {cap} t {t}");
            assert_eq!(
                (w.len(), w.layer_len(), w.head_len()),
                (6 * t * t, 3 * t * t, t * t)
            );
            assert_eq!(w.layer_index(4), Some(1));
            assert_eq!(w.layer_index(2), None);
            assert_eq!(w.head_f32(4, 2), Some(want[4 * t * t..5 * t * t].to_vec()));
            assert_eq!(w.head(4, 1), None);
            assert!(matches!(w.layer(1), WeightRows::F32(v) if v == &want[3 * t * t..]));
            assert!(matches!(w.layer(2), WeightRows::F32(v) if v.is_empty()));

            let h = SequenceWeights::gather(layers, heads, t, given(true));
            assert_eq!(h.dtype(), WeightsDtype::F16);
            assert_eq!(h.head_f32(1, 0), Some(want[..t * t].to_vec()));
        }
    }

    #[test]
    fn a_square_in_the_other_dtype_is_converted_and_nothing_gives_an_empty_buffer() {
        let squares = vec![vec![
            (WeightBuffer::F16(vec![half::f16::from_f32(0.5); 4]), 2),
            (WeightBuffer::F32(vec![0.25; 4]), 2),
        ]];
        let w = SequenceWeights::gather(vec![0], vec![0, 1], 2, squares);
        assert_eq!(w.head_f32(0, 1), Some(vec![0.25; 4]));
        let e = SequenceWeights::gather(Vec::new(), vec![0], 3, Vec::new());
        assert!(e.is_empty() && e.data.is_empty());
    }
}
