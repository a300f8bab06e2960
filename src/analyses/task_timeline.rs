//! `task_timeline`: what one thread, or each thread of a process, did over
//! time, as merged state intervals.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use rusqlite::{Connection, params};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cpu_timeline::{HOLDERS, Holder, holders};
use super::durations::{Dur, clip};
use super::interference::{WaitInterrupts, interrupts_within};
use super::stacks::{StackWeight, top_off_cpu_stack};
use super::tasks::{TaskFilter, TaskId, filter_utids, state_scan_start, task_ids};
use super::timespec::{RelTime, Window, WindowArg, WindowOut, resolve_window, trace_bounds};
use super::tool::{Tool, count_arg};
use super::{search_events, top_tasks};

/// Which task a timeline (or interference) is for: exactly one of tid or pid.
#[derive(Debug, Clone, Copy)]
pub enum TaskSel {
    Tid(i64),
    Pid(i64),
}

impl TaskSel {
    /// From a tool's tid and pid arguments, exactly one of which is given.
    pub(crate) fn from_args(tid: Option<i64>, pid: Option<i64>) -> Result<TaskSel> {
        match (tid, pid) {
            (Some(t), None) => Ok(TaskSel::Tid(t)),
            (None, Some(p)) => Ok(TaskSel::Pid(p)),
            _ => bail!("give exactly one of tid or pid"),
        }
    }

