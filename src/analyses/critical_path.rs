//! `critical_path`: what a thread's time in a window waited on. Its own
//! running and runnable time is its own; while it slept, the time belongs to
//! the thread that woke it, and that thread's own sleeps to its waker, and so
//! on down to CPU time.
//!
//! The definition is Perfetto's `_thread_executing_span_critical_path`
//! (stdlib sched/thread_executing_span.sql and its critical-path walk): a
//! thread's executing span starts when a thread (not an interrupt) wakes it
//! from S, D or I and lasts until its next such sleep. Each span carries its
//! idle time (the sleep before it), the span of its waker that was running at
//! the wakeup, and the thread's previous span. The walk gives a span's run
//! time to its thread, its idle time to its waker (one level deeper), time
//! before its idle to the previous span (same level), and idle time with no
//! waker thread (an interrupt woke it) to the sleeping thread itself.

use std::collections::HashMap;

use anyhow::{Result, bail};
use rusqlite::{Connection, OptionalExtension, params};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::durations::Dur;
use super::search_events;
use super::tasks::{TaskFilter, TaskId, filter_utids, task_ids};
use super::timespec::{RelTime, Window, WindowArg, WindowOut, resolve_window, trace_bounds};
use super::tool::{Tool, count_arg};

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CriticalPath {
    pub window: WindowOut,
    pub task: TaskId,
    /// Time the path covers (the thread's lifetime within the window).
    pub covered: Dur,
    /// Time on the path per thread, most first (at most 8).
    pub by_thread: Vec<PathThread>,
    /// The path in time order: who the task waited on at each moment, depth 0
    /// being the task itself, 1 its waker, 2 the waker's waker, ...
    pub steps: Vec<Step>,
    /// Set when `limit` cut the steps: they stop here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listed_until: Option<RelTime>,
    /// Set when the window held too many of the task's runs to walk: the
    /// path (and its totals) ends here; ask again from here for the rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub walked_until: Option<RelTime>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PathThread {
    pub tid: i64,
    pub name: Option<String>,
    /// Time on the path, ns.
    pub ns: i64,
    /// Of that, time it was running on a CPU, ns.
    pub running_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Step {
    pub start: RelTime,
    pub dur: Dur,
    pub tid: i64,
    pub name: Option<String>,
    pub depth: u32,
    /// Time it was running on a CPU within the step, ns (the rest it was
    /// runnable, or asleep woken by an interrupt).
    pub running_ns: i64,
    /// For depth > 0: the thread it was about to wake (one level up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wakes: Option<i64>,
    /// For depth > 0: the state that thread was in (S, D, I; D with its
    /// blocking function where the trace has it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wakes_from: Option<String>,
}

/// One row of the walk: `utid`'s span `node` blocked the root over
/// [ts, ts + dur) at `depth`; `wakes` is the span it was about to wake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRow {
    pub ts: i64,
    pub dur: i64,
    pub utid: i64,
    pub depth: u32,
    pub node: i64,
    pub wakes: Option<i64>,
}

/// Most executing spans of the task a walk starts from. A busy thread has
/// millions in a long trace, and the walk's cost grows with them (about 13 us
/// each on the 30 M-event benchmark trace), so past this many the path stops
/// and says where: the caller asks again from there.
pub const MAX_ROOT_SPANS: usize = 20_000;

/// An executing span, named by the id of the thread_state row it starts with.
#[derive(Debug, Clone)]
struct Node {
    utid: i64,
    ts: i64,
    dur: i64,
    /// Length of the sleep before it; None for a thread's first span.
    idle_dur: Option<i64>,
    /// The sleep's state and blocking function.
    idle_state: Option<String>,
    blocked_function: Option<String>,
    /// The waker's running thread_state id and thread; None when an
    /// interrupt woke it.
    waker_state: Option<(i64, i64)>,
    prev: Option<i64>,
}

/// One thread_state row, as the walk reads it.
struct StateRow {
    id: i64,
    ts: i64,
    dur: i64,
    state: Option<String>,
    waker_id: Option<i64>,
    waker_utid: Option<i64>,
    irq_context: Option<i64>,
    io_wait: Option<i64>,
    blocked_function: Option<String>,
}

impl StateRow {
    const COLUMNS: &'static str =
        "id, ts, dur, state, waker_id, waker_utid, irq_context, io_wait, blocked_function";

    fn read(r: &rusqlite::Row) -> rusqlite::Result<StateRow> {
        Ok(StateRow {
            id: r.get(0)?,
            ts: r.get(1)?,
            dur: r.get(2)?,
            state: r.get(3)?,
            waker_id: r.get(4)?,
            waker_utid: r.get(5)?,
            irq_context: r.get(6)?,
            io_wait: r.get(7)?,
            blocked_function: r.get(8)?,
        })
    }

