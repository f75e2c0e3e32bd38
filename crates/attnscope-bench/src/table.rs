//! The readable table of a bench report: per model a prefill block and a decode block.

use crate::report::{BenchReport, ModelReport};
use std::fmt::Write as _;

/// A number with about three significant digits.
pub fn sig3(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        "-".into()
    } else if a >= 100.0 || a == 0.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else if a >= 0.001 {
        format!("{x:.3}")
    } else {
        format!("{x:.1e}")
    }
}

fn opt<T>(x: Option<T>, f: impl FnOnce(T) -> String) -> String {
    x.map_or_else(|| "-".into(), f)
}

fn megabytes(b: Option<u64>) -> String {
    opt(b, |b| format!("{:.0}", b as f64 / 1e6))
}

fn ratio(r: Option<f64>) -> String {
    opt(r, |r| format!("{r:.2}x"))
}

fn percent(f: Option<f64>) -> String {
    opt(f, |f| format!("{}%", sig3(f * 100.0)))
}

/// Aligns `rows` (first row = header) into columns two spaces apart; columns in `left` are left-aligned,
/// the others right-aligned. Every line is indented by `indent` spaces.
pub fn align(rows: &[Vec<String>], left: &[usize], indent: usize) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = " ".repeat(indent);
        for (c, cell) in row.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let pad = widths[c].saturating_sub(cell.chars().count());
            if left.contains(&c) {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn strings<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|s| s.to_string()).collect()
}

/// The readable table: per model a prefill block and a decode block, then skipped items and the device.
pub fn render_table(r: &BenchReport) -> String {
    let mut out = String::new();
    let d = &r.device;
    let _ = writeln!(
        out,
        "device: {}, {}, {}; warm-up {}, repeats {} (median; spread = half the p10-p90 range)",
        d.name, d.kind, d.compute_dtype, r.settings.warmup, r.settings.repeats
    );
    let _ = writeln!(
        out,
        "peaks: {} TFLOP/s, {} GB/s{}",
        opt(d.peak_tflops, sig3),
        opt(d.peak_bandwidth_gbs, sig3),
        if d.peak_tflops.is_none() || d.peak_bandwidth_gbs.is_none() {
            " (unknown: pass --peak-tflops / --peak-bandwidth-gbs, e.g. 989 / 3350 for an H100 SXM in bf16)"
        } else {
            ""
        }
    );
    for m in &r.models {
        let _ = writeln!(
            out,
            "\n{}: {:.1}M params, {} layers, {} heads / {} kv heads x {}, hidden {}, vocab {}",
            m.model,
            m.parameters as f64 / 1e6,
            m.n_layers,
            m.n_heads,
            m.n_kv_heads,
            m.head_dim,
            m.hidden_size,
            m.vocab_size
        );
        if !m.prefill.is_empty() {
            out.push_str(&prefill_table(m));
        }
        if !m.decode.is_empty() {
            out.push('\n');
            out.push_str(&decode_table(m));
        }
    }
    if !r.not_measured.is_empty() {
        out.push_str("\nnot measured:\n");
        for n in &r.not_measured {
            let _ = writeln!(out, "  {n}");
        }
    }
    out
}

/// The prefill rows of one model, aligned.
fn prefill_table(m: &ModelReport) -> String {
    let mut rows = vec![strings([
        "prefill T",
        "mode",
        "median ms",
        "spread",
        "tok/s",
        "TFLOP/s",
        "% peak",
        "peak MB",
        "x none",
    ])];
    for p in &m.prefill {
        rows.push(vec![
            p.t.to_string(),
            p.mode.to_string(),
            sig3(p.median_ms),
            format!("±{:.1}%", spread(p.median_ms, p.p10_ms, p.p90_ms)),
            format!("{:.0}", p.tokens_per_s),
            sig3(p.tflops),
            percent(p.fraction_of_peak),
            megabytes(p.peak_memory_bytes),
            ratio(p.overhead_vs_none),
        ]);
    }
    align(&rows, &[1], 2)
}

/// The decode rows of one model, aligned.
fn decode_table(m: &ModelReport) -> String {
    let mut rows = vec![strings([
        "decode batch",
        "context",
        "mode",
        "ms/step",
        "range",
        "tok/s",
        "GB/s",
        "% peak bw",
        "peak MB",
        "x none",
    ])];
    for p in &m.decode {
        rows.push(vec![
            p.batch.to_string(),
            format!("{}+{}", p.context, p.steps),
            p.mode.to_string(),
            sig3(p.median_ms_per_step),
            format!("{}-{}", sig3(p.min_ms_per_step), sig3(p.max_ms_per_step)),
            format!("{:.1}", p.tokens_per_s),
            sig3(p.bytes_per_s / 1e9),
            percent(p.fraction_of_peak_bandwidth),
            megabytes(p.peak_memory_bytes),
            ratio(p.overhead_vs_none),
        ]);
    }
    align(&rows, &[2], 2)
}

/// Half the p10–p90 range in percent of the median.
fn spread(median: f64, p10: f64, p90: f64) -> f64 {
    if median > 0.0 {
        (p90 - p10) / 2.0 / median * 100.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{apply_peaks, tests::report};

    #[test]
    fn table_smoke() {
        let mut r = report();
        apply_peaks(&mut r);
        let table = render_table(&r);
        for needle in [
            "llama-100m",
            "prefill T",
            "weights_one_layer",
            "1.50x",
            "decode batch",
            "128+16",
            "qwen2.5-7b: skipped",
            "Test CPU",
        ] {
            assert!(table.contains(needle), "{needle} missing in\n{table}");
        }
        // Columns line up: every row of the prefill block has the same width up to its last column.
        let block: Vec<&str> = table
            .lines()
            .skip_while(|l| !l.contains("prefill T"))
            .take(5)
            .collect();
        let width = block[0].len();
        assert!(
            block.iter().all(|l| l.chars().count() == width),
            "{block:#?}"
        );
    }

    #[test]
    fn formatting_helpers() {
        assert_eq!(sig3(1234.5), "1234");
        assert_eq!(sig3(12.345), "12.3");
        assert_eq!(sig3(1.2345), "1.23");
        assert_eq!(sig3(0.012345), "0.012");
        assert_eq!(sig3(0.0), "0");
        assert_eq!(percent(None), "-");
        let t = align(&[strings(["a", "bb"]), strings(["ccc", "d"])], &[0], 0);
        assert_eq!(t, "a    bb\nccc   d\n");
    }
}
