//! Cache files (`.db`, `.db.cols`) are input too: a crafted one must be
//! rejected (and rebuilt), never trusted or crashed on.

mod tracegen;

use std::path::{Path, PathBuf};
use std::process::Output;
use tracegen::*;

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

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn nobody() -> (u32, u32) {
    // SAFETY: a NUL-terminated name; the entry is read at once.
    let pw = unsafe { libc::getpwnam(c"nobody".as_ptr()) };
    assert!(!pw.is_null(), "no user nobody on this machine");
    // SAFETY: non-null, points to libc's static passwd entry.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

fn csv(trace: &Path, sql: &str, cache: &Path) -> String {
    ok_stdout(&schedlens(
        &["query", trace.to_str().unwrap(), sql, "--format", "csv"],
        cache,
    ))
}

/// Same size, same mtime, other content: the cache used to be served.
#[test]
fn a_trace_replaced_by_one_of_the_same_size_and_mtime_is_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pftrace");
    write_synthetic(&trace, 2_000, 2, 4, 100);
    let sql = "SELECT count(*) FROM thread WHERE name LIKE 'tasx%'";
    assert_eq!(csv(&trace, sql, dir.path()), "\"count(*)\"\n0\n");
    let mtime = std::fs::metadata(&trace).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&trace).unwrap();
    // Every "task-0-…" becomes "tasx-0-…": same length, other names.
    let at: Vec<usize> = (0..bytes.len() - 6)
        .filter(|&i| &bytes[i..i + 6] == b"task-0")
        .collect();
    assert!(!at.is_empty());
    for i in at {
        bytes[i + 3] = b'x';
    }
    std::fs::write(&trace, &bytes).unwrap();
    let f = std::fs::File::options().write(true).open(&trace).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    let renamed = csv(&trace, sql, dir.path());
    assert_ne!(renamed, "\"count(*)\"\n0\n", "the old cache was served");
}

/// A `.db` someone else wrote (another user's file, or one anyone may
/// write) is rebuilt, not served: a forged cmdline used to reach query and
/// process_tree.
#[test]
fn a_cache_this_user_did_not_write_is_not_trusted() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pftrace");
    write_synthetic(&trace, 2_000, 2, 4, 100);
    let db = dir.path().join("t.pftrace.db");
    let sql = "SELECT count(*) FROM thread WHERE name = 'forged'";
    assert_eq!(csv(&trace, sql, dir.path()), "\"count(*)\"\n0\n");
    let forge = |how: &dyn Fn(&Path)| {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute("UPDATE thread SET name = 'forged'", []).unwrap();
        drop(c);
        how(&db);
        how(&cols_of(&db));
    };
    // Writable by anyone: whoever wrote it, it cannot be trusted.
    forge(&|p: &Path| std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o666)).unwrap());
    assert_eq!(csv(&trace, sql, dir.path()), "\"count(*)\"\n0\n");
    if root() {
        let (uid, gid) = nobody();
        forge(&|p: &Path| std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap());
        assert_eq!(csv(&trace, sql, dir.path()), "\"count(*)\"\n0\n");
    } else {
        eprintln!("!!! not root: the other-owner half of this test is skipped !!!");
    }
}

/// In a directory others can write, links planted at the cache's names
/// made root truncate and overwrite their targets. Now no cache is read or
/// written there at all: it goes to the user cache directory.
#[test]
fn no_cache_in_a_directory_others_can_write() {
    use std::os::unix::fs::PermissionsExt as _;
    let top = tempfile::tempdir().unwrap();
    let shared = top.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let trace = shared.join("t.pftrace");
    write_synthetic(&trace, 2_000, 2, 4, 100);
    let victim = top.path().join("victim");
    std::fs::write(&victim, b"keep me\n").unwrap();
    for planted in ["t.pftrace.db", "t.pftrace.db.cols", ".t.pftrace.db.tmp-1"] {
        std::os::unix::fs::symlink(&victim, shared.join(planted)).unwrap();
    }
    let before: Vec<_> = std::fs::read_dir(&shared)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let cache = top.path().join("cache");
    let out = schedlens(
        &[
            "query",
            trace.to_str().unwrap(),
            "SELECT count(*) FROM sched",
        ],
        &cache,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("can be written by other users"), "{stderr}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me\n");
    let after: Vec<_> = std::fs::read_dir(&shared)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        before.len(),
        after.len(),
        "files appeared in the shared directory"
    );
    let cached = std::fs::read_dir(cache.join("schedlens")).unwrap().count();
    assert_eq!(cached, 2, "the .db and .cols in the user cache directory");
}

/// A 0600 trace used to get 0644 caches holding its command lines.
#[test]
fn caches_are_no_more_readable_than_their_trace() {
    use std::os::unix::fs::PermissionsExt as _;
    for (trace_mode, cache_mode) in [
        (0o600, 0o600),
        (0o644, 0o644),
        (0o640, 0o640),
        (0o604, 0o604),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("t.pftrace");
        write_synthetic(&trace, 2_000, 2, 4, 100);
        std::fs::set_permissions(&trace, std::fs::Permissions::from_mode(trace_mode)).unwrap();
        csv(&trace, "SELECT 1", dir.path());
        let db = dir.path().join("t.pftrace.db");
        for p in [db.clone(), cols_of(&db)] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(
                mode,
                cache_mode,
                "{:o} trace: {} is {mode:o}",
                trace_mode,
                p.display()
            );
        }
    }
}

/// Killed loads left `.X.pftrace.db.tmp-PID` files (one was 660 MB); the
/// next load removes the stale ones and leaves a live load's alone.
#[test]
fn stale_temporaries_of_killed_loads_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pftrace");
    write_synthetic(&trace, 2_000, 2, 4, 100);
    let d = dir.path();
    // No process has a pid above 2^22.
    let stale = [
        ".t.pftrace.db.tmp-4194305",
        ".t.pftrace.db.tmp-4194305.cols",
        ".t.pftrace.db.Ab12Cd.tmp",
        ".t.pftrace.db.Ab12Cd.tmp.cols",
        ".t.pftrace.db.Zz99Yy.tmp.cols",
    ];
    for name in stale {
        std::fs::write(d.join(name), b"left over").unwrap();
    }
    let live = d.join(".t.pftrace.db.Live00.tmp");
    std::fs::write(&live, b"").unwrap();
    let lock = std::fs::File::open(&live).unwrap();
    // SAFETY: a valid descriptor; flock only takes a lock.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) },
        0
    );
    csv(&trace, "SELECT 1", d);
    for name in stale {
        assert!(!d.join(name).exists(), "{name} stayed");
    }
    assert!(live.exists(), "a live load's file was removed");
    drop(lock);
}
