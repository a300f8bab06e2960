//! An analysis offered as a tool (the MCP server serves each one): its name,
//! what it answers, and how it answers from the arguments a caller sends.

use anyhow::{Result, bail};
use rusqlite::Connection;

/// A loaded trace as a tool sees it.
pub struct TraceDb<'a> {
    /// The name callers know the trace by.
    pub name: &'a str,
    /// Its database.
    pub conn: &'a Connection,
}

/// Fails, in one line, for a trace without scheduler data (no sched_switch
/// or sched_waking made a row: not a scheduler trace, or cut before its
/// first events), which every analysis would answer with zeros.
pub fn require_scheduler_data(trace: &TraceDb) -> Result<()> {
    let has: bool = trace.conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sched_slice) OR EXISTS (SELECT 1 FROM thread_state)",
        [],
        |r| r.get(0),
    )?;
    if !has {
        bail!(
            "{} has no scheduler data (no sched_switch or sched_waking events): not a scheduler \
             trace, or cut before its first events",
            trace.name
        );
    }
    Ok(())
}

/// An analysis as a tool. `A` is its arguments (their doc comments are what a
/// caller reads about them), `O` its answer; `answer` checks the arguments
/// and runs the analysis.
pub struct Tool<A, O> {
    /// The tool's name, as callers call it.
    pub name: &'static str,
    /// What it answers, for a caller choosing a tool.
    pub description: &'static str,
    pub answer: fn(&TraceDb, A) -> Result<O>,
}

/// An optional count argument, checked against its maximum; `default` when absent.
pub(crate) fn count_arg(
    name: &str,
    value: Option<i64>,
    default: usize,
    max: usize,
) -> Result<usize> {
    match value {
        None => Ok(default),
        Some(v) if v < 1 || v as u64 > max as u64 => {
            bail!("{name} must be between 1 and {max} (got {v})")
        }
        Some(v) => Ok(v as usize),
    }
}

/// Most bytes of JSON a tool's list takes in an answer to a call that gave
/// no limit: with the rest of the answer, a default answer stays within 4 KB,
/// which a model can afford on every call. A limit given lifts it.
pub(crate) const DEFAULT_LIST_BYTES: usize = 3 * 1024;

/// Cuts `items` to those whose JSON fits `budget` bytes (the first always
/// stays); true when it cut any. For lists whose items vary in size (command
/// lines), where a count alone cannot bound an answer.
pub(crate) fn fit_bytes<T: serde::Serialize>(items: &mut Vec<T>, budget: usize) -> bool {
    let mut used = 0;
    let keep = items
        .iter()
        .position(|item| {
            used += serde_json::to_vec(item).map_or(0, |v| v.len()) + 1;
            used > budget
        })
        .map_or(items.len(), |cut| cut.max(1));
    let cut = keep < items.len();
    items.truncate(keep);
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_bytes_keeps_what_fits_and_at_least_one() {
        let mut v = vec!["aaaa"; 10]; // 7 bytes each with its comma
        assert!(fit_bytes(&mut v, 30));
        assert_eq!(v.len(), 4);
        let mut v = vec!["a".repeat(100)];
        assert!(!fit_bytes(&mut v, 10));
        assert_eq!(v.len(), 1);
        let mut v = vec!["a"; 3];
        assert!(!fit_bytes(&mut v, 100));
        assert_eq!(v.len(), 3);
    }
}
