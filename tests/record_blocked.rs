//! Where tasks block in D: `schedlens trace` around a workload that blocks
//! in uninterruptible sleep in known kernel functions (tests/workloads/
//! blocked.c, built here): a thread whose vfork children sleep before they
//! exit (it waits, not for I/O, in the function the kernel's wchan names)
//! and one that reads a file with O_DIRECT (it waits for the disk). The
//! workload asks the kernel's get_wchan (/proc/TID/wchan) itself. The file
//! is decoded with Perfetto's official protos: each sched_blocked_reason
//! names its function through its sequence's interned kernel symbols and
//! comes right after its task's D switch on that CPU; then the importer's
//! thread_state D rows carry the function and io_wait, and the critical
//! path names the function of the sleep it ends. Needs root; see
//! `require_bpf`.
#![cfg(feature = "record")]

mod oracle;
mod root;

use perfetto_protos::ftrace_event::ftrace_event::Event as Fe;
use schedlens::analyses::critical_path::critical_path;
use schedlens::analyses::task_timeline::{TaskSel, task_timeline};
use schedlens::analyses::timespec::trace_bounds;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_schedlens");
const WORKLOAD_SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/workloads/blocked.c");
/// The workload's vfork()s, each one D block of sl-vforker.
const VFORKS: usize = 30;
/// sched_switch's prev_state for D (TASK_UNINTERRUPTIBLE).
const D: i64 = 2;

/// The workload's report: its pid, each role's tid and the function the
/// kernel's wchan named for it.
struct Report {
    tids: HashMap<String, i32>,
    wchan: HashMap<String, String>,
}

fn read_report(path: &Path) -> Report {
    let text = std::fs::read_to_string(path).expect("workload report");
    assert!(
        text.lines().any(|l| l == "done"),
        "workload did not finish:\n{text}"
    );
    let mut report = Report {
        tids: HashMap::new(),
        wchan: HashMap::new(),
    };
    for line in text.lines() {
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["tid", role, tid] => {
                report.tids.insert(role.to_string(), tid.parse().unwrap());
            }
            ["wchan", role, name] => {
                report.wchan.insert(role.to_string(), name.to_string());
            }
            _ => {}
        }
    }
    report
}

/// A sched_blocked_reason as decoded: its CPU, time, function and io_wait.
#[derive(Debug)]
struct Blocked {
    cpu: u32,
    ts: u64,
    caller: Option<String>,
    io_wait: bool,
}

/// Builds the workload in `dir`.
fn build_workload(dir: &Path) -> PathBuf {
    let exe = dir.join("blocked");
    let built = Command::new("cc")
        .args(["-O1", "-pthread", "-o"])
        .arg(&exe)
        .arg(WORKLOAD_SRC)
        .status()
        .expect("running cc");
    assert!(built.success(), "building {WORKLOAD_SRC}");
    exe
}

