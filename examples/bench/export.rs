//! Figure 5, export: `schedlens export` of the big recording to Parquet,
//! its rate in rows per second and its size beside the column file.

use crate::measure::run_measured;
use crate::opts::Opts;
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::Path;
use std::process::Command;

#[derive(Debug, Serialize)]
pub struct ExportFigure {
    pub rows: u64,
    pub wall_s: f64,
    pub rows_per_sec: f64,
    pub max_rss_mib: f64,
    /// Every Parquet file written.
    pub parquet_bytes: u64,
    /// The loaded trace's column file (sched_slice, thread_state, wakeup).
    pub column_file_bytes: u64,
}

/// Exports every table of `trace` (already loaded) into a fresh directory
/// under the work directory, then removes it.
pub fn export(o: &Opts, trace: &Path) -> Result<ExportFigure> {
    let out = o.work.join("export");
    let _ = std::fs::remove_dir_all(&out);
    let (text, cost) = run_measured(
        Command::new(&o.schedlens)
            .args(["export", "--host", "bench", "-o"])
            .arg(&out)
            .arg(trace),
    )?;
    // "schedlens: exported N rows of ..."
    let rows: u64 = text
        .split("exported ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("schedlens export did not say how many rows it wrote")?;
    let parquet_bytes = dir_bytes(&out)?;
    let _ = std::fs::remove_dir_all(&out);
    let db = trace.with_extension("pftrace.db");
    let column_file_bytes = std::fs::metadata(schedlens::analyzer::columns::path_for(&db))
        .map(|m| m.len())
        .context("the loaded trace has no column file beside it")?;
    Ok(ExportFigure {
        rows,
        wall_s: cost.wall_s,
        rows_per_sec: rows as f64 / cost.wall_s,
        max_rss_mib: cost.max_rss_kib as f64 / 1024.0,
        parquet_bytes,
        column_file_bytes,
    })
}

fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        total += if t.is_dir() {
            dir_bytes(&e.path())?
        } else {
            e.metadata()?.len()
        };
    }
    Ok(total)
}
