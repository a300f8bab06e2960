//! `cpu_utilization`: how busy the CPUs were in a window, per CPU, per
//! last-level cache or per NUMA node.

use std::collections::BTreeMap;

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, params};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::durations::{CLIPPED_DUR, Dur, clip};
use super::tasks::NOT_IDLE;
use super::timespec::{TraceBounds, Window, WindowArg, WindowOut, resolve_window, trace_bounds};
use super::tool::Tool;
use crate::analyzer::aggregate;

/// How CPUs are grouped in `cpu_utilization`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// One row per CPU.
    #[default]
    Cpu,
    /// One row per last-level-cache group (cpu.llc_id).
    Llc,
    /// One row per NUMA node (cpu.numa_node).
    Numa,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CpuUtilization {
    /// The window analysed.
    pub window: WindowOut,
    pub group_by: GroupBy,
    /// One entry per group, by group id.
    pub groups: Vec<UtilGroup>,
    /// All CPUs together.
    pub total: UtilGroup,
    /// Set when the trace has no topology for the grouping asked (then grouped by CPU).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct UtilGroup {
    /// CPU number, llc_id or numa_node; -1 for the total.
    pub id: i64,
    /// CPUs in the group.
    pub cpu_count: usize,
    pub cpus: Vec<i64>,
    /// Time non-idle threads ran on these CPUs within the window.
    pub busy: Dur,
    /// Window length times CPU count.
    pub capacity: Dur,
    /// busy / capacity, percent.
    pub utilization_pct: f64,
    /// The CPU time split by what used it; the four add up to capacity. task: threads ran,
    /// not interrupted (busy minus the IRQs and softirqs that hit them).
    pub task: Dur,
    /// IRQ handlers ran (from the trace's irq events; 0 when the irq group was not recorded).
    pub irq: Dur,
    /// Softirqs ran, not counting IRQs that interrupted them.
    pub softirq: Dur,
    /// Nothing ran: capacity minus the other three.
    pub idle: Dur,
}

/// A CPU's interrupt time in a window.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct InterruptTime {
    irq: i64,
    /// Softirq time outside IRQ handlers.
    softirq: i64,
    /// The part of irq + softirq when the CPU ran no thread but its idle one.
    in_idle: i64,
}

/// Sorted, disjoint intervals covering `v`.
fn union(mut v: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    v.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn total(v: &[(i64, i64)]) -> i64 {
    v.iter().map(|(lo, hi)| hi - lo).sum()
}

/// IRQ and softirq time per CPU within the window (slices on the cpu_irq and
/// cpu_softirq tracks, clipped), and how much of it fell outside threads'
/// slices (in idle).
fn interrupts_per_cpu(
    conn: &Connection,
    b: &TraceBounds,
    w: Window,
) -> Result<BTreeMap<i64, InterruptTime>> {
    let (lo, hi) = (b.abs(w.start), b.abs(w.end));
    let mut st = conn.prepare(
        "SELECT t.cpu, t.type = 'cpu_irq', s.ts, s.dur FROM slice s JOIN track t ON t.id = s.track_id
         WHERE t.type IN ('cpu_irq', 'cpu_softirq') AND s.ts < ?2
           AND (s.dur < 0 OR s.ts + s.dur > ?1)",
    )?;
    // Per CPU: (IRQ spans, softirq spans).
    type Spans = Vec<(i64, i64)>;
    let mut spans: BTreeMap<i64, (Spans, Spans)> = BTreeMap::new();
    for row in st.query_map(params![lo, hi], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, bool>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })? {
        let (cpu, is_irq, ts, dur) = row?;
        let end = if dur < 0 { b.end_ts } else { ts + dur };
        let span = (ts.max(lo), end.min(hi));
        if span.0 < span.1 {
            let (irqs, softirqs) = spans.entry(cpu).or_default();
            if is_irq { irqs } else { softirqs }.push(span);
        }
    }
    // The slice running where each piece starts says whose time it took
    // (no slice yet: the CPU's time is not busy, as in busy_per_cpu).
    let mut running = conn.prepare(&format!(
        "SELECT {NOT_IDLE} FROM sched_slice WHERE cpu = ?1 AND ts <= ?2 ORDER BY ts DESC LIMIT 1"
    ))?;
    let mut out = BTreeMap::new();
    for (cpu, (irqs, softirqs)) in spans {
        let irqs = union(irqs);
        let all = union(irqs.iter().chain(&softirqs).copied().collect());
        let mut in_idle = 0;
        for &(start, end) in &all {
            let busy: Option<bool> = running
                .query_row(params![cpu, start], |r| r.get(0))
                .optional()?;
            if busy != Some(true) {
                in_idle += end - start;
            }
        }
        let irq = total(&irqs);
        out.insert(
            cpu,
            InterruptTime {
                irq,
                softirq: total(&all) - irq,
                in_idle,
            },
        );
    }
    Ok(out)
}

