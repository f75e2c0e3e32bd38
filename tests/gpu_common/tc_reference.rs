//! A reference for the tensor-core prefill's output that emulates what the kernel rounds by design, so that
//! its bound can be tight enough to catch a fragment-layout error.
//!
//! The kernels round P to the input type E before the P·V product (as FlashAttention-2 does), at the running
//! maximum of the key tile being processed: p_j = round_E(exp(s_j − m_tile)), O = Σ p_j·v_j rescaled by
//! exp(m_old − m_new) between tiles, l = Σ exp(s_j − m) unrounded, out = round_E(O / l). A reference that
//! skips the rounding of P must allow u·Σ|p v| per element (the old bound, ≈ u·(1 + |ref|)), which is
//! larger than the error a swapped fragment makes on long rows, where every p is small. This one walks the
//! keys in the kernel's tiles, computes scores, exponentials and sums in f64, and rounds P to E exactly where
//! the kernel does, so what is left between it and the GPU is:
//!   * the rounding of the output: two values δ apart round at most δ + 2u·|ref| apart;
//!   * f32 arithmetic in the kernel (mma accumulation, exp2, l): relative ~1e-6 of Σ p|v|;
//!   * P values that sit within that relative 1e-6 of a rounding midpoint and round the other way: each such
//!     flip moves the output by at most 2u·p_j·|v_jd| (p_j normalised). Flips are rare (≈ 1e-6 / 2u of the
//!     keys, a few per thousand rows): the bound allows four flips of the largest p_j·|v_jd| of the row.
//!
//! A fragment-layout error permutes keys, rows or dimensions inside a 16×16 or 16×8 fragment and changes the
//! output by ~|p_j − p_j'|·|v_j − v_j'| summed over the tile, orders of magnitude above that bound:
//! tests/tc_reference_check.rs shows it on the CPU for each kind of swap ([`Fault`]), for a P·V that skips
//! one 16-key step and for one 3% off, which the old bound accepts on long rows, while the fault-free
//! emulation with f32 scores passes.

use super::Elem;
use super::attention::{Path, Problem};
use attnscope_cuda::kernels::FA2_HEAD_DIMS;

/// How a kernel walks the keys of a row: tiles of `bk` key slots aligned to multiples of `bk` (slot 0
/// starts a tile), in the kernel's visit order. Only the tile boundaries and the order matter: the running
/// maximum at which P is rounded changes only between tiles.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TileWalk {
    /// attention_prefill.cu: ascending slot order.
    Ascending { bk: usize },
    /// attention_prefill_fa2.cu: per block of 64 query rows, the FULL tiles (every key visible to every row
    /// of the block) first, then the PARTIAL ones before them (window edge), then those after them
    /// (diagonal, groups); the classification is the kernel's, from slot indices and groups.
    FullFirst { bk: usize },
}

/// The key tiles of a prefill kernel at `head_dim` (BK of kernels/attention_prefill.cu: 64 keys, 32 above
/// head_dim 128; of attention_prefill_fa2.cu: 64 up to head_dim 80, else 32). The fast path runs the
/// reference kernel at head dims it lacks (`ops::fa2_supports`; the tests' buffers meet its alignment).
pub fn tile_walk(path: Path, head_dim: usize) -> TileWalk {
    match path {
        Path::Fast if FA2_HEAD_DIMS.contains(&head_dim) => TileWalk::FullFirst {
            bk: if head_dim <= 80 { 64 } else { 32 },
        },
        Path::Tensor | Path::Fast => TileWalk::Ascending {
            bk: if head_dim > 128 { 32 } else { 64 },
        },
        Path::Simt => TileWalk::Ascending { bk: 32 },
    }
}

impl TileWalk {
    pub fn bk(self) -> usize {
        match self {
            TileWalk::Ascending { bk } | TileWalk::FullFirst { bk } => bk,
        }
    }

