//! Elementwise kernels against their CPU twins on a real GPU: embedding.cu (gather, learned positions) vs
//! the embedding step of `Model::forward`, activation.cu vs `ops::activation`, residual.cu vs
//! `ops::add_in_place` / the bias add of `ops::project`. (Sampling runs on the host from f32 logits.)
//!
//! Without a CUDA device every test prints `SKIP: no CUDA device (...)` and passes, unless
//! `ATTNSCOPE_REQUIRE_GPU=1`. `ATTNSCOPE_GPU_SMALL=1` (the compute-sanitizer runs) shrinks the grids.

mod gpu_common;

use attnscope_core::config::Activation;
use attnscope_core::model::ops::{activation, add_in_place, project};
use attnscope_cuda::ops::{self, Grid};
use gpu_common::{Elem, Gpu, gpu_or_skip, max_rel_err, round_to, small, values};

/// `blocks` blocks of `threads` threads: the tests vary the shape to exercise the kernels' stride loops.
fn grid(blocks: usize, threads: u32) -> Grid {
    Grid::Fixed {
        blocks: blocks as u32,
        threads,
    }
}

/// Panics with the launcher's one-line error.
fn ok(r: attnscope_core::Result<()>) {
    r.unwrap_or_else(|e| panic!("{e}"));
}

/// Bit-exact equality (f32 adds and copies are deterministic; 16-bit results are rounded once, to nearest
/// even, on both sides).
fn assert_same(label: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{label}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{label}: element {i}: got {g}, want {w}"
        );
    }
}

fn embedding<E: Elem>(gpu: &Gpu) {
    let (vocab, max_pos) = (50usize, 64usize);
    let cases: &[(usize, u32)] = if small() {
        &[(80, 128), (1000, 1024)]
    } else {
        &[(80, 128), (1000, 128), (1000, 1024)]
    };
    for &(dim, block) in cases {
        let table = round_to::<E>(&values(vocab * dim, dim as u64));
        let wpe = round_to::<E>(&values(max_pos * dim, 7 + dim as u64));
        // The last id is out of range: the kernel writes zeros (the host validates ids before launching).
        let mut ids: Vec<u32> = (0..37u32).map(|i| (i * 7 + 3) % vocab as u32).collect();
        ids.push(vocab as u32 + 3);
        let n = ids.len();
        // Repeated positions (parallel tokens); −1 and max_pos are out of range and add nothing.
        let mut positions: Vec<i64> = (0..n as i64 - 2).map(|i| i - i % 3).collect();
        positions.extend([-1, max_pos as i64]);

        // CPU twin: the embedding step of Model::forward, rounded to E where the kernel stores E.
        let mut want = vec![0.0f32; n * dim];
        for (row, &id) in want.chunks_mut(dim).zip(&ids) {
            if (id as usize) < vocab {
                row.copy_from_slice(&table[id as usize * dim..][..dim]);
            }
        }
        let want_gather = want.clone();
        for (row, &p) in want.chunks_mut(dim).zip(&positions) {
            if (0..max_pos as i64).contains(&p) {
                let src = &wpe[p as usize * dim..][..dim];
                row.iter_mut()
                    .zip(src)
                    .for_each(|(a, b)| *a = E::from_f32(*a + b).to_f32());
            }
        }

        let dtable = gpu.upload_as::<E>(&table);
        let dwpe = gpu.upload_as::<E>(&wpe);
        let dids = gpu.upload(&ids);
        let dpos = gpu.upload(&positions);
        let dx = gpu.upload_as::<E>(&vec![7.0f32; n * dim]); // garbage the gather must overwrite
        let (table_p, ids_p, x_p) = (gpu.ptr(&dtable), gpu.ptr(&dids), gpu.ptr(&dx));
        let g = grid(n, block);
        ok(ops::embedding_gather(
            &gpu.g,
            E::DTYPE,
            table_p,
            ids_p,
            x_p,
            n,
            dim,
            vocab,
            g,
        ));
        let label = format!("gather {} dim {dim} block {block}", E::SUFFIX);
        assert_same(&label, &gpu.download_f32(&dx), &want_gather);

        let (wpe_p, pos_p) = (gpu.ptr(&dwpe), gpu.ptr(&dpos));
        ok(ops::position_add(
            &gpu.g,
            E::DTYPE,
            wpe_p,
            pos_p,
            x_p,
            n,
            dim,
            max_pos,
            g,
        ));
        let label = format!("position_add {} dim {dim} block {block}", E::SUFFIX);
        assert_same(&label, &gpu.download_f32(&dx), &want);
    }
}