    fn known(&self) -> bool {
        self.dur != -1
    }

    fn is_sleep(&self) -> bool {
        matches!(self.state.as_deref(), Some("S" | "D" | "I"))
    }

    /// Whether `self` starts an executing span after `prev`: something woke
    /// it (a thread, or an interrupt, which the walk then does not follow)
    /// from a sleep that ends where it starts.
    fn starts_span_after(&self, prev: &StateRow) -> bool {
        self.known()
            && self.waker_id.is_some()
            && prev.known()
            && prev.is_sleep()
            && prev.ts + prev.dur == self.ts
    }
}

/// One thread's spans over the walk's range, loaded on first use.
struct ThreadSpans {
    /// Span ids in time order.
    spans: Vec<i64>,
    /// Running intervals (ts, end), for the running share of a step.
    running: Vec<(i64, i64)>,
    /// Running thread_state id -> the span it belongs to (its thread's last
    /// thread-woken R at or before it).
    span_of_running: HashMap<i64, i64>,
    /// Loading stopped at `max_spans` before the range's end.
    cut: bool,
}

/// Where a thread's loading stops: at the first span that starts at or
/// after `until`, or at its `max_spans`th span.
#[derive(Clone, Copy)]
struct Reach {
    until: i64,
    max_spans: usize,
}

/// The wakeup graph of the threads a walk touches, over the walk's range:
/// each thread's states from the spans covering `lo` to its first span
/// starting after `reach.until`, so a path costs what its window holds, not
/// what the trace holds.
struct Graph<'c> {
    conn: &'c Connection,
    lo: i64,
    reach: Reach,
    nodes: HashMap<i64, Node>,
    threads: HashMap<i64, ThreadSpans>,
}

