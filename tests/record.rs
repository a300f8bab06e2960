//! End-to-end recording: run `schedlens trace` for real around a known
//! workload (this test binary re-executed in the "workload" role), then decode
//! the file with Perfetto's official protos and check what the kernel did.
//! Needs root; see `require_bpf`.
#![cfg(feature = "record")]

use perfetto_protos::ftrace_event::FtraceEvent;
use perfetto_protos::ftrace_event::ftrace_event::Event as Fe;
use perfetto_protos::trace::Trace;
use perfetto_protos::trace_packet::TracePacket;
use protobuf::Message as _;
use protobuf::UnknownValueRef;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_schedlens");
/// Selects the workload role when this binary is re-executed.
const ROLE_ENV: &str = "SCHEDLENS_TEST_ROLE";
const REPORT_ENV: &str = "SCHEDLENS_TEST_REPORT";
const CHILDREN: usize = 8;
const PINGPONGS: usize = 2000;
const SLEEPERS: usize = 3;

/// True when the test may run. Outside CI and not root it skips loudly; in CI
/// (CI=true) a recorder that cannot load must fail the test, never skip.
fn require_bpf() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but not running as root: recording tests must run, not skip");
    }
    eprintln!(
        "\n!!! SKIPPED: recording tests need root (run: sudo -E cargo test --test record) !!!\n"
    );
    false
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

// ---- the workload (runs in the re-executed test binary) ---------------------

/// Not a real test: the entry point of the workload role. Does nothing unless
/// ROLE_ENV selects it.
#[test]
fn workload_entry() {
    if std::env::var(ROLE_ENV).as_deref() != Ok("workload") {
        return;
    }
    let report = std::env::var(REPORT_ENV).expect("report path");
    let mut out = String::new();
    out += &format!("process {} {}\n", std::process::id(), gettid());
    for _ in 0..CHILDREN {
        let child = Command::new("/bin/true").spawn().expect("spawn /bin/true");
        out += &format!("child {}\n", child.id());
        let mut child = child;
        assert!(child.wait().unwrap().success());
    }
    // Two threads ping-ponging a byte over pipes.
    let mut a = [0i32; 2];
    let mut b = [0i32; 2];
    // SAFETY: valid arrays for pipe().
    unsafe {
        assert_eq!(libc::pipe(a.as_mut_ptr()), 0);
        assert_eq!(libc::pipe(b.as_mut_ptr()), 0);
    }
    let bounce = move |rd: i32, wr: i32, first: bool| {
        let mut byte = [0u8; 1];
        for i in 0..PINGPONGS {
            // SAFETY: fds are open pipe ends, byte is 1 byte.
            unsafe {
                if first || i > 0 {
                    assert_eq!(libc::write(wr, byte.as_ptr().cast(), 1), 1);
                }
                assert_eq!(libc::read(rd, byte.as_mut_ptr().cast(), 1), 1);
            }
        }
        if !first {
            // SAFETY: as above.
            unsafe { assert_eq!(libc::write(wr, byte.as_ptr().cast(), 1), 1) };
        }
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    for (name, rd, wr, first) in [
        ("sl-ping", b[0], a[1], true),
        ("sl-pong", a[0], b[1], false),
    ] {
        let tx = tx.clone();
        threads.push(
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    tx.send(format!("thread {}\n", gettid())).unwrap();
                    bounce(rd, wr, first);
                })
                .unwrap(),
        );
    }
    for i in 0..SLEEPERS {
        let tx = tx.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("sl-sleep{i}"))
                .spawn(move || {
                    tx.send(format!("sleeper {}\n", gettid())).unwrap();
                    for _ in 0..5 {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
                .unwrap(),
        );
    }
    drop(tx);
    for t in threads {
        t.join().unwrap();
    }
    out.extend(rx);
    std::fs::write(report, out).unwrap();
}

/// What the workload reported about itself.
#[derive(Debug, Default)]
struct Report {
    tgid: i32,
    /// The thread that spawned the children.
    spawner: i32,
    children: Vec<i32>,
    pingpong: Vec<i32>,
    sleepers: Vec<i32>,
}

fn read_report(path: &Path) -> Report {
    let mut r = Report::default();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let n = |i: usize| f[i].parse::<i32>().unwrap();
        match f[0] {
            "process" => (r.tgid, r.spawner) = (n(1), n(2)),
            "child" => r.children.push(n(1)),
            "thread" => r.pingpong.push(n(1)),
            "sleeper" => r.sleepers.push(n(1)),
            other => panic!("bad report line {other}"),
        }
    }
    r
}

// ---- running the recorder ---------------------------------------------------

