//! `attnscope bench-attention`: flags → `bench::attention` → table on stdout and optional JSON.

use crate::cli::BenchAttentionArgs;
use crate::cli::bench_cmd::check_json_target;
use attnscope_bench::attention::{
    AttentionBenchRow, AttentionBenchSettings, FLOPS_FORMULA, SCHEMA, run_cpu, run_gpu,
};
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_cuda::bench::AttentionBenchShape;
use attnscope_cuda::{CudaStatus, DeviceRequest, GpuContext, GpuDtype, probe};
use serde::Serialize;

/// The JSON document ("attnscope-attn-bench/1").
#[derive(Serialize)]
struct Report {
    schema: &'static str,
    engine: &'static str,
    engine_version: &'static str,
    device: DeviceRecord,
    settings: SettingsRecord,
    results: Vec<AttentionBenchRow>,
    not_measured: Vec<String>,
}

#[derive(Serialize)]
struct DeviceRecord {
    kind: &'static str,
    name: String,
    driver: Option<String>,
}

#[derive(Serialize)]
struct SettingsRecord {
    warmup: usize,
    repeats: usize,
    seed: u64,
    causal: bool,
    timing: &'static str,
    flops_formula: &'static str,
}

/// Runs the subcommand.
pub fn bench_attention(args: BenchAttentionArgs) -> Result<()> {
    let device = DeviceRequest::parse(&args.device)?;
    let dtype = GpuDtype::parse(&args.dtype)?;
    check_args(&args)?;
    let settings = AttentionBenchSettings {
        lengths: args.lengths.clone(),
        shape: AttentionBenchShape {
            n_heads: args.heads,
            n_kv_heads: args.kv_heads,
            head_dim: args.head_dim,
            dtype,
            warmup: args.warmup,
            repeats: args.repeats,
            seed: args.seed,
        },
        device,
    };
    let (results, not_measured, record, timing) = measure(&args, &settings, device)?;
    println!(
        "attention kernel: {} heads / {} kv heads, head_dim {}, causal, batch 1 on {}",
        args.heads, args.kv_heads, args.head_dim, record.name
    );
    println!(
        "{:>6}  {:<20} {:>6} {:>10} {:>10} {:>10} {:>9}",
        "T", "impl", "dtype", "median ms", "p10 ms", "p90 ms", "TFLOP/s"
    );
    for r in &results {
        println!(
            "{:>6}  {:<20} {:>6} {:>10.3} {:>10.3} {:>10.3} {:>9.2}",
            r.t, r.implementation, r.dtype, r.median_ms, r.p10_ms, r.p90_ms, r.tflops
        );
    }
    for n in &not_measured {
        println!("not measured: {n}");
    }
    if let Some(json) = &args.json {
        let report = Report {
            schema: SCHEMA,
            engine: "attnscope",
            engine_version: env!("CARGO_PKG_VERSION"),
            device: record,
            settings: SettingsRecord {
                warmup: args.warmup,
                repeats: args.repeats,
                seed: args.seed,
                causal: true,
                timing,
                flops_formula: FLOPS_FORMULA,
            },
            results,
            not_measured,
        };
        attnscope_io::write_json_atomic(json, &report)?;
        println!("wrote {}", json.display());
    }
    Ok(())
}

/// Rejects flag values that cannot be measured, before any work.
fn check_args(args: &BenchAttentionArgs) -> Result<()> {
    if args.lengths.is_empty() || args.lengths.contains(&0) {
        return Err(Error::input("--t: lengths must be at least 1"));
    }
    if args.heads == 0 || args.kv_heads == 0 || !args.heads.is_multiple_of(args.kv_heads) {
        return Err(Error::input(format!(
            "--heads {} must be a positive multiple of --kv-heads {}",
            args.heads, args.kv_heads
        )));
    }
    if args.head_dim == 0 || args.head_dim > 256 {
        return Err(Error::input("--head-dim: must be between 1 and 256"));
    }
    if args.repeats == 0 {
        return Err(Error::input("--repeats: must be at least 1"));
    }
    if args.max_weights_gib.is_nan() || args.max_weights_gib < 0.0 {
        return Err(Error::input("--max-weights-gib: must be a number >= 0"));
    }
    if let Some(json) = &args.json {
        check_json_target(json)?;
    }
    Ok(())
}

/// The rows of every implementation at every length on the device `device` names, with what was not
/// measured, the device record and how time was taken.
fn measure(
    args: &BenchAttentionArgs,
    settings: &AttentionBenchSettings,
    device: DeviceRequest,
) -> Result<(
    Vec<AttentionBenchRow>,
    Vec<String>,
    DeviceRecord,
    &'static str,
)> {
    let ordinal = match device {
        DeviceRequest::Cpu => None,
        DeviceRequest::Auto => probe().is_available().then_some(0),
        DeviceRequest::Cuda(n) => Some(n),
    };
    Ok(match ordinal {
        None => (
            run_cpu(settings),
            Vec::new(),
            DeviceRecord {
                kind: "cpu",
                name: format!("CPU ({} threads)", rayon::current_num_threads()),
                driver: None,
            },
            "wall clock around each call",
        ),
        Some(n) => {
            let g = GpuContext::shared(n)
                .map_err(|e| Error::cuda(format!("--device cuda:{n}: {e}")))?;
            let max_bytes = (args.max_weights_gib * (1u64 << 30) as f64) as usize;
            let (rows, notes) = run_gpu(&g, settings, max_bytes)?;
            let driver = match probe() {
                CudaStatus::Available {
                    driver_version: (a, b),
                    ..
                } => Some(format!("CUDA {a}.{b}")),
                CudaStatus::Unavailable(_) => None,
            };
            (
                rows,
                notes,
                DeviceRecord {
                    kind: "cuda",
                    name: g.name.clone(),
                    driver,
                },
                "CUDA events around each call",
            )
        }
    })
}
