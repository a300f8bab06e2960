//! End-to-end recording: run `schedlens trace` for real around a known
//! workload (this test binary re-executed in the "workload" role), then decode
//! the file with Perfetto's official protos and check what the kernel did.
//! Needs root; see `require_bpf`.
#![cfg(feature = "record")]

mod oracle;
mod root;

use perfetto_protos::ftrace_event::FtraceEvent;
use perfetto_protos::ftrace_event::ftrace_event::Event as Fe;
use perfetto_protos::trace_packet::TracePacket;
use protobuf::UnknownValueRef;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_schedlens");
/// Selects the workload role when this binary is re-executed.
const ROLE_ENV: &str = "SCHEDLENS_TEST_ROLE";
const REPORT_ENV: &str = "SCHEDLENS_TEST_REPORT";
/// Round trips per thread pair in the storm role.
const ROUNDS_ENV: &str = "SCHEDLENS_TEST_ROUNDS";
const CHILDREN: usize = 8;
const PINGPONGS: usize = 2000;
const SLEEPERS: usize = 3;

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
    // Both on one CPU: each round trip then needs a switch to the other
    // thread and back. On two CPUs the reply can arrive before the read,
    // which then does not block, and a thread switches in fewer times.
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() }.max(0) as usize;
    let pin = move || {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; the call only
        // reads it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            assert_eq!(
                libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
                0
            );
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
                    pin();
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

/// Not a real test: the storm role. Thread pairs ping-pong bytes over pipes
/// as fast as they can, many more switches than a 64 KiB ring holds while
/// its consumer waits for a CPU.
#[test]
fn storm_entry() {
    if std::env::var(ROLE_ENV).as_deref() != Ok("storm") {
        return;
    }
    let rounds: u64 = std::env::var(ROUNDS_ENV).map_or(20_000, |v| v.parse().unwrap());
    let pairs: Vec<_> = (0..4)
        .map(|_| {
            let (mut a, mut b) = ([0i32; 2], [0i32; 2]);
            // SAFETY: valid arrays for pipe().
            unsafe {
                assert_eq!(libc::pipe(a.as_mut_ptr()), 0);
                assert_eq!(libc::pipe(b.as_mut_ptr()), 0);
            }
            let side = move |rd: i32, wr: i32| {
                move || {
                    let mut byte = [0u8; 1];
                    for _ in 0..rounds {
                        // SAFETY: open pipe ends, a 1-byte buffer.
                        unsafe {
                            assert_eq!(libc::write(wr, byte.as_ptr().cast(), 1), 1);
                            assert_eq!(libc::read(rd, byte.as_mut_ptr().cast(), 1), 1);
                        }
                    }
                }
            };
            [
                std::thread::spawn(side(a[0], b[1])),
                std::thread::spawn(side(b[0], a[1])),
            ]
        })
        .collect();
    for t in pairs.into_iter().flatten() {
        t.join().unwrap();
    }
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

/// Every packet (zstd chunks expanded) and whether the file ended on a
/// packet boundary.
fn decode(path: &Path) -> (Vec<TracePacket>, bool) {
    let d = oracle::decode(path);
    (d.packets, d.complete)
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
    /// The pids of compact sched_waking events.
    compact_wakings: Vec<i32>,
    lost: u64,
}

fn bundles(packets: &[TracePacket]) -> Bundles {
    let mut per_cpu: BTreeMap<u32, Vec<Sw>> = BTreeMap::new();
    let mut events = Vec::new();
    let mut compact_wakings = Vec::new();
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
        compact_wakings.extend(&c.waking_pid);
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
        compact_wakings,
        lost,
    }
}

/// Pids the kernel never reports switching out: switched in, never the prev
/// of a switch (full, or implied by a compact one), never seen exiting (an
/// exiting task always switches out for the last time in do_task_dead).
/// The test VMs' kernel never fires sched_switch with prev = a thread of PID 1
/// (the sandbox agent): ftrace shows `==> next_pid=68` and never
/// `prev_pid=68`. The switch after such a task ran names another prev; the
/// writer makes it a full sched_switch so readers resync. See
/// tests/record_bpf.rs `hidden_tasks` for the evidence.
fn hidden_pids(per_cpu: &BTreeMap<u32, Vec<Sw>>, events: &[(u32, FtraceEvent)]) -> Vec<i32> {
    let mut switched_in = std::collections::HashSet::new();
    let mut switched_out = std::collections::HashSet::new();
    for sws in per_cpu.values() {
        let mut last: Option<&Sw> = None;
        for s in sws {
            if let Some(p) = s.prev_pid.or(last.map(|l| l.next_pid)) {
                switched_out.insert(p);
            }
            switched_in.insert(s.next_pid);
            last = Some(s);
        }
    }
    for (_, e) in events {
        if let Some(Fe::SchedProcessExit(x)) = &e.event {
            switched_out.insert(x.pid());
        }
    }
    switched_in
        .into_iter()
        .filter(|p| !switched_out.contains(p))
        .collect()
}

