//! The loaded database of a trace: load once, cache beside the trace (or in the
//! user cache dir), reuse while the trace is unchanged.
//!
//! A database is built into a temporary file next to its final place and
//! renamed into place only when complete, so a half-built cache never looks
//! valid. It is reused only if its schema version and the trace's size, mtime
//! and content hash recorded inside it match; anything else (another version,
//! a corrupt or foreign file) is rebuilt.
//!
//! Caches are input as much as traces are, so they are trusted only where no
//! one else could have written them: in a directory that only this user (or
//! root) can write, as regular files owned by this user (or root) that no one
//! else can write. Beside a trace in any other directory (a shared /tmp, a
//! group's folder) the cache goes to the user's cache directory instead.
//! Temporary files are created exclusively under unpredictable names, and
//! a cache is never more readable than its trace (it holds the same command
//! lines). A load killed midway leaves its temporary files; the next load in
//! that directory removes them (a live load holds a lock on its own).
//!
//! The column file is memory-mapped while read: truncating it under a reader
//! kills that reader with SIGBUS. Only the cache's owner can do that (see
//! above), so it is not something another user can do to you.

use crate::analyzer::columns;
use crate::analyzer::import::{self, ImportReport};
use crate::analyzer::schema::{SCHEMA_VERSION, create_sql};
use crate::perfetto::reader::TraceReader;
use anyhow::Context;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::fs::{self, File, Metadata};
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::UNIX_EPOCH;

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Reload even if a valid cached database exists.
    pub rebuild: bool,
    /// Show a progress bar on stderr when it is a TTY.
    pub progress: bool,
    /// Set from another thread to stop a load (an MCP client's cancel).
    pub cancel: Option<Arc<AtomicBool>>,
}

impl LoadOptions {
    /// A load a person waits for at a terminal (query, summary).
    pub fn interactive(rebuild: bool) -> LoadOptions {
        LoadOptions {
            rebuild,
            progress: true,
            cancel: None,
        }
    }
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
CREATE INDEX slice_track_ts ON slice(track_id, ts);
CREATE INDEX migration_utid_ts ON migration(utid, ts);
CREATE INDEX perf_sample_utid_ts ON perf_sample(utid, ts);
CREATE INDEX thread_tid ON thread(tid);
CREATE INDEX thread_upid ON thread(upid);
CREATE INDEX process_pid ON process(pid);
";

/// The trace file's identity for cache validity: size and mtime say
/// quickly that it changed; the content hash says that it did not (a
/// trace replaced by another of the same size and mtime has another hash).
struct TraceStamp {
    size: i64,
    mtime_ns: i64,
    /// xxh3-128 of the whole file, in hex.
    hash: String,
    /// Mode and group, for the cache's own permissions.
    mode: u32,
    gid: u32,
}

fn stamp(file: &File) -> anyhow::Result<TraceStamp> {
    let m = file.metadata()?;
    anyhow::ensure!(m.is_file(), "not a regular file");
    let mtime_ns = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64);
    // About 10 GB/s: a 1 GB trace costs 0.1 s beside reading it, which its
    // load does anyway. Positional reads leave the file offset at 0.
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = match file.read_at(&mut buf, at) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(TraceStamp {
        size: at as i64,
        mtime_ns,
        hash: format!("{:032x}", hasher.digest128()),
        mode: m.mode(),
        gid: m.gid(),
    })
}

/// The mode of a cache of a trace with `s`'s mode and group, created with
/// group `gid`: readable by no one who cannot read the trace.
fn cache_mode(s: &TraceStamp, gid: u32) -> u32 {
    let mut mode = 0o600;
    if s.mode & 0o004 != 0 {
        mode |= 0o004;
    }
    if s.mode & 0o040 != 0 && gid == s.gid {
        mode |= 0o040;
    }
    mode
}

pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether no one but this user (and root) can have written in `dir`.
fn private_dir(dir: &Path) -> bool {
    fs::metadata(dir)
        .is_ok_and(|m| m.is_dir() && (m.uid() == euid() || m.uid() == 0) && m.mode() & 0o022 == 0)
}

