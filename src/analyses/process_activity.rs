//! `process_activity`: forks, execs and exits in a window, by process, with
//! the busiest spawners first.

use std::collections::HashMap;

use anyhow::Result;
use rusqlite::{Connection, params};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::timespec::{Window, WindowArg, WindowOut, resolve_window, trace_bounds};
use super::tool::{Tool, count_arg};

/// clone(2)'s CLONE_THREAD: the new task shares its creator's process.
const CLONE_THREAD: i64 = 0x10000;

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProcessActivity {
    pub window: WindowOut,
    /// New processes (forks without CLONE_THREAD) in the window.
    pub new_processes: i64,
    /// New threads (CLONE_THREAD) in the window.
    pub new_threads: i64,
    pub execs: i64,
    /// Threads that exited (a process ends with its last thread).
    pub exits: i64,
    /// Per process, most forks + execs + exits first.
    pub processes: Vec<ProcessCounts>,
    /// Processes left out by `limit`.
    pub more_processes: usize,
    /// The files executed most often, at most 5.
    pub top_execs: Vec<ExecCount>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, JsonSchema)]
pub struct ProcessCounts {
    /// Process id; null when the process is unknown.
    pub pid: Option<i64>,
    pub name: Option<String>,
    /// Processes it forked.
    pub new_processes: i64,
    /// Threads it created.
    pub new_threads: i64,
    /// Execs by its threads.
    pub execs: i64,
    /// Its threads that exited.
    pub exits: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ExecCount {
    pub filename: String,
    pub count: i64,
}

/// Forks, execs and exits in the window, at most `limit` processes listed.
pub fn process_activity(conn: &Connection, w: Window, limit: usize) -> Result<ProcessActivity> {
    let b = trace_bounds(conn)?;
    let (lo, hi) = (b.abs(w.start), b.abs(w.end));
    // A fork counts for its creator's process, an exec or exit for the task's.
    let mut st = conn.prepare(&format!(
        "SELECT e.type,
                CASE WHEN e.type = 'fork' THEN pt.upid ELSE t.upid END AS owner,
                e.type = 'fork' AND coalesce(e.clone_flags & {CLONE_THREAD} != 0,
                                             e.tid != e.pid) AS new_thread,
                count(*)
         FROM task_event e
         LEFT JOIN thread t ON t.utid = e.utid
         LEFT JOIN thread pt ON pt.utid = e.parent_utid
         WHERE e.ts >= ?1 AND e.ts < ?2 AND e.type IN ('fork', 'exec', 'exit')
         GROUP BY 1, 2, 3"
    ))?;
    let mut by_upid: HashMap<Option<i64>, ProcessCounts> = HashMap::new();
    let mut rows = st.query(params![lo, hi])?;
    while let Some(r) = rows.next()? {
        let (kind, upid, new_thread, n): (String, Option<i64>, bool, i64) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        let c = by_upid.entry(upid).or_default();
        match (kind.as_str(), new_thread) {
            ("fork", true) => c.new_threads += n,
            ("fork", false) => c.new_processes += n,
            ("exec", _) => c.execs += n,
            _ => c.exits += n,
        }
    }
    let mut process = conn.prepare("SELECT pid, name FROM process WHERE upid = ?1")?;
    let mut processes = Vec::with_capacity(by_upid.len());
    for (upid, mut c) in by_upid {
        if let Some(upid) = upid {
            (c.pid, c.name) = process.query_row([upid], |r| Ok((r.get(0)?, r.get(1)?)))?;
        }
        processes.push(c);
    }
    let sum = |f: fn(&ProcessCounts) -> i64| processes.iter().map(f).sum::<i64>();
    let (new_processes, new_threads, execs, exits) = (
        sum(|c| c.new_processes),
        sum(|c| c.new_threads),
        sum(|c| c.execs),
        sum(|c| c.exits),
    );
    processes.sort_by_key(|c| {
        (
            std::cmp::Reverse(c.new_processes + c.new_threads + c.execs + c.exits),
            c.pid,
        )
    });
    let more_processes = processes.len().saturating_sub(limit);
    processes.truncate(limit);
    let mut top = conn.prepare(
        "SELECT filename, count(*) AS n FROM task_event
         WHERE type = 'exec' AND filename IS NOT NULL AND ts >= ?1 AND ts < ?2
         GROUP BY filename ORDER BY n DESC, filename LIMIT 5",
    )?;
    let top_execs = top
        .query_map(params![lo, hi], |r| {
            Ok(ExecCount {
                filename: r.get(0)?,
                count: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ProcessActivity {
        window: WindowOut::new(w, &b),
        new_processes,
        new_threads,
        execs,
        exits,
        processes,
        more_processes,
        top_execs,
    })
}

// ---------------------------------------------------------------------- tool

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ProcessActivityArgs {
    /// Window, e.g. "1s..1.2s"; default: the whole trace.
    pub window: Option<WindowArg>,
    /// Most processes: default 10, at most 500.
    pub limit: Option<i64>,
}

pub const TOOL: Tool<ProcessActivityArgs, ProcessActivity> = Tool {
    name: "process_activity",
    description: "Forks, execs and exits per process in a window, busiest spawners first; files \
                  executed most.",
    answer: |trace, a| {
        let limit = count_arg("limit", a.limit, 10, 500)?;
        let w = resolve_window(trace.conn, a.window.as_ref())?;
        process_activity(trace.conn, w, limit)
    },
};