/// Checks per-CPU continuity: each switch's prev is the previous switch's
/// next (unless the kernel hides that task's switches: `hidden`), and time
/// never goes back. Returns how often each pid was switched in.
fn check_switches(per_cpu: &BTreeMap<u32, Vec<Sw>>, hidden: &[i32]) -> HashMap<i32, usize> {
    let mut switched_in = HashMap::new();
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
                    assert!(
                        p == l.next_pid || hidden.contains(&l.next_pid),
                        "cpu {cpu} at {}: prev {p} is not the previous next {}, whose \
                         switches the kernel does report: a switch was lost",
                        s.ts,
                        l.next_pid
                    );
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
    switched_in
}

/// The recorder stats count each event type as the consumers received it;
/// a recording without drops writes every one of them.
fn check_event_counts(packets: &[TracePacket]) {
    let Bundles {
        switches: per_cpu,
        events,
        compact_wakings,
        ..
    } = bundles(packets);
    let compact_wakings = compact_wakings.len();
    let (_, epilogue) = lost_packets(packets);
    let names: Vec<&str> = epilogue.events.iter().map(|c| c.name()).collect();
    assert_eq!(
        names,
        [
            "sched_switch",
            "sched_waking",
            "sched_wakeup_new",
            "sched_blocked_reason",
            "sched_process_fork",
            "sched_process_exec",
            "sched_process_exit",
            "sched_process_free",
            "task_rename",
            "schedlens_task_info",
            "schedlens_forget",
            "irq_handler_entry",
            "irq_handler_exit",
            "softirq_entry",
            "softirq_exit",
            "sched_migrate_task",
            "cpu_idle",
            "cpu_frequency",
            "cpu_frequency_limits",
            "ipi_send_cpu",
            "ipi_send_cpumask",
            "workqueue_queue_work",
            "workqueue_execute_start",
            "workqueue_execute_end"
        ]
    );
    let counted = |name: &str| {
        epilogue
            .events
            .iter()
            .find(|c| c.name() == name)
            .map_or(0, |c| c.value())
    };
    let written = |f: fn(&Fe) -> bool| {
        events
            .iter()
            .filter(|(_, e)| e.event.as_ref().is_some_and(f))
            .count() as u64
    };
    let switches: usize = per_cpu.values().map(Vec::len).sum();
    assert_eq!(counted("sched_switch"), switches as u64);
    assert_eq!(
        counted("sched_waking"),
        written(|e| matches!(e, Fe::SchedWaking(_))) + compact_wakings as u64
    );
    assert_eq!(
        counted("sched_wakeup_new"),
        written(|e| matches!(e, Fe::SchedWakeupNew(_)))
    );
    assert_eq!(
        counted("sched_blocked_reason"),
        written(|e| matches!(e, Fe::SchedBlockedReason(_)))
    );
    assert_eq!(
        counted("sched_process_exit"),
        written(|e| matches!(e, Fe::SchedProcessExit(_)))
    );
    assert_eq!(
        counted("sched_process_fork"),
        written(|e| matches!(e, Fe::SchedProcessFork(_)))
    );
    assert_eq!(
        counted("irq_handler_entry"),
        written(|e| matches!(e, Fe::IrqHandlerEntry(_)))
    );
    assert_eq!(
        counted("irq_handler_exit"),
        written(|e| matches!(e, Fe::IrqHandlerExit(_)))
    );
    assert_eq!(
        counted("softirq_entry"),
        written(|e| matches!(e, Fe::SoftirqEntry(_)))
    );
    assert_eq!(
        counted("softirq_exit"),
        written(|e| matches!(e, Fe::SoftirqExit(_)))
    );
    assert_eq!(
        counted("sched_migrate_task"),
        written(|e| matches!(e, Fe::SchedMigrateTask(_)))
    );
    assert_eq!(
        counted("cpu_idle"),
        written(|e| matches!(e, Fe::CpuIdle(_)))
    );
    // The opt-in groups are not recorded by default.
    for name in &names[names.len() - 5..] {
        assert_eq!(counted(name), 0, "{name}");
    }
    check_interrupts_nest(&events);
}