/// Whether `m` (of a path not followed if a link) is a file this user (or
/// root) wrote and no one else can change.
fn trusted_file(m: &Metadata) -> bool {
    m.file_type().is_file() && (m.uid() == euid() || m.uid() == 0) && m.mode() & 0o022 == 0
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
    let trusted = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| trusted_file(&m));
    if !trusted(db) || !trusted(&columns::path_for(db)) {
        return false;
    }
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
        let hash: Option<String> = conn
            .query_row(
                "SELECT str_value FROM metadata WHERE name = 'trace_content_hash'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        // Opening checks the whole column file's structure, not just its id:
        // a damaged one is rebuilt rather than failing every query.
        let columns = columns::Store::open(&columns::path_for(db))
            .ok()
            .map(|c| c.build_id);
        Ok(get("schema_version")? == Some(SCHEMA_VERSION)
            && get("trace_size_bytes")? == Some(s.size)
            && get("trace_mtime_ns")? == Some(s.mtime_ns)
            && hash.as_deref() == Some(s.hash.as_str())
            && get("columns_build_id")?.is_some_and(|id| Some(id as u64) == columns))
    };
    check().unwrap_or(false)
}

/// Loads `trace` into its SQLite database, or reuses the cached one.
pub fn load(trace: &Path, opts: &LoadOptions) -> anyhow::Result<LoadedTrace> {
    let trace =
        fs::canonicalize(trace).with_context(|| format!("cannot open {}", trace.display()))?;
    let file = File::open(&trace).with_context(|| format!("cannot open {}", trace.display()))?;
    load_file(&trace, file, opts)
}

/// Loads the trace read from `file`, which is the file at `trace` (where its
/// cache goes): for callers that opened it themselves, without following
/// links out of a directory.
pub fn load_file(trace: &Path, file: File, opts: &LoadOptions) -> anyhow::Result<LoadedTrace> {
    let s = stamp(&file).with_context(|| format!("cannot read {}", trace.display()))?;
    let name = trace.file_name().map_or_else(
        || trace.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let loaded = |db_path: PathBuf| LoadedTrace {
        name: name.clone(),
        trace_path: trace.to_path_buf(),
        db_path,
    };
    let dir = trace.parent().unwrap_or(Path::new("."));
    let beside = private_dir(dir).then(|| beside_path(trace));
    let fallback = cache_dir_path(trace);
    for db in beside.iter().chain(&fallback) {
        remove_stale_temporaries(db);
    }
    if !opts.rebuild {
        for db in beside.iter().chain(&fallback) {
            if is_valid(db, &s) {
                eprintln!("schedlens: using cached database {}", db.display());
                warn_if_truncated(trace, db);
                return Ok(loaded(db.clone()));
            }
        }
    }
    let why_not_beside = match &beside {
        Some(db) => match build_at(trace, &file, db, &s, opts) {
            Ok(()) => return Ok(loaded(db.clone())),
            Err(BuildError::Other(e)) => return Err(e),
            Err(BuildError::Unwritable(e)) => {
                format!("{} is not writable ({e:#})", dir.display())
            }
        },
        None => format!("{} can be written by other users", dir.display()),
    };
    let Some(db) = fallback else {
        anyhow::bail!("{why_not_beside} and there is no user cache directory for the database");
    };
    // Say why the database is not beside the trace, so the user finds it
    // (and knows a later writable copy of the trace would cache anew).
    eprintln!(
        "schedlens: {why_not_beside}; keeping the database in the user cache directory: {}",
        db.display()
    );
    let cache_dir = db.parent().unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(cache_dir)
        .with_context(|| format!("cannot create cache directory {}", cache_dir.display()))?;
    anyhow::ensure!(
        private_dir(cache_dir),
        "the cache directory {} can be written by other users: no safe place for the database \
         of {} (point XDG_CACHE_HOME at a directory of your own)",
        cache_dir.display(),
        trace.display()
    );
    match build_at(trace, &file, &db, &s, opts) {
        Ok(()) => Ok(loaded(db)),
        Err(BuildError::Unwritable(e) | BuildError::Other(e)) => Err(e),
    }
}

/// Removes what killed loads left beside `db`: `.<db name>.<random>.tmp` (and
/// its `.cols`) whose lock nobody holds, and the older `.<db name>.tmp-<pid>`
/// of processes that are gone. Only this user's regular files.
fn remove_stale_temporaries(db: &Path) {
    let (Some(dir), Some(name)) = (db.parent(), db.file_name()) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        let path = entry.path();
        let mine =
            fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file() && m.uid() == euid());
        if !mine {
            continue;
        }
        let stale = if let Some(pid) = rest.strip_prefix("tmp-") {
            // Before temporaries were locked: named by the loading process.
            let pid = pid.strip_suffix(".cols").unwrap_or(pid);
            pid.parse::<i32>().is_ok_and(|pid| !process_alive(pid))
        } else if let Some(db_tmp) = file_name.strip_suffix(".tmp.cols") {
            !dir.join(format!("{db_tmp}.tmp")).exists()
        } else if rest.ends_with(".tmp") {
            // A live load holds an exclusive lock on its database file.
            File::open(&path).is_ok_and(|f| lock(&f))
        } else {
            false
        };
        if stale {
            eprintln!(
                "schedlens: removing {} (left by a load that was killed)",
                path.display()
            );
            let _ = fs::remove_file(&path);
            if rest.ends_with(".tmp") {
                let _ = fs::remove_file(columns::path_for(&path));
            }
        }
    }
}

