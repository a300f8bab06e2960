//! The schedlens benchmark: what the recorder costs the machine, what it loses,
//! how big its files are, what it costs itself, and how fast `analyze` is,
//! each measured side by side with a baseline in the same run.
//!
//!   scripts/bench.sh            full run (minutes; root; writes bench/results.json)
//!   scripts/bench.sh --smoke    tiny sizes, for CI: proves the benchmark still runs
//!   scripts/bench.sh --compare OTHER   figure 1's pipe under this build and OTHER
//!   scripts/bench.sh --context  figure 6 alone (add --smoke for 1 s recordings)
//!
//! Machines here are shared and noisy, so the conditions of a figure are
//! interleaved round by round (baseline, schedlens, perf, then rotated) and
//! reported as medians with their spread (min..max).

mod analyze;
mod compare;
mod context;
mod export;
mod measure;
mod opts;
mod overhead;
mod recording;
mod table;
mod trace;

use analyze::{AnalyzeFigure, analyze, analyze_only};
use anyhow::{Result, bail};
use compare::compare;
use context::{ContextFigure, context};
use opts::Opts;
use overhead::{
    DEFAULT_CONFIG, OverheadFigure, PIPE_CONFIGS, PIPE_LOOPS, overhead, parse_total_time,
    parse_usecs_per_op, pipe_workload,
};
use recording::{RecordingFigure, recording};
use serde::Serialize;
use std::process::Command;
use table::print_table;
use trace::remove_trace;

/// Everything one run measured: bench/results.json.
#[derive(Debug, Serialize)]
pub struct Report {
    pub smoke: bool,
    pub machine: String,
    pub kernel: String,
    pub cpus: usize,
    pub date: String,
    pub pipe: OverheadFigure,
    pub messaging: OverheadFigure,
    pub recording: RecordingFigure,
    pub context: ContextFigure,
    pub analyze: Option<AnalyzeFigure>,
}

fn machine_description() -> (String, String) {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    (model, kernel)
}

fn main() -> Result<()> {
    let o = Opts::parse()?;
    if !o.schedlens.exists() {
        bail!(
            "{} does not exist: build it first (scripts/bench.sh does)",
            o.schedlens.display()
        );
    }
    if let Some(trace) = &o.analyze_only {
        return analyze_only(&o, trace);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark records with BPF and runs perf: run it as root");
    }
    std::fs::create_dir_all(&o.work)?;
    let have_perf = Command::new("perf")
        .args(["bench", "sched", "pipe", "-l", "10"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have_perf {
        bail!(
            "`perf` is missing: it is both the workload and the baseline (scripts/install-deps.sh installs it)"
        );
    }
    if let Some(other) = &o.compare {
        return compare(&o, other);
    }
    if o.context_only {
        let figure = context(&o)?;
        table::print_context(&figure);
        return Ok(());
    }
    let (pipe_loops, msg_loops, msg_groups) = if o.smoke {
        (PIPE_LOOPS.0, "20", "2")
    } else {
        (PIPE_LOOPS.1, "500", "10")
    };

    eprintln!(
        "figure 1/3: pinned pipe ping-pong, interleaved {} runs",
        o.runs
    );
    let pipe_cmd = pipe_workload(pipe_loops);
    let pipe = overhead(
        &o,
        "pipe",
        &pipe_cmd,
        parse_usecs_per_op,
        "usecs/op",
        PIPE_CONFIGS,
    )?;
    eprintln!("figure 1: many tasks (perf bench sched messaging)");
    let msg_cmd = [
        "perf",
        "bench",
        "sched",
        "messaging",
        "-g",
        msg_groups,
        "-l",
        msg_loops,
    ];
    let messaging = overhead(
        &o,
        "messaging",
        &msg_cmd,
        parse_total_time,
        "s",
        &[DEFAULT_CONFIG],
    )?;
    eprintln!("figures 2/4: event rate, drops, recorder cost");
    let recording = recording(&o)?;
    eprintln!("figure 6: event groups and stacks");
    let context = context(&o)?;
    let analyze = match &recording.big_trace {
        Some(t) => {
            eprintln!("figure 5: analyze on {} events", recording.big_trace_events);
            Some(analyze(&o, t, recording.big_trace_events)?)
        }
        None => None,
    };
    let (machine, kernel) = machine_description();
    let report = Report {
        smoke: o.smoke,
        machine,
        kernel,
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        pipe,
        messaging,
        recording,
        context,
        analyze,
    };
    print_table(&report);
    if let Some(dir) = o.json_out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&o.json_out, serde_json::to_string_pretty(&report)?)?;
    eprintln!("wrote {}", o.json_out.display());
    if let Some(t) = &report.recording.big_trace {
        remove_trace(t);
    }
    Ok(())
}
