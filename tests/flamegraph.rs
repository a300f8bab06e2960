//! `schedlens flamegraph` and the MCP `stacks` tool on a trace built by hand
//! with known stacks: the folded lines are exactly the stacks and weights put
//! in (off-CPU weighted by the ns until the wakeup, CPU by sample count), the
//! filters select by task and window, the SVG names the functions, and bad
//! input is one clear line.

mod output_schema;
mod tracegen;

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::TokioChildProcess;
use schedlens::analyses::{scheduling_latency, stacks, task_timeline};
use schedlens::model::stack::StackKind;
use schedlens::perfetto::proto::trace_packet::{Data, OptionalTrustedPacketSequenceId};
use schedlens::perfetto::proto::{
    Callstack, Frame, InternedData, InternedString, Mapping, PerfSample, PerfSampleDefaults,
    SchedBlockedReasonFtraceEvent, TracePacket, TracePacketDefaults, ftrace_event, perf_events,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tracegen::*;

const OFF_CPU_SEQ: u32 = 1;
const CPU_SEQ: u32 = 2;
const WAKER_SEQ: u32 = 3;
const KERNEL_SYMBOLS_SEQ: u32 = 4;
const S: i64 = 1; // prev_state: interruptible sleep
const D: i64 = 2; // prev_state: uninterruptible sleep

fn on_seq(seq: u32, mut p: TracePacket) -> TracePacket {
    p.optional_trusted_packet_sequence_id = Some(
        OptionalTrustedPacketSequenceId::TrustedPacketSequenceId(seq),
    );
    p
}

/// The functions, frames and callstacks both sequences intern: callstacks
/// outermost frame first; frame 9 did not resolve (the module and offset name it).
fn interned() -> InternedData {
    let string = |iid: u64, s: &str| InternedString {
        iid: Some(iid),
        str: Some(s.as_bytes().to_vec()),
    };
    let names = [
        "main",
        "read_pipe",
        "vfs_read",
        "schedule",
        "sleep_loop",
        "do_nanosleep",
        "spin_main",
        "spin",
    ];
    let mut frames: Vec<Frame> = (1..=names.len() as u64)
        .map(|i| Frame {
            iid: Some(i),
            function_name_id: Some(i),
            mapping_id: Some(1),
            rel_pc: Some(i * 0x10),
        })
        .collect();
    frames.push(Frame {
        iid: Some(9),
        function_name_id: None,
        mapping_id: Some(1),
        rel_pc: Some(0x40),
    });
    let callstack = |iid: u64, frame_ids: &[u64]| Callstack {
        iid: Some(iid),
        frame_ids: frame_ids.to_vec(),
    };
    InternedData {
        function_names: (1..).zip(names).map(|(i, n)| string(i, n)).collect(),
        mapping_paths: vec![string(1, "/bin/app")],
        mappings: vec![Mapping {
            iid: Some(1),
            path_string_ids: vec![1],
            ..Mapping::default()
        }],
        frames,
        callstacks: vec![
            callstack(1, &[1, 2, 3, 4]),
            callstack(2, &[1, 5, 6, 4]),
            callstack(3, &[7, 8]),
            callstack(4, &[1, 2, 9]),
        ],
        ..InternedData::default()
    }
}

/// The first packet of a kind's sequence: its timebase and interned data.
fn session(seq: u32, kind: StackKind) -> TracePacket {
    let mut p = on_seq(seq, TracePacket::default());
    p.sequence_flags = Some(1);
    p.first_packet_on_sequence = Some(true);
    p.trace_packet_defaults = Some(TracePacketDefaults {
        timestamp_clock_id: None,
        perf_sample_defaults: Some(PerfSampleDefaults {
            timebase: Some(perf_events::Timebase {
                interval: None,
                event: None,
                name: Some(kind.timebase_name().into()),
            }),
        }),
    });
    p.interned_data = Some(interned());
    p
}

fn sample(seq: u32, ts: u64, pid: u32, tid: u32, callstack: u64) -> TracePacket {
    on_seq(
        seq,
        at(
            ts,
            packet(Data::PerfSample(PerfSample {
                cpu: Some(0),
                pid: Some(pid),
                tid: Some(tid),
                callstack_iid: Some(callstack),
                ..PerfSample::default()
            })),
        ),
    )
}

/// One CPU: app (pid 100) has a reader (101) blocking in read() twice, off
/// the CPU 3000 + 1000 ns, and a sleeper (102) off it 7000 ns; spin (pid 200,
/// tid 201) runs in between and is sampled three times, the reader once.
fn write_trace(dir: &Path) -> PathBuf {
    write_packets(dir, &trace_packets(S))
}

/// The trace of [`write_trace`], the sleeper blocking in `sleeper_state`.
fn trace_packets(sleeper_state: i64) -> Vec<TracePacket> {
    let events = vec![
        switch(1_000, (0, "swapper/0", 0), (101, "reader")),
        switch(2_000, (101, "reader", S), (102, "sleeper")),
        switch(3_000, (102, "sleeper", sleeper_state), (201, "spin")),
        waking(5_000, 201, 101, "reader", 0),
        switch(6_000, (201, "spin", 0), (101, "reader")),
        switch(7_000, (101, "reader", S), (201, "spin")),
        waking(8_000, 201, 101, "reader", 0),
        waking(10_000, 201, 102, "sleeper", 0),
        switch(11_000, (201, "spin", 0), (102, "sleeper")),
        switch(12_000, (102, "sleeper", 0), (201, "spin")),
    ];
    vec![
        process_tree(
            1_000,
            &[(100, 1, "app"), (200, 1, "spin")],
            &[
                (101, 100, Some("reader")),
                (102, 100, Some("sleeper")),
                (201, 200, Some("spin")),
            ],
        ),
        bundle(0, events),
        session(OFF_CPU_SEQ, StackKind::OffCpu),
        sample(OFF_CPU_SEQ, 2_000, 100, 101, 1),
        sample(OFF_CPU_SEQ, 3_000, 100, 102, 2),
        sample(OFF_CPU_SEQ, 7_000, 100, 101, 1),
        session(CPU_SEQ, StackKind::Cpu),
        sample(CPU_SEQ, 3_500, 200, 201, 3),
        sample(CPU_SEQ, 4_000, 200, 201, 3),
        sample(CPU_SEQ, 4_500, 200, 201, 3),
        sample(CPU_SEQ, 6_500, 100, 101, 4),
    ]
}

fn write_packets(dir: &Path, packets: &[TracePacket]) -> PathBuf {
    let trace = dir.join("stacks.pftrace");
    write(&trace, &encode(packets));
    trace
}

/// Runs `schedlens flamegraph TRACE ARGS -o OUT`: (success, output file, stderr).
fn flamegraph(dir: &Path, trace: &Path, args: &[&str]) -> (bool, String, String) {
    let out = dir.join("out");
    let _ = std::fs::remove_file(&out);
    let mut all = vec!["flamegraph", trace.to_str().unwrap()];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", out.to_str().unwrap()]);
    let run = schedlens(&all, &dir.join("cache"));
    (
        run.status.success(),
        std::fs::read_to_string(&out).unwrap_or_default(),
        String::from_utf8_lossy(&run.stderr).into_owned(),
    )
}

fn folded(dir: &Path, trace: &Path, args: &[&str]) -> String {
    let mut all = vec!["--folded"];
    all.extend_from_slice(args);
    let (ok, text, err) = flamegraph(dir, trace, &all);
    assert!(ok, "{args:?}: {err}");
    text
}

#[test]
fn folded_stacks_are_the_stacks_put_in() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write_trace(dir.path());
    let d = dir.path();
    // Off-CPU (the default): ns from the block to the wakeup, summed per stack.
    assert_eq!(
        folded(d, &trace, &[]),
        "main;sleep_loop;do_nanosleep;schedule 7000\nmain;read_pipe;vfs_read;schedule 4000\n"
    );
    assert_eq!(
        folded(d, &trace, &["--kind", "cpu"]),
        "spin_main;spin 3\nmain;read_pipe;app+0x40 1\n"
    );
    // Filters: by thread, process, name, window (from the trace start at 1000 ns).
    assert_eq!(
        folded(d, &trace, &["--tid", "101"]),
        "main;read_pipe;vfs_read;schedule 4000\n"
    );
    assert_eq!(
        folded(d, &trace, &["--kind", "cpu", "--pid", "200"]),
        "spin_main;spin 3\n"
    );
    assert_eq!(
        folded(d, &trace, &["--comm", "SLEEP"]),
        "main;sleep_loop;do_nanosleep;schedule 7000\n"
    );
    assert_eq!(
        folded(d, &trace, &["--window", "5us.."]),
        "main;read_pipe;vfs_read;schedule 1000\n"
    );
}

