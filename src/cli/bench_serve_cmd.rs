//! `attnscope bench-serve`: build one random-weight model, then answer measurement requests on stdin
//! (protocol in `attnscope_bench::serve`) until `quit` or end of input.

use crate::cli::BenchServeArgs;
use attnscope_bench::ModelSource;
use attnscope_bench::report::DeviceInfo;
use attnscope_bench::serve::{ServerInfo, serve};
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::model::random::random_model;
use attnscope_cuda::{DeviceRequest, GpuDtype};
use attnscope_job::Session;

/// Runs the `bench-serve` subcommand.
pub fn bench_serve(args: BenchServeArgs) -> Result<()> {
    let device = DeviceRequest::parse(&args.device)?;
    let dtype = GpuDtype::parse(&args.dtype)?;
    crate::cli::threads::init_pool(args.threads)?;
    let source = match (&args.model, &args.config) {
        (Some(name), None) => ModelSource::Named(name.trim().to_string()),
        (None, Some(path)) => ModelSource::Config(path.clone()),
        _ => return Err(Error::input("give exactly one of --model and --config")),
    };
    let cfg = source.config()?;
    eprintln!("bench-serve: building {} (random weights)", source.label());
    let session = Session::with_model(random_model(cfg, args.seed), None, device, dtype)?;
    let threads = rayon::current_num_threads();
    let cpu = DeviceInfo::cpu(threads, None, None).name;
    let placement = &session.placement;
    let info = ServerInfo {
        model: source.label(),
        threads,
        device: placement.device.clone(),
        compute_dtype: if placement.gpu_name.is_some() {
            placement.dtype.clone()
        } else {
            "f32".to_string()
        },
        cpu,
    };
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    serve(&session.model, &info, args.seed, stdin, stdout)
}