/// Busy time (non-idle sched_slice time clipped to the window) per CPU: the
/// whole buckets from agg_cpu, the partial ones from sched_slice.
pub(crate) fn busy_per_cpu(
    conn: &Connection,
    b: &TraceBounds,
    w: Window,
) -> Result<BTreeMap<i64, i64>> {
    let split = aggregate::split_window(aggregate::width(conn)?, b.abs(w.start), b.abs(w.end));
    let mut cpus = conn.prepare("SELECT cpu FROM cpu ORDER BY cpu")?;
    let mut busy: BTreeMap<i64, i64> = cpus
        .query_map([], |r| Ok((r.get(0)?, 0)))?
        .collect::<rusqlite::Result<_>>()?;
    if let Some((f0, f1)) = split.full {
        let mut st = conn.prepare(
            "SELECT cpu, sum(busy_ns) FROM agg_cpu WHERE ts >= ?1 AND ts < ?2 GROUP BY cpu",
        )?;
        for row in st.query_map(params![f0, f1], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })? {
            let (cpu, ns) = row?;
            if let Some(t) = busy.get_mut(&cpu) {
                *t += ns;
            }
        }
    }
    // Per CPU along the (cpu, ts) index: the slices starting in the piece, plus
    // the one slice running at its start (slices on one CPU do not overlap).
    let mut inside = conn.prepare(&format!(
        "SELECT coalesce(sum({CLIPPED_DUR}), 0) FROM sched_slice
         WHERE cpu = ?4 AND ts >= ?1 AND ts < ?2 AND {NOT_IDLE}"
    ))?;
    let mut before = conn.prepare(&format!(
        "SELECT ts, dur, {NOT_IDLE} FROM sched_slice WHERE cpu = ?1 AND ts < ?2
         ORDER BY ts DESC LIMIT 1"
    ))?;
    for &(lo, hi) in &split.edges {
        for (&cpu, total) in busy.iter_mut() {
            *total += inside.query_row(params![lo, hi, b.end_ts, cpu], |r| r.get::<_, i64>(0))?;
            if let Some((ts, dur, busy_slice)) = before
                .query_row(params![cpu, lo], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, bool>(2)?,
                    ))
                })
                .optional()?
                && busy_slice
            {
                *total += clip(ts, dur, lo, hi, b.end_ts);
            }
        }
    }
    Ok(busy)
}

/// CPU utilization in a window, per CPU, LLC or NUMA node.
pub fn cpu_utilization(conn: &Connection, w: Window, group_by: GroupBy) -> Result<CpuUtilization> {
    let b = trace_bounds(conn)?;
    let busy = busy_per_cpu(conn, &b, w)?;
    let interrupts = interrupts_per_cpu(conn, &b, w)?;
    let column = match group_by {
        GroupBy::Cpu => "cpu",
        GroupBy::Llc => "llc_id",
        GroupBy::Numa => "numa_node",
    };
    let mut st = conn.prepare(&format!("SELECT cpu, {column} FROM cpu ORDER BY cpu"))?;
    let mut groups: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut missing = false;
    for row in st.query_map([], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?))
    })? {
        let (cpu, key) = row?;
        missing |= key.is_none();
        groups.entry(key.unwrap_or(cpu)).or_default().push(cpu);
    }
    let mut note = None;
    if missing && group_by != GroupBy::Cpu {
        note = Some(format!(
            "the trace has no {column} for some CPUs (not recorded by schedlens?): grouped by CPU"
        ));
        groups = busy.keys().map(|&c| (c, vec![c])).collect();
    }
    let make = |id: i64, cpus: Vec<i64>| {
        let busy_ns: i64 = cpus.iter().map(|c| busy.get(c).copied().unwrap_or(0)).sum();
        let capacity = w.len().saturating_mul(cpus.len() as i64);
        let i =
            cpus.iter()
                .filter_map(|c| interrupts.get(c))
                .fold(InterruptTime::default(), |a, t| InterruptTime {
                    irq: a.irq + t.irq,
                    softirq: a.softirq + t.softirq,
                    in_idle: a.in_idle + t.in_idle,
                });
        let in_tasks = i.irq + i.softirq - i.in_idle;
        UtilGroup {
            id,
            cpu_count: cpus.len(),
            cpus,
            busy: Dur::new(busy_ns),
            capacity: Dur::new(capacity),
            utilization_pct: pct(busy_ns, capacity),
            task: Dur::new(busy_ns - in_tasks),
            irq: Dur::new(i.irq),
            softirq: Dur::new(i.softirq),
            idle: Dur::new(capacity - busy_ns - i.in_idle),
        }
    };
    let all: Vec<i64> = busy.keys().copied().collect();
    Ok(CpuUtilization {
        window: WindowOut::new(w, &b),
        group_by: if note.is_some() {
            GroupBy::Cpu
        } else {
            group_by
        },
        groups: groups
            .into_iter()
            .map(|(id, cpus)| make(id, cpus))
            .collect(),
        total: make(-1, all),
        note,
    })
}

fn pct(part: i64, whole: i64) -> f64 {
    if whole <= 0 {
        0.0
    } else {
        (part as f64 * 10_000.0 / whole as f64).round() / 100.0
    }
}

// ---------------------------------------------------------------------- tool

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CpuUtilizationArgs {
    /// Window, e.g. "1s..1.2s"; default: the whole trace.
    pub window: Option<WindowArg>,
    /// Per cpu (default), llc (last-level cache) or numa node.
    pub group_by: Option<GroupBy>,
}

pub const TOOL: Tool<CpuUtilizationArgs, CpuUtilization> = Tool {
    name: "cpu_utilization",
    description: "Busy time per CPU, LLC or NUMA node and in total in a window, split into task, \
                  IRQ, softirq and idle.",
    answer: |trace, a| {
        let w = resolve_window(trace.conn, a.window.as_ref())?;
        cpu_utilization(trace.conn, w, a.group_by.unwrap_or_default())
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_merges_overlapping_and_touching_spans() {
        let u = union(vec![(5, 7), (1, 3), (2, 4), (7, 9), (20, 21)]);
        assert_eq!(u, [(1, 4), (5, 9), (20, 21)]);
        assert_eq!(total(&u), 8);
        assert!(union(Vec::new()).is_empty());
    }

    #[test]
    fn percentages_round_to_hundredths() {
        assert_eq!(pct(1, 3), 33.33);
        assert_eq!(pct(1, 0), 0.0);
    }
}
