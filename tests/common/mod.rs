//! A synthetic scheduler workload, written as a Perfetto trace and loaded
//! through the importer like any trace, with the raw rows kept so tests
//! compute expected answers independently of the SQL under test.

#![allow(dead_code)] // each test binary uses part of it

#[path = "../tracegen/mod.rs"]
mod tracegen;

use std::io::Write;
use std::path::{Path, PathBuf};

use schedlens::perfetto::proto::schedlens::{self as slpb, schedlens_packet, topology};
use schedlens::perfetto::proto::{self as pb, clock_snapshot, cpu_info, trace_packet};
use tracegen::{Rng, bundle, ev, frame, packet, switch, waking};

pub const START_TS: i64 = 5_000_000_000_000; // 5000 s after boot
pub const IDLE: i64 = 0;
/// Wall-clock time at START_TS (the trace's clock snapshot).
pub const REALTIME_AT_START: i64 = 1_700_000_000_000_000_000;

#[derive(Debug, Clone)]
pub struct Slice {
    pub ts: i64,
    /// -1 for the idle slice each CPU ends the trace in.
    pub dur: i64,
    pub cpu: i64,
    pub utid: i64,
    /// The state its thread left in ("R" for idle), "" while still running.
    pub end_state: &'static str,
}

#[derive(Debug, Clone)]
pub struct State {
    pub ts: i64,
    pub dur: i64,
    pub utid: i64,
    pub state: &'static str,
    pub cpu: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Wakeup {
    /// The wakeup table's id: wakeups are numbered in time order.
    pub id: i64,
    pub ts: i64,
    pub utid: i64,
    /// The task the waking ran in: a random task, or idle (an interrupt).
    pub waker: i64,
    pub cpu: i64,
    pub run_ts: i64,
    pub latency: i64,
}

pub struct Thread {
    pub utid: i64,
    pub tid: i64,
    pub name: String,
    pub upid: i64,
}

pub struct Process {
    pub upid: i64,
    pub pid: i64,
    /// argv[0], as the importer names a process from its command line.
    pub name: String,
    pub parent: Option<i64>,
    pub cmdline: Vec<String>,
}

pub struct Workload {
    pub cpus: i64,
    pub end_ts: i64,
    pub threads: Vec<Thread>,
    pub processes: Vec<Process>,
    pub slices: Vec<Slice>,
    pub states: Vec<State>,
    pub wakeups: Vec<Wakeup>,
    /// (ts, utid) of the sched_process_exec events, all on CPU 0.
    pub execs: Vec<(i64, i64)>,
    /// (ts, cpu, count) of the recorder's one report of lost events.
    pub lost: (i64, i64, i64),
}

/// `cpus` CPUs (LLC and NUMA = cpu / 2), `procs` processes of
/// `threads_per_proc` threads each, and `pairs_per_cpu` (idle, task) slice
/// pairs on each CPU, then a last idle slice. Threads are pinned
/// round-robin to CPUs; each task slice is preceded by a wakeup during the
/// idle slice before it, except after a preemption (R+), which needs none.
pub fn workload(cpus: i64, procs: i64, threads_per_proc: i64, pairs_per_cpu: i64) -> Workload {
    let mut rng = Rng(0x5eed_1234_abcd);
    let mut below = |n: i64| rng.below(n as u64) as i64;
    let mut processes = vec![Process {
        upid: 0,
        pid: 0,
        name: String::new(),
        parent: None,
        cmdline: Vec::new(),
    }];
    let mut threads = vec![Thread {
        utid: 0,
        tid: 0,
        name: "swapper".into(),
        upid: 0,
    }];
    for p in 1..=procs {
        let pid = 1000 + p * 10;
        processes.push(Process {
            upid: p,
            pid,
            name: format!("/usr/bin/proc{p}"),
            parent: if p == 1 { None } else { Some(1 + (p - 2) % 2) },
            cmdline: vec![format!("/usr/bin/proc{p}"), format!("--mode=test{p}")],
        });
        for t in 0..threads_per_proc {
            threads.push(Thread {
                utid: threads.len() as i64,
                tid: pid + t,
                name: if t == 0 {
                    format!("proc{p}")
                } else {
                    format!("worker{p}-{t}")
                },
                upid: p,
            });
        }
    }
    let tasks: Vec<i64> = (1..threads.len() as i64).collect();
    let mut slices = Vec::new();
    let mut states = Vec::new();
    let mut wakeups = Vec::new();
    let mut end_ts = START_TS;
    // Per thread: when its current state began and what it is.
    let mut open: Vec<Option<(i64, &'static str, Option<i64>)>> = vec![None; threads.len()];
    for cpu in 0..cpus {
        let mine: Vec<i64> = tasks
            .iter()
            .copied()
            .filter(|u| (u - 1) % cpus == cpu)
            .collect();
        let mut t = START_TS + cpu * 1_000;
        for i in 0..pairs_per_cpu {
            let idle = 10_000 + below(190_000);
            slices.push(Slice {
                ts: t,
                dur: idle,
                cpu,
                utid: IDLE,
                end_state: "R",
            });
            let run_at = t + idle;
            if mine.is_empty() {
                t = run_at;
                continue;
            }
            let u = mine[i as usize % mine.len()];
            let preempted = matches!(open[u as usize], Some((_, "R+", _)));
            if !preempted {
                let lat = 1_000 + below(idle.min(100_000) - 1_000);
                let wake = run_at - lat;
                if let Some((from, st, c)) = open[u as usize] {
                    states.push(State {
                        ts: from,
                        dur: wake - from,
                        utid: u,
                        state: st,
                        cpu: c,
                    });
                }
                // A woken task's runnable state has no CPU (trace_processor's rule).
                open[u as usize] = Some((wake, "R", None));
                let waker = if below(4) == 0 {
                    IDLE
                } else {
                    tasks[below(tasks.len() as i64) as usize]
                };
                wakeups.push(Wakeup {
                    id: 0,
                    ts: wake,
                    utid: u,
                    waker,
                    cpu,
                    run_ts: run_at,
                    latency: lat,
                });
            }
            if let Some((from, st, c)) = open[u as usize] {
                states.push(State {
                    ts: from,
                    dur: run_at - from,
                    utid: u,
                    state: st,
                    cpu: c,
                });
            }
            let run = 50_000 + below(1_950_000);
            let next = if below(8) == 0 { "R+" } else { "S" };
            slices.push(Slice {
                ts: run_at,
                dur: run,
                cpu,
                utid: u,
                end_state: next,
            });
            states.push(State {
                ts: run_at,
                dur: run,
                utid: u,
                state: "Running",
                cpu: Some(cpu),
            });
            open[u as usize] = Some((run_at + run, next, None));
            t = run_at + run;
        }
        slices.push(Slice {
            ts: t,
            dur: -1,
            cpu,
            utid: IDLE,
            end_state: "",
        });
        end_ts = end_ts.max(t);
    }
    for (u, o) in open.iter().enumerate() {
        if let Some((from, st, c)) = o {
            states.push(State {
                ts: *from,
                dur: -1,
                utid: u as i64,
                state: st,
                cpu: *c,
            });
        }
    }
    // The importer numbers wakeups as they happen (simultaneous ones in
    // CPU order).
    wakeups.sort_by_key(|w| (w.ts, w.cpu));
    for (id, w) in wakeups.iter_mut().enumerate() {
        w.id = id as i64;
    }
    Workload {
        cpus,
        end_ts,
        execs: threads
            .iter()
            .skip(1)
            .take(3)
            .map(|t| (START_TS + 5, t.utid))
            .collect(),
        lost: (START_TS + 100, 1, 42),
        threads,
        processes,
        slices,
        states,
        wakeups,
    }
}

/// Trace time per bundle: each CPU's events of one window go in one bundle,
/// the CPUs' bundles interleaved window by window, as a recorder writes them.
const BUNDLE_NS: i64 = 10_000_000;

/// Writes the workload as a Perfetto trace: the machine's description,
/// one process snapshot per process (so utids follow the workload's
/// numbering), then per CPU the switches, wakings and execs.
pub fn write_trace(w: &Workload, path: &Path) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let at = |ts: i64, data| pb::TracePacket {
        timestamp: Some(ts as u64),
        ..packet(data)
    };
    let mut head = vec![
        packet(trace_packet::Data::SystemInfo(pb::SystemInfo {
            utsname: Some(pb::Utsname {
                sysname: Some("Linux".into()),
                version: Some("#1 SMP".into()),
                release: Some("6.8.0-test".into()),
                machine: Some("x86_64".into()),
            }),
            num_cpus: Some(w.cpus as u32),
            ..Default::default()
        })),
        packet(trace_packet::Data::ClockSnapshot(pb::ClockSnapshot {
            clocks: [(1, REALTIME_AT_START), (6, START_TS)]
                .map(|(id, ts)| clock_snapshot::Clock {
                    clock_id: Some(id),
                    timestamp: Some(ts as u64),
                })
                .to_vec(),
            primary_trace_clock: None,
        })),
        packet(trace_packet::Data::CpuInfo(pb::CpuInfo {
            cpus: (0..w.cpus)
                .map(|_| cpu_info::Cpu {
                    processor: Some("Test CPU @ 3GHz".into()),
                    ..Default::default()
                })
                .collect(),
        })),
        schedlens(
            None,
            schedlens_packet::Data::Topology(slpb::Topology {
                cpus: (0..w.cpus as u32)
                    .map(|cpu| topology::Cpu {
                        cpu: Some(cpu),
                        package_id: Some(0),
                        // CPUs 0 and 1 are SMT siblings on core 0; the others have a core each.
                        core_id: Some(if cpu < 2 { 0 } else { cpu as i32 }),
                        llc_id: Some(cpu as i32 / 2),
                        numa_node: Some(cpu as i32 / 2),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
        ),
    ];
    for p in w.processes.iter().skip(1) {
        let tree = pb::ProcessTree {
            processes: vec![pb::process_tree::Process {
                pid: Some(p.pid as i32),
                ppid: Some(p.parent.map_or(0, |u| w.processes[u as usize].pid) as i32),
                cmdline: p.cmdline.clone(),
                is_kthread: Some(false),
                ..Default::default()
            }],
            threads: w
                .threads
                .iter()
                .filter(|t| t.upid == p.upid)
                .map(|t| pb::process_tree::Thread {
                    tid: Some(t.tid as i32),
                    name: Some(t.name.clone()),
                    tgid: Some(p.pid as i32),
                })
                .collect(),
            collection_end_timestamp: None,
        };
        head.push(at(START_TS, trace_packet::Data::ProcessTree(tree)));
    }
    let (lost_ts, lost_cpu, lost) = w.lost;
    head.push(schedlens(
        Some(lost_ts),
        schedlens_packet::Data::LostEvents(slpb::LostEvents {
            cpu: Some(lost_cpu as u32),
            count: Some(lost as u64),
        }),
    ));
    for p in &head {
        out.write_all(&frame(p)).unwrap();
    }
    let per_cpu = events_per_cpu(w);
    let mut next = vec![0; per_cpu.len()];
    let mut window_end = START_TS + BUNDLE_NS;
    while next.iter().zip(&per_cpu).any(|(&i, evs)| i < evs.len()) {
        for (cpu, evs) in per_cpu.iter().enumerate() {
            let from = next[cpu];
            while next[cpu] < evs.len() && evs[next[cpu]].0 < window_end {
                next[cpu] += 1;
            }
            if next[cpu] > from {
                let events = evs[from..next[cpu]].iter().map(|e| e.1.clone()).collect();
                out.write_all(&frame(&bundle(cpu as u32, events))).unwrap();
            }
        }
        window_end += BUNDLE_NS;
    }
    out.flush().unwrap();
}

fn schedlens(ts: Option<i64>, data: schedlens_packet::Data) -> pb::TracePacket {
    pb::TracePacket {
        timestamp: ts.map(|t| t as u64),
        ..packet(trace_packet::Data::Schedlens(slpb::SchedlensPacket {
            data: Some(data),
        }))
    }
}

/// Each CPU's ftrace events in time order: a switch at the start of every
/// slice (from the CPU's previous slice), the wakings, and the execs.
fn events_per_cpu(w: &Workload) -> Vec<Vec<(i64, pb::FtraceEvent)>> {
    let task = |utid: i64| {
        let t = &w.threads[utid as usize];
        (t.tid as i32, t.name.as_str())
    };
    let mut per_cpu: Vec<Vec<(i64, pb::FtraceEvent)>> = vec![Vec::new(); w.cpus as usize];
    let mut running: Vec<Option<&Slice>> = vec![None; w.cpus as usize];
    for s in &w.slices {
        let c = s.cpu as usize;
        let (prev, prev_state) = match running[c] {
            Some(p) => (
                p.utid,
                if p.end_state == "R+" {
                    0x100
                } else if p.end_state == "S" {
                    1
                } else {
                    0
                },
            ),
            None => (IDLE, 0),
        };
        let (prev_tid, prev_comm) = task(prev);
        let next = task(s.utid);
        per_cpu[c].push((
            s.ts,
            switch(s.ts as u64, (prev_tid, prev_comm, prev_state), next),
        ));
        running[c] = Some(s);
    }
    for x in &w.wakeups {
        let (tid, comm) = task(x.utid);
        let e = waking(x.ts as u64, task(x.waker).0 as u32, tid, comm, x.cpu as i32);
        per_cpu[x.cpu as usize].push((x.ts, e));
    }
    for &(ts, utid) in &w.execs {
        let (tid, _) = task(utid);
        let p = &w.processes[w.threads[utid as usize].upid as usize];
        let exec = pb::SchedProcessExecFtraceEvent {
            filename: Some(p.cmdline[0].clone()),
            pid: Some(tid),
            old_pid: Some(tid),
        };
        let e = ev(
            ts as u64,
            tid as u32,
            pb::ftrace_event::Event::SchedProcessExec(exec),
        );
        per_cpu[0].push((ts, e));
    }
    for evs in &mut per_cpu {
        // Stable: a CPU's events at one time keep the order above.
        evs.sort_by_key(|e| e.0);
    }
    per_cpu
}

/// Writes the workload's trace beside `path` (`<path>.pftrace`) and loads it
/// into a database at `path`, the way `schedlens` loads any trace; checks
/// that the event tables hold exactly the workload's rows.
pub fn write_db(w: &Workload, path: &Path) -> PathBuf {
    let mut trace = path.as_os_str().to_owned();
    trace.push(".pftrace");
    let trace = PathBuf::from(trace);
    write_trace(w, &trace);
    schedlens::analyzer::db::build_into(&trace, path).unwrap();
    check_rows(w, path);
    trace
}

fn check_rows(w: &Workload, db: &Path) {
    let conn = schedlens::analyzer::db::open_readonly(db).unwrap();
    let rows = |sql: &str| -> Vec<Vec<Option<i64>>> {
        let mut st = conn.prepare(sql).unwrap();
        let n = st.column_count();
        let mut rows: Vec<Vec<Option<i64>>> = st
            .query_map([], |r| (0..n).map(|i| r.get(i)).collect())
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        rows.sort();
        rows
    };
    let sorted = |mut v: Vec<Vec<Option<i64>>>| {
        v.sort();
        v
    };
    let state_code = |s: &str| ["Running", "R", "R+", "S", ""].iter().position(|x| *x == s);
    assert_eq!(
        rows("SELECT ts, dur, cpu, utid FROM sched_slice"),
        sorted(
            w.slices
                .iter()
                .map(|s| vec![Some(s.ts), Some(s.dur), Some(s.cpu), Some(s.utid)])
                .collect()
        ),
        "sched_slice"
    );
    assert_eq!(
        rows(
            "SELECT ts, dur, utid, cpu, CASE state WHEN 'Running' THEN 0 WHEN 'R' THEN 1 \
             WHEN 'R+' THEN 2 WHEN 'S' THEN 3 END FROM thread_state"
        ),
        sorted(
            w.states
                .iter()
                .map(|s| {
                    let code = state_code(s.state).map(|c| c as i64);
                    vec![Some(s.ts), Some(s.dur), Some(s.utid), s.cpu, code]
                })
                .collect()
        ),
        "thread_state"
    );
    assert_eq!(
        rows("SELECT id, ts, utid, waker_utid, waking_cpu, run_ts, latency FROM wakeup"),
        sorted(
            w.wakeups
                .iter()
                .map(
                    |x| [x.id, x.ts, x.utid, x.waker, x.cpu, x.run_ts, x.latency]
                        .map(Some)
                        .to_vec()
                )
                .collect()
        ),
        "wakeup"
    );
}

/// Independent answers computed from the raw rows.
impl Workload {
    pub fn busy_in(&self, cpu: i64, lo: i64, hi: i64) -> i64 {
        self.slices
            .iter()
            .filter(|s| s.cpu == cpu && s.utid != IDLE)
            .map(|s| (s.ts + s.dur).min(hi) - s.ts.max(lo))
            .filter(|d| *d > 0)
            .sum()
    }

    pub fn cpu_time(&self, utid: i64) -> i64 {
        self.slices
            .iter()
            .filter(|s| s.utid == utid)
            .map(|s| s.dur)
            .sum()
    }

    pub fn latencies(&self, utids: &[i64]) -> Vec<i64> {
        let mut v: Vec<i64> = self
            .wakeups
            .iter()
            .filter(|w| utids.is_empty() || utids.contains(&w.utid))
            .map(|w| w.latency)
            .collect();
        v.sort_unstable();
        v
    }
}
