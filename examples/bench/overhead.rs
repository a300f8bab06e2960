//! Figures 1 and 3: a workload's slowdown under schedlens and under
//! `perf sched record`, and the bytes each writes per event.

use crate::measure::{Stat, run_measured};
use crate::opts::Opts;
use crate::trace::{TraceCounts, remove_trace, trace_counts};
use anyhow::{Context, Result};
use serde::Serialize;
use std::process::Command;

/// Round trips of the pinned pipe ping-pong: (smoke, full run).
pub const PIPE_LOOPS: (&str, &str) = ("20000", "300000");

/// Figure 1's first workload: `perf bench sched pipe`, both ends on CPU 0, so
/// every round trip is two context switches and two wakeups.
pub fn pipe_workload(loops: &str) -> Vec<&str> {
    vec![
        "taskset", "-c", "0", "perf", "bench", "sched", "pipe", "-l", loops,
    ]
}

/// `perf bench sched pipe` prints "N usecs/op".
pub fn parse_usecs_per_op(text: &str) -> Result<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_suffix("usecs/op")?.trim().parse().ok())
        .with_context(|| format!("no usecs/op in perf bench output:\n{text}"))
}

/// `perf bench sched messaging` prints "Total time: X [sec]".
pub fn parse_total_time(text: &str) -> Result<f64> {
    text.lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("Total time:")?;
            rest.trim().strip_suffix("[sec]")?.trim().parse().ok()
        })
        .with_context(|| format!("no Total time in perf bench output:\n{text}"))
}

/// perf record prints "[ perf record: Captured and wrote X MB FILE (N samples) ]".
pub fn parse_perf_samples(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.contains("Captured and wrote"))?;
    let open = line.rfind('(')?;
    line[open + 1..].split_whitespace().next()?.parse().ok()
}

/// A schedlens configuration a figure measures: a name and its `trace` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Config {
    pub name: &'static str,
    pub flags: &'static [&'static str],
}

/// `schedlens trace` as it ships: the default event groups, no stacks.
pub const DEFAULT_CONFIG: Config = Config {
    name: "default",
    flags: &[],
};

/// The pinned pipe's configurations, side by side: what the default event
/// groups cost over sched alone, and what each kind of stack adds.
pub const PIPE_CONFIGS: &[Config] = &[
    DEFAULT_CONFIG,
    Config {
        name: "sched only",
        flags: &["--events", "sched"],
    },
    Config {
        name: "off-cpu stacks",
        flags: &["--stacks", "off-cpu"],
    },
    Config {
        name: "cpu stacks 99 Hz",
        flags: &["--stacks", "cpu"],
    },
];

/// How a workload is run in one condition of a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Condition {
    Baseline,
    Schedlens(Config),
    PerfSched,
}

pub struct CondRun {
    pub text: String,
    pub counts: Option<TraceCounts>,
    pub perf_bytes_per_event: Option<f64>,
}

pub fn run_condition(o: &Opts, cond: Condition, workload: &[&str], tag: &str) -> Result<CondRun> {
    let out = o.work.join(format!("{tag}.pftrace"));
    let perf_out = o.work.join(format!("{tag}.perf.data"));
    let mut cmd = match cond {
        Condition::Baseline => {
            let mut c = Command::new(workload[0]);
            c.args(&workload[1..]);
            c
        }
        Condition::Schedlens(config) => {
            let mut c = Command::new(&o.schedlens);
            c.args(["trace"])
                .args(config.flags)
                .arg("-o")
                .arg(&out)
                .arg("--")
                .args(workload);
            c
        }
        Condition::PerfSched => {
            let mut c = Command::new("perf");
            c.args(["sched", "record", "-o"])
                .arg(&perf_out)
                .arg("--")
                .args(workload);
            c
        }
    };
    let (text, _) = run_measured(&mut cmd)?;
    let mut run = CondRun {
        text,
        counts: None,
        perf_bytes_per_event: None,
    };
    match cond {
        Condition::Schedlens(_) => {
            run.counts = Some(trace_counts(o, &out)?);
            remove_trace(&out);
        }
        Condition::PerfSched => {
            let bytes = std::fs::metadata(&perf_out).map(|m| m.len()).unwrap_or(0);
            run.perf_bytes_per_event = parse_perf_samples(&run.text)
                .filter(|&n| n > 0)
                .map(|n| bytes as f64 / n as f64);
            let _ = std::fs::remove_file(&perf_out);
        }
        Condition::Baseline => {}
    }
    Ok(run)
}

