//! The analyses on the synthetic workload, checked against answers computed
//! from its raw rows: cpu_timeline, who held a CPU while a task waited
//! (scheduling_latency, task_timeline), process_activity.

mod common;

use std::collections::HashMap;

use common::{IDLE, START_TS, Workload};
use schedlens::analyses::cpu_timeline::{Holder, cpu_timeline};
use schedlens::analyses::process_activity::process_activity;
use schedlens::analyses::scheduling_latency::scheduling_latency;
use schedlens::analyses::task_timeline::{TaskSel, task_timeline};
use schedlens::analyses::tasks::TaskFilter;
use schedlens::analyses::timespec::Window;
use schedlens::analyzer::db;

fn loaded(w: &Workload) -> (tempfile::TempDir, rusqlite::Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    common::write_db(w, &path);
    let conn = db::open_readonly(&path).unwrap();
    (dir, conn)
}

fn tid(w: &Workload, utid: i64) -> i64 {
    w.threads[utid as usize].tid
}

/// What ran on `cpu` in [lo, hi) (absolute): (start, end, tid) with runs of
/// one thread merged, idle as tid 0.
fn expected_runs(w: &Workload, cpu: i64, lo: i64, hi: i64) -> Vec<(i64, i64, i64)> {
    let mut slices: Vec<_> = w.slices.iter().filter(|s| s.cpu == cpu).collect();
    slices.sort_by_key(|s| s.ts);
    let mut runs: Vec<(i64, i64, i64)> = Vec::new();
    let mut cursor = lo;
    for s in slices {
        let end = if s.dur < 0 { w.end_ts } else { s.ts + s.dur };
        let (a, b) = (s.ts.max(lo), end.min(hi));
        let mut add = |a: i64, b: i64, t: i64| {
            if b <= a {
                return;
            }
            match runs.last_mut() {
                Some(last) if last.2 == t && last.1 == a => last.1 = b,
                _ => runs.push((a, b, t)),
            }
        };
        if a > cursor {
            add(cursor, a.min(hi), 0);
        }
        if b > a {
            add(a, b, tid(w, s.utid));
            cursor = b;
        }
    }
    if cursor < hi {
        runs.push((cursor, hi, 0));
    }
    runs
}

/// Who ran on `cpu` in [lo, hi), most time first (ties by utid), as the analyses list them.
fn expected_holders(w: &Workload, cpu: i64, lo: i64, hi: i64) -> Vec<Holder> {
    let mut time: HashMap<i64, i64> = HashMap::new();
    for s in w.slices.iter().filter(|s| s.cpu == cpu && s.utid != IDLE) {
        let end = if s.dur < 0 { w.end_ts } else { s.ts + s.dur };
        let len = end.min(hi) - s.ts.max(lo);
        if len > 0 {
            *time.entry(s.utid).or_default() += len;
        }
    }
    let mut v: Vec<(i64, i64)> = time.into_iter().collect();
    v.sort_by_key(|&(u, ns)| (std::cmp::Reverse(ns), u));
    v.truncate(3);
    v.into_iter()
        .map(|(u, ns)| Holder {
            tid: tid(w, u),
            name: Some(w.threads[u as usize].name.clone()),
            ns,
        })
        .collect()
}

