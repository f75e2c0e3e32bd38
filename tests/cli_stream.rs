//! Runs of several sequences, each written when it ends (issue #12 item 7): the files of a multi-prompt
//! run with everything captured hold every sequence, read back with the `parquet` and `safetensors`
//! crates; they are byte-identical across runs and thread counts; and a failure, before or after some
//! sequences were written, leaves nothing behind.

mod common;

use attnscope_core::run::GenerateOptions;
use attnscope_cuda::{DeviceRequest, GpuDtype};
use attnscope_job::{CaptureRequest, DtypeRequest, Job, JobInputs, Progress, Session};
use common::cli::{
    ALL_RUN_FILES, Scratch, attnscope, default_model, entries, expect_error, int, manifest,
    read_parquet, run_ok,
};
use parquet::file::reader::{FileReader, SerializedFileReader};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// tiny-random-llama: 4 layers, 8 query heads.
const LAYERS: usize = 4;
const HEADS: usize = 8;
const GENERATE: usize = 4;
const PROMPTS: [&str; 3] = [
    "Once upon a time",
    "The",
    "A long time ago, in a galaxy far, far away, there lived",
];

/// `attnscope run` of the three prompts with everything captured, into `dir/name`.
fn multi_prompt_run(dir: &Path, name: &str, threads: usize) -> PathBuf {
    let mut cmd = attnscope(dir);
    cmd.args(["run", "--capture", "all", "--ignore-eos", "--quiet"])
        .args(["--generate", &GENERATE.to_string()])
        .args(["--threads", &threads.to_string()])
        .args(["--out", name]);
    for p in PROMPTS {
        cmd.args(["--prompt", p]);
    }
    run_ok(&mut cmd);
    dir.join(name)
}

fn row_groups(path: &Path) -> usize {
    let reader = SerializedFileReader::new(fs::File::open(path).unwrap()).unwrap();
    reader.metadata().num_row_groups()
}

/// The slots of each sequence per `table` (rows per `seq` value, the seq column in order).
fn rows_per_seq(path: &Path) -> Vec<usize> {
    let mut counts = Vec::new();
    for row in read_parquet(path) {
        let seq = int(&row, "seq") as usize;
        assert!(
            seq + 1 >= counts.len(),
            "{}: seq {seq} out of order",
            path.display()
        );
        counts.resize(counts.len().max(seq + 1), 0);
        counts[seq] += 1;
    }
    counts
}

