//! `attnscope sweep SPEC.toml --emit-slurm`: the sbatch script of a job array, one task per shard. Each
//! task runs `attnscope sweep … --shard $SLURM_ARRAY_TASK_ID/N` (N written in, so that one task resubmitted
//! alone with `sbatch --array=K` runs shard K). `--signal=B:USR1@S` warns the batch shell S seconds before
//! the time limit; it passes the signal on, attnscope finishes the batch in progress, commits and exits 75,
//! and the script requeues the task (`--requeue`), which skips what is committed. `scancel` (SIGTERM) is
//! passed on too: the batch in progress is abandoned and its temporary directories removed.

use std::path::Path;

/// Exit status of a shard stopped before it ran every unit (EX_TEMPFAIL): requeue it.
pub const EXIT_STOPPED: i32 = 75;

/// Resources of the job array.
#[derive(Clone, Debug)]
pub struct SlurmOptions {
    pub array_tasks: usize,
    pub time: String,
    pub cpus_per_task: usize,
    pub mem: Option<String>,
    pub gpus: Option<usize>,
    pub partition: Option<String>,
    pub account: Option<String>,
    /// Seconds before the time limit at which SIGUSR1 arrives.
    pub signal_seconds: u32,
    /// Extra flags of every task's `attnscope sweep` (e.g. `--max-batch-tokens 8192`).
    pub extra_args: Vec<String>,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The script for `binary` running `spec` into `out` (absolute paths).
pub fn sbatch_script(
    name: &str,
    binary: &Path,
    spec: &Path,
    out: &Path,
    o: &SlurmOptions,
) -> String {
    let mut s = String::from("#!/bin/bash\n");
    s.push_str(&format!(
        "# Written by `attnscope sweep --emit-slurm` for the sweep {name:?}.\n"
    ));
    s.push_str(&format!(
        "# Submit: sbatch {}\n# Resubmit one task: sbatch --array=K {}\n",
        quote(&out.join("sweep.sbatch").display().to_string()),
        quote(&out.join("sweep.sbatch").display().to_string())
    ));
    let mut directive = |d: String| s.push_str(&format!("#SBATCH {d}\n"));
    directive(format!("--job-name=attnscope-{name}"));
    directive(format!("--array=0-{}", o.array_tasks.saturating_sub(1)));
    directive(format!("--time={}", o.time));
    directive("--ntasks=1".into());
    directive(format!("--cpus-per-task={}", o.cpus_per_task));
    if let Some(m) = &o.mem {
        directive(format!("--mem={m}"));
    }
    if let Some(g) = o.gpus {
        directive(format!("--gpus={g}"));
    }
    if let Some(p) = &o.partition {
        directive(format!("--partition={p}"));
    }
    if let Some(a) = &o.account {
        directive(format!("--account={a}"));
    }
    directive("--requeue".into());
    directive(format!("--signal=B:USR1@{}", o.signal_seconds));
    directive("--open-mode=append".into());
    directive(format!("--output={}/logs/%A_%a.out", out.display()));
    let extra: Vec<String> = o.extra_args.iter().map(|a| quote(a)).collect();
    s.push_str(&format!(
        r#"set -u
mkdir -p {logs}
echo "attnscope sweep: task ${{SLURM_ARRAY_TASK_ID}} of {n} on $(hostname) (job ${{SLURM_JOB_ID}}, restart ${{SLURM_RESTART_COUNT:-0}})"
{bin} sweep {spec} --out {out} --shard "${{SLURM_ARRAY_TASK_ID}}/{n}" --threads "${{SLURM_CPUS_PER_TASK:-1}}" {extra} &
child=$!
trap 'kill -USR1 "$child" 2>/dev/null' USR1
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
rc=0
while true; do
    wait "$child"; rc=$?
    # A trapped signal interrupts `wait` (status > 128) while the child still runs: wait again.
    kill -0 "$child" 2>/dev/null || break
done
if [ "$rc" -eq {stopped} ]; then
    echo "attnscope sweep: stopped before the time limit; requeueing task ${{SLURM_ARRAY_TASK_ID}}"
    scontrol requeue "${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
fi
exit "$rc"
"#,
        logs = quote(&out.join("logs").display().to_string()),
        n = o.array_tasks,
        bin = quote(&binary.display().to_string()),
        spec = quote(&spec.display().to_string()),
        out = quote(&out.display().to_string()),
        extra = extra.join(" "),
        stopped = EXIT_STOPPED,
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_names_the_shard_count_and_requeues_on_stop() {
        let o = SlurmOptions {
            array_tasks: 4,
            time: "01:00:00".into(),
            cpus_per_task: 8,
            mem: Some("32G".into()),
            gpus: Some(1),
            partition: None,
            account: None,
            signal_seconds: 300,
            extra_args: vec!["--max-batch-tokens".into(), "8192".into()],
        };
        let s = sbatch_script(
            "demo",
            Path::new("/bin/attnscope"),
            Path::new("/s/a b.toml"),
            Path::new("/o"),
            &o,
        );
        for needle in [
            "#SBATCH --array=0-3",
            "#SBATCH --requeue",
            "#SBATCH --signal=B:USR1@300",
            "#SBATCH --gpus=1",
            "--shard \"${SLURM_ARRAY_TASK_ID}/4\"",
            "'/s/a b.toml'",
            "'--max-batch-tokens' '8192'",
            "if [ \"$rc\" -eq 75 ]",
        ] {
            assert!(s.contains(needle), "{needle} missing from\n{s}");
        }
        assert!(!s.contains("--partition"));
    }
}
