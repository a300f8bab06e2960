//! `cpu_timeline`: what ran on one CPU over time, merged and capped, with
//! the idle gaps; and who held a CPU while a task waited for it.

use std::collections::{HashMap, HashSet};

use anyhow::{Result, bail};
use rusqlite::{Connection, OptionalExtension, params};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cpu_utilization::busy_per_cpu;
use super::durations::{Dur, clip};
use super::tasks::task_ids;
use super::timespec::{RelTime, TraceBounds, Window, WindowArg, WindowOut, resolve_window};
use super::tool::{Tool, count_arg};
use crate::analyzer::aggregate;

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CpuTimeline {
    pub window: WindowOut,
    pub cpu: i64,
    /// Time non-idle threads ran on the CPU in the whole window.
    pub busy: Dur,
    /// busy / window length, percent.
    pub utilization_pct: f64,
    /// In time order: consecutive slices of one thread merged into one run,
    /// idle time (the idle thread, or no slice at all) as runs of tid 0.
    pub runs: Vec<CpuRun>,
    /// Set when `limit` cut the listing: the runs stop here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listed_until: Option<RelTime>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CpuRun {
    pub start: RelTime,
    pub dur: Dur,
    /// Thread id; 0 for idle.
    pub tid: i64,
    /// Thread name; "idle" for idle.
    pub name: Option<String>,
    /// Process id, if known (absent for idle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i64>,
}

/// A thread that ran on a CPU while another waited for it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Holder {
    pub tid: i64,
    pub name: Option<String>,
    /// Its time on the CPU within the wait, ns.
    pub ns: i64,
}

/// How many holders a wait lists.
pub(crate) const HOLDERS: usize = 3;

/// The idle threads' utids (every CPU's swapper, tid 0).
fn idle_utids(conn: &Connection) -> Result<HashSet<i64>> {
    let mut st = conn.prepare_cached("SELECT utid FROM thread WHERE tid = 0")?;
    let set = st
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(set)
}

/// Calls `f(ts, dur, utid)` for each sched_slice of `cpu` overlapping [lo, hi)
/// (absolute), in time order, until it returns false.
fn slices_on_cpu(
    conn: &Connection,
    cpu: i64,
    lo: i64,
    hi: i64,
    mut f: impl FnMut(i64, i64, i64) -> bool,
) -> Result<()> {
    let mut before = conn.prepare_cached(
        "SELECT ts, dur, utid FROM sched_slice WHERE cpu = ?1 AND ts < ?2
         ORDER BY ts DESC LIMIT 1",
    )?;
    let row = |r: &rusqlite::Row| -> rusqlite::Result<(i64, i64, i64)> {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    };
    if let Some((ts, dur, utid)) = before.query_row(params![cpu, lo], row).optional()?
        && !f(ts, dur, utid)
    {
        return Ok(());
    }
    let mut inside = conn.prepare_cached(
        "SELECT ts, dur, utid FROM sched_slice WHERE cpu = ?1 AND ts >= ?2 AND ts < ?3
         ORDER BY ts",
    )?;
    let mut rows = inside.query(params![cpu, lo, hi])?;
    while let Some(r) = rows.next()? {
        let (ts, dur, utid) = row(r)?;
        if !f(ts, dur, utid) {
            break;
        }
    }
    Ok(())
}

/// Runs being listed: (start, end, utid) absolute, utid 0 for idle.
struct Runs {
    runs: Vec<(i64, i64, i64)>,
    limit: usize,
    /// Where the listing stopped, when `limit` was reached.
    until: Option<i64>,
}

impl Runs {
    /// Adds [start, end) of `utid`, merged into the last run when it continues
    /// it; false once the listing is full.
    fn push(&mut self, start: i64, end: i64, utid: i64) -> bool {
        if end <= start {
            return true;
        }
        if let Some(last) = self.runs.last_mut()
            && last.2 == utid
            && last.1 == start
        {
            last.1 = end;
            return true;
        }
        if self.runs.len() >= self.limit {
            self.until = Some(start);
            return false;
        }
        self.runs.push((start, end, utid));
        true
    }
}

