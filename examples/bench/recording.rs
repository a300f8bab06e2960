//! Figures 2 and 4: the event rate at which events start to drop, and what
//! the recorder itself costs (CPU per event, memory over a long recording).

use crate::measure::{Cost, tv, vm_rss_mib, wait4};
use crate::opts::Opts;
use crate::trace::{TraceCounts, remove_trace, trace_counts};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Background load: `pairs` pipe ping-pong pairs plus, if `storm`, a
/// fork/exec loop. Pinned pairs keep both ends on one CPU (pair i on CPU
/// i mod ncpu): no cross-CPU wakeups, so the highest switch rate a machine
/// can reach. Killed on drop.
pub struct Load {
    pub children: Vec<std::process::Child>,
}

impl Load {
    pub fn start(pairs: usize, storm: bool, pinned: bool) -> Result<Load> {
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut children = vec![];
        for i in 0..pairs {
            let cpu = (i % ncpu).to_string();
            let mut cmd = if pinned {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu, "perf"]);
                c
            } else {
                Command::new("perf")
            };
            children.push(
                cmd.args(["bench", "sched", "pipe", "-l", "1000000000"])
                    .process_group(0)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting perf bench sched pipe")?,
            );
        }
        if storm {
            children.push(
                Command::new("sh")
                    .args(["-c", "while :; do /bin/true; done"])
                    .process_group(0)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting the fork/exec storm")?,
            );
        }
        Ok(Load { children })
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for c in &mut self.children {
            // Each load runs in its own process group: perf's partner
            // process and the storm's children must die with it.
            // SAFETY: kill(2) on the process group of our own child.
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

#[derive(Debug, Serialize)]
pub struct LossLevel {
    pub pipe_pairs: usize,
    /// Each pair on one CPU.
    pub pinned: bool,
    pub fork_exec_storm: bool,
    pub events_per_sec: f64,
    pub lost: u64,
    pub lost_pct: f64,
    pub ring_peak_fill_pct: u64,
}

#[derive(Debug, Serialize)]
pub struct RecordingFigure {
    pub levels: Vec<LossLevel>,
    pub max_zero_drop_events_per_sec: f64,
    pub recorder_ns_per_event: f64,
    pub recorder_max_rss_mib: f64,
    /// VmRSS sampled twice a second during the longest recording, MiB.
    pub rss_samples_mib: Vec<f64>,
    pub big_trace: Option<PathBuf>,
    pub big_trace_events: u64,
}

/// What one system-wide recording under a load measured.
pub struct LoadRun {
    pub counts: TraceCounts,
    pub cost: Cost,
    /// VmRSS once a second, MiB.
    pub rss_mib: Vec<f64>,
    /// The recorder's stderr (its summary).
    pub stderr: String,
    /// The recorder's BPF programs as last seen while it ran (run counts
    /// and times need kernel.bpf_stats_enabled).
    pub programs: Vec<ProgramCost>,
}

/// A BPF program's runs and the kernel's time in it.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramCost {
    pub name: String,
    pub runs: u64,
    pub ns_per_run: f64,
}

/// Records `secs` of the whole machine with `flags` under a load.
pub fn record_under_load(
    o: &Opts,
    load: (usize, bool, bool),
    secs: u64,
    flags: &[&str],
    out: &Path,
) -> Result<LoadRun> {
    let (pairs, storm, pinned) = load;
    let _load = Load::start(pairs, storm, pinned)?;
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let child = Command::new(&o.schedlens)
        .args(["trace", "-d", &format!("{secs}s")])
        .args(flags)
        .arg("-o")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting schedlens trace")?;
    let pid = child.id();
    let mut err = child.stderr.context("stderr")?;
    // Read stderr on a thread so a chatty recorder cannot block on the pipe.
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut err, &mut text).ok();
        text
    });
    let (mut rss, mut programs) = (vec![], vec![]);
    // Sampled until the recorder exits (a zombie has no VmRSS), however long
    // it takes to load its programs on a loaded machine.
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let Some(r) = vm_rss_mib(pid) else { break };
        rss.push(r);
        let now = program_costs(pid);
        if !now.is_empty() {
            programs = now;
        }
    }
    let (status, usage) = wait4(pid as libc::pid_t)?;
    let stderr = stderr.join().unwrap_or_default();
    if status != 0 {
        bail!("schedlens trace failed:\n{stderr}");
    }
    drop(_load);
    let cost = Cost {
        wall_s: start.elapsed().as_secs_f64(),
        cpu_s: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss as u64,
    };
    Ok(LoadRun {
        counts: trace_counts(o, out)?,
        cost,
        rss_mib: rss,
        stderr,
        programs,
    })
}

