//! The `attnscope` command line: `run`, `inspect`, `bench`, `doctor` and the rest.

mod ablate_cmd;
mod analyze_cmd;
mod bench_attention_cmd;
mod bench_cmd;
mod bench_serve_cmd;
mod doctor_cmd;
mod inspect;
mod interrupt;
mod run_cmd;
mod sweep_cmd;
mod threads;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// attnscope — exact attention capture for interpretability research.
///
/// Loads a Hugging Face causal-LM checkpoint (config.json, safetensors, tokenizer.json), runs prefill and
/// generation, and captures attention probabilities and per-head statistics as a side output of the real
/// forward pass. Results go to a self-describing run directory (manifest.json, Parquet tables, safetensors).
#[derive(Parser, Debug)]
#[command(name = "attnscope", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run prompts (or an --input spec) through a model and write captured attention to --out.
    Run(Box<RunArgs>),
    /// Describe a model directory: architecture, parameter count, dtypes, tokenizer.
    Inspect(InspectArgs),
    /// Analyses over finished run directories.
    #[command(subcommand)]
    Analyze(AnalyzeCommand),
    /// Zero, mean or replace the keys/values of chosen slots at chosen layers, and report the change in
    /// log-probability of target tokens (token-importance studies).
    Ablate(Box<AblateArgs>),
    /// Measure prefill latency, decode throughput and peak memory of random-weight models under each
    /// capture mode (no download).
    Bench(Box<BenchArgs>),
    /// Keep one random-weight model loaded and measure one prefill or decode call per JSON request line on
    /// stdin (a reply line each on stdout): the attnscope side of scripts/bench_pair.py.
    BenchServe(Box<BenchServeArgs>),
    /// Time the fused attention kernel alone (random q/k/v, causal) on a model's attention shape; JSON for
    /// scripts/attn_bench_compare.py against torch SDPA (scripts/bench_sdpa.py).
    BenchAttention(Box<BenchAttentionArgs>),
    /// Check the CUDA setup: driver and GPUs, the NVRTC and cuBLAS found (CUDA 12 or 13) and which major is
    /// used and why, the kernel cache. Exits non-zero, saying why, when no GPU is usable.
    Doctor(DoctorArgs),
    /// Run a sweep spec (models × prompt sets × variants) shard by shard, batched and resumable; `--plan`
    /// lists its units, `--emit-slurm` writes a job-array script, `sweep status DIR` shows progress.
    Sweep(Box<SweepArgs>),
    /// Merge a sweep directory's committed units into one hive-partitioned Parquet dataset (DIR/merged).
    Merge(MergeArgs),
}

/// Options of `attnscope sweep`.
#[derive(Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  \
    attnscope sweep study.toml --plan\n  \
    attnscope sweep study.toml --out sweeps/study                 # every unit, here\n  \
    attnscope sweep study.toml --out sweeps/study --shard 2/8     # one shard of eight\n  \
    attnscope sweep study.toml --out sweeps/study --emit-slurm --array-tasks 8 --gpus 1 --time 02:00:00\n  \
    attnscope sweep status sweeps/study\n  \
    attnscope merge sweeps/study\n\n\
    Under a Slurm array (SLURM_ARRAY_TASK_ID / _COUNT / _MIN set) the shard comes from the environment.\n\
    A rerun skips committed units and redoes partial ones. Exit status 75: stopped by SIGUSR1 after the\n\
    batch in progress (requeue it); SIGINT/SIGTERM abandon the batch and remove its temporary files.\n\
    The spec format is in README.md (\"Sweeps\")."
)]
pub struct SweepArgs {
    #[command(subcommand)]
    pub action: Option<SweepAction>,
    /// The sweep spec (TOML).
    pub spec: Option<PathBuf>,
    /// The sweep directory (units, failures, shard states; shared by every shard).
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// Print the units (id, model, prompt set, variant, row) and their count; run nothing.
    #[arg(long)]
    pub plan: bool,
    /// With --plan: JSON.
    #[arg(long)]
    pub json: bool,
    /// Run shard I of N (plan positions ≡ I mod N); default: from SLURM_ARRAY_TASK_*, else every unit.
    #[arg(long)]
    pub shard: Option<String>,
    /// Slots of one batched forward pass (default: the spec's max_batch_tokens, else 4096).
    #[arg(long)]
    pub max_batch_tokens: Option<usize>,
    /// Run the units recorded as failed again.
    #[arg(long)]
    pub retry_failed: bool,
    /// One worker per device: GPU indexes or device names, e.g. 0,1,2,3 or cpu (default: each model's).
    #[arg(long)]
    pub devices: Option<String>,
    /// Worker threads of the CPU engine (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seconds between progress lines when stderr is not a terminal.
    #[arg(long, default_value_t = 30.0)]
    pub log_every: f64,
    /// No progress output.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Write OUT/sweep.sbatch, a Slurm job array over the shards, and print how to submit it.
    #[arg(long)]
    pub emit_slurm: bool,
    /// With --emit-slurm: array tasks (= shards).
    #[arg(long, default_value_t = 4)]
    pub array_tasks: usize,
    /// With --emit-slurm: time limit of each task.
    #[arg(long, default_value = "04:00:00")]
    pub time: String,
    /// With --emit-slurm: CPUs of each task (its --threads).
    #[arg(long, default_value_t = 8)]
    pub cpus_per_task: usize,
    /// With --emit-slurm: memory of each task, e.g. 32G.
    #[arg(long)]
    pub mem: Option<String>,
    /// With --emit-slurm: GPUs of each task.
    #[arg(long)]
    pub gpus: Option<usize>,
    /// With --emit-slurm: partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// With --emit-slurm: account.
    #[arg(long)]
    pub account: Option<String>,
    /// With --emit-slurm: SIGUSR1 this many seconds before the time limit (the batch in progress ends,
    /// is committed, and the task requeues itself).
    #[arg(long, default_value_t = 300)]
    pub signal_seconds: u32,
}