#[test]
fn embedding_matches_cpu() {
    let Some(gpu) = gpu_or_skip() else { return };
    embedding::<f32>(&gpu);
    embedding::<half::bf16>(&gpu);
}

const ACTS: [(Activation, &str); 4] = [
    (Activation::Silu, "silu"),
    (Activation::Gelu, "gelu_erf"),
    (Activation::GeluTanh, "gelu_tanh"),
    (Activation::Relu, "relu"),
];

/// Activation inputs: [-8, 8) plus zeros, tiny and saturating values.
fn act_inputs(n: usize, seed: u64) -> Vec<f32> {
    let mut x: Vec<f32> = values(n, seed).iter().map(|v| 8.0 * v).collect();
    let special = [
        0.0, -0.0, 1e-3, -1e-3, 1e-30, -3.0, 20.0, -20.0, 88.0, -88.0, 100.0, -100.0,
    ];
    let k = special.len().min(n);
    x[..k].copy_from_slice(&special[..k]);
    x
}

/// In place `act_<name>_<T>` and gated `act_gate_<name>_<T>` on n values with `blocks` blocks of 256
/// threads (fewer than n/256 exercise the grid-stride loop); returns the worst `max_rel_err`.
fn activations<E: Elem>(gpu: &Gpu, n: usize, blocks: usize, acts: &[(Activation, &str)]) -> f32 {
    let mut worst = 0.0f32;
    for &(act, name) in acts {
        let x = round_to::<E>(&act_inputs(n, 21));
        let up = round_to::<E>(&values(n, 22).iter().map(|v| 3.0 * v).collect::<Vec<_>>());
        // CPU twin, rounded once to E as the kernel stores it.
        let want: Vec<f32> = x
            .iter()
            .map(|&v| E::from_f32(activation(v, act)).to_f32())
            .collect();
        let want_gated: Vec<f32> = up
            .iter()
            .zip(&x)
            .map(|(&u, &g)| E::from_f32(u * activation(g, act)).to_f32())
            .collect();

        let dx = gpu.upload_as::<E>(&x);
        let g = grid(blocks, 256);
        ok(ops::activate(&gpu.g, E::DTYPE, act, gpu.ptr(&dx), n, g));
        let err = max_rel_err(&gpu.download_f32(&dx), &want);
        worst = worst.max(err);
        println!(
            "act_{name}_{} n {n} grid {blocks}: max rel err {err:.3e}",
            E::SUFFIX
        );

        let dgate = gpu.upload_as::<E>(&x);
        let dup = gpu.upload_as::<E>(&up);
        let (gate_p, up_p) = (gpu.ptr(&dgate), gpu.ptr(&dup));
        ok(ops::activate_gated(
            &gpu.g,
            E::DTYPE,
            act,
            gate_p,
            up_p,
            n,
            g,
        ));
        let err = max_rel_err(&gpu.download_f32(&dup), &want_gated);
        worst = worst.max(err);
        println!(
            "act_gate_{name}_{} n {n} grid {blocks}: max rel err {err:.3e}",
            E::SUFFIX
        );
    }
    worst
}