struct Tmp(PathBuf);
impl Tmp {
    fn new(tag: &str) -> Tmp {
        let dir = std::env::temp_dir().join(format!("schedlens-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Tmp(dir)
    }
}
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `schedlens trace -o <dir>/t.pftrace <extra> -- <this binary as workload>`.
fn record_workload(dir: &Path, extra: &[&str]) -> (PathBuf, Report, Output) {
    let trace = dir.join("t.pftrace");
    let report = dir.join("report");
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(BIN)
        .args(["trace", "-o"])
        .arg(&trace)
        .args(extra)
        .arg("--")
        .arg(exe)
        .args([
            "workload_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_ENV, "workload")
        .env(REPORT_ENV, &report)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "schedlens trace failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (trace, read_report(&report), out)
}

// ---- decoding ---------------------------------------------------------------

/// Splits `Trace.packet` records; stops at an incomplete one (a cut file).
/// Also returns whether the whole buffer was consumed.
fn records(mut buf: &[u8]) -> (Vec<&[u8]>, bool) {
    let mut out = Vec::new();
    while !buf.is_empty() {
        if buf[0] != 0x0a {
            return (out, false);
        }
        let mut len = 0usize;
        let mut i = 1;
        loop {
            let Some(&b) = buf.get(i) else {
                return (out, false);
            };
            len |= usize::from(b & 0x7f) << (7 * (i - 1));
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let Some(body) = buf.get(i..i + len) else {
            return (out, false);
        };
        out.push(body);
        buf = &buf[i + len..];
    }
    (out, true)
}

/// Every packet, zstd chunks (TracePacket field 133, newer than these protos)
/// expanded; and whether the file ended on a packet boundary.
fn decode(path: &Path) -> (Vec<TracePacket>, bool) {
    let raw = std::fs::read(path).unwrap();
    let (recs, complete) = records(&raw);
    let mut packets = Vec::new();
    for rec in recs {
        let p = TracePacket::parse_from_bytes(rec).expect("packet parses");
        match p.special_fields.unknown_fields().get(133) {
            Some(UnknownValueRef::LengthDelimited(frame)) => {
                let inner = zstd::decode_all(frame).expect("zstd chunk");
                packets.extend(
                    Trace::parse_from_bytes(&inner)
                        .expect("chunk parses")
                        .packet,
                );
            }
            _ => packets.push(p),
        }
    }
    (packets, complete)
}

#[derive(Debug, Clone)]
struct Sw {
    ts: u64,
    /// None for a compact switch: prev is the CPU's previous next.
    prev_pid: Option<i32>,
    prev_state: i64,
    next_pid: i32,
}

/// What the ftrace bundles hold.
struct Bundles {
    /// Per CPU: switches in stream order (within a bundle ordered by time, as
    /// a bundle does not record how full and compact events interleave).
    switches: BTreeMap<u32, Vec<Sw>>,
    /// Every full event with its cpu.
    events: Vec<(u32, FtraceEvent)>,
    lost: u64,
}

fn bundles(packets: &[TracePacket]) -> Bundles {
    let mut per_cpu: BTreeMap<u32, Vec<Sw>> = BTreeMap::new();
    let mut events = Vec::new();
    let mut lost = 0;
    for p in packets.iter().filter(|p| p.has_ftrace_events()) {
        let b = p.ftrace_events();
        lost += b.lost_events() as u64;
        let mut sws = Vec::new();
        for e in &b.event {
            if let Some(Fe::SchedSwitch(s)) = &e.event {
                sws.push(Sw {
                    ts: e.timestamp(),
                    prev_pid: Some(s.prev_pid()),
                    prev_state: s.prev_state(),
                    next_pid: s.next_pid(),
                });
            }
            events.push((b.cpu(), e.clone()));
        }
        let c = &b.compact_sched;
        let mut ts = 0u64;
        for k in 0..c.switch_timestamp.len() {
            let next = ts.wrapping_add(c.switch_timestamp[k]);
            assert!(
                k == 0 || next >= ts,
                "compact switch time went back on cpu {}",
                b.cpu()
            );
            ts = next;
            sws.push(Sw {
                ts,
                prev_pid: None,
                prev_state: c.switch_prev_state[k],
                next_pid: c.switch_next_pid[k],
            });
        }
        sws.sort_by_key(|s| s.ts);
        per_cpu.entry(b.cpu()).or_default().extend(sws);
    }
    Bundles {
        switches: per_cpu,
        events,
        lost,
    }
}

/// Checks per-CPU continuity: each switch's prev is the previous switch's
/// next, and time never goes back. Returns how often each pid was switched in.
fn check_switches(per_cpu: &BTreeMap<u32, Vec<Sw>>) -> HashMap<i32, usize> {
    let mut switched_in = HashMap::new();
    let mut mismatches = 0;
    let mut total = 0;
    for (cpu, sws) in per_cpu {
        let mut last: Option<&Sw> = None;
        for s in sws {
            total += 1;
            if let Some(l) = last {
                assert!(
                    s.ts >= l.ts,
                    "cpu {cpu}: time went back {} -> {}",
                    l.ts,
                    s.ts
                );
                if let Some(p) = s.prev_pid {
                    if p != l.next_pid {
                        mismatches += 1;
                    }
                }
            }
            assert!(
                [0, 1, 2, 4, 8, 0x10, 0x20, 0x40, 0x80, 0x100].contains(&s.prev_state),
                "cpu {cpu}: prev_state {:#x}",
                s.prev_state
            );
            *switched_in.entry(s.next_pid).or_insert(0) += 1;
            last = Some(s);
        }
    }
    assert!(total > 1000, "only {total} switches");
    assert_eq!(
        mismatches, 0,
        "switches whose prev is not the previous next"
    );
    switched_in
}

fn check_workload_trace(trace: &Path, r: &Report) {
    let (packets, complete) = decode(trace);
    assert!(complete, "the file does not end on a packet boundary");
    assert!(
        packets.iter().any(|p| p.has_process_tree()),
        "no ProcessTree"
    );
    assert!(packets.iter().any(|p| p.has_system_info()), "no SystemInfo");
    let Bundles {
        switches: per_cpu,
        events,
        lost,
    } = bundles(&packets);
    assert_eq!(lost, 0, "lost events in bundles");
    let switched_in = check_switches(&per_cpu);

    let find = |what: &str, f: &dyn Fn(&FtraceEvent) -> bool| {
        events
            .iter()
            .find(|(_, e)| f(e))
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| panic!("no {what}"))
    };
    for &child in &r.children {
        let fork = find(
            &format!("fork of {child}"),
            &|e| matches!(&e.event, Some(Fe::SchedProcessFork(f)) if f.child_pid() == child),
        );
        let Some(Fe::SchedProcessFork(f)) = &fork.event else {
            unreachable!()
        };
        assert_eq!(f.parent_pid(), r.spawner, "fork parent of {child}");
        let nt = find(
            &format!("task_newtask of {child}"),
            &|e| matches!(&e.event, Some(Fe::TaskNewtask(t)) if t.pid() == child),
        );
        let Some(Fe::TaskNewtask(t)) = &nt.event else {
            unreachable!()
        };
        assert_eq!(t.clone_flags() & 0x10000, 0, "a process, not a thread");
        assert_eq!(
            nt.pid() as i32,
            r.spawner,
            "task_newtask emitted by the parent"
        );
        let exec = find(
            &format!("exec of {child}"),
            &|e| matches!(&e.event, Some(Fe::SchedProcessExec(x)) if x.pid() == child),
        );
        let Some(Fe::SchedProcessExec(x)) = &exec.event else {
            unreachable!()
        };
        assert_eq!(x.filename(), "/bin/true");
        let exit = find(
            &format!("exit of {child}"),
            &|e| matches!(&e.event, Some(Fe::SchedProcessExit(x)) if x.pid() == child),
        );
        let Some(Fe::SchedProcessExit(x)) = &exit.event else {
            unreachable!()
        };
        assert_eq!(x.tgid(), child);
        assert_eq!(x.comm(), "true", "comm after exec");
    }
    for &tid in r.pingpong.iter().chain(&r.sleepers) {
        let nt = find(
            &format!("task_newtask of thread {tid}"),
            &|e| matches!(&e.event, Some(Fe::TaskNewtask(t)) if t.pid() == tid),
        );
        let Some(Fe::TaskNewtask(t)) = &nt.event else {
            unreachable!()
        };
        assert_ne!(
            t.clone_flags() & 0x10000,
            0,
            "CLONE_THREAD for thread {tid}"
        );
        let exit = find(
            &format!("exit of thread {tid}"),
            &|e| matches!(&e.event, Some(Fe::SchedProcessExit(x)) if x.pid() == tid),
        );
        let Some(Fe::SchedProcessExit(x)) = &exit.event else {
            unreachable!()
        };
        assert_eq!(x.tgid(), r.tgid);
    }
    for &tid in &r.pingpong {
        let n = switched_in.get(&tid).copied().unwrap_or(0);
        assert!(
            n >= PINGPONGS,
            "thread {tid} switched in {n} times, expected >= {PINGPONGS}"
        );
    }
}

// ---- tests ------------------------------------------------------------------

#[test]
fn records_a_known_workload() {
    if !require_bpf() {
        return;
    }
    let tmp = Tmp::new("workload");
    let (trace, report, out) = record_workload(&tmp.0, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("0 dropped"), "summary: {stderr}");
    check_workload_trace(&trace, &report);
}

#[test]
fn legacy_switch_variant_records_the_same() {
    if !require_bpf() {
        return;
    }
    let tmp = Tmp::new("legacy");
    let (trace, report, _) = record_workload(&tmp.0, &["--legacy-switch", "--shards", "1"]);
    check_workload_trace(&trace, &report);
}

/// Starts a 30 s recording, waits `after`, sends `sig`, returns the output.
fn interrupt(dir: &Path, sig: i32, after: Duration) -> (PathBuf, std::process::ExitStatus) {
    let trace = dir.join("t.pftrace");
    let mut child = Command::new(BIN)
        .args(["trace", "-d", "30s", "-o"])
        .arg(&trace)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    // SAFETY: kill with a pid we own.
    unsafe { libc::kill(child.id() as i32, sig) };
    let start = Instant::now();
    let status = child.wait().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "stopping took too long"
    );
    (trace, status)
}

#[test]
fn sigint_and_sigterm_leave_a_complete_file() {
    if !require_bpf() {
        return;
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let tmp = Tmp::new(&format!("sig{sig}"));
        let (trace, status) = interrupt(&tmp.0, sig, Duration::from_millis(1500));
        assert!(status.success(), "signal {sig}: {status:?}");
        let (packets, complete) = decode(&trace);
        assert!(complete, "signal {sig}: file cut");
        assert!(packets.iter().any(|p| p.has_ftrace_events()));
        assert!(packets.iter().any(|p| p.has_process_tree()));
        // The epilogue (drop statistics) is written last.
        assert!(
            packets.iter().any(|p| p.has_ftrace_stats()),
            "signal {sig}: no epilogue"
        );
    }
}

#[test]
fn sigkill_leaves_a_file_readable_up_to_the_last_chunk() {
    if !require_bpf() {
        return;
    }
    let tmp = Tmp::new("sigkill");
    // Chunks are flushed about once a second.
    let (trace, status) = interrupt(&tmp.0, libc::SIGKILL, Duration::from_millis(2600));
    assert!(!status.success());
    let (packets, _) = decode(&trace);
    assert!(
        packets.iter().any(|p| p.has_ftrace_events()),
        "no event chunk survived a SIGKILL after 2.6 s"
    );
}

#[test]
fn unwritable_output_fails_before_loading_bpf() {
    if !require_bpf() {
        return;
    }
    let start = Instant::now();
    let out = Command::new(BIN)
        .args([
            "trace",
            "-d",
            "1s",
            "-o",
            "/proc/schedlens-no-such-dir/t.pftrace",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot create the trace file"), "{stderr}");
    assert!(stderr.contains("-o"), "says what to do: {stderr}");
    assert!(!stderr.contains("libbpf"), "BPF was touched: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn bad_flag_values_fail_clearly() {
    for (args, needle) in [
        (&["--ring-size", "3M"][..], "power of two"),
        (&["--ring-size", "lots"], "not a size"),
        (&["-d", "0s"], "more than zero"),
        (&["-d", "soon"], "examples"),
        (&["--shards", "0"], "1 to 64"),
        (&["--pid", "abc"], "process id"),
        (&["--comm", "a-name-longer-than-15"], "1 to 15 bytes"),
        (&["--compress", "lz4"], "zstd"),
    ] {
        let out = Command::new(BIN).arg("trace").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn a_command_that_cannot_run_fails_with_a_complete_file() {
    if !require_bpf() {
        return;
    }
    let tmp = Tmp::new("nocmd");
    let trace = tmp.0.join("t.pftrace");
    let out = Command::new(BIN)
        .args(["trace", "-o"])
        .arg(&trace)
        .args(["--", "/nonexistent/schedlens-cmd"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("could not run /nonexistent/schedlens-cmd"),
        "{stderr}"
    );
    assert!(decode(&trace).1, "file incomplete");
}

#[test]
fn comm_filter_keeps_only_matching_tasks() {
    if !require_bpf() {
        return;
    }
    let tmp = Tmp::new("comm");
    let trace = tmp.0.join("t.pftrace");
    let out = Command::new(BIN)
        .args(["trace", "--comm", "true", "-o"])
        .arg(&trace)
        .args([
            "--",
            "sh",
            "-c",
            "/bin/true; /bin/true; /bin/true; sleep 0.05",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (packets, complete) = decode(&trace);
    assert!(complete);
    let b = bundles(&packets);
    let mut execs = 0;
    for (_, e) in &b.events {
        match &e.event {
            // Matched at exec: the new name is "true".
            Some(Fe::SchedProcessExec(x)) => {
                assert_eq!(x.filename(), "/bin/true");
                execs += 1;
            }
            Some(Fe::SchedProcessExit(x)) => {
                assert_eq!(x.comm(), "true", "exit of an unmatched task")
            }
            _ => {}
        }
    }
    assert_eq!(execs, 3);
    // Unfiltered, a second of a busy system has far more switches than this.
    let switches: usize = b.switches.values().map(Vec::len).sum();
    assert!(
        switches < 200,
        "{switches} switches: the filter did not apply"
    );
}
