//! `schedlens export`: Parquet that DuckDB reads (the `duckdb` Python
//! package, installed by scripts/install-deps.sh) with the same answers as
//! `schedlens query` over each trace, and that reads back to the SQLite rows.
//!
//! The fleet test records two real traces in UTS namespaces named fleet-a
//! and fleet-b (root; see `require_bpf`). With CI=true, missing root or a
//! missing duckdb fails the test instead of skipping it.

mod root;
use arrow_array::{Array, BinaryArray, Float64Array, Int64Array, RecordBatch, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rusqlite::types::Value;
use schedlens::analyzer::db::{self, LoadOptions};
use schedlens::export;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_schedlens");
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/pipe-and-true.pftrace"
);

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// True when python3 can import duckdb; in CI its absence fails the test.
fn require_duckdb() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import duckdb"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            !in_ci(),
            "CI=true but python3 cannot import duckdb (scripts/install-deps.sh installs it)"
        );
        eprintln!("\n!!! SKIPPED: python3 has no duckdb module (pip install duckdb) !!!\n");
    }
    ok
}

fn schedlens(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "schedlens failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The error of a failed run: its one line after the loading notes.
fn last_line(stderr: &str) -> &str {
    stderr.trim_end().lines().last().unwrap_or_default()
}

fn copy_fixture(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::copy(FIXTURE, &p).unwrap();
    p
}

/// A question asked of one trace in SQLite and of the fleet in DuckDB: the
/// fleet form is the per-trace SQL with host and trace added to the output,
/// the joins and the grouping, as a person would write it.
struct Question {
    per_trace: &'static str,
    fleet: &'static str,
}

const QUESTIONS: [Question; 5] = [
    // CPU time per thread (README's first query, without the LIMIT that
    // would cut across hosts).
    Question {
        per_trace: "SELECT t.tid, t.name, sum(s.dur) AS cpu_ns, count(*) AS slices \
                    FROM sched_slice s JOIN thread t USING (utid) WHERE s.dur > 0 AND s.utid <> 0 \
                    GROUP BY s.utid, t.tid, t.name ORDER BY cpu_ns DESC, t.tid, s.utid",
        fleet: "SELECT s.host, t.tid, t.name, sum(s.dur) AS cpu_ns, count(*) AS slices \
                FROM sched_slice s JOIN thread t USING (host, trace, utid) WHERE s.dur > 0 AND s.utid <> 0 \
                GROUP BY s.host, s.trace, s.utid, t.tid, t.name ORDER BY s.host, cpu_ns DESC, t.tid, s.utid",
    },
    // The worst wakeups (README's second query), with the woken thread's name.
    Question {
        per_trace: "SELECT w.id, w.ts, w.latency, t.name FROM wakeup w JOIN thread t USING (utid) \
                    WHERE w.latency IS NOT NULL ORDER BY w.latency DESC, w.id LIMIT 20",
        fleet: "SELECT host, id, ts, latency, name FROM (SELECT w.host, w.id, w.ts, w.latency, t.name, \
                row_number() OVER (PARTITION BY w.host ORDER BY w.latency DESC, w.id) AS n \
                FROM wakeup w JOIN thread t USING (host, trace, utid) WHERE w.latency IS NOT NULL) \
                WHERE n <= 20 ORDER BY host, latency DESC, id",
    },
    // Time in each thread state.
    Question {
        per_trace: "SELECT coalesce(state, '?') AS st, count(*) AS n, sum(dur) AS total \
                    FROM thread_state WHERE dur >= 0 GROUP BY st ORDER BY st",
        fleet: "SELECT host, coalesce(state, '?') AS st, count(*) AS n, sum(dur) AS total \
                FROM thread_state WHERE dur >= 0 GROUP BY host, st ORDER BY host, st",
    },
    // Busy time per CPU.
    Question {
        per_trace: "SELECT cpu, count(*) AS n, sum(dur) AS busy FROM sched_slice \
                    WHERE utid <> 0 AND dur > 0 GROUP BY cpu ORDER BY cpu",
        fleet: "SELECT host, cpu, count(*) AS n, sum(dur) AS busy FROM sched_slice \
                WHERE utid <> 0 AND dur > 0 GROUP BY host, cpu ORDER BY host, cpu",
    },
    // Processes that ran, with their lifecycle events.
    Question {
        per_trace: "SELECT p.pid, p.name, count(e.id) AS events FROM process p \
                    LEFT JOIN thread t USING (upid) LEFT JOIN task_event e USING (utid) \
                    GROUP BY p.upid, p.pid, p.name ORDER BY p.pid, p.upid",
        fleet: "SELECT p.host, p.pid, p.name, count(e.id) AS events FROM process p \
                LEFT JOIN thread t USING (host, trace, upid) LEFT JOIN task_event e USING (host, trace, utid) \
                GROUP BY p.host, p.trace, p.upid, p.pid, p.name ORDER BY p.host, p.pid, p.upid",
    },
];

/// DuckDB over the exported directory: one view per table over its files,
/// then each query's rows as JSON arrays.
const DUCKDB_SCRIPT: &str = r#"
import duckdb, json, sys
out_dir, queries = sys.argv[1], json.load(sys.stdin)
con = duckdb.connect()
for t in ["sched_slice", "thread_state", "wakeup", "thread", "process", "task_event", "metadata"]:
    con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{out_dir}/{t}/*/*/*.parquet', hive_partitioning = true)")
print(json.dumps([con.execute(q).fetchall() for q in queries]))
"#;

fn duckdb(dir: &Path, queries: &[&str]) -> Vec<Vec<Vec<serde_json::Value>>> {
    let mut child = Command::new("python3")
        .args(["-c", DUCKDB_SCRIPT])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    serde_json::to_writer(child.stdin.take().unwrap(), queries).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `schedlens query --format json` as rows of values in column order.
fn query_rows(trace: &Path, sql: &str) -> Vec<Vec<serde_json::Value>> {
    let out = ok(schedlens(&[
        "query",
        trace.to_str().unwrap(),
        sql,
        "--format",
        "csv",
    ]));
    let names: Vec<String> = out
        .lines()
        .next()
        .unwrap()
        .split(',')
        .map(|s| s.trim_matches('"').to_string())
        .collect();
    let json = ok(schedlens(&[
        "query",
        trace.to_str().unwrap(),
        sql,
        "--format",
        "json",
    ]));
    let rows: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_str(&json).unwrap();
    rows.into_iter()
        .map(|r| names.iter().map(|n| r[n].clone()).collect())
        .collect()
}

/// Records ~1 s of this machine in a UTS namespace whose host name is `host`,
/// around a shell that runs `/bin/true` `forks` times.
fn record_as_host(dir: &Path, host: &str, forks: usize) -> PathBuf {
    let trace = dir.join(format!("{host}.pftrace"));
    let script = format!(
        "hostname {host} && exec \"$0\" trace -d 1s -o \"$1\" -- sh -c 'for i in $(seq {forks}); do /bin/true; done; sleep 0.3'"
    );
    let out = Command::new("unshare")
        .args(["--uts", "sh", "-c", &script, BIN])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "recording as {host}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    trace
}

#[test]
fn two_hosts_answer_the_same_in_duckdb_as_in_schedlens_query() {
    if !root::require_bpf() || !require_duckdb() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = record_as_host(dir.path(), "fleet-a", 5);
    let b = record_as_host(dir.path(), "fleet-b", 9);
    let out = dir.path().join("fleet");
    ok(schedlens(&[
        "export",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]));
    for host in ["fleet-a", "fleet-b"] {
        let part = out.join(format!(
            "sched_slice/host={host}/trace={host}.pftrace/part-0.parquet"
        ));
        assert!(part.is_file(), "{} missing", part.display());
    }
    // The recorder wrote each namespace's host name, and the export kept it.
    let hosts = duckdb(
        &out,
        &["SELECT host, str_value FROM metadata WHERE name = 'host_name' ORDER BY host"],
    );
    assert_eq!(
        hosts[0],
        vec![
            vec![serde_json::json!("fleet-a"), serde_json::json!("fleet-a")],
            vec![serde_json::json!("fleet-b"), serde_json::json!("fleet-b")]
        ]
    );
    // Each shell forked its /bin/true children: the exec rows are there.
    let execs = duckdb(
        &out,
        &[
            "SELECT host, count(*) FROM task_event WHERE type = 'exec' AND comm = 'true' GROUP BY host ORDER BY host",
        ],
    );
    let counts: Vec<i64> = execs[0].iter().map(|r| r[1].as_i64().unwrap()).collect();
    assert!(
        counts[0] >= 5 && counts[1] >= 9,
        "exec rows of true: {execs:?}"
    );

    let fleet: Vec<&str> = QUESTIONS.iter().map(|q| q.fleet).collect();
    let answers = duckdb(&out, &fleet);
    for (q, fleet_rows) in QUESTIONS.iter().zip(&answers) {
        let mut expected = Vec::new();
        for (host, trace) in [("fleet-a", &a), ("fleet-b", &b)] {
            for row in query_rows(trace, q.per_trace) {
                let mut r = vec![serde_json::json!(host)];
                r.extend(row);
                expected.push(r);
            }
        }
        assert!(!expected.is_empty(), "no rows for {}", q.per_trace);
        assert_eq!(fleet_rows, &expected, "{}", q.fleet);
    }
}

/// An exported column as SQLite values, to compare with the database's rows.
fn sql_values(a: &dyn Array) -> Vec<Value> {
    let any = a.as_any();
    (0..a.len())
        .map(|i| {
            if a.is_null(i) {
                Value::Null
            } else if let Some(x) = any.downcast_ref::<Int64Array>() {
                Value::Integer(x.value(i))
            } else if let Some(x) = any.downcast_ref::<StringArray>() {
                Value::Text(x.value(i).to_string())
            } else if let Some(x) = any.downcast_ref::<Float64Array>() {
                Value::Real(x.value(i))
            } else if let Some(x) = any.downcast_ref::<BinaryArray>() {
                Value::Blob(x.value(i).to_vec())
            } else {
                panic!("unexpected Arrow type {:?}", a.data_type())
            }
        })
        .collect()
}

#[test]
fn parquet_reads_back_to_the_sqlite_rows_of_every_table() {
    let dir = tempfile::tempdir().unwrap();
    let trace = copy_fixture(dir.path(), "box.pftrace");
    let out = dir.path().join("out");
    ok(schedlens(&[
        "export",
        trace.to_str().unwrap(),
        "--host",
        "box-1",
        "-o",
        out.to_str().unwrap(),
    ]));
    let loaded = db::load(&trace, &LoadOptions::default()).unwrap();
    let conn = db::open_readonly(&loaded.db_path).unwrap();
    let mut nonempty = 0;
    for table in export::select_tables(&[]).unwrap() {
        let path = out.join(format!(
            "{}/host=box-1/trace=box.pftrace/part-0.parquet",
            table.name
        ));
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap()).unwrap();
        let kv = reader
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .unwrap();
        let doc = kv.iter().find(|k| k.key == "schedlens.table.doc").unwrap();
        assert_eq!(
            doc.value.as_deref().unwrap().lines().next(),
            table.doc.first().map(|l| l.trim())
        );
        let batches: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
        let names: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
        let mut got: Vec<Vec<Value>> = Vec::new();
        for b in &batches {
            assert_eq!(b.num_columns(), names.len() + 2, "{}", table.name);
            let cols: Vec<Vec<Value>> =
                b.columns().iter().map(|c| sql_values(c.as_ref())).collect();
            for i in 0..b.num_rows() {
                let row: Vec<Value> = cols.iter().map(|c| c[i].clone()).collect();
                assert_eq!(
                    row[names.len()..],
                    [
                        Value::Text("box-1".into()),
                        Value::Text("box.pftrace".into())
                    ]
                );
                got.push(row[..names.len()].to_vec());
            }
        }
        let order = if table.is_column_file() {
            "id"
        } else {
            "rowid"
        };
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {order}",
            names.join(", "),
            table.name
        );
        let mut stmt = conn.prepare(&sql).unwrap();
        let want: Vec<Vec<Value>> = stmt
            .query_map([], |r| {
                (0..names.len()).map(|i| r.get::<_, Value>(i)).collect()
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, want, "{}", table.name);
        nonempty += usize::from(!want.is_empty());
    }
    // The fixture has rows in most tables: the comparison compared something.
    assert!(nonempty >= 10, "only {nonempty} tables had rows");
}

#[test]
fn an_existing_partition_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let trace = copy_fixture(dir.path(), "box.pftrace");
    let out = dir.path().join("out");
    let args = [
        "export",
        trace.to_str().unwrap(),
        "--host",
        "h",
        "-o",
        out.to_str().unwrap(),
        "--tables",
        "thread",
    ];
    ok(schedlens(&args));
    let part = out.join("thread/host=h/trace=box.pftrace/part-0.parquet");
    let before = std::fs::read(&part).unwrap();
    let again = schedlens(&args);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(last_line(&err).contains("exists already"), "{err}");
    assert_eq!(std::fs::read(&part).unwrap(), before);
}

