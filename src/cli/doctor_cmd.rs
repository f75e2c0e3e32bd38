//! `attnscope doctor`: prints what the CUDA backend finds (driver, GPUs, NVRTC, cuBLAS, the chosen CUDA major,
//! the kernel cache), one line each; fails with the reason when no GPU is usable.

use super::DoctorArgs;
use attnscope_core::{Error, Result};
use std::time::Instant;

/// Prints the report on stdout; an error (exit 1) when GPU 0 is not usable with a consistent set. With
/// `--compile-kernels`, then opens GPU 0, which compiles (or loads from the cache) every kernel.
pub fn doctor(args: &DoctorArgs) -> Result<()> {
    let report = attnscope_cuda::doctor::doctor();
    for line in &report.lines {
        println!("{line}");
    }
    let summary = report.verdict.map_err(Error::cuda)?;
    println!("ok: {summary}");
    if args.compile_kernels {
        let start = Instant::now();
        let g = attnscope_cuda::GpuContext::new(0)?;
        println!(
            "kernels: {} loaded for {} ({}) in {:.1} s",
            g.kernel_count(),
            g.arch,
            g.name,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