/// Per CPU, IRQ handlers and softirqs each enter and exit in turn, exits
/// naming their entry's IRQ or softirq (a handler cut by the recording's
/// start or end leaves one unpaired edge), and softirqs ran (the workload's
/// forks and exits free tasks through RCU callbacks, run in softirq).
/// The entry programs attach before the exit programs, so until a CPU's
/// first exit an entry may lack its exit: only after one is nesting wrong.
fn check_interrupts_nest(events: &[(u32, FtraceEvent)]) {
    let mut irq_open: BTreeMap<u32, Option<i32>> = BTreeMap::new();
    let mut softirq_open: BTreeMap<u32, Option<u32>> = BTreeMap::new();
    let mut irq_exited: BTreeSet<u32> = BTreeSet::new();
    let mut softirq_exited: BTreeSet<u32> = BTreeSet::new();
    let mut softirqs_paired = 0;
    for (cpu, e) in events {
        match &e.event {
            Some(Fe::IrqHandlerEntry(x)) => {
                let open = irq_open.entry(*cpu).or_default();
                if irq_exited.contains(cpu) {
                    assert_eq!(
                        *open,
                        None,
                        "cpu {cpu}: IRQ {} entered inside another",
                        x.irq()
                    );
                }
                assert!(
                    !x.name().is_empty(),
                    "cpu {cpu}: IRQ {} has no name",
                    x.irq()
                );
                *open = Some(x.irq());
            }
            Some(Fe::IrqHandlerExit(x)) => {
                irq_exited.insert(*cpu);
                if let Some(Some(irq)) = irq_open.insert(*cpu, None) {
                    assert_eq!(irq, x.irq(), "cpu {cpu}: exit of another IRQ");
                }
            }
            Some(Fe::SoftirqEntry(x)) => {
                let open = softirq_open.entry(*cpu).or_default();
                if softirq_exited.contains(cpu) {
                    assert_eq!(*open, None, "cpu {cpu}: softirq {} inside another", x.vec());
                }
                *open = Some(x.vec());
            }
            Some(Fe::SoftirqExit(x)) => {
                softirq_exited.insert(*cpu);
                if let Some(Some(vec)) = softirq_open.insert(*cpu, None) {
                    assert_eq!(vec, x.vec(), "cpu {cpu}: exit of another softirq");
                    softirqs_paired += 1;
                }
            }
            _ => {}
        }
    }
    assert!(softirqs_paired > 0, "no softirq entered and exited");
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
        ..
    } = bundles(&packets);
    assert_eq!(lost, 0, "lost events in bundles");
    let hidden = hidden_pids(&per_cpu, &events);
    // The excuse must not cover the workload: the kernel reports its switches.
    for &tid in [r.spawner].iter().chain(&r.pingpong).chain(&r.sleepers) {
        assert!(!hidden.contains(&tid), "{tid} switched in, never out");
    }
    let switched_in = check_switches(&per_cpu, &hidden);
    check_event_counts(&packets);

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
        assert_eq!(
            t.clone_flags() & libc::CLONE_THREAD as u64,
            0,
            "a process, not a thread"
        );
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
            t.clone_flags() & libc::CLONE_THREAD as u64,
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
    // Each switch-out of a task the kernel hides (PID 1's threads here) is
    // the hidden switch-in of whatever ran next, one per run of such a task.
    let hidden_runs: usize = hidden
        .iter()
        .map(|t| switched_in.get(t).copied().unwrap_or(0))
        .sum();
    for &tid in &r.pingpong {
        let n = switched_in.get(&tid).copied().unwrap_or(0);
        assert!(
            n + hidden_runs >= PINGPONGS,
            "thread {tid} switched in {n} times (and {hidden_runs} switch-ins the kernel \
             hides), expected >= {PINGPONGS}"
        );
    }
}

// ---- tests ------------------------------------------------------------------

#[test]
fn records_a_known_workload() {
    if !root::require_bpf() {
        return;
    }
    let tmp = Tmp::new("workload");
    let (trace, report, out) = record_workload(&tmp.0, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("0 dropped"), "summary: {stderr}");
    assert!(
        stderr.contains("ring buffers: peak fill"),
        "summary: {stderr}"
    );
    check_workload_trace(&trace, &report);
}

