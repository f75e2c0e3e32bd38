//! The job API (attnscope-job) that the CLI, benchmarks and later front ends call: a job run in memory
//! holds what its run directory holds, the CLI writes exactly the files the job API writes, and an
//! ablation job scores what `attnscope ablate` reports.

mod common;

use attnscope_core::Error;
use attnscope_core::input::SequenceInput;
use attnscope_core::run::GenerateOptions;
use attnscope_cuda::{DeviceRequest, GpuDtype};
use attnscope_job::DtypeRequest;
use attnscope_job::{
    AblationJob, AblationModeRequest, AblationPrompt, AblationTargets, CaptureRequest, Job,
    JobInputs, Progress, Quiet, Session,
};
use common::cli::{attnscope, entries, fixture, float, int, read_parquet, run_ok};
use std::fs;

const SPEC: &str = r#"{"sequences": [
  {"token_ids": [1, 40, 41, 22, 37, 43, 38, 28], "positions": [0, 1, 2, 3, 3, 3, 4, 5],
   "groups": [-1, -1, -1, 0, 0, 0, -1, -1], "visibility": "isolated"},
  {"token_ids": [3, 9, 27, 11, 5]}
]}"#;

fn session(name: &str) -> Session {
    Session::open(
        &fixture(name),
        DeviceRequest::Cpu,
        DtypeRequest::Explicit(GpuDtype::F32),
    )
    .unwrap()
}

fn job(spec_path: &std::path::Path) -> Job {
    let mut job = Job::new(JobInputs::SpecFile(spec_path.to_path_buf()));
    job.capture = CaptureRequest::from_kinds("all").unwrap();
    job.generation = GenerateOptions {
        max_new_tokens: 4,
        stop_at_eos: false,
        ..GenerateOptions::default()
    };
    job
}

#[test]
fn in_memory_results_match_the_run_directory_and_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("spec.json");
    fs::write(&spec, SPEC).unwrap();
    for name in ["llama_gqa", "gpt2", "qwen3"] {
        let job = job(&spec);
        let results = job.run(&session(name), &mut Quiet).unwrap();
        assert_eq!(results.outcomes.len(), 2, "{name}");
        assert_eq!(
            results.outcomes[1].slots.len(),
            5 + 4,
            "{name}: prompt + generated"
        );

        let api_dir = tmp.path().join(format!("{name}-api"));
        let (path, manifest) = job
            .write_run(&api_dir, false, || Ok(session(name)), &mut Quiet)
            .unwrap();
        assert_eq!(path, api_dir);
        assert_eq!(manifest.inputs.len(), 2);
        // tokens.parquet holds the slots of the in-memory outcome, row for row.
        let rows = read_parquet(&api_dir.join("tokens.parquet"));
        let slots: Vec<_> = results.outcomes.iter().flat_map(|o| &o.slots).collect();
        assert_eq!(rows.len(), slots.len(), "{name}");
        for (row, slot) in rows.iter().zip(&slots) {
            assert_eq!(int(row, "token_id"), slot.token as i64, "{name}");
            assert_eq!(int(row, "position"), slot.position, "{name}");
            assert_eq!(int(row, "group"), slot.group as i64, "{name}");
        }

        // The CLI is a shell over the same job: the same files, byte for byte.
        let cli_dir = tmp.path().join(format!("{name}-cli"));
        run_ok(
            attnscope(tmp.path())
                .args([
                    "run",
                    "--device",
                    "cpu",
                    "--capture",
                    "all",
                    "--generate",
                    "4",
                    "--ignore-eos",
                    "--quiet",
                ])
                .arg("--model")
                .arg(fixture(name))
                .arg("--input")
                .arg(&spec)
                .arg("--out")
                .arg(&cli_dir),
        );
        let files = entries(&api_dir);
        assert_eq!(files, entries(&cli_dir), "{name}");
        for f in files.iter().filter(|f| *f != "manifest.json") {
            let (a, b) = (api_dir.join(f), cli_dir.join(f));
            assert!(
                fs::read(&a).unwrap() == fs::read(&b).unwrap(),
                "{name}: {f} differs"
            );
        }
    }
}

