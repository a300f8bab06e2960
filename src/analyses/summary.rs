//! `schedlens summary TRACE`, on top of the analyses.

use crate::analyses::cpu_utilization::{GroupBy, cpu_utilization};
use crate::analyses::durations::Dur;
use crate::analyses::process_activity::process_activity;
use crate::analyses::scheduling_latency::{SchedulingLatency, scheduling_latency};
use crate::analyses::tasks::TaskFilter;
use crate::analyses::timespec::trace_bounds;
use crate::analyses::tool::{TraceDb, require_scheduler_data};
use crate::analyses::top_tasks::{TaskOrder, top_tasks};
use crate::analyses::trace_info::trace_info;
use crate::analyzer::db::{self, LoadOptions};
use crate::analyzer::stats::Stat;
use comfy_table::{Table, presets};
use rusqlite::Connection;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Tasks shown in the top-tasks and latency tables.
const TOP: usize = 10;
/// Worst waits shown with what held their CPU.
const WORST: usize = 3;

/// Arguments of `schedlens summary`.
#[derive(Debug, clap::Args)]
pub struct SummaryArgs {
    /// Perfetto trace file (plain, gzip or zstd).
    pub trace: PathBuf,
    /// Reload the trace even if a cached database is valid.
    #[arg(long)]
    pub rebuild: bool,
}

pub fn run(args: SummaryArgs) -> anyhow::Result<()> {
    let loaded = db::load(&args.trace, &LoadOptions::interactive(args.rebuild))?;
    let conn = db::open_readonly(&loaded.db_path)?;
    print!("{}", render(&conn, &loaded.name)?);
    Ok(())
}

