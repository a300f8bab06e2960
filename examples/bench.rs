//! The schedlens benchmark: what the recorder costs the machine, what it loses,
//! how big its files are, what it costs itself, and how fast `analyze` is,
//! each measured side by side with a baseline in the same run.
//!
//!   scripts/bench.sh            full run (minutes; root; writes bench/results.json)
//!   scripts/bench.sh --smoke    tiny sizes, for CI: proves the benchmark still runs
//!
//! Machines here are shared and noisy, so the conditions of a figure are
//! interleaved round by round (baseline, schedlens, perf, then rotated) and
//! reported as medians with their spread (min..max).

use anyhow::{Context, Result, bail};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use serde::Serialize;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Opts {
    smoke: bool,
    schedlens: PathBuf,
    work: PathBuf,
    json_out: PathBuf,
    runs: usize,
    /// Only figure 5, on this trace.
    analyze_only: Option<PathBuf>,
}

impl Opts {
    fn parse() -> Result<Opts> {
        let mut smoke = false;
        let mut schedlens = PathBuf::from("target/release/schedlens");
        let mut json_out = PathBuf::from("bench/results.json");
        let mut work = std::env::temp_dir().join("schedlens-bench");
        let mut runs = None;
        let mut analyze_only = None;
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = || args.next().with_context(|| format!("{a} needs a value"));
            match a.as_str() {
                "--smoke" => smoke = true,
                "--schedlens" => schedlens = value()?.into(),
                "--json" => json_out = value()?.into(),
                "--work-dir" => work = value()?.into(),
                "--runs" => runs = Some(value()?.parse().context("--runs takes a number")?),
                "--analyze" => analyze_only = Some(value()?.into()),
                "-h" | "--help" => {
                    println!(
                        "usage: bench [--smoke] [--runs N] [--schedlens PATH] [--json PATH] [--work-dir DIR]\n       bench --analyze TRACE   (figure 5 only, on a recording of your own)"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?} (try --help)"),
            }
        }
        let runs = runs.unwrap_or(if smoke { 1 } else { 7 });
        Ok(Opts {
            smoke,
            schedlens,
            work,
            json_out,
            runs,
            analyze_only,
        })
    }
}

/// Median and spread of a set of measurements.
#[derive(Debug, Clone, Copy, Serialize)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
    n: usize,
}

impl Stat {
    fn of(values: &[f64]) -> Stat {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
        Stat {
            median,
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
            n,
        }
    }
}

/// What a finished child process cost, from wait4's rusage.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Cost {
    wall_s: f64,
    cpu_s: f64,
    max_rss_kib: u64,
}

/// Runs `cmd` to completion and returns its stdout+stderr and resource use.
fn run_measured(cmd: &mut Command) -> Result<(String, Cost)> {
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    // Read the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.context("stdout")?;
    let mut err = child.stderr.context("stderr")?;
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).ok();
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).ok();
        s
    });
    let (status, usage) = wait4(pid)?;
    let text = t_out.join().unwrap_or_default() + &t_err.join().unwrap_or_default();
    if status != 0 {
        bail!("{cmd:?} failed (wait status {status}):\n{text}");
    }
    let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
    Ok((
        text,
        Cost {
            wall_s: start.elapsed().as_secs_f64(),
            cpu_s: cpu,
            max_rss_kib: usage.ru_maxrss as u64,
        },
    ))
}

fn tv(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

fn wait4(pid: libc::pid_t) -> Result<(i32, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child; the pointers are valid for the call.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if r < 0 {
        bail!("wait4({pid}): {}", std::io::Error::last_os_error());
    }
    Ok((status, usage))
}

/// `perf bench sched pipe` prints "N usecs/op".
fn parse_usecs_per_op(text: &str) -> Result<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_suffix("usecs/op")?.trim().parse().ok())
        .with_context(|| format!("no usecs/op in perf bench output:\n{text}"))
}

