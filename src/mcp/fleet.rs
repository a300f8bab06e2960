//! `fleet_summary`: one row per trace the server offers (a fleet directory of
//! `--trace-dir`, say), each answered from that trace's own database: host,
//! wall-clock start, length, CPU use, wakeup latency and the busiest process.
//!
//! Why the per-trace databases and not the exported Parquet through an
//! embedded DuckDB: the databases exist the moment a trace is served (the
//! other tools need them anyway), and the duckdb crate builds DuckDB's C++
//! from source (minutes and gigabytes per build). Questions that join rows
//! across hosts go to `schedlens export` and an engine of the user's choice.

use schemars::JsonSchema;
use serde::Serialize;

use super::call::SandboxedDb;
use crate::analyses::durations::Dur;
use crate::analyses::metadata::{meta_str, wall_clock};
use crate::analyses::timespec::trace_bounds;

#[derive(Debug, Serialize, JsonSchema)]
pub struct FleetSummary {
    /// Every trace, in list_traces order.
    pub traces: Vec<FleetTrace>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FleetTrace {
    /// Name to pass as `trace` to the other tools.
    pub trace: String,
    /// Why this trace has no summary (it failed to load), else absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(flatten)]
    pub summary: Option<TraceSummary>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TraceSummary {
    /// Host the trace was recorded on (uname nodename), null if the trace does not say.
    pub host: Option<String>,
    /// Wall-clock time of the first event (RFC 3339, UTC), null without a clock snapshot.
    pub start_wall_clock: Option<String>,
    pub duration: Dur,
    pub cpus: i64,
    /// Time non-idle threads ran, as a percentage of duration x cpus.
    pub busy_pct: f64,
    /// Wakeups whose thread ran again within the trace.
    pub wakeups: i64,
    /// Their waking-to-running latency: 99th percentile (nearest rank) and maximum.
    pub latency_p99: Option<Dur>,
    pub latency_max: Option<Dur>,
    /// The process with the most CPU time, and that time.
    pub top_process: Option<String>,
    pub top_process_cpu: Option<Dur>,
    /// Events the recorder lost (ring buffers full): the figures above undercount if not 0.
    pub lost_events: i64,
}

pub const NAME: &str = "fleet_summary";
pub const DESCRIPTION: &str = "Per trace served (loading each): host, start, duration, CPUs, \
    busy %, wakeup p99/max, busiest process, drops.";

/// The summary of one trace, from its database.
pub fn summarize(db: &mut SandboxedDb) -> anyhow::Result<TraceSummary> {
    let conn = db.db.conn();
    let bounds = trace_bounds(conn)?;
    let cpus: i64 = conn.query_row("SELECT count(*) FROM cpu", [], |r| r.get(0))?;
    let busy: i64 = conn.query_row("SELECT coalesce(sum(busy_ns), 0) FROM agg_cpu", [], |r| {
        r.get(0)
    })?;
    let wakeups: i64 = conn.query_row(
        "SELECT count(*) FROM wakeup WHERE latency IS NOT NULL",
        [],
        |r| r.get(0),
    )?;
    // Nearest rank from the top: the column file's latency index answers it.
    let nth_worst = |rank: i64| -> anyhow::Result<Option<Dur>> {
        if wakeups == 0 {
            return Ok(None);
        }
        let ns: i64 = conn.query_row(
            "SELECT latency FROM wakeup WHERE latency IS NOT NULL ORDER BY latency DESC LIMIT 1 OFFSET ?1",
            [rank],
            |r| r.get(0),
        )?;
        Ok(Some(Dur::new(ns)))
    };
    let top = conn
        .query_row(
            "SELECT coalesce(p.name, t.name), sum(a.cpu_ns) AS cpu FROM agg_thread a \
             JOIN thread t USING (utid) LEFT JOIN process p USING (upid) WHERE a.utid <> 0 \
             GROUP BY coalesce(t.upid, -1 - t.utid) ORDER BY cpu DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?)),
        )
        .ok();
    let lost: i64 = conn.query_row("SELECT coalesce(sum(count), 0) FROM lost_events", [], |r| {
        r.get(0)
    })?;
    let start_wall_clock = wall_clock(conn, bounds.start_ts)?;
    let span = bounds.duration() as f64 * cpus as f64;
    Ok(TraceSummary {
        host: meta_str(conn, "host_name")?,
        start_wall_clock,
        duration: Dur::new(bounds.duration()),
        cpus,
        busy_pct: if span > 0.0 {
            (busy as f64 * 1000.0 / span).round() / 10.0
        } else {
            0.0
        },
        wakeups,
        latency_p99: nth_worst(wakeups / 100)?,
        latency_max: nth_worst(0)?,
        top_process: top.as_ref().and_then(|t| t.0.clone()),
        top_process_cpu: top.map(|t| Dur::new(t.1)),
        lost_events: lost,
    })
}