#[test]
fn activations_match_cpu() {
    let Some(gpu) = gpu_or_skip() else { return };
    // f32: |got − want| ≤ 1e-6·(1 + |want|). GELU-erf is the same f64 arithmetic on both sides; SiLU differs
    // by expf ulps; GELU-tanh is f64 with tanh on the GPU but f32 with one exp on the CPU (as transformers'
    // gelu_new), whose absolute error stays below ~5e-7 on these inputs.
    let cases: &[(usize, usize)] = if small() {
        &[(1, 1), (10_007, 3)]
    } else {
        &[(1, 1), (10_007, 3), (10_007, 10_007usize.div_ceil(256))]
    };
    for &(n, grid) in cases {
        let err = activations::<f32>(&gpu, n, grid, &ACTS);
        assert!(
            err <= 1e-6,
            "f32 activations n {n} grid {grid}: error {err}"
        );
    }
    // 16-bit: results within one ulp of the twin's rounding (2^-7 relative for bf16).
    let err = activations::<half::bf16>(&gpu, 4099, 5, &ACTS);
    assert!(err <= 1e-2, "bf16 activations: error {err}");
    let err = activations::<half::f16>(&gpu, 4099, 5, &ACTS[..1]);
    assert!(err <= 1e-3, "f16 silu: error {err}");
}

fn residual<E: Elem>(gpu: &Gpu) {
    let cases: &[(usize, usize)] = if small() {
        &[(1, 1), (9_001, 4)]
    } else {
        &[(1, 1), (9_001, 4), (9_001, 36)]
    };
    for &(n, blocks) in cases {
        let x = round_to::<E>(&values(n, 31));
        let a = round_to::<E>(&values(n, 32));
        let bb = round_to::<E>(&values(n, 33));
        let round =
            |v: Vec<f32>| -> Vec<f32> { v.iter().map(|&x| E::from_f32(x).to_f32()).collect() };
        // CPU twins: x += y; the parallel residual x += (a + b), the sum rounded first (CpuBackend::add2).
        let mut want1 = x.clone();
        add_in_place(&mut want1, &a);
        let want1 = round(want1);
        let mut sum = bb.clone();
        add_in_place(&mut sum, &a);
        let mut want2 = x.clone();
        add_in_place(&mut want2, &sum);
        let want2 = round(want2);

        let g = grid(blocks, 256);
        let dx = gpu.upload_as::<E>(&x);
        let da = gpu.upload_as::<E>(&a);
        let db = gpu.upload_as::<E>(&bb);
        let (a_p, b_p) = (gpu.ptr(&da), gpu.ptr(&db));
        ok(ops::residual_add(&gpu.g, E::DTYPE, gpu.ptr(&dx), a_p, n, g));
        let label = format!("residual_add {} n {n} grid {blocks}", E::SUFFIX);
        assert_same(&label, &gpu.download_f32(&dx), &want1);

        let dx = gpu.upload_as::<E>(&x);
        ok(ops::residual_add2(
            &gpu.g,
            E::DTYPE,
            gpu.ptr(&dx),
            a_p,
            b_p,
            n,
            g,
        ));
        let label = format!("residual_add2 {} n {n} grid {blocks}", E::SUFFIX);
        assert_same(&label, &gpu.download_f32(&dx), &want2);
    }
    // Bias add: the CPU twin is `project` with an identity weight (x·I is exact), whose bias add is the twin.
    for (rows, dim, blocks) in [(5usize, 80usize, 1usize), (37, 80, 3), (37, 80, 12)] {
        let x = round_to::<E>(&values(rows * dim, 34));
        let bias = round_to::<E>(&values(dim, 35));
        let mut eye = vec![0.0f32; dim * dim];
        eye.iter_mut().step_by(dim + 1).for_each(|v| *v = 1.0);
        let eye = eye.into();
        let mut want = Vec::new();
        project(&x, rows, &eye, dim, dim, Some(&bias), &mut want);
        let want: Vec<f32> = want.iter().map(|&v| E::from_f32(v).to_f32()).collect();
        let dx = gpu.upload_as::<E>(&x);
        let dbias = gpu.upload_as::<E>(&bias);
        let (x_p, bias_p) = (gpu.ptr(&dx), gpu.ptr(&dbias));
        let g = grid(blocks, 256);
        ok(ops::bias_add(&gpu.g, E::DTYPE, x_p, bias_p, rows, dim, g));
        let label = format!("bias_add {} rows {rows} dim {dim} grid {blocks}", E::SUFFIX);
        assert_same(&label, &gpu.download_f32(&dx), &want);
    }
}

#[test]
fn residual_matches_cpu() {
    let Some(gpu) = gpu_or_skip() else { return };
    residual::<f32>(&gpu);
    residual::<half::bf16>(&gpu);
}