#[test]
fn cpu_timeline_lists_what_ran_with_idle_gaps() {
    let w = common::workload(4, 3, 2, 300);
    let (_dir, conn) = loaded(&w);
    let (lo, hi) = (40_000_000, 90_000_000);
    for cpu in 0..w.cpus {
        let t = cpu_timeline(&conn, cpu, Window { start: lo, end: hi }, 2000).unwrap();
        let want = expected_runs(&w, cpu, START_TS + lo, START_TS + hi);
        assert!(want.len() > 20, "the window holds many runs on cpu {cpu}");
        let got: Vec<(i64, i64, i64)> = t
            .runs
            .iter()
            .map(|r| {
                let s = START_TS + r.start.ns.0;
                (s, s + r.dur.ns.0, r.tid)
            })
            .collect();
        assert_eq!(got, want, "cpu {cpu}");
        assert!(t.listed_until.is_none());
        assert_eq!(
            t.busy.ns.0,
            w.busy_in(cpu, START_TS + lo, START_TS + hi),
            "busy on cpu {cpu}"
        );
        for r in &t.runs {
            let name = if r.tid == 0 {
                "idle".to_string()
            } else {
                w.threads
                    .iter()
                    .find(|x| x.tid == r.tid)
                    .unwrap()
                    .name
                    .clone()
            };
            assert_eq!(r.name.as_deref(), Some(name.as_str()));
        }
        // Capped: the first runs, and where the listing stopped.
        let capped = cpu_timeline(&conn, cpu, Window { start: lo, end: hi }, 5).unwrap();
        assert_eq!(capped.runs.len(), 5);
        assert_eq!(
            capped.listed_until.map(|u| START_TS + u.ns.0),
            Some(want[5].0)
        );
        assert_eq!(
            capped.busy, t.busy,
            "busy covers the whole window, capped or not"
        );
    }
    let err = cpu_timeline(&conn, 9, Window { start: lo, end: hi }, 5).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no CPU 9 in this trace; its CPUs are [0, 1, 2, 3]"
    );
}

#[test]
fn waits_name_what_held_the_cpu() {
    let w = common::workload(4, 3, 2, 300);
    let (_dir, conn) = loaded(&w);
    let whole = Window {
        start: 0,
        end: w.end_ts - START_TS,
    };
    let l = scheduling_latency(&conn, &TaskFilter::default(), whole, 100).unwrap();
    assert_eq!(l.worst.len(), 100);
    for case in &l.worst {
        let x = w.wakeups.iter().find(|x| x.id == case.id).unwrap();
        let cpu = case.run_cpu.unwrap();
        assert_eq!(
            case.held_by,
            expected_holders(&w, cpu, x.ts, x.run_ts),
            "wakeup {}",
            case.id
        );
    }
    // Preempted (R+) threads wait while the other threads of their CPU run.
    let mut held = 0;
    for thread in w.threads.iter().skip(1) {
        let t = task_timeline(&conn, TaskSel::Tid(thread.tid), whole, 2000).unwrap();
        let intervals = &t.threads[0].intervals;
        for (i, iv) in intervals.iter().enumerate() {
            let runnable = iv.state == "R" || iv.state == "R+";
            let next_cpu = intervals.get(i + 1).and_then(|n| n.cpu);
            match (runnable, next_cpu) {
                (true, Some(cpu)) => {
                    let s = START_TS + iv.start.ns.0;
                    let want = expected_holders(&w, cpu, s, s + iv.dur.ns.0);
                    held += usize::from(!want.is_empty());
                    assert_eq!(iv.held_by.as_ref(), Some(&want), "tid {}", thread.tid);
                }
                _ => assert!(iv.held_by.is_none(), "only runnable intervals say who held"),
            }
        }
    }
    assert!(held > 50, "preempted threads waited behind others ({held})");
}

#[test]
fn process_activity_counts_execs_by_process() {
    let w = common::workload(4, 3, 2, 300);
    let (_dir, conn) = loaded(&w);
    let whole = Window {
        start: 0,
        end: w.end_ts - START_TS,
    };
    let a = process_activity(&conn, whole, 10).unwrap();
    assert_eq!(a.execs, w.execs.len() as i64);
    assert_eq!((a.new_processes, a.new_threads, a.exits), (0, 0, 0));
    let mut want: HashMap<i64, i64> = HashMap::new();
    for &(_, utid) in &w.execs {
        let upid = w.threads[utid as usize].upid;
        *want.entry(w.processes[upid as usize].pid).or_default() += 1;
    }
    let got: HashMap<i64, i64> = a
        .processes
        .iter()
        .map(|p| (p.pid.unwrap(), p.execs))
        .collect();
    assert_eq!(got, want);
    // Nothing happened after the execs.
    let later = process_activity(
        &conn,
        Window {
            start: 10,
            end: whole.end,
        },
        10,
    )
    .unwrap();
    assert_eq!(later.execs, 0);
    assert!(later.processes.is_empty());
}
