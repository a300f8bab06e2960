//! Stack profiles: the samples of one stack kind, folded into one line per
//! distinct stack (`root;child;leaf weight`), for `schedlens flamegraph` and
//! any later tool that wants the heaviest stacks.
//!
//! Weights: CPU and waker samples count 1 each; an off-CPU sample weighs the
//! nanoseconds its thread then stayed off the CPU (off_cpu_sample.dur; a state
//! that lasted to the trace end weighs up to the end). A stack is read by
//! walking stack_profile_callsite parents from the sample's callsite, at most
//! [`MAX_DEPTH`] frames, so a cycle in hostile data ends.

use crate::analyses::tasks::{TaskFilter, filter_utids};
use crate::analyses::timespec::{TraceBounds, Window};
use crate::analyzer::import::stacks::MAX_DEPTH;
use crate::model::stack::StackKind;
use anyhow::{Result, bail};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{BTreeMap, HashMap, HashSet};

/// One distinct stack and its total weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldedStack {
    /// Function names, outermost first.
    pub frames: Vec<String>,
    pub weight: i64,
}

impl FoldedStack {
    /// The folded-stack line other tools read: `root;child;leaf weight`.
    pub fn line(&self) -> String {
        format!("{} {}", self.frames.join(";"), self.weight)
    }
}

/// What a weight counts for this kind.
pub fn weight_unit(kind: StackKind) -> &'static str {
    match kind {
        StackKind::OffCpu => "ns",
        StackKind::Cpu | StackKind::Waker => "samples",
    }
}

/// The stacks of `kind` sampled in window `w` on threads `filter` selects,
/// merged by their frame names, heaviest first (ties by frames). Fails when
/// the trace recorded no stacks of this kind.
pub fn folded_stacks(
    conn: &Connection,
    bounds: &TraceBounds,
    kind: StackKind,
    filter: &TaskFilter,
    w: Window,
) -> Result<Vec<FoldedStack>> {
    let recorded: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM perf_session WHERE stack_kind = ?1)",
        [kind.name()],
        |r| r.get(0),
    )?;
    if !recorded {
        bail!(
            "the trace has no {0} stacks (record with `schedlens trace --stacks {0}`)",
            kind.name()
        );
    }
    let selected: Option<HashSet<i64>> = if filter.is_empty() {
        None
    } else {
        Some(filter_utids(conn, filter)?.into_iter().collect())
    };
    let (lo, hi) = (bounds.abs(w.start), bounds.abs(w.end));
    let sql = match kind {
        StackKind::OffCpu => {
            "SELECT utid, callsite_id, sum(CASE WHEN dur < 0 THEN max(?3 - ts, 0) ELSE dur END)
             FROM off_cpu_sample
             WHERE ts >= ?1 AND ts <= ?2 AND callsite_id IS NOT NULL AND dur IS NOT NULL
             GROUP BY utid, callsite_id"
        }
        StackKind::Cpu | StackKind::Waker => {
            "SELECT p.utid, p.callsite_id, count(*)
             FROM perf_sample p JOIN perf_session s ON s.id = p.perf_session_id
             WHERE s.stack_kind = ?3 AND p.ts >= ?1 AND p.ts <= ?2 AND p.callsite_id IS NOT NULL
             GROUP BY p.utid, p.callsite_id"
        }
    };
    let mut st = conn.prepare(sql)?;
    let mut weights: HashMap<i64, i64> = HashMap::new();
    let mut rows = match kind {
        StackKind::OffCpu => st.query(params![lo, hi, bounds.end_ts])?,
        StackKind::Cpu | StackKind::Waker => st.query(params![lo, hi, kind.name()])?,
    };
    while let Some(r) = rows.next()? {
        let utid: i64 = r.get(0)?;
        if selected.as_ref().is_some_and(|s| !s.contains(&utid)) {
            continue;
        }
        *weights.entry(r.get(1)?).or_default() += r.get::<_, i64>(2)?;
    }
    let mut merged: BTreeMap<Vec<String>, i64> = BTreeMap::new();
    for (callsite, weight) in weights {
        *merged.entry(frames(conn, callsite)?).or_default() += weight;
    }
    let mut out: Vec<FoldedStack> = merged
        .into_iter()
        .filter(|(_, weight)| *weight > 0)
        .map(|(frames, weight)| FoldedStack { frames, weight })
        .collect();
    out.sort_by(|a, b| {
        b.weight
            .cmp(&a.weight)
            .then_with(|| a.frames.cmp(&b.frames))
    });
    Ok(out)
}

/// The frames from `callsite` up to its root, outermost first. A frame whose
/// function did not resolve is named by its module and offset.
fn frames(conn: &Connection, callsite: i64) -> Result<Vec<String>> {
    let mut st = conn.prepare_cached(
        "SELECT c.parent_id, f.name, f.rel_pc, m.name FROM stack_profile_callsite c
         JOIN stack_profile_frame f ON f.id = c.frame_id
         LEFT JOIN stack_profile_mapping m ON m.id = f.mapping
         WHERE c.id = ?1",
    )?;
    let mut out = Vec::new();
    let mut next = Some(callsite);
    while let Some(id) = next {
        if out.len() == MAX_DEPTH {
            break;
        }
        let Some((parent, name, rel_pc, module)) = st
            .query_row([id], |r| {
                Ok((
                    r.get::<_, Option<i64>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })
            .optional()?
        else {
            break;
        };
        let name = if name.is_empty() {
            let module = module.as_deref().unwrap_or_default();
            let module = module.rsplit('/').next().unwrap_or(module);
            format!(
                "{}+{rel_pc:#x}",
                if module.is_empty() { "?" } else { module }
            )
        } else {
            name
        };
        // ';' separates frames and the last space the weight in a folded line.
        out.push(name.replace([';', '\n', '\r'], "_"));
        next = parent;
    }
    out.reverse();
    Ok(out)
}