#[test]
fn svg_names_the_functions() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write_trace(dir.path());
    let (ok, svg, err) = flamegraph(dir.path(), &trace, &["--kind", "cpu"]);
    assert!(ok, "{err}");
    assert!(svg.starts_with("<?xml") && svg.contains("<svg"), "{svg}");
    for f in ["spin_main", "spin", "read_pipe", "app+0x40"] {
        assert!(svg.contains(&format!("<title>{f} (")), "{f} missing");
    }
    assert!(
        !svg.contains("do_nanosleep"),
        "off-CPU stack in a CPU graph"
    );
    let (ok, svg, err) = flamegraph(dir.path(), &trace, &[]);
    assert!(ok, "{err}");
    assert!(svg.contains("<title>do_nanosleep (7,000 ns"), "{svg}");
}

#[test]
fn bad_input_is_one_line_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let trace = write_trace(d);
    // The error is one line (loading reports the database it loads or reuses).
    let one_error_line = |err: &str| {
        err.lines()
            .filter(|l| {
                !l.starts_with("schedlens: loading ")
                    && !l.starts_with("schedlens: using cached database ")
            })
            .count()
            == 1
    };
    let fails = |trace: &Path, args: &[&str], says: &str| {
        let (ok, _, err) = flamegraph(d, trace, args);
        assert!(!ok, "{args:?} succeeded");
        assert!(one_error_line(&err), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    };
    fails(&trace, &["--kind", "heap"], "unknown stack kind \"heap\"");
    fails(
        &trace,
        &["--kind", "waker"],
        "the trace has no waker stacks",
    );
    fails(&trace, &["--tid", "999"], "no off-cpu stacks match");
    fails(
        &trace,
        &["--window", "5..1"],
        "window start 5ns is after its end",
    );
    fails(&trace, &["--window", "soon"], "bad window");

    // A trace recorded without stacks.
    let plain = d.join("plain.pftrace");
    write(
        &plain,
        &encode(&[bundle(
            0,
            vec![switch(1_000, (0, "swapper/0", 0), (101, "reader"))],
        )]),
    );
    fails(&plain, &[], "the trace has no off-cpu stacks");

    let run = schedlens(
        &[
            "flamegraph",
            trace.to_str().unwrap(),
            "-o",
            d.join("no/such/dir/out.svg").to_str().unwrap(),
        ],
        &d.join("cache"),
    );
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(one_error_line(&err), "{err}");
    assert!(err.contains("cannot write"), "{err}");
}

