//! `trace_info`: what machine a trace comes from, what it holds, and what it
//! lost.

use std::collections::BTreeMap;

use anyhow::Result;
use rusqlite::Connection;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::durations::Dur;
use super::metadata::{meta_int, meta_str, row_count, wall_clock};
use super::timespec::trace_bounds;
use super::tool::Tool;

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
    /// Physical cores: CPUs with the same package_id and core_id are SMT
    /// siblings on one core (0 when the trace has no topology).
    pub cores: i64,
    /// Most hardware threads on one core: 2 with SMT (hyper-threading), 1 without.
    pub threads_per_core: i64,
    /// The CPUs of each core that has more than one (empty without SMT).
    pub smt_siblings: Vec<Vec<i64>>,
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

/// The CPUs of each physical core (same package_id and core_id), by core.
fn cores(conn: &Connection) -> Result<Vec<Vec<i64>>> {
    let mut st = conn.prepare(
        "SELECT package_id, core_id, cpu FROM cpu WHERE core_id IS NOT NULL
         ORDER BY package_id, core_id, cpu",
    )?;
    let mut cores: BTreeMap<(Option<i64>, i64), Vec<i64>> = BTreeMap::new();
    for row in st.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get::<_, i64>(2)?)))? {
        let (core, cpu) = row?;
        cores.entry(core).or_default().push(cpu);
    }
    let mut cores: Vec<Vec<i64>> = cores.into_values().collect();
    cores.sort_unstable_by_key(|cpus| cpus[0]);
    Ok(cores)
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
    let start_wall_clock = wall_clock(conn, b.start_ts)?;
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
    let cores = cores(conn)?;
    let cpus = CpuTopology {
        count: row_count(conn, "cpu")?,
        processors,
        llc_groups: cpu_groups(conn, "llc_id")?,
        numa_nodes: cpu_groups(conn, "numa_node")?,
        packages: conn.query_row("SELECT count(DISTINCT package_id) FROM cpu", [], |r| {
            r.get(0)
        })?,
        cores: cores.len() as i64,
        threads_per_core: cores.iter().map(|c| c.len() as i64).max().unwrap_or(0),
        smt_siblings: cores.into_iter().filter(|c| c.len() > 1).collect(),
    };
    let mut events = SCHED_EVENTS
        .iter()
        .map(|&(event, table)| EventCount::of_table(conn, event, table))
        .collect::<Result<Vec<_>>>()?;
    let mut st = conn.prepare(
        "SELECT 'task_' || type, 'task_event', count(*) FROM task_event GROUP BY type
         UNION ALL
         SELECT name, 'ftrace_event', count(*) FROM ftrace_event GROUP BY name
         UNION ALL
         SELECT 'counter:' || t.name, 'counter', count(*) FROM counter c JOIN counter_track t ON t.id = c.track_id GROUP BY t.name
         UNION ALL
         SELECT 'slice:' || t.type, 'slice', count(*) FROM slice s JOIN track t ON t.id = s.track_id GROUP BY t.type
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
    // A bundle flagged lost_events says that events were lost, not how many
    // (count NULL): those CPUs show in `problems` (ftrace_cpu_has_data_loss).
    let mut st = conn.prepare(
        "SELECT cpu, sum(count) AS n FROM lost_events GROUP BY cpu HAVING n > 0 ORDER BY cpu",
    )?;
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
        threads: row_count(conn, "thread")?,
        processes: row_count(conn, "process")?,
        drops: Drops {
            lost_events: per_cpu.iter().map(|c| c.count).sum(),
            per_cpu,
            problems,
        },
    })
}

/// The scheduler events stored in tables of their own: (event, table).
pub(crate) const SCHED_EVENTS: [(&str, &str); 3] = [
    ("sched_switch", "sched_slice"),
    ("sched_waking", "wakeup"),
    ("thread_state", "thread_state"),
];

impl EventCount {
    /// An event type counted by the rows of its table.
    pub(crate) fn of_table(conn: &Connection, event: &str, table: &str) -> Result<EventCount> {
        Ok(EventCount {
            event: event.into(),
            table: table.into(),
            count: row_count(conn, table)?,
        })
    }
}

// ---------------------------------------------------------------------- tool

/// Arguments of the trace_info tool: none besides the trace.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct TraceInfoArgs {}

/// The overview, with the trace's name.
#[derive(Debug, Serialize, JsonSchema)]
pub struct NamedTraceInfo {
    /// The trace's name, as other tools take it.
    pub trace: String,
    #[serde(flatten)]
    pub info: TraceInfo,
}

pub const TOOL: Tool<TraceInfoArgs, NamedTraceInfo> = Tool {
    name: "trace_info",
    description: "Call first: kernel, machine, CPU topology (SMT, LLC, NUMA), time range, event \
                  counts, drops.",
    answer: |trace, TraceInfoArgs {}| {
        Ok(NamedTraceInfo {
            trace: trace.name.to_string(),
            info: trace_info(trace.conn)?,
        })
    },
};
