//! Kernels against their CPU twins on a real GPU: norm.cu vs `ops::norm_row`, rope.cu vs `Rope::apply`,
//! attention_prefill.cu (exact SIMT f32 path) vs `attention::attention` + `HeadRecorder` statistics.
//!
//! `ATTNSCOPE_GPU_SMALL=1` (the compute-sanitizer runs) shrinks the grids.
//!
//! Without a CUDA device every test prints `SKIP: no CUDA device (...)` and passes, unless
//! `ATTNSCOPE_REQUIRE_GPU=1` (set by scripts/gpu-validate.sh), which turns the skip into a failure.

mod gpu_common;

use attnscope_core::capture::{CaptureSpec, HeadRecorder};
use attnscope_core::config::{NormKind, RopeConfig, RopeScaling};
use attnscope_core::model::attention::{AttentionInput, attention};
use attnscope_core::model::ops::norm_row;
use attnscope_core::model::rope::Rope;
use attnscope_core::slots::AttentionMask;
use attnscope_core::slots::Visibility;
use attnscope_core::weights::Norm;
use attnscope_cuda::GpuDtype;
use attnscope_cuda::ops::{self, AttentionCall};
use gpu_common::attention::slots;
use gpu_common::{Gpu, gpu_or_skip, max_rel_err, small, values};

#[test]
fn norm_matches_cpu() {
    let Some(gpu) = gpu_or_skip() else { return };
    let shapes: &[(usize, usize)] = if small() {
        &[(1, 64), (5, 1000)]
    } else {
        &[(1, 64), (37, 80), (5, 1000), (3, 4096)]
    };
    for &(rows, dim) in shapes {
        let x = values(rows * dim, 1 + dim as u64);
        let n = Norm {
            weight: values(dim, 2).iter().map(|v| 1.0 + v).collect(),
            bias: Some(values(dim, 3)),
        };
        for kind in [NormKind::RmsNorm, NormKind::LayerNorm] {
            let eps = 1e-5f32;
            let mut want = vec![0.0f32; rows * dim];
            for (o, r) in want.chunks_mut(dim).zip(x.chunks(dim)) {
                norm_row(r, &n, kind, eps, o);
            }
            let dx = gpu.upload(&x);
            let dw = gpu.upload(&n.weight);
            let db = gpu.upload(n.bias.as_deref().unwrap_or(&[]));
            let dout = gpu.zeros::<f32>(rows * dim);
            let bias = if kind == NormKind::LayerNorm {
                gpu.ptr(&db)
            } else {
                0
            };
            let (xp, wp, op) = (gpu.ptr(&dx), gpu.ptr(&dw), gpu.ptr(&dout));
            ops::norm(
                &gpu.g,
                GpuDtype::F32,
                kind,
                xp,
                wp,
                bias,
                op,
                rows,
                dim,
                eps,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let got = gpu.download(&dout);
            let err = max_rel_err(&got, &want);
            assert!(err < 1e-5, "{kind:?} rows {rows} dim {dim}: error {err}");
        }
    }
}

#[test]
fn rope_matches_cpu() {
    let Some(gpu) = gpu_or_skip() else { return };
    let llama3 = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192.0,
    };
    let head_dims: &[usize] = if small() { &[80] } else { &[64, 80, 128] };
    for &head_dim in head_dims {
        for rotary_dim in [head_dim, head_dim / 4 * 2] {
            for scaling in [
                RopeScaling::None,
                RopeScaling::Linear { factor: 4.0 },
                llama3.clone(),
            ] {
                let rope = Rope::new(&RopeConfig {
                    theta: 500000.0,
                    rotary_dim,
                    scaling,
                });
                let (t, n_heads) = (67usize, 3usize);
                // Positions with repeats (parallel tokens) and large values.
                let positions: Vec<i64> = (0..t as i64)
                    .map(|i| if i % 5 == 3 { i - 1 } else { i * 97 })
                    .collect();
                let x = values(t * n_heads * head_dim, head_dim as u64);
                let mut want = x.clone();
                rope.apply(&mut want, &positions, n_heads, head_dim);
                let dx = gpu.upload(&x);
                let dpos = gpu.upload(&positions);
                let dfreq = gpu.upload(&rope.inv_freq);
                let (xp, pp, fp) = (gpu.ptr(&dx), gpu.ptr(&dpos), gpu.ptr(&dfreq));
                let row = n_heads * head_dim;
                ops::rope(
                    &gpu.g,
                    GpuDtype::F32,
                    xp,
                    pp,
                    fp,
                    t,
                    n_heads,
                    head_dim,
                    rotary_dim,
                    row,
                )
                .unwrap_or_else(|e| panic!("{e}"));
                let got = gpu.download(&dx);
                let err = max_rel_err(&got, &want);
                assert!(err < 2e-6, "hd {head_dim} rotary {rotary_dim}: error {err}");
            }
        }
    }
}

