//! One line per benchmark figure for `scripts/bench.sh`'s summary table: appended, tab
//! separated, to the file named by `ARTSTORE_BENCH_SUMMARY` when it is set (a benchmark run by
//! hand just prints). Columns: benchmark, figure, ceiling, ratio, goal, pass.

use std::io::Write;

/// One row of the summary: the figure, the ceiling measured in the same run, the goal.
pub struct Row<'a> {
    pub benchmark: &'a str,
    pub figure: String,
    pub ceiling: String,
    /// Figure as a share of the ceiling, when they compare (same unit).
    pub ratio: Option<f64>,
    pub goal: &'a str,
    pub pass: bool,
}

/// Appends `row` to the summary file, if one was asked for.
pub fn record(row: Row<'_>) {
    let Ok(path) = std::env::var("ARTSTORE_BENCH_SUMMARY") else {
        return;
    };
    let clean = |s: &str| s.replace(['\t', '\n'], " ");
    let line = format!(
        "{}\t{}\t{}\t{}\t{}\t{}\n",
        clean(row.benchmark),
        clean(&row.figure),
        clean(&row.ceiling),
        row.ratio
            .map(|r| format!("{:.0} %", 100.0 * r))
            .unwrap_or_else(|| "—".into()),
        clean(row.goal),
        if row.pass { "pass" } else { "FAIL" }
    );
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!("bench summary {path}: {e}");
    }
}