/// `perf bench sched messaging` prints "Total time: X [sec]".
fn parse_total_time(text: &str) -> Result<f64> {
    text.lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("Total time:")?;
            rest.trim().strip_suffix("[sec]")?.trim().parse().ok()
        })
        .with_context(|| format!("no Total time in perf bench output:\n{text}"))
}

/// perf record prints "[ perf record: Captured and wrote X MB FILE (N samples) ]".
fn parse_perf_samples(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.contains("Captured and wrote"))?;
    let open = line.rfind('(')?;
    line[open + 1..].split_whitespace().next()?.parse().ok()
}

/// Counts from a recorded trace, through `schedlens query` (so the benchmark
/// also exercises the loader).
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct TraceCounts {
    events: u64,
    lost: u64,
    bytes: u64,
    /// The fullest ring buffer's peak fill (events drop at 100).
    ring_peak_fill_pct: u64,
}

/// Removes a recording and the database `schedlens query` cached beside it.
fn remove_trace(trace: &Path) {
    let _ = std::fs::remove_file(trace);
    let db = trace.with_extension("pftrace.db");
    let _ = std::fs::remove_file(schedlens::analyzer::columns::path_for(&db));
    let _ = std::fs::remove_file(db);
}

fn trace_counts(o: &Opts, trace: &Path) -> Result<TraceCounts> {
    // Counts as the recorder kept them (RecorderStats), not as re-derived by
    // the importer; the schedlens_* counters are bookkeeping, not events.
    let sql = "SELECT \
        (SELECT sum(int_value) FROM metadata WHERE name LIKE 'recorder_events_%' \
           AND name NOT LIKE 'recorder_events_schedlens_%') AS events, \
        (SELECT coalesce(sum(value), 0) FROM stats WHERE name = 'recorder_lost_events_total') AS lost, \
        (SELECT int_value FROM metadata WHERE name = 'recorder_ring_peak_fill_pct') AS ring";
    let out = Command::new(&o.schedlens)
        .args(["query", "--rebuild", "--format", "csv"])
        .arg(trace)
        .arg(sql)
        .output()
        .context("running schedlens query")?;
    if !out.status.success() {
        bail!(
            "schedlens query failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .nth(1)
        .context("schedlens query returned no row")?;
    let mut cells = row.split(',').map(|c| c.trim().parse::<u64>());
    let events = cells
        .next()
        .and_then(|c| c.ok())
        .context("no recorder event counts")?;
    let lost = cells
        .next()
        .and_then(|c| c.ok())
        .context("no recorder lost counts")?;
    let ring_peak_fill_pct = cells
        .next()
        .and_then(|c| c.ok())
        .context("no ring buffer fill")?;
    let bytes = std::fs::metadata(trace)?.len();
    Ok(TraceCounts {
        events,
        lost,
        bytes,
        ring_peak_fill_pct,
    })
}

/// How a workload is run in one condition of a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum Condition {
    Baseline,
    Schedlens,
    PerfSched,
}

struct CondRun {
    text: String,
    counts: Option<TraceCounts>,
    perf_bytes_per_event: Option<f64>,
}

fn run_condition(o: &Opts, cond: Condition, workload: &[&str], tag: &str) -> Result<CondRun> {
    let out = o.work.join(format!("{tag}.pftrace"));
    let perf_out = o.work.join(format!("{tag}.perf.data"));
    let mut cmd = match cond {
        Condition::Baseline => {
            let mut c = Command::new(workload[0]);
            c.args(&workload[1..]);
            c
        }
        Condition::Schedlens => {
            let mut c = Command::new(&o.schedlens);
            c.args(["trace", "-o"]).arg(&out).arg("--").args(workload);
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
        Condition::Schedlens => {
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
struct OverheadFigure {
    workload: String,
    unit: &'static str,
    baseline: Stat,
    schedlens: Stat,
    perf: Option<Stat>,
    schedlens_slowdown_pct: f64,
    perf_slowdown_pct: Option<f64>,
    schedlens_bytes_per_event: Stat,
    perf_bytes_per_event: Option<Stat>,
    schedlens_lost: u64,
}

/// Figure 1 and 3: slowdown of a workload under each recorder, interleaved.
fn overhead(
    o: &Opts,
    name: &str,
    workload: &[&str],
    parse: fn(&str) -> Result<f64>,
    unit: &'static str,
    have_perf: bool,
) -> Result<OverheadFigure> {
    let mut conds = vec![Condition::Baseline, Condition::Schedlens];
    if have_perf {
        conds.push(Condition::PerfSched);
    }
    let (mut base, mut sl, mut pf) = (vec![], vec![], vec![]);
    let (mut sl_bpe, mut pf_bpe) = (vec![], vec![]);
    let mut lost = 0;
    for round in 0..o.runs {
        // Rotate the order each round so no condition always runs first.
        for i in 0..conds.len() {
            let cond = conds[(round + i) % conds.len()];
            let tag = format!("{name}-{round}");
            let run = run_condition(o, cond, workload, &tag)?;
            let value = parse(&run.text)?;
            match cond {
                Condition::Baseline => base.push(value),
                Condition::Schedlens => {
                    sl.push(value);
                    if let Some(c) = run.counts {
                        if c.events > 0 {
                            sl_bpe.push(c.bytes as f64 / c.events as f64);
                        }
                        lost += c.lost;
                    }
                }
                Condition::PerfSched => {
                    pf.push(value);
                    pf_bpe.extend(run.perf_bytes_per_event);
                }
            }
            eprintln!("  {name} round {round} {cond:?}: {value:.3} {unit}");
        }
    }
    let (b, s) = (Stat::of(&base), Stat::of(&sl));
    let p = have_perf.then(|| Stat::of(&pf));
    Ok(OverheadFigure {
        workload: workload.join(" "),
        unit,
        baseline: b,
        schedlens: s,
        perf: p,
        schedlens_slowdown_pct: (s.median / b.median - 1.0) * 100.0,
        perf_slowdown_pct: p.map(|p| (p.median / b.median - 1.0) * 100.0),
        schedlens_bytes_per_event: Stat::of(&sl_bpe),
        perf_bytes_per_event: have_perf.then(|| Stat::of(&pf_bpe)),
        schedlens_lost: lost,
    })
}

/// Background load: `pairs` pipe ping-pong pairs plus, if `storm`, a
/// fork/exec loop. Pinned pairs keep both ends on one CPU (pair i on CPU
/// i mod ncpu): no cross-CPU wakeups, so the highest switch rate a machine
/// can reach. Killed on drop.
struct Load {
    children: Vec<std::process::Child>,
}

impl Load {
    fn start(pairs: usize, storm: bool, pinned: bool) -> Result<Load> {
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
struct LossLevel {
    pipe_pairs: usize,
    /// Each pair on one CPU.
    pinned: bool,
    fork_exec_storm: bool,
    events_per_sec: f64,
    lost: u64,
    lost_pct: f64,
    ring_peak_fill_pct: u64,
}

#[derive(Debug, Serialize)]
struct RecordingFigure {
    levels: Vec<LossLevel>,
    max_zero_drop_events_per_sec: f64,
    recorder_ns_per_event: f64,
    recorder_max_rss_mib: f64,
    /// VmRSS sampled once a second during the longest recording, MiB.
    rss_samples_mib: Vec<f64>,
    big_trace: Option<PathBuf>,
    big_trace_events: u64,
}

fn vm_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Records `secs` of the whole machine under a load; returns counts, the
/// recorder's cost and its RSS over time.
fn record_under_load(
    o: &Opts,
    pairs: usize,
    storm: bool,
    pinned: bool,
    secs: u64,
    out: &Path,
) -> Result<(TraceCounts, Cost, Vec<f64>)> {
    let _load = Load::start(pairs, storm, pinned)?;
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let child = Command::new(&o.schedlens)
        .args(["trace", "-d", &format!("{secs}s"), "-o"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting schedlens trace")?;
    let pid = child.id();
    let mut rss = vec![];
    let sampler_deadline = start + Duration::from_secs(secs + 1);
    while Instant::now() < sampler_deadline {
        std::thread::sleep(Duration::from_secs(1));
        if let Some(r) = vm_rss_mib(pid) {
            rss.push(r);
        }
    }
    let mut err = child.stderr.context("stderr")?;
    let (status, usage) = wait4(pid as libc::pid_t)?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut err, &mut text).ok();
    if status != 0 {
        bail!("schedlens trace failed:\n{text}");
    }
    drop(_load);
    let cost = Cost {
        wall_s: start.elapsed().as_secs_f64(),
        cpu_s: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss as u64,
    };
    Ok((trace_counts(o, out)?, cost, rss))
}

/// Figures 2 and 4: raise the event rate until events are lost; the
/// recorder's own CPU per event and its memory over a long recording.
fn recording(o: &Opts) -> Result<RecordingFigure> {
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
        let (c, cost, _) = record_under_load(o, pairs, storm, pinned, secs, &path)?;
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
    let (c, cost, rss) = record_under_load(o, long_pairs, true, false, long_secs, &path)?;
    out.recorder_ns_per_event = cost.cpu_s * 1e9 / c.events.max(1) as f64;
    out.recorder_max_rss_mib = out
        .recorder_max_rss_mib
        .max(cost.max_rss_kib as f64 / 1024.0);
    out.rss_samples_mib = rss;
    out.big_trace = Some(path);
    out.big_trace_events = c.events;
    Ok(out)
}

#[derive(Debug, Serialize)]
struct AnalyzeFigure {
    trace_events: u64,
    trace_bytes: u64,
    load_wall_s: f64,
    load_events_per_sec: f64,
    load_max_rss_mib: f64,
    /// Tool name -> median latency in ms over a few calls.
    tool_latency_ms: Vec<(String, f64)>,
}

/// Figure 5: load speed and memory, then each MCP tool's latency.
fn analyze(o: &Opts, trace: &Path, events: u64) -> Result<AnalyzeFigure> {
    let (_, cost) = run_measured(
        Command::new(&o.schedlens)
            .args(["query", "--rebuild", "--format", "csv"])
            .arg(trace)
            .arg("SELECT count(*) FROM sched_slice"),
    )?;
    let tool_latency_ms = tokio::runtime::Runtime::new()?.block_on(tool_latencies(o, trace))?;
    Ok(AnalyzeFigure {
        trace_events: events,
        trace_bytes: std::fs::metadata(trace)?.len(),
        load_wall_s: cost.wall_s,
        load_events_per_sec: events as f64 / cost.wall_s,
        load_max_rss_mib: cost.max_rss_kib as f64 / 1024.0,
        tool_latency_ms,
    })
}

async fn tool_latencies(o: &Opts, trace: &Path) -> Result<Vec<(String, f64)>> {
    let mut cmd = tokio::process::Command::new(&o.schedlens);
    cmd.arg("analyze").arg(trace).stderr(Stdio::null());
    let client = ().serve(TokioChildProcess::new(cmd)?).await?;
    // A busy thread's tid for the per-task tools.
    let top = client
        .call_tool(tool_call("top_tasks", serde_json::json!({"limit": 1})))
        .await?;
    let tid = top
        .structured_content
        .as_ref()
        .and_then(|v| v.pointer("/tasks/0/tid"))
        .and_then(|v| v.as_i64())
        .unwrap_or(1);
    let calls = [
        ("trace_info", serde_json::json!({})),
        ("list_tables", serde_json::json!({})),
        (
            "describe_table",
            serde_json::json!({"table": "sched_slice"}),
        ),
        ("cpu_utilization", serde_json::json!({"group_by": "cpu"})),
        (
            "top_tasks",
            serde_json::json!({"order_by": "cpu_time", "limit": 10}),
        ),
        (
            "top_tasks",
            serde_json::json!({"order_by": "latency", "limit": 10}),
        ),
        ("scheduling_latency", serde_json::json!({})),
        ("task_timeline", serde_json::json!({"tid": tid})),
        ("process_tree", serde_json::json!({})),
        ("search_events", serde_json::json!({"text": "bench"})),
        (
            "query",
            serde_json::json!({"sql": "SELECT cpu, count(*) FROM sched_slice GROUP BY cpu"}),
        ),
    ];
    let mut out = vec![];
    for (name, args) in calls {
        let mut times = vec![];
        for _ in 0..3 {
            let t = Instant::now();
            let r = client.call_tool(tool_call(name, args.clone())).await?;
            if r.is_error == Some(true) {
                bail!("tool {name} failed: {:?}", r.content);
            }
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let label = match name {
            "top_tasks" => format!("top_tasks({})", args["order_by"].as_str().unwrap_or("")),
            _ => name.to_string(),
        };
        out.push((label, Stat::of(&times).median));
    }
    client.cancel().await?;
    Ok(out)
}

fn tool_call(name: &'static str, args: serde_json::Value) -> CallToolRequestParams {
    let args = match args {
        serde_json::Value::Object(m) => Some(m),
        _ => None,
    };
    let mut p = CallToolRequestParams::new(name);
    p.arguments = args;
    p
}

#[derive(Debug, Serialize)]
struct Report {
    smoke: bool,
    machine: String,
    kernel: String,
    cpus: usize,
    date: String,
    pipe: OverheadFigure,
    messaging: OverheadFigure,
    recording: RecordingFigure,
    analyze: Option<AnalyzeFigure>,
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

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn print_table(r: &Report) {
    let mut t = comfy_table::Table::new();
    t.set_header(["figure", "schedlens", "baseline / perf", "target", ""]);
    let p = &r.pipe;
    let perf_pct = p.perf_slowdown_pct.unwrap_or(f64::NAN);
    t.add_row([
        "1. slowdown, pinned perf bench sched pipe".to_string(),
        format!("{:+.1}%", p.schedlens_slowdown_pct),
        format!("perf sched record {perf_pct:+.1}%"),
        "<= 1/3 of perf's".into(),
        verdict(p.schedlens_slowdown_pct <= perf_pct / 3.0).into(),
    ]);
    let m = &r.messaging;
    t.add_row([
        "1. slowdown, perf bench sched messaging".to_string(),
        format!("{:+.1}%", m.schedlens_slowdown_pct),
        format!(
            "perf sched record {:+.1}%",
            m.perf_slowdown_pct.unwrap_or(f64::NAN)
        ),
        "-".into(),
        "".into(),
    ]);
    let rec = &r.recording;
    t.add_row([
        "2. highest rate with zero drops".to_string(),
        format!("{:.0} events/s", rec.max_zero_drop_events_per_sec),
        rec.levels
            .iter()
            .map(|l| {
                format!(
                    "{:.0}/s: {} lost, ring {}% full",
                    l.events_per_sec, l.lost, l.ring_peak_fill_pct
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        ">= 1,000,000 events/s".into(),
        verdict(rec.max_zero_drop_events_per_sec >= 1e6).into(),
    ]);
    let bpe = p.schedlens_bytes_per_event.median;
    t.add_row([
        "3. bytes per event on disk".to_string(),
        format!("{bpe:.2} B"),
        format!(
            "perf.data {:.1} B",
            p.perf_bytes_per_event.map(|s| s.median).unwrap_or(f64::NAN)
        ),
        "<= 4 B".into(),
        verdict(bpe <= 4.0).into(),
    ]);
    t.add_row([
        "4. recorder CPU per event (busiest load)".to_string(),
        format!("{:.0} ns", rec.recorder_ns_per_event),
        "-".into(),
        "<= 150 ns".into(),
        verdict(rec.recorder_ns_per_event <= 150.0).into(),
    ]);
    let first = rec.rss_samples_mib.first().copied().unwrap_or(f64::NAN);
    let last = rec.rss_samples_mib.last().copied().unwrap_or(f64::NAN);
    t.add_row([
        "4. recorder peak RSS".to_string(),
        format!("{:.1} MiB", rec.recorder_max_rss_mib),
        format!("VmRSS {first:.1} -> {last:.1} MiB"),
        "flat, < 64 MiB".into(),
        verdict(rec.recorder_max_rss_mib < 64.0).into(),
    ]);
    if let Some(a) = &r.analyze {
        analyze_rows(&mut t, a);
    }
    println!("{t}");
    println!(
        "{} runs per condition, interleaved; medians. Machine: {} CPUs, {}, Linux {}.{}",
        r.pipe.baseline.n,
        r.cpus,
        r.machine,
        r.kernel,
        if r.smoke {
            " SMOKE RUN: sizes too small for the figures to mean anything."
        } else {
            ""
        }
    );
}

/// Figure 5's rows. `query` runs whatever SQL it is given, so its figure (a
/// GROUP BY over every slice) is shown apart from the analysis tools'.
fn analyze_rows(t: &mut comfy_table::Table, a: &AnalyzeFigure) {
    t.add_row([
        format!("5. load rate ({} events)", a.trace_events),
        format!("{:.2} M events/s", a.load_events_per_sec / 1e6),
        format!(
            "{:.1} s, peak RSS {:.0} MiB",
            a.load_wall_s, a.load_max_rss_mib
        ),
        ">= 2 M events/s".into(),
        verdict(a.load_events_per_sec >= 2e6).into(),
    ]);
    let (query, tools): (Vec<_>, Vec<_>) = a
        .tool_latency_ms
        .iter()
        .partition(|(n, _)| n.as_str() == "query");
    let worst = tools.iter().map(|(_, ms)| *ms).fold(0.0, f64::max);
    t.add_row([
        "5. MCP analysis tool latency (worst median)".to_string(),
        format!("{worst:.0} ms"),
        tools
            .iter()
            .map(|(n, ms)| format!("{n} {ms:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        "< 500 ms each".into(),
        verdict(worst < 500.0).into(),
    ]);
    if let Some((_, ms)) = query.first() {
        t.add_row([
            "5. query tool: GROUP BY cpu over every slice".to_string(),
            format!("{ms:.0} ms"),
            "arbitrary SQL; a whole-table scan".into(),
            "-".into(),
            "".into(),
        ]);
    }
}

/// `bench --analyze TRACE`: figure 5 alone, on a recording of the user's.
fn analyze_only(o: &Opts, trace: &Path) -> Result<()> {
    let mut a = analyze(o, trace, 0)?;
    let out = Command::new(&o.schedlens)
        .args(["query", "--format", "csv"])
        .arg(trace)
        .arg("SELECT int_value FROM metadata WHERE name = 'loaded_events'")
        .stderr(Stdio::null())
        .output()?;
    let events: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .context("the loaded trace records no event count")?;
    a.trace_events = events;
    a.load_events_per_sec = events as f64 / a.load_wall_s;
    let mut t = comfy_table::Table::new();
    t.set_header(["figure", "schedlens", "", "target", ""]);
    analyze_rows(&mut t, &a);
    println!("{t}");
    Ok(())
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
    let (pipe_loops, msg_loops, msg_groups) = if o.smoke {
        ("20000", "20", "2")
    } else {
        ("300000", "500", "10")
    };

    eprintln!(
        "figure 1/3: pinned pipe ping-pong, interleaved {} runs",
        o.runs
    );
    let pipe_cmd = [
        "taskset", "-c", "0", "perf", "bench", "sched", "pipe", "-l", pipe_loops,
    ];
    let pipe = overhead(&o, "pipe", &pipe_cmd, parse_usecs_per_op, "usecs/op", true)?;
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
    let messaging = overhead(&o, "messaging", &msg_cmd, parse_total_time, "s", true)?;
    eprintln!("figures 2/4: event rate, drops, recorder cost");
    let recording = recording(&o)?;
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
