//! The loaded database of a trace: load once, cache beside the trace (or in the
//! user cache dir), reuse while the trace is unchanged. (Issue 3; owner: analyze.)
//!
//! A database is built into a temporary file next to its final place and
//! renamed into place only when complete, so a half-built cache never looks
//! valid. It is reused only if its schema version and the trace's size and
//! mtime recorded inside it match; anything else (another version, a corrupt
//! or foreign file) is rebuilt.

use crate::analyzer::columns;
use crate::analyzer::import::{self, ImportReport};
use crate::analyzer::schema::{SCHEMA_VERSION, create_sql};
use anyhow::Context;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Reload even if a valid cached database exists.
    pub rebuild: bool,
    /// Show a progress bar on stderr when it is a TTY.
    pub progress: bool,
}

#[derive(Debug, Clone)]
pub struct LoadedTrace {
    /// Short name for the trace (file name without directories), unique among those loaded.
    pub name: String,
    pub trace_path: PathBuf,
    /// The SQLite file holding the tables of schema/tables.sql.
    pub db_path: PathBuf,
}

/// Indexes of the SQLite tables, built after the rows are in (cheaper than
/// maintaining them during the load). The columnar tables index themselves
/// (columns/writer.rs).
pub const INDEXES_SQL: &str = "
CREATE INDEX task_event_utid ON task_event(utid);
CREATE INDEX ftrace_event_ts ON ftrace_event(ts);
CREATE INDEX counter_track_ts ON counter(track_id, ts);
CREATE INDEX thread_tid ON thread(tid);
CREATE INDEX thread_upid ON thread(upid);
CREATE INDEX process_pid ON process(pid);
";

/// The trace file's identity for cache validity.
struct TraceStamp {
    size: i64,
    mtime_ns: i64,
}

fn stamp(trace: &Path) -> anyhow::Result<TraceStamp> {
    let m = fs::metadata(trace).with_context(|| format!("cannot open {}", trace.display()))?;
    let mtime_ns = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64);
    Ok(TraceStamp {
        size: m.len() as i64,
        mtime_ns,
    })
}

/// `<trace>.db`, beside the trace.
fn beside_path(trace: &Path) -> PathBuf {
    let mut s = trace.as_os_str().to_owned();
    s.push(".db");
    PathBuf::from(s)
}

/// `<cache dir>/schedlens/<hash of the canonical path>-<file name>.db`.
fn cache_dir_path(trace: &Path) -> Option<PathBuf> {
    // FNV-1a: stable across builds, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in trace.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    let name = trace.file_name()?.to_string_lossy();
    Some(
        dirs::cache_dir()?
            .join("schedlens")
            .join(format!("{h:016x}-{name}.db")),
    )
}

/// Whether `db` is a complete database of this schema version for this trace.
fn is_valid(db: &Path, s: &TraceStamp) -> bool {
    let check = || -> rusqlite::Result<bool> {
        let conn = open_readonly_conn(db)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version != SCHEMA_VERSION {
            return Ok(false);
        }
        let get = |k: &str| -> rusqlite::Result<Option<i64>> {
            conn.query_row("SELECT int_value FROM metadata WHERE name = ?1", [k], |r| {
                r.get(0)
            })
            .optional()
            .map(Option::flatten)
        };
        // Opening checks the whole column file's structure, not just its id:
        // a damaged one is rebuilt rather than failing every query.
        let columns = columns::Store::open(&columns::path_for(db))
            .ok()
            .map(|c| c.build_id);
        Ok(get("schema_version")? == Some(SCHEMA_VERSION)
            && get("trace_size_bytes")? == Some(s.size)
            && get("trace_mtime_ns")? == Some(s.mtime_ns)
            && get("columns_build_id")?.is_some_and(|id| Some(id as u64) == columns))
    };
    db.is_file() && check().unwrap_or(false)
}

