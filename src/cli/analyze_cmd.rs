//! `attnscope analyze parallel RUN_DIR...`: the parallel-position attention study, printed and optionally
//! written as `prompts.parquet` + `study.json` into `--out`.

use crate::cli::AnalyzeParallelArgs;
use attnscope_analyze::parallel::{ParallelStudy, analyze_parallel, prompts_table};
use attnscope_core::Result;
use attnscope_io::{RunDir, write_json, write_parquet};

/// Runs `analyze parallel`.
pub fn analyze_parallel_cmd(args: AnalyzeParallelArgs) -> Result<()> {
    let study = analyze_parallel(&args.runs)?;
    if let Some(out) = &args.out {
        let dir = RunDir::create(out, args.overwrite)?;
        write_parquet(&dir.file("prompts.parquet"), &prompts_table(&study))?;
        write_json(&dir.file("study.json"), &study)?;
        dir.commit()?;
    }
    print_summary(&study);
    Ok(())
}

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{x:+.1}%")
    } else {
        "-".into()
    }
}

fn print_summary(study: &ParallelStudy) {
    println!(
        "attention reduction = (mean to non-parallel generated − mean to parallel) / non-parallel × 100"
    );
    println!(
        "{:<28} {:>4} {:>6} {:>5} {:>10} {:>10} {:>9} {:>8} {:>8}  thirds / layers",
        "run", "seq", "steps", "sets", "a_nonpar", "a_par", "reduction", "early", "late"
    );
    for p in &study.prompts {
        let run: String = p
            .run
            .chars()
            .rev()
            .take(28)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let thirds: Vec<String> = p.thirds_reduction_pct.iter().map(|x| pct(*x)).collect();
        let layers: Vec<String> = p.layer_reduction_pct.iter().map(|x| pct(*x)).collect();
        println!(
            "{run:<28} {:>4} {:>6} {:>5} {:>10.5} {:>10.5} {:>9} {:>8} {:>8}  [{}] / [{}]",
            p.seq,
            p.steps,
            p.parallel_positions,
            p.mean_non_parallel,
            p.mean_parallel,
            pct(p.reduction_pct),
            pct(p.early_reduction_pct),
            pct(p.late_reduction_pct),
            thirds.join(" "),
            layers.join(" ")
        );
    }
    for c in &study.conditions {
        print!(
            "\n{}: {} prompts, reduction mean {} median {} sd {:.1}",
            c.condition,
            c.prompts,
            pct(c.mean_reduction_pct),
            pct(c.median_reduction_pct),
            c.std_reduction_pct
        );
        match &c.paired_test {
            Some(t) => println!(
                "; paired t-test (non-parallel − parallel): mean diff {:.5}, t = {:.3}, df = {}, p = {:.4}",
                t.mean_difference, t.t, t.df, t.p_value
            ),
            None => println!("; paired t-test needs at least 2 prompts"),
        }
    }
}