/// The BPF programs process `pid` holds open (their ids from its fdinfo),
/// with the kernel's run statistics.
fn program_costs(pid: u32) -> Vec<ProgramCost> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return vec![];
    };
    let ids: std::collections::HashSet<u32> = fds
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect();
    libbpf_rs::query::ProgInfoIter::default()
        .filter(|p| ids.contains(&p.id))
        .map(|p| ProgramCost {
            name: p.name.to_string_lossy().into_owned(),
            runs: p.run_cnt,
            ns_per_run: p.run_time_ns as f64 / p.run_cnt.max(1) as f64,
        })
        .collect()
}

/// Figures 2 and 4: raise the event rate until events are lost; the
/// recorder's own CPU per event and its memory over a long recording.
pub fn recording(o: &Opts) -> Result<RecordingFigure> {
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // (pipe pairs, fork/exec storm, pinned)
    let levels: Vec<(usize, bool, bool)> = if o.smoke {
        vec![(1, false, false)]
    } else {
        vec![
            (ncpu, false, true),
            (ncpu, true, true),
            (ncpu, false, false),
            (ncpu, true, false),
            (2 * ncpu, true, false),
            (4 * ncpu, true, false),
            (8 * ncpu, true, false),
        ]
    };
    let secs = if o.smoke { 2 } else { 10 };
    let mut out = RecordingFigure {
        levels: vec![],
        max_zero_drop_events_per_sec: 0.0,
        recorder_ns_per_event: f64::NAN,
        recorder_max_rss_mib: 0.0,
        rss_samples_mib: vec![],
        big_trace: None,
        big_trace_events: 0,
    };
    for (pairs, storm, pinned) in levels {
        let path = o
            .work
            .join(format!("load-{pairs}-{storm}-{pinned}.pftrace"));
        let run = record_under_load(o, (pairs, storm, pinned), secs, &[], &path)?;
        let (c, cost) = (run.counts, run.cost);
        remove_trace(&path);
        let rate = c.events as f64 / secs as f64;
        let total = c.events + c.lost;
        eprintln!(
            "  load {pairs} pairs pinned={pinned} storm={storm}: {rate:.0} events/s, {} lost, ring {}% full",
            c.lost, c.ring_peak_fill_pct
        );
        out.levels.push(LossLevel {
            pipe_pairs: pairs,
            pinned,
            fork_exec_storm: storm,
            events_per_sec: rate,
            lost: c.lost,
            ring_peak_fill_pct: c.ring_peak_fill_pct,
            lost_pct: if total > 0 {
                c.lost as f64 * 100.0 / total as f64
            } else {
                0.0
            },
        });
        if c.lost == 0 {
            out.max_zero_drop_events_per_sec = out.max_zero_drop_events_per_sec.max(rate);
        }
        out.recorder_max_rss_mib = out
            .recorder_max_rss_mib
            .max(cost.max_rss_kib as f64 / 1024.0);
    }
    // One long recording: the recorder's CPU per event and whether its memory
    // stays flat; its trace (>= 10 M events in a full run) feeds figure 5.
    let (long_secs, long_pairs) = if o.smoke { (1, 1) } else { (40, 2 * ncpu) };
    let path = o.work.join("long.pftrace");
    eprintln!("  long recording: {long_secs} s with {long_pairs} pipe pairs and a fork/exec storm");
    let run = record_under_load(o, (long_pairs, true, false), long_secs, &[], &path)?;
    let (c, cost, rss) = (run.counts, run.cost, run.rss_mib);
    out.recorder_ns_per_event = cost.cpu_s * 1e9 / c.events.max(1) as f64;
    out.recorder_max_rss_mib = out
        .recorder_max_rss_mib
        .max(cost.max_rss_kib as f64 / 1024.0);
    out.rss_samples_mib = rss;
    out.big_trace = Some(path);
    out.big_trace_events = c.events;
    Ok(out)
}
