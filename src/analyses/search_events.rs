//! `search_events`: what in a trace matches a text (tasks, event types, CPUs),
//! so a caller finds its way without dumping tables.

use anyhow::{Result, bail};
use rusqlite::{Connection, params};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::tasks::{TaskId, like_pattern};
use super::tool::{DEFAULT_LIST_BYTES, Tool, count_arg, fit_bytes};
use super::trace_info::{EventCount, SCHED_EVENTS};

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SearchResults {
    /// The text searched for.
    pub text: String,
    /// Threads whose name, tid, or process name/cmdline/pid contains the text.
    pub tasks: Vec<TaskMatch>,
    /// Event types whose name contains the text, with counts.
    pub event_types: Vec<EventCount>,
    /// CPUs whose number ("3", "cpu3") or processor name matches.
    pub cpus: Vec<CpuMatch>,
    /// True when a list was cut at the limit (or the default answer's size): raise limit.
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TaskMatch {
    #[serde(flatten)]
    pub task: TaskId,
    pub cmdline: Option<String>,
    /// Times it was switched in (sched_slice rows).
    pub slices: i64,
    /// Times it was woken (wakeup rows).
    pub wakeups: i64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CpuMatch {
    pub cpu: i64,
    pub processor: Option<String>,
    pub llc_id: Option<i64>,
    pub numa_node: Option<i64>,
    /// Slices run on it (sched_slice rows).
    pub slices: i64,
}

/// Finds tasks, event types and CPUs whose names or ids contain `text`.
/// At most `limit` tasks and CPUs, and (with `bytes`) only as many tasks as
/// take that many bytes of JSON.
pub fn search_events(
    conn: &Connection,
    text: &str,
    limit: usize,
    bytes: Option<usize>,
) -> Result<SearchResults> {
    let text = text.trim();
    if text.is_empty() {
        bail!("text is empty: give a name, tid, pid, event name or cpu to look for");
    }
    let pat = like_pattern(text);
    let mut truncated = false;
    let mut st = conn.prepare(
        "SELECT t.utid, t.tid, t.name, p.pid, p.name, p.cmdline FROM thread t
         LEFT JOIN process p USING (upid)
         WHERE t.tid != 0 AND (t.name LIKE ?1 ESCAPE '\\' OR CAST(t.tid AS TEXT) LIKE ?1 ESCAPE '\\'
            OR p.name LIKE ?1 ESCAPE '\\' OR p.cmdline LIKE ?1 ESCAPE '\\'
            OR CAST(p.pid AS TEXT) LIKE ?1 ESCAPE '\\')
         ORDER BY t.utid LIMIT ?2",
    )?;
    let mut found: Vec<(TaskId, Option<String>)> = st
        .query_map(params![pat, limit as i64 + 1], |r| {
            Ok((TaskId::from_row(r)?, r.get(5)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    if found.len() > limit {
        found.truncate(limit);
        truncated = true;
    }
    // Counting a busy thread's rows reads millions of index entries: sum its
    // per-bucket aggregates instead. They leave out the idle thread (utid 0),
    // whose rows are counted.
    let mut totals = conn.prepare(
        "SELECT coalesce(sum(switches), 0), coalesce(sum(wakeups), 0) FROM agg_thread
         WHERE utid = ?1",
    )?;
    let mut idle_slices = conn.prepare("SELECT count(*) FROM sched_slice WHERE utid = 0")?;
    let mut tasks = Vec::new();
    for (task, cmdline) in found {
        let (slices, wakeups) = if task.utid == 0 {
            (idle_slices.query_row([], |r| r.get(0))?, 0)
        } else {
            totals.query_row([task.utid], |r| Ok((r.get(0)?, r.get(1)?)))?
        };
        tasks.push(TaskMatch {
            slices,
            wakeups,
            task,
            cmdline,
        });
    }
    let lower = text.to_ascii_lowercase();
    let mut event_types: Vec<EventCount> = Vec::new();
    for (event, table) in SCHED_EVENTS {
        if event.contains(&lower) {
            event_types.push(EventCount::of_table(conn, event, table)?);
        }
    }
    let mut st = conn.prepare(
        "SELECT 'task_' || type, 'task_event', count(*) FROM task_event
         WHERE ('task_' || type) LIKE ?1 ESCAPE '\\' GROUP BY type
         UNION ALL
         SELECT name, 'ftrace_event', count(*) FROM ftrace_event
         WHERE name LIKE ?1 ESCAPE '\\' GROUP BY name
         ORDER BY 3 DESC",
    )?;
    for row in st.query_map([&pat], |r| {
        Ok(EventCount {
            event: r.get(0)?,
            table: r.get(1)?,
            count: r.get(2)?,
        })
    })? {
        event_types.push(row?);
    }
    let cpu_num = lower
        .strip_prefix("cpu")
        .unwrap_or(&lower)
        .trim()
        .parse::<i64>()
        .ok();
    let mut st = conn.prepare(
        "SELECT cpu, processor, llc_id, numa_node FROM cpu
         WHERE cpu = ?1 OR processor LIKE ?2 ESCAPE '\\' ORDER BY cpu LIMIT ?3",
    )?;
    let mut cpus: Vec<CpuMatch> = st
        .query_map(params![cpu_num, pat, limit as i64 + 1], |r| {
            Ok(CpuMatch {
                cpu: r.get(0)?,
                processor: r.get(1)?,
                llc_id: r.get(2)?,
                numa_node: r.get(3)?,
                slices: 0,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    if cpus.len() > limit {
        cpus.truncate(limit);
        truncated = true;
    }
    // Counting per CPU along sched_slice(cpu, ts) is cheap only for a few CPUs.
    if cpus.len() <= 16 {
        let mut st = conn.prepare("SELECT count(*) FROM sched_slice WHERE cpu = ?1")?;
        for c in &mut cpus {
            c.slices = st.query_row([c.cpu], |r| r.get(0))?;
        }
    }
    if let Some(budget) = bytes {
        truncated |= fit_bytes(&mut tasks, budget);
    }
    Ok(SearchResults {
        text: text.to_string(),
        tasks,
        event_types,
        cpus,
        truncated,
    })
}

// ---------------------------------------------------------------------- tool

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchEventsArgs {
    /// A task name, command line, tid, pid, event ("exec", "wakeup") or CPU ("cpu3");
    /// any case.
    pub text: String,
    /// Most tasks and CPUs: default 50, at most 500.
    pub limit: Option<i64>,
}

pub const TOOL: Tool<SearchEventsArgs, SearchResults> = Tool {
    name: "search_events",
    description: "Tasks (names, command lines, tids, pids), event types and CPUs matching a text, \
                  with counts.",
    answer: |trace, a| {
        let limit = count_arg("limit", a.limit, 50, 500)?;
        let bytes = a.limit.is_none().then_some(DEFAULT_LIST_BYTES * 2 / 3);
        search_events(trace.conn, &a.text, limit, bytes)
    },
};
