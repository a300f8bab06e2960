//! PerfettoSQL on a real recording (fixtures/pipe-and-true.pftrace): the args
//! table, EXTRACT_ARG and `raw` against the file decoded with Perfetto's
//! official definitions (tests/oracle).

mod oracle;
mod tracegen;

use perfetto_protos::ftrace_event::ftrace_event::Event as Fe;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_schedlens");
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/pipe-and-true.pftrace"
);

/// A copy of the fixture in a temp dir, so the cache lands there, not in the repo.
fn copy_fixture() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipe-and-true.pftrace");
    std::fs::copy(FIXTURE, &path).unwrap();
    (dir, path)
}

/// `schedlens query --format csv`, the rows without the header.
fn query(trace: &Path, sql: &str) -> Vec<String> {
    let out = Command::new(BIN)
        .args(["query", "--format", "csv"])
        .arg(trace)
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(String::from)
        .collect()
}

#[test]
fn args_hold_the_fields_of_the_official_decoding() {
    let d = oracle::decode(Path::new(FIXTURE));
    // (ts, child_pid, parent_pid) of each fork; (ts, pid, filename) of each exec.
    let mut forks = Vec::new();
    let mut execs = Vec::new();
    for p in &d.packets {
        for e in &p.ftrace_events().event {
            match &e.event {
                Some(Fe::SchedProcessFork(f)) => forks.push(format!(
                    "{},{},{}",
                    e.timestamp(),
                    f.child_pid(),
                    f.parent_pid()
                )),
                Some(Fe::SchedProcessExec(x)) => execs.push(format!(
                    "{},{},\"{}\"",
                    e.timestamp(),
                    x.pid(),
                    x.filename()
                )),
                _ => {}
            }
        }
    }
    forks.sort();
    execs.sort();
    assert!(forks.len() >= 7 && execs.len() >= 6, "{forks:?} {execs:?}");
    let (_dir, trace) = copy_fixture();
    let mut got = query(
        &trace,
        "SELECT ts, EXTRACT_ARG(arg_set_id, 'child_pid'), extract_arg(arg_set_id, 'parent_pid') \
         FROM raw WHERE name = 'sched_process_fork'",
    );
    got.sort();
    assert_eq!(got, forks);
    // The same through a join of args, Perfetto's other way of reading them.
    let mut got = query(
        &trace,
        "SELECT e.ts, p.int_value, f.string_value FROM ftrace_event e \
         JOIN args p ON p.arg_set_id = e.arg_set_id AND p.key = 'pid' \
         JOIN args f ON f.arg_set_id = e.arg_set_id AND f.flat_key = 'filename' \
         WHERE e.name = 'sched_process_exec'",
    );
    got.sort();
    assert_eq!(got, execs);
    // Every field of every event is an args row with its type, and no other rows exist.
    let mismatched = query(
        &trace,
        "SELECT count(*) FROM ftrace_event e, json_each(e.args) j \
         LEFT JOIN args a ON a.arg_set_id = e.arg_set_id AND a.key = j.key \
         WHERE a.key IS NULL OR (j.type = 'integer' AND (a.int_value IS NOT j.value OR a.value_type != 'int')) \
            OR (j.type = 'text' AND (a.string_value IS NOT j.value OR a.value_type != 'string'))",
    );
    assert_eq!(mismatched, ["0"]);
    let counts = query(
        &trace,
        "SELECT (SELECT count(*) FROM args), \
                (SELECT count(*) FROM ftrace_event e, json_each(e.args) j)",
    );
    let (args, fields) = counts[0].split_once(',').unwrap();
    assert_eq!(args, fields);
    // An unknown key or a NULL set is NULL, as in Perfetto.
    assert_eq!(
        query(
            &trace,
            "SELECT EXTRACT_ARG(0, 'no_such_key'), EXTRACT_ARG(NULL, 'pid')"
        ),
        ["\"[NULL]\",\"[NULL]\""]
    );
}

/// The fixture loaded into a database, for reading rows directly.
fn loaded() -> (tempfile::TempDir, PathBuf) {
    let (dir, trace) = copy_fixture();
    let db_path = dir.path().join("fixture.db");
    schedlens::analyzer::db::build_into(&trace, &db_path).unwrap();
    (dir, db_path)
}

