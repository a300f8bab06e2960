//! A synthetic scheduler workload written straight into the analysis schema,
//! with the raw rows kept so tests compute expected answers independently of
//! the SQL under test. (Until the importer is merged, the MCP tests serve this
//! database with the hidden `--db` option.)

#![allow(dead_code)] // each test binary uses part of it

use std::path::Path;

use rusqlite::{Connection, params};
use schedlens::analyzer::columns::{self, ColumnFile, ColumnRow, Layout, Put, TableWriter};
use schedlens::analyzer::strings::Str;

pub const START_TS: i64 = 5_000_000_000_000; // 5000 s after boot
pub const IDLE: i64 = 0;

#[derive(Debug, Clone)]
pub struct Slice {
    pub ts: i64,
    pub dur: i64,
    pub cpu: i64,
    pub utid: i64,
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
    pub id: i64,
    pub ts: i64,
    pub utid: i64,
    pub waker: Option<i64>,
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
    pub name: String,
    pub parent: Option<i64>,
    pub cmdline: String,
}

pub struct Workload {
    pub cpus: i64,
    pub end_ts: i64,
    pub threads: Vec<Thread>,
    pub processes: Vec<Process>,
    pub slices: Vec<Slice>,
    pub states: Vec<State>,
    pub wakeups: Vec<Wakeup>,
}

/// Deterministic pseudo-random numbers (xorshift), so runs repeat exactly.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: i64) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as i64
    }
}

/// `cpus` CPUs (LLC and NUMA = cpu / 2), `procs` processes of
/// `threads_per_proc` threads each, and `pairs_per_cpu` (idle, task) slice
/// pairs on each CPU. Threads are pinned round-robin to CPUs; each task slice
/// is preceded by a wakeup during the idle slice before it, except after a
/// preemption (R+), which needs none.
pub fn workload(cpus: i64, procs: i64, threads_per_proc: i64, pairs_per_cpu: i64) -> Workload {
    let mut rng = Rng(0x5eed_1234_abcd);
    let mut processes = vec![Process {
        upid: 0,
        pid: 0,
        name: "swapper".into(),
        parent: None,
        cmdline: String::new(),
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
            name: format!("proc{p}"),
            parent: if p == 1 { None } else { Some(1 + (p - 2) % 2) },
            cmdline: format!("/usr/bin/proc{p} --mode=test{p}"),
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
            let idle = 10_000 + rng.below(190_000);
            slices.push(Slice {
                ts: t,
                dur: idle,
                cpu,
                utid: IDLE,
            });
            let run_at = t + idle;
            if mine.is_empty() {
                t = run_at;
                continue;
            }
            let u = mine[i as usize % mine.len()];
            let preempted = matches!(open[u as usize], Some((_, "R+", _)));
            if !preempted {
                let lat = 1_000 + rng.below(idle.min(100_000) - 1_000);
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
                open[u as usize] = Some((wake, "R", Some(cpu)));
                let waker = if rng.below(4) == 0 {
                    None
                } else {
                    Some(tasks[rng.below(tasks.len() as i64) as usize])
                };
                wakeups.push(Wakeup {
                    id: wakeups.len() as i64,
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
            let run = 50_000 + rng.below(1_950_000);
            slices.push(Slice {
                ts: run_at,
                dur: run,
                cpu,
                utid: u,
            });
            states.push(State {
                ts: run_at,
                dur: run,
                utid: u,
                state: "Running",
                cpu: Some(cpu),
            });
            let next = if rng.below(8) == 0 { "R+" } else { "S" };
            open[u as usize] = Some((run_at + run, next, None));
            t = run_at + run;
        }
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
    Workload {
        cpus,
        end_ts,
        threads,
        processes,
        slices,
        states,
        wakeups,
    }
}

/// Writes the workload into a new database at `path` with the schema and the
/// importer's indexes.
pub fn write_db(w: &Workload, path: &Path) {
    let mut c = Connection::open(path).unwrap();
    columns::register(&c).unwrap();
    c.execute_batch(schedlens::analyzer::schema::TABLES_SQL)
        .unwrap();
    let tx = c.transaction().unwrap();
    tx.execute(
        "INSERT INTO trace_bounds VALUES (?1, ?2)",
        params![START_TS, w.end_ts],
    )
    .unwrap();
    for (k, s, i) in [
        ("system_name", Some("Linux"), None),
        ("system_release", Some("6.8.0-test"), None),
        ("system_machine", Some("x86_64"), None),
        ("num_cpus", None, Some(w.cpus)),
        (
            "realtime_offset_ns",
            None,
            Some(1_700_000_000_000_000_000 - START_TS),
        ),
    ] {
        tx.execute(
            "INSERT INTO metadata VALUES (?1, 'single', ?2, ?3)",
            params![k, i, s],
        )
        .unwrap();
    }
    for cpu in 0..w.cpus {
        tx.execute(
            "INSERT INTO cpu (id, cpu, processor, package_id, core_id, llc_id, numa_node)
             VALUES (?1, ?1, 'Test CPU @ 3GHz', 0, ?1, ?2, ?2)",
            params![cpu, cpu / 2],
        )
        .unwrap();
    }
    for p in &w.processes {
        tx.execute(
            "INSERT INTO process (upid, pid, name, parent_upid, cmdline, is_kthread)
             VALUES (?1, ?2, ?3, ?4, ?5, 0)",
            params![p.upid, p.pid, p.name, p.parent, p.cmdline],
        )
        .unwrap();
    }
    for t in &w.threads {
        tx.execute(
            "INSERT INTO thread (utid, tid, name, upid, is_main_thread, is_idle)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                t.utid,
                t.tid,
                t.name,
                t.upid,
                t.tid == 1000 + t.upid * 10,
                t.tid == 0
            ],
        )
        .unwrap();
    }
    {
        write_columns(w, path, &tx);
        let mut st = tx
            .prepare("INSERT INTO task_event (ts, type, utid, tid, pid, comm, cpu) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)")
            .unwrap();
        for t in w.threads.iter().skip(1).take(3) {
            st.execute(params![START_TS + 5, "exec", t.utid, t.tid, t.tid, t.name])
                .unwrap();
        }
        tx.execute(
            "INSERT INTO ftrace_event (ts, name, cpu, utid, args) VALUES (?1, 'sched_process_exec', 0, 1, '{\"pid\":1010}')",
            [START_TS + 5],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO lost_events (ts, cpu, count) VALUES (?1, 1, 42)",
            [START_TS + 100],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    c.execute_batch(schedlens::analyzer::db::INDEXES_SQL)
        .unwrap();
    schedlens::analyzer::aggregate::build_from_tables(&c).unwrap();
}

struct SliceRow<'a>(i64, &'a Slice, Str);
struct StateRow<'a>(i64, &'a State, Str);
struct WakeupRow<'a>(&'a Wakeup);

impl ColumnRow for SliceRow<'_> {
    const LAYOUT: &'static Layout = &columns::SCHED_SLICE;
    fn id(&self) -> i64 {
        self.0
    }
    fn put(&self, out: &mut impl Put) {
        let s = self.1;
        out.int(Some(s.ts));
        out.int(Some(s.dur));
        out.int(Some(s.cpu as u32));
        out.int(Some(s.utid as u32));
        out.int(Some(self.2));
        out.int(Some(120));
    }
}

impl ColumnRow for StateRow<'_> {
    const LAYOUT: &'static Layout = &columns::THREAD_STATE;
    fn id(&self) -> i64 {
        self.0
    }
    fn put(&self, out: &mut impl Put) {
        let s = self.1;
        out.int(Some(s.ts));
        out.int(Some(s.dur));
        out.int(s.cpu.map(|c| c as u32));
        out.int(Some(s.utid as u32));
        out.int(Some(self.2));
        out.int(None::<i64>);
        out.int(None::<i64>);
        out.int(None::<i64>);
        out.int(None::<i64>);
        out.int(None::<i64>);
    }
}

