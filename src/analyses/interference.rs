//! `interference`: what took the CPU from a task or kept it waiting over a
//! window: preemptions and who preempted it, IRQ and softirq time on its CPU
//! while it ran (stolen) and while it waited for that CPU (delaying it), and
//! its migrations with what they cost in wait.

use std::collections::HashMap;

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, params};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::durations::{Dur, clip};
use super::percentiles::percentile_in_place;
use super::task_timeline::TaskSel;
use super::tasks::task_ids;
use super::timespec::{
    RelTime, TraceBounds, Window, WindowArg, WindowOut, resolve_window, trace_bounds,
};
use super::tool::{Tool, count_arg};

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Interference {
    pub window: WindowOut,
    /// Threads covered (all threads of the process for a pid).
    pub threads: usize,
    /// Time they ran in the window.
    pub running: Dur,
    /// Time they were runnable (R, R+) in the window.
    pub runnable: Dur,
    pub preemptions: Preemptions,
    /// IRQ and softirq handlers on the CPU a thread ran on (stolen from its run
    /// time) or waited for (the CPU it then ran on: delaying it).
    pub interrupts: Interrupts,
    pub migrations: Migrations,
    /// Set when the window held too many of the task's state changes to read:
    /// the answer covers the window up to here; ask again from here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub walked_until: Option<RelTime>,
}

/// Most thread_state rows a call reads. A busy thread has millions in a long
/// trace and each preemption among them costs two index lookups, so past
/// this many the answer stops and says where (as critical_path does).
pub const MAX_STATES: usize = 20_000;

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Preemptions {
    /// Switch-outs while runnable (R, R+) in the window.
    pub count: usize,
    /// The runnable time that followed them until the thread ran again.
    pub wait: Dur,
    /// Who was switched in, most preemptions first.
    pub by: Vec<Preempter>,
}

/// A thread switched in on a CPU when the task was preempted there.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Preempter {
    /// Thread id; 0 for idle.
    pub tid: i64,
    pub name: Option<String>,
    /// Preemptions it made.
    pub count: usize,
    /// Its time on that CPU until the task ran again, ns.
    pub ns: i64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Interrupts {
    /// While the task ran.
    pub stolen: InterruptSplit,
    /// While it was runnable, on the CPU it then ran on.
    pub delayed: InterruptSplit,
    /// By handler (slice name), most time first.
    pub handlers: Vec<HandlerTime>,
}