fn job_command() -> Vec<std::ffi::OsString> {
    vec!["attnscope".into(), "ablate".into()]
}

#[test]
fn ablation_job_scores_what_the_cli_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("one.json");
    fs::write(
        &spec,
        r#"{"sequences": [{"token_ids": [1, 40, 41, 22, 37, 43, 38, 28]}]}"#,
    )
    .unwrap();
    let session = session("llama_gqa");
    let job = AblationJob {
        prompt: AblationPrompt::SpecFile(spec.clone()),
        slots: "2-3".into(),
        layers: Some("1".into()),
        mode: AblationModeRequest::Mean,
        replace_with: None,
        targets: AblationTargets::Ids("5,6,7".into()),
    };
    let result = job.run(&session).unwrap();
    assert_eq!(result.targets, vec![5, 6, 7]);
    assert!(result.logp_base.iter().all(|l| l.is_finite() && *l <= 0.0));
    assert_ne!(
        result.logp_base, result.logp_ablated,
        "the ablation changes something"
    );

    let out = tmp.path().join("ab");
    run_ok(
        attnscope(tmp.path())
            .args([
                "ablate",
                "--device",
                "cpu",
                "--slots",
                "2-3",
                "--ablate-layers",
                "1",
                "--mode",
                "mean",
                "--target-ids",
                "5,6,7",
            ])
            .arg("--model")
            .arg(fixture("llama_gqa"))
            .arg("--input")
            .arg(&spec)
            .arg("--out")
            .arg(&out),
    );
    let rows = read_parquet(&out.join("ablation.parquet"));
    assert_eq!(rows.len(), 3);
    // The table in memory is the file's.
    let table = result.table(&session);
    assert_eq!(
        attnscope_io::read_parquet(&out.join("ablation.parquet")).unwrap(),
        table
    );
    let api_out = tmp.path().join("ab-api");
    result
        .write(&api_out, false, &session, &job_command())
        .unwrap();
    assert!(
        fs::read(api_out.join("ablation.parquet")).unwrap()
            == fs::read(out.join("ablation.parquet")).unwrap()
    );
    for (j, row) in rows.iter().enumerate() {
        assert_eq!(float(row, "logp_base"), result.logp_base[j]);
        assert_eq!(float(row, "logp_ablated"), result.logp_ablated[j]);
    }
}

#[test]
fn sequences_built_in_code_run_like_a_spec_file() {
    let session = session("llama_gqa");
    let mut job = Job::new(JobInputs::Sequences {
        source: "test".into(),
        sequences: vec![SequenceInput::from_tokens(vec![1, 40, 41, 22])],
    });
    job.capture = CaptureRequest {
        layers: Some("0".into()),
        heads: Some("1-2".into()),
        ..CaptureRequest::from_kinds("weights").unwrap()
    };
    let results = job.run(&session, &mut Quiet).unwrap();
    let capture = results.outcomes[0].capture.as_ref().unwrap();
    assert_eq!(capture.layers.len(), 1);
    assert_eq!(capture.layers[0].heads, vec![1, 2]);
    assert_eq!(results.inputs[0].source, "test");
    // A selection outside the model names its flag.
    job.capture.heads = Some("99".into());
    let err = job.run(&session, &mut Quiet).err().unwrap().to_string();
    assert!(err.starts_with("--heads:"), "{err}");
}

/// Stops a job as a front end's interrupt does: `step` fails once `steps_ok` steps went through, `check`
/// (before each sequence) once `checks_ok` sequences began.
struct StopAfter {
    steps_ok: usize,
    checks_ok: usize,
    steps: usize,
    checks: usize,
}

impl StopAfter {
    fn new(steps_ok: usize, checks_ok: usize) -> StopAfter {
        StopAfter {
            steps_ok,
            checks_ok,
            steps: 0,
            checks: 0,
        }
    }
}

fn interrupted() -> Error {
    Error::interrupted("interrupted (KeyboardInterrupt)")
}

