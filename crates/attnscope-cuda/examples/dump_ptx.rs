//! Writes the PTX of kernel files through the engine's own NVRTC compile path (`compile_kernel`), for
//! scripts/sass-report.sh: `cargo run -p attnscope-cuda --example dump_ptx -- OUT_DIR ARCH [FILE.cu ...]`
//! writes `OUT_DIR/<file stem>.<arch>.ptx` for each file (every kernel file when none is named). With
//! `DUMP_PTX_FROM_DISK=1` the sources are read from `kernels/` instead of the copies embedded at build time
//! (to iterate on a kernel without rebuilding).

use attnscope_cuda::{compile_kernel, kernel_sources};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(out), Some(arch)) = (args.first(), args.get(1)) else {
        eprintln!("usage: dump_ptx OUT_DIR ARCH [FILE.cu ...]");
        return ExitCode::from(2);
    };
    let wanted = &args[2..];
    if let Err(e) = std::fs::create_dir_all(out) {
        eprintln!("dump_ptx: creating {out}: {e}");
        return ExitCode::FAILURE;
    }
    for (name, src) in kernel_sources() {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == name) {
            continue;
        }
        let from_disk = std::env::var("DUMP_PTX_FROM_DISK").is_ok_and(|v| v == "1");
        let disk_src;
        let src = if from_disk {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../kernels")
                .join(name);
            match std::fs::read_to_string(&path) {
                Ok(s) => {
                    disk_src = s;
                    disk_src.as_str()
                }
                Err(e) => {
                    eprintln!("dump_ptx: reading {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
        } else {
            src
        };
        let ptx = match compile_kernel(name, src, arch) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("dump_ptx: {e}");
                return ExitCode::FAILURE;
            }
        };
        let stem = name.strip_suffix(".cu").unwrap_or(name);
        let path = std::path::Path::new(out).join(format!("{stem}.{arch}.ptx"));
        if let Err(e) = std::fs::write(&path, ptx.to_src()) {
            eprintln!("dump_ptx: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("{}", path.display());
    }
    ExitCode::SUCCESS
}