    /// The tiles query row `i` of `p` visits, in order (tiles with no key visible to the row are harmless:
    /// they change neither the maximum nor the sums).
    pub fn order(self, p: &Problem, i: usize) -> Vec<usize> {
        let s = &p.s;
        match self {
            TileWalk::Ascending { bk } => (0..=(s.q_start + i) / bk).collect(),
            TileWalk::FullFirst { bk } => {
                const BQ: usize = 64;
                let row0 = i / BQ * BQ;
                let last = (p.n_new - 1).min(row0 + BQ - 1);
                let (qlo, qhi) = (s.q_start + row0, s.q_start + last);
                let key_end = qhi + 1;
                let window = s.window.unwrap_or(0);
                let key_begin = if window > 0 {
                    (qlo + 1).saturating_sub(window)
                } else {
                    0
                };
                let (nb, ne) = (key_begin / bk, key_end.div_ceil(bk));
                let mut full_lo = nb;
                let mut full_hi = ne.min((qlo + 1) / bk);
                if window > 0 {
                    full_lo = full_lo.max((qhi + 1).saturating_sub(window).div_ceil(bk));
                }
                if s.isolated {
                    let groups: Vec<i32> = (row0..=last)
                        .map(|r| p.slots[s.q_start + r].group)
                        .filter(|&g| g >= 0)
                        .collect();
                    if let (Some(&gmin), Some(&gmax)) = (groups.iter().min(), groups.iter().max())
                        && let Some(first) =
                            (nb * bk..key_end).find(|&k| (gmin..=gmax).contains(&p.slots[k].group))
                    {
                        full_hi = full_hi.min(first / bk);
                    }
                }
                if full_lo >= full_hi {
                    full_lo = ne;
                    full_hi = ne;
                }
                (full_lo..full_hi)
                    .chain(nb..full_lo)
                    .chain(full_hi..ne)
                    .collect()
            }
        }
    }
}

/// A deliberate fragment-layout error, for the CPU-side demonstration that the bound catches one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    None,
    /// P·V with keys j and j^8 of each 16-key k-step exchanged (a wrong B-fragment / ldmatrix.trans address).
    SwapKeys8,
    /// Output rows i and i^8 of each 16-row Q fragment exchanged (a0/a1 register order).
    SwapRows8,
    /// Output dimensions d and d^8 of each 16-wide block exchanged (O n-tile order).
    SwapDims8,
    /// The P·V product skips the 16 keys of slots 16..32 (a k-step loop bound off by one).
    DropKeyStep,
    /// P·V 3% too large (a rescale factor exp(m_old − m_new) applied to a stale accumulator, say): on long
    /// rows, where |out| is small, the old bound u·(1 + |ref|) + 2e-4 lets this pass.
    PvOff3Percent,
}

/// How the emulation computes scores and exponentials: exactly (f64, the reference) or as a GPU would
/// (f32 dot products summed in another order, f32 exp), to show that honest f32 arithmetic passes the bound.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arith {
    F64,
    F32,
}

/// The emulated output `[n_new, n_heads·head_dim]` (rounded to E) and, per element, the largest
/// p_j·|v_jd| of its row (normalised p), which scales the allowance for rounding flips of P.
pub struct TcReference {
    pub out: Vec<f32>,
    pub flip: Vec<f32>,
    pub unit: f32,
}

impl Problem {
    /// Emulates the tensor-core prefill for element type E (see the module docs).
    pub fn tc_emulated<E: Elem>(&self, walk: TileWalk, fault: Fault, arith: Arith) -> TcReference {
        let s = &self.s;
        let (hd, nh) = (s.head_dim, s.n_heads);
        let mask = self.mask();
        let round = |x: f64| E::from_f32(x as f32).to_f32() as f64;
        let mut out = vec![0.0f32; self.n_new * nh * hd];
        let mut flip = vec![0.0f32; self.n_new * nh * hd];
        let kv = |h: usize| h / (nh / s.n_kv_heads);
        for h in 0..nh {
            for i in 0..self.n_new {
                let slot = s.q_start + i;
                let score = |j: usize| match arith {
                    Arith::F64 => self.score_f64(h, i, j),
                    Arith::F32 => self.score_f32_reversed(h, i, j) as f64,
                };
                // Visible keys with their scores, in slot order, grouped by tile.
                let bk = walk.bk();
                let keys: Vec<(usize, f64)> = (0..=slot)
                    .filter(|&j| mask.allows(slot, j))
                    .map(|j| (j, score(j)))
                    .collect();
                let mut by_tile: Vec<&[(usize, f64)]> = vec![&[]; slot / bk + 1];
                for run in keys.chunk_by(|a, b| a.0 / bk == b.0 / bk) {
                    by_tile[run[0].0 / bk] = run;
                }
                let visited: Vec<usize> = walk
                    .order(self, i)
                    .into_iter()
                    .filter(|&t| t < by_tile.len())
                    .collect();
                let seen: usize = visited.iter().map(|&t| by_tile[t].len()).sum();
                assert_eq!(seen, keys.len(), "{walk:?} row {i}: the walk misses keys");
                let (mut m, mut l) = (f64::NEG_INFINITY, 0.0f64);
                let mut acc = vec![0.0f64; hd];
                for tile in visited.into_iter().map(|t| by_tile[t]) {
                    if tile.is_empty() {
                        continue;
                    }
                    let m_new = tile.iter().map(|&(_, x)| x).fold(m, f64::max);
                    let alpha = if m == f64::NEG_INFINITY {
                        0.0
                    } else {
                        exp(m - m_new, arith)
                    };
                    l *= alpha;
                    acc.iter_mut().for_each(|a| *a *= alpha);
                    for &(j, x) in tile {
                        let p = exp(x - m_new, arith);
                        l += p;
                        // SwapKeys8: the product pairs p_j with the value row of key j^8 of its k-step.
                        let jv = if fault == Fault::SwapKeys8 { j ^ 8 } else { j };
                        let vrow = &self.v[jv.min(s.n_keys - 1) * s.n_kv_heads * hd + kv(h) * hd..];
                        let dropped = fault == Fault::DropKeyStep && (16..32).contains(&j);
                        let pr = if dropped { 0.0 } else { round(p) };
                        for (a, &vv) in acc.iter_mut().zip(&vrow[..hd]) {
                            *a += pr * vv as f64;
                        }
                    }
                    m = m_new;
                }
                let base = i * nh * hd + h * hd;
                let fl = &mut flip[base..base + hd];
                for &(j, x) in &keys {
                    let p = (x - m).exp() / l;
                    let vrow = &self.v[j * s.n_kv_heads * hd + kv(h) * hd..][..hd];
                    for (f, &vv) in fl.iter_mut().zip(vrow) {
                        *f = f.max((p * vv.abs() as f64) as f32);
                    }
                }
                let gain = if fault == Fault::PvOff3Percent {
                    1.03
                } else {
                    1.0
                };
                for d in 0..hd {
                    out[base + d] = round(gain * acc[d] / l) as f32;
                }
            }
        }
        match fault {
            Fault::SwapRows8 => {
                let row = nh * hd;
                for i in 0..self.n_new {
                    let k = i ^ 8;
                    if i < k && k < self.n_new {
                        for c in 0..row {
                            out.swap(i * row + c, k * row + c);
                        }
                    }
                }
            }
            Fault::SwapDims8 => {
                for r in out.chunks_mut(hd) {
                    for d in 0..hd {
                        let e = d ^ 8;
                        if d < e && e < hd {
                            r.swap(d, e);
                        }
                    }
                }
            }
            Fault::None | Fault::SwapKeys8 | Fault::DropKeyStep | Fault::PvOff3Percent => {}
        }
        TcReference {
            out,
            flip,
            unit: E::UNIT,
        }
    }

