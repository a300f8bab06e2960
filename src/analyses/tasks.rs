//! Threads: who one is, which ones a filter selects, and where to start
//! reading one's states.

use std::collections::HashMap;

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, Row, params};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The SQL condition "this utid is not an idle thread". trace_processor gives
/// every CPU's swapper utid 0; other importers may give each its own row, so
/// tid 0 decides.
pub(crate) const NOT_IDLE: &str = "utid NOT IN (SELECT utid FROM thread WHERE tid = 0)";

/// Who a thread is.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TaskId {
    /// Row id in `thread` (a reused tid gets a new utid).
    pub utid: i64,
    pub tid: i64,
    /// Thread name (comm).
    pub thread_name: Option<String>,
    /// Process id, if known.
    pub pid: Option<i64>,
    pub process_name: Option<String>,
}

impl TaskId {
    /// Reads a row whose first columns are t.utid, t.tid, t.name, p.pid,
    /// p.name (thread t LEFT JOIN process p).
    pub(crate) fn from_row(r: &Row) -> rusqlite::Result<TaskId> {
        Ok(TaskId {
            utid: r.get(0)?,
            tid: r.get(1)?,
            thread_name: r.get(2)?,
            pid: r.get(3)?,
            process_name: r.get(4)?,
        })
    }
}

/// The identities of `utids`, by utid (utids not in `thread` are left out).
pub(crate) fn task_ids(conn: &Connection, utids: &[i64]) -> Result<HashMap<i64, TaskId>> {
    let mut st = conn.prepare(
        "SELECT t.utid, t.tid, t.name, p.pid, p.name FROM thread t
         LEFT JOIN process p USING (upid) WHERE t.utid = ?1",
    )?;
    let mut out = HashMap::new();
    for &u in utids {
        if let Some(id) = st.query_row([u], TaskId::from_row).optional()? {
            out.insert(u, id);
        }
    }
    Ok(out)
}

/// Which threads an analysis covers. All fields optional; given fields must
/// all match. Also the arguments of the tools that take a task filter
/// (flattened into theirs), whose doc comments a caller reads.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct TaskFilter {
    /// Only this thread id.
    pub tid: Option<i64>,
    /// Only this process's threads.
    pub pid: Option<i64>,
    /// Thread or process name contains this (any case).
    pub name: Option<String>,
}

impl TaskFilter {
    pub(crate) fn is_empty(&self) -> bool {
        self.tid.is_none() && self.pid.is_none() && self.name.as_deref().is_none_or(str::is_empty)
    }
}

/// The utids a filter selects.
pub(crate) fn filter_utids(conn: &Connection, f: &TaskFilter) -> Result<Vec<i64>> {
    let pattern = f.name.as_deref().map(like_pattern);
    let mut st = conn.prepare(
        "SELECT t.utid FROM thread t LEFT JOIN process p USING (upid)
         WHERE (?1 IS NULL OR t.tid = ?1) AND (?2 IS NULL OR p.pid = ?2)
           AND (?3 IS NULL OR t.name LIKE ?3 ESCAPE '\\' OR p.name LIKE ?3 ESCAPE '\\')
           AND t.tid != 0
         ORDER BY t.utid",
    )?;
    let utids = st
        .query_map(params![f.tid, f.pid, pattern], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(utids)
}

/// `%text%` for LIKE, with the wildcards in `text` taken literally.
pub(crate) fn like_pattern(text: &str) -> String {
    let mut p = String::from("%");
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// Where to start reading a thread's states to cover time `lo`: the state in
/// force at `lo` (states of a thread do not overlap).
pub(crate) fn state_scan_start(conn: &Connection, utid: i64, lo: i64) -> Result<i64> {
    let mut st =
        conn.prepare_cached("SELECT max(ts) FROM thread_state WHERE utid = ?1 AND ts <= ?2")?;
    Ok(st
        .query_row(params![utid, lo], |r| r.get::<_, Option<i64>>(0))?
        .unwrap_or(lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("a_b%"), "%a\\_b\\%%");
    }
}