impl<'c> Graph<'c> {
    fn new(conn: &'c Connection, lo: i64, hi: i64) -> Graph<'c> {
        Graph {
            conn,
            lo,
            reach: Reach {
                until: hi,
                max_spans: usize::MAX,
            },
            nodes: HashMap::new(),
            threads: HashMap::new(),
        }
    }

    /// Loads `utid`'s spans over the walk's range (once).
    fn thread(&mut self, utid: i64) -> Result<&ThreadSpans> {
        if !self.threads.contains_key(&utid) {
            let t = self.load(utid, self.reach)?;
            self.threads.insert(utid, t);
        }
        Ok(&self.threads[&utid])
    }

    /// The first state to load of `utid` so that the span covering `lo`
    /// and the one before it are exact: the sleep before the second-last
    /// span start at or before `lo` (its successor then has its `prev`), or
    /// None for the thread's first state. Searches back in growing steps.
    fn load_from(&self, utid: i64) -> Result<Option<i64>> {
        let mut first = self.conn.prepare_cached(
            "SELECT ts FROM thread_state WHERE utid = ?1 ORDER BY ts, id LIMIT 1",
        )?;
        let Some(first_ts) = first.query_row([utid], |r| r.get::<_, i64>(0)).optional()? else {
            return Ok(None);
        };
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {} FROM thread_state WHERE utid = ?1 AND ts >= ?2 AND ts <= ?3 ORDER BY ts, id",
            StateRow::COLUMNS
        ))?;
        let mut back: i64 = 1_000_000;
        loop {
            let from = self.lo.saturating_sub(back);
            if from <= first_ts {
                return Ok(None);
            }
            let rows: Vec<StateRow> = st
                .query_map(params![utid, from, self.lo], StateRow::read)?
                .collect::<rusqlite::Result<_>>()?;
            let mut starts = (1..rows.len()).filter(|&i| rows[i].starts_span_after(&rows[i - 1]));
            if let (Some(_), Some(second_last)) = (starts.next_back(), starts.next_back()) {
                return Ok(Some(rows[second_last - 1].id));
            }
            back = back.saturating_mul(16);
        }
    }

    fn load(&mut self, utid: i64, reach: Reach) -> Result<ThreadSpans> {
        let from = self.load_from(utid)?;
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {} FROM thread_state WHERE utid = ?1 AND id >= ?2 ORDER BY ts, id",
            StateRow::COLUMNS
        ))?;
        let mut query = st.query(params![utid, from.unwrap_or(i64::MIN)])?;
        let mut rows: Vec<StateRow> = Vec::new();
        let (mut span_count, mut exhausted, mut cut) = (0, true, false);
        while let Some(r) = query.next()? {
            let row = StateRow::read(r)?;
            let starts = rows.last().is_some_and(|p| row.starts_span_after(p));
            let past = starts && row.ts >= reach.until;
            rows.push(row);
            span_count += usize::from(starts);
            if past || span_count >= reach.max_spans {
                (exhausted, cut) = (false, !past);
                break;
            }
        }
        // Perfetto's thread end: the end of the last state with a known
        // length. Unknown when loading stopped early; the last span loaded
        // then starts past the range, and its length is never used.
        let thread_end = exhausted
            .then(|| {
                rows.iter()
                    .filter(|r| r.known())
                    .max_by_key(|r| r.ts)
                    .map(|r| r.ts + r.dur)
            })
            .flatten();
        let mut spans = Vec::new();
        let mut running = Vec::new();
        let mut span_of_running = HashMap::new();
        let mut last_woken_r = None;
        for (i, r) in rows.iter().enumerate() {
            if r.state.as_deref() == Some("Running") {
                if r.known() {
                    running.push((r.ts, r.ts + r.dur));
                    if let Some(r_id) = last_woken_r {
                        span_of_running.insert(r.id, r_id);
                    }
                }
                continue;
            }
            let first = i == 0 && from.is_none() && r.known() && r.state.as_deref() == Some("R");
            let woken = r.known() && r.waker_id.is_some();
            if (first || woken) && r.state.as_deref() == Some("R") {
                last_woken_r = Some(r.id);
            }
            let sleep = i
                .checked_sub(1)
                .map(|p| &rows[p])
                .filter(|p| r.starts_span_after(p));
            if !(first || sleep.is_some()) {
                continue;
            }
            // Woken from interrupt context (or, as Perfetto reads io_wait, an
            // I/O completion): no thread to follow.
            let irq = match r.irq_context {
                Some(c) if c != 0 => true,
                _ => r.io_wait.is_some_and(|w| w != 0),
            };
            self.nodes.insert(
                r.id,
                Node {
                    utid,
                    ts: r.ts,
                    dur: 0,
                    idle_dur: sleep.map(|s| r.ts - s.ts),
                    idle_state: sleep.and_then(|s| s.state.clone()),
                    blocked_function: sleep.and_then(|s| s.blocked_function.clone()),
                    waker_state: if irq {
                        None
                    } else {
                        r.waker_id.zip(r.waker_utid)
                    },
                    prev: spans.last().copied(),
                },
            );
            spans.push(r.id);
        }
        // A span lasts until the sleep before the next one, the last until
        // the thread's end.
        for k in 0..spans.len() {
            let end = match spans.get(k + 1).map(|n| &self.nodes[n]) {
                Some(next) => next.ts - next.idle_dur.unwrap_or(0),
                None => thread_end.unwrap_or(self.nodes[&spans[k]].ts),
            };
            let n = self.nodes.get_mut(&spans[k]).expect("span just inserted");
            n.dur = end - n.ts;
        }
        Ok(ThreadSpans {
            spans,
            running,
            span_of_running,
            cut,
        })
    }

    /// The span of the waker that woke `node`, if it is a thread's.
    fn waker(&mut self, node: i64) -> Result<Option<i64>> {
        let Some((running_id, waker_utid)) = self.nodes[&node].waker_state else {
            return Ok(None);
        };
        Ok(self
            .thread(waker_utid)?
            .span_of_running
            .get(&running_id)
            .copied())
    }

    /// Perfetto's walk from one root span, over its part of [lo, hi).
    fn walk(&mut self, root: i64, lo: i64, hi: i64, out: &mut Vec<PathRow>) -> Result<()> {
        struct Frame {
            node: i64,
            start: i64,
            end: i64,
            depth: u32,
            wakes: Option<i64>,
        }
        let r = &self.nodes[&root];
        let mut stack = vec![Frame {
            node: root,
            start: lo.max(r.ts - r.idle_dur.unwrap_or(0)),
            end: hi.min(r.ts + r.dur),
            depth: 0,
            wakes: None,
        }];
        while let Some(f) = stack.pop() {
            if f.start >= f.end {
                continue;
            }
            let Some(n) = self.nodes.get(&f.node).cloned() else {
                continue;
            };
            let idle_start = n.idle_dur.map_or(f.start, |d| n.ts - d);
            let (eff_start, eff_end) = (f.start.max(idle_start), f.end.min(n.ts + n.dur));
            if n.idle_dur.is_some()
                && f.start < idle_start
                && let Some(prev) = n.prev
            {
                stack.push(Frame {
                    node: prev,
                    start: f.start,
                    end: f.end.min(idle_start),
                    depth: f.depth,
                    wakes: f.wakes,
                });
            }
            if eff_start >= eff_end {
                continue;
            }
            let idle_end = eff_end.min(n.ts);
            if eff_start < idle_end {
                match self.waker(f.node)? {
                    Some(w) => stack.push(Frame {
                        node: w,
                        start: eff_start,
                        end: idle_end,
                        depth: f.depth + 1,
                        wakes: Some(f.node),
                    }),
                    // Perfetto self-attributes only when the idle has no
                    // waker span at all (woken by an interrupt).
                    None if n.waker_state.is_none() && n.prev.is_some() => out.push(PathRow {
                        ts: eff_start,
                        dur: idle_end - eff_start,
                        utid: n.utid,
                        depth: f.depth,
                        node: f.node,
                        wakes: f.wakes,
                    }),
                    None => {}
                }
            }
            let run_start = eff_start.max(n.ts);
            if run_start < eff_end {
                out.push(PathRow {
                    ts: run_start,
                    dur: eff_end - run_start,
                    utid: n.utid,
                    depth: f.depth,
                    node: f.node,
                    wakes: f.wakes,
                });
            }
        }
        Ok(())
    }
}

