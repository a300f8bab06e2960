//! `compare`: an A/B diff of two loaded traces (before and after a change).
//! Threads are matched by process and thread name, as pids differ between
//! recordings; each side's totals come from the per-bucket aggregates, so a
//! comparison costs what two whole-trace summaries cost.

use std::collections::BTreeMap;

use anyhow::Result;
use rusqlite::Connection;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cpu_utilization::{GroupBy, cpu_utilization};
use super::durations::Dur;
use super::scheduling_latency::scheduling_latency;
use super::tasks::{NOT_IDLE, TaskFilter};
use super::timespec::trace_bounds;
use super::tool::count_arg;

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Comparison {
    pub before: String,
    pub after: String,
    /// Trace lengths, ns (before, after): totals below are not scaled to them.
    pub duration_ns: Pair,
    /// The few largest regressions in words, worst first.
    pub regressions: Vec<String>,
    /// Scheduling latency over each whole trace, ns.
    pub latency_p50_ns: Pair,
    pub latency_p99_ns: Pair,
    pub latency_max_ns: Pair,
    /// Utilization per CPU, percent; then per LLC.
    pub cpus: Vec<UtilChange>,
    pub llcs: Vec<UtilChange>,
    /// Per process and thread name, largest change first.
    pub tasks: Vec<TaskChange>,
    /// Names left out by `limit`.
    pub more_tasks: usize,
}

