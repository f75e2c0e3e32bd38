use attnscope_core::model::ops::project;
use attnscope_core::weights::{StorageDtype, WeightMatrix};
use rayon::prelude::*;
use std::time::Instant;

const MR: usize = 64;

fn pack(w: &[f32], out_dim: usize, in_dim: usize) -> Vec<f32> {
    let panels = out_dim.div_ceil(MR);
    let mut p = vec![0.0f32; panels * MR * in_dim];
    for pi in 0..panels {
        for r in 0..MR {
            let row = pi * MR + r;
            if row >= out_dim {
                continue;
            }
            for k in 0..in_dim {
                p[pi * MR * in_dim + k * MR + r] = w[row * in_dim + k];
            }
        }
    }
    p
}

struct P(*mut f32);
unsafe impl Send for P {}
unsafe impl Sync for P {}

fn packed_linear(
    x: &[f32],
    t: usize,
    p: &[f32],
    in_dim: usize,
    out_dim: usize,
    out: &mut [f32],
    tb: usize,
) {
    let panels = out_dim.div_ceil(MR);
    let tblocks = t.div_ceil(tb);
    let o = P(out.as_mut_ptr());
    let o = &o;
    (0..tblocks * panels).into_par_iter().for_each(|job| {
        let (bi, pi) = (job / panels, job % panels);
        let t0 = bi * tb;
        let rows = tb.min(t - t0);
        let cols = MR.min(out_dim - pi * MR);
        unsafe {
            gemm::gemm(
                rows,
                cols,
                in_dim,
                o.0.add(t0 * out_dim + pi * MR),
                1,
                out_dim as isize,
                false,
                x.as_ptr().add(t0 * in_dim),
                1,
                in_dim as isize,
                p.as_ptr().add(pi * MR * in_dim),
                1,
                MR as isize,
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

fn main() {
    let reps = 7;
    let thr: usize = std::env::var("THR")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    gemm::set_lhs_packing_threshold_single_thread(thr);
    for t in std::env::var("TS")
        .ok()
        .map(|v| {
            v.split(',')
                .map(|x| x.parse().unwrap())
                .collect::<Vec<usize>>()
        })
        .unwrap_or(vec![128, 512, 2048])
    {
        for (i, o) in [(768usize, 768usize), (768, 2048), (2048, 768)] {
            let w: Vec<f32> = (0..i * o)
                .map(|v| ((v % 97) as f32 - 48.0) / 97.0)
                .collect();
            let x: Vec<f32> = (0..t * i)
                .map(|v| ((v % 89) as f32 - 44.0) / 89.0)
                .collect();
            let p = pack(&w, o, i);
            let wm = WeightMatrix::from_f32(w.clone(), StorageDtype::F32);
            let mut out = Vec::new();
            let mut out2 = vec![0.0f32; t * o];
            let flop = 2.0 * (t * i * o) as f64;
            let mut best_a = f64::INFINITY;
            let mut best_b = [f64::INFINITY; 3];
            let tbs = [16usize, 256, 2048];
            for _ in 0..reps {
                let s = Instant::now();
                project(&x, t, &wm, i, o, None, &mut out);
                best_a = best_a.min(s.elapsed().as_secs_f64());
                for (j, tb) in tbs.iter().enumerate() {
                    let s = Instant::now();
                    packed_linear(&x, t, &p, i, o, &mut out2, *tb);
                    best_b[j] = best_b[j].min(s.elapsed().as_secs_f64());
                }
            }
            let maxd = out
                .iter()
                .zip(&out2)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            println!(
                "t={t} {i}->{o}: project {:.0} GF/s | packed tb64 {:.0} tb256 {:.0} tb2048 {:.0} | maxdiff {maxd:e}",
                flop / best_a / 1e9,
                flop / best_b[0] / 1e9,
                flop / best_b[1] / 1e9,
                flop / best_b[2] / 1e9
            );
        }
    }
}