impl Progress for StopAfter {
    fn check(&mut self) -> attnscope_core::Result<()> {
        self.checks += 1;
        if self.checks > self.checks_ok {
            return Err(interrupted());
        }
        Ok(())
    }
    fn step(&mut self) -> attnscope_core::Result<()> {
        self.steps += 1;
        if self.steps > self.steps_ok {
            return Err(interrupted());
        }
        Ok(())
    }
}

/// A progress whose `step` fails after the first step (the prefill) stops a generating job of several
/// sequences with its error, in the first sequence; one whose `check` fails stops it between sequences.
/// Either way `Job::write_run` leaves nothing behind (no run directory, no temporary one, no parents).
#[test]
fn a_failing_progress_stops_the_job_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("spec.json");
    fs::write(&spec, SPEC).unwrap();
    let job = job(&spec);
    let loaded = session("llama_gqa");
    for (steps_ok, checks_ok, steps, checks) in [(1, usize::MAX, 2, 1), (usize::MAX, 1, 5, 2)] {
        let mut progress = StopAfter::new(steps_ok, checks_ok);
        let err = job.run(&loaded, &mut progress).err().unwrap();
        assert!(matches!(err, Error::Interrupted(_)), "{err:?}");
        assert_eq!(err.to_string(), "interrupted (KeyboardInterrupt)");
        assert_eq!((progress.steps, progress.checks), (steps, checks));

        let out_root = tmp.path().join("outs");
        fs::create_dir(&out_root).unwrap();
        let out = out_root.join("new/parents/run");
        let mut progress = StopAfter::new(steps_ok, checks_ok);
        let err = job
            .write_run(&out, false, || Ok(session("llama_gqa")), &mut progress)
            .err()
            .unwrap();
        assert_eq!(err.to_string(), "interrupted (KeyboardInterrupt)");
        assert_eq!((progress.steps, progress.checks), (steps, checks));
        assert_eq!(entries(&out_root), Vec::<String>::new());
        fs::remove_dir(&out_root).unwrap();
    }
}

/// The manifest without what differs between two runs of one job: timings, creation time, command line.
fn manifest_without_timings(dir: &std::path::Path) -> serde_json::Value {
    let mut m = common::cli::manifest(dir);
    let obj = m.as_object_mut().unwrap();
    for key in [
        "timings",
        "created_unix_seconds",
        "command",
        "command_escaped",
    ] {
        obj.remove(key);
    }
    m
}

/// `Job::run` then `JobResults::write_run` writes the run directory `Job::write_run` streams for the same
/// job (weights and statistics of every layer, generation): the same files, every Parquet table and
/// attention.safetensors byte for byte, the same manifest but for timings and command line.
#[test]
fn results_in_memory_write_the_run_directory_of_their_job() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("spec.json");
    fs::write(&spec, SPEC).unwrap();
    let mut job = job(&spec);
    job.capture = CaptureRequest::from_kinds("weights,stats").unwrap();
    let streamed = tmp.path().join("streamed");
    job.write_run(&streamed, false, || Ok(session("llama_gqa")), &mut Quiet)
        .unwrap();

    let loaded = session("llama_gqa");
    let results = job.run(&loaded, &mut Quiet).unwrap();
    let out = tmp.path().join("new/parents/from-results");
    let (path, manifest) = results.write_run(&out, false, &job, &loaded).unwrap();
    assert_eq!(path, out);
    assert_eq!(manifest.inputs.len(), 2);
    let files = entries(&out);
    assert_eq!(files, entries(&streamed));
    for f in ["attention.safetensors", "stats.parquet", "steps.parquet"] {
        assert!(files.contains(&f.to_string()), "{files:?}");
    }
    for f in files.iter().filter(|f| *f != "manifest.json") {
        assert!(
            fs::read(out.join(f)).unwrap() == fs::read(streamed.join(f)).unwrap(),
            "{f} differs"
        );
    }
    assert_eq!(
        manifest_without_timings(&out),
        manifest_without_timings(&streamed)
    );
    // The results stay in memory: they can be written again, over the first directory when asked to.
    let err = results
        .write_run(&out, false, &job, &loaded)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("from-results"), "{err}");
    results.write_run(&out, true, &job, &loaded).unwrap();
    assert_eq!(entries(&out), files);
}
