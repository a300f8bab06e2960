//! `schedlens trace --stacks` for real around a workload whose stacks are
//! known (tests/workloads/stacks.c, built here with symbols): the file is
//! decoded with Perfetto's official protos, each PerfSample's callstack
//! resolved through the interned data of its sequence, and the stacks must
//! hold the kernel functions and the workload's own functions that did it;
//! the MCP `stacks` tool, through rmcp's client, names them too. A child
//! process that exits long before the recording ends still has its
//! functions named, and the trace's stack counters match what was recorded.
//! Needs root; see `require_bpf`.
#![cfg(feature = "record")]

mod oracle;
mod output_schema;
mod root;

use perfetto_protos::trace_packet::TracePacket;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use schedlens::analyses::{scheduling_latency, stacks, task_timeline};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_schedlens");
/// Samples per spooled run (`--stack-spool-run`): small enough that even
/// the CPU samples (99 Hz of one spinner for 3 s, ~180 seen) span many.
const SPOOL_RUN: usize = 16;
const WORKLOAD_SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/workloads/stacks.c");

/// The workload's report: its pid, the tid of each role and the pid of its
/// short-lived child.
struct Report {
    pid: u32,
    tids: HashMap<String, u32>,
    child: u32,
}

fn read_report(path: &Path) -> Report {
    let text = std::fs::read_to_string(path).expect("workload report");
    assert!(
        text.lines().any(|l| l == "done"),
        "workload did not finish:\n{text}"
    );
    let mut pid = 0;
    let mut child = 0;
    let mut tids = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["pid", p] => pid = p.parse().unwrap(),
            ["child", p] => child = p.parse().unwrap(),
            ["tid", role, t] => {
                tids.insert(role.to_string(), t.parse().unwrap());
            }
            _ => {}
        }
    }
    Report { pid, tids, child }
}

/// A decoded sample: its kind's timebase name, task and frames' function
/// names from the outermost in ("" for a frame without a name).
struct Sample {
    kind: String,
    ts: u64,
    pid: u32,
    tid: u32,
    frames: Vec<String>,
}

/// Resolves every PerfSample through its sequence's defaults and interned
/// data, as trace_processor does.
fn samples(packets: &[TracePacket]) -> Vec<Sample> {
    #[derive(Default)]
    struct Seq {
        kind: String,
        names: HashMap<u64, String>,
        frames: HashMap<u64, u64>,
        callstacks: HashMap<u64, Vec<u64>>,
    }
    let mut seqs: HashMap<u32, Seq> = HashMap::new();
    let mut out = Vec::new();
    for p in packets {
        let seq_id = p.trusted_packet_sequence_id();
        if let Some(d) = p.trace_packet_defaults.as_ref() {
            let seq = seqs.entry(seq_id).or_default();
            seq.kind = d.perf_sample_defaults.timebase.name().to_string();
        }
        if let Some(i) = p.interned_data.as_ref() {
            let seq = seqs.entry(seq_id).or_default();
            for s in &i.function_names {
                seq.names
                    .insert(s.iid(), String::from_utf8_lossy(s.str()).into_owned());
            }
            for f in &i.frames {
                seq.frames.insert(f.iid(), f.function_name_id());
            }
            for c in &i.callstacks {
                seq.callstacks.insert(c.iid(), c.frame_ids.clone());
            }
        }
        if p.has_perf_sample() {
            let s = p.perf_sample();
            let seq = seqs
                .get(&seq_id)
                .expect("a sample's sequence has interned data first");
            let frames = if s.has_callstack_iid() {
                seq.callstacks
                    .get(&s.callstack_iid())
                    .expect("callstack interned")
                    .iter()
                    .map(|f| {
                        let name = seq.frames.get(f).expect("frame interned");
                        seq.names.get(name).cloned().unwrap_or_default()
                    })
                    .collect()
            } else {
                Vec::new()
            };
            out.push(Sample {
                kind: seq.kind.clone(),
                ts: p.timestamp(),
                pid: s.pid(),
                tid: s.tid(),
                frames,
            });
        }
    }
    out
}

fn has(frames: &[String], pred: impl Fn(&str) -> bool) -> bool {
    frames.iter().any(|f| pred(f))
}

