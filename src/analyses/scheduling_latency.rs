//! `scheduling_latency`: how long woken threads waited to run (sched_waking
//! to running), as percentiles and the worst cases.

use anyhow::{Result, bail};
use rusqlite::{Connection, OptionalExtension, params};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cpu_timeline::{HOLDERS, Holder, holders};
use super::durations::Dur;
use super::interference::{WaitInterrupts, interrupts_within};
use super::percentiles::{
    EXACT_MAX_WAKEUPS, PercentileMethod, histogram, latencies, percentile_in_place,
};
use super::search_events;
use super::stacks;
use super::tasks::{TaskFilter, TaskId, filter_utids, task_ids};
use super::timespec::{RelTime, Window, WindowArg, WindowOut, resolve_window, trace_bounds};
use super::tool::{Tool, count_arg};
use crate::analyzer::aggregate::{self, HIST_REL_ERROR, WindowSplit};
use crate::model::stack::StackKind;

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SchedulingLatency {
    pub window: WindowOut,
    /// Threads the filter matched (utids), absent when unfiltered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_threads: Option<usize>,
    /// Wakeups in the window with a known latency.
    pub count: usize,
    pub p50: Option<Dur>,
    pub p90: Option<Dur>,
    pub p99: Option<Dur>,
    pub p99_9: Option<Dur>,
    pub max: Option<Dur>,
    /// How p50..p99_9 were computed: exact up to 100000 wakeups in the window,
    /// else from a histogram.
    pub percentile_method: PercentileMethod,
    /// Largest error of p50..p99_9 relative to the exact values, percent (0 when exact).
    pub percentile_error_pct: f64,
    /// The worst wakeups, worst first.
    pub worst: Vec<WakeupCase>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WakeupCase {
    /// Wakeup row id (wakeup.id).
    pub id: i64,
    /// When the wakeup happened.
    pub at: RelTime,
    /// Waking to running.
    pub latency: Dur,
    /// The woken thread.
    pub task: TaskId,
    /// Thread that woke it, if known.
    pub waker: Option<TaskId>,
    pub waking_cpu: i64,
    pub target_cpu: Option<i64>,
    /// CPU it then ran on.
    pub run_cpu: Option<i64>,
    /// What held run_cpu while it waited (waking to running), most time first, at most 3.
    pub held_by: Vec<Holder>,
    /// IRQ/softirq time on run_cpu meanwhile, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by_irq: Option<WaitInterrupts>,
    /// The sleep this wakeup ended, when the thread was in S or D.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slept: Option<Sleep>,
    /// Where the waker was when it woke the thread (recorded with --stacks
    /// waker): innermost frames, ';'-joined, outermost first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waker_stack: Option<String>,
}

/// Why a woken thread had been off the CPU.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Sleep {
    /// S or D.
    pub state: String,
    /// From blocking to this wakeup.
    pub dur: Dur,
    /// For D: the kernel function it blocked in (thread_state.blocked_function).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_function: Option<String>,
    /// Where it blocked (recorded with --stacks off-cpu): innermost frames,
    /// ';'-joined, outermost first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

/// Waking-to-running latency percentiles and the worst cases.
pub fn scheduling_latency(
    conn: &Connection,
    filter: &TaskFilter,
    w: Window,
    worst: usize,
) -> Result<SchedulingLatency> {
    let b = trace_bounds(conn)?;
    let (lo, hi) = (b.abs(w.start), b.abs(w.end));
    let utids = if filter.is_empty() {
        None
    } else {
        let utids = filter_utids(conn, filter)?;
        if utids.is_empty() {
            bail!(
                "no thread matches the filter; {} finds tasks by name, tid or pid",
                search_events::TOOL.name
            );
        }
        Some(utids)
    };
    let split = aggregate::split_window(aggregate::width(conn)?, lo, hi);
    let (count, max) = latency_count_max(conn, &split, utids.as_deref())?;
    let (method, [p50, p90, p99, p99_9], worst_rows) = if count <= EXACT_MAX_WAKEUPS {
        let lat = latencies(conn, lo, hi, utids.as_deref().unwrap_or(&[]))?;
        let mut values: Vec<i64> = lat.iter().map(|x| x.1).collect();
        let mut p = |q| percentile_in_place(&mut values, q);
        let ps = [p(50.0), p(90.0), p(99.0), p(99.9)];
        let mut worst_rows = lat;
        let k = worst.min(worst_rows.len());
        if k > 0 && k < worst_rows.len() {
            worst_rows.select_nth_unstable_by_key(k - 1, |x| (std::cmp::Reverse(x.1), x.0));
        }
        worst_rows.truncate(k);
        worst_rows.sort_by_key(|x| (std::cmp::Reverse(x.1), x.0));
        (PercentileMethod::Exact, ps, worst_rows)
    } else {
        let hist = histogram(conn, &split, utids.as_deref())?;
        let top = max.unwrap_or(i64::MAX);
        let ps = [50.0, 90.0, 99.0, 99.9].map(|q| hist.percentile(q, top));
        (
            PercentileMethod::Histogram,
            ps,
            worst_wakeups(conn, lo, hi, utids.as_deref(), worst)?,
        )
    };
    let matched = utids.as_ref().map(Vec::len);
    let mut st = conn.prepare(
        "SELECT ts, utid, waker_utid, waking_cpu, target_cpu, run_cpu, run_ts FROM wakeup
         WHERE id = ?1",
    )?;
    let mut cases = Vec::new();
    for (id, latency) in worst_rows {
        let (ts, utid, waker, waking_cpu, target_cpu, run_cpu, run_ts) =
            st.query_row([id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                ))
            })?;
        let (held_by, held_by_irq) = match (run_cpu, run_ts) {
            (Some(cpu), Some(run_ts)) => (
                holders(conn, &b, cpu, ts, run_ts, HOLDERS)?,
                interrupts_within(conn, &b, cpu, ts, run_ts)?,
            ),
            _ => (Vec::new(), None),
        };
        let slept = sleep_before(conn, utid, ts)?;
        let waker_stack = match waker {
            Some(w) => stacks::stack_at(conn, StackKind::Waker, w, ts)?,
            None => None,
        };
        let ids = task_ids(conn, &[utid].into_iter().chain(waker).collect::<Vec<_>>())?;
        let Some(task) = ids.get(&utid).cloned() else {
            continue;
        };
        cases.push(WakeupCase {
            id,
            at: RelTime::new(b.rel(ts)),
            latency: Dur::new(latency),
            task,
            waker: waker.and_then(|u| ids.get(&u).cloned()),
            waking_cpu,
            target_cpu,
            run_cpu,
            held_by,
            held_by_irq,
            slept,
            waker_stack,
        });
    }
    Ok(SchedulingLatency {
        window: WindowOut::new(w, &b),
        matched_threads: matched,
        count: count as usize,
        p50: p50.map(Dur::new),
        p90: p90.map(Dur::new),
        p99: p99.map(Dur::new),
        p99_9: p99_9.map(Dur::new),
        max: max.map(Dur::new),
        percentile_method: method,
        percentile_error_pct: match method {
            PercentileMethod::Exact => 0.0,
            PercentileMethod::Histogram => (HIST_REL_ERROR * 10_000.0).round() / 100.0,
        },
        worst: cases,
    })
}

