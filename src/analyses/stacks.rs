//! Stack profiles: the samples of one stack kind, folded into one line per
//! distinct stack (`root;child;leaf weight`), for `schedlens flamegraph` and
//! the `stacks` tool (the heaviest stacks, cut to their innermost frames).
//!
//! Weights: CPU and waker samples count 1 each; an off-CPU sample weighs the
//! nanoseconds its thread then stayed off the CPU (off_cpu_sample.dur; a state
//! that lasted to the trace end weighs up to the end). A stack is read by
//! walking stack_profile_callsite parents from the sample's callsite, at most
//! [`MAX_DEPTH`] frames, so a cycle in hostile data ends.

use crate::analyses::tasks::{TaskFilter, filter_utids};
use crate::analyses::timespec::{TraceBounds, Window, WindowArg, WindowOut, trace_bounds};
use crate::analyses::tool::{DEFAULT_LIST_BYTES, Tool, count_arg, fit_bytes};
use crate::analyzer::import::stacks::MAX_DEPTH;
use crate::model::stack::StackKind;
use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OptionalExtension, params};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
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

/// The kind by its name, or a one-line error naming the kinds.
pub fn parse_kind(s: &str) -> Result<StackKind> {
    StackKind::from_name(s).with_context(|| {
        let names: Vec<&str> = StackKind::ALL.iter().map(|k| k.name()).collect();
        format!("unknown stack kind {s:?}: use one of {}", names.join(", "))
    })
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
    let mut st = conn.prepare("SELECT DISTINCT stack_kind FROM perf_session ORDER BY 1")?;
    let recorded = st
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    if !recorded.iter().any(|k| k == kind.name()) {
        let has = if recorded.is_empty() {
            String::new()
        } else {
            format!("; it has {} stacks", recorded.join(", "))
        };
        bail!(
            "the trace has no {0} stacks (record with `schedlens trace --stacks {0}`){has}",
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

/// `frames` (outermost first) cut to the innermost `depth` and joined by ';',
/// with "..." first when outer frames were cut.
fn cut_line(frames: &[String], depth: usize) -> String {
    let inner = &frames[frames.len().saturating_sub(depth)..];
    let mut line = if inner.len() < frames.len() {
        "...;".to_string()
    } else {
        String::new()
    };
    line.push_str(&inner.join(";"));
    line
}

/// Innermost frames kept where an answer gives one stack per case (a worst
/// wakeup, a thread): the blocking kernel path and the user frames that led
/// to it, in a few hundred bytes.
pub const CASE_DEPTH: usize = 12;

/// The stack of `kind` taken on `utid` at `ts` exactly, cut to
/// [`CASE_DEPTH`]: an off-CPU stack at the switch where the thread blocked,
/// a waker stack at the sched_waking its thread made. None when no such
/// stack was taken (or the trace has no stacks of that kind).
pub fn stack_at(conn: &Connection, kind: StackKind, utid: i64, ts: i64) -> Result<Option<String>> {
    let mut st = conn.prepare_cached(
        "SELECT p.callsite_id FROM perf_sample p
         JOIN perf_session s ON s.id = p.perf_session_id
         WHERE p.utid = ?1 AND p.ts = ?2 AND s.stack_kind = ?3 AND p.callsite_id IS NOT NULL
         LIMIT 1",
    )?;
    let callsite: Option<i64> = st
        .query_row(params![utid, ts, kind.name()], |r| r.get(0))
        .optional()?;
    callsite
        .map(|c| Ok(cut_line(&frames(conn, c)?, CASE_DEPTH)))
        .transpose()
}

/// The heaviest distinct off-CPU stack of `utid` among the blocks in
/// [lo, hi), weighed as the `stacks` tool weighs them, cut to
/// [`CASE_DEPTH`]; its pct is of all that thread's off-CPU weight there.
/// None when the thread has no off-CPU stack there.
pub fn top_off_cpu_stack(
    conn: &Connection,
    bounds: &TraceBounds,
    utid: i64,
    lo: i64,
    hi: i64,
) -> Result<Option<StackWeight>> {
    let mut st = conn.prepare_cached(
        "SELECT callsite_id, sum(CASE WHEN dur < 0 THEN max(?4 - ts, 0) ELSE dur END) AS w
         FROM off_cpu_sample
         WHERE utid = ?1 AND ts >= ?2 AND ts < ?3 AND callsite_id IS NOT NULL AND dur IS NOT NULL
         GROUP BY callsite_id",
    )?;
    let mut rows = st.query(params![utid, lo, hi, bounds.end_ts])?;
    let (mut top, mut total) = (None::<(i64, i64)>, 0i64);
    while let Some(r) = rows.next()? {
        let (callsite, weight): (i64, i64) = (r.get(0)?, r.get(1)?);
        total += weight;
        // Ties go to the lower callsite id, so the answer is stable.
        if top.is_none_or(|(c, w)| weight > w || (weight == w && callsite < c)) {
            top = Some((callsite, weight));
        }
    }
    let Some((callsite, weight)) = top.filter(|&(_, w)| w > 0) else {
        return Ok(None);
    };
    Ok(Some(StackWeight {
        stack: cut_line(&frames(conn, callsite)?, CASE_DEPTH),
        weight,
        pct: (weight as f64 * 1000.0 / total as f64).round() / 10.0,
    }))
}

// ---------------------------------------------------------------------- tool

/// A stack kind as a tool argument: one of the kinds' names.
#[derive(Debug, Clone, Copy)]
pub struct KindArg(pub StackKind);

impl<'de> Deserialize<'de> for KindArg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<KindArg, D::Error> {
        let name = String::deserialize(d)?;
        parse_kind(&name)
            .map(KindArg)
            .map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

impl JsonSchema for KindArg {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StackKind".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = StackKind::ALL.iter().map(|k| k.name()).collect();
        schemars::json_schema!({"type": "string", "enum": names})
    }
}

/// The heaviest stacks of one kind.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Stacks {
    pub window: WindowOut,
    pub kind: String,
    /// What a weight counts: "ns" off the CPU, or "samples".
    pub unit: String,
    /// Weight of all the matching stacks.
    pub total: i64,
    /// Distinct stacks (as cut to max_depth) matching.
    pub distinct: usize,
    /// Heaviest first.
    pub stacks: Vec<StackWeight>,
    /// Set when limit, or without one the answer's size budget, cut `stacks`.
    pub truncated: bool,
}

/// One stack and its weight.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StackWeight {
    /// Function names, outermost first, joined by ';'; "..." first when
    /// max_depth cut outer frames.
    pub stack: String,
    pub weight: i64,
    /// Share of `total`, percent.
    pub pct: f64,
}

/// Frames a stack keeps in an answer by default: a blocked task's kernel
/// path and the user functions above it.
const DEFAULT_DEPTH: usize = 20;

/// The stacks of `kind` like [`folded_stacks`], each cut to its innermost
/// `depth` frames and merged by what remains, heaviest first, at most
/// `limit` of them and, when `bytes` is given, as many as fit in it.
pub fn heaviest_stacks(
    conn: &Connection,
    kind: StackKind,
    filter: &TaskFilter,
    window: Option<&WindowArg>,
    limit: usize,
    depth: usize,
    bytes: Option<usize>,
) -> Result<Stacks> {
    let bounds = trace_bounds(conn)?;
    let w = bounds.window(window).map_err(anyhow::Error::msg)?;
    let mut cut: HashMap<String, i64> = HashMap::new();
    let mut total = 0;
    for s in folded_stacks(conn, &bounds, kind, filter, w)? {
        *cut.entry(cut_line(&s.frames, depth)).or_default() += s.weight;
        total += s.weight;
    }
    let distinct = cut.len();
    let mut stacks: Vec<StackWeight> = cut
        .into_iter()
        .map(|(stack, weight)| StackWeight {
            pct: (weight as f64 * 1000.0 / total as f64).round() / 10.0,
            stack,
            weight,
        })
        .collect();
    stacks.sort_by(|a, b| b.weight.cmp(&a.weight).then_with(|| a.stack.cmp(&b.stack)));
    let mut truncated = stacks.len() > limit;
    stacks.truncate(limit);
    if let Some(budget) = bytes {
        truncated |= fit_bytes(&mut stacks, budget);
    }
    Ok(Stacks {
        window: WindowOut::new(w, &bounds),
        kind: kind.name().to_string(),
        unit: weight_unit(kind).to_string(),
        total,
        distinct,
        stacks,
        truncated,
    })
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StacksArgs {
    /// off-cpu (default: where threads blocked, weighted by ns), cpu (where they ran)
    /// or waker (who woke them): samples.
    pub kind: Option<KindArg>,
    #[serde(flatten)]
    pub filter: TaskFilter,
    pub window: Option<WindowArg>,
    /// Most stacks: default 10, at most 500.
    pub limit: Option<i64>,
    /// Innermost frames kept per stack: default 20, at most 1024.
    pub max_depth: Option<i64>,
}

pub const TOOL: Tool<StacksArgs, Stacks> = Tool {
    name: "stacks",
    description: "Heaviest call stacks (recorded with --stacks) in a window, with weights and \
                  percentages.",
    answer: |trace, a| {
        let limit = count_arg("limit", a.limit, 10, 500)?;
        let depth = count_arg("max_depth", a.max_depth, DEFAULT_DEPTH, MAX_DEPTH)?;
        let bytes = a.limit.is_none().then_some(DEFAULT_LIST_BYTES);
        let kind = a.kind.map_or(StackKind::OffCpu, |k| k.0);
        heaviest_stacks(
            trace.conn,
            kind,
            &a.filter,
            a.window.as_ref(),
            limit,
            depth,
            bytes,
        )
    },
};