/// A value in each trace (null where absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, JsonSchema)]
pub struct Pair {
    pub before: Option<i64>,
    pub after: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct UtilChange {
    pub id: i64,
    pub before_pct: Option<f64>,
    pub after_pct: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct TaskChange {
    pub process: Option<String>,
    pub thread: Option<String>,
    /// Threads of that name (before, after).
    pub threads: Pair,
    /// Time running, ns.
    pub cpu_ns: Pair,
    /// Times switched in.
    pub switches: Pair,
    /// Time runnable (waiting for a CPU), ns.
    pub wait_ns: Pair,
    /// Largest wakeup latency, ns.
    pub latency_max_ns: Pair,
}

/// Per (process name, thread name): threads, cpu, switches, wait, max latency.
type Totals = BTreeMap<(Option<String>, Option<String>), [i64; 5]>;

fn task_totals(conn: &Connection) -> Result<Totals> {
    let mut st = conn.prepare(&format!(
        "SELECT p.name, t.name, count(DISTINCT a.utid), sum(a.cpu_ns), sum(a.switches),
                sum(a.runnable_ns), coalesce(max(a.latency_max), 0)
         FROM agg_thread a JOIN thread t USING (utid) LEFT JOIN process p USING (upid)
         WHERE a.{NOT_IDLE} GROUP BY 1, 2"
    ))?;
    let mut out = Totals::new();
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        out.insert(
            (r.get(0)?, r.get(1)?),
            [r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?],
        );
    }
    Ok(out)
}

fn utilization(conn: &Connection, by: GroupBy) -> Result<BTreeMap<i64, f64>> {
    let whole = trace_bounds(conn)?.whole();
    Ok(cpu_utilization(conn, whole, by)?
        .groups
        .into_iter()
        .map(|g| (g.id, g.utilization_pct))
        .collect())
}

fn util_changes(a: &BTreeMap<i64, f64>, b: &BTreeMap<i64, f64>) -> Vec<UtilChange> {
    let ids: std::collections::BTreeSet<i64> = a.keys().chain(b.keys()).copied().collect();
    ids.into_iter()
        .map(|id| UtilChange {
            id,
            before_pct: a.get(&id).copied(),
            after_pct: b.get(&id).copied(),
        })
        .collect()
}

/// How much worse `after` is than `before`, ns (negative: better).
fn worse_by(p: &Pair) -> i64 {
    p.after.unwrap_or(0) - p.before.unwrap_or(0)
}

fn describe(name: &str, what: &str, p: &Pair) -> String {
    let (b, a) = (p.before.unwrap_or(0), p.after.unwrap_or(0));
    let pct = if b > 0 {
        format!(" ({:+.0}%)", (a - b) as f64 * 100.0 / b as f64)
    } else {
        String::new()
    };
    format!(
        "{name}: {what} {} -> {}{pct}",
        Dur::new(b).human,
        Dur::new(a).human
    )
}

/// Compares trace `before` (named `names.0`) with `after`.
pub fn compare(
    before: &Connection,
    after: &Connection,
    names: (&str, &str),
    limit: usize,
) -> Result<Comparison> {
    let pair = |f: &dyn Fn(&Connection) -> Result<Option<i64>>| -> Result<Pair> {
        Ok(Pair {
            before: f(before)?,
            after: f(after)?,
        })
    };
    let latency = |c: &Connection| {
        let whole = trace_bounds(c)?.whole();
        scheduling_latency(c, &TaskFilter::default(), whole, 0)
    };
    let (la, lb) = (latency(before)?, latency(after)?);
    let ns = |d: &Option<Dur>| d.as_ref().map(|d| d.ns.0);
    let (ta, tb) = (task_totals(before)?, task_totals(after)?);
    let keys: std::collections::BTreeSet<_> = ta.keys().chain(tb.keys()).cloned().collect();
    let mut tasks: Vec<TaskChange> = keys
        .into_iter()
        .map(|k| {
            let (x, y) = (ta.get(&k), tb.get(&k));
            let p = |i: usize| Pair {
                before: x.map(|v| v[i]),
                after: y.map(|v| v[i]),
            };
            TaskChange {
                threads: p(0),
                cpu_ns: p(1),
                switches: p(2),
                wait_ns: p(3),
                latency_max_ns: p(4),
                process: k.0,
                thread: k.1,
            }
        })
        .collect();
    // Time is what a user waits for: size of change = |Δcpu| + |Δwait|.
    tasks
        .sort_by_key(|t| std::cmp::Reverse(worse_by(&t.cpu_ns).abs() + worse_by(&t.wait_ns).abs()));
    let mut worst: Vec<(i64, String)> = Vec::new();
    for t in &tasks {
        let name = format!(
            "{} ({})",
            t.thread.as_deref().unwrap_or("?"),
            t.process.as_deref().unwrap_or("?")
        );
        for (what, p) in [("cpu time", &t.cpu_ns), ("wait for a CPU", &t.wait_ns)] {
            if worse_by(p) > 0 {
                worst.push((worse_by(p), describe(&name, what, p)));
            }
        }
    }
    worst.sort_by_key(|w| std::cmp::Reverse(w.0));
    let more_tasks = tasks.len().saturating_sub(limit);
    tasks.truncate(limit);
    Ok(Comparison {
        before: names.0.to_string(),
        after: names.1.to_string(),
        duration_ns: pair(&|c| Ok(Some(trace_bounds(c)?.duration())))?,
        regressions: worst.into_iter().take(3).map(|w| w.1).collect(),
        latency_p50_ns: Pair {
            before: ns(&la.p50),
            after: ns(&lb.p50),
        },
        latency_p99_ns: Pair {
            before: ns(&la.p99),
            after: ns(&lb.p99),
        },
        latency_max_ns: Pair {
            before: ns(&la.max),
            after: ns(&lb.max),
        },
        cpus: util_changes(
            &utilization(before, GroupBy::Cpu)?,
            &utilization(after, GroupBy::Cpu)?,
        ),
        llcs: util_changes(
            &utilization(before, GroupBy::Llc)?,
            &utilization(after, GroupBy::Llc)?,
        ),
        tasks,
        more_tasks,
    })
}

// ---------------------------------------------------------------------- tool

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CompareArgs {
    /// Trace before the change (list_traces).
    pub before: String,
    /// Trace after the change.
    pub after: String,
    /// Most names: default 8, at most 500.
    pub limit: Option<i64>,
}

/// The tool: answered from the two traces' connections.
pub struct CompareTool {
    pub name: &'static str,
    pub description: &'static str,
}

pub const TOOL: CompareTool = CompareTool {
    name: "compare",
    description: "A/B diff of two traces by process/thread name (CPU time, switches, wait, \
                  latency) and CPU/LLC, biggest first.",
};

/// Checks the arguments and compares.
pub fn answer(before: &Connection, after: &Connection, a: &CompareArgs) -> Result<Comparison> {
    let limit = count_arg("limit", a.limit, 8, 500)?;
    compare(before, after, (&a.before, &a.after), limit)
}