/// `attnscope sweep status`.
#[derive(Subcommand, Debug)]
pub enum SweepAction {
    /// Done / pending / failed units per shard of a sweep directory.
    Status {
        dir: PathBuf,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Options of `attnscope merge`.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The sweep directory.
    pub dir: PathBuf,
}

/// Options of `attnscope doctor`.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Then open GPU 0 and compile every kernel for it into the kernel cache (what the first run would do),
    /// printing how long it took; later runs and tests load the cached CUBIN.
    #[arg(long)]
    pub compile_kernels: bool,
}

/// Options of `attnscope bench-attention`.
#[derive(clap::Args, Debug)]
pub struct BenchAttentionArgs {
    /// Sequence lengths T (comma-separated).
    #[arg(
        long = "t",
        value_delimiter = ',',
        default_value = "512,1024,2048,4096,8192"
    )]
    pub lengths: Vec<usize>,
    /// Query heads (default: Llama-3.2-1B).
    #[arg(long, default_value_t = 32)]
    pub heads: usize,
    /// Key/value heads.
    #[arg(long, default_value_t = 8)]
    pub kv_heads: usize,
    /// Head dimension.
    #[arg(long, default_value_t = 64)]
    pub head_dim: usize,
    /// Element type of q/k/v on the GPU: bf16, f16 or f32 (the CPU reference is f32).
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    /// Untimed calls per implementation before timing.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed calls per implementation (interleaved); median, p10 and p90 are reported.
    #[arg(long, default_value_t = 20)]
    pub repeats: usize,
    /// auto, cpu, cuda or cuda:N (auto: the GPU when usable, else the CPU reference).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Skip prefill_weights where the [H, T, T] f32 weights would exceed this many GiB.
    #[arg(long, default_value_t = 16.0)]
    pub max_weights_gib: f64,
    /// Write the "attnscope-attn-bench/1" JSON here (atomically).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Seed of the random q/k/v.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Options of `attnscope ablate`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    attnscope ablate --model M --prompt \"The capital of France is\" --target \" Paris\" --slots 4 --mode zero\n  \
    attnscope ablate --model M --prompt \"Once upon a time\" --continuation 10 --slots 1-2 --ablate-layers 0-1 --mode mean\n\n\
    The prompt is prefilled up to the last ablated slot, the cache entries are altered, then the rest of\n\
    the prompt and the targets run on top: the ablation changes what later slots read.")]
