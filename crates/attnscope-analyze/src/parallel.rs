//! `attnscope analyze parallel RUN_DIR...`: do parallel (TEMPO set) slots receive less attention than
//! ordinary generated slots?
//!
//! From each run's steps.parquet, every generation-step query row (any layer, head) that can see at least one
//! parallel slot and one non-parallel generated slot (itself excluded) gives two per-slot means:
//! a_np = mass_generated / n_generated and a_par = mass_parallel / n_parallel. Per prompt (sequence):
//! attention reduction = (mean a_np − mean a_par) / mean a_np × 100 (negative: parallel slots get more),
//! overall, for early/late steps (split at the midpoint of the prompt's steps: 2·step ≤ last step is early)
//! and thirds, and per layer. Across prompts of one condition (visibility, threshold), a paired t-test
//! compares mean a_np with mean a_par.

use crate::stats::{PairedTest, mean, median, paired_t_test, std_dev};
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_io::{ColumnData, Table, read_parquet};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One usable step row.
#[derive(Clone, Copy, Debug)]
struct Row {
    seq: i32,
    step: i32,
    layer: i32,
    a_np: f64,
    a_par: f64,
}

/// Per prompt results.
#[derive(Clone, Debug, Serialize)]
pub struct PromptResult {
    pub run: String,
    pub seq: i32,
    pub condition: String,
    pub steps: i32,
    pub parallel_positions: usize,
    pub parallel_tokens: usize,
    pub rows: usize,
    pub mean_non_parallel: f64,
    pub mean_parallel: f64,
    pub median_non_parallel: f64,
    pub median_parallel: f64,
    pub std_non_parallel: f64,
    pub std_parallel: f64,
    pub reduction_pct: f64,
    pub early_reduction_pct: f64,
    pub late_reduction_pct: f64,
    pub thirds_reduction_pct: [f64; 3],
    /// Indexed by layer.
    pub layer_reduction_pct: Vec<f64>,
}

/// Per condition: the paired test across prompts.
#[derive(Clone, Debug, Serialize)]
pub struct ConditionResult {
    pub condition: String,
    pub prompts: usize,
    pub mean_reduction_pct: f64,
    pub median_reduction_pct: f64,
    pub std_reduction_pct: f64,
    /// Non-parallel minus parallel, per prompt means.
    pub paired_test: Option<PairedTest>,
}

/// The whole study.
#[derive(Clone, Debug, Serialize)]
pub struct ParallelStudy {
    pub prompts: Vec<PromptResult>,
    pub conditions: Vec<ConditionResult>,
}

fn reduction(rows: &[&Row]) -> f64 {
    let np = mean(&rows.iter().map(|r| r.a_np).collect::<Vec<_>>());
    let par = mean(&rows.iter().map(|r| r.a_par).collect::<Vec<_>>());
    (np - par) / np * 100.0
}

fn i32_col(t: &Table, path: &Path, name: &str) -> Result<Vec<i32>> {
    match t.column(name) {
        Some(ColumnData::I32(v)) => Ok(v.clone()),
        _ => Err(Error::field(path, name, "missing or not int32")),
    }
}

fn f32_col(t: &Table, path: &Path, name: &str) -> Result<Vec<f32>> {
    match t.column(name) {
        Some(ColumnData::F32(v)) => Ok(v.clone()),
        _ => Err(Error::field(path, name, "missing or not float32")),
    }
}

/// The condition label of a run: visibility and threshold from its manifest.
fn condition(dir: &Path) -> Result<String> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let m: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Json {
        path: path.clone(),
        message: format!("not valid JSON: {e}"),
    })?;
    let threshold = m["generation"]["parallel"]["threshold"].as_f64();
    let vis = m["inputs"][0]["visibility"].as_str().unwrap_or("visible");
    Ok(match threshold {
        Some(t) => format!("{vis}, threshold {t}"),
        None => format!("{vis}, no parallel generation"),
    })
}

