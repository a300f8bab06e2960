//! The column store behind sched_slice, thread_state and wakeup: every
//! access path of the virtual tables must give exactly what SQLite gives on
//! a plain copy of the same rows, and the rows written late (a thread that
//! sleeps past the reorder window) must land in place.

mod tracegen;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};
use schedlens::analyzer::{columns, db};

/// A trace whose tasks sleep across far more rows than the writer's reorder
/// window (20 000 tasks per CPU take turns), over several blocks per table.
fn loaded() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pftrace");
    tracegen::write_synthetic(&trace, 400_000, 2, 20_000, 2000);
    let path = dir.path().join("t.db");
    db::build_into(&trace, &path).unwrap();
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE).unwrap();
    columns::register(&conn).unwrap();
    for t in ["sched_slice", "thread_state", "wakeup"] {
        conn.execute_batch(&format!(
            "CREATE TEMP TABLE ref_{t} AS SELECT * FROM {t} ORDER BY id"
        ))
        .unwrap();
    }
    conn.execute_batch(
        "CREATE TEMP VIEW ref_sched AS SELECT *, ts + dur AS ts_end FROM ref_sched_slice",
    )
    .unwrap();
    (dir, conn)
}

fn rows(conn: &Connection, sql: &str) -> Vec<Vec<Value>> {
    let mut st = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let n = st.column_count();
    st.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn scalar(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn every_access_path_matches_a_plain_table() {
    let (_dir, conn) = loaded();
    let (lo, hi) = {
        let (a, b): (i64, i64) = conn
            .query_row("SELECT min(ts), max(ts) FROM sched_slice", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        (a + (b - a) / 3, a + (b - a) * 2 / 3)
    };
    let mid_id = scalar(&conn, "SELECT count(*) / 2 FROM thread_state");
    let busy = scalar(
        &conn,
        "SELECT utid FROM sched_slice WHERE utid != 0 GROUP BY utid ORDER BY count(*) DESC LIMIT 1",
    );
    // {X} is the table: the virtual table, then its plain copy.
    let queries = [
        "SELECT * FROM {sched_slice} WHERE utid = {busy} ORDER BY ts",
        "SELECT * FROM {sched_slice} WHERE cpu = 1 AND ts >= {lo} AND ts < {hi} ORDER BY ts",
        "SELECT * FROM {sched_slice} WHERE cpu = 1 AND ts < {hi} ORDER BY ts DESC LIMIT 3",
        "SELECT * FROM {sched_slice} WHERE ts BETWEEN {lo} AND {hi} ORDER BY id DESC LIMIT 7",
        "SELECT * FROM {sched} WHERE cpu = 0 AND ts_end > {lo} AND ts < {lo} + 100000 ORDER BY ts",
        "SELECT utid, count(*), sum(dur) FROM {sched_slice} GROUP BY utid ORDER BY utid",
        "SELECT cpu, count(*) FROM {sched_slice} GROUP BY cpu ORDER BY cpu",
        "SELECT utid, sum(dur) s FROM {sched_slice} GROUP BY utid ORDER BY s DESC, utid LIMIT 5",
        "SELECT DISTINCT cpu FROM {sched_slice} ORDER BY cpu DESC",
        "SELECT DISTINCT utid FROM {wakeup} WHERE ts > {lo} ORDER BY utid DESC LIMIT 4",
        "SELECT max(ts) FROM {thread_state} WHERE utid = {busy} AND ts <= {hi}",
        "SELECT min(ts) FROM {thread_state} WHERE utid = {busy} AND ts > {lo}",
        "SELECT * FROM {thread_state} WHERE id = {mid_id}",
        "SELECT * FROM {thread_state} WHERE id = 999999999",
        "SELECT * FROM {thread_state} WHERE id = 12.5",
        "SELECT * FROM {thread_state} WHERE id = '12'",
        "SELECT * FROM {thread_state} WHERE id IS NULL",
        "SELECT * FROM {thread_state} WHERE id >= 100 AND id < 130 ORDER BY id",
        "SELECT * FROM {thread_state} WHERE id > 5 AND id <= 9 ORDER BY ts DESC, id DESC",
        "SELECT * FROM {thread_state} WHERE utid = {busy}.0 ORDER BY ts",
        "SELECT * FROM {thread_state} WHERE utid = '{busy}' ORDER BY ts",
        "SELECT * FROM {thread_state} WHERE utid = {busy}.5",
        "SELECT count(*) FROM {thread_state} WHERE ts > NULL",
        "SELECT count(*) FROM {thread_state} WHERE ts < 'abc'",
        "SELECT count(*) FROM {thread_state} WHERE ts >= {lo}.5 AND ts <= {hi}.5",
        "SELECT state, count(*), sum(dur) FROM {thread_state} GROUP BY state ORDER BY state",
        "SELECT * FROM {thread_state} ORDER BY utid, ts LIMIT 50",
        "SELECT * FROM {thread_state} WHERE ts = (SELECT ts FROM {thread_state} WHERE id = {mid_id}) ORDER BY id",
        "SELECT * FROM {thread_state} WHERE io_wait IS NOT NULL OR blocked_function IS NOT NULL ORDER BY id LIMIT 20",
        "SELECT id, latency FROM {wakeup} WHERE latency IS NOT NULL ORDER BY latency DESC, id LIMIT 20",
        "SELECT id, latency FROM {wakeup} WHERE latency IS NOT NULL AND ts >= {lo} AND ts < {hi} ORDER BY latency DESC, id LIMIT 20",
        "SELECT id, latency FROM {wakeup} WHERE latency > 0 AND utid IN ({busy}, 3, 4) ORDER BY latency DESC, id LIMIT 20",
        "SELECT * FROM {wakeup} WHERE utid IN ({busy}, 3, 4) AND ts > {lo} ORDER BY ts, id",
        "SELECT count(*), sum(latency), max(run_cpu) FROM {wakeup}",
    ];
    let joins = [
        "SELECT t.tid, count(*), sum(s.dur) FROM {thread_state} s JOIN thread t USING (utid) WHERE t.tid < 1010 GROUP BY t.tid ORDER BY t.tid",
        "SELECT w.id, s.id FROM {wakeup} w JOIN {thread_state} s ON s.utid = w.utid AND s.ts = w.ts WHERE w.ts < {lo} ORDER BY w.id LIMIT 200",
        "SELECT s.id, r.id FROM {sched_slice} s JOIN {thread_state} r ON r.utid = s.utid AND r.ts = s.ts AND r.state = 'Running' WHERE s.cpu = 1 ORDER BY s.id LIMIT 200",
    ];
    for q in queries.iter().chain(&joins) {
        let q = q
            .replace("{lo}", &lo.to_string())
            .replace("{hi}", &hi.to_string())
            .replace("{busy}", &busy.to_string())
            .replace("{mid_id}", &mid_id.to_string());
        let mut virt = q.clone();
        let mut plain = q.clone();
        for t in ["sched_slice", "thread_state", "wakeup", "sched"] {
            virt = virt.replace(&format!("{{{t}}}"), t);
            plain = plain.replace(&format!("{{{t}}}"), &format!("ref_{t}"));
        }
        let (a, b) = (rows(&conn, &virt), rows(&conn, &plain));
        assert_eq!(a, b, "{virt}");
    }
    // The paths that make the analyses fast are the ones chosen.
    let plan = |sql: &str| -> String {
        rows(&conn, &format!("EXPLAIN QUERY PLAN {sql}"))
            .iter()
            .map(|r| format!("{:?}", r[3]))
            .collect()
    };
    let p = plan("SELECT * FROM thread_state WHERE utid = 3 AND ts < 5 ORDER BY ts DESC");
    assert!(p.contains("VIRTUAL TABLE INDEX 65537:kU"), "{p}");
    let p = plan("SELECT * FROM sched_slice WHERE cpu = 1 AND ts >= 5 AND ts < 9 ORDER BY ts");
    assert!(
        p.contains("INDEX 257:ktU") && !p.contains("ORDER BY"),
        "{p}"
    );
    let p = plan("SELECT id FROM wakeup WHERE latency IS NOT NULL ORDER BY latency DESC LIMIT 5");
    assert!(p.contains("INDEX 3:") && !p.contains("ORDER BY"), "{p}");
    // A GROUP BY under another ORDER BY still groups by walking the key.
    let p = plan("SELECT utid, sum(dur) s FROM sched_slice GROUP BY utid ORDER BY s DESC");
    assert!(p.contains("INDEX 2:") && !p.contains("GROUP BY"), "{p}");
    let p = plan("SELECT * FROM wakeup WHERE id = 7");
    assert!(p.contains("INDEX 4:i"), "{p}");
}

#[test]
fn late_rows_land_in_place() {
    let (dir, conn) = loaded();
    // Some late values did not fit their block's packing: the exception
    // list is exercised (the file's directory is JSON before a 16-byte
    // trailer that starts with its offset).
    let file = std::fs::read(columns::path_for(&dir.path().join("t.db"))).unwrap();
    let at = u64::from_le_bytes(file[file.len() - 16..file.len() - 8].try_into().unwrap());
    let directory: serde_json::Value =
        serde_json::from_slice(&file[at as usize..file.len() - 16]).unwrap();
    let exceptions = directory["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "thread_state")
        .unwrap()["exceptions"][1]
        .as_u64()
        .unwrap();
    assert!(exceptions > 0);
    // No placeholder survives, and each thread's states tile its time.
    assert_eq!(
        scalar(
            &conn,
            "SELECT count(*) FROM thread_state WHERE ts IS NULL OR dur IS NULL"
        ),
        0
    );
    assert_eq!(
        scalar(
            &conn,
            "SELECT count(*) FROM wakeup WHERE ts IS NULL OR utid IS NULL"
        ),
        0
    );
    let gaps = scalar(
        &conn,
        "SELECT count(*) FROM (SELECT ts, dur, lead(ts) OVER (PARTITION BY utid ORDER BY ts) AS next \
         FROM thread_state) WHERE next IS NOT NULL AND ts + dur != next",
    );
    assert_eq!(gaps, 0);
    // Long sleeps: states that stayed open across more rows than the
    // reorder window (2^15) exist, so the late path ran.
    let long = scalar(
        &conn,
        "SELECT count(*) FROM thread_state a WHERE state = 'S' AND \
         (SELECT count(*) FROM thread_state b WHERE b.ts > a.ts AND b.ts < a.ts + a.dur) > 40000 \
         AND a.id % 997 = 0",
    );
    assert!(long > 0);
    // Every slice has its Running state, and every Running state its slice.
    let running = scalar(
        &conn,
        "SELECT count(*) FROM thread_state WHERE state = 'Running'",
    );
    let slices = scalar(&conn, "SELECT count(*) FROM sched_slice WHERE utid != 0");
    let matched = scalar(
        &conn,
        "SELECT count(*) FROM sched_slice s JOIN thread_state r \
         ON r.utid = s.utid AND r.ts = s.ts AND r.state = 'Running' AND r.dur = s.dur AND r.cpu = s.cpu",
    );
    assert_eq!((running, matched), (slices, slices));
}

#[test]
fn a_damaged_column_file_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pftrace");
    tracegen::write_synthetic(&trace, 2_000, 2, 8, 200);
    let path = dir.path().join("t.db");
    db::build_into(&trace, &path).unwrap();
    let cols = columns::path_for(&path);
    let good = std::fs::read(&cols).unwrap();
    let len = good.len();
    let mut damaged = vec![
        good[..len / 2].to_vec(),
        good[..len - 20].to_vec(),
        Vec::new(),
    ];
    let mut flipped = good.clone();
    flipped[len - 30] ^= 0xff; // inside the JSON directory
    damaged.push(flipped);
    for bytes in damaged {
        std::fs::write(&cols, &bytes).unwrap();
        let conn = db::open_readonly(&path).unwrap();
        let err = conn
            .query_row("SELECT count(*) FROM sched_slice", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap_err();
        assert!(err.to_string().contains("column file"), "{err}");
    }
    std::fs::remove_file(&cols).unwrap();
    let conn = db::open_readonly(&path).unwrap();
    let err = conn
        .query_row("SELECT count(*) FROM wakeup", [], |r| r.get::<_, i64>(0))
        .unwrap_err();
    assert!(err.to_string().contains("cannot open"), "{err}");
}

#[test]
fn the_cache_rebuilds_a_damaged_column_file() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pftrace");
    tracegen::write_synthetic(&trace, 2_000, 2, 8, 200);
    let opts = db::LoadOptions::default();
    let first = db::load(&trace, &opts).unwrap();
    let count = |path: &std::path::Path| -> i64 {
        db::open_readonly(path)
            .unwrap()
            .query_row("SELECT count(*) FROM sched_slice", [], |r| r.get(0))
            .unwrap()
    };
    let n = count(&first.db_path);
    assert!(n > 0);
    let cols = columns::path_for(&first.db_path);
    let bytes = std::fs::read(&cols).unwrap();
    std::fs::write(&cols, &bytes[..bytes.len() / 2]).unwrap();
    let again = db::load(&trace, &opts).unwrap();
    assert_eq!(count(&again.db_path), n);
}