/// Interrupt time, each instant counted once (for the innermost handler:
/// an IRQ that interrupted a softirq counts as IRQ).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct InterruptSplit {
    pub total: Dur,
    pub irq_ns: i64,
    pub softirq_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct HandlerTime {
    /// 'IRQ (name)' or a softirq ('TIMER', 'NET_RX', ...).
    pub name: String,
    pub stolen_ns: i64,
    pub delayed_ns: i64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Migrations {
    /// Moves to another CPU in the window (migration rows).
    pub count: usize,
    /// Moved while runnable or running (load balancing, affinity).
    pub running: usize,
    /// Placed elsewhere by a wakeup.
    pub waking: usize,
    /// Runnable waits (to running, clipped to the window) during or after
    /// which it migrated: each migration belongs to the wait that ends at the
    /// thread's next run.
    pub waits_after: WaitStats,
    /// The other runnable waits.
    pub other_waits: WaitStats,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct WaitStats {
    pub count: usize,
    pub mean_ns: Option<i64>,
    pub p50_ns: Option<i64>,
    pub max_ns: Option<i64>,
}

impl WaitStats {
    fn of(mut waits: Vec<i64>) -> WaitStats {
        let count = waits.len();
        let mean_ns = (count > 0).then(|| waits.iter().sum::<i64>() / count as i64);
        WaitStats {
            count,
            mean_ns,
            max_ns: waits.iter().copied().max(),
            p50_ns: percentile_in_place(&mut waits, 50.0),
        }
    }
}

/// A piece of a CPU's interrupt time: [start, end) absolute, the innermost
/// handler running then (its index in `Names`), and whether it is an IRQ.
type Piece = (i64, i64, usize, bool);

/// Handler names, each stored once.
#[derive(Default)]
struct Names {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl Names {
    fn id(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), self.names.len() - 1);
        self.names.len() - 1
    }
}

/// The cpu_irq and cpu_softirq tracks of `cpu`: (track id, is the IRQ track).
fn interrupt_tracks(conn: &Connection, cpu: i64) -> Result<Vec<(i64, bool)>> {
    let mut st = conn.prepare_cached(
        "SELECT id, type = 'cpu_irq' FROM track
         WHERE cpu = ?1 AND type IN ('cpu_irq', 'cpu_softirq')",
    )?;
    let tracks = st
        .query_map([cpu], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(tracks)
}

/// The interrupt time of `cpu` within [lo, hi) (absolute) as disjoint
/// pieces in time order, read along the slice(track_id, ts) index: the
/// slices starting inside, and those running at `lo` (the last one starting
/// before it and its enclosing ones, since slices on a track nest).
fn interrupt_pieces(
    conn: &Connection,
    b: &TraceBounds,
    cpu: i64,
    lo: i64,
    hi: i64,
    names: &mut Names,
) -> Result<Vec<Piece>> {
    let mut slices: Vec<Piece> = Vec::new();
    let end_of = |ts: i64, dur: i64| if dur < 0 { b.end_ts } else { ts + dur };
    let mut last_before = conn.prepare_cached(
        "SELECT ts, dur, name, parent_id FROM slice WHERE track_id = ?1 AND ts < ?2
         ORDER BY ts DESC LIMIT 1",
    )?;
    let mut by_id =
        conn.prepare_cached("SELECT ts, dur, name, parent_id FROM slice WHERE id = ?1")?;
    let mut inside = conn.prepare_cached(
        "SELECT ts, dur, name FROM slice WHERE track_id = ?1 AND ts >= ?2 AND ts < ?3
         ORDER BY ts",
    )?;
    let row4 = |r: &rusqlite::Row| -> rusqlite::Result<(i64, i64, String, Option<i64>)> {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    };
    for (track, is_irq) in interrupt_tracks(conn, cpu)? {
        let mut open = last_before.query_row(params![track, lo], row4).optional()?;
        while let Some((ts, dur, name, parent)) = open {
            if end_of(ts, dur) > lo {
                slices.push((ts, end_of(ts, dur), names.id(&name), is_irq));
            }
            open = match parent {
                Some(p) => by_id.query_row([p], row4).optional()?,
                None => None,
            };
        }
        let mut rows = inside.query(params![track, lo, hi])?;
        while let Some(r) = rows.next()? {
            let (ts, dur): (i64, i64) = (r.get(0)?, r.get(1)?);
            let name = r.get_ref(2)?.as_str()?;
            slices.push((ts, end_of(ts, dur), names.id(name), is_irq));
        }
    }
    // Outer before inner at one start; then a stack gives each instant to the
    // innermost handler (an IRQ inside a softirq starts after it).
    slices.sort_unstable_by_key(|s| (s.0, std::cmp::Reverse(s.1)));
    let mut pieces = Vec::new();
    let mut stack: Vec<(i64, usize, bool)> = Vec::new();
    let mut cursor = lo;
    let mut emit = |from: i64, to: i64, top: (i64, usize, bool)| {
        let (from, to) = (from.max(lo), to.min(hi));
        if from < to {
            pieces.push((from, to, top.1, top.2));
        }
    };
    let mut advance = |t: i64, stack: &mut Vec<(i64, usize, bool)>, cursor: &mut i64| {
        while let Some(&top) = stack.last() {
            if top.0 <= t {
                emit(*cursor, top.0, top);
                *cursor = (*cursor).max(top.0);
                stack.pop();
            } else {
                emit(*cursor, t, top);
                break;
            }
        }
        *cursor = (*cursor).max(t);
    };
    for (start, end, handler, is_irq) in slices {
        advance(start, &mut stack, &mut cursor);
        stack.push((end, handler, is_irq));
    }
    advance(i64::MAX, &mut stack, &mut cursor);
    Ok(pieces)
}

/// Interrupt time on a CPU within one wait: its total and the handlers that
/// took most of it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct WaitInterrupts {
    pub ns: i64,
    /// Handlers, most time first, at most 2.
    pub top: Vec<String>,
}

/// IRQ and softirq time on `cpu` within [lo, hi) (absolute), None if there
/// was none: what interrupted the CPU a task waited for (the holders, or
/// idle).
pub(crate) fn interrupts_within(
    conn: &Connection,
    b: &TraceBounds,
    cpu: i64,
    lo: i64,
    hi: i64,
) -> Result<Option<WaitInterrupts>> {
    let mut names = Names::default();
    let pieces = interrupt_pieces(conn, b, cpu, lo, hi, &mut names)?;
    let mut per: Vec<i64> = vec![0; names.names.len()];
    for (s, e, h, _) in pieces {
        per[h] += e - s;
    }
    let ns: i64 = per.iter().sum();
    if ns == 0 {
        return Ok(None);
    }
    let mut order: Vec<usize> = (0..per.len()).filter(|&i| per[i] > 0).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(per[i]), i));
    order.truncate(2);
    Ok(Some(WaitInterrupts {
        ns,
        top: order.into_iter().map(|i| names.names[i].clone()).collect(),
    }))
}

