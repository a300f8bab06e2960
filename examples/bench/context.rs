//! Figure 6: the context events and stacks beyond sched. Each event group's
//! rate (every group, the opt-in ones too) on an idle and a busy machine with
//! what its BPF program costs per event (the kernel's own run statistics,
//! kernel.bpf_stats_enabled), and the end-of-recording symbolization of a
//! 30 s system-wide recording with every kind of stack.

use crate::opts::Opts;
use crate::recording::{ProgramCost, record_under_load};
use crate::trace::{query_csv, remove_trace};
use anyhow::{Context, Result, bail};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct ContextFigure {
    pub idle: GroupRates,
    pub busy: GroupRates,
    pub symbolization: Symbolization,
}

/// One recording's events per second by type, and its programs' costs.
#[derive(Debug, Serialize)]
pub struct GroupRates {
    pub load: String,
    pub secs: u64,
    /// (event type, events per second), busiest first.
    pub events_per_sec: Vec<(String, f64)>,
    pub programs: Vec<ProgramCost>,
}

#[derive(Debug, Serialize)]
pub struct Symbolization {
    pub secs: u64,
    /// The recorder's "stacks:" summary line.
    pub summary: String,
    pub symbolize_s: f64,
    pub recorder_max_rss_mib: f64,
}

/// Turns the kernel's BPF run statistics on for as long as it lives.
struct BpfStats {
    before: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Result<BpfStats> {
        let before = std::fs::read_to_string(BPF_STATS).context("reading bpf_stats_enabled")?;
        std::fs::write(BPF_STATS, "1").context("enabling kernel.bpf_stats_enabled")?;
        Ok(BpfStats { before })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, self.before.trim());
    }
}

pub fn context(o: &Opts) -> Result<ContextFigure> {
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let secs = if o.smoke { 1 } else { 10 };
    let stats = BpfStats::enable()?;
    eprintln!("  idle machine, {secs} s, every event group");
    let idle = rates(o, (0, false, false), secs, "idle")?;
    eprintln!("  busy machine, {secs} s: {ncpu} pinned pipe pairs and a fork/exec storm");
    let busy = rates(o, (ncpu, true, true), secs, "busy")?;
    drop(stats);
    let sym_secs = if o.smoke { 1 } else { 30 };
    eprintln!("  {sym_secs} s with --stacks all under the busy load: symbolization");
    let path = o.work.join("stacks-all.pftrace");
    let run = record_under_load(o, (ncpu, true, true), sym_secs, &["--stacks", "all"], &path)?;
    remove_trace(&path);
    let summary = run
        .stderr
        .lines()
        .find(|l| l.trim_start().starts_with("stacks:"))
        .context("the recorder printed no stacks summary")?
        .trim()
        .to_string();
    // "stacks: ... named (N%) in X.XXs"
    let symbolize_s = summary
        .rsplit_once(" in ")
        .and_then(|(_, t)| t.trim_end_matches('s').parse().ok())
        .context("no symbolization time in the stacks summary")?;
    Ok(ContextFigure {
        idle,
        busy,
        symbolization: Symbolization {
            secs: sym_secs,
            summary,
            symbolize_s,
            recorder_max_rss_mib: run.cost.max_rss_kib as f64 / 1024.0,
        },
    })
}

fn rates(o: &Opts, load: (usize, bool, bool), secs: u64, name: &str) -> Result<GroupRates> {
    let path = o.work.join(format!("groups-{name}.pftrace"));
    let groups: Vec<&str> = schedlens::recorder::catalog::event_groups()
        .iter()
        .map(|g| g.name)
        .collect();
    let run = record_under_load(o, load, secs, &["--events", &groups.join(",")], &path)?;
    let events = event_counts(o, &path)?;
    remove_trace(&path);
    let mut programs = run.programs;
    if programs.is_empty() {
        bail!("no BPF programs seen in the recorder while it ran");
    }
    programs.sort_by_key(|p| std::cmp::Reverse(p.runs));
    Ok(GroupRates {
        load: match load {
            (0, false, _) => "idle".into(),
            (pairs, storm, _) => format!("{pairs} pinned pipe pairs, fork/exec storm {storm}"),
        },
        secs,
        events_per_sec: events
            .into_iter()
            .map(|(n, c)| (n, c as f64 / secs as f64))
            .collect(),
        programs,
    })
}

/// The recorder's own count of each event type it received, busiest first.
fn event_counts(o: &Opts, trace: &std::path::Path) -> Result<Vec<(String, u64)>> {
    let text = query_csv(
        o,
        trace,
        "SELECT substr(name, 17), int_value FROM metadata \
         WHERE name LIKE 'recorder_events_%' AND name NOT LIKE 'recorder_events_schedlens_%' \
         ORDER BY int_value DESC",
    )?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (name, n) = l.rsplit_once(',')?;
            Some((name.trim_matches('"').to_string(), n.trim().parse().ok()?))
        })
        .collect())
}