/// Loads `trace` into its SQLite database, or reuses the cached one.
pub fn load(trace: &Path, opts: &LoadOptions) -> anyhow::Result<LoadedTrace> {
    let trace =
        fs::canonicalize(trace).with_context(|| format!("cannot open {}", trace.display()))?;
    let s = stamp(&trace)?;
    let beside = beside_path(&trace);
    let fallback = cache_dir_path(&trace);
    let name = trace.file_name().map_or_else(
        || trace.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let loaded = |db_path: PathBuf| LoadedTrace {
        name: name.clone(),
        trace_path: trace.clone(),
        db_path,
    };
    if !opts.rebuild {
        for db in std::iter::once(beside.clone()).chain(fallback.clone()) {
            if is_valid(&db, &s) {
                eprintln!("schedlens: using cached database {}", db.display());
                warn_if_truncated(&trace, &db);
                return Ok(loaded(db));
            }
        }
    }
    match build_at(&trace, &beside, &s, opts.progress) {
        Ok(()) => Ok(loaded(beside)),
        Err(BuildError::Unwritable(e)) => {
            let Some(db) = fallback else {
                return Err(e.context(
                    "the trace's directory is not writable and there is no user cache directory",
                ));
            };
            // Say why the database is not beside the trace, so the user finds it
            // (and knows a later writable copy of the trace would cache anew).
            eprintln!(
                "schedlens: {} is not writable; keeping the database in the user cache directory: {}",
                beside.parent().unwrap_or(Path::new(".")).display(),
                db.display()
            );
            if let Some(dir) = db.parent() {
                fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create cache directory {}", dir.display()))?;
            }
            match build_at(&trace, &db, &s, opts.progress) {
                Ok(()) => Ok(loaded(db)),
                Err(BuildError::Unwritable(e) | BuildError::Other(e)) => Err(e),
            }
        }
        Err(BuildError::Other(e)) => Err(e),
    }
}

enum BuildError {
    /// The database's directory cannot be written: try elsewhere.
    Unwritable(anyhow::Error),
    Other(anyhow::Error),
}

fn build_at(trace: &Path, db: &Path, s: &TraceStamp, progress: bool) -> Result<(), BuildError> {
    let dir = db.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        db.file_name()
            .map_or_else(|| "db".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    // Probe writability with the file we need anyway.
    match fs::File::create(&tmp) {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            return Err(BuildError::Unwritable(
                anyhow::Error::new(e).context(format!("cannot write in {}", dir.display())),
            ));
        }
        Err(e) => {
            return Err(BuildError::Other(
                anyhow::Error::new(e).context(format!("cannot create {}", tmp.display())),
            ));
        }
    }
    eprintln!(
        "schedlens: loading {} into {}",
        trace.display(),
        db.display()
    );
    // The columns go first: the database is what makes a cache valid, and
    // it names the build of its columns.
    let result = build(trace, &tmp, s, progress).and_then(|report| {
        fs::rename(columns::path_for(&tmp), columns::path_for(db))
            .with_context(|| format!("cannot move the column file beside {}", db.display()))?;
        fs::rename(&tmp, db)
            .with_context(|| format!("cannot move the database to {}", db.display()))?;
        Ok(report)
    });
    match result {
        Ok(report) => {
            if let Some(t) = &report.truncation {
                eprintln!(
                    "schedlens: warning: {} is truncated: {} at byte offset {}; loaded the {} complete packets before it",
                    trace.display(),
                    t.reason,
                    t.offset,
                    report.packets
                );
            }
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            let _ = fs::remove_file(columns::path_for(&tmp));
            Err(BuildError::Other(e))
        }
    }
}

/// Imports `trace` into a new database file `db` (which must not be in use).
fn build(trace: &Path, db: &Path, s: &TraceStamp, progress: bool) -> anyhow::Result<ImportReport> {
    let _ = fs::remove_file(db);
    let conn = Connection::open(db).with_context(|| format!("cannot create {}", db.display()))?;
    columns::register(&conn)?;
    // Nothing needs recovering if a load dies: the file is discarded.
    // 64 KiB pages (set before the first table): the event tables are
    // appended and scanned in bulk, and bigger pages mean fewer page
    // splits, cell-pointer updates and pager calls per row (~10% of the
    // load's CPU time against the 4 KiB default). Temp store on disk: with
    // it in memory, CREATE INDEX sorted every row in RAM and the peak RSS
    // grew with the trace (16M events: 1171 MB, on disk 279 MB).
    conn.execute_batch(
        "PRAGMA page_size = 65536; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; \
         PRAGMA locking_mode = EXCLUSIVE; PRAGMA temp_store = FILE; PRAGMA cache_size = -65536;",
    )?;
    conn.execute_batch(create_sql())?;
    conn.execute_batch("BEGIN")?;
    let report = import::import(trace, &conn, progress)?;
    let mut meta = conn.prepare(
        "INSERT OR REPLACE INTO metadata (name, key_type, int_value, str_value) VALUES (?1, 'single', ?2, ?3)",
    )?;
    meta.execute(params![
        "trace_path",
        None::<i64>,
        trace.display().to_string()
    ])?;
    meta.execute(params!["trace_size_bytes", s.size, None::<String>])?;
    meta.execute(params!["trace_mtime_ns", s.mtime_ns, None::<String>])?;
    meta.execute(params!["schema_version", SCHEMA_VERSION, None::<String>])?;
    meta.execute(params![
        "load_seconds",
        report.seconds.round() as i64,
        None::<String>
    ])?;
    drop(meta);
    conn.execute_batch(INDEXES_SQL)?;
    conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"))?;
    conn.close().map_err(|(_, e)| e)?;
    Ok(report)
}

/// Loads `trace` into the database file `db` unconditionally (no cache
/// lookup): for tests and tools that choose the location themselves.
pub fn build_into(trace: &Path, db: &Path) -> anyhow::Result<ImportReport> {
    let s = stamp(trace)?;
    build(trace, db, &s, false)
}

fn warn_if_truncated(trace: &Path, db: &Path) {
    let at: Option<i64> = open_readonly_conn(db).ok().and_then(|c| {
        c.query_row(
            "SELECT int_value FROM metadata WHERE name = 'truncated_at_offset'",
            [],
            |r| r.get(0),
        )
        .ok()
    });
    if let Some(at) = at {
        eprintln!(
            "schedlens: warning: {} is truncated at byte offset {at}; the database holds what came before it",
            trace.display()
        );
    }
}

fn open_readonly_conn(db: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    columns::register(&conn)?;
    conn.execute_batch("PRAGMA query_only = 1")?;
    Ok(conn)
}

/// Opens a loaded database so that no statement can change anything
/// ([`sandbox::open_read_only`](crate::analyzer::sandbox::open_read_only)).
pub fn open_readonly(db: &Path) -> anyhow::Result<rusqlite::Connection> {
    crate::analyzer::sandbox::open_read_only(db).map_err(anyhow::Error::msg)
}