/// What a thread was doing on a CPU: running there, or waiting to run there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Ran,
    Waited,
}

/// A thread's [start, end) on one CPU (absolute, clipped, in time order,
/// disjoint) and what it did there.
type CpuUse = Vec<(i64, i64, Use)>;

/// A runnable run of states: [start, end) absolute, unclipped.
struct Wait {
    start: i64,
    end: i64,
    /// CPU it then ran on; None if it did not run next (the trace ended, or
    /// the task died): then no CPU was waited for.
    cpu: Option<i64>,
    /// The CPU it was preempted on, when the wait began with a preemption.
    preempted_on: Option<i64>,
}

/// One thread's states over the window, as the parts interference needs.
#[derive(Default)]
struct ThreadStates {
    running: i64,
    runnable: i64,
    waits: Vec<Wait>,
    /// Per CPU: the thread's [start, end) there (clipped), in time order.
    on_cpu: HashMap<i64, CpuUse>,
}

/// Where the reading must stop to stay within [`MAX_STATES`]: the earliest,
/// over the threads, of the first row past each one's share, if any is.
fn budget_cut(conn: &Connection, utids: &[i64], lo: i64, hi: i64) -> Result<Option<i64>> {
    let share = (MAX_STATES / utids.len().max(1)).max(100);
    let mut st = conn.prepare_cached(
        "SELECT ts FROM thread_state WHERE utid = ?1 AND ts >= ?2 AND ts < ?3 \
         ORDER BY ts LIMIT 1 OFFSET ?4",
    )?;
    let mut cut: Option<i64> = None;
    for &utid in utids {
        let past: Option<i64> = st
            .query_row(params![utid, lo, hi, share as i64], |r| r.get(0))
            .optional()?;
        if let Some(ts) = past {
            cut = Some(cut.map_or(ts, |c| c.min(ts)));
        }
    }
    Ok(cut)
}

fn is_runnable(state: Option<&str>) -> bool {
    matches!(state, Some("R" | "R+"))
}