/// The IRQ handlers and softirqs that took the most CPU time, and the
/// migrations by kind; nothing when the trace has neither.
fn interrupts_and_migrations(conn: &Connection, out: &mut String) -> anyhow::Result<()> {
    let mut st = conn.prepare(
        "SELECT s.name, t.type = 'cpu_irq', count(*), sum(max(s.dur, 0)), max(s.dur)
         FROM slice s JOIN track t ON t.id = s.track_id
         WHERE t.type IN ('cpu_irq', 'cpu_softirq')
         GROUP BY s.name ORDER BY 4 DESC LIMIT ?1",
    )?;
    let rows = st
        .query_map([TOP as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, bool>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if !rows.is_empty() {
        writeln!(out, "\nIRQs and softirqs by CPU time")?;
        let mut t = table(&["name", "kind", "count", "time", "max"]);
        for (name, is_irq, count, time, max) in rows {
            t.add_row(vec![
                name,
                if is_irq { "irq" } else { "softirq" }.to_string(),
                count.to_string(),
                Dur::new(time).human,
                Dur::new(max).human,
            ]);
        }
        writeln!(out, "{t}")?;
    }
    let (total, running, waking): (i64, i64, i64) = conn.query_row(
        "SELECT count(*), coalesce(sum(running = 1), 0), coalesce(sum(running = 0), 0)
         FROM migration",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    if total > 0 {
        writeln!(
            out,
            "\nMigrations: {total} ({running} of runnable or running tasks, {waking} at wakeup)"
        )?;
    }
    Ok(())
}

/// The recorder's stack counters (its StackStats, in the stats table), or
/// None for a trace recorded without stacks.
fn stacks_line(conn: &Connection) -> anyhow::Result<Option<String>> {
    let get = |stat: Stat| -> anyhow::Result<i64> {
        Ok(conn
            .query_row(
                "SELECT sum(value) FROM stats WHERE name = ?1",
                [stat.name()],
                |r| r.get::<_, Option<i64>>(0),
            )?
            .unwrap_or(0))
    };
    let has_stacks: bool = conn.query_row(
        "SELECT count(*) > 0 FROM stats WHERE name = ?1",
        [Stat::recorder_stacks_taken.name()],
        |r| r.get(0),
    )?;
    if !has_stacks {
        return Ok(None);
    }
    let mut lost = 0;
    for stat in [
        Stat::recorder_stacks_lost_map_full,
        Stat::recorder_stacks_lost_collision,
        Stat::recorder_stacks_lost_no_user_stack,
        Stat::recorder_stacks_lost_ring_full,
        Stat::recorder_stacks_unreadable,
    ] {
        lost += get(stat)?;
    }
    let (frames, named) = (
        get(Stat::recorder_stack_frames)?,
        get(Stat::recorder_stack_frames_named)?,
    );
    let mut line = format!(
        "{} taken ({} reused), {lost} lost; {named} of {frames} frames named ({:.0}%)",
        get(Stat::recorder_stacks_taken)?,
        get(Stat::recorder_stacks_reused)?,
        named as f64 * 100.0 / frames.max(1) as f64
    );
    let gone = get(Stat::recorder_user_stacks_process_gone)?;
    if gone > 0 {
        write!(
            line,
            "; {gone} of {} user stacks unnamed (process gone before seen)",
            get(Stat::recorder_user_stacks)?
        )?;
    }
    Ok(Some(line))
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING).set_header(header.to_vec());
    t
}

fn opt_dur(d: &Option<Dur>) -> String {
    d.as_ref().map_or("-".to_string(), |d| d.human.clone())
}

/// The whole summary as text.
pub fn render(conn: &Connection, name: &str) -> anyhow::Result<String> {
    require_scheduler_data(&TraceDb { name, conn })?;
    let mut out = String::new();
    let info = trace_info(conn)?;
    let b = trace_bounds(conn)?;
    let whole = b.whole();
    let s = &info.system;
    writeln!(out, "Trace {name}")?;
    let kernel = match (&s.sysname, &s.kernel_release) {
        (Some(n), Some(r)) => format!("{n} {r}"),
        (None, Some(r)) => r.clone(),
        _ => "unknown kernel".to_string(),
    };
    let machine = s.machine.as_deref().unwrap_or("unknown machine");
    writeln!(
        out,
        "  host:      {kernel}, {machine}, {} CPUs{}",
        s.num_cpus.unwrap_or(info.cpus.count),
        s.recorder_version
            .as_ref()
            .map_or(String::new(), |v| format!(", recorded by schedlens {v}"))
    )?;
    writeln!(
        out,
        "  time:      {} ({} .. {}{})",
        info.time.duration.human,
        info.time.start_ts,
        info.time.end_ts,
        info.time
            .start_wall_clock
            .as_ref()
            .map_or(String::new(), |w| format!(", started {w}"))
    )?;
    let events: Vec<String> = info
        .events
        .iter()
        .filter(|e| e.count > 0)
        .map(|e| format!("{} {}", e.event, e.count))
        .collect();
    writeln!(
        out,
        "  events:    {}; {} threads, {} processes",
        if events.is_empty() {
            "none".to_string()
        } else {
            events.join(", ")
        },
        info.threads,
        info.processes
    )?;
    let d = &info.drops;
    let mut drops = format!("{} lost events", d.lost_events);
    if !d.per_cpu.is_empty() {
        let per: Vec<String> = d
            .per_cpu
            .iter()
            .map(|c| format!("cpu{} {}", c.cpu, c.count))
            .collect();
        write!(drops, " ({})", per.join(", "))?;
    }
    for p in &d.problems {
        write!(drops, "; {} {}", p.name, p.value)?;
        if let Some(i) = p.idx {
            write!(drops, " (cpu{i})")?;
        }
    }
    writeln!(out, "  drops:     {drops}")?;
    if let Some(line) = stacks_line(conn)? {
        writeln!(out, "  stacks:    {line}")?;
    }
    let act = process_activity(conn, whole, 3)?;
    let spawners: Vec<String> = act
        .processes
        .iter()
        .filter(|p| p.new_processes + p.new_threads > 0)
        .map(|p| {
            format!(
                "{} ({}) {}",
                p.name.as_deref().unwrap_or("?"),
                p.pid.map_or("?".to_string(), |p| p.to_string()),
                p.new_processes + p.new_threads
            )
        })
        .collect();
    writeln!(
        out,
        "  spawning:  {} new processes, {} new threads, {} execs, {} thread exits{}",
        act.new_processes,
        act.new_threads,
        act.execs,
        act.exits,
        if spawners.is_empty() {
            String::new()
        } else {
            format!("; most by {}", spawners.join(", "))
        }
    )?;

    for (group_by, title) in [
        (GroupBy::Cpu, "CPU utilization per CPU"),
        (GroupBy::Llc, "CPU utilization per LLC"),
        (GroupBy::Numa, "CPU utilization per NUMA node"),
    ] {
        let u = cpu_utilization(conn, whole, group_by)?;
        // Without topology the LLC/NUMA groupings fall back to per CPU: skip them.
        if group_by != GroupBy::Cpu && (u.note.is_some() || u.groups.len() <= 1) {
            continue;
        }
        writeln!(out, "\n{title}")?;
        let label = match group_by {
            GroupBy::Cpu => "cpu",
            GroupBy::Llc => "llc",
            GroupBy::Numa => "node",
        };
        let mut t = table(&[
            label, "cpus", "busy", "util", "task", "irq", "softirq", "idle",
        ]);
        for g in u.groups.iter().chain(std::iter::once(&u.total)) {
            let id = if g.id < 0 {
                "all".to_string()
            } else {
                g.id.to_string()
            };
            t.add_row(vec![
                id,
                g.cpu_count.to_string(),
                g.busy.human.clone(),
                format!("{:.1}%", g.utilization_pct),
                g.task.human.clone(),
                g.irq.human.clone(),
                g.softirq.human.clone(),
                g.idle.human.clone(),
            ]);
        }
        writeln!(out, "{t}")?;
    }
    interrupts_and_migrations(conn, &mut out)?;

    let top = top_tasks(conn, whole, TaskOrder::CpuTime, TOP)?;
    writeln!(out, "\nTop tasks by CPU time")?;
    let mut t = table(&[
        "tid",
        "pid",
        "thread",
        "process",
        "cpu time",
        "switches",
        "runnable time",
        "p99 lat",
        "max lat",
    ]);
    for task in &top.tasks {
        let id = &task.task;
        t.add_row(vec![
            id.tid.to_string(),
            id.pid.map_or("-".to_string(), |p| p.to_string()),
            id.thread_name.clone().unwrap_or_default(),
            id.process_name.clone().unwrap_or_default(),
            task.cpu_time.human.clone(),
            task.switches.to_string(),
            task.runnable_time.human.clone(),
            opt_dur(&task.latency_p99),
            opt_dur(&task.latency_max),
        ]);
    }
    writeln!(out, "{t}")?;

    writeln!(out, "\nScheduling latency (waking -> running)")?;
    let mut t = table(&["tid", "thread", "wakeups", "p50", "p90", "p99", "max"]);
    let row = |tid: String, thread: String, l: &SchedulingLatency| {
        vec![
            tid,
            thread,
            l.count.to_string(),
            opt_dur(&l.p50),
            opt_dur(&l.p90),
            opt_dur(&l.p99),
            opt_dur(&l.max),
        ]
    };
    let all = scheduling_latency(conn, &TaskFilter::default(), whole, 0)?;
    t.add_row(row("all".to_string(), String::new(), &all));
    for task in top.tasks.iter().filter(|t| t.wakeups > 0) {
        let filter = TaskFilter {
            tid: Some(task.task.tid),
            pid: task.task.pid,
            name: None,
        };
        let l = scheduling_latency(conn, &filter, whole, 0)?;
        t.add_row(row(
            task.task.tid.to_string(),
            task.task.thread_name.clone().unwrap_or_default(),
            &l,
        ));
    }
    writeln!(out, "{t}")?;

    let worst = scheduling_latency(conn, &TaskFilter::default(), whole, WORST)?;
    if !worst.worst.is_empty() {
        writeln!(out, "\nWorst waits for a CPU, and what held it")?;
        let mut t = table(&["at", "latency", "tid", "thread", "cpu", "held by"]);
        for w in &worst.worst {
            let held: Vec<String> = w
                .held_by
                .iter()
                .map(|h| {
                    format!(
                        "{} {} {}",
                        h.name.as_deref().unwrap_or("?"),
                        h.tid,
                        Dur::new(h.ns).human
                    )
                })
                .chain(
                    w.held_by_irq
                        .iter()
                        .map(|i| format!("IRQs {} ({})", Dur::new(i.ns).human, i.top.join(", "))),
                )
                .collect();
            t.add_row(vec![
                w.at.human.clone(),
                w.latency.human.clone(),
                w.task.tid.to_string(),
                w.task.thread_name.clone().unwrap_or_default(),
                w.run_cpu.map_or("-".to_string(), |c| c.to_string()),
                if held.is_empty() {
                    "(idle)".to_string()
                } else {
                    held.join(", ")
                },
            ]);
        }
        writeln!(out, "{t}")?;
    }
    Ok(out)
}