#[test]
fn bad_output_traces_and_tables_get_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let trace = copy_fixture(dir.path(), "box.pftrace");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let garbage = dir.path().join("garbage.pftrace");
    std::fs::write(&garbage, [0xffu8; 64]).unwrap();
    let t = trace.to_str().unwrap();
    let under_file = file.join("out");
    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "export",
                t,
                "--host",
                "h",
                "-o",
                under_file.to_str().unwrap(),
            ],
            "cannot create",
        ),
        (
            &[
                "export",
                garbage.to_str().unwrap(),
                "--host",
                "h",
                "-o",
                "x",
            ],
            "cannot load",
        ),
        (&["export", t, "-o", "x"], "--host"),
        (
            &["export", t, "--host", "a/b", "-o", "x"],
            "cannot name a partition",
        ),
        (
            &["export", t, "--host", "h", "--tables", "nope", "-o", "x"],
            "no table \"nope\"",
        ),
    ];
    for (args, want) in cases {
        let o = Command::new(BIN)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(last_line(&err).contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // Nothing was written for the refused exports.
    assert!(!dir.path().join("x").exists());
}

#[test]
fn temporaries_of_killed_exports_are_removed_and_a_live_exports_kept() {
    use std::os::fd::AsRawFd as _;
    let dir = tempfile::tempdir().unwrap();
    let trace = copy_fixture(dir.path(), "box.pftrace");
    let out = dir.path().join("out");
    let part_dir = out.join("thread/host=h/trace=box.pftrace");
    std::fs::create_dir_all(&part_dir).unwrap();
    // What `kill -9` of an export leaves: a hidden, unlocked, unfinished file.
    let dead = part_dir.join(".part-0.parquet.k3j9qX.tmp");
    std::fs::write(&dead, b"PAR1 half a file").unwrap();
    // An export still writing holds the lock on its temporary.
    let live = part_dir.join(".part-0.parquet.Lv8ve2.tmp");
    let held = std::fs::File::create(&live).unwrap();
    // SAFETY: a valid open descriptor; flock only takes a lock.
    assert_eq!(
        unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    // Not our naming: never touched.
    let other = part_dir.join(".part-0.parquet.tmp.keep");
    std::fs::write(&other, b"x").unwrap();
    let out_s = out.to_str().unwrap();
    let args = [
        "export",
        trace.to_str().unwrap(),
        "--host",
        "h",
        "-o",
        out_s,
        "--tables",
        "thread",
    ];
    let run = schedlens(&args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("left by an export that was killed"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut names: Vec<String> = std::fs::read_dir(&part_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".part-0.parquet.Lv8ve2.tmp",
            ".part-0.parquet.tmp.keep",
            "part-0.parquet"
        ]
    );
    // The export renamed its own temporary into place: none of its own is left.
    let reader = ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(part_dir.join("part-0.parquet")).unwrap(),
    )
    .unwrap();
    assert!(reader.metadata().file_metadata().num_rows() > 0);
    // A rerun refused because a partition exists (the killed export got that
    // far) still removes what the killed one left in the partitions after it.
    let later = out.join("wakeup/host=h/trace=box.pftrace");
    std::fs::create_dir_all(&later).unwrap();
    let dead = later.join(".part-0.parquet.Zq81mv.tmp");
    std::fs::write(&dead, b"PAR1 half a file").unwrap();
    let mut refused = args.to_vec();
    *refused.last_mut().unwrap() = "thread,wakeup";
    let again = schedlens(&refused);
    assert!(!again.status.success());
    assert!(!dead.exists(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(live.exists());
    drop(held);
}