pub struct AblateArgs {
    /// Model directory (default: the tiny random model).
    #[arg(long, short = 'm')]
    pub model: Option<PathBuf>,
    /// Prompt text.
    #[arg(long, short = 'p')]
    pub prompt: Option<String>,
    /// One-sequence --input spec (token ids, positions, groups, visibility).
    #[arg(long, short = 'i')]
    pub input: Option<PathBuf>,
    /// Prompt slots whose keys/values are altered, e.g. "3,5-7".
    #[arg(long)]
    pub slots: String,
    /// Layers at which they are altered (default: all).
    #[arg(long)]
    pub ablate_layers: Option<String>,
    /// What replaces them.
    #[arg(long, value_enum, default_value_t = AblationModeArg::Zero)]
    pub mode: AblationModeArg,
    /// Source slot for --mode replace.
    #[arg(long)]
    pub replace_with: Option<usize>,
    /// Target text whose tokens are scored after the prompt.
    #[arg(long, conflicts_with = "target_ids")]
    pub target: Option<String>,
    /// Target token ids, comma-separated.
    #[arg(long)]
    pub target_ids: Option<String>,
    /// Without a target: score the unablated model's greedy continuation of this many tokens.
    #[arg(long, default_value_t = 10)]
    pub continuation: usize,
    /// Also write ablation.parquet and manifest.json into this directory.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// Replace --out if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Load a checkpoint that holds tensors config.json does not use (listed as a warning instead of
    /// refused).
    #[arg(long)]
    pub allow_unused: bool,
    /// Compute backend: auto (a usable GPU, else the CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Storage dtype: auto (bf16 on the GPU, f32 on the CPU), bf16, f16 or f32. On the CPU an explicit
    /// bf16/f16 stores the linear layers and embeddings in it (half the memory), computed in f32.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
}

/// What replaces ablated keys/values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AblationModeArg {
    /// Zeros.
    Zero,
    /// The mean over all prefilled slots at that layer.
    Mean,
    /// The keys/values of --replace-with SLOT.
    Replace,
}

/// `attnscope analyze ...`
#[derive(Subcommand, Debug)]
pub enum AnalyzeCommand {
    /// Do parallel (TEMPO set) slots get less attention than ordinary generated slots? Reads each run's
    /// steps.parquet (runs made with --generate, --parallel-threshold and --capture stats): attention
    /// reduction per prompt, early/late and thirds, per layer, and a paired t-test across prompts per
    /// condition (visibility, threshold).
    Parallel(AnalyzeParallelArgs),
}

/// Options of `attnscope analyze parallel`.
#[derive(Args, Debug)]
pub struct AnalyzeParallelArgs {
    /// Run directories.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Also write prompts.parquet and study.json into this directory.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// Replace --out if it exists.
    #[arg(long)]
    pub overwrite: bool,
}

/// Options of `attnscope run`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    attnscope run --prompt \"Once upon a time\" --generate 20 --out runs/demo\n  \
    attnscope run --model path/to/hf-model --prompt \"The capital of France is\" --capture weights,stats --layers 0-3 --out runs/paris\n  \
    attnscope run --model path/to/hf-model --input spec.json --capture weights --out runs/parallel\n\n\
    Load the results in Python:\n  \
    pd.read_parquet(\"runs/demo/stats.parquet\")\n  \
    safetensors.numpy.load_file(\"runs/demo/attention.safetensors\")")]