impl ColumnRow for WakeupRow<'_> {
    const LAYOUT: &'static Layout = &columns::WAKEUP;
    fn id(&self) -> i64 {
        self.0.id
    }
    fn put(&self, out: &mut impl Put) {
        let x = self.0;
        out.int(Some(x.ts));
        out.int(Some(x.utid as u32));
        out.int(x.waker.map(|u| u as u32));
        out.int(Some(x.cpu as u32));
        out.int(Some(x.cpu as i32));
        out.int(Some(x.run_ts));
        out.int(Some(x.cpu as u32));
        out.int(Some(120));
    }
}

/// The column file of the database at `path` (sched_slice, thread_state,
/// wakeup), written the way the importer writes it; its build id goes in
/// the metadata.
fn write_columns(w: &Workload, path: &Path, tx: &Connection) {
    // The column file's strings; rows hold indexes into it.
    let mut strings: Vec<String> = Vec::new();
    let mut intern = |s: &str| -> Str {
        match strings.iter().position(|x| x == s) {
            Some(i) => i as Str,
            None => {
                strings.push(s.to_string());
                (strings.len() - 1) as Str
            }
        }
    };
    let mut file = ColumnFile::create(Some(&columns::path_for(path))).unwrap();
    let mut slices = TableWriter::default();
    let mut states = TableWriter::default();
    let mut wakeups = TableWriter::default();
    let s_state = intern("S");
    let mut sorted: Vec<&Slice> = w.slices.iter().collect();
    sorted.sort_by_key(|s| (s.ts, s.cpu));
    for (id, s) in sorted.into_iter().enumerate() {
        slices
            .add(SliceRow(id as i64, s, s_state), &mut file)
            .unwrap();
    }
    let mut sorted: Vec<&State> = w.states.iter().collect();
    sorted.sort_by_key(|s| (s.ts, s.utid));
    for (id, s) in sorted.into_iter().enumerate() {
        let state = intern(s.state);
        states
            .add(StateRow(id as i64, s, state), &mut file)
            .unwrap();
    }
    for x in &w.wakeups {
        wakeups.add(WakeupRow(x), &mut file).unwrap();
    }
    slices.flush(&mut file).unwrap();
    states.flush(&mut file).unwrap();
    wakeups.flush(&mut file).unwrap();
    tx.execute(
        "INSERT INTO metadata VALUES ('columns_build_id', 'single', ?1, NULL)",
        [file.build_id() as i64],
    )
    .unwrap();
    file.finish(&mut [&mut slices, &mut states, &mut wakeups], strings)
        .unwrap();
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