/// One attention configuration of the grid.
#[derive(Clone, Copy, Debug)]
struct Case {
    t: usize,
    q_start: usize,
    head_dim: usize,
    n_heads: usize,
    n_kv_heads: usize,
    isolated: bool,
    window: Option<usize>,
}

#[test]
fn attention_prefill_simt_f32_matches_cpu() {
    let Some(gpu) = gpu_or_skip() else { return };
    let mut cases = Vec::new();
    // The reduced grid (ATTNSCOPE_GPU_SMALL=1) is the one compute-sanitizer runs.
    let (head_dims, gqa, ts): (&[usize], &[(usize, usize)], &[usize]) = if small() {
        (&[64, 128], &[(4, 2)], &[1, 17, 129])
    } else {
        (
            &[64, 80, 128],
            &[(4, 4), (4, 2), (6, 1)],
            &[1, 17, 64, 129, 1000],
        )
    };
    for &head_dim in head_dims {
        for &(n_heads, n_kv_heads) in gqa {
            for &t in ts {
                for (isolated, window) in [(false, None), (true, None), (true, Some(16))] {
                    cases.push(Case {
                        t,
                        q_start: 0,
                        head_dim,
                        n_heads,
                        n_kv_heads,
                        isolated,
                        window,
                    });
                }
            }
        }
    }
    // Head dims above 180 need more than 48 KiB of dynamic shared memory ((68·hd + 32)·4 bytes): the
    // launcher raises the kernel's limit (raise_shared_limit in ops/attention.rs) before launching.
    for (head_dim, t) in [(192usize, 129usize), (256, 17), (256, 129)] {
        cases.push(Case {
            t,
            q_start: 0,
            head_dim,
            n_heads: 4,
            n_kv_heads: 2,
            isolated: true,
            window: None,
        });
    }
    // Chunked prefill: the first half of the slots is already in the cache.
    cases.push(Case {
        t: 129,
        q_start: 64,
        head_dim: 64,
        n_heads: 4,
        n_kv_heads: 2,
        isolated: true,
        window: None,
    });
    for case in cases {
        check_prefill(&gpu, case);
    }
}

