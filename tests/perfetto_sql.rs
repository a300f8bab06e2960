//! PerfettoSQL on a real recording (fixtures/pipe-and-true.pftrace): the args
//! table, EXTRACT_ARG and `raw` against the file decoded with Perfetto's
//! official definitions (tests/oracle).

mod oracle;

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
         WHERE a.id IS NULL OR (j.type = 'integer' AND (a.int_value IS NOT j.value OR a.value_type != 'int')) \
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
