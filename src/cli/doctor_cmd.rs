//! `attnscope doctor`: prints what the CUDA backend finds (driver, GPUs, NVRTC, cuBLAS, the chosen CUDA major,
//! the kernel cache), one line each; fails with the reason when no GPU is usable.

use attnscope_core::{Error, Result};

/// Prints the report on stdout; an error (exit 1) when GPU 0 is not usable with a consistent set.
pub fn doctor() -> Result<()> {
    let report = attnscope_cuda::doctor::doctor();
    for line in &report.lines {
        println!("{line}");
    }
    match report.verdict {
        Ok(summary) => {
            println!("ok: {summary}");
            Ok(())
        }
        Err(why) => Err(Error::cuda(why)),
    }
}