#[test]
fn off_cpu_and_cpu_stacks_name_the_workloads_functions() {
    if !root::require_bpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("stacks");
    let built = Command::new("cc")
        .args(["-g", "-O0", "-fno-omit-frame-pointer", "-pthread", "-o"])
        .arg(&exe)
        .arg(WORKLOAD_SRC)
        .status()
        .expect("running cc");
    assert!(built.success(), "building {WORKLOAD_SRC}");
    let trace = dir.path().join("stacks.pftrace");
    let report_path = dir.path().join("report");
    // Output to a file, not a pipe: the workload outlives the recording and
    // holds what it inherited open.
    let log_path = dir.path().join("log");
    let log = std::fs::File::create(&log_path).unwrap();
    let status = Command::new(BIN)
        .args(["trace", "--stacks", "off-cpu,cpu", "-d", "3s", "-o"])
        .arg(&trace)
        // Spooled runs of SPOOL_RUN samples: the trace's samples are merged from many.
        .args(["--stack-spool-run", &SPOOL_RUN.to_string()])
        .arg("--")
        .arg(&exe)
        .arg(&report_path)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    let report = read_report(&report_path);
    // SAFETY: kill with the pid of the workload we started (it waits for this).
    unsafe { libc::kill(report.pid as i32, libc::SIGKILL) };
    let stderr = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "schedlens trace failed:\n{stderr}");
    assert!(stderr.contains("stacks: "), "no stacks summary:\n{stderr}");

    let samples = samples(&oracle::decode(&trace).packets);
    // Each kind's samples in time order, merged from many runs.
    for kind in ["schedlens off-cpu", "schedlens cpu"] {
        let ts: Vec<u64> = samples
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| s.ts)
            .collect();
        assert!(
            ts.len() > 4 * SPOOL_RUN,
            "{kind}: {} samples, too few for many runs",
            ts.len()
        );
        assert!(
            ts.windows(2).all(|w| w[0] <= w[1]),
            "{kind}: samples out of time order"
        );
    }
    let of = |kind: &str, role: &str| -> Vec<&Sample> {
        let tid = report.tids[role];
        samples
            .iter()
            .filter(|s| s.kind == kind && s.tid == tid)
            .collect()
    };
    for s in &samples {
        if report.tids.values().any(|&t| t == s.tid) {
            assert_eq!(
                s.pid, report.pid,
                "a workload thread's sample names its process"
            );
        }
    }

    // The reader blocks ~150 times in read() on the pipe; the sleeper as often
    // in nanosleep. Nearly every one of those off-CPU stacks must show the
    // syscall's kernel path under the workload function that made it.
    let expect = [
        (
            "sl-reader",
            "block_in_pipe_read",
            &(|f: &str| f.ends_with("pipe_read")) as &dyn Fn(&str) -> bool,
            "ksys_read",
        ),
        (
            "sl-sleeper",
            "sleep_in_nanosleep",
            &(|f: &str| f == "do_nanosleep") as &dyn Fn(&str) -> bool,
            "hrtimer_nanosleep",
        ),
    ];
    for (role, user_fn, kernel_fn, syscall_fn) in expect {
        let blocked = of("schedlens off-cpu", role);
        assert!(
            blocked.len() >= 50,
            "{role}: {} off-cpu stacks, expected ~150\n{stderr}",
            blocked.len()
        );
        let good = blocked
            .iter()
            .filter(|s| {
                has(&s.frames, |f| f == user_fn)
                    && has(&s.frames, kernel_fn)
                    && has(&s.frames, |f| f == syscall_fn)
                    && has(&s.frames, |f| f == "schedule")
            })
            .count();
        assert!(
            good * 10 >= blocked.len() * 9,
            "{role}: only {good} of {} off-cpu stacks hold {user_fn} above the kernel's \
             path; first: {:?}",
            blocked.len(),
            blocked[0].frames
        );
        // The thread's start is in the system's libc, named from its symbol
        // tables although its debug sections are compressed (Debian's are).
        let from_libc = blocked
            .iter()
            .filter(|s| s.frames.first().is_some_and(|f| f == "start_thread"))
            .count();
        assert!(
            from_libc * 10 >= blocked.len() * 9,
            "{role}: only {from_libc} of {} off-cpu stacks start in libc's start_thread; \
             first: {:?}",
            blocked.len(),
            blocked[0].frames
        );
        // Outermost first: the user function comes before the kernel's.
        let s = blocked
            .iter()
            .find(|s| has(&s.frames, |f| f == user_fn))
            .unwrap();
        let user_at = s.frames.iter().position(|f| f == user_fn).unwrap();
        let sched_at = s.frames.iter().position(|f| f == "schedule").unwrap();
        assert!(user_at < sched_at, "frame order: {:?}", s.frames);
        // The innermost frames are the scheduler's, not the tracepoint's and
        // the recorder's BPF program through which the stack was taken.
        for s in blocked
            .iter()
            .filter(|s| has(&s.frames, |f| f == "schedule"))
        {
            let leaf = s.frames.last().map_or("", String::as_str);
            assert!(
                leaf.ends_with("schedule"),
                "{role}: an off-cpu stack ends in {leaf:?}, not in the scheduler: {:?}",
                s.frames
            );
        }
    }

    // Imported: every time the reader and the sleeper blocked (a thread_state
    // in S or D) has its off-CPU stack, weighted by that state's duration.
    for role in ["sl-reader", "sl-sleeper"] {
        let tid = report.tids[role];
        let sql = format!(
            "SELECT (SELECT count(*) FROM thread_state s WHERE s.utid = t.utid AND s.state IN \
             ('S', 'D')), (SELECT total(dur) FROM thread_state s WHERE s.utid = t.utid AND \
             s.state IN ('S', 'D')), (SELECT count(*) FROM off_cpu_sample o WHERE o.utid = \
             t.utid AND o.state IN ('S', 'D')), (SELECT total(dur) FROM off_cpu_sample o WHERE \
             o.utid = t.utid), (SELECT count(*) FROM off_cpu_sample o WHERE o.utid = t.utid) \
             FROM thread t WHERE t.tid = {tid}"
        );
        let q = Command::new(BIN)
            .args(["query", "--format", "csv"])
            .arg(&trace)
            .arg(&sql)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&q.stdout);
        assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
        let row: Vec<f64> = text
            .lines()
            .nth(1)
            .expect("a row")
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect();
        let (states, state_ns, weighted, weight_ns, samples) =
            (row[0], row[1], row[2], row[3], row[4]);
        assert!(states >= 50.0, "{role}: {states} blocked states");
        assert_eq!(
            samples, states,
            "{role}: one off-CPU stack per blocked state"
        );
        assert_eq!(weighted, states, "{role}: each stack weighted by its state");
        assert_eq!(
            weight_ns, state_ns,
            "{role}: weights are the states' durations"
        );
    }

    // CPU samples of the workload: the spinner dominates, in its function.
    let cpu: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.kind == "schedlens cpu" && s.pid == report.pid)
        .collect();
    let spinning = cpu
        .iter()
        .filter(|s| has(&s.frames, |f| f == "spin_in_named_function"))
        .count();
    assert!(
        spinning >= 40,
        "only {spinning} CPU samples in spin_in_named_function (of {} of the workload); \
         ~140 expected at 99 Hz over 1.5 s\n{stderr}",
        cpu.len()
    );
    assert!(
        spinning * 10 >= cpu.len() * 8,
        "the spinner has {spinning} of the workload's {} CPU samples",
        cpu.len()
    );
    let spinner = report.tids["sl-spinner"];
    assert!(
        cpu.iter()
            .filter(|s| has(&s.frames, |f| f == "spin_in_named_function"))
            .all(|s| s.tid == spinner)
    );

    // The child had exited (and was reaped) a second before the recording
    // ended: its user frames were named from what the recorder kept while
    // it ran. Its blocks are its own sleeps, under the function that made
    // them; its CPU samples are mostly the spin.
    let of_child = |kind: &str| -> Vec<&Sample> {
        samples
            .iter()
            .filter(|s| s.kind == kind && s.pid == report.child)
            .collect()
    };
    let blocked = of_child("schedlens off-cpu");
    let slept = blocked
        .iter()
        .filter(|s| {
            has(&s.frames, |f| f == "child_sleeps_then_exits")
                && has(&s.frames, |f| f == "do_nanosleep")
        })
        .count();
    assert!(
        slept >= 20 && slept * 10 >= blocked.len() * 8,
        "the exited child: {slept} of its {} off-cpu stacks hold child_sleeps_then_exits \
         (50 sleeps made); first: {:?}\n{stderr}",
        blocked.len(),
        blocked.first().map(|s| &s.frames)
    );
    let child_cpu = of_child("schedlens cpu");
    let spun = child_cpu
        .iter()
        .filter(|s| s.frames.last().map(String::as_str) == Some("child_spins_then_exits"))
        .count();
    assert!(
        spun >= 5,
        "the exited child: {spun} of its {} CPU samples in child_spins_then_exits, ~20 \
         expected over its 200 ms of CPU time at 99 Hz; first: {:?}",
        child_cpu.len(),
        child_cpu.first().map(|s| &s.frames)
    );

    // The trace's stack counters, imported into `stats`, against the file.
    let stat = |name: &str| -> i64 {
        let q = Command::new(BIN)
            .args(["query", "--format", "csv"])
            .arg(&trace)
            .arg(format!(
                "SELECT coalesce(sum(value), -1) FROM stats WHERE name = '{name}'"
            ))
            .output()
            .unwrap();
        assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
        let text = String::from_utf8_lossy(&q.stdout);
        text.lines().nth(1).expect("a row").parse().unwrap()
    };
    let taken = stat("recorder_stacks_taken");
    assert_eq!(
        taken,
        samples.len() as i64,
        "every stack taken is in the file"
    );
    let off_cpu = samples
        .iter()
        .filter(|s| s.kind == "schedlens off-cpu")
        .count() as i64;
    // The reader's ~150 reads, the sleeper's ~150 sleeps, the child's 50.
    let workload_blocks = of("schedlens off-cpu", "sl-reader").len()
        + of("schedlens off-cpu", "sl-sleeper").len()
        + blocked.len();
    assert!(
        workload_blocks >= 150 && off_cpu >= workload_blocks as i64,
        "{off_cpu} off-cpu stacks, {workload_blocks} of the workload's blocks"
    );
    // The sleeper blocks ~150 times at the same place: most of those reuse
    // its stacks (--stack-reuse, default 15 in a row).
    let reused = stat("recorder_stacks_reused");
    assert!(
        reused >= 100 && reused <= off_cpu,
        "{reused} off-cpu stacks reused of {off_cpu}"
    );
    let (frames, named) = (
        stat("recorder_stack_frames"),
        stat("recorder_stack_frames_named"),
    );
    assert!(
        named > 0 && named <= frames,
        "{named} of {frames} frames named"
    );
    let (user_stacks, gone) = (
        stat("recorder_user_stacks"),
        stat("recorder_user_stacks_process_gone"),
    );
    assert!(
        user_stacks > 0 && gone >= 0 && gone < user_stacks,
        "{gone} of {user_stacks} user stacks of gone processes"
    );
    // Lost stacks depend on the whole machine's (hash collisions in the
    // stack map): each reason has its row, and the summary adds them up.
    let mut lost = 0;
    for reason in [
        "recorder_stacks_lost_map_full",
        "recorder_stacks_lost_collision",
        "recorder_stacks_lost_no_user_stack",
        "recorder_stacks_lost_ring_full",
        "recorder_stacks_unreadable",
    ] {
        let n = stat(reason);
        assert!(n >= 0, "no {reason} row");
        lost += n;
    }
    assert!(lost * 10 < taken, "{lost} stacks lost of {taken}");
    let summary = Command::new(BIN)
        .arg("summary")
        .arg(&trace)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&summary.stdout);
    assert!(
        text.contains(&format!(
            "stacks:    {taken} taken ({reused} reused), {lost} lost; {named} of {frames} \
             frames named"
        )),
        "summary:\n{text}"
    );

    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(stacks_tool_names_the_workloads_functions(
            &trace,
            &dir.path().join("cache"),
            &report,
        ));
}