/// Analyses the given run directories.
pub fn analyze_parallel(dirs: &[PathBuf]) -> Result<ParallelStudy> {
    let mut prompts = Vec::new();
    for dir in dirs {
        let steps_path = dir.join("steps.parquet");
        if !steps_path.exists() {
            return Err(Error::input(format!(
                "{}: missing; run with --generate N, --parallel-threshold P and --capture stats",
                steps_path.display()
            )));
        }
        let cond = condition(dir)?;
        let rows = step_rows(&steps_path)?;
        let tokens = TokenSteps::read(&dir.join("tokens.parquet"))?;
        let mut seqs: Vec<i32> = tokens.seq.clone();
        seqs.sort_unstable();
        seqs.dedup();
        for s in seqs {
            prompts.push(prompt_result(dir, &cond, s, &rows, &tokens));
        }
    }
    let conditions = summarize_conditions(&prompts);
    Ok(ParallelStudy {
        prompts,
        conditions,
    })
}

/// The rows of steps.parquet in which the query sees both non-parallel and parallel slots, as mean weight
/// per visible slot of each kind.
fn step_rows(steps_path: &Path) -> Result<Vec<Row>> {
    let t = read_parquet(steps_path)?;
    let p = steps_path;
    let (seq, step, layer) = (
        i32_col(&t, p, "seq")?,
        i32_col(&t, p, "step")?,
        i32_col(&t, p, "layer")?,
    );
    let (mg, mp) = (
        f32_col(&t, p, "mass_generated")?,
        f32_col(&t, p, "mass_parallel")?,
    );
    let (ng, np) = (
        i32_col(&t, p, "n_generated")?,
        i32_col(&t, p, "n_parallel")?,
    );
    let rows: Vec<Row> = (0..seq.len())
        .filter(|&i| ng[i] > 0 && np[i] > 0)
        .map(|i| Row {
            seq: seq[i],
            step: step[i],
            layer: layer[i],
            a_np: mg[i] as f64 / ng[i] as f64,
            a_par: mp[i] as f64 / np[i] as f64,
        })
        .collect();
    Ok(rows)
}

/// seq, step and kind of every slot of tokens.parquet.
struct TokenSteps {
    seq: Vec<i32>,
    step: Vec<i32>,
    kind: Vec<String>,
}

impl TokenSteps {
    fn read(tokens_path: &Path) -> Result<TokenSteps> {
        let tokens = read_parquet(tokens_path)?;
        let (tseq, tstep) = (
            i32_col(&tokens, tokens_path, "seq")?,
            i32_col(&tokens, tokens_path, "step")?,
        );
        let kinds = match tokens.column("kind") {
            Some(ColumnData::Utf8(v)) => v.clone(),
            _ => {
                return Err(Error::field(
                    tokens_path,
                    "kind",
                    "missing or not a string column",
                ));
            }
        };
        Ok(TokenSteps {
            seq: tseq,
            step: tstep,
            kind: kinds,
        })
    }
}

/// The reductions of one prompt (sequence `s` of the run `dir`).
fn prompt_result(
    dir: &Path,
    cond: &str,
    s: i32,
    rows: &[Row],
    tokens: &TokenSteps,
) -> PromptResult {
    let (tseq, tstep, kinds) = (&tokens.seq, &tokens.step, &tokens.kind);
    let mine: Vec<&Row> = rows.iter().filter(|r| r.seq == s).collect();
    let last_step = (0..tseq.len())
        .filter(|&i| tseq[i] == s)
        .map(|i| tstep[i])
        .max()
        .unwrap_or(0);
    let par: Vec<usize> = (0..tseq.len())
        .filter(|&i| tseq[i] == s && kinds[i] == "parallel")
        .collect();
    let mut par_steps: Vec<i32> = par.iter().map(|&i| tstep[i]).collect();
    par_steps.dedup();
    let nps: Vec<f64> = mine.iter().map(|r| r.a_np).collect();
    let ps: Vec<f64> = mine.iter().map(|r| r.a_par).collect();
    let part = |f: &dyn Fn(&Row) -> bool| {
        reduction(&mine.iter().copied().filter(|r| f(r)).collect::<Vec<_>>())
    };
    let third = |r: &Row| (((r.step - 1) * 3) / last_step.max(1)).min(2);
    let n_layers = mine.iter().map(|r| r.layer + 1).max().unwrap_or(0);
    PromptResult {
        run: dir.display().to_string(),
        seq: s,
        condition: cond.to_string(),
        steps: last_step,
        parallel_positions: par_steps.len(),
        parallel_tokens: par.len(),
        rows: mine.len(),
        mean_non_parallel: mean(&nps),
        mean_parallel: mean(&ps),
        median_non_parallel: median(&nps),
        median_parallel: median(&ps),
        std_non_parallel: std_dev(&nps),
        std_parallel: std_dev(&ps),
        reduction_pct: reduction(&mine),
        early_reduction_pct: part(&|r| 2 * r.step <= last_step),
        late_reduction_pct: part(&|r| 2 * r.step > last_step),
        thirds_reduction_pct: [0, 1, 2].map(|k| part(&|r| third(r) == k)),
        layer_reduction_pct: (0..n_layers).map(|l| part(&|r| r.layer == l)).collect(),
    }
}

