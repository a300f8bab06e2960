//! What a recording holds, read back through `schedlens query` (so the
//! benchmark also exercises the loader).

use crate::opts::Opts;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::path::Path;
use std::process::Command;

/// Counts from a recorded trace.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct TraceCounts {
    pub events: u64,
    pub lost: u64,
    pub bytes: u64,
    /// Context switches the recorder received.
    pub switches: u64,
    /// The fullest ring buffer's peak fill (events drop at 100).
    pub ring_peak_fill_pct: u64,
}

/// Removes a recording and the database `schedlens query` cached beside it.
pub fn remove_trace(trace: &Path) {
    let _ = std::fs::remove_file(trace);
    let db = trace.with_extension("pftrace.db");
    let _ = std::fs::remove_file(schedlens::analyzer::columns::path_for(&db));
    let _ = std::fs::remove_file(db);
}

pub fn trace_counts(o: &Opts, trace: &Path) -> Result<TraceCounts> {
    // Counts as the recorder kept them (RecorderStats), not as re-derived by
    // the importer; the schedlens_* counters are bookkeeping, not events.
    let sql = "SELECT \
        (SELECT sum(int_value) FROM metadata WHERE name LIKE 'recorder_events_%' \
           AND name NOT LIKE 'recorder_events_schedlens_%') AS events, \
        (SELECT coalesce(sum(value), 0) FROM stats WHERE name = 'recorder_lost_events_total') AS lost, \
        (SELECT int_value FROM metadata WHERE name = 'recorder_ring_peak_fill_pct') AS ring, \
        (SELECT coalesce(sum(int_value), 0) FROM metadata WHERE name = 'recorder_events_sched_switch') AS switches";
    let text = query_csv(o, trace, sql)?;
    let row = text
        .lines()
        .nth(1)
        .context("schedlens query returned no row")?;
    let mut cells = row.split(',').map(|c| c.trim().parse::<u64>());
    let events = cells
        .next()
        .and_then(|c| c.ok())
        .context("no recorder event counts")?;
    let lost = cells
        .next()
        .and_then(|c| c.ok())
        .context("no recorder lost counts")?;
    let ring_peak_fill_pct = cells
        .next()
        .and_then(|c| c.ok())
        .context("no ring buffer fill")?;
    let switches = cells
        .next()
        .and_then(|c| c.ok())
        .context("no switch count")?;
    let bytes = std::fs::metadata(trace)?.len();
    Ok(TraceCounts {
        events,
        lost,
        bytes,
        switches,
        ring_peak_fill_pct,
    })
}

/// `schedlens query --rebuild --format csv TRACE SQL`: its stdout, header
/// line first.
pub fn query_csv(o: &Opts, trace: &Path, sql: &str) -> Result<String> {
    let out = Command::new(&o.schedlens)
        .args(["query", "--rebuild", "--format", "csv"])
        .arg(trace)
        .arg(sql)
        .output()
        .context("running schedlens query")?;
    if !out.status.success() {
        bail!(
            "schedlens query failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