pub struct RunArgs {
    /// Model directory (config.json, model.safetensors or sharded index, tokenizer.json). Default: the
    /// tiny random-weight model in models/tiny-random-llama (for smoke tests; its output is gibberish).
    #[arg(long, short = 'm')]
    pub model: Option<PathBuf>,
    /// Prompt text; repeat for several sequences. The tokenizer adds BOS as the model's tokenizer config says.
    #[arg(long, short = 'p', conflicts_with = "input")]
    pub prompt: Vec<String>,
    /// Experiment spec JSON: {"sequences": [{"token_ids": [...], "positions": [...], "groups": [...],
    /// "visibility": "visible"|"isolated"}]}. Token ids are used as given (no BOS added).
    #[arg(long, short = 'i')]
    pub input: Option<PathBuf>,
    /// What to capture: none, stats, weights, or a comma list (weights,stats); "all" = weights,stats.
    #[arg(long, default_value = "stats")]
    pub capture: String,
    /// Layers to capture, e.g. "0,3,8-11" (default: all).
    #[arg(long)]
    pub layers: Option<String>,
    /// Query heads to capture, e.g. "0-3" (default: all).
    #[arg(long)]
    pub heads: Option<String>,
    /// Storage type of captured weights.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub weights_dtype: DtypeArg,
    /// Generation steps after each prompt (0 = prefill only); with --parallel-threshold one step may emit
    /// a parallel set of several tokens at one position.
    #[arg(long, short = 'g', default_value_t = 0)]
    pub generate: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep only the k most probable tokens when sampling (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set of tokens with probability ≥ p (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed of the sampler (recorded in the manifest).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep generating after an EOS token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// TEMPO-style parallel generation: at each step emit every token with probability ≥ P (softmax at
    /// temperature 1) as one parallel set sharing a position; fewer than two such tokens → one sampled token.
    #[arg(long, value_name = "P")]
    pub parallel_threshold: Option<f32>,
    /// Most tokens in one parallel set (most probable first).
    #[arg(
        long,
        value_name = "K",
        default_value_t = 5,
        requires = "parallel_threshold"
    )]
    pub parallel_max: usize,
    /// Which distribution follows a parallel set: the last member's row, the first (most probable)
    /// member's row, or the mean of the members' probabilities.
    #[arg(long, value_enum, default_value_t = SetDistributionArg::Last, requires = "parallel_threshold")]
    pub set_distribution: SetDistributionArg,
    /// Visibility of every sequence (overrides the --input file's): visible = plain causal; isolated = a
    /// slot does not see the other members of its group (parallel set).
    #[arg(long, value_enum)]
    pub visibility: Option<VisibilityArg>,
    /// Output directory (written to a temporary sibling and renamed at the end).
    /// Default: runs/run-<unix time>.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// Replace --out if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Load a checkpoint that holds tensors config.json does not use (listed as a warning instead of
    /// refused).
    #[arg(long)]
    pub allow_unused: bool,
    /// Compute backend: auto (a usable GPU, else the CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Storage dtype: auto (bf16 on the GPU, f32 on the CPU), bf16, f16 or f32. On the GPU: weights,
    /// activations and KV cache (kernels compute in f32). On the CPU an explicit bf16/f16 stores the linear
    /// layers and embeddings in it (half the memory), computed in f32; the rest stays f32.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar or summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// How the next distribution is formed from a parallel set.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SetDistributionArg {
    Last,
    First,
    Mean,
}

/// Visibility rule of a sequence.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum VisibilityArg {
    Visible,
    Isolated,
}

/// Storage type of captured weights.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DtypeArg {
    F32,
    F16,
}

/// Options of `attnscope inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Model directory.
    pub model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Options of `attnscope bench`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    attnscope bench\n  \
    attnscope bench --models gpt2-124m,llama-3.2-1b --prefill 128,256,512 --batch 1,4 --json bench.json\n  \
    attnscope bench --config path/to/config.json --modes none,stats --repeats 3\n  \
    attnscope bench --models llama-100m --peak-tflops 989 --peak-bandwidth-gbs 3350   # fractions of an H100 SXM\n\n\
    Models are built with random weights in memory (f32), so nothing is downloaded; the figures depend only\n\
    on the shapes. Each repeat measures every mode in turn (interleaved), after --warmup unrecorded rounds;\n\
    the median over --repeats is reported with min/max/p10/p90. \"x none\" is the ratio to the \"none\"\n\
    mode of the same run. Peak memory is the process's peak RSS during a measurement (Linux; weights included).")]