/// A walk's rows, in time order, and where it stopped when the window held
/// more than [`MAX_ROOT_SPANS`] of the task's spans.
pub struct Walk {
    pub rows: Vec<PathRow>,
    pub cut_at: Option<i64>,
}

/// The critical path of `utid` over [lo, hi) (absolute), in time order,
/// walked from at most `max_spans` of its spans: Perfetto's
/// `_thread_executing_span_critical_path(utid, lo, hi - lo)`.
pub fn critical_path_rows(
    conn: &Connection,
    utid: i64,
    lo: i64,
    hi: i64,
    max_spans: usize,
) -> Result<Walk> {
    walk_path(&mut Graph::new(conn, lo, hi), utid, lo, hi, max_spans)
}

fn walk_path(g: &mut Graph, utid: i64, lo: i64, hi: i64, max_spans: usize) -> Result<Walk> {
    let root = g.load(
        utid,
        Reach {
            until: hi,
            max_spans,
        },
    )?;
    let (Some(&first), Some(&last)) = (root.spans.first(), root.spans.last()) else {
        return Ok(Walk {
            rows: Vec::new(),
            cut_at: None,
        });
    };
    // Cut short: the path ends where the last span loaded starts.
    let cut_at = root.cut.then(|| g.nodes[&last].ts).filter(|&t| t < hi);
    let hi = cut_at.unwrap_or(hi);
    // The spans covering the interval (Perfetto's _intervals_to_roots).
    let (min_start, max_start) = (g.nodes[&first].ts, g.nodes[&last].ts);
    let from = root
        .spans
        .iter()
        .rposition(|s| g.nodes[s].ts <= lo.max(min_start))
        .unwrap_or(0);
    let Some(to) = root
        .spans
        .iter()
        .position(|s| g.nodes[s].ts >= hi.min(max_start))
    else {
        return Ok(Walk {
            rows: Vec::new(),
            cut_at,
        });
    };
    // Every waker was running before the span it woke started, so the
    // others' states are needed up to the last root's start.
    g.reach.until = hi.max(g.nodes[&root.spans[to]].ts + 1);
    let roots = root.spans[from..=to].to_vec();
    g.threads.insert(utid, root);
    let mut rows = Vec::new();
    for root in roots {
        g.walk(root, lo, hi, &mut rows)?;
    }
    rows.sort_by_key(|r| (r.ts, r.depth));
    rows.dedup();
    Ok(Walk { rows, cut_at })
}

/// Running time of `utid` within [lo, hi), from the graph's loaded states.
fn running_within(running: &[(i64, i64)], lo: i64, hi: i64) -> i64 {
    let i = running.partition_point(|&(_, e)| e <= lo);
    running[i..]
        .iter()
        .take_while(|&&(s, _)| s < hi)
        .map(|&(s, e)| e.min(hi) - s.max(lo))
        .sum()
}

