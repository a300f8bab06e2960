//! `top_tasks`: the threads that ran, switched, waited or were woken most in
//! a window.

use std::collections::HashMap;

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, params};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::durations::{CLIPPED_DUR, Dur, clip};
use super::percentiles::{EXACT_MAX_WAKEUPS, PercentileMethod, histogram, latencies, percentile};
use super::tasks::{TaskId, state_scan_start, task_ids};
use super::timespec::{TraceBounds, Window, WindowArg, WindowOut, resolve_window, trace_bounds};
use super::tool::{Tool, count_arg};
use crate::analyzer::aggregate::{self, WindowSplit};
use crate::analyzer::tables::RUNNABLE_STATES;

/// What `top_tasks` ranks by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskOrder {
    /// Time running on a CPU.
    #[default]
    CpuTime,
    /// Times switched in.
    Switches,
    /// Runnable time: waiting for a CPU (thread_state R and R+; defined with the wakeup table).
    RunnableTime,
    /// Worst wakeup-to-running latency.
    Latency,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TopTasks {
    pub window: WindowOut,
    pub order_by: TaskOrder,
    /// Tasks, best first.
    pub tasks: Vec<TaskStats>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TaskStats {
    #[serde(flatten)]
    pub task: TaskId,
    /// Time running within the window.
    pub cpu_time: Dur,
    /// Times switched in within the window.
    pub switches: i64,
    /// Runnable time (thread_state R and R+) within the window.
    pub runnable_time: Dur,
    /// Wakeups within the window with a known latency.
    pub wakeups: i64,
    /// 99th percentile wakeup-to-running latency (absent without wakeups).
    pub latency_p99: Option<Dur>,
    /// How latency_p99 was computed (absent without wakeups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p99_method: Option<PercentileMethod>,
    /// Worst wakeup-to-running latency.
    pub latency_max: Option<Dur>,
}

/// One thread's totals in a window.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    cpu_ns: i64,
    switches: i64,
    runnable_ns: i64,
    wakeups: i64,
    latency_max: Option<i64>,
}