    /// scale·q·k in f64 (q, k are already rounded to the element type).
    pub fn score_f64(&self, h: usize, i: usize, j: usize) -> f64 {
        let (hd, nh, nkv) = (self.s.head_dim, self.s.n_heads, self.s.n_kv_heads);
        let qrow = &self.q[i * nh * hd + h * hd..][..hd];
        let krow = &self.k[j * nkv * hd + h / (nh / nkv) * hd..][..hd];
        self.scale as f64
            * qrow
                .iter()
                .zip(krow)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>()
    }

    /// scale·q·k in f32, summed from the last dimension down (another order than the CPU's).
    fn score_f32_reversed(&self, h: usize, i: usize, j: usize) -> f32 {
        let (hd, nh, nkv) = (self.s.head_dim, self.s.n_heads, self.s.n_kv_heads);
        let qrow = &self.q[i * nh * hd + h * hd..][..hd];
        let krow = &self.k[j * nkv * hd + h / (nh / nkv) * hd..][..hd];
        self.scale * qrow.iter().zip(krow).rev().map(|(a, b)| a * b).sum::<f32>()
    }
}

fn exp(x: f64, arith: Arith) -> f64 {
    match arith {
        Arith::F64 => x.exp(),
        // exp2 of a pre-scaled f32 argument, as the kernels compute it.
        Arith::F32 => ((x as f32) * std::f32::consts::LOG2_E).exp2() as f64,
    }
}

impl TcReference {
    /// The bound of element `idx`: 2u·|ref| for the output rounding, 4 flips of 2u·max p|v| of its row, and
    /// 2e-6·(1 + |ref|) for the kernel's f32 arithmetic.
    pub fn tol(&self, idx: usize) -> f32 {
        let r = self.out[idx].abs();
        2.0 * self.unit * r + 8.0 * self.unit * self.flip[idx] + 2e-6 * (1.0 + r)
    }

    /// Checks `got` against the emulation: the first offending element, or Ok.
    pub fn check(&self, got: &[f32]) -> Result<(), String> {
        if got.len() != self.out.len() {
            return Err(format!("{} outputs, want {}", got.len(), self.out.len()));
        }
        for (i, (&g, &w)) in got.iter().zip(&self.out).enumerate() {
            let t = self.tol(i);
            let d = (g - w).abs();
            if d > t || d.is_nan() {
                return Err(format!(
                    "element {i}: got {g}, want {w} (|diff| {d} > tol {t})"
                ));
            }
        }
        Ok(())
    }
}
