//! `process_tree`: the processes of a trace as a tree, with their parents,
//! threads and command lines.

use std::collections::{BTreeMap, HashSet};

use anyhow::{Result, bail};
use rusqlite::Connection;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::timespec::{RelTime, trace_bounds};
use super::tool::{DEFAULT_LIST_BYTES, Tool, count_arg, fit_bytes};

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProcessTree {
    /// Processes in depth-first order (each after its parent); `depth` gives the indentation.
    pub processes: Vec<ProcessNode>,
    pub truncated: bool,
    /// When the limit cut the listing: how many processes there are and how to see more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProcessNode {
    pub upid: i64,
    pub pid: i64,
    pub name: Option<String>,
    pub cmdline: Option<String>,
    /// Parent's pid, if known.
    pub parent_pid: Option<i64>,
    /// Depth below the root of this listing (0 for roots).
    pub depth: usize,
    /// Thread instances in the process.
    pub threads: i64,
    /// When it started, if in the trace.
    pub start: Option<RelTime>,
    /// When it ended, if in the trace.
    pub end: Option<RelTime>,
    pub is_kthread: Option<bool>,
}

/// Processes as a tree (depth-first list); with `pid`, only that process and
/// its descendants; at most `max` of them, and (with `bytes`) only as many as
/// take that many bytes of JSON.
pub fn process_tree(
    conn: &Connection,
    pid: Option<i64>,
    max: usize,
    bytes: Option<usize>,
) -> Result<ProcessTree> {
    let b = trace_bounds(conn)?;
    let mut st = conn.prepare(
        "SELECT p.upid, p.pid, p.name, p.cmdline, p.parent_upid, pp.pid,
                (SELECT count(*) FROM thread t WHERE t.upid = p.upid), p.start_ts, p.end_ts,
                p.is_kthread
         FROM process p LEFT JOIN process pp ON pp.upid = p.parent_upid
         WHERE p.pid != 0 ORDER BY p.pid, p.upid",
    )?;
    let mut nodes: Vec<(Option<i64>, ProcessNode)> = st
        .query_map([], |r| {
            Ok((
                r.get::<_, Option<i64>>(4)?,
                ProcessNode {
                    upid: r.get(0)?,
                    pid: r.get(1)?,
                    name: r.get(2)?,
                    cmdline: r.get(3)?,
                    parent_pid: r.get(5)?,
                    depth: 0,
                    threads: r.get(6)?,
                    start: r.get::<_, Option<i64>>(7)?.map(|t| RelTime::new(b.rel(t))),
                    end: r.get::<_, Option<i64>>(8)?.map(|t| RelTime::new(b.rel(t))),
                    is_kthread: r.get(9)?,
                },
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let present: HashSet<i64> = nodes.iter().map(|n| n.1.upid).collect();
    let mut children: BTreeMap<Option<i64>, Vec<usize>> = BTreeMap::new();
    for (i, (parent, _)) in nodes.iter().enumerate() {
        let parent = parent.filter(|p| present.contains(p));
        children.entry(parent).or_default().push(i);
    }
    let roots: Vec<usize> = match pid {
        None => children.get(&None).cloned().unwrap_or_default(),
        Some(p) => {
            let r: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].1.pid == p).collect();
            if r.is_empty() {
                bail!(
                    "no process with pid {p}; call {} without pid to list them all",
                    TOOL.name
                );
            }
            r
        }
    };
    let mut order = Vec::new();
    let mut stack: Vec<(usize, usize)> = roots.into_iter().rev().map(|i| (i, 0)).collect();
    let mut seen = vec![false; nodes.len()];
    let mut truncated = false;
    while let Some((i, depth)) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue; // a parent cycle in bad data
        }
        if order.len() == max {
            truncated = true;
            break;
        }
        order.push((i, depth));
        if let Some(kids) = children.get(&Some(nodes[i].1.upid)) {
            stack.extend(kids.iter().rev().map(|&k| (k, depth + 1)));
        }
    }
    let mut processes: Vec<ProcessNode> = order
        .into_iter()
        .map(|(i, depth)| {
            let mut n = nodes[i].1.clone();
            n.depth = depth;
            n
        })
        .collect();
    if let Some(budget) = bytes {
        truncated |= fit_bytes(&mut processes, budget);
    }
    let hint = truncated.then(|| {
        format!(
            "listing cut at {} processes ({} in the trace): pass pid for one process's \
             subtree, or raise limit (at most {MAX_PROCESSES})",
            processes.len(),
            nodes.len()
        )
    });
    nodes.clear();
    Ok(ProcessTree {
        processes,
        truncated,
        hint,
    })
}

// ---------------------------------------------------------------------- tool

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ProcessTreeArgs {
    /// Only this process and its descendants.
    pub pid: Option<i64>,
    /// Most processes: default 20, at most 5000.
    pub limit: Option<i64>,
}

/// Most processes one answer lists.
const MAX_PROCESSES: usize = 5000;

pub const TOOL: Tool<ProcessTreeArgs, ProcessTree> = Tool {
    name: "process_tree",
    description: "Processes as a depth-first tree: pid, parent, name, command line, threads, \
                  start/end.",
    answer: |trace, a| {
        let limit = count_arg("limit", a.limit, 20, MAX_PROCESSES)?;
        let bytes = a.limit.is_none().then_some(DEFAULT_LIST_BYTES);
        process_tree(trace.conn, a.pid, limit, bytes)
    },
};