/// Most bytes of a tool's answer with its default arguments (as in
/// tests/fixture_trace.rs, whose recording has no stacks).
const DEFAULT_ANSWER_BUDGET: usize = 4 * 1024;

/// The `stacks` tool on the recording: the heaviest off-CPU stacks of the
/// reader and the sleeper are their blocking paths under their own
/// functions, the spinner's function dominates the workload's CPU samples,
/// the default answers fit the budget, and bad arguments are tool errors.
async fn stacks_tool_names_the_workloads_functions(trace: &Path, cache: &Path, report: &Report) {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("analyze").arg(trace).env("XDG_CACHE_HOME", cache);
    let (transport, _) = rmcp::transport::TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let c = ().serve(transport).await.unwrap();
    let call_tool = |name: &'static str, args: Value| {
        let c = &c;
        async move {
            let Value::Object(args) = args else {
                unreachable!("arguments are an object")
            };
            let r = c
                .call_tool(CallToolRequestParams::new(name).with_arguments(args))
                .await
                .expect("protocol error");
            match (r.is_error, r.structured_content) {
                (Some(true), _) | (_, None) => Err(r
                    .content
                    .iter()
                    .find_map(|c| c.as_text().map(|t| t.text.clone()))
                    .unwrap_or_default()),
                (_, Some(answer)) => {
                    output_schema::validate(c, name, &answer).await;
                    Ok(answer)
                }
            }
        }
    };
    let call = |args: Value| call_tool(stacks::TOOL.name, args);
    // (frames, pct) of the heaviest stack.
    let heaviest = |a: &Value| -> (Vec<String>, f64) {
        let top = &a["stacks"][0];
        let frames = top["stack"].as_str().unwrap().split(';').map(String::from);
        (frames.collect(), top["pct"].as_f64().unwrap())
    };

    for (role, user_fn, kernel_fn) in [
        (
            "sl-reader",
            "block_in_pipe_read",
            &(|f: &str| f.ends_with("pipe_read")) as &dyn Fn(&str) -> bool,
        ),
        ("sl-sleeper", "sleep_in_nanosleep", &|f: &str| {
            f == "do_nanosleep"
        }),
    ] {
        let a = call(json!({"tid": report.tids[role]})).await.unwrap();
        assert_eq!(a["unit"], "ns");
        let (frames, pct) = heaviest(&a);
        assert!(
            has(&frames, |f| f == user_fn) && has(&frames, kernel_fn) && pct >= 50.0,
            "{role}: the heaviest off-CPU stack ({pct}%) lacks {user_fn} or its kernel path: \
             {frames:?}"
        );
    }
    // The reader's timeline names its heaviest off-CPU stack, and its worst
    // wakeups the stack where each of those sleeps began: its pipe read.
    let reader = report.tids["sl-reader"];
    let in_read = |stack: &str| {
        let frames: Vec<&str> = stack.split(';').collect();
        frames.contains(&"block_in_pipe_read") && frames.iter().any(|f| f.ends_with("pipe_read"))
    };
    let a = call_tool(task_timeline::TOOL.name, json!({"tid": reader}))
        .await
        .unwrap();
    let top = &a["threads"][0]["top_off_cpu_stack"];
    assert!(
        top["stack"].as_str().is_some_and(in_read) && top["pct"].as_f64() >= Some(50.0),
        "the reader's top off-CPU stack: {top}"
    );
    let a = call_tool(scheduling_latency::TOOL.name, json!({"tid": reader}))
        .await
        .unwrap();
    let worst = a["worst"].as_array().unwrap();
    let slept_in_read = worst
        .iter()
        .filter(|w| w["slept"]["state"] == "S" && w["slept"]["stack"].as_str().is_some_and(in_read))
        .count();
    assert!(
        !worst.is_empty() && slept_in_read * 10 >= worst.len() * 8,
        "{slept_in_read} of the reader's {} worst wakeups slept in its pipe read: {worst:?}",
        worst.len()
    );

    let a = call(json!({"kind": "cpu", "pid": report.pid}))
        .await
        .unwrap();
    assert_eq!(a["unit"], "samples");
    let (frames, pct) = heaviest(&a);
    assert!(
        frames.last().map(String::as_str) == Some("spin_in_named_function") && pct >= 80.0,
        "the workload's heaviest CPU stack ({pct}%) is not the spinner's: {frames:?}"
    );

    // The whole machine's stacks with the default arguments.
    for args in [json!({}), json!({"kind": "cpu"})] {
        let a = call(args.clone()).await.unwrap();
        let bytes = a.to_string().len();
        assert!(
            bytes <= DEFAULT_ANSWER_BUDGET,
            "stacks {args}: {bytes} bytes by default, more than {DEFAULT_ANSWER_BUDGET}"
        );
        assert!(
            !a["stacks"].as_array().unwrap().is_empty(),
            "stacks {args}: none"
        );
    }

    for (args, says) in [
        (json!({"kind": "off_cpu"}), "unknown stack kind \"off_cpu\""),
        (json!({"kind": "waker"}), "it has cpu, off-cpu stacks"),
        (
            json!({"thread": 1}),
            "unknown argument \"thread\" for stacks",
        ),
    ] {
        let e = call(args.clone()).await.unwrap_err();
        assert!(e.contains(says), "stacks {args}: {e:?} lacks {says:?}");
    }
    c.cancel().await.unwrap();
}

#[test]
fn without_stacks_a_trace_has_no_stack_data() {
    if !root::require_bpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("plain.pftrace");
    let out = Command::new(BIN)
        .args(["trace", "-o"])
        .arg(&trace)
        .args(["--", "/bin/sh", "-c", "sleep 0.2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let packets = oracle::decode(&trace).packets;
    assert!(packets.len() > 3);
    assert!(!packets.iter().any(|p| {
        p.has_perf_sample()
            || p.trace_packet_defaults.is_some()
            || p.interned_data
                .as_ref()
                .is_some_and(|i| !i.frames.is_empty())
    }));
}