type Client = RunningService<RoleClient, ()>;

/// `schedlens analyze TRACE` through rmcp's client, its caches under `cache_home`.
async fn serve(trace: &Path, cache_home: &Path) -> Client {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_schedlens"));
    cmd.arg("analyze")
        .arg(trace)
        .env("XDG_CACHE_HOME", cache_home);
    let (transport, _) = TokioChildProcess::builder(cmd)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ().serve(transport).await.unwrap()
}

/// The stacks tool's answer to `args`, or its error message.
async fn call_stacks(c: &Client, args: Value) -> Result<Value, String> {
    call(c, stacks::TOOL.name, args).await
}

/// Tool `name`'s answer to `args` (checked against its output schema), or
/// its error message.
async fn call(c: &Client, name: &'static str, args: Value) -> Result<Value, String> {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    let r: CallToolResult = c
        .call_tool(CallToolRequestParams::new(name).with_arguments(args))
        .await
        .expect("protocol error");
    if r.is_error == Some(true) {
        let text = r
            .content
            .iter()
            .find_map(|c| c.as_text().map(|t| t.text.clone()));
        return Err(text.unwrap_or_default());
    }
    let answer = r.structured_content.expect("structured content");
    output_schema::validate(c, name, &answer).await;
    Ok(answer)
}