/// The sleep of `utid` that its wakeup at `ts` ended: its latest state
/// before `ts`, when that is S or D, with the function and stack where it
/// blocked.
fn sleep_before(conn: &Connection, utid: i64, ts: i64) -> Result<Option<Sleep>> {
    let mut st = conn.prepare_cached(
        "SELECT ts, state, blocked_function FROM thread_state
         WHERE utid = ?1 AND ts = (SELECT max(ts) FROM thread_state WHERE utid = ?1 AND ts < ?2)",
    )?;
    let row: Option<(i64, Option<String>, Option<String>)> = st
        .query_row(params![utid, ts], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((start, Some(state), blocked_function)) = row else {
        return Ok(None);
    };
    if state != "S" && state != "D" {
        return Ok(None);
    }
    Ok(Some(Sleep {
        state,
        dur: Dur::new(ts - start),
        blocked_function,
        stack: stacks::stack_at(conn, StackKind::OffCpu, utid, start)?,
    }))
}

/// Wakeups with a latency in the window (of `utids` only, if given), and the
/// largest latency: whole buckets from agg_thread, partial ones from wakeup.
fn latency_count_max(
    conn: &Connection,
    split: &WindowSplit,
    utids: Option<&[i64]>,
) -> Result<(i64, Option<i64>)> {
    let (mut count, mut max) = (0i64, None::<i64>);
    if let Some((f0, f1)) = split.full {
        let mut all = conn.prepare_cached(
            "SELECT coalesce(sum(wakeups), 0), max(latency_max) FROM agg_thread
             WHERE ts >= ?1 AND ts < ?2",
        )?;
        let mut one = conn.prepare_cached(
            "SELECT coalesce(sum(wakeups), 0), max(latency_max) FROM agg_thread
             WHERE utid = ?3 AND ts >= ?1 AND ts < ?2",
        )?;
        let mut add = |(n, m): (i64, Option<i64>)| {
            count += n;
            max = max.max(m);
        };
        match utids {
            None => add(all.query_row(params![f0, f1], |r| Ok((r.get(0)?, r.get(1)?)))?),
            Some(utids) => {
                for &u in utids {
                    add(one.query_row(params![f0, f1, u], |r| Ok((r.get(0)?, r.get(1)?)))?);
                }
            }
        }
    }
    for &(lo, hi) in &split.edges {
        for (_, l) in latencies(conn, lo, hi, utids.unwrap_or(&[]))? {
            count += 1;
            max = max.max(Some(l));
        }
    }
    Ok((count, max))
}

/// The `n` worst (wakeup id, latency) in [lo, hi), worst first, walking the
/// wakeup(latency) index down: used when the window holds many wakeups, so few
/// index entries fall outside it before `n` are found. (`+ts`, `+utid`: those
/// conditions are checked per row, so the planner takes the latency order
/// rather than a ts range it would then have to sort.)
fn worst_wakeups(
    conn: &Connection,
    lo: i64,
    hi: i64,
    utids: Option<&[i64]>,
    n: usize,
) -> Result<Vec<(i64, i64)>> {
    let utid_cond = if utids.is_some() {
        "AND +utid IN (SELECT value FROM json_each(?4))"
    } else {
        "AND ?4 IS NULL"
    };
    let mut st = conn.prepare(&format!(
        "SELECT id, latency FROM wakeup
         WHERE latency IS NOT NULL AND +ts >= ?1 AND +ts < ?2 {utid_cond}
         ORDER BY latency DESC, id LIMIT ?3"
    ))?;
    let set = utids.map(serde_json::to_string).transpose()?;
    let rows = st
        .query_map(params![lo, hi, n as i64, set], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

// ---------------------------------------------------------------------- tool

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SchedulingLatencyArgs {
    #[serde(flatten)]
    pub filter: TaskFilter,
    /// Window of the wakeups, e.g. "1s..1.2s"; default: the whole trace.
    pub window: Option<WindowArg>,
    /// Worst cases: default 5, at most 100.
    pub worst: Option<i64>,
}

pub const TOOL: Tool<SchedulingLatencyArgs, SchedulingLatency> = Tool {
    name: "scheduling_latency",
    description: "Wakeup-to-run latency percentiles; worst cases with when, where, why they \
                  slept, who woke them, what held the CPU.",
    answer: |trace, a| {
        let worst = count_arg("worst", a.worst, 5, 100)?;
        let w = resolve_window(trace.conn, a.window.as_ref())?;
        scheduling_latency(trace.conn, &a.filter, w, worst)
    },
};