/// Reductions summarised per condition, with the paired test over prompts.
fn summarize_conditions(prompts: &[PromptResult]) -> Vec<ConditionResult> {
    let mut by_condition: BTreeMap<String, Vec<&PromptResult>> = BTreeMap::new();
    for p in prompts.iter().filter(|p| p.rows > 0) {
        by_condition.entry(p.condition.clone()).or_default().push(p);
    }
    by_condition
        .into_iter()
        .map(|(condition, ps)| {
            let red: Vec<f64> = ps.iter().map(|p| p.reduction_pct).collect();
            let np: Vec<f64> = ps.iter().map(|p| p.mean_non_parallel).collect();
            let par: Vec<f64> = ps.iter().map(|p| p.mean_parallel).collect();
            ConditionResult {
                condition,
                prompts: ps.len(),
                mean_reduction_pct: mean(&red),
                median_reduction_pct: median(&red),
                std_reduction_pct: std_dev(&red),
                paired_test: paired_t_test(&np, &par),
            }
        })
        .collect()
}

/// The per-prompt results as a table (one row per prompt; layer reductions as `layer_{l}` columns).
pub fn prompts_table(study: &ParallelStudy) -> Table {
    let p = &study.prompts;
    let f = |g: &dyn Fn(&PromptResult) -> f64| ColumnData::F64(p.iter().map(g).collect());
    let mut t = Table::new();
    t.push(
        "run",
        ColumnData::Utf8(p.iter().map(|x| x.run.clone()).collect()),
    )
    .push("seq", ColumnData::I32(p.iter().map(|x| x.seq).collect()))
    .push(
        "condition",
        ColumnData::Utf8(p.iter().map(|x| x.condition.clone()).collect()),
    )
    .push(
        "steps",
        ColumnData::I32(p.iter().map(|x| x.steps).collect()),
    )
    .push(
        "parallel_positions",
        ColumnData::I64(p.iter().map(|x| x.parallel_positions as i64).collect()),
    )
    .push(
        "parallel_tokens",
        ColumnData::I64(p.iter().map(|x| x.parallel_tokens as i64).collect()),
    )
    .push(
        "rows",
        ColumnData::I64(p.iter().map(|x| x.rows as i64).collect()),
    )
    .push("mean_non_parallel", f(&|x| x.mean_non_parallel))
    .push("mean_parallel", f(&|x| x.mean_parallel))
    .push("median_non_parallel", f(&|x| x.median_non_parallel))
    .push("median_parallel", f(&|x| x.median_parallel))
    .push("std_non_parallel", f(&|x| x.std_non_parallel))
    .push("std_parallel", f(&|x| x.std_parallel))
    .push("reduction_pct", f(&|x| x.reduction_pct))
    .push("early_reduction_pct", f(&|x| x.early_reduction_pct))
    .push("late_reduction_pct", f(&|x| x.late_reduction_pct));
    for k in 0..3 {
        t.push(
            format!("third{}_reduction_pct", k + 1),
            f(&|x| x.thirds_reduction_pct[k]),
        );
    }
    let n_layers = p
        .iter()
        .map(|x| x.layer_reduction_pct.len())
        .max()
        .unwrap_or(0);
    for l in 0..n_layers {
        t.push(
            format!("layer{l}_reduction_pct"),
            f(&|x| x.layer_reduction_pct.get(l).copied().unwrap_or(f64::NAN)),
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use attnscope_io::write_parquet;

    /// A run directory with two sequences whose step rows have known per-slot means.
    fn fake_run(dir: &Path, threshold: f64, par_means: [f32; 2]) {
        std::fs::create_dir_all(dir).unwrap();
        let manifest = serde_json::json!({"generation": {"parallel": {"threshold": threshold}},
                                          "inputs": [{"visibility": "isolated"}]});
        std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
        let mut tokens = Table::new();
        // seq s: prompt slot, then steps 1..=4; step 2 is a parallel set of two tokens.
        let steps = [0, 1, 2, 2, 3, 4];
        let kinds = [
            "prompt",
            "generated",
            "parallel",
            "parallel",
            "generated",
            "generated",
        ];
        tokens
            .push(
                "seq",
                ColumnData::I32([0; 6].into_iter().chain([1; 6]).collect()),
            )
            .push(
                "step",
                ColumnData::I32(steps.iter().chain(&steps).copied().collect()),
            )
            .push(
                "kind",
                ColumnData::Utf8(kinds.iter().chain(&kinds).map(|k| k.to_string()).collect()),
            );
        write_parquet(&dir.join("tokens.parquet"), &tokens).unwrap();
        // Rows at steps 3 and 4, layers 0 and 1: 2 generated slots with mass 0.2 (a_np = 0.1), 2 parallel
        // slots with mass 2·par_mean.
        let mut t = Table::new();
        let (mut seq, mut step, mut layer, mut mg, mut mp) =
            (vec![], vec![], vec![], vec![], vec![]);
        for s in 0..2 {
            for st in [3, 4] {
                for l in 0..2 {
                    seq.push(s);
                    step.push(st);
                    layer.push(l);
                    mg.push(0.2f32);
                    mp.push(2.0 * par_means[s as usize]);
                }
            }
        }
        let n = seq.len();
        t.push("seq", ColumnData::I32(seq))
            .push("step", ColumnData::I32(step))
            .push("layer", ColumnData::I32(layer))
            .push("mass_generated", ColumnData::F32(mg))
            .push("mass_parallel", ColumnData::F32(mp))
            .push("n_generated", ColumnData::I32(vec![2; n]))
            .push("n_parallel", ColumnData::I32(vec![2; n]));
        write_parquet(&dir.join("steps.parquet"), &t).unwrap();
    }

    #[test]
    fn reduction_and_paired_test_follow_the_definitions() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        fake_run(&a, 0.1, [0.05, 0.08]);
        fake_run(&b, 0.1, [0.12, 0.05]);
        let study = analyze_parallel(&[a, b]).unwrap();
        assert_eq!(study.prompts.len(), 4);
        let p = &study.prompts[0];
        assert_eq!(
            (p.parallel_positions, p.parallel_tokens, p.steps, p.rows),
            (1, 2, 4, 4)
        );
        assert!((p.mean_non_parallel - 0.1).abs() < 1e-6 && (p.mean_parallel - 0.05).abs() < 1e-6);
        assert!((p.reduction_pct - 50.0).abs() < 1e-4);
        assert!(
            p.early_reduction_pct.is_nan(),
            "no usable rows before the midpoint"
        );
        assert!((p.late_reduction_pct - 50.0).abs() < 1e-4);
        assert_eq!(p.layer_reduction_pct.len(), 2);
        assert!((study.prompts[2].reduction_pct + 20.0).abs() < 1e-4);
        assert_eq!(study.conditions.len(), 1);
        let c = &study.conditions[0];
        assert_eq!(c.prompts, 4);
        // differences a_np − a_par: 0.05, 0.02, −0.02, 0.05
        let t = c.paired_test.unwrap();
        assert!((t.mean_difference - 0.025).abs() < 1e-6, "{t:?}");
        assert_eq!(t.df, 3.0);
        let e = analyze_parallel(&[tmp.path().join("nope")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("steps.parquet"), "{e}");
    }
}