/// (stack, weight, pct) of each listed stack.
fn listed(answer: &Value) -> Vec<(String, i64, f64)> {
    answer["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stack"].as_str().unwrap().to_string(),
                s["weight"].as_i64().unwrap(),
                s["pct"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_stacks_tool_lists_the_stacks_put_in() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write_trace(dir.path());
    let c = serve(&trace, &dir.path().join("cache")).await;
    let ok = |args: Value| {
        let c = &c;
        async move {
            call_stacks(c, args.clone())
                .await
                .unwrap_or_else(|e| panic!("{args}: {e}"))
        }
    };
    let s = |x: &str| x.to_string();

    // Off-CPU by default, heaviest first, in ns.
    let a = ok(json!({})).await;
    assert_eq!((&a["kind"], &a["unit"]), (&json!("off-cpu"), &json!("ns")));
    assert_eq!(
        (a["total"].as_i64(), a["distinct"].as_u64()),
        (Some(11_000), Some(2))
    );
    assert_eq!(a["truncated"], false);
    assert_eq!(
        listed(&a),
        [
            (s("main;sleep_loop;do_nanosleep;schedule"), 7000, 63.6),
            (s("main;read_pipe;vfs_read;schedule"), 4000, 36.4),
        ]
    );
    // CPU samples; max_depth keeps the innermost frames and says "..." for the rest.
    let a = ok(json!({"kind": "cpu", "max_depth": 2})).await;
    assert_eq!(a["unit"], "samples");
    assert_eq!(
        listed(&a),
        [
            (s("spin_main;spin"), 3, 75.0),
            (s("...;read_pipe;app+0x40"), 1, 25.0)
        ]
    );
    // Stacks the cut makes equal are merged.
    let a = ok(json!({"max_depth": "1"})).await;
    assert_eq!(listed(&a), [(s("...;schedule"), 11_000, 100.0)]);
    // The task filter and the window, as for the other tools.
    let a = ok(json!({"tid": 101})).await;
    assert_eq!(
        listed(&a),
        [(s("main;read_pipe;vfs_read;schedule"), 4000, 100.0)]
    );
    let a = ok(json!({"kind": "cpu", "pid": 200})).await;
    assert_eq!(listed(&a), [(s("spin_main;spin"), 3, 100.0)]);
    let a = ok(json!({"name": "SLEEP"})).await;
    assert_eq!(a["total"], 7000);
    let a = ok(json!({"window": {"start": "5us"}})).await;
    assert_eq!(
        listed(&a),
        [(s("main;read_pipe;vfs_read;schedule"), 1000, 100.0)]
    );
    // A limit cuts the list and says so.
    let a = ok(json!({"limit": 1})).await;
    assert_eq!((listed(&a).len(), &a["truncated"]), (1, &json!(true)));

    for (args, says) in [
        (
            json!({"kind": "heap"}),
            "unknown stack kind \"heap\": use one of off-cpu, cpu, waker",
        ),
        (
            json!({"kind": "waker"}),
            "the trace has no waker stacks (record with `schedlens trace --stacks waker`); \
             it has cpu, off-cpu stacks",
        ),
        (
            json!({"comm": "app"}),
            "unknown argument \"comm\" for stacks: valid ones: ",
        ),
        (
            json!({"max_depth": 0}),
            "max_depth must be between 1 and 1024",
        ),
        (json!({"limit": 501}), "limit must be between 1 and 500"),
        (json!({"window": "9s.."}), "trace lasts only"),
    ] {
        let e = call_stacks(&c, args.clone()).await.unwrap_err();
        assert!(e.contains(says), "{args}: {e:?} lacks {says:?}");
    }
    c.cancel().await.unwrap();
}

/// The trace of [`write_trace`] with the sleeper blocked in D in `msleep`
/// (a sched_blocked_reason after its switch, as the recorder writes it) and
/// a waker stack where spin woke it: scheduling_latency's worst wakeups say
/// why each thread slept (state, for how long, the blocking function, the
/// off-CPU stack where it blocked) and where its waker was, and
/// task_timeline gives each thread its heaviest off-CPU stack.
#[tokio::test]
async fn worst_wakeups_and_timelines_say_where_threads_blocked() {
    let mut symbols = on_seq(KERNEL_SYMBOLS_SEQ, TracePacket::default());
    symbols.sequence_flags = Some(1);
    symbols.interned_data = Some(InternedData {
        kernel_symbols: vec![InternedString {
            iid: Some(1),
            str: Some(b"msleep".to_vec()),
        }],
        ..InternedData::default()
    });
    let reason = ev(
        3_001,
        102,
        ftrace_event::Event::SchedBlockedReason(SchedBlockedReasonFtraceEvent {
            pid: Some(102),
            caller: Some(1),
            io_wait: Some(0),
        }),
    );
    let mut packets = trace_packets(D);
    packets.extend([
        symbols,
        on_seq(KERNEL_SYMBOLS_SEQ, bundle(0, vec![reason])),
        session(WAKER_SEQ, StackKind::Waker),
        sample(WAKER_SEQ, 10_000, 200, 201, 3),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let trace = write_packets(dir.path(), &packets);
    let c = serve(&trace, &dir.path().join("cache")).await;

    let a = call(&c, scheduling_latency::TOOL.name, json!({}))
        .await
        .unwrap();
    let worst = a["worst"].as_array().unwrap();
    let case = |w: &Value| {
        (
            w["task"]["tid"].as_i64().unwrap(),
            w["latency"]["ns"].as_i64().unwrap(),
            w["slept"].clone(),
            w.get("waker_stack").cloned(),
        )
    };
    assert_eq!(
        worst.iter().map(case).collect::<Vec<_>>(),
        [
            // Woken at 5000 after blocking in read() at 2000; no waker stack there.
            (
                101,
                1000,
                json!({"state": "S", "dur": {"ns": 3000, "human": "3us"},
                       "stack": "main;read_pipe;vfs_read;schedule"}),
                None,
            ),
            (
                102,
                1000,
                json!({"state": "D", "dur": {"ns": 7000, "human": "7us"},
                       "blocked_function": "msleep",
                       "stack": "main;sleep_loop;do_nanosleep;schedule"}),
                Some(json!("spin_main;spin")),
            ),
        ]
    );

    let top = |a: &Value| {
        a["threads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["tid"].as_i64().unwrap(),
                    t.get("top_off_cpu_stack").cloned(),
                )
            })
            .collect::<Vec<_>>()
    };
    let stack =
        |s: &str, weight: i64, pct: f64| Some(json!({"stack": s, "weight": weight, "pct": pct}));
    let a = call(&c, task_timeline::TOOL.name, json!({"pid": 100}))
        .await
        .unwrap();
    assert_eq!(
        top(&a),
        [
            (100, None),
            (101, stack("main;read_pipe;vfs_read;schedule", 4000, 100.0)),
            (
                102,
                stack("main;sleep_loop;do_nanosleep;schedule", 7000, 100.0)
            ),
        ]
    );
    // Only the blocks in the window (from 5 us after the start: the reader's second).
    let a = call(
        &c,
        task_timeline::TOOL.name,
        json!({"tid": 101, "window": "5us.."}),
    )
    .await
    .unwrap();
    assert_eq!(
        top(&a),
        [(101, stack("main;read_pipe;vfs_read;schedule", 1000, 100.0))]
    );
    // A thread that never blocked (app's main thread, spin) has none.
    let a = call(&c, task_timeline::TOOL.name, json!({"tid": 201}))
        .await
        .unwrap();
    assert_eq!(top(&a), [(201, None)]);
    c.cancel().await.unwrap();
}
