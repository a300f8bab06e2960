//! Cache files (`.db`, `.db.cols`) are input too: a crafted one must be
//! rejected (and rebuilt), never trusted or crashed on.

mod tracegen;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tracegen::*;

fn schedlens(args: &[&str], cache_home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_schedlens"))
        .args(args)
        .env("XDG_CACHE_HOME", cache_home)
        .output()
        .expect("run schedlens")
}

fn ok_stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "{:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn cols_of(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".cols");
    PathBuf::from(s)
}

/// Rewrites the JSON directory of a column file through `edit`.
fn edit_directory(cols: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let bytes = std::fs::read(cols).unwrap();
    let len = bytes.len();
    let dir_off = u64::from_le_bytes(bytes[len - 16..len - 8].try_into().unwrap()) as usize;
    let mut dir: serde_json::Value = serde_json::from_slice(&bytes[dir_off..len - 16]).unwrap();
    edit(&mut dir);
    let mut out = bytes[..dir_off].to_vec();
    out.extend(serde_json::to_vec(&dir).unwrap());
    out.extend((dir_off as u64).to_le_bytes());
    out.extend(&bytes[len - 8..]);
    std::fs::write(cols, out).unwrap();
}

/// A key index claiming 2^62 keys made a size computation wrap, passed the
/// check and aborted the process in the virtual table's filter.
#[test]
fn a_key_index_claiming_2_pow_62_keys_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pftrace");
    write_synthetic(&trace, 5_000, 2, 8, 100);
    let t = trace.to_str().unwrap();
    let sql = "SELECT count(*) FROM sched WHERE utid = 3";
    let honest = ok_stdout(&schedlens(
        &["query", t, sql, "--format", "csv"],
        dir.path(),
    ));
    let db = dir.path().join("t.pftrace.db");
    edit_directory(&cols_of(&db), |d| {
        for table in d["tables"].as_array_mut().unwrap() {
            for key in table["keys"].as_array_mut().unwrap() {
                key["keys"] = serde_json::json!(1u64 << 62);
            }
        }
    });
    // Opened directly, the forged file is an error, not an abort.
    let conn = schedlens::analyzer::db::open_readonly(&db).unwrap();
    let e = conn
        .query_row(sql, [], |r| r.get::<_, i64>(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a valid column file"), "{e}");
    drop(conn);
    // Through the CLI the cache is found invalid and rebuilt.
    let out = schedlens(&["query", t, sql, "--format", "csv"], dir.path());
    assert_eq!(ok_stdout(&out), honest);
    assert!(String::from_utf8_lossy(&out.stderr).contains("loading"));
}
