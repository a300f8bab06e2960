//! The scheduler analyses shared by `summary` and the MCP tools: CPU
//! utilization, top tasks, scheduling latency, timelines, process tree.
//!
//! Plain functions over a `rusqlite::Connection` returning serializable,
//! schema-described structs, so the CLI calls them directly and the MCP server
//! sends them as structured output. Times in results are relative to the trace
//! start; absolute trace-clock values appear only as strings.
//!
//! Whole-trace and long-window totals come from the per-bucket aggregates
//! (aggregate.rs): a window is the sum of the buckets it covers plus exact work
//! on its two partial end buckets, through the column store's access paths
//! (columns/vtab.rs: by cpu or utid then ts, by ts, wakeups by latency). No
//! analysis scans a whole event table.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OptionalExtension, params};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod summary;
pub mod timespec;

use crate::analyzer::aggregate::{self, HIST_REL_ERROR, Hist, WindowSplit};
use timespec::{RelTime, SafeInt, TraceBounds, Window, WindowOut, human_ns};

/// The trace's first and last timestamps.
pub fn trace_bounds(conn: &Connection) -> Result<TraceBounds> {
    conn.query_row("SELECT start_ts, end_ts FROM trace_bounds", [], |r| {
        Ok(TraceBounds {
            start_ts: r.get(0)?,
            end_ts: r.get(1)?,
        })
    })
    .optional()?
    .context("the trace_bounds table is empty: the trace holds no events")
}

/// The SQL condition "this utid is not an idle thread". trace_processor gives
/// every CPU's swapper utid 0; other importers may give each its own row, so
/// tid 0 decides.
const NOT_IDLE: &str = "utid NOT IN (SELECT utid FROM thread WHERE tid = 0)";

/// Length of the part of [ts, ts+dur) inside [lo, hi); dur -1 (still running)
/// lasts to `trace_end`.
fn clip(ts: i64, dur: i64, lo: i64, hi: i64, trace_end: i64) -> i64 {
    let end = if dur < 0 {
        trace_end
    } else {
        ts.saturating_add(dur)
    };
    (end.min(hi) - ts.max(lo)).max(0)
}

/// SQL for the same clipped length, with ?1 = window start, ?2 = window end,
/// ?3 = trace end (all absolute).
const CLIPPED_DUR: &str =
    "MAX(MIN(CASE WHEN dur < 0 THEN ?3 ELSE ts + dur END, ?2) - MAX(ts, ?1), 0)";

/// A duration for output.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Dur {
    /// Nanoseconds.
    pub ns: SafeInt,
    /// The same, for people ("1.5ms").
    pub human: String,
}

impl Dur {
    pub fn new(ns: i64) -> Dur {
        Dur {
            ns: SafeInt(ns),
            human: human_ns(ns),
        }
    }
}

// ---------------------------------------------------------------- trace_info

/// A machine and recording overview.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TraceInfo {
    /// Kernel and machine from the trace's system info (metadata table).
    pub system: SystemInfo,
    /// Time range of the trace.
    pub time: TimeRange,
    /// CPU count and topology groups.
    pub cpus: CpuTopology,
    /// Rows per kind of event or table.
    pub events: Vec<EventCount>,
    /// Number of thread and process instances.
    pub threads: i64,
    pub processes: i64,
    /// Events lost by the recorder (ring buffer full) and importer problems.
    pub drops: Drops,
}