/// Reads `utid`'s thread_state rows covering [lo, hi) and, past hi, until
/// the wait open at hi ends, so that wait's CPU is known.
fn thread_states(
    conn: &Connection,
    b: &TraceBounds,
    utid: i64,
    lo: i64,
    hi: i64,
) -> Result<ThreadStates> {
    // From the row before the one in force at lo: a wait starting exactly at
    // lo is a preemption only if the row before it ran, so that row is read.
    let mut before =
        conn.prepare_cached("SELECT max(ts) FROM thread_state WHERE utid = ?1 AND ts < ?2")?;
    let from = before
        .query_row(params![utid, lo], |r| r.get::<_, Option<i64>>(0))?
        .unwrap_or(lo);
    let mut st = conn.prepare_cached(
        "SELECT ts, dur, state, cpu FROM thread_state WHERE utid = ?1 AND ts >= ?2 ORDER BY ts",
    )?;
    let mut out = ThreadStates::default();
    // (start of the open runnable run, the CPU it was preempted on)
    let mut open: Option<(i64, Option<i64>)> = None;
    // The CPU of the Running row just before, if the previous row was one.
    let mut ran_on: Option<i64> = None;
    let mut rows = st.query(params![utid, from])?;
    while let Some(r) = rows.next()? {
        let (ts, dur): (i64, i64) = (r.get(0)?, r.get(1)?);
        if ts >= hi && open.is_none() {
            break;
        }
        let state = r.get_ref(2)?.as_str_or_null()?;
        let cpu: Option<i64> = r.get(3)?;
        let len = clip(ts, dur, lo, hi, b.end_ts);
        match (state, cpu) {
            (Some("Running"), Some(cpu)) => {
                if let Some((start, preempted_on)) = open.take() {
                    out.waits.push(Wait {
                        start,
                        end: ts,
                        cpu: Some(cpu),
                        preempted_on,
                    });
                }
                out.running += len;
                if len > 0 {
                    let start = ts.max(lo);
                    out.on_cpu
                        .entry(cpu)
                        .or_default()
                        .push((start, start + len, Use::Ran));
                }
                ran_on = Some(cpu);
                continue;
            }
            (s, _) if is_runnable(s) => {
                out.runnable += len;
                if open.is_none() {
                    open = Some((ts, ran_on));
                }
            }
            _ => {
                if let Some((start, preempted_on)) = open.take() {
                    out.waits.push(Wait {
                        start,
                        end: ts,
                        cpu: None,
                        preempted_on,
                    });
                }
            }
        }
        ran_on = None;
    }
    // Rows ran out in a runnable state lasting to the end of the trace.
    if let Some((start, preempted_on)) = open {
        out.waits.push(Wait {
            start,
            end: b.end_ts,
            cpu: None,
            preempted_on,
        });
    }
    for w in &out.waits {
        let (s, e) = (w.start.max(lo), w.end.min(hi));
        if let Some(cpu) = w.cpu
            && s < e
        {
            out.on_cpu.entry(cpu).or_default().push((s, e, Use::Waited));
        }
    }
    for v in out.on_cpu.values_mut() {
        v.sort_unstable_by_key(|x| x.0);
    }
    Ok(out)
}