/// Rows of `sql` (after its includes) as vectors of values.
fn rows(db: &Path, sql: &str) -> Vec<Vec<Value>> {
    let (conn, sql) = schedlens::analyzer::query::open_for(db, sql).unwrap();
    let mut st = conn.prepare(sql).unwrap();
    let n = st.column_count();
    st.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Integer(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

fn opt(v: &Value) -> Option<i64> {
    match v {
        Value::Null => None,
        other => Some(int(other)),
    }
}

use rusqlite::types::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

/// sched.runnable and sched.latency against a walk over each thread's
/// states in time order.
#[test]
fn latency_modules_match_a_walk_over_thread_state() {
    let (_d, db) = loaded();
    let states = rows(
        &db,
        "SELECT id, utid, state, ts, dur, waker_utid, irq_context FROM thread_state ORDER BY utid, id",
    );
    let slices: HashMap<(i64, i64, i64), i64> = rows(&db, "SELECT utid, ts, dur, id FROM sched")
        .iter()
        .map(|r| ((int(&r[0]), int(&r[1]), int(&r[2])), int(&r[3])))
        .collect();
    // Running id -> (latest R/R+ before it, latest woken R before it).
    let mut want_prev = BTreeMap::new();
    let mut want_latency = BTreeMap::new();
    let mut by_id = HashMap::new();
    let mut thread = None;
    let (mut runnable, mut woken): (Option<i64>, Option<i64>) = (None, None);
    for r in &states {
        let (id, utid, dur) = (int(&r[0]), int(&r[1]), int(&r[4]));
        let state = match &r[2] {
            Value::Text(s) => s.as_str(),
            _ => "",
        };
        by_id.insert(id, (utid, int(&r[3]), dur));
        if thread != Some(utid) {
            (thread, runnable, woken) = (Some(utid), None, None);
        }
        if dur == -1 || !matches!(state, "R" | "R+" | "Running") {
            continue;
        }
        if state != "Running" {
            runnable = Some(id);
            if opt(&r[5]).is_some() && opt(&r[6]) != Some(1) {
                woken = Some(id);
            }
            continue;
        }
        want_prev.insert(id, (runnable, woken));
        if let Some(prev) = runnable {
            let ts = int(&r[3]);
            if let Some(&sched_id) = slices.get(&(utid, ts, dur)) {
                want_latency.insert(id, (sched_id, utid, prev));
            }
        }
    }
    let got_prev: BTreeMap<i64, (Option<i64>, Option<i64>)> = rows(
        &db,
        "INCLUDE PERFETTO MODULE sched.runnable; SELECT * FROM sched_previous_runnable_on_thread",
    )
    .iter()
    .map(|r| (int(&r[0]), (opt(&r[1]), opt(&r[2]))))
    .collect();
    assert!(want_prev.len() > 10_000, "{}", want_prev.len());
    assert_eq!(got_prev, want_prev);
    let got: Vec<Vec<Value>> = rows(
        &db,
        "INCLUDE PERFETTO MODULE sched.latency;
         SELECT thread_state_id, sched_id, utid, runnable_latency_id, latency_dur
         FROM sched_latency_for_running_interval",
    );
    let got_latency: BTreeMap<i64, (i64, i64, i64)> = got
        .iter()
        .map(|r| {
            let prev = int(&r[3]);
            assert_eq!(
                int(&r[4]),
                by_id[&prev].2,
                "latency is the runnable state's dur"
            );
            (int(&r[0]), (int(&r[1]), int(&r[2]), prev))
        })
        .collect();
    assert_eq!(got.len(), got_latency.len(), "one row per running state");
    assert!(want_latency.len() > 10_000, "{}", want_latency.len());
    assert_eq!(got_latency, want_latency);
}

/// sched.time_in_state against sums in Rust.
#[test]
fn time_in_state_matches_sums() {
    let (_d, db) = loaded();
    let mut per_state: BTreeMap<(i64, String), i64> = BTreeMap::new();
    let mut total: HashMap<i64, i64> = HashMap::new();
    for r in rows(&db, "SELECT utid, state, dur FROM thread_state") {
        let state = match &r[1] {
            Value::Text(s) => s.clone(),
            _ => String::new(),
        };
        *per_state.entry((int(&r[0]), state)).or_default() += int(&r[2]);
        *total.entry(int(&r[0])).or_default() += int(&r[2]);
    }
    let got: BTreeMap<(i64, String), (i64, i64, i64)> = rows(
        &db,
        "INCLUDE PERFETTO MODULE sched.time_in_state;
         SELECT utid, state, total_runtime, time_in_state, percentage_in_state
         FROM sched_time_in_state_for_thread WHERE state IS NOT NULL",
    )
    .iter()
    .map(|r| {
        let Value::Text(state) = &r[1] else { panic!() };
        (
            (int(&r[0]), state.clone()),
            (int(&r[2]), int(&r[3]), int(&r[4])),
        )
    })
    .collect();
    let want: BTreeMap<(i64, String), (i64, i64, i64)> = per_state
        .iter()
        .filter(|((_, s), _)| !s.is_empty())
        .map(|((u, s), t)| ((*u, s.clone()), (total[u], *t, t * 100 / total[u])))
        .collect();
    assert!(want.len() > 20, "{}", want.len());
    assert_eq!(got, want);
    // The percentage table's running column is the Running row's percentage.
    let pct: HashMap<i64, Option<i64>> = rows(
        &db,
        "INCLUDE PERFETTO MODULE sched.time_in_state;
         SELECT utid, running FROM sched_percentage_of_time_in_state",
    )
    .iter()
    .map(|r| (int(&r[0]), opt(&r[1])))
    .collect();
    for ((u, s), (_, _, p)) in &want {
        if s == "Running" {
            assert_eq!(pct[u], Some(*p), "utid {u}");
        }
    }
}

/// linux.cpu.utilization against the sched rows summed in Rust: per second
/// (each slice in the second it starts in, cut at its end), and per thread
/// and process inside an interval (each slice cut to it).
#[test]
fn cpu_utilization_matches_sums() {
    let (_d, db) = loaded();
    let idle: HashSet<i64> = rows(&db, "SELECT utid FROM thread WHERE is_idle")
        .iter()
        .map(|r| int(&r[0]))
        .collect();
    let upid: HashMap<i64, Option<i64>> = rows(&db, "SELECT utid, upid FROM thread")
        .iter()
        .map(|r| (int(&r[0]), opt(&r[1])))
        .collect();
    let sched: Vec<(i64, i64, i64, i64)> = rows(&db, "SELECT ts, dur, cpu, utid FROM sched")
        .iter()
        .map(|r| (int(&r[0]), int(&r[1]), int(&r[2]), int(&r[3])))
        .collect();
    let bounds = rows(&db, "SELECT start_ts, end_ts FROM trace_bounds");
    let (start, end) = (int(&bounds[0][0]), int(&bounds[0][1]));
    let cpus = sched.iter().map(|s| s.2).max().unwrap() + 1;
    const SEC: i64 = 1_000_000_000;
    let mut busy: BTreeMap<i64, i64> = BTreeMap::new();
    for &(ts, dur, _, utid) in &sched {
        if idle.contains(&utid) {
            continue;
        }
        let part = ts / SEC * SEC;
        *busy.entry(part).or_default() += (ts + dur).min(part + SEC) - ts;
    }
    let got = rows(
        &db,
        "INCLUDE PERFETTO MODULE linux.cpu.utilization.system; SELECT * FROM cpu_utilization_per_second",
    );
    assert_eq!(got.len(), busy.len());
    assert!(
        busy.keys()
            .all(|&p| p >= start / SEC * SEC && p <= end / SEC * SEC)
    );
    for (r, (part, b)) in got.iter().zip(&busy) {
        assert_eq!(int(&r[0]), *part);
        let (Value::Real(u), Value::Real(raw)) = (&r[1], &r[2]) else {
            panic!("{r:?}")
        };
        assert!((raw - *b as f64 / SEC as f64).abs() < 1e-12, "{r:?} vs {b}");
        assert!((u - *b as f64 / SEC as f64 / cpus as f64).abs() < 1e-12);
    }
    // The middle half of the trace.
    let (from, len) = (start + (end - start) / 4, (end - start) / 2);
    let mut per_thread: BTreeMap<i64, i64> = BTreeMap::new();
    for &(ts, dur, _, utid) in &sched {
        let overlap = (ts + dur).min(from + len) - ts.max(from);
        if dur > 0 && overlap > 0 && !idle.contains(&utid) {
            *per_thread.entry(utid).or_default() += overlap;
        }
    }
    let got: BTreeMap<i64, i64> = rows(
        &db,
        &format!(
            "INCLUDE PERFETTO MODULE linux.cpu.utilization.thread;
             SELECT utid, awake_dur FROM cpu_thread_utilization_in_interval({from}, {len})"
        ),
    )
    .iter()
    .map(|r| (int(&r[0]), int(&r[1])))
    .collect();
    assert!(per_thread.len() > 3, "{per_thread:?}");
    assert_eq!(got, per_thread);
    let mut per_process: BTreeMap<i64, i64> = BTreeMap::new();
    for (utid, d) in &per_thread {
        if let Some(p) = upid[utid] {
            *per_process.entry(p).or_default() += d;
        }
    }
    let got: BTreeMap<i64, i64> = rows(
        &db,
        &format!(
            "INCLUDE PERFETTO MODULE linux.cpu.utilization.process;
             SELECT upid, awake_dur FROM cpu_process_utilization_in_interval({from}, {len})"
        ),
    )
    .iter()
    .map(|r| (int(&r[0]), int(&r[1])))
    .collect();
    assert_eq!(got, per_process);
}

/// CPU cycles: the running time of a thread cut where its CPU's frequency
/// changes, on a hand-made trace whose answer is worked out below.
#[test]
fn cpu_cycles_follow_frequency_changes() {
    use schedlens::perfetto::proto::{CpuFrequencyFtraceEvent, ftrace_event::Event};
    use tracegen::*;
    let freq = |ts, khz| {
        ev(
            ts,
            0,
            Event::CpuFrequency(CpuFrequencyFtraceEvent {
                state: Some(khz),
                cpu_id: Some(0),
            }),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("freq.pftrace");
    let packets = vec![
        system_info("6.8.0"),
        bundle(
            0,
            vec![
                freq(500, 1_000_000),
                switch(1_000, (0, "swapper/0", 0), (100, "app")),
                freq(1_500, 2_000_000),
                switch(3_000, (100, "app", 1), (0, "swapper/0")),
                switch(4_000, (0, "swapper/0", 0), (100, "app")),
                switch(5_000, (100, "app", 1), (0, "swapper/0")),
            ],
        ),
    ];
    write(&trace, &encode(&packets));
    let db = dir.path().join("freq.db");
    schedlens::analyzer::db::build_into(&trace, &db).unwrap();
    // app runs [1000, 1500) at 1 GHz, [1500, 3000) and [4000, 5000) at 2 GHz:
    // 500 x 1e6 / 1000 + 1500 x 2e6 / 1000 + 1000 x 2e6 / 1000 millicycles.
    let got = rows(
        &db,
        "INCLUDE PERFETTO MODULE linux.cpu.utilization.thread;
         SELECT millicycles, runtime, min_freq, max_freq, avg_freq FROM cpu_cycles_per_thread
         JOIN thread USING (utid) WHERE tid = 100",
    );
    let want = [5_500_000, 3_000, 1_000_000, 2_000_000, 5_500_000 / 3];
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].iter().map(int).collect::<Vec<_>>(), want);
    // Inside [1200, 4200): 300 ns at 1 GHz, 1500 + 200 ns at 2 GHz.
    let got = rows(
        &db,
        "INCLUDE PERFETTO MODULE linux.cpu.utilization.thread;
         SELECT millicycles, runtime, awake_runtime FROM cpu_cycles_per_thread_in_interval(1200, 3000)
         JOIN thread USING (utid) WHERE tid = 100",
    );
    assert_eq!(
        got[0].iter().map(int).collect::<Vec<_>>(),
        [300_000 + 3_400_000, 2_000, 2_000]
    );
    let got = rows(
        &db,
        "INCLUDE PERFETTO MODULE linux.cpu.utilization.system; SELECT millicycles, runtime FROM cpu_cycles",
    );
    assert_eq!(
        got[0].iter().map(int).collect::<Vec<_>>(),
        [5_500_000, 3_000]
    );
}