pub struct BenchArgs {
    /// Named random-weight shapes, comma separated: llama-100m, gpt2-124m, tinyllama-1.1b, llama-3.2-1b,
    /// qwen2.5-7b. Default (when no --config is given either): llama-100m,gpt2-124m.
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// A config.json (or a directory holding one) to build a random-weight model from; repeatable.
    #[arg(long)]
    pub config: Vec<PathBuf>,
    /// Prompt lengths T of the prefill measurements.
    #[arg(long, value_delimiter = ',', default_value = "128,256")]
    pub prefill: Vec<usize>,
    /// Batch sizes of the decode measurements.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub batch: Vec<usize>,
    /// Prompt length of each sequence before the timed decode steps.
    #[arg(long, default_value_t = 128)]
    pub decode_context: usize,
    /// Timed decode steps per measurement (one new token per sequence each); 0 skips decode.
    #[arg(long, default_value_t = 16)]
    pub decode_steps: usize,
    /// Capture modes: none, stats (all layers), weights_all (f32 probabilities of all layers),
    /// weights_one_layer (the middle layer, all heads).
    #[arg(long, default_value = "none,stats,weights_all,weights_one_layer")]
    pub modes: String,
    /// Unrecorded rounds over all modes before the recorded ones.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Recorded rounds; the median is the figure.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Seed of the random weights and prompt token ids.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also write the results as attnscope-bench/1 JSON to this file (temporary file + rename).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Dense peak TFLOP/s of the device, to report prefill as a fraction of it (H100 SXM bf16: 989).
    /// Default: unknown (null), as for any CPU.
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// Peak memory bandwidth in GB/s, to report decode bytes/s as a fraction of it (H100 SXM: 3350).
    /// Default: unknown (null).
    #[arg(long)]
    pub peak_bandwidth_gbs: Option<f64>,
    /// Skip models with more parameters than this (f32 weights take 4 bytes each); they are listed under
    /// "not measured".
    #[arg(long, default_value_t = 1.5e9)]
    pub max_params: f64,
    /// Compute backend: auto (a usable GPU, else the CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Storage dtype on the GPU: auto (= bf16), bf16, f16 or f32. The CPU measures f32 weights (its random
    /// models are built in f32; `run --dtype bf16` stores a checkpoint's weights as bf16 on the CPU).
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Options of `attnscope bench-serve`.
#[derive(Args, Debug)]
#[command(
    after_help = "Protocol (one JSON object per line; stdout carries nothing else):\n  \
    ready line:  {\"ready\":true,\"engine\":\"attnscope\",\"model\":...,\"threads\":...,...}\n  \
    {\"op\":\"prefill\",\"t\":512,\"mode\":\"none\"}                        -> {\"ok\":true,\"seconds\":...}\n  \
    {\"op\":\"decode\",\"batch\":1,\"context\":512,\"steps\":16,\"mode\":\"none\"} -> {\"ok\":true,\"seconds\":...,\"seconds_per_step\":...}\n  \
    {\"op\":\"quit\"}                                                 -> {\"ok\":true}, exit (end of input exits too)\n\n\
    Modes as in `attnscope bench`: none, stats, weights_all, weights_one_layer. Each call is timed exactly as one\n\
    `attnscope bench` measurement; a bad request gets {\"ok\":false,\"error\":...} and the server goes on.\n\
    Example: attnscope bench-serve --model llama-100m --threads 2"
)]
pub struct BenchServeArgs {
    /// Named random-weight shape: llama-100m, gpt2-124m, tinyllama-1.1b, llama-3.2-1b, qwen2.5-7b.
    #[arg(long, conflicts_with = "config", required_unless_present = "config")]
    pub model: Option<String>,
    /// A config.json (or a directory holding one) to build a random-weight model from.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Seed of the random weights and prompt token ids.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Compute backend: cpu, auto (a usable GPU, else the CPU), cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Storage dtype on the GPU: bf16, f16 or f32 (the CPU always runs in f32).
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
}

/// Entry point of the binary: parses arguments, runs, prints one-line errors, returns the exit code.
pub fn main() -> std::process::ExitCode {
    interrupt::install();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run_cmd::run(*args),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Analyze(AnalyzeCommand::Parallel(args)) => analyze_cmd::analyze_parallel_cmd(args),
        Command::Ablate(args) => ablate_cmd::ablate(*args),
        Command::Bench(args) => bench_cmd::bench(*args),
        Command::BenchServe(args) => bench_serve_cmd::bench_serve(*args),
        Command::BenchAttention(args) => bench_attention_cmd::bench_attention(*args),
        Command::Doctor(a) => doctor_cmd::doctor(&a),
        Command::Sweep(args) => sweep_cmd::sweep(*args),
        Command::Merge(args) => sweep_cmd::merge(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let msg = e.to_string().replace('\n', " ");
            eprintln!("error: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The model directory to use: `--model`, else the committed tiny random model.
pub(crate) fn model_dir(arg: Option<PathBuf>, quiet: bool) -> PathBuf {
    if let Some(dir) = arg {
        return dir;
    }
    let local = PathBuf::from("models/tiny-random-llama");
    let dir = if local.join("config.json").exists() {
        local
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tiny-random-llama")
    };
    if !quiet {
        eprintln!(
            "note: no --model given; using {} (RANDOM weights: output is gibberish; pass --model DIR for a real checkpoint)",
            dir.display()
        );
    }
    dir
}