fn check_prefill(gpu: &Gpu, c: Case) {
    let (hd, nh, nkv) = (c.head_dim, c.n_heads, c.n_kv_heads);
    let n_keys = c.t;
    let n_new = c.t - c.q_start;
    let slot_info = slots(n_keys);
    let visibility = if c.isolated {
        Visibility::Isolated
    } else {
        Visibility::Visible
    };
    let mask = AttentionMask {
        slots: &slot_info,
        visibility,
        sliding_window: c.window,
    };
    let q = values(n_new * nh * hd, 11 + c.t as u64);
    // Larger keys make sharper rows, so the argmax is meaningful.
    let k: Vec<f32> = values(n_keys * nkv * hd, 12)
        .iter()
        .map(|v| 4.0 * v)
        .collect();
    let v = values(n_keys * nkv * hd, 13);
    let scale = 1.0 / (hd as f32).sqrt();

    // CPU twin.
    let inp = AttentionInput {
        q: &q,
        keys: &k,
        values: &v,
        q_start: c.q_start,
        n_new,
        shape: attnscope_core::model::backend::AttentionShape {
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
            scale,
        },
        mask,
    };
    let spec = CaptureSpec::default();
    let mut recs: Vec<HeadRecorder> = (0..nh).map(|_| HeadRecorder::new(&spec, n_keys)).collect();
    let mut want_o = vec![0.0f32; n_new * nh * hd];
    attention(&inp, &mut want_o, Some(&mut recs));
    let stats: Vec<_> = recs
        .into_iter()
        .map(|r| r.finish(n_keys).1.expect("stats recorded"))
        .collect();

    // GPU.
    let groups: Vec<i32> = slot_info.iter().map(|s| s.group).collect();
    let dq = gpu.upload(&q);
    let dk = gpu.upload(&k);
    let dv = gpu.upload(&v);
    let dg = gpu.upload(&groups);
    let dout = gpu.zeros::<f32>(n_new * nh * hd);
    let dlse = gpu.zeros::<f32>(nh * n_new);
    let dent = gpu.zeros::<f32>(nh * n_new);
    let dmax = gpu.zeros::<f32>(nh * n_new);
    let darg = gpu.zeros::<u32>(nh * n_new);
    let call = AttentionCall {
        dtype: GpuDtype::F32,
        q: gpu.ptr(&dq),
        q_stride: nh * hd,
        k: gpu.ptr(&dk),
        v: gpu.ptr(&dv),
        kv_stride: nkv * hd,
        o: gpu.ptr(&dout),
        o_stride: nh * hd,
        lse: gpu.ptr(&dlse),
        entropy: gpu.ptr(&dent),
        max_weight: gpu.ptr(&dmax),
        argmax: gpu.ptr(&darg),
        groups: gpu.ptr(&dg),
        isolated: c.isolated,
        window: c.window.unwrap_or(0),
        q_start: c.q_start,
        n_new,
        n_heads: nh,
        n_kv_heads: nkv,
        head_dim: hd,
        scale,
    };
    ops::attention_prefill_simt(&gpu.g, &call).unwrap_or_else(|e| panic!("{c:?}: {e}"));
    let got_o = gpu.download(&dout);
    let got_lse = gpu.download(&dlse);
    let got_ent = gpu.download(&dent);
    let got_max = gpu.download(&dmax);
    let got_arg = gpu.download(&darg);

    let err = max_rel_err(&got_o, &want_o);
    assert!(err < 1e-5, "{c:?}: output error {err}");
    for h in 0..nh {
        let kvh = h / (nh / nkv);
        for i in 0..n_new {
            let slot = c.q_start + i;
            // lse from a naive f64 reference.
            let qrow = &q[i * nh * hd + h * hd..][..hd];
            let scores: Vec<f64> = (0..=slot)
                .filter(|&j| mask.allows(slot, j))
                .map(|j| {
                    let krow = &k[j * nkv * hd + kvh * hd..][..hd];
                    let dot: f32 = qrow.iter().zip(krow).map(|(a, b)| a * b).sum();
                    (scale * dot) as f64
                })
                .collect();
            let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = mx + scores.iter().map(|s| (s - mx).exp()).sum::<f64>().ln();
            let gi = h * n_new + i;
            assert!(
                (got_lse[gi] as f64 - lse).abs() < 1e-4 * (1.0 + lse.abs()),
                "{c:?} head {h} row {i}: lse {} vs {lse}",
                got_lse[gi]
            );
            let row = &stats[h].rows[slot];
            assert!(
                (got_ent[gi] - row.entropy).abs() < 1e-4,
                "{c:?} head {h} row {i}: entropy {} vs {}",
                got_ent[gi],
                row.entropy
            );
            assert!(
                (got_max[gi] - row.max_weight).abs() < 1e-5,
                "{c:?} head {h} row {i}: max weight {} vs {}",
                got_max[gi],
                row.max_weight
            );
            // Exact ties of rounded probabilities may legitimately pick another slot: accept any slot
            // whose CPU probability equals the max weight to within rounding.
            if got_arg[gi] != row.argmax {
                let w = |j: usize| {
                    let krow = &k[j * nkv * hd + kvh * hd..][..hd];
                    let dot: f32 = qrow.iter().zip(krow).map(|(a, b)| a * b).sum();
                    ((scale * dot) as f64 - lse).exp() as f32
                };
                let j = got_arg[gi] as usize;
                assert!(
                    j <= slot && mask.allows(slot, j) && (w(j) - row.max_weight).abs() < 1e-6,
                    "{c:?} head {h} row {i}: argmax {} vs {}",
                    got_arg[gi],
                    row.argmax
                );
            }
        }
    }
}