/// The critical path of the thread `tid` in the window, at most `limit` steps.
pub fn critical_path(conn: &Connection, tid: i64, w: Window, limit: usize) -> Result<CriticalPath> {
    let b = trace_bounds(conn)?;
    let (lo, hi) = (b.abs(w.start), b.abs(w.end));
    let filter = TaskFilter {
        tid: Some(tid),
        ..TaskFilter::default()
    };
    // A reused tid has several utids: the one alive last in the window.
    let utids = filter_utids(conn, &filter)?;
    let mut alive =
        conn.prepare("SELECT utid FROM thread WHERE utid = ?1 AND coalesce(start_ts, ?2) < ?3")?;
    let mut utid = None;
    for &u in &utids {
        if alive.exists(params![u, lo, hi])? {
            utid = Some(u);
        }
    }
    let Some(utid) = utid.or(utids.last().copied()) else {
        bail!(
            "no thread with tid {tid}; {} finds tasks by name, tid or pid",
            search_events::TOOL.name
        );
    };
    let mut g = Graph::new(conn, lo, hi);
    let Walk { rows, cut_at } = walk_path(&mut g, utid, lo, hi, MAX_ROOT_SPANS)?;
    let mut steps: Vec<(PathRow, i64)> = Vec::new();
    let mut per_thread: HashMap<i64, (i64, i64)> = HashMap::new();
    for r in &rows {
        let run = running_within(&g.thread(r.utid)?.running, r.ts, r.ts + r.dur);
        let t = per_thread.entry(r.utid).or_default();
        t.0 += r.dur;
        t.1 += run;
        match steps.last_mut() {
            Some((last, last_run))
                if last.utid == r.utid
                    && last.depth == r.depth
                    && last.wakes == r.wakes
                    && last.ts + last.dur == r.ts =>
            {
                last.dur += r.dur;
                *last_run += run;
            }
            _ => steps.push((*r, run)),
        }
    }
    // The woken spans were walked, so they are in the graph.
    let mut wakes_from: HashMap<i64, (i64, Option<String>)> = HashMap::new();
    for node in rows.iter().filter_map(|r| r.wakes) {
        let n = &g.nodes[&node];
        let what = n.idle_state.clone().map(|s| match &n.blocked_function {
            Some(f) => format!("{s} ({f})"),
            None => s,
        });
        wakes_from.insert(node, (n.utid, what));
    }
    let mut all: Vec<i64> = per_thread.keys().copied().collect();
    all.extend(wakes_from.values().map(|v| v.0));
    all.push(utid);
    all.sort_unstable();
    all.dedup();
    let ids = task_ids(conn, &all)?;
    let tid_of = |u: i64| ids.get(&u).map_or(-1, |t| t.tid);
    let name_of = |u: i64| ids.get(&u).and_then(|t| t.thread_name.clone());
    let mut by_thread: Vec<PathThread> = per_thread
        .iter()
        .map(|(&u, &(ns, running_ns))| PathThread {
            tid: tid_of(u),
            name: name_of(u),
            ns,
            running_ns,
        })
        .collect();
    by_thread.sort_by_key(|t| (std::cmp::Reverse(t.ns), t.tid));
    by_thread.truncate(8);
    let covered = rows.iter().map(|r| r.dur).sum();
    let listed_until = steps.get(limit).map(|s| RelTime::new(b.rel(s.0.ts)));
    steps.truncate(limit);
    let Some(task) = ids.get(&utid).cloned() else {
        bail!("thread {tid} has no row in the thread table");
    };
    Ok(CriticalPath {
        window: WindowOut::new(w, &b),
        task,
        covered: Dur::new(covered),
        by_thread,
        steps: steps
            .into_iter()
            .map(|(r, running_ns)| {
                let woken = r.wakes.and_then(|n| wakes_from.get(&n));
                Step {
                    start: RelTime::new(b.rel(r.ts)),
                    dur: Dur::new(r.dur),
                    tid: tid_of(r.utid),
                    name: name_of(r.utid),
                    depth: r.depth,
                    running_ns,
                    wakes: woken.map(|w| tid_of(w.0)),
                    wakes_from: woken.and_then(|w| w.1.clone()),
                }
            })
            .collect(),
        listed_until,
        walked_until: cut_at.map(|t| RelTime::new(b.rel(t))),
    })
}

// ---------------------------------------------------------------------- tool

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CriticalPathArgs {
    /// Thread id.
    pub tid: i64,
    /// Window, e.g. "1s..1.2s"; default: the whole trace.
    pub window: Option<WindowArg>,
    /// Most steps: default 12, at most 2000.
    pub limit: Option<i64>,
}

pub const TOOL: Tool<CriticalPathArgs, CriticalPath> = Tool {
    name: "critical_path",
    description: "What a thread waited on (Perfetto's critical path): who woke it, that waker's \
                  waits, recursively.",
    answer: |trace, a| {
        let limit = count_arg("limit", a.limit, 12, 2000)?;
        let w = resolve_window(trace.conn, a.window.as_ref())?;
        critical_path(trace.conn, a.tid, w, limit)
    },
};