#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct SystemInfo {
    /// Operating system name (utsname.sysname).
    pub sysname: Option<String>,
    /// Kernel release (utsname.release).
    pub kernel_release: Option<String>,
    /// Kernel build string (utsname.version).
    pub kernel_version: Option<String>,
    /// Machine architecture.
    pub machine: Option<String>,
    /// CPU count the system reported.
    pub num_cpus: Option<i64>,
    /// Version of the recorder that wrote the trace.
    pub recorder_version: Option<String>,
    /// The recorder's command line.
    pub recorder_argv: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TimeRange {
    /// Length of the trace.
    pub duration: Dur,
    /// First timestamp on the trace clock (CLOCK_BOOTTIME ns), as a string.
    pub start_ts: String,
    /// Last timestamp on the trace clock, as a string.
    pub end_ts: String,
    /// Wall-clock time of the start (UTC, RFC 3339), when the trace has a clock snapshot.
    pub start_wall_clock: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CpuTopology {
    /// CPUs in the cpu table.
    pub count: i64,
    /// Processor model names and how many CPUs have each.
    pub processors: Vec<NamedCount>,
    /// Last-level-cache groups (empty when the trace has no topology).
    pub llc_groups: Vec<CpuGroup>,
    /// NUMA nodes (empty when the trace has no topology).
    pub numa_nodes: Vec<CpuGroup>,
    /// Physical packages (sockets).
    pub packages: i64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CpuGroup {
    /// llc_id or numa_node.
    pub id: i64,
    /// CPUs in the group.
    pub cpus: Vec<i64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct NamedCount {
    pub name: String,
    pub count: i64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct EventCount {
    /// Event type: sched_switch, sched_waking, thread_state, a tracepoint name
    /// from ftrace_event, or task_<type> from task_event.
    pub event: String,
    /// Table that holds it.
    pub table: String,
    pub count: i64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Drops {
    /// Events lost in all, from lost_events.
    pub lost_events: i64,
    /// Lost events per CPU (only CPUs that lost any).
    pub per_cpu: Vec<CpuCount>,
    /// Counters from stats with severity data_loss or error and a value above 0.
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CpuCount {
    pub cpu: i64,
    pub count: i64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Problem {
    pub name: String,
    /// CPU for per-CPU counters.
    pub idx: Option<i64>,
    pub severity: String,
    pub value: i64,
    pub description: Option<String>,
}

fn meta_str(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT coalesce(str_value, CAST(int_value AS TEXT)) FROM metadata WHERE name = ?1",
            [key],
            |r| r.get(0),
        )
        .optional()?
        .flatten())
}

fn meta_int(conn: &Connection, key: &str) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT int_value FROM metadata WHERE name = ?1",
            [key],
            |r| r.get(0),
        )
        .optional()?
        .flatten())
}

fn count(conn: &Connection, table: &str) -> Result<i64> {
    if let Some(n) = crate::analyzer::columns::row_count(conn, table) {
        return Ok(n);
    }
    Ok(conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
}

fn cpu_groups(conn: &Connection, column: &str) -> Result<Vec<CpuGroup>> {
    let mut st = conn.prepare(&format!(
        "SELECT {column}, cpu FROM cpu WHERE {column} IS NOT NULL ORDER BY {column}, cpu"
    ))?;
    let mut groups: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for row in st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))? {
        let (id, cpu) = row?;
        groups.entry(id).or_default().push(cpu);
    }
    Ok(groups
        .into_iter()
        .map(|(id, cpus)| CpuGroup { id, cpus })
        .collect())
}

/// Overview of a loaded trace.
pub fn trace_info(conn: &Connection) -> Result<TraceInfo> {
    let b = trace_bounds(conn)?;
    let system = SystemInfo {
        sysname: meta_str(conn, "system_name")?,
        kernel_release: meta_str(conn, "system_release")?,
        kernel_version: meta_str(conn, "system_version")?,
        machine: meta_str(conn, "system_machine")?,
        num_cpus: meta_int(conn, "num_cpus")?,
        recorder_version: meta_str(conn, "recorder_version")?,
        recorder_argv: meta_str(conn, "recorder_argv")?,
    };
    let start_wall_clock = meta_int(conn, "realtime_offset_ns")?.and_then(|off| {
        let unix_ns = u64::try_from(b.start_ts.checked_add(off)?).ok()?;
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(unix_ns);
        Some(humantime::format_rfc3339_nanos(t).to_string())
    });
    let time = TimeRange {
        duration: Dur::new(b.duration()),
        start_ts: b.start_ts.to_string(),
        end_ts: b.end_ts.to_string(),
        start_wall_clock,
    };
    let mut st = conn.prepare(
        "SELECT coalesce(processor, '(unknown)'), count(*) FROM cpu GROUP BY 1 ORDER BY 2 DESC",
    )?;
    let processors = st
        .query_map([], |r| {
            Ok(NamedCount {
                name: r.get(0)?,
                count: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let cpus = CpuTopology {
        count: count(conn, "cpu")?,
        processors,
        llc_groups: cpu_groups(conn, "llc_id")?,
        numa_nodes: cpu_groups(conn, "numa_node")?,
        packages: conn.query_row("SELECT count(DISTINCT package_id) FROM cpu", [], |r| {
            r.get(0)
        })?,
    };
    let mut events = vec![
        EventCount {
            event: "sched_switch".into(),
            table: "sched_slice".into(),
            count: count(conn, "sched_slice")?,
        },
        EventCount {
            event: "sched_waking".into(),
            table: "wakeup".into(),
            count: count(conn, "wakeup")?,
        },
        EventCount {
            event: "thread_state".into(),
            table: "thread_state".into(),
            count: count(conn, "thread_state")?,
        },
    ];
    let mut st = conn.prepare(
        "SELECT 'task_' || type, 'task_event', count(*) FROM task_event GROUP BY type
         UNION ALL
         SELECT name, 'ftrace_event', count(*) FROM ftrace_event GROUP BY name
         UNION ALL
         SELECT 'counter:' || t.name, 'counter', count(*) FROM counter c JOIN counter_track t ON t.id = c.track_id GROUP BY t.name
         ORDER BY 3 DESC",
    )?;
    for row in st.query_map([], |r| {
        Ok(EventCount {
            event: r.get(0)?,
            table: r.get(1)?,
            count: r.get(2)?,
        })
    })? {
        events.push(row?);
    }
    let mut st =
        conn.prepare("SELECT cpu, sum(count) FROM lost_events GROUP BY cpu ORDER BY cpu")?;
    let per_cpu: Vec<CpuCount> = st
        .query_map([], |r| {
            Ok(CpuCount {
                cpu: r.get(0)?,
                count: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut st = conn.prepare(
        "SELECT name, idx, severity, value, description FROM stats
         WHERE severity IN ('data_loss', 'error') AND value > 0 ORDER BY name, idx",
    )?;
    let problems = st
        .query_map([], |r| {
            Ok(Problem {
                name: r.get(0)?,
                idx: r.get(1)?,
                severity: r.get(2)?,
                value: r.get(3)?,
                description: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(TraceInfo {
        system,
        time,
        cpus,
        events,
        threads: count(conn, "thread")?,
        processes: count(conn, "process")?,
        drops: Drops {
            lost_events: per_cpu.iter().map(|c| c.count).sum(),
            per_cpu,
            problems,
        },
    })
}

// ---------------------------------------------------------- cpu_utilization

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
}

/// Busy time (non-idle sched_slice time clipped to the window) per CPU: the
/// whole buckets from agg_cpu, the partial ones from sched_slice.
fn busy_per_cpu(conn: &Connection, b: &TraceBounds, w: Window) -> Result<BTreeMap<i64, i64>> {
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
        UtilGroup {
            id,
            cpu_count: cpus.len(),
            cpus,
            busy: Dur::new(busy_ns),
            capacity: Dur::new(capacity),
            utilization_pct: pct(busy_ns, capacity),
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

// ---------------------------------------------------------------- top_tasks

/// What `top_tasks` ranks by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskOrder {
    /// Time running on a CPU.
    #[default]
    CpuTime,
    /// Times switched in.
    Switches,
    /// Time runnable but not running (thread_state R and R+).
    WaitTime,
    /// Worst wakeup-to-running latency.
    Latency,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TopTasks {
    pub window: WindowOut,
    pub order_by: TaskOrder,
    /// Tasks, best first.
    pub tasks: Vec<TaskStats>,
}

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

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TaskStats {
    #[serde(flatten)]
    pub task: TaskId,
    /// Time running within the window.
    pub cpu_time: Dur,
    /// Times switched in within the window.
    pub switches: i64,
    /// Time runnable (R, R+) within the window.
    pub wait_time: Dur,
    /// Wakeups within the window with a known latency.
    pub wakeups: i64,
    /// 99th percentile wakeup-to-running latency (absent without wakeups).
    pub latency_p99: Option<Dur>,
    /// How latency_p99 was computed (absent without wakeups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p99_method: Option<PercentileMethod>,
    /// Worst wakeup-to-running latency.
    pub latency_max: Option<Dur>,
}

fn task_ids(conn: &Connection, utids: &[i64]) -> Result<HashMap<i64, TaskId>> {
    let mut st = conn.prepare(
        "SELECT t.utid, t.tid, t.name, p.pid, p.name FROM thread t
         LEFT JOIN process p USING (upid) WHERE t.utid = ?1",
    )?;
    let mut out = HashMap::new();
    for &u in utids {
        if let Some(id) = st
            .query_row([u], |r| {
                Ok(TaskId {
                    utid: r.get(0)?,
                    tid: r.get(1)?,
                    thread_name: r.get(2)?,
                    pid: r.get(3)?,
                    process_name: r.get(4)?,
                })
            })
            .optional()?
        {
            out.insert(u, id);
        }
    }
    Ok(out)
}

/// Wakeups in a window up to which percentiles are exact (sorted rows);
/// above, they come from the aggregates' histograms.
const EXACT_MAX_WAKEUPS: i64 = 100_000;

/// How percentiles were computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PercentileMethod {
    /// From every latency in the window.
    Exact,
    /// From a histogram of the latencies: each percentile is within
    /// percentile_error_pct of the exact value (max and worst stay exact).
    Histogram,
}

/// One thread's totals in a window.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    cpu_ns: i64,
    switches: i64,
    wait_ns: i64,
    wakeups: i64,
    latency_max: Option<i64>,
}

/// Every non-idle thread's totals in [lo, hi): whole buckets from agg_thread,
/// partial ones from the event tables through their indexes.
fn thread_totals(
    conn: &Connection,
    b: &TraceBounds,
    split: &WindowSplit,
) -> Result<HashMap<i64, Totals>> {
    let mut out: HashMap<i64, Totals> = HashMap::new();
    if let Some((f0, f1)) = split.full {
        let mut st = conn.prepare(
            "SELECT utid, sum(cpu_ns), sum(switches), sum(wait_ns), sum(wakeups), max(latency_max)
             FROM agg_thread WHERE ts >= ?1 AND ts < ?2 GROUP BY utid",
        )?;
        let mut rows = st.query(params![f0, f1])?;
        while let Some(r) = rows.next()? {
            out.insert(
                r.get(0)?,
                Totals {
                    cpu_ns: r.get(1)?,
                    switches: r.get(2)?,
                    wait_ns: r.get(3)?,
                    wakeups: r.get(4)?,
                    latency_max: r.get(5)?,
                },
            );
        }
    }
    if !split.edges.is_empty() {
        let mut st = conn.prepare("SELECT cpu FROM cpu UNION SELECT DISTINCT cpu FROM agg_cpu")?;
        let cpus: Vec<i64> = st
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut inside = conn.prepare_cached(
            "SELECT ts, dur, utid FROM sched_slice WHERE cpu = ?1 AND ts >= ?2 AND ts < ?3",
        )?;
        let mut before = conn.prepare_cached(
            "SELECT ts, dur, utid FROM sched_slice WHERE cpu = ?1 AND ts < ?2
             ORDER BY ts DESC LIMIT 1",
        )?;
        // Threads runnable at some time in a bucket have wait_ns there.
        let mut waiting =
            conn.prepare_cached("SELECT utid FROM agg_thread WHERE ts = ?1 AND wait_ns > 0")?;
        let mut wakes = conn.prepare_cached(
            "SELECT utid, latency FROM wakeup WHERE ts >= ?1 AND ts < ?2 AND latency IS NOT NULL",
        )?;
        for &(lo, hi) in &split.edges {
            for &cpu in &cpus {
                let mut add = |ts: i64, dur: i64, utid: i64| {
                    let t = out.entry(utid).or_default();
                    t.cpu_ns += clip(ts, dur, lo, hi, b.end_ts);
                    t.switches += i64::from(ts >= lo);
                };
                let mut rows = inside.query(params![cpu, lo, hi])?;
                while let Some(r) = rows.next()? {
                    add(r.get(0)?, r.get(1)?, r.get(2)?);
                }
                if let Some((ts, dur, utid)) = before
                    .query_row(params![cpu, lo], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?
                {
                    add(ts, dur, utid);
                }
            }
            let bucket = lo.div_euclid(split.width) * split.width;
            let utids: Vec<i64> = waiting
                .query_map([bucket], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for utid in utids {
                out.entry(utid).or_default().wait_ns += thread_wait(conn, b, lo, hi, utid)?;
            }
            let mut rows = wakes.query(params![lo, hi])?;
            while let Some(r) = rows.next()? {
                let t = out.entry(r.get(0)?).or_default();
                t.wakeups += 1;
                t.latency_max = t.latency_max.max(Some(r.get(1)?));
            }
        }
    }
    let mut st = conn.prepare("SELECT utid FROM thread WHERE tid = 0")?;
    for idle in st.query_map([], |r| r.get::<_, i64>(0))? {
        out.remove(&idle?);
    }
    Ok(out)
}

/// The threads that ran, waited or woke most in a window.
pub fn top_tasks(
    conn: &Connection,
    w: Window,
    order_by: TaskOrder,
    limit: usize,
) -> Result<TopTasks> {
    let b = trace_bounds(conn)?;
    let (lo, hi) = (b.abs(w.start), b.abs(w.end));
    let split = aggregate::split_window(aggregate::width(conn)?, lo, hi);
    let totals = thread_totals(conn, &b, &split)?;
    // A thread takes part in a ranking when it has rows of that metric.
    let key = |t: &Totals| -> Option<i64> {
        match order_by {
            TaskOrder::CpuTime => (t.cpu_ns > 0 || t.switches > 0).then_some(t.cpu_ns),
            TaskOrder::Switches => (t.switches > 0).then_some(t.switches),
            TaskOrder::WaitTime => (t.wait_ns > 0).then_some(t.wait_ns),
            TaskOrder::Latency => t.latency_max,
        }
    };
    let mut ranked: Vec<(i64, i64)> = totals
        .iter()
        .filter_map(|(&u, t)| key(t).map(|v| (v, u)))
        .collect();
    ranked.sort_by_key(|&(v, u)| (std::cmp::Reverse(v), u));
    ranked.truncate(limit);
    let utids: Vec<i64> = ranked.iter().map(|x| x.1).collect();
    let ids = task_ids(conn, &utids)?;
    let mut tasks = Vec::new();
    for utid in utids {
        let Some(task) = ids.get(&utid).cloned() else {
            continue;
        };
        let t = totals[&utid];
        let p99 = if t.wakeups == 0 {
            None
        } else if t.wakeups <= EXACT_MAX_WAKEUPS {
            let lat = latencies(conn, lo, hi, &[utid])?;
            percentile(&lat, 99.0).map(|p| (p, PercentileMethod::Exact))
        } else {
            let hist = histogram(conn, &split, Some(&[utid]))?;
            hist.percentile(99.0, t.latency_max.unwrap_or(i64::MAX))
                .map(|p| (p, PercentileMethod::Histogram))
        };
        tasks.push(TaskStats {
            task,
            cpu_time: Dur::new(t.cpu_ns),
            switches: t.switches,
            wait_time: Dur::new(t.wait_ns),
            wakeups: t.wakeups,
            latency_p99: p99.map(|p| Dur::new(p.0)),
            latency_p99_method: p99.map(|p| p.1),
            latency_max: t.latency_max.map(Dur::new),
        });
    }
    Ok(TopTasks {
        window: WindowOut::new(w, &b),
        order_by,
        tasks,
    })
}

/// The latency histogram of a window (of `utids` only, if given): whole
/// buckets from agg_thread, partial ones from wakeup rows.
fn histogram(conn: &Connection, split: &WindowSplit, utids: Option<&[i64]>) -> Result<Hist> {
    let mut hist = Hist::default();
    if let Some((f0, f1)) = split.full {
        match utids {
            None => {
                let mut st = conn.prepare_cached(
                    "SELECT latency_hist FROM agg_thread
                     WHERE ts >= ?1 AND ts < ?2 AND latency_hist IS NOT NULL",
                )?;
                let mut rows = st.query(params![f0, f1])?;
                while let Some(r) = rows.next()? {
                    hist.add_blob(r.get_ref(0)?.as_blob()?);
                }
            }
            Some(utids) => {
                let mut st = conn.prepare_cached(
                    "SELECT latency_hist FROM agg_thread
                     WHERE utid = ?3 AND ts >= ?1 AND ts < ?2 AND latency_hist IS NOT NULL",
                )?;
                for &u in utids {
                    let mut rows = st.query(params![f0, f1, u])?;
                    while let Some(r) = rows.next()? {
                        hist.add_blob(r.get_ref(0)?.as_blob()?);
                    }
                }
            }
        }
    }
    for &(lo, hi) in &split.edges {
        for (_, l) in latencies(conn, lo, hi, utids.unwrap_or(&[]))? {
            hist.add(l);
        }
    }
    Ok(hist)
}

/// Runnable time of one thread in [lo, hi), via thread_state(utid, ts).
fn thread_wait(conn: &Connection, b: &TraceBounds, lo: i64, hi: i64, utid: i64) -> Result<i64> {
    let from = state_scan_start(conn, utid, lo)?;
    let mut st = conn.prepare_cached(&format!(
        "SELECT coalesce(sum({CLIPPED_DUR}), 0) FROM thread_state
         WHERE utid = ?4 AND ts >= ?5 AND ts < ?2 AND state IN ('R', 'R+')"
    ))?;
    Ok(st.query_row(params![lo, hi, b.end_ts, utid, from], |r| r.get(0))?)
}

/// Where to start reading a thread's states to cover time `lo`: the state in
/// force at `lo` (states of a thread do not overlap).
fn state_scan_start(conn: &Connection, utid: i64, lo: i64) -> Result<i64> {
    let mut st =
        conn.prepare_cached("SELECT max(ts) FROM thread_state WHERE utid = ?1 AND ts <= ?2")?;
    Ok(st
        .query_row(params![utid, lo], |r| r.get::<_, Option<i64>>(0))?
        .unwrap_or(lo))
}

/// (wakeup id, latency) of the wakeups of `utids` (all if empty) in [lo, hi).
fn latencies(conn: &Connection, lo: i64, hi: i64, utids: &[i64]) -> Result<Vec<(i64, i64)>> {
    let mut out = Vec::new();
    if utids.is_empty() {
        let mut st = conn.prepare_cached(
            "SELECT id, latency FROM wakeup WHERE ts >= ?1 AND ts < ?2 AND latency IS NOT NULL",
        )?;
        for row in st.query_map(params![lo, hi], |r| Ok((r.get(0)?, r.get(1)?)))? {
            out.push(row?);
        }
    } else {
        let mut st = conn.prepare_cached(
            "SELECT id, latency FROM wakeup
             WHERE utid = ?3 AND ts >= ?1 AND ts < ?2 AND latency IS NOT NULL",
        )?;
        for &u in utids {
            for row in st.query_map(params![lo, hi, u], |r| Ok((r.get(0)?, r.get(1)?)))? {
                out.push(row?);
            }
        }
    }
    Ok(out)
}

/// Nearest-rank percentile of the latencies (second field).
fn percentile(v: &[(i64, i64)], p: f64) -> Option<i64> {
    let mut lat: Vec<i64> = v.iter().map(|x| x.1).collect();
    percentile_in_place(&mut lat, p)
}

fn percentile_in_place(lat: &mut [i64], p: f64) -> Option<i64> {
    if lat.is_empty() {
        return None;
    }
    // The epsilon keeps 99.9% of 1000 at rank 999 despite binary rounding.
    let rank = ((p / 100.0) * lat.len() as f64 - 1e-9).ceil() as usize;
    let idx = rank.clamp(1, lat.len()) - 1;
    Some(*lat.select_nth_unstable(idx).1)
}

// ------------------------------------------------------- scheduling_latency

/// Which threads an analysis covers. All fields optional; given fields must all match.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
pub struct TaskFilter {
    /// Thread id.
    pub tid: Option<i64>,
    /// Process id: all its threads.
    pub pid: Option<i64>,
    /// Substring of the thread name or the process name (case-insensitive).
    pub name: Option<String>,
}

impl TaskFilter {
    fn is_empty(&self) -> bool {
        self.tid.is_none() && self.pid.is_none() && self.name.as_deref().is_none_or(str::is_empty)
    }
}

/// The utids a filter selects.
fn filter_utids(conn: &Connection, f: &TaskFilter) -> Result<Vec<i64>> {
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
fn like_pattern(text: &str) -> String {
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

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SchedulingLatency {
    pub window: WindowOut,
    /// Threads the filter matched (utids), absent when unfiltered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_threads: Option<usize>,
    /// Wakeups in the window with a known latency.
    pub count: usize,
    pub p50: Option<Dur>,
    pub p90: Option<Dur>,
    pub p99: Option<Dur>,
    pub p99_9: Option<Dur>,
    pub max: Option<Dur>,
    /// How p50..p99_9 were computed: exact up to 100000 wakeups in the window,
    /// else from a histogram.
    pub percentile_method: PercentileMethod,
    /// Largest error of p50..p99_9 relative to the exact values, percent (0 when exact).
    pub percentile_error_pct: f64,
    /// The worst wakeups, worst first.
    pub worst: Vec<WakeupCase>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WakeupCase {
    /// Wakeup row id (wakeup.id).
    pub id: i64,
    /// When the wakeup happened.
    pub at: RelTime,
    /// Waking to running.
    pub latency: Dur,
    /// The woken thread.
    pub task: TaskId,
    /// Thread that woke it, if known.
    pub waker: Option<TaskId>,
    pub waking_cpu: i64,
    pub target_cpu: Option<i64>,
    /// CPU it then ran on.
    pub run_cpu: Option<i64>,
}

/// Waking-to-running latency percentiles and the worst cases.
pub fn scheduling_latency(
    conn: &Connection,
    filter: &TaskFilter,
    w: Window,
    worst: usize,
) -> Result<SchedulingLatency> {
    let b = trace_bounds(conn)?;
    let (lo, hi) = (b.abs(w.start), b.abs(w.end));
    let utids = if filter.is_empty() {
        None
    } else {
        let utids = filter_utids(conn, filter)?;
        if utids.is_empty() {
            bail!("no thread matches the filter; search_events finds tasks by name, tid or pid");
        }
        Some(utids)
    };
    let split = aggregate::split_window(aggregate::width(conn)?, lo, hi);
    let (count, max) = latency_count_max(conn, &split, utids.as_deref())?;
    let (method, [p50, p90, p99, p99_9], worst_rows) = if count <= EXACT_MAX_WAKEUPS {
        let lat = latencies(conn, lo, hi, utids.as_deref().unwrap_or(&[]))?;
        let mut values: Vec<i64> = lat.iter().map(|x| x.1).collect();
        let mut p = |q| percentile_in_place(&mut values, q);
        let ps = [p(50.0), p(90.0), p(99.0), p(99.9)];
        let mut worst_rows = lat;
        let k = worst.min(worst_rows.len());
        if k > 0 && k < worst_rows.len() {
            worst_rows.select_nth_unstable_by_key(k - 1, |x| (std::cmp::Reverse(x.1), x.0));
        }
        worst_rows.truncate(k);
        worst_rows.sort_by_key(|x| (std::cmp::Reverse(x.1), x.0));
        (PercentileMethod::Exact, ps, worst_rows)
    } else {
        let hist = histogram(conn, &split, utids.as_deref())?;
        let top = max.unwrap_or(i64::MAX);
        let ps = [50.0, 90.0, 99.0, 99.9].map(|q| hist.percentile(q, top));
        (
            PercentileMethod::Histogram,
            ps,
            worst_wakeups(conn, lo, hi, utids.as_deref(), worst)?,
        )
    };
    let matched = utids.as_ref().map(Vec::len);
    let mut st = conn.prepare(
        "SELECT ts, utid, waker_utid, waking_cpu, target_cpu, run_cpu FROM wakeup WHERE id = ?1",
    )?;
    let mut cases = Vec::new();
    for (id, latency) in worst_rows {
        let (ts, utid, waker, waking_cpu, target_cpu, run_cpu) = st.query_row([id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?;
        let ids = task_ids(conn, &[utid].into_iter().chain(waker).collect::<Vec<_>>())?;
        let Some(task) = ids.get(&utid).cloned() else {
            continue;
        };
        cases.push(WakeupCase {
            id,
            at: RelTime::new(b.rel(ts)),
            latency: Dur::new(latency),
            task,
            waker: waker.and_then(|u| ids.get(&u).cloned()),
            waking_cpu,
            target_cpu,
            run_cpu,
        });
    }
    Ok(SchedulingLatency {
        window: WindowOut::new(w, &b),
        matched_threads: matched,
        count: count as usize,
        p50: p50.map(Dur::new),
        p90: p90.map(Dur::new),
        p99: p99.map(Dur::new),
        p99_9: p99_9.map(Dur::new),
        max: max.map(Dur::new),
        percentile_method: method,
        percentile_error_pct: match method {
            PercentileMethod::Exact => 0.0,
            PercentileMethod::Histogram => (HIST_REL_ERROR * 10_000.0).round() / 100.0,
        },
        worst: cases,
    })
}

/// Wakeups with a latency in the window (of `utids` only, if given), and the
/// largest latency: whole buckets from agg_thread, partial ones from wakeup.
fn latency_count_max(
    conn: &Connection,
    split: &WindowSplit,
    utids: Option<&[i64]>,
) -> Result<(i64, Option<i64>)> {
    let (mut count, mut max) = (0i64, None::<i64>);
    if let Some((f0, f1)) = split.full {
        let mut all = conn.prepare_cached(
            "SELECT coalesce(sum(wakeups), 0), max(latency_max) FROM agg_thread
             WHERE ts >= ?1 AND ts < ?2",
        )?;
        let mut one = conn.prepare_cached(
            "SELECT coalesce(sum(wakeups), 0), max(latency_max) FROM agg_thread
             WHERE utid = ?3 AND ts >= ?1 AND ts < ?2",
        )?;
        let mut add = |(n, m): (i64, Option<i64>)| {
            count += n;
            max = max.max(m);
        };
        match utids {
            None => add(all.query_row(params![f0, f1], |r| Ok((r.get(0)?, r.get(1)?)))?),
            Some(utids) => {
                for &u in utids {
                    add(one.query_row(params![f0, f1, u], |r| Ok((r.get(0)?, r.get(1)?)))?);
                }
            }
        }
    }
    for &(lo, hi) in &split.edges {
        for (_, l) in latencies(conn, lo, hi, utids.unwrap_or(&[]))? {
            count += 1;
            max = max.max(Some(l));
        }
    }
    Ok((count, max))
}

/// The `n` worst (wakeup id, latency) in [lo, hi), worst first, walking the
/// wakeup(latency) index down: used when the window holds many wakeups, so few
/// index entries fall outside it before `n` are found. (`+ts`, `+utid`: those
/// conditions are checked per row, so the planner takes the latency order
/// rather than a ts range it would then have to sort.)
fn worst_wakeups(
    conn: &Connection,
    lo: i64,
    hi: i64,
    utids: Option<&[i64]>,
    n: usize,
) -> Result<Vec<(i64, i64)>> {
    let utid_cond = if utids.is_some() {
        "AND +utid IN (SELECT value FROM json_each(?4))"
    } else {
        "AND ?4 IS NULL"
    };
    let mut st = conn.prepare(&format!(
        "SELECT id, latency FROM wakeup
         WHERE latency IS NOT NULL AND +ts >= ?1 AND +ts < ?2 {utid_cond}
         ORDER BY latency DESC, id LIMIT ?3"
    ))?;
    let set = utids.map(serde_json::to_string).transpose()?;
    let rows = st
        .query_map(params![lo, hi, n as i64, set], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

// ------------------------------------------------------------ task_timeline

/// Which task a timeline is for: exactly one of tid or pid.
#[derive(Debug, Clone, Copy)]
pub enum TaskSel {
    Tid(i64),
    Pid(i64),
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TaskTimeline {
    pub window: WindowOut,
    /// One timeline per thread (all threads of the process for a pid).
    pub threads: Vec<ThreadTimeline>,
    /// True when the interval cap cut the timelines.
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ThreadTimeline {
    #[serde(flatten)]
    pub task: TaskId,
    /// Consecutive states, merged when state and CPU repeat, clipped to the window.
    pub intervals: Vec<StateInterval>,
    /// Total time per state within the window (up to `totals_until` when the
    /// interval cap cut the listing).
    pub totals: Vec<StateTotal>,
    /// Set when the interval cap was reached: the listing and the totals stop
    /// here, so the cost stays bounded however busy the thread.
    pub totals_until: Option<RelTime>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StateInterval {
    pub start: RelTime,
    pub dur: Dur,
    /// Running, R, R+, S, D, I, ...
    pub state: String,
    /// CPU for Running (and the target CPU of a wakeup's R).
    pub cpu: Option<i64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StateTotal {
    pub state: String,
    pub time: Dur,
}

/// Thread states of one thread, or of all threads of a process, merged.
pub fn task_timeline(
    conn: &Connection,
    sel: TaskSel,
    w: Window,
    max_intervals: usize,
) -> Result<TaskTimeline> {
    let b = trace_bounds(conn)?;
    let (lo, hi) = (b.abs(w.start), b.abs(w.end));
    let filter = match sel {
        TaskSel::Tid(t) => TaskFilter {
            tid: Some(t),
            ..TaskFilter::default()
        },
        TaskSel::Pid(p) => TaskFilter {
            pid: Some(p),
            ..TaskFilter::default()
        },
    };
    let utids = filter_utids(conn, &filter)?;
    if utids.is_empty() {
        bail!(
            "no thread with {}; search_events finds tasks by name, tid or pid",
            match sel {
                TaskSel::Tid(t) => format!("tid {t}"),
                TaskSel::Pid(p) => format!("pid {p}"),
            }
        );
    }
    let ids = task_ids(conn, &utids)?;
    let mut st = conn.prepare(
        "SELECT ts, dur, state, cpu FROM thread_state WHERE utid = ?1 AND ts >= ?2 AND ts < ?3
         ORDER BY ts",
    )?;
    let mut budget = max_intervals;
    let mut truncated = false;
    let mut threads = Vec::new();
    for utid in utids {
        let Some(task) = ids.get(&utid).cloned() else {
            continue;
        };
        let from = state_scan_start(conn, utid, lo)?;
        let mut merged: Vec<(i64, i64, String, Option<i64>)> = Vec::new();
        let mut totals: BTreeMap<String, i64> = BTreeMap::new();
        let mut until = None;
        let mut rows = st.query(params![utid, from, hi])?;
        while let Some(r) = rows.next()? {
            let (ts, dur, state, cpu): (i64, i64, String, Option<i64>) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            let len = clip(ts, dur, lo, hi, b.end_ts);
            if len == 0 {
                continue;
            }
            let start = ts.max(lo);
            if let Some(last) = merged.last_mut()
                && last.2 == state
                && last.3 == cpu
                && last.0 + last.1 == start
            {
                last.1 += len;
                *totals.entry(state).or_default() += len;
                continue;
            }
            if merged.len() >= budget {
                // Stop reading: a busy thread has millions of states.
                truncated = true;
                until = Some(RelTime::new(b.rel(start)));
                break;
            }
            *totals.entry(state.clone()).or_default() += len;
            merged.push((start, len, state, cpu));
        }
        budget -= merged.len();
        threads.push(ThreadTimeline {
            task,
            intervals: merged
                .into_iter()
                .map(|(s, d, state, cpu)| StateInterval {
                    start: RelTime::new(b.rel(s)),
                    dur: Dur::new(d),
                    state,
                    cpu,
                })
                .collect(),
            totals: totals
                .into_iter()
                .map(|(state, t)| StateTotal {
                    state,
                    time: Dur::new(t),
                })
                .collect(),
            totals_until: until,
        });
    }
    Ok(TaskTimeline {
        window: WindowOut::new(w, &b),
        threads,
        truncated,
        hint: truncated.then(|| {
            "interval cap reached: the intervals and totals stop at totals_until; narrow the \
             window (e.g. \"1s..1.1s\") or raise limit, or use top_tasks for whole-window totals"
                .to_string()
        }),
    })
}

// ------------------------------------------------------------- process_tree

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProcessTree {
    /// Processes in depth-first order (each after its parent); `depth` gives the indentation.
    pub processes: Vec<ProcessNode>,
    pub truncated: bool,
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
/// its descendants.
pub fn process_tree(conn: &Connection, pid: Option<i64>, max: usize) -> Result<ProcessTree> {
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
    let present: std::collections::HashSet<i64> = nodes.iter().map(|n| n.1.upid).collect();
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
                bail!("no process with pid {p}; call process_tree without pid to list them all");
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
    let processes = order
        .into_iter()
        .map(|(i, depth)| {
            let mut n = nodes[i].1.clone();
            n.depth = depth;
            n
        })
        .collect();
    nodes.clear();
    Ok(ProcessTree {
        processes,
        truncated,
    })
}

// ------------------------------------------------------------ search_events

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
    /// True when a list was cut at the limit.
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
pub fn search_events(conn: &Connection, text: &str, limit: usize) -> Result<SearchResults> {
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
            Ok((
                TaskId {
                    utid: r.get(0)?,
                    tid: r.get(1)?,
                    thread_name: r.get(2)?,
                    pid: r.get(3)?,
                    process_name: r.get(4)?,
                },
                r.get(5)?,
            ))
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
    for (event, table) in [
        ("sched_switch", "sched_slice"),
        ("sched_waking", "wakeup"),
        ("thread_state", "thread_state"),
    ] {
        if event.contains(&lower) {
            event_types.push(EventCount {
                event: event.into(),
                table: table.into(),
                count: count(conn, table)?,
            });
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
    Ok(SearchResults {
        text: text.to_string(),
        tasks,
        event_types,
        cpus,
        truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_and_percentiles() {
        assert_eq!(clip(10, 5, 0, 100, 1000), 5);
        assert_eq!(clip(10, 5, 12, 100, 1000), 3);
        assert_eq!(clip(10, -1, 0, 100, 1000), 90);
        assert_eq!(clip(10, 5, 20, 100, 1000), 0);
        let mut v: Vec<i64> = (1..=1000).collect();
        assert_eq!(percentile_in_place(&mut v, 50.0), Some(500));
        assert_eq!(percentile_in_place(&mut v, 99.9), Some(999));
        assert_eq!(percentile_in_place(&mut v, 100.0), Some(1000));
        assert_eq!(percentile_in_place(&mut [], 50.0), None);
        assert_eq!(like_pattern("a_b%"), "%a\\_b\\%%");
        assert_eq!(pct(1, 3), 33.33);
    }
}