#[test]
fn legacy_switch_variant_records_the_same() {
    if !root::require_bpf() {
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
    if !root::require_bpf() {
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
    if !root::require_bpf() {
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
    if !root::require_bpf() {
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
fn a_command_that_cannot_run_fails_without_a_trace() {
    if !root::require_bpf() {
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
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    // Nothing the user asked for was recorded: no file to mistake for it.
    assert!(!trace.exists(), "a trace was left behind: {stderr}");
}

#[test]
fn the_exit_status_is_the_commands() {
    if !root::require_bpf() {
        return;
    }
    for (script, code) in [
        ("exit 0", 0),
        ("exit 3", 3),
        ("exit 255", 255),
        // Killed by SIGTERM: 128 + 15, as a shell reports it.
        ("kill -TERM $$", 143),
    ] {
        let tmp = Tmp::new("status");
        let trace = tmp.0.join("t.pftrace");
        let out = Command::new(BIN)
            .args(["trace", "-o"])
            .arg(&trace)
            .args(["--", "sh", "-c", script])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{script}: {stderr}");
        assert!(
            !stderr.contains("schedlens: "),
            "{script}: an error: {stderr}"
        );
        if code != 0 {
            assert!(stderr.contains("the trace in"), "{script}: {stderr}");
        }
        // The recording itself is complete whatever the command returned.
        let (packets, complete) = decode(&trace);
        assert!(complete, "{script}: file incomplete");
        assert!(
            packets.iter().any(|p| p.has_ftrace_stats()),
            "{script}: no epilogue"
        );
    }
}

/// A pid no task has now.
fn unused_pid() -> i32 {
    (999_999..)
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .unwrap()
}

#[test]
fn a_filter_that_matches_no_task_fails_unless_told_to_wait() {
    if !root::require_bpf() {
        return;
    }
    let pid = unused_pid().to_string();
    let name = format!("slnone{}", std::process::id());
    for args in [
        &["--pid", &pid][..],
        &["--tgid", &pid],
        &["--comm", &name],
        // One value that matches (this test process) does not excuse another.
        &["--pid", &std::process::id().to_string(), "--pid", &pid],
    ] {
        let tmp = Tmp::new("nomatch");
        let trace = tmp.0.join("t.pftrace");
        let out = Command::new(BIN)
            .args(["trace", "-d", "5s", "-o"])
            .arg(&trace)
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        let value = args.last().unwrap();
        assert!(
            stderr.contains(&format!("{} {value} matches no", args[args.len() - 2])),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("--wait-for-task"), "{args:?}: {stderr}");
        assert!(!trace.exists(), "{args:?}: a trace was left behind");
    }

    // Asked to wait: it records, and says that nothing matched.
    let tmp = Tmp::new("wait");
    let trace = tmp.0.join("t.pftrace");
    let out = Command::new(BIN)
        .args([
            "trace",
            "-d",
            "300ms",
            "--wait-for-task",
            "--pid",
            &pid,
            "-o",
        ])
        .arg(&trace)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("no task matched"), "{stderr}");
    assert!(!stderr.contains("bytes/event"), "{stderr}");
    let (packets, complete) = decode(&trace);
    assert!(complete, "file incomplete");
    // Bookkeeping (tasks freed that were never seen) and what every CPU
    // does whoever runs (IRQs, softirqs, idle, frequency) at most: no
    // scheduler event, no task named.
    for p in packets.iter().filter(|p| p.has_ftrace_events()) {
        let b = p.ftrace_events();
        assert!(
            b.compact_sched.switch_timestamp.is_empty(),
            "a switch: {b:?}"
        );
        assert!(
            b.compact_sched.waking_timestamp.is_empty(),
            "a waking: {b:?}"
        );
        assert!(
            b.event.iter().all(|e| e.has_sched_process_free()
                || e.has_irq_handler_entry()
                || e.has_irq_handler_exit()
                || e.has_softirq_entry()
                || e.has_softirq_exit()
                || e.has_cpu_idle()
                || e.has_cpu_frequency()
                || e.has_cpu_frequency_limits()
                || e.event.is_none()),
            "an event: {b:?}"
        );
    }

    let help = Command::new(BIN)
        .args(["trace", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--wait-for-task"));
}

#[test]
fn comm_filter_keeps_only_matching_tasks() {
    if !root::require_bpf() {
        return;
    }
    let tmp = Tmp::new("comm");
    let trace = tmp.0.join("t.pftrace");
    // A name no other process on this shared machine runs (the filter is
    // system-wide): exec takes the comm from the path's basename.
    let name = format!("slc{}", std::process::id());
    let prog = tmp.0.join(&name);
    std::os::unix::fs::symlink("/bin/true", &prog).unwrap();
    let p = prog.display();
    let out = Command::new(BIN)
        .args(["trace", "--comm", &name, "-o"])
        .arg(&trace)
        .args(["--", "sh", "-c", &format!("{p}; {p}; {p}; sleep 0.05")])
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
            // Matched at exec: the new name is the link's.
            Some(Fe::SchedProcessExec(x)) => {
                assert_eq!(x.filename(), prog.to_str().unwrap());
                execs += 1;
            }
            Some(Fe::SchedProcessExit(x)) => {
                assert_eq!(x.comm(), name, "exit of an unmatched task")
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

/// nobody's uid and gid, from the user database.
fn nobody() -> (u32, u32) {
    // SAFETY: a NUL-terminated name; the result is read before any other
    // getpw* call could overwrite it (tests do not call getpw* elsewhere).
    let pw = unsafe { libc::getpwnam(c"nobody".as_ptr()) };
    assert!(!pw.is_null(), "no user nobody on this machine");
    // SAFETY: non-null, points to libc's static passwd entry.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

#[test]
fn under_sudo_the_trace_belongs_to_the_sudo_user() {
    use std::os::unix::fs::MetadataExt as _;
    if !root::require_bpf() {
        return;
    }
    let (uid, gid) = nobody();
    let tmp = Tmp::new("sudo");
    let trace = tmp.0.join("t.pftrace");
    // What sudo sets for the user who ran `sudo schedlens trace`.
    let out = Command::new(BIN)
        .args(["trace", "-d", "300ms", "-o"])
        .arg(&trace)
        .env("SUDO_UID", uid.to_string())
        .env("SUDO_GID", gid.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = std::fs::metadata(&trace).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    assert_eq!(meta.mode() & 0o7777, 0o600, "mode {:o}", meta.mode());
    assert!(decode(&trace).1, "file incomplete");
}

/// Kills a helper process if the test fails before it ends.
struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The subject pid of a full event other than a switch (whom it is about).
fn subject(e: &FtraceEvent) -> Option<i32> {
    Some(match e.event.as_ref()? {
        Fe::SchedWaking(x) => x.pid(),
        Fe::SchedWakeupNew(x) => x.pid(),
        Fe::TaskNewtask(x) => x.pid(),
        Fe::TaskRename(x) => x.pid(),
        Fe::SchedProcessExec(x) => x.pid(),
        Fe::SchedProcessExit(x) => x.pid(),
        Fe::SchedProcessFork(x) => x.parent_pid(),
        Fe::SchedProcessFree(x) => x.pid(),
        _ => return None,
    })
}

#[test]
fn tgid_filter_keeps_the_process_and_its_children_only() {
    if !root::require_bpf() {
        return;
    }
    let tmp = Tmp::new("tgid");
    let trace = tmp.0.join("t.pftrace");
    let go = tmp.0.join("go");
    let done = tmp.0.join("done");
    let mkfifo = Command::new("mkfifo").arg(&go).status().unwrap();
    assert!(mkfifo.success());
    // The filtered process: waits until the recorder runs, then forks three
    // children that exec /bin/true.
    let workload = KillOnDrop(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "read x < {}; /bin/true; /bin/true; /bin/true; touch {}",
                go.display(),
                done.display()
            ))
            .spawn()
            .unwrap(),
    );
    let tgid = workload.0.id() as i32;
    // The recorder's command starts once BPF is attached: it releases the
    // workload, then keeps busy with unrelated tasks (execs of /bin/false)
    // until the workload is done.
    let out = Command::new(BIN)
        .args(["trace", "--tgid", &tgid.to_string(), "-o"])
        .arg(&trace)
        .args(["--", "sh", "-c"])
        .arg(format!(
            "echo go > {}; while [ ! -e {} ]; do /bin/false || :; done",
            go.display(),
            done.display()
        ))
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

    // The traced set: the process and what it forked (transitively; forks
    // come before their children's events in time).
    let mut traced = std::collections::HashSet::from([tgid]);
    let mut forks = 0;
    let mut sorted: Vec<&FtraceEvent> = b.events.iter().map(|(_, e)| e).collect();
    sorted.sort_by_key(|e| e.timestamp());
    for e in &sorted {
        if let Some(Fe::SchedProcessFork(f)) = &e.event {
            if traced.contains(&f.parent_pid()) {
                traced.insert(f.child_pid());
                forks += usize::from(f.parent_pid() == tgid);
            }
        }
    }
    assert!(forks >= 3, "{forks} forks of the workload");
    let mut child_execs = 0;
    for e in &sorted {
        if let Some(Fe::SchedProcessExec(x)) = &e.event {
            assert_ne!(x.filename(), "/bin/false", "an unrelated exec is in");
            if x.filename() == "/bin/true" && x.pid() != tgid && traced.contains(&x.pid()) {
                child_execs += 1;
            }
        }
        if let Some(p) = subject(e) {
            assert!(traced.contains(&p), "an event about unrelated {p}: {e:?}");
        }
    }
    assert_eq!(child_execs, 3, "the children's execs");
    for p in &b.compact_wakings {
        assert!(traced.contains(p), "a waking of unrelated {p}");
    }
    // Unrelated tasks appear only as the other side of a traced one's switch.
    let mut switches = 0;
    for (cpu, sws) in &b.switches {
        let mut last: Option<&Sw> = None;
        for s in sws {
            // A compact switch's prev is the previous next on this CPU.
            let prev = s.prev_pid.or(last.map(|l| l.next_pid));
            assert!(
                traced.contains(&s.next_pid) || prev.is_some_and(|p| traced.contains(&p)),
                "cpu {cpu}: a switch between unrelated tasks {prev:?} -> {}",
                s.next_pid
            );
            switches += 1;
            last = Some(s);
        }
    }
    assert!(switches >= 6, "{switches} switches of the workload");
}

#[test]
fn handler_runs_the_kernel_skipped_are_counted() {
    if !root::require_bpf() {
        return;
    }
    let tmp = Tmp::new("recursion");
    let trace = tmp.0.join("t.pftrace");
    let out = Command::new(BIN)
        .args(["trace", "-o"])
        .arg(&trace)
        .args(["--", "sh", "-c", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // "  skipped by the kernel: N handler runs ..."
    let in_summary: u64 = stderr
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("skipped by the kernel: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no skipped line: {stderr}"));

    // One counter per program this kernel loads (handle_switch or its
    // legacy twin, never both), summing to the summary's.
    let (packets, complete) = decode(&trace);
    assert!(complete);
    let (_, epilogue) = lost_packets(&packets);
    let mut names: Vec<&str> = epilogue.recursion_misses.iter().map(|c| c.name()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "handle_cpu_frequency",
            "handle_cpu_frequency_limits",
            "handle_cpu_idle",
            "handle_exec",
            "handle_exit",
            "handle_fork",
            "handle_free",
            "handle_irq_entry",
            "handle_irq_exit",
            "handle_migrate",
            "handle_newtask",
            "handle_rename",
            "handle_softirq_entry",
            "handle_softirq_exit",
            "handle_switch",
            "handle_wakeup_new",
            "handle_waking",
        ]
    );
    let in_trace: u64 = epilogue.recursion_misses.iter().map(|c| c.value()).sum();
    assert_eq!(in_trace, in_summary);

    // Loaded, it is a data-loss stat the recorder counted.
    let out = Command::new(BIN)
        .args(["query", "--format", "csv"])
        .arg(&trace)
        .arg("SELECT severity, source, value FROM stats WHERE name = 'recorder_bpf_recursion_misses'")
        .env("XDG_CACHE_HOME", &tmp.0)
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        csv.lines().nth(1),
        Some(format!("\"data_loss\",\"trace\",{in_trace}").as_str()),
        "{csv}"
    );
}

/// Per-CPU counts from schedlens LostEvents packets, and the epilogue.
fn lost_packets(
    packets: &[TracePacket],
) -> (
    BTreeMap<u32, u64>,
    schedlens::perfetto::proto::schedlens::RecorderStats,
) {
    use prost::Message as _;
    use schedlens::perfetto::proto::schedlens::{SchedlensPacket, schedlens_packet::Data};
    let mut per_cpu = BTreeMap::new();
    let mut epilogue = Default::default();
    for p in packets {
        let Some(UnknownValueRef::LengthDelimited(bytes)) = p
            .special_fields
            .unknown_fields()
            .get(oracle::SCHEDLENS_PACKET)
        else {
            continue;
        };
        match SchedlensPacket::decode(bytes)
            .expect("schedlens packet")
            .data
        {
            Some(Data::LostEvents(l)) => {
                *per_cpu.entry(l.cpu()).or_insert(0) += l.count();
            }
            Some(Data::RecorderStats(s)) => epilogue = s,
            _ => {}
        }
    }
    (per_cpu, epilogue)
}

/// The summary's "drops: N dropped (cpu0 X, cpu1 Y)" as per-CPU counts.
fn summary_drops(stderr: &str) -> BTreeMap<u32, u64> {
    let line = stderr
        .lines()
        .find(|l| l.trim_start().starts_with("drops:"))
        .unwrap_or_else(|| panic!("no drops line: {stderr}"));
    let Some(list) = line.split_once('(').and_then(|(_, r)| r.split_once(')')) else {
        return BTreeMap::new();
    };
    list.0
        .split(", ")
        .map(|e| {
            let (cpu, n) = e.split_once(' ').unwrap();
            (
                cpu.trim_start_matches("cpu").parse().unwrap(),
                n.parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn an_event_storm_drops_visibly_and_resyncs() {
    if !root::require_bpf() {
        return;
    }
    let tmp = Tmp::new("storm");
    let trace = tmp.0.join("t.pftrace");
    let out = Command::new(BIN)
        .args(["trace", "--ring-size", "64K", "--shards", "1", "-o"])
        .arg(&trace)
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args(["storm_entry", "--exact", "--test-threads=1"])
        .env(ROLE_ENV, "storm")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary = summary_drops(&stderr);
    assert!(!summary.is_empty(), "the storm dropped nothing: {stderr}");

    let (packets, complete) = decode(&trace);
    assert!(complete);
    let (lost_events, epilogue) = lost_packets(&packets);
    // Every drop the summary reports is in the trace, on its CPU.
    let in_trace: BTreeMap<u32, u64> = lost_events.into_iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(in_trace, summary, "LostEvents packets vs the summary");
    for (&cpu, &n) in &summary {
        assert_eq!(
            epilogue.lost_per_cpu.get(cpu as usize),
            Some(&n),
            "epilogue cpu {cpu}"
        );
    }
    // The one ring's fill is reported: a ring that dropped events was full
    // when its consumer woke at least once.
    let [fill] = &epilogue.ring_fill[..] else {
        panic!("ring fill of one shard: {:?}", epilogue.ring_fill)
    };
    assert_eq!(fill.size(), 64 << 10);
    assert!(
        (fill.size() * 9 / 10..=fill.size()).contains(&fill.peak()),
        "{fill:?}"
    );
    assert!(stderr.contains("ring buffers: peak fill"), "{stderr}");

    // Per CPU in file order: after a bundle flagged lost_events, the first
    // switch is a full sched_switch (prev fields), so no reader pairs it with
    // the task that ran before the gap.
    let mut flagged: BTreeMap<u32, u64> = BTreeMap::new();
    let mut resync: BTreeMap<u32, bool> = BTreeMap::new();
    let mut resyncs = 0;
    for p in packets.iter().filter(|p| p.has_ftrace_events()) {
        let b = p.ftrace_events();
        if b.lost_events() {
            *flagged.entry(b.cpu()).or_insert(0) += 1;
            resync.insert(b.cpu(), true);
        }
        let full = b
            .event
            .iter()
            .filter(|e| matches!(e.event, Some(Fe::SchedSwitch(_))))
            .map(|e| e.timestamp())
            .min();
        let compact = b.compact_sched.switch_timestamp.first().copied();
        if full.is_none() && compact.is_none() {
            continue;
        }
        if resync.insert(b.cpu(), false) == Some(true) {
            resyncs += 1;
            assert!(
                compact.is_none_or(|c| full.is_some_and(|f| f <= c)),
                "cpu {}: the first switch after a gap is compact",
                b.cpu()
            );
        }
    }
    for cpu in summary.keys() {
        assert!(
            flagged.contains_key(cpu),
            "cpu {cpu} dropped, no lost_events bundle"
        );
    }
    assert!(resyncs > 0, "no switch after any gap");
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk(PathBuf);
impl SmallDisk {
    fn mount(at: &Path, size: &str) -> SmallDisk {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt as _;
        let target = CString::new(at.as_os_str().as_bytes()).unwrap();
        let opts = CString::new(format!("size={size},mode=0755")).unwrap();
        // SAFETY: NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
        SmallDisk(at.to_path_buf())
    }
}
impl Drop for SmallDisk {
    fn drop(&mut self) {
        use std::os::unix::ffi::OsStrExt as _;
        let target = std::ffi::CString::new(self.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path. Lazy, so a file still open elsewhere
        // cannot leave the mount behind.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn a_full_disk_stops_the_recording_with_a_readable_file() {
    if !root::require_bpf() {
        return;
    }
    let tmp = Tmp::new("full");
    let mnt = tmp.0.join("disk");
    std::fs::create_dir(&mnt).unwrap();
    let disk = SmallDisk::mount(&mnt, "1m");
    let trace = disk.0.join("t.pftrace");
    // Busy until killed: more events than 1 MiB holds within a few seconds.
    let _storm = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args(["storm_entry", "--exact", "--test-threads=1"])
            .env(ROLE_ENV, "storm")
            .env(ROUNDS_ENV, u64::MAX.to_string())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = Command::new(BIN)
        .args(["trace", "-d", "60s", "-o"])
        .arg(&trace)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("disk is full"), "{stderr}");
    // Cut at the last complete chunk: every record decodes, none is partial.
    let (packets, complete) = decode(&trace);
    assert!(complete, "the file ends in a partial chunk");
    assert!(packets.iter().any(|p| p.has_process_tree()));
    assert!(packets.iter().any(|p| p.has_ftrace_events()));
}

/// Every ProcessTree packet (the /proc snapshot, the thread lists of the
/// chunks) says what was true at its timestamp: no task it lists is forked
/// after that time (the importer would take it for two tasks). Tasks start
/// throughout: this process starts a thread every millisecond, each living
/// 20 ms, while the recorder scans /proc, and the workload forks children
/// and threads. One shard: a thread forked on another shard's CPUs can be
/// announced in this shard's chunk before its fork is, which only the
/// importer can see (tests/import.rs
/// a_snapshot_stamped_before_a_fork_lists_the_forked_task).
#[test]
fn process_snapshots_list_no_task_before_its_fork() {
    if !root::require_bpf() {
        return;
    }
    let tmp = Tmp::new("snapshots");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spawner = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut threads = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                threads.push(std::thread::spawn(|| {
                    std::thread::sleep(Duration::from_millis(20))
                }));
                std::thread::sleep(Duration::from_millis(1));
            }
            let n = threads.len();
            threads.into_iter().for_each(|t| t.join().unwrap());
            n
        })
    };
    let (trace, report, _) = record_workload(&tmp.0, &["--shards", "1"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(spawner.join().unwrap() > 0);

    let (packets, _) = decode(&trace);
    let Bundles { events, .. } = bundles(&packets);
    // Per tid, its forks and frees in time order.
    let mut life: HashMap<i32, Vec<(u64, bool)>> = HashMap::new();
    for (_, e) in &events {
        match &e.event {
            Some(Fe::TaskNewtask(t)) => {
                life.entry(t.pid()).or_default().push((e.timestamp(), true))
            }
            Some(Fe::SchedProcessFree(f)) => life
                .entry(f.pid())
                .or_default()
                .push((e.timestamp(), false)),
            _ => {}
        }
    }
    life.values_mut().for_each(|v| v.sort_unstable());
    let mut listed = 0;
    let mut late = Vec::new();
    for p in packets.iter().filter(|p| p.has_process_tree()) {
        let ts = p.timestamp();
        let tree = p.process_tree();
        let tids = tree
            .processes
            .iter()
            .map(|p| p.pid())
            .chain(tree.threads.iter().map(|t| t.tid()));
        for tid in tids {
            listed += 1;
            // The first fork or free of tid after the packet: a fork means
            // the packet listed that task before it existed.
            let next = life
                .get(&tid)
                .and_then(|v| v.iter().find(|&&(t, _)| t > ts));
            if let Some(&(fork_ts, true)) = next {
                late.push((tid, fork_ts - ts));
            }
        }
    }
    assert!(listed > 0, "no process snapshot");
    assert!(
        late.is_empty(),
        "{} of {listed} listed tasks forked after the packet that lists them (tid, ns later): {:?}",
        late.len(),
        &late[..late.len().min(20)]
    );
    // So the loaded trace has one row per thread of the workload.
    let db = tmp.0.join("t.db");
    schedlens::analyzer::db::build_into(&trace, &db).unwrap();
    let conn = schedlens::analyzer::db::open_readonly(&db).unwrap();
    for &tid in report
        .pingpong
        .iter()
        .chain(&report.sleepers)
        .chain(&report.children)
    {
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM thread WHERE tid = ?1", [tid], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(rows, 1, "thread rows of {tid}");
    }
}
