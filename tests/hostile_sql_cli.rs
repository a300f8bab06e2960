//! `schedlens query` is read-only by the engine, not by the caps meant for
//! models: statements that would write fail before they run (VACUUM INTO
//! used to leave an empty file behind), ATTACH cannot open another file,
//! and a person's result has no row cap.

mod tracegen;

use tracegen::*;

#[test]
fn writes_fail_before_they_run_and_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pftrace");
    write_synthetic(&trace, 3_000, 2, 8, 100);
    let t = trace.to_str().unwrap();
    // Load once, so the database exists and its bytes can be compared.
    let first = schedlens(&["query", t, "SELECT 1"], dir.path());
    assert!(first.status.success());
    let db = dir.path().join("t.pftrace.db");
    let before = std::fs::read(&db).unwrap();
    let evil = dir.path().join("evil.db");
    let e = evil.to_str().unwrap();
    for (sql, needle) in [
        (format!("VACUUM INTO '{e}'"), "only reads"),
        ("VACUUM".to_string(), "only reads"),
        ("DELETE FROM thread".into(), "only reads"),
        ("UPDATE process SET cmdline = 'forged'".into(), "only reads"),
        ("CREATE TABLE x (a)".into(), "only reads"),
        ("PRAGMA user_version = 3".into(), "only reads"),
        (
            format!("ATTACH '{e}' AS evil"),
            "too many attached databases",
        ),
        (
            "SELECT load_extension('/tmp/x.so')".into(),
            "not authorized",
        ),
    ] {
        let out = schedlens(&["query", t, &sql], dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{sql}: {stderr}");
        assert!(stderr.contains(needle), "{sql}: {stderr}");
        assert!(!evil.exists(), "{sql} created {}", evil.display());
    }
    assert_eq!(before, std::fs::read(&db).unwrap(), "database changed");
}

#[test]
fn a_person_gets_every_row_and_long_values() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pftrace");
    write_synthetic(&trace, 3_000, 2, 8, 100);
    let sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000) \
               SELECT x, length(printf('%.*c', 3000000, 'a')) FROM c";
    let out = schedlens(
        &["query", trace.to_str().unwrap(), sql, "--format", "csv"],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    assert_eq!(csv.lines().count(), 5001);
    assert_eq!(csv.lines().last(), Some("5000,3000000"));
}