/// Every non-idle thread's totals in [lo, hi): whole buckets from agg_thread,
/// partial ones from the event tables through their indexes.
fn thread_totals(
    conn: &Connection,
    b: &TraceBounds,
    split: &WindowSplit,
) -> Result<HashMap<i64, Totals>> {
    let mut out: HashMap<i64, Totals> = HashMap::new();
    if let Some((f0, f1)) = split.full {
        let mut st = conn.prepare(
            "SELECT utid, sum(cpu_ns), sum(switches), sum(runnable_ns), sum(wakeups), max(latency_max)
             FROM agg_thread WHERE ts >= ?1 AND ts < ?2 GROUP BY utid",
        )?;
        let mut rows = st.query(params![f0, f1])?;
        while let Some(r) = rows.next()? {
            out.insert(
                r.get(0)?,
                Totals {
                    cpu_ns: r.get(1)?,
                    switches: r.get(2)?,
                    runnable_ns: r.get(3)?,
                    wakeups: r.get(4)?,
                    latency_max: r.get(5)?,
                },
            );
        }
    }
    if !split.edges.is_empty() {
        let mut st = conn.prepare("SELECT cpu FROM cpu UNION SELECT DISTINCT cpu FROM agg_cpu")?;
        let cpus: Vec<i64> = st
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut inside = conn.prepare_cached(
            "SELECT ts, dur, utid FROM sched_slice WHERE cpu = ?1 AND ts >= ?2 AND ts < ?3",
        )?;
        let mut before = conn.prepare_cached(
            "SELECT ts, dur, utid FROM sched_slice WHERE cpu = ?1 AND ts < ?2
             ORDER BY ts DESC LIMIT 1",
        )?;
        // Threads runnable at some time in a bucket have runnable_ns there.
        let mut waiting =
            conn.prepare_cached("SELECT utid FROM agg_thread WHERE ts = ?1 AND runnable_ns > 0")?;
        let mut wakes = conn.prepare_cached(
            "SELECT utid, latency FROM wakeup WHERE ts >= ?1 AND ts < ?2 AND latency IS NOT NULL",
        )?;
        for &(lo, hi) in &split.edges {
            for &cpu in &cpus {
                let mut add = |ts: i64, dur: i64, utid: i64| {
                    let t = out.entry(utid).or_default();
                    t.cpu_ns += clip(ts, dur, lo, hi, b.end_ts);
                    t.switches += i64::from(ts >= lo);
                };
                let mut rows = inside.query(params![cpu, lo, hi])?;
                while let Some(r) = rows.next()? {
                    add(r.get(0)?, r.get(1)?, r.get(2)?);
                }
                if let Some((ts, dur, utid)) = before
                    .query_row(params![cpu, lo], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?
                {
                    add(ts, dur, utid);
                }
            }
            let bucket = lo.div_euclid(split.width) * split.width;
            let utids: Vec<i64> = waiting
                .query_map([bucket], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for utid in utids {
                out.entry(utid).or_default().runnable_ns += thread_runnable(conn, b, lo, hi, utid)?;
            }
            let mut rows = wakes.query(params![lo, hi])?;
            while let Some(r) = rows.next()? {
                let t = out.entry(r.get(0)?).or_default();
                t.wakeups += 1;
                t.latency_max = t.latency_max.max(Some(r.get(1)?));
            }
        }
    }
    let mut st = conn.prepare("SELECT utid FROM thread WHERE tid = 0")?;
    for idle in st.query_map([], |r| r.get::<_, i64>(0))? {
        out.remove(&idle?);
    }
    Ok(out)
}

/// The threads that ran, waited or woke most in a window.
pub fn top_tasks(
    conn: &Connection,
    w: Window,
    order_by: TaskOrder,
    limit: usize,
) -> Result<TopTasks> {
    let b = trace_bounds(conn)?;
    let (lo, hi) = (b.abs(w.start), b.abs(w.end));
    let split = aggregate::split_window(aggregate::width(conn)?, lo, hi);
    let totals = thread_totals(conn, &b, &split)?;
    // A thread takes part in a ranking when it has rows of that metric.
    let key = |t: &Totals| -> Option<i64> {
        match order_by {
            TaskOrder::CpuTime => (t.cpu_ns > 0 || t.switches > 0).then_some(t.cpu_ns),
            TaskOrder::Switches => (t.switches > 0).then_some(t.switches),
            TaskOrder::RunnableTime => (t.runnable_ns > 0).then_some(t.runnable_ns),
            TaskOrder::Latency => t.latency_max,
        }
    };
    let mut ranked: Vec<(i64, i64)> = totals
        .iter()
        .filter_map(|(&u, t)| key(t).map(|v| (v, u)))
        .collect();
    ranked.sort_by_key(|&(v, u)| (std::cmp::Reverse(v), u));
    ranked.truncate(limit);
    let utids: Vec<i64> = ranked.iter().map(|x| x.1).collect();
    let ids = task_ids(conn, &utids)?;
    let mut tasks = Vec::new();
    for utid in utids {
        let Some(task) = ids.get(&utid).cloned() else {
            continue;
        };
        let t = totals[&utid];
        let p99 = if t.wakeups == 0 {
            None
        } else if t.wakeups <= EXACT_MAX_WAKEUPS {
            let lat = latencies(conn, lo, hi, &[utid])?;
            percentile(&lat, 99.0).map(|p| (p, PercentileMethod::Exact))
        } else {
            let hist = histogram(conn, &split, Some(&[utid]))?;
            hist.percentile(99.0, t.latency_max.unwrap_or(i64::MAX))
                .map(|p| (p, PercentileMethod::Histogram))
        };
        tasks.push(TaskStats {
            task,
            cpu_time: Dur::new(t.cpu_ns),
            switches: t.switches,
            runnable_time: Dur::new(t.runnable_ns),
            wakeups: t.wakeups,
            latency_p99: p99.map(|p| Dur::new(p.0)),
            latency_p99_method: p99.map(|p| p.1),
            latency_max: t.latency_max.map(Dur::new),
        });
    }
    Ok(TopTasks {
        window: WindowOut::new(w, &b),
        order_by,
        tasks,
    })
}

/// Runnable time of one thread in [lo, hi), via thread_state(utid, ts).
fn thread_runnable(conn: &Connection, b: &TraceBounds, lo: i64, hi: i64, utid: i64) -> Result<i64> {
    let from = state_scan_start(conn, utid, lo)?;
    let states = RUNNABLE_STATES.map(|s| format!("'{s}'")).join(", ");
    let mut st = conn.prepare_cached(&format!(
        "SELECT coalesce(sum({CLIPPED_DUR}), 0) FROM thread_state
         WHERE utid = ?4 AND ts >= ?5 AND ts < ?2 AND state IN ({states})"
    ))?;
    Ok(st.query_row(params![lo, hi, b.end_ts, utid, from], |r| r.get(0))?)
}

// ---------------------------------------------------------------------- tool

#[derive(Debug, Deserialize, JsonSchema)]
pub struct TopTasksArgs {
    /// Default cpu_time; runnable_time: waiting for a CPU (R, R+); latency: worst
    /// wakeup.
    pub order_by: Option<TaskOrder>,
    /// Window, e.g. "1s..1.2s"; default: the whole trace.
    pub window: Option<WindowArg>,
    /// Most tasks: default 10, at most 100.
    pub limit: Option<i64>,
}

pub const TOOL: Tool<TopTasksArgs, TopTasks> = Tool {
    name: "top_tasks",
    description: "Threads by CPU time, switches, runnable time or worst wakeup latency in a \
                  window, with all four.",
    answer: |trace, a| {
        let limit = count_arg("limit", a.limit, 10, 100)?;
        let w = resolve_window(trace.conn, a.window.as_ref())?;
        top_tasks(trace.conn, w, a.order_by.unwrap_or_default(), limit)
    },
};