#[test]
fn multi_prompt_run_writes_every_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    let out = multi_prompt_run(tmp.path(), "r", 2);
    assert_eq!(entries(&out), ALL_RUN_FILES);
    assert_eq!(entries(tmp.path()), ["r"], "no temporary sibling is left");

    let m = manifest(&out);
    let inputs = m["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), PROMPTS.len());
    let lengths: Vec<usize> = inputs
        .iter()
        .map(|i| {
            assert_eq!(i["generated_tokens"], GENERATE);
            i["prompt_tokens"].as_u64().unwrap() as usize + GENERATE
        })
        .collect();
    assert!(
        lengths[2] > lengths[0] && lengths[0] > lengths[1],
        "{lengths:?}"
    );

    // tokens.parquet: every slot of every sequence; short sequences share a row group.
    let tokens = out.join("tokens.parquet");
    assert_eq!(rows_per_seq(&tokens), lengths);
    assert_eq!(row_groups(&tokens), 1);
    for row in read_parquet(&tokens) {
        assert!((int(&row, "slot") as usize) < lengths[int(&row, "seq") as usize]);
    }
    // The statistics of every query row of every (sequence, layer, head); the step rows of the generated
    // rows.
    let stats = rows_per_seq(&out.join("received.parquet"));
    let want: Vec<usize> = lengths.iter().map(|t| t * LAYERS * HEADS).collect();
    assert_eq!(stats, want, "received: one row per key slot");
    let steps = rows_per_seq(&out.join("steps.parquet"));
    assert_eq!(steps, vec![GENERATE * LAYERS * HEADS; PROMPTS.len()]);
    for name in ["stats.parquet", "distance.parquet"] {
        let counts = rows_per_seq(&out.join(name));
        assert_eq!(counts.len(), PROMPTS.len(), "{name}");
    }
    // No parallel sets, so no group rows; the file is there and readable.
    assert!(read_parquet(&out.join("step_groups.parquet")).is_empty());

    // attention.safetensors: seq{s}.layer{l} of [8, T_s, T_s], rows summing to 1.
    let bytes = fs::read(out.join("attention.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), PROMPTS.len() * LAYERS);
    for (s, &t) in lengths.iter().enumerate() {
        for l in 0..LAYERS {
            let view = st.tensor(&format!("seq{s}.layer{l}")).unwrap();
            assert_eq!(view.dtype(), Dtype::F32);
            assert_eq!(view.shape(), [HEADS, t, t]);
            let p: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            for (r, row) in p.chunks_exact(t).enumerate() {
                let sum: f64 = row.iter().map(|&x| f64::from(x)).sum();
                assert!((sum - 1.0).abs() < 1e-5, "seq{s}.layer{l} row {r}: {sum}");
            }
        }
    }
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta: BTreeMap<String, String> = meta.metadata().clone().unwrap().into_iter().collect();
    assert_eq!(meta.len(), PROMPTS.len() * LAYERS + 1);
    assert_eq!(meta["seq2.layer3.heads"], "[0, 1, 2, 3, 4, 5, 6, 7]");
    assert!(meta.contains_key("layout"));
}

/// The files other than the manifest (whose timings differ), byte for byte.
fn assert_same_files(a: &Path, b: &Path) {
    let files = entries(a);
    assert_eq!(files, entries(b));
    for f in files.iter().filter(|f| *f != "manifest.json") {
        assert!(
            fs::read(a.join(f)).unwrap() == fs::read(b.join(f)).unwrap(),
            "{f} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

#[test]
fn streamed_files_are_identical_across_runs_and_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let one = multi_prompt_run(tmp.path(), "threads1", 1);
    let again = multi_prompt_run(tmp.path(), "threads1-again", 1);
    let two = multi_prompt_run(tmp.path(), "threads2", 2);
    assert_same_files(&one, &again);
    assert_same_files(&one, &two);
}

/// A bad second sequence fails the run before anything is written and leaves the parent as it was.
#[test]
fn a_bad_second_sequence_leaves_nothing_behind() {
    let s = Scratch::new();
    let spec = s.write(
        "spec.json",
        r#"{"sequences": [{"token_ids": [1, 2, 3]}, {"token_ids": [1, 99999999]}]}"#,
    );
    let mut cmd = s.run_cmd();
    cmd.args(["--capture", "all", "--generate", "2"])
        .arg("--model")
        .arg(default_model())
        .arg("--input")
        .arg(&spec);
    expect_error(cmd, &s.outs(), &["sequences[1]", "99999999"]);
    assert_eq!(entries(&s.outs()), Vec::<String>::new());
}

/// The temporary directories of this process's runs under `parent`.
fn live_runs_in(parent: &Path) -> Vec<PathBuf> {
    attnscope_io::run_dir::live_temp_dirs()
        .into_iter()
        .filter(|d| d.parent() == Some(parent))
        .collect()
}

/// Progress that, when sequence `at` begins (the ones before it written), checks that the earlier
/// sequences are on disk and then does `act` in the run's temporary directory.
struct Sabotage {
    parent: PathBuf,
    at: usize,
    act: fn(&Path),
    seen_tmp: Option<PathBuf>,
}

impl Progress for Sabotage {
    fn sequence(&mut self, index: usize, _count: usize) {
        if index != self.at {
            return;
        }
        let live = live_runs_in(&self.parent);
        assert_eq!(live.len(), 1, "{live:?}");
        let tmp = &live[0];
        let files = entries(tmp);
        assert!(files.contains(&"tokens.parquet".to_string()), "{files:?}");
        assert!(
            files.contains(&".attention.safetensors.data".to_string()),
            "{files:?}"
        );
        (self.act)(tmp);
        self.seen_tmp = Some(tmp.clone());
    }
}

fn streaming_job() -> Job {
    let mut job = Job::new(JobInputs::Prompts(
        PROMPTS.iter().map(|p| p.to_string()).collect(),
    ));
    job.capture = CaptureRequest::from_kinds("all").unwrap();
    job.generation = GenerateOptions {
        max_new_tokens: 2,
        stop_at_eos: false,
        ..GenerateOptions::default()
    };
    job
}

fn open_session() -> attnscope_core::Result<Session> {
    Session::open(
        &default_model(),
        DeviceRequest::Cpu,
        DtypeRequest::Explicit(GpuDtype::F32),
    )
}

/// A failure after two sequences were streamed to disk (the tensor file cannot be assembled: a
/// directory stands in its way) is an error naming the file, and removes the temporary directory and
/// the parents the run created.
#[test]
fn a_failure_after_sequences_were_written_leaves_nothing_behind() {
    let s = Scratch::new();
    let out = s.outs().join("new-parent").join("run");
    let mut progress = Sabotage {
        parent: s.outs().join("new-parent"),
        at: 2,
        act: |tmp| fs::create_dir(tmp.join("attention.safetensors")).unwrap(),
        seen_tmp: None,
    };
    let err = streaming_job()
        .write_run(&out, false, open_session, &mut progress)
        .err()
        .expect("the run fails")
        .to_string();
    assert!(err.contains("attention.safetensors"), "{err}");
    let tmp = progress.seen_tmp.expect("the sabotage ran");
    assert!(!tmp.exists(), "{} is left", tmp.display());
    assert_eq!(entries(&s.outs()), Vec::<String>::new());
    assert!(live_runs_in(&s.outs().join("new-parent")).is_empty());
}

/// A panic in the middle of a run (here: in the progress callback of the second sequence) unwinds
/// through the run and removes its temporary directory.
#[test]
fn a_panic_in_the_middle_leaves_nothing_behind() {
    let s = Scratch::new();
    let out = s.out();
    let mut progress = Sabotage {
        parent: s.outs(),
        at: 1,
        act: |_| panic!("sabotage"),
        seen_tmp: None,
    };
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = streaming_job().write_run(&out, false, open_session, &mut progress);
    }));
    assert!(unwound.is_err());
    assert_eq!(entries(&s.outs()), Vec::<String>::new());
    assert!(live_runs_in(&s.outs()).is_empty());
}