/// What ran on `cpu` in the window, at most `limit` runs.
pub fn cpu_timeline(conn: &Connection, cpu: i64, w: Window, limit: usize) -> Result<CpuTimeline> {
    let b = super::timespec::trace_bounds(conn)?;
    let busy = busy_per_cpu(conn, &b, w)?;
    let Some(&busy) = busy.get(&cpu) else {
        let cpus: Vec<i64> = busy.keys().copied().collect();
        bail!("no CPU {cpu} in this trace; its CPUs are {cpus:?}");
    };
    let (lo, hi) = (b.abs(w.start), b.abs(w.end));
    let idle = idle_utids(conn)?;
    let mut runs = Runs {
        runs: Vec::new(),
        limit,
        until: None,
    };
    let mut cursor = lo;
    slices_on_cpu(conn, cpu, lo, hi, |ts, dur, utid| {
        let utid = if idle.contains(&utid) { 0 } else { utid };
        let len = clip(ts, dur, lo, hi, b.end_ts);
        let start = ts.max(lo);
        // No slice at all between the previous one and this one: idle too.
        if start > cursor && !runs.push(cursor, start, 0) {
            return false;
        }
        if len == 0 {
            return true;
        }
        cursor = start + len;
        runs.push(start, cursor, utid)
    })?;
    if runs.until.is_none() && cursor < hi {
        runs.push(cursor, hi, 0);
    }
    let Runs { runs, until, .. } = runs;
    let ids = task_ids(conn, &runs.iter().map(|r| r.2).collect::<Vec<_>>())?;
    let len = w.end - w.start;
    Ok(CpuTimeline {
        window: WindowOut::new(w, &b),
        cpu,
        busy: Dur::new(busy),
        utilization_pct: if len > 0 {
            (busy as f64 * 10_000.0 / len as f64).round() / 100.0
        } else {
            0.0
        },
        runs: runs
            .into_iter()
            .map(|(s, e, utid)| {
                let id = (utid != 0).then(|| ids.get(&utid)).flatten();
                CpuRun {
                    start: RelTime::new(b.rel(s)),
                    dur: Dur::new(e - s),
                    tid: id.map_or(0, |t| t.tid),
                    name: match id {
                        Some(t) => t.thread_name.clone(),
                        None => Some("idle".into()),
                    },
                    pid: id.and_then(|t| t.pid),
                }
            })
            .collect(),
        listed_until: until.map(|t| RelTime::new(b.rel(t))),
    })
}

/// The non-idle threads that ran on `cpu` in [lo, hi) (absolute), most time
/// first, at most `n`: what held the CPU while a task waited for it.
pub(crate) fn holders(
    conn: &Connection,
    b: &TraceBounds,
    cpu: i64,
    lo: i64,
    hi: i64,
    n: usize,
) -> Result<Vec<Holder>> {
    let idle = idle_utids(conn)?;
    let mut time: HashMap<i64, i64> = HashMap::new();
    // A wait can last seconds, millions of slices: whole buckets come from
    // agg_cpu_thread, only the two partial ones from sched_slice.
    let split = aggregate::split_window(aggregate::width(conn)?, lo, hi);
    if let Some((f0, f1)) = split.full {
        let mut st = conn.prepare_cached(
            "SELECT utid, sum(cpu_ns) FROM agg_cpu_thread
             WHERE cpu = ?1 AND ts >= ?2 AND ts < ?3 GROUP BY utid",
        )?;
        for row in st.query_map(params![cpu, f0, f1], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })? {
            let (utid, ns) = row?;
            *time.entry(utid).or_default() += ns;
        }
    }
    for &(lo, hi) in &split.edges {
        slices_on_cpu(conn, cpu, lo, hi, |ts, dur, utid| {
            let len = clip(ts, dur, lo, hi, b.end_ts);
            if len > 0 {
                *time.entry(utid).or_default() += len;
            }
            true
        })?;
    }
    time.retain(|utid, _| !idle.contains(utid));
    let mut top: Vec<(i64, i64)> = time.into_iter().collect();
    top.sort_by_key(|&(utid, ns)| (std::cmp::Reverse(ns), utid));
    top.truncate(n);
    let ids = task_ids(conn, &top.iter().map(|t| t.0).collect::<Vec<_>>())?;
    Ok(top
        .into_iter()
        .map(|(utid, ns)| Holder {
            tid: ids.get(&utid).map_or(-1, |t| t.tid),
            name: ids.get(&utid).and_then(|t| t.thread_name.clone()),
            ns,
        })
        .collect())
}

// ---------------------------------------------------------------------- tool

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CpuTimelineArgs {
    /// CPU number.
    pub cpu: i64,
    /// Window, e.g. "1s..1.2s"; default: the whole trace.
    pub window: Option<WindowArg>,
    /// Most runs: default 20, at most 2000.
    pub limit: Option<i64>,
}

pub const TOOL: Tool<CpuTimelineArgs, CpuTimeline> = Tool {
    name: "cpu_timeline",
    description: "What ran on one CPU in a window: each thread's runs in time order, idle gaps as \
                  tid 0, busy time.",
    answer: |trace, a| {
        let limit = count_arg("limit", a.limit, 20, 2000)?;
        let w = resolve_window(trace.conn, a.window.as_ref())?;
        cpu_timeline(trace.conn, a.cpu, w, limit)
    },
};