/// Takes an exclusive flock on `f` if nobody holds one (held until closed).
pub(crate) fn lock(f: &File) -> bool {
    use std::os::fd::AsRawFd as _;
    // SAFETY: a valid open descriptor; flock only takes a lock.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

enum BuildError {
    /// The database's directory cannot be written: try elsewhere.
    Unwritable(anyhow::Error),
    Other(anyhow::Error),
}

fn build_at(
    trace: &Path,
    file: &File,
    db: &Path,
    s: &TraceStamp,
    opts: &LoadOptions,
) -> Result<(), BuildError> {
    let dir = db.parent().unwrap_or(Path::new("."));
    let name = db
        .file_name()
        .map_or_else(|| "db".into(), |n| n.to_string_lossy());
    // Exclusive (O_EXCL: never a file or link planted at the name) under an
    // unpredictable name, mode 0600; removed if this load fails.
    let tmp = match tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
    {
        Ok(t) => t,
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
                anyhow::Error::new(e).context(format!("cannot create a file in {}", dir.display())),
            ));
        }
    };
    // Tells remove_stale_temporaries of other processes that this load is alive.
    lock(tmp.as_file());
    let tmp_cols = columns::path_for(tmp.path());
    eprintln!(
        "schedlens: loading {} into {}",
        trace.display(),
        db.display()
    );
    // The columns go first: the database is what makes a cache valid, and
    // it names the build of its columns.
    let result = build(trace, file, tmp.path(), s, opts).and_then(|report| {
        let mode = cache_mode(s, tmp.as_file().metadata()?.gid());
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))?;
        File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp_cols)?
            .set_permissions(fs::Permissions::from_mode(mode))?;
        fs::rename(&tmp_cols, columns::path_for(db))
            .with_context(|| format!("cannot move the column file beside {}", db.display()))?;
        Ok(report)
    });
    let result = result.and_then(|report| {
        tmp.persist(db)
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
            if report.events == 0 {
                eprintln!(
                    "schedlens: warning: {} holds no events ({} packets, none with data the \
                     tables show)",
                    trace.display(),
                    report.packets
                );
            }
            Ok(())
        }
        Err(e) => {
            // The database's temporary file went with `tmp`.
            let _ = fs::remove_file(&tmp_cols);
            Err(BuildError::Other(e))
        }
    }
}

/// Imports the trace in `file` (the file at `trace`) into the empty database
/// file `db` (which must not be in use).
fn build(
    trace: &Path,
    file: &File,
    db: &Path,
    s: &TraceStamp,
    opts: &LoadOptions,
) -> anyhow::Result<ImportReport> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NOFOLLOW
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot create {}", db.display()))?;
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
    let input = file
        .try_clone()
        .with_context(|| format!("cannot read {}", trace.display()))?;
    let mut reader = TraceReader::from_reader(input, s.size as u64, &trace.display().to_string())?;
    if let Some(cancel) = &opts.cancel {
        reader.set_cancel(cancel.clone());
    }
    let report = import::import_from(reader, &conn, opts.progress)?;
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
    meta.execute(params!["trace_content_hash", None::<i64>, s.hash])?;
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
/// lookup, replacing `db` and its column file): for tests and tools that
/// choose the location themselves.
pub fn build_into(trace: &Path, db: &Path) -> anyhow::Result<ImportReport> {
    let file = File::open(trace).with_context(|| format!("cannot open {}", trace.display()))?;
    let s = stamp(&file).with_context(|| format!("cannot read {}", trace.display()))?;
    let _ = fs::remove_file(db);
    let _ = fs::remove_file(columns::path_for(db));
    build(trace, &file, db, &s, &LoadOptions::default())
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