#[derive(Debug, Serialize)]
pub struct OverheadFigure {
    pub workload: String,
    pub unit: &'static str,
    pub baseline: Stat,
    /// The first configuration (the default), as figures 1 and 3 report it.
    pub schedlens: Stat,
    pub perf: Stat,
    pub schedlens_slowdown_pct: f64,
    pub perf_slowdown_pct: f64,
    pub schedlens_bytes_per_event: Stat,
    pub perf_bytes_per_event: Stat,
    pub schedlens_lost: u64,
    /// Every configuration measured, the default first.
    pub configs: Vec<ConfigFigure>,
}

/// One schedlens configuration's share of an overhead figure.
#[derive(Debug, Serialize)]
pub struct ConfigFigure {
    pub config: Config,
    pub value: Stat,
    pub slowdown_pct: f64,
    pub bytes_per_event: Stat,
    /// Bytes per context switch (the recorder's sched_switch count).
    pub bytes_per_switch: Stat,
    pub lost: u64,
}

/// What one configuration's runs measured, gathered round by round.
#[derive(Default)]
struct ConfigRuns {
    values: Vec<f64>,
    bytes_per_event: Vec<f64>,
    bytes_per_switch: Vec<f64>,
    lost: u64,
}

/// Figure 1 and 3: slowdown of a workload under each recorder and each
/// schedlens configuration, interleaved.
pub fn overhead(
    o: &Opts,
    name: &str,
    workload: &[&str],
    parse: fn(&str) -> Result<f64>,
    unit: &'static str,
    configs: &[Config],
) -> Result<OverheadFigure> {
    let mut conds = vec![Condition::Baseline];
    conds.extend(configs.iter().map(|&c| Condition::Schedlens(c)));
    conds.push(Condition::PerfSched);
    let (mut base, mut pf, mut pf_bpe) = (vec![], vec![], vec![]);
    let mut runs: Vec<ConfigRuns> = configs.iter().map(|_| ConfigRuns::default()).collect();
    for round in 0..o.runs {
        // Rotate the order each round so no condition always runs first.
        for i in 0..conds.len() {
            let cond = conds[(round + i) % conds.len()];
            let tag = format!("{name}-{round}");
            let run = run_condition(o, cond, workload, &tag)?;
            let value = parse(&run.text)?;
            match cond {
                Condition::Baseline => base.push(value),
                Condition::Schedlens(config) => {
                    let at = configs
                        .iter()
                        .position(|&c| c == config)
                        .expect("a measured config");
                    let r = &mut runs[at];
                    r.values.push(value);
                    if let Some(c) = run.counts {
                        if c.events > 0 {
                            r.bytes_per_event.push(c.bytes as f64 / c.events as f64);
                        }
                        if c.switches > 0 {
                            r.bytes_per_switch.push(c.bytes as f64 / c.switches as f64);
                        }
                        r.lost += c.lost;
                    }
                }
                Condition::PerfSched => {
                    pf.push(value);
                    pf_bpe.extend(run.perf_bytes_per_event);
                }
            }
            let label = match cond {
                Condition::Schedlens(c) => format!("schedlens {}", c.name),
                other => format!("{other:?}"),
            };
            eprintln!("  {name} round {round} {label}: {value:.3} {unit}");
        }
    }
    let b = Stat::of(&base);
    let p = Stat::of(&pf);
    let configs: Vec<ConfigFigure> = configs
        .iter()
        .zip(runs)
        .map(|(&config, r)| {
            let value = Stat::of(&r.values);
            ConfigFigure {
                config,
                value,
                slowdown_pct: (value.median / b.median - 1.0) * 100.0,
                bytes_per_event: Stat::of(&r.bytes_per_event),
                bytes_per_switch: Stat::of(&r.bytes_per_switch),
                lost: r.lost,
            }
        })
        .collect();
    let default = &configs[0];
    Ok(OverheadFigure {
        workload: workload.join(" "),
        unit,
        baseline: b,
        schedlens: default.value,
        perf: p,
        schedlens_slowdown_pct: default.slowdown_pct,
        perf_slowdown_pct: (p.median / b.median - 1.0) * 100.0,
        schedlens_bytes_per_event: default.bytes_per_event,
        perf_bytes_per_event: Stat::of(&pf_bpe),
        schedlens_lost: configs.iter().map(|c| c.lost).sum(),
        configs,
    })
}