/// Preemptions, interrupts and migrations of a thread or a process's threads.
pub fn interference(
    conn: &Connection,
    sel: TaskSel,
    w: Window,
    top: usize,
) -> Result<Interference> {
    let b = trace_bounds(conn)?;
    let utids = sel.utids(conn)?;
    let lo = b.abs(w.start);
    let cut = budget_cut(conn, &utids, lo, b.abs(w.end))?;
    let hi = cut.unwrap_or(b.abs(w.end));
    let mut first_after = conn.prepare_cached(
        "SELECT ts, dur, utid FROM sched_slice WHERE cpu = ?1 AND ts >= ?2 ORDER BY ts LIMIT 1",
    )?;
    let mut more_of = conn.prepare_cached(
        "SELECT ts, dur FROM sched_slice WHERE utid = ?1 AND ts > ?2 AND ts < ?3 AND cpu = ?4",
    )?;
    let mut moves = conn.prepare_cached(
        "SELECT ts, running FROM migration WHERE utid = ?1 AND ts >= ?2 AND ts < ?3 ORDER BY ts",
    )?;
    let (mut running, mut runnable) = (0i64, 0i64);
    let (mut preemptions, mut preempted_wait) = (0usize, 0i64);
    // Preempter utid -> (preemptions, ns on the CPU until the task ran).
    let mut preempters: HashMap<i64, (usize, i64)> = HashMap::new();
    let (mut moved, mut moved_running, mut moved_waking) = (0usize, 0usize, 0usize);
    let (mut after, mut other) = (Vec::new(), Vec::new());
    // Per CPU, per thread: where it ran or waited there.
    let mut on_cpu: HashMap<i64, Vec<CpuUse>> = HashMap::new();
    for &utid in &utids {
        let s = thread_states(conn, &b, utid, lo, hi)?;
        running += s.running;
        runnable += s.runnable;
        for (cpu, v) in s.on_cpu {
            on_cpu.entry(cpu).or_default().push(v);
        }
        for wait in &s.waits {
            let Some(cpu) = wait.preempted_on else {
                continue;
            };
            let (t, until) = (wait.start, wait.end.min(hi));
            if t < lo || t >= hi {
                continue;
            }
            preemptions += 1;
            preempted_wait += until - t;
            let Some((ts, dur, next)) = first_after
                .query_row(params![cpu, t], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?
            else {
                continue;
            };
            let mut ns = clip(ts, dur, t, until, b.end_ts);
            let end = if dur < 0 { b.end_ts } else { ts + dur };
            if end < until {
                // It may have run there again before the task did.
                let mut rows = more_of.query(params![next, ts, until, cpu])?;
                while let Some(r) = rows.next()? {
                    ns += clip(r.get(0)?, r.get(1)?, t, until, b.end_ts);
                }
            }
            let e = preempters.entry(next).or_default();
            e.0 += 1;
            e.1 += ns;
        }
        // Each migration belongs to the wait ending at the thread's next run.
        let mut migrated = vec![false; s.waits.len()];
        let mut i = 0;
        let mut rows = moves.query(params![utid, lo, hi])?;
        while let Some(r) = rows.next()? {
            let (ts, was_running): (i64, Option<bool>) = (r.get(0)?, r.get(1)?);
            moved += 1;
            match was_running {
                Some(true) => moved_running += 1,
                Some(false) => moved_waking += 1,
                None => {}
            }
            while i < s.waits.len() && s.waits[i].end <= ts {
                i += 1;
            }
            if let Some(m) = migrated.get_mut(i) {
                *m = true;
            }
        }
        for (wait, m) in s.waits.iter().zip(migrated) {
            let len = wait.end.min(hi) - wait.start.max(lo);
            // Only waits that ended in running have a known length.
            if wait.cpu.is_some() && len > 0 {
                if m { &mut after } else { &mut other }.push(len);
            }
        }
    }
    let interrupts = interrupts_hitting(conn, &b, on_cpu, top)?;
    let mut by: Vec<(i64, usize, i64)> = preempters
        .into_iter()
        .map(|(u, (n, ns))| (u, n, ns))
        .collect();
    by.sort_by_key(|&(u, n, ns)| (std::cmp::Reverse(n), std::cmp::Reverse(ns), u));
    by.truncate(top);
    let ids = task_ids(conn, &by.iter().map(|x| x.0).collect::<Vec<_>>())?;
    Ok(Interference {
        window: WindowOut::new(w, &b),
        threads: utids.len(),
        running: Dur::new(running),
        runnable: Dur::new(runnable),
        preemptions: Preemptions {
            count: preemptions,
            wait: Dur::new(preempted_wait),
            by: by
                .into_iter()
                .map(|(u, count, ns)| {
                    let id = ids.get(&u);
                    let tid = id.map_or(-1, |t| t.tid);
                    Preempter {
                        tid,
                        name: if tid == 0 {
                            Some("idle".into())
                        } else {
                            id.and_then(|t| t.thread_name.clone())
                        },
                        count,
                        ns,
                    }
                })
                .collect(),
        },
        interrupts,
        migrations: Migrations {
            count: moved,
            running: moved_running,
            waking: moved_waking,
            waits_after: WaitStats::of(after),
            other_waits: WaitStats::of(other),
        },
        walked_until: cut.map(|t| RelTime::new(b.rel(t))),
    })
}

/// The interrupt time that overlapped where the threads ran or waited, per
/// CPU: each CPU's pieces read once over the span its threads used it,
/// then merged with each thread's (sorted, disjoint) intervals there.
fn interrupts_hitting(
    conn: &Connection,
    b: &TraceBounds,
    on_cpu: HashMap<i64, Vec<CpuUse>>,
    top: usize,
) -> Result<Interrupts> {
    let mut names = Names::default();
    // Per handler: (stolen, delayed).
    let mut per: Vec<(i64, i64)> = Vec::new();
    // [Ran, Waited] x [irq, softirq]
    let mut split = [[0i64; 2]; 2];
    let mut cpus: Vec<_> = on_cpu.into_iter().collect();
    cpus.sort_unstable_by_key(|c| c.0);
    for (cpu, threads) in cpus {
        let lo = threads.iter().filter_map(|v| v.first()).map(|x| x.0).min();
        let hi = threads.iter().filter_map(|v| v.last()).map(|x| x.1).max();
        let (Some(lo), Some(hi)) = (lo, hi) else {
            continue;
        };
        let pieces = interrupt_pieces(conn, b, cpu, lo, hi, &mut names)?;
        per.resize(names.names.len(), (0, 0));
        for intervals in &threads {
            let mut j = 0;
            for &(s, e, used) in intervals {
                while j < pieces.len() && pieces[j].1 <= s {
                    j += 1;
                }
                let mut k = j;
                while k < pieces.len() && pieces[k].0 < e {
                    let (ps, pe, h, is_irq) = pieces[k];
                    let ns = pe.min(e) - ps.max(s);
                    if ns > 0 {
                        let slot = &mut per[h];
                        match used {
                            Use::Ran => slot.0 += ns,
                            Use::Waited => slot.1 += ns,
                        }
                        split[(used == Use::Waited) as usize][(!is_irq) as usize] += ns;
                    }
                    k += 1;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..per.len())
        .filter(|&i| per[i].0 + per[i].1 > 0)
        .collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(per[i].0 + per[i].1), i));
    order.truncate(top);
    let total = |s: [i64; 2]| InterruptSplit {
        total: Dur::new(s[0] + s[1]),
        irq_ns: s[0],
        softirq_ns: s[1],
    };
    Ok(Interrupts {
        stolen: total(split[0]),
        delayed: total(split[1]),
        handlers: order
            .into_iter()
            .map(|i| HandlerTime {
                name: names.names[i].clone(),
                stolen_ns: per[i].0,
                delayed_ns: per[i].1,
            })
            .collect(),
    })
}

// ---------------------------------------------------------------------- tool

#[derive(Debug, Deserialize, JsonSchema)]
pub struct InterferenceArgs {
    /// Thread id (give tid or pid).
    pub tid: Option<i64>,
    /// Process id: its threads together.
    pub pid: Option<i64>,
    pub window: Option<WindowArg>,
    /// Top preempters and handlers: default 3, at most 50.
    pub limit: Option<i64>,
}

pub const TOOL: Tool<InterferenceArgs, Interference> = Tool {
    name: "interference",
    description: "Preemptions (by whom), IRQ/softirq time while it ran or waited, and migrations \
                  (their cost in wait) of a task.",
    answer: |trace, a| {
        let top = count_arg("limit", a.limit, 3, 50)?;
        let sel = TaskSel::from_args(a.tid, a.pid)?;
        let w = resolve_window(trace.conn, a.window.as_ref())?;
        interference(trace.conn, sel, w, top)
    },
};