    /// The threads it selects; an error naming the tool that finds tasks when
    /// there are none.
    pub(crate) fn utids(self, conn: &Connection) -> Result<Vec<i64>> {
        let filter = match self {
            TaskSel::Tid(t) => TaskFilter {
                tid: Some(t),
                ..TaskFilter::default()
            },
            TaskSel::Pid(p) => TaskFilter {
                pid: Some(p),
                ..TaskFilter::default()
            },
        };
        let utids = filter_utids(conn, &filter)?;
        if utids.is_empty() {
            bail!(
                "no thread with {}; {} finds tasks by name, tid or pid",
                match self {
                    TaskSel::Tid(t) => format!("tid {t}"),
                    TaskSel::Pid(p) => format!("pid {p}"),
                },
                search_events::TOOL.name
            );
        }
        Ok(utids)
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TaskTimeline {
    pub window: WindowOut,
    /// One timeline per thread (all threads of the process for a pid).
    pub threads: Vec<ThreadTimeline>,
    /// True when the interval cap cut the timelines.
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ThreadTimeline {
    #[serde(flatten)]
    pub task: TaskId,
    /// Consecutive states, merged when state, CPU (and blocking function) repeat, clipped to the window.
    pub intervals: Vec<StateInterval>,
    /// Total time per state within the window (up to `totals_until` when the
    /// interval cap cut the listing).
    pub totals: Vec<StateTotal>,
    /// Set when the interval cap was reached: the listing and the totals stop
    /// here, so the cost stays bounded however busy the thread.
    pub totals_until: Option<RelTime>,
    /// Where it spent most time blocked (recorded with --stacks off-cpu): the
    /// heaviest off-CPU stack of its blocks in the window (up to
    /// totals_until), ns off the CPU, and its share of all of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_off_cpu_stack: Option<StackWeight>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StateInterval {
    pub start: RelTime,
    pub dur: Dur,
    /// Running, R, R+, S, D, I, ...; "unknown" where thread_state.state is NULL.
    pub state: String,
    /// CPU for Running, else null.
    pub cpu: Option<i64>,
    /// For D: the kernel function it blocked in, where the trace names it
    /// (thread_state.blocked_function).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_function: Option<String>,
    /// For R and R+ followed by Running: what held that CPU meanwhile, most time
    /// first, at most 3 (empty: it was idle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by: Option<Vec<Holder>>,
    /// IRQ/softirq time on that CPU meanwhile, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by_irq: Option<WaitInterrupts>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StateTotal {
    pub state: String,
    pub time: Dur,
}

/// A thread_state row as read: ts, dur, state, cpu, blocked_function.
type Row = (i64, i64, Option<String>, Option<i64>, Option<String>);
/// Consecutive rows merged: start, length, then as in [`Row`].
type Merged = (i64, i64, String, Option<i64>, Option<String>);

/// The state shown for a thread_state row whose state is NULL.
const UNKNOWN_STATE: &str = "unknown";

/// Runnable: waiting for a CPU (R after a wakeup, R+ after a preemption).
fn is_runnable(state: &str) -> bool {
    state == "R" || state == "R+"
}

/// Thread states of one thread, or of all threads of a process, merged.
pub fn task_timeline(
    conn: &Connection,
    sel: TaskSel,
    w: Window,
    max_intervals: usize,
) -> Result<TaskTimeline> {
    let b = trace_bounds(conn)?;
    let (lo, hi) = (b.abs(w.start), b.abs(w.end));
    let utids = sel.utids(conn)?;
    let ids = task_ids(conn, &utids)?;
    let mut st = conn.prepare(
        "SELECT ts, dur, state, cpu, blocked_function FROM thread_state
         WHERE utid = ?1 AND ts >= ?2 AND ts < ?3 ORDER BY ts",
    )?;
    let mut budget = max_intervals;
    let mut truncated = false;
    let mut threads = Vec::new();
    for utid in utids {
        let Some(task) = ids.get(&utid).cloned() else {
            continue;
        };
        let from = state_scan_start(conn, utid, lo)?;
        let mut merged: Vec<Merged> = Vec::new();
        let mut totals: BTreeMap<String, i64> = BTreeMap::new();
        let mut until = None;
        let mut rows = st.query(params![utid, from, hi])?;
        while let Some(r) = rows.next()? {
            let (ts, dur, state, cpu, blocked_function): Row =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
            let state = state.unwrap_or_else(|| UNKNOWN_STATE.to_string());
            let len = clip(ts, dur, lo, hi, b.end_ts);
            if len == 0 {
                continue;
            }
            let start = ts.max(lo);
            if let Some(last) = merged.last_mut()
                && last.2 == state
                && last.3 == cpu
                && last.4 == blocked_function
                && last.0 + last.1 == start
            {
                last.1 += len;
                *totals.entry(state).or_default() += len;
                continue;
            }
            if merged.len() >= budget {
                // Stop reading: a busy thread has millions of states.
                truncated = true;
                until = Some(start);
                break;
            }
            *totals.entry(state.clone()).or_default() += len;
            merged.push((start, len, state, cpu, blocked_function));
        }
        budget -= merged.len();
        let mut intervals = Vec::with_capacity(merged.len());
        for (i, (s, d, state, cpu, blocked_function)) in merged.iter().enumerate() {
            let next_cpu = merged.get(i + 1).and_then(|n| n.3);
            let (held_by, held_by_irq) = match next_cpu {
                Some(run_cpu) if is_runnable(state) => (
                    Some(holders(conn, &b, run_cpu, *s, s + d, HOLDERS)?),
                    interrupts_within(conn, &b, run_cpu, *s, s + d)?,
                ),
                _ => (None, None),
            };
            intervals.push(StateInterval {
                start: RelTime::new(b.rel(*s)),
                dur: Dur::new(*d),
                state: state.clone(),
                cpu: *cpu,
                blocked_function: blocked_function.clone(),
                held_by,
                held_by_irq,
            });
        }
        let top_off_cpu_stack = top_off_cpu_stack(conn, &b, utid, lo, until.unwrap_or(hi))?;
        threads.push(ThreadTimeline {
            task,
            intervals,
            totals: totals
                .into_iter()
                .map(|(state, t)| StateTotal {
                    state,
                    time: Dur::new(t),
                })
                .collect(),
            totals_until: until.map(|t| RelTime::new(b.rel(t))),
            top_off_cpu_stack,
        });
    }
    Ok(TaskTimeline {
        window: WindowOut::new(w, &b),
        threads,
        truncated,
        hint: truncated.then(|| {
            format!(
                "interval cap reached: the intervals and totals stop at totals_until; narrow the \
                 window (e.g. \"1s..1.1s\") or raise limit, or use {} for whole-window totals",
                top_tasks::TOOL.name
            )
        }),
    })
}

// ---------------------------------------------------------------------- tool

#[derive(Debug, Deserialize, JsonSchema)]
pub struct TaskTimelineArgs {
    /// Thread id (give tid or pid).
    pub tid: Option<i64>,
    /// Process id: each of its threads.
    pub pid: Option<i64>,
    /// Window, e.g. "1s..1.2s"; default: the whole trace.
    pub window: Option<WindowArg>,
    /// Most intervals (all threads): default 25, at most 2000.
    pub limit: Option<i64>,
}

pub const TOOL: Tool<TaskTimelineArgs, TaskTimeline> = Tool {
    name: "task_timeline",
    description: "Merged state intervals (Running with CPU, R/R+, S, D, ...) and totals of a \
                  thread (tid) or process (pid).",
    answer: |trace, a| {
        // About 100 bytes an interval: a default answer under 4 KB.
        let limit = count_arg("limit", a.limit, 25, 2000)?;
        let sel = TaskSel::from_args(a.tid, a.pid)?;
        let w = resolve_window(trace.conn, a.window.as_ref())?;
        task_timeline(trace.conn, sel, w, limit)
    },
};
