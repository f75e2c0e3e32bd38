//! Elementwise kernels against their CPU twins on a real GPU: embedding.cu (gather, learned positions) vs
//! the embedding step of `Model::forward`, activation.cu vs `ops::activation`, residual.cu vs
//! `ops::add_in_place` / the bias add of `ops::project`. (Sampling runs on the host from f32 logits.)
//!
//! Without a CUDA device every test prints `SKIP: no CUDA device (...)` and passes, unless
//! `ATTNSCOPE_REQUIRE_GPU=1`.

mod gpu_common;

use attnscope_core::config::Activation;
use attnscope_core::model::ops::{activation, add_in_place, project};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use gpu_common::{Elem, Gpu, gpu_or_skip, max_rel_err, round_to, values};

fn cfg(grid: usize, block: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid as u32, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
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
    let m = gpu.module("embedding.cu");
    let gather = gpu.function(&m, &format!("embedding_gather_{}", E::SUFFIX));
    let pos_add = gpu.function(&m, &format!("position_add_{}", E::SUFFIX));
    let (vocab, max_pos) = (50usize, 64usize);
    for (dim, block) in [(80usize, 128u32), (1000, 128), (1000, 1024)] {
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
        let mut dx = gpu.upload_as::<E>(&vec![7.0f32; n * dim]); // garbage the gather must overwrite
        let ints = [n, dim, vocab].map(|x| x as i32);
        let mut b = gpu.stream.launch_builder(&gather);
        b.arg(&dtable).arg(&dids).arg(&mut dx);
        b.arg(&ints[0]).arg(&ints[1]).arg(&ints[2]);
        // SAFETY: arguments follow `embedding_gather_<T>` in kernels/embedding.cu: table vocab·dim, ids n,
        // out n·dim; grid (n), block a multiple of 32 ≤ 1024.
        unsafe { b.launch(cfg(n, block)) }.expect("launch gather");
        let label = format!("gather {} dim {dim} block {block}", E::SUFFIX);
        assert_same(&label, &gpu.download_f32(&dx), &want_gather);

        let max_pos_i = max_pos as i32;
        let mut b = gpu.stream.launch_builder(&pos_add);
        b.arg(&dwpe).arg(&dpos).arg(&mut dx);
        b.arg(&ints[0]).arg(&ints[1]).arg(&max_pos_i);
        // SAFETY: arguments follow `position_add_<T>`: table max_pos·dim, positions n int64, x n·dim.
        unsafe { b.launch(cfg(n, block)) }.expect("launch position_add");
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

/// In place `act_<name>_<T>` and gated `act_gate_<name>_<T>` on n values with `grid` blocks of 256 threads
/// (a grid smaller than n/256 exercises the grid-stride loop); returns the worst `max_rel_err`.
fn activations<E: Elem>(gpu: &Gpu, n: usize, grid: usize, acts: &[(Activation, &str)]) -> f32 {
    let m = gpu.module("activation.cu");
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

        let f = gpu.function(&m, &format!("act_{name}_{}", E::SUFFIX));
        let mut dx = gpu.upload_as::<E>(&x);
        let n_i = n as i64;
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&mut dx).arg(&n_i);
        // SAFETY: arguments follow `act_<name>_<T>` in kernels/activation.cu; x holds n values.
        unsafe { b.launch(cfg(grid, 256)) }.expect("launch act");
        let err = max_rel_err(&gpu.download_f32(&dx), &want);
        worst = worst.max(err);
        println!(
            "act_{name}_{} n {n} grid {grid}: max rel err {err:.3e}",
            E::SUFFIX
        );

        let f = gpu.function(&m, &format!("act_gate_{name}_{}", E::SUFFIX));
        let dgate = gpu.upload_as::<E>(&x);
        let mut dup = gpu.upload_as::<E>(&up);
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&dgate).arg(&mut dup).arg(&n_i);
        // SAFETY: arguments follow `act_gate_<name>_<T>`; gate and up hold n values.
        unsafe { b.launch(cfg(grid, 256)) }.expect("launch act_gate");
        let err = max_rel_err(&gpu.download_f32(&dup), &want_gated);
        worst = worst.max(err);
        println!(
            "act_gate_{name}_{} n {n} grid {grid}: max rel err {err:.3e}",
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
    for (n, grid) in [
        (1usize, 1usize),
        (10_007, 3),
        (10_007, 10_007usize.div_ceil(256)),
    ] {
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
    let m = gpu.module("residual.cu");
    for (n, grid) in [(1usize, 1usize), (9_001, 4), (9_001, 36)] {
        let x = round_to::<E>(&values(n, 31));
        let a = round_to::<E>(&values(n, 32));
        let bb = round_to::<E>(&values(n, 33));
        let round =
            |v: Vec<f32>| -> Vec<f32> { v.iter().map(|&x| E::from_f32(x).to_f32()).collect() };
        // CPU twins: x += y; parallel residual as forward.rs does it (mlp += attn, then x += mlp).
        let mut want1 = x.clone();
        add_in_place(&mut want1, &a);
        let want1 = round(want1);
        let mut sum = bb.clone();
        add_in_place(&mut sum, &a);
        let mut want2 = x.clone();
        add_in_place(&mut want2, &sum);
        let want2 = round(want2);

        let n_i = n as i64;
        let f = gpu.function(&m, &format!("residual_add_{}", E::SUFFIX));
        let mut dx = gpu.upload_as::<E>(&x);
        let da = gpu.upload_as::<E>(&a);
        let db = gpu.upload_as::<E>(&bb);
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&mut dx).arg(&da).arg(&n_i);
        // SAFETY: arguments follow `residual_add_<T>` in kernels/residual.cu; x and y hold n values.
        unsafe { b.launch(cfg(grid, 256)) }.expect("launch residual_add");
        let label = format!("residual_add {} n {n} grid {grid}", E::SUFFIX);
        assert_same(&label, &gpu.download_f32(&dx), &want1);

        let f = gpu.function(&m, &format!("residual_add2_{}", E::SUFFIX));
        let mut dx = gpu.upload_as::<E>(&x);
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&mut dx).arg(&da).arg(&db).arg(&n_i);
        // SAFETY: arguments follow `residual_add2_<T>`; x, a and b hold n values.
        unsafe { b.launch(cfg(grid, 256)) }.expect("launch residual_add2");
        let label = format!("residual_add2 {} n {n} grid {grid}", E::SUFFIX);
        assert_same(&label, &gpu.download_f32(&dx), &want2);
    }
    // Bias add: the CPU twin is `project` with an identity weight (x·I is exact), whose bias add is the twin.
    for (rows, dim, grid) in [(5usize, 80usize, 1usize), (37, 80, 3), (37, 80, 12)] {
        let x = round_to::<E>(&values(rows * dim, 34));
        let bias = round_to::<E>(&values(dim, 35));
        let mut eye = vec![0.0f32; dim * dim];
        eye.iter_mut().step_by(dim + 1).for_each(|v| *v = 1.0);
        let mut want = Vec::new();
        project(&x, rows, &eye, dim, dim, Some(&bias), &mut want);
        let want: Vec<f32> = want.iter().map(|&v| E::from_f32(v).to_f32()).collect();
        let f = gpu.function(&m, &format!("bias_add_{}", E::SUFFIX));
        let mut dx = gpu.upload_as::<E>(&x);
        let dbias = gpu.upload_as::<E>(&bias);
        let (rows_i, dim_i) = (rows as i64, dim as i32);
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&mut dx).arg(&dbias).arg(&rows_i).arg(&dim_i);
        // SAFETY: arguments follow `bias_add_<T>`; x holds rows·dim values, bias dim.
        unsafe { b.launch(cfg(grid, 256)) }.expect("launch bias_add");
        let label = format!("bias_add {} rows {rows} dim {dim} grid {grid}", E::SUFFIX);
        assert_same(&label, &gpu.download_f32(&dx), &want);
    }
}

#[test]
fn residual_matches_cpu() {
    let Some(gpu) = gpu_or_skip() else { return };
    residual::<f32>(&gpu);
    residual::<half::bf16>(&gpu);
}