/// Records the workload with `args`; returns the trace and the report.
fn record(dir: &Path, exe: &Path, args: &[&str]) -> (PathBuf, Report) {
    let trace = dir.join("blocked.pftrace");
    let report_path = dir.join("report");
    let out = Command::new(BIN)
        .arg("trace")
        .args(args)
        .arg("-o")
        .arg(&trace)
        .arg("--")
        .arg(exe)
        .arg(&report_path)
        .arg(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schedlens trace failed:\n{stderr}");
    assert!(stderr.contains("0 dropped"), "summary: {stderr}");
    (trace, read_report(&report_path))
}

#[test]
fn d_blocks_name_the_function_the_kernel_reports() {
    if !root::require_bpf() {
        return;
    }
    d_blocks_are_named(&[]);
}

/// With off-CPU stacks, a D block whose stacks are reused from its task's
/// last block at the same site (--stack-reuse) reuses that site's function
/// too, without walking the kernel stack again: the names stay the kernel's.
#[test]
fn with_off_cpu_stacks_reused_sites_keep_their_function() {
    if !root::require_bpf() {
        return;
    }
    let (_dir, db) = d_blocks_are_named(&["--stacks", "off-cpu"]);
    let conn = schedlens::analyzer::db::open_readonly(&db).unwrap();
    let reused: i64 = conn
        .query_row(
            "SELECT value FROM stats WHERE name = 'recorder_stacks_reused'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // The vforker blocks at one site 30 times: most of those reuse.
    assert!(
        reused >= (VFORKS / 2) as i64,
        "{reused} off-cpu stacks reused"
    );
}

/// Records the workload with `args` and checks every D block's function
/// and io_wait, in the file and in the tables; returns the directory and
/// the database built in it.
fn d_blocks_are_named(args: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let exe = build_workload(dir.path());
    let (trace, report) = record(dir.path(), &exe, args);
    let vforker = report.tids["sl-vforker"];
    let direct = report.tids["sl-direct"];
    // What the kernel's get_wchan said they sleep in, asked while they did
    // (the vfork children agreed on one function).
    let vfork_fn = report.wchan["sl-vforker"].clone();
    let direct_fn = report.wchan["sl-direct"].clone();
    assert!(
        vfork_fn != "?" && direct_fn != "?",
        "the kernel named no wchan: {:?}",
        report.wchan
    );

    // Decoded with the official protos: the events, their functions named
    // through each packet's sequence's interned symbols, and each CPU's
    // switches (ts, prev, prev_state; a compact switch's prev is the
    // previous switch's next on its CPU).
    let decoded = oracle::decode(&trace);
    assert!(decoded.complete);
    let mut blocked: BTreeMap<i32, Vec<Blocked>> = BTreeMap::new();
    let mut switches: HashMap<u32, Vec<(u64, Option<i32>, i64)>> = HashMap::new();
    let mut last_next: HashMap<u32, i32> = HashMap::new();
    oracle::with_kernel_symbols(&decoded.packets, |p, symbols| {
        if !p.has_ftrace_events() {
            return;
        }
        let b = p.ftrace_events();
        let cpu = b.cpu();
        let c = &b.compact_sched;
        let mut ts = 0u64;
        for k in 0..c.switch_timestamp.len() {
            ts = ts.wrapping_add(c.switch_timestamp[k]);
            let prev = last_next.insert(cpu, c.switch_next_pid[k]);
            switches
                .entry(cpu)
                .or_default()
                .push((ts, prev, c.switch_prev_state[k]));
        }
        for e in &b.event {
            match &e.event {
                Some(Fe::SchedSwitch(s)) => {
                    last_next.insert(cpu, s.next_pid());
                    switches.entry(cpu).or_default().push((
                        e.timestamp(),
                        Some(s.prev_pid()),
                        s.prev_state(),
                    ));
                }
                Some(Fe::SchedBlockedReason(r)) => {
                    assert_eq!(r.pid(), e.pid() as i32, "the event is its task's");
                    blocked.entry(r.pid()).or_default().push(Blocked {
                        cpu,
                        ts: e.timestamp(),
                        caller: symbols.get(&r.caller()).cloned(),
                        io_wait: r.io_wait() != 0,
                    });
                }
                _ => {}
            }
        }
    });

    // Every vfork blocks the vforker once, in the kernel's function, not
    // for I/O; the direct reads (those that did not finish before their
    // task slept) mostly in the kernel's function, all for I/O.
    let of = |tid: i32| blocked.get(&tid).map_or(&[][..], Vec::as_slice);
    let vforks = of(vforker);
    assert_eq!(vforks.len(), VFORKS, "sl-vforker's D blocks: {vforks:?}");
    for b in vforks {
        assert_eq!(b.caller.as_deref(), Some(vfork_fn.as_str()), "{b:?}");
        assert!(!b.io_wait, "a vfork wait is no I/O wait: {b:?}");
    }
    let reads = of(direct);
    let in_fn = reads
        .iter()
        .filter(|b| b.caller.as_deref() == Some(direct_fn.as_str()))
        .count();
    assert!(
        reads.len() >= 5 && in_fn * 10 >= reads.len() * 9,
        "sl-direct: {in_fn} of {} D blocks in {direct_fn}: {reads:?}",
        reads.len()
    );
    assert!(reads.iter().all(|b| b.io_wait), "{reads:?}");

    // Each comes 1 ns after its task's switch out in D on its CPU, the
    // switch that opens the thread_state row it belongs to. (This kernel
    // never reports a switch-out of PID 1's threads, so a compact switch
    // after one of them runs decodes with that thread as its prev.)
    let pid1_threads: Vec<i32> = std::fs::read_dir("/proc/1/task")
        .unwrap()
        .filter_map(|t| t.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for (&pid, events) in &blocked {
        for b in events {
            let sw = switches
                .get(&b.cpu)
                .and_then(|s| s.iter().find(|s| s.0 == b.ts - 1));
            assert!(
                matches!(sw, Some(&(_, prev, D))
                    if prev.is_none_or(|p| p == pid || pid1_threads.contains(&p))),
                "pid {pid}: no D switch 1 ns before its blocked reason {b:?}: {sw:?}"
            );
        }
    }

    // Imported: the D rows of both threads carry the function and io_wait.
    let db = dir.path().join("blocked.db");
    schedlens::analyzer::db::build_into(&trace, &db).unwrap();
    let conn = schedlens::analyzer::db::open_readonly(&db).unwrap();
    let rows = |tid: i32| -> Vec<(Option<String>, Option<i64>)> {
        let mut q = conn
            .prepare(
                "SELECT s.blocked_function, s.io_wait FROM thread_state s JOIN thread t \
                 USING (utid) WHERE t.tid = ?1 AND s.state = 'D' ORDER BY s.ts",
            )
            .unwrap();
        q.query_map([tid], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let vfork_rows = rows(vforker);
    assert_eq!(vfork_rows.len(), VFORKS);
    assert!(
        vfork_rows
            .iter()
            .all(|r| *r == (Some(vfork_fn.clone()), Some(0))),
        "{vfork_rows:?}"
    );
    let direct_rows = rows(direct);
    assert_eq!(direct_rows.len(), reads.len());
    for (row, b) in direct_rows.iter().zip(reads) {
        assert_eq!(*row, (b.caller.clone(), Some(1)));
    }
    // No D row of the whole recording lacks its blocked reason.
    let unnamed: i64 = conn
        .query_row(
            "SELECT count(*) FROM thread_state WHERE state = 'D' AND (io_wait IS NULL OR \
             blocked_function IS NULL)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(unnamed, 0, "D rows without a blocked reason");

    let window = trace_bounds(&conn).unwrap().whole();
    // task_timeline shows each of the vforker's D intervals with its function.
    let tl = task_timeline(&conn, TaskSel::Tid(i64::from(vforker)), window, 2000).unwrap();
    let d: Vec<Option<String>> = tl.threads[0]
        .intervals
        .iter()
        .filter(|i| i.state == "D")
        .map(|i| i.blocked_function.clone())
        .collect();
    assert_eq!(d, vec![Some(vfork_fn.clone()); VFORKS]);

    // The critical path of the vforker: each of its waits is ended by a
    // child's exit, and the step that ends it names where it slept.
    let path = critical_path(&conn, i64::from(vforker), window, 1000).unwrap();
    let named = format!("D ({vfork_fn})");
    let ends = path
        .steps
        .iter()
        .filter(|s| s.wakes_from.as_deref() == Some(named.as_str()))
        .count();
    assert!(
        ends >= VFORKS / 2,
        "{ends} critical path steps end a sleep in {named}: {:?}",
        path.steps
            .iter()
            .map(|s| s.wakes_from.clone())
            .collect::<Vec<_>>()
    );
    drop(conn);
    (dir, db)
}

/// Without the blocked group (`--events` not naming it) the same workload's
/// D blocks are recorded with no reason: the sched_switch program skips it.
#[test]
fn without_the_blocked_group_d_blocks_have_no_reason() {
    if !root::require_bpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = build_workload(dir.path());
    let (trace, report) = record(dir.path(), &exe, &["--events", "irq"]);
    let decoded = oracle::decode(&trace);
    let reasons = decoded
        .packets
        .iter()
        .filter(|p| p.has_ftrace_events())
        .flat_map(|p| &p.ftrace_events().event)
        .filter(|e| matches!(e.event, Some(Fe::SchedBlockedReason(_))))
        .count();
    assert_eq!(reasons, 0);
    let db = dir.path().join("blocked.db");
    schedlens::analyzer::db::build_into(&trace, &db).unwrap();
    let conn = schedlens::analyzer::db::open_readonly(&db).unwrap();
    let (d, named): (i64, i64) = conn
        .query_row(
            "SELECT count(*), count(s.blocked_function) FROM thread_state s JOIN thread t \
             USING (utid) WHERE t.tid = ?1 AND s.state = 'D'",
            [report.tids["sl-vforker"]],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((d, named), (VFORKS as i64, 0));
}
