//! The GPU side of the whole-model tests: whether a device is there (or a visible SKIP), and moving a model
//! onto it through the job API's placement, a long case with parallel groups, and comparing two captures'
//! statistics.

use super::Case;
use attnscope_core::capture::{HeadStats, SequenceResult};
use attnscope_core::model::Model;
use attnscope_core::slots::Visibility;
use attnscope_cuda::{CudaStatus, DeviceRequest, GpuDtype, probe};

/// Whether a GPU is present; prints SKIP (or panics under ATTNSCOPE_REQUIRE_GPU=1) when not.
pub fn gpu_present() -> bool {
    match probe() {
        CudaStatus::Available { .. } => true,
        CudaStatus::Unavailable(reason) => {
            if std::env::var("ATTNSCOPE_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("ATTNSCOPE_REQUIRE_GPU=1 but no CUDA device: {reason}");
            }
            println!("SKIP: no CUDA device ({reason})");
            false
        }
    }
}

/// The fixture `tests/fixtures/<name>` loaded twice: on the CPU, and moved to GPU 0 in `dtype`.
pub fn cpu_and_gpu(name: &str, dtype: GpuDtype) -> (Model, Model) {
    let dir = super::repo().join("tests/fixtures").join(name);
    let cpu = Model::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut gpu = Model::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    on_gpu(&mut gpu, dtype);
    (cpu, gpu)
}

/// Moves a model to GPU 0 in `dtype`.
pub fn on_gpu(model: &mut Model, dtype: GpuDtype) {
    let p = attnscope_job::place(model, DeviceRequest::Cuda(0), dtype)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.device, "cuda:0");
}

/// How close two statistics must be: |x − y| ≤ abs + rel·|y| (y the reference); sums over rows (received,
/// distance) scale `abs` with the number of rows.
#[derive(Clone, Copy, Debug)]
pub struct Close {
    pub abs: f64,
    pub rel: f64,
}

impl From<f64> for Close {
    fn from(abs: f64) -> Close {
        Close { abs, rel: 0.0 }
    }
}

impl Close {
    fn ok(self, x: f64, y: f64, terms: usize) -> bool {
        (x - y).abs() <= self.abs * terms as f64 + self.rel * y.abs()
    }
}

/// Every statistic of two captures (`b` the reference), to `tol`.
pub fn assert_stats_close(
    a: &SequenceResult,
    b: &SequenceResult,
    tol: impl Into<Close>,
    label: &str,
) {
    let tol = tol.into();
    assert_eq!(a.layers.len(), b.layers.len(), "{label}: layers");
    for (la, lb) in a.layers.iter().zip(&b.layers) {
        assert_eq!(la.heads, lb.heads);
        for ((h, sa), sb) in la.heads.iter().zip(&la.stats).zip(&lb.stats) {
            let at = format!("{label} layer {} head {h}", la.layer);
            stats_close(sa, sb, tol, &at);
        }
    }
}

fn stats_close(a: &HeadStats, b: &HeadStats, tol: Close, at: &str) {
    let close = |x: f64, y: f64, what: &str| {
        assert!(tol.ok(x, y, 1), "{at}: {what} {x} vs {y}");
    };
    assert_eq!(a.rows.len(), b.rows.len(), "{at}: rows");
    for (i, (ra, rb)) in a.rows.iter().zip(&b.rows).enumerate() {
        close(
            ra.entropy as f64,
            rb.entropy as f64,
            &format!("row {i} entropy"),
        );
        close(
            ra.max_weight as f64,
            rb.max_weight as f64,
            &format!("row {i} max"),
        );
        close(
            ra.sink_mass as f64,
            rb.sink_mass as f64,
            &format!("row {i} sink"),
        );
        close(
            ra.prev_mass as f64,
            rb.prev_mass as f64,
            &format!("row {i} prev"),
        );
        close(
            ra.self_mass as f64,
            rb.self_mass as f64,
            &format!("row {i} self"),
        );
        assert_eq!(
            ra.group_mass.is_some(),
            rb.group_mass.is_some(),
            "{at} row {i}"
        );
        if let (Some(x), Some(y)) = (ra.group_mass, rb.group_mass) {
            close(x as f64, y as f64, &format!("row {i} group"));
        }
    }
    for (k, (x, y)) in a.received_sum.iter().zip(&b.received_sum).enumerate() {
        // A sum over up to T rows: scale the tolerance with the number of terms.
        assert!(
            tol.ok(*x, *y, a.rows.len()),
            "{at}: received[{k}] {x} vs {y} (tol ×{})",
            a.rows.len()
        );
    }
    for (d, (x, y)) in a.distance_mass.iter().zip(&b.distance_mass).enumerate() {
        assert!(
            tol.ok(*x, *y, a.rows.len()),
            "{at}: distance[{d}] {x} vs {y}"
        );
    }
    assert_eq!(a.steps.len(), b.steps.len(), "{at}: steps");
    for (sa, sb) in a.steps.iter().zip(&b.steps) {
        assert_eq!(sa.slot, sb.slot);
        close(
            sa.mass_prompt as f64,
            sb.mass_prompt as f64,
            "step prompt mass",
        );
        close(
            sa.mass_generated as f64,
            sb.mass_generated as f64,
            "step generated mass",
        );
        close(
            sa.mass_parallel as f64,
            sb.mass_parallel as f64,
            "step parallel mass",
        );
        assert_eq!((sa.n_prompt, sa.n_parallel), (sb.n_prompt, sb.n_parallel));
    }
}

/// A long prompt for stories260K / the fixtures: T > 8 so the prefill uses the reduction route.
pub fn long_case(model: &Model, vis: Visibility) -> Case {
    let t = 150;
    let ids: Vec<u32> = (0..t)
        .map(|i| ((i * 37 + 11) % model.cfg.vocab_size) as u32)
        .collect();
    // A parallel group of 3 slots every 10 slots, sharing one position.
    let mut positions = Vec::new();
    let mut groups = Vec::new();
    let mut pos = -1i64;
    for i in 0..t {
        let in_group = i % 10 >= 4 && i % 10 <= 6;
        if !(in_group && i % 10 != 4) {
            pos += 1;
        }
        positions.push(pos);
        groups.push(if in_group { (i / 10) as i32 } else { -1 });
    }
    Case {
        name: "long".into(),
        ids,
        positions,
        groups,
        visibility: vis,
    }
}
