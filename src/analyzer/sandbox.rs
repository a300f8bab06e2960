//! Read-only SQL with limits, enforced by SQLite itself, for SQL from models.
//!
//! Text matching cannot make SQL read-only (comments, multiple statements and
//! quoting defeat every such filter), so every rule here is applied by the
//! engine: the file is opened SQLITE_OPEN_READ_ONLY with `query_only`, only one
//! statement is prepared, SQLite must report it read-only, and an authorizer
//! sees every table, function and pragma the compiled statement touches and
//! denies all that is not a plain read. A progress handler bounds run time and
//! honours cancellation; row, byte and cell caps bound the result.
//!
//! A model's own SQL ([`run_isolated`]) runs in a worker process: SQLite checks
//! its progress handler only between virtual-machine steps, and one step (an
//! `instr` over two long strings, say) can run for minutes, so only a process
//! can be stopped at any moment. The worker has a memory limit of its own
//! (SQLite's hard heap limit, with RLIMIT_DATA behind it), so a query that
//! builds huge values fails alone instead of taking the server down.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analyses::timespec::JS_SAFE_INT;
use crate::analyzer::stdlib::{self, Installed, Module};

/// Bounds on one query and its result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Limits {
    /// Wall time after which the query is interrupted.
    pub timeout: Duration,
    /// Rows returned when the caller gives no limit.
    pub default_rows: usize,
    /// Most rows any call returns, whatever limit it asks for.
    pub max_rows: usize,
    /// Approximate most bytes of JSON the rows may take.
    pub max_bytes: usize,
    /// The same when the caller gives no limit: a default answer stays small.
    pub default_bytes: usize,
    /// Longest text cell, in bytes, before it is cut.
    pub max_cell_bytes: usize,
    /// Most memory a model's query may use (its worker process's heap).
    pub max_memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(10),
            // About 4 KB of a typical result: an answer a model can afford.
            default_rows: 40,
            max_rows: 2_000,
            max_bytes: 256 * 1024,
            default_bytes: 4 * 1024,
            max_cell_bytes: 2_048,
            max_memory: 1 << 30,
        }
    }
}

/// Longest string or BLOB a model's query may make or read (SQLite's default
/// is 1 GB). Far above any stored value (command lines are the longest), and
/// small enough that one function call on such values stays cheap in memory.
pub const MODEL_VALUE_BYTES: i32 = 1 << 20;
/// Longest LIKE or GLOB pattern (SQLite's default is 50,000): pattern matching
/// costs the product of pattern and text length.
const MODEL_PATTERN_BYTES: i32 = 1_000;
/// After the time limit, how long a worker may take to stop by itself (its
/// progress handler) before it is killed.
const WORKER_GRACE: Duration = Duration::from_secs(1);

/// Scalar, aggregate, window, date, math and JSON functions that only compute
/// on their arguments. Everything else (load_extension, fts3_tokenizer,
/// sqlite_* introspection, anything registered later) is denied.
const ALLOWED_FUNCTIONS: &[&str] = &[
    // core scalar
    "abs",
    "char",
    "coalesce",
    "concat",
    "concat_ws",
    "format",
    "glob",
    "hex",
    "if",
    "ifnull",
    "iif",
    "instr",
    "length",
    "like",
    "likelihood",
    "likely",
    "lower",
    "ltrim",
    "max",
    "min",
    "nullif",
    "octet_length",
    "printf",
    "quote",
    "random",
    "replace",
    "round",
    "rtrim",
    "sign",
    "substr",
    "substring",
    "trim",
    "typeof",
    "unhex",
    "unicode",
    "unistr",
    "unlikely",
    "upper",
    // aggregate
    "avg",
    "count",
    "group_concat",
    "string_agg",
    "sum",
    "total",
    "median",
    "percentile",
    "percentile_cont",
    "percentile_disc",
    // window
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    // date and time
    "date",
    "time",
    "datetime",
    "julianday",
    "unixepoch",
    "strftime",
    "timediff",
    // math
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atan2",
    "atanh",
    "ceil",
    "ceiling",
    "cos",
    "cosh",
    "degrees",
    "exp",
    "floor",
    "ln",
    "log",
    "log10",
    "log2",
    "mod",
    "pi",
    "pow",
    "power",
    "radians",
    "sin",
    "sinh",
    "sqrt",
    "tan",
    "tanh",
    "trunc",
    // JSON (the `args` column of ftrace_event is JSON)
    "json",
    "json_array",
    "json_array_length",
    "json_extract",
    "json_group_array",
    "json_group_object",
    "json_object",
    "json_quote",
    "json_type",
    "json_valid",
    "json_each",
    "json_tree",
    "->",
    "->>",
];

/// Pragmas that only describe the schema; any pragma with other names, and any
/// assignment, is denied.
const ALLOWED_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
];

/// Tables a query may read besides the schema's own: the schema catalog and the
/// table-valued JSON functions. Virtual tables such as dbstat expose storage
/// internals and are not needed.
const ALLOWED_EXTRA_TABLES: &[&str] = &[
    "sqlite_master",
    "sqlite_schema",
    "sqlite_temp_master",
    "sqlite_temp_schema",
    "json_each",
    "json_tree",
    "pragma_table_info",
    "pragma_table_xinfo",
    "pragma_table_list",
    "pragma_index_list",
    "pragma_index_info",
    "pragma_index_xinfo",
];

/// Why a statement was denied, remembered by the authorizer so the error can
/// say more than SQLite's "not authorized".
type DenyNote = Arc<std::sync::Mutex<Option<String>>>;

/// A database connection that only reads, with the authorizer installed.
pub struct ReadOnlyDb {
    conn: Connection,
    denied: DenyNote,
}

/// Opens a loaded database so that no statement can change it or anything
/// else: read-only, `query_only`, defensive, no triggers, no extensions, no
/// ATTACH. What a person's `schedlens query` gets; models get
/// [`ReadOnlyDb`] on top of it.
pub fn open_read_only(path: &Path) -> Result<Connection, String> {
    open_read_only_with(path, &[]).map(|(conn, _)| conn)
}

/// [`open_read_only`] with the objects of standard library `modules`
/// installed first (TEMP objects cannot be made once it is `query_only`).
pub fn open_read_only_with(
    path: &Path,
    modules: &[&'static Module],
) -> Result<(Connection, Installed), String> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    crate::analyzer::columns::register(&conn)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    crate::analyzer::functions::register(&conn)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let installed = stdlib::install(&conn, modules)
        .map_err(|e| format!("cannot include the modules in {}: {e}", path.display()))?;
    harden(&conn).map_err(|e| format!("cannot configure {}: {e}", path.display()))?;
    Ok((conn, installed))
}

impl ReadOnlyDb {
    /// Opens `path` for untrusted SQL.
    pub fn open(path: &Path) -> Result<ReadOnlyDb, String> {
        Self::open_with(path, &[])
    }

    /// Opens `path` for untrusted SQL that may also read the objects of
    /// standard library `modules`.
    pub fn open_with(path: &Path, modules: &[&'static Module]) -> Result<ReadOnlyDb, String> {
        let (conn, installed) = open_read_only_with(path, modules)?;
        // Bounded values and patterns: the work one function call can do.
        for (limit, value) in [
            (rusqlite::ffi::SQLITE_LIMIT_LENGTH, MODEL_VALUE_BYTES),
            (
                rusqlite::ffi::SQLITE_LIMIT_LIKE_PATTERN_LENGTH,
                MODEL_PATTERN_BYTES,
            ),
            (rusqlite::ffi::SQLITE_LIMIT_SQL_LENGTH, 100_000),
        ] {
            // SAFETY: valid handle; sqlite3_limit only reads and sets an int.
            unsafe { rusqlite::ffi::sqlite3_limit(conn.handle(), limit, value) };
        }
        let mut db = ReadOnlyDb {
            conn,
            denied: DenyNote::default(),
        };
        let tables = db
            .schema_tables()
            .map_err(|e| format!("cannot read the schema of {}: {e}", path.display()))?;
        let note = db.denied.clone();
        db.conn
            .authorizer(Some(move |ctx: AuthContext<'_>| {
                authorize(&ctx, &tables, &installed, &note)
            }))
            .map_err(|e| e.to_string())?;
        Ok(db)
    }

    /// The connection, for the analyses in `report` (which run under the same
    /// authorizer and time limit).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Names of the schema's tables and views: the only user tables a query may read.
    fn schema_tables(&self) -> rusqlite::Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare("SELECT name FROM sqlite_schema WHERE type IN ('table', 'view')")?;
        let names = st.query_map([], |r| r.get::<_, String>(0))?;
        names.collect()
    }

    /// Interrupts any statement past `timeout` from now, or as soon as `cancel`
    /// is set. Call before each piece of work; the result explains interrupts.
    pub fn arm(&mut self, timeout: Duration, cancel: Arc<AtomicBool>) -> Budget {
        let deadline = Instant::now() + timeout;
        let budget = Budget {
            timeout,
            cancel: cancel.clone(),
            started: Instant::now(),
            max_memory: Limits::default().max_memory,
        };
        // Checked every 1000 virtual-machine instructions: a few microseconds.
        // Installing a handler cannot fail; rusqlite only reports a closed connection.
        let _ = self.conn.progress_handler(
            1_000,
            Some(move || cancel.load(Ordering::Relaxed) || Instant::now() >= deadline),
        );
        budget
    }

    /// Turns an SQLite error into a message for a model, with a hint.
    pub fn explain(&self, e: &rusqlite::Error, budget: &Budget) -> String {
        if e.sqlite_error_code() == Some(ErrorCode::OperationInterrupted) {
            return if budget.cancel.load(Ordering::Relaxed) {
                "query cancelled by the client".to_string()
            } else {
                past_time_limit(budget.timeout)
            };
        }
        if e.sqlite_error_code() == Some(ErrorCode::OutOfMemory) {
            return out_of_memory(budget.max_memory);
        }
        if e.sqlite_error_code() == Some(ErrorCode::TooBig) {
            return format!(
                "query stopped: a value grew past the limit of {} bytes. Select shorter values \
                 (substr), fewer rows per group_concat or json_group_array, or aggregate.",
                MODEL_VALUE_BYTES
            );
        }
        // A function denial comes back as a plain SQLITE_ERROR, so the
        // authorizer's note, not the code, says that a rule refused it.
        let note = self.denied.lock().ok().and_then(|mut d| d.take());
        if note.is_some()
            || e.sqlite_error_code() == Some(ErrorCode::AuthorizationForStatementDenied)
            || e.sqlite_error_code() == Some(ErrorCode::ReadOnly)
        {
            let what = note.unwrap_or_else(|| "this statement".to_string());
            return format!(
                "not allowed: {what}. Only a single read-only SELECT (WITH ... SELECT, VALUES, or \
                 PRAGMA table_info(...)) may run; the database cannot be changed."
            );
        }
        let msg = e.to_string();
        let include = stdlib::include_hint(&msg);
        let hint = if let Some(include) = &include {
            include.as_str()
        } else if msg.contains("no such table") {
            "call list_tables for the tables and views, describe_table(table) for their columns"
        } else if msg.contains("no such column") || msg.contains("ambiguous column") {
            "call describe_table(table) for the columns of a table"
        } else if msg.contains("no such function") {
            "SQLite's built-in scalar, aggregate, window, date, math and JSON functions exist, and \
             PerfettoSQL's TRACE_START(), TRACE_END(), TRACE_DUR() and EXTRACT_ARG(arg_set_id, key)"
        } else {
            "check the SQL; list_tables and describe_table(table) show the schema"
        };
        format!("SQL error: {msg}. Hint: {hint}.")
    }
}

fn past_time_limit(timeout: Duration) -> String {
    format!(
        "query stopped: it ran past the time limit of {}. Narrow it with WHERE on ts, utid or \
         cpu (those columns are indexed), or aggregate with GROUP BY.",
        humantime::format_duration(timeout)
    )
}

fn out_of_memory(max_memory: usize) -> String {
    format!(
        "query stopped: it needed more than its memory limit of {} MiB. Aggregate in SQL \
         (GROUP BY, count, sum), select fewer or shorter columns, or filter with WHERE.",
        max_memory >> 20
    )
}

/// The time budget of one piece of work.
pub struct Budget {
    timeout: Duration,
    cancel: Arc<AtomicBool>,
    started: Instant,
    max_memory: usize,
}

impl Budget {
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Connection-level settings that close what the authorizer does not see.
fn harden(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::config::DbConfig;
    // Belt and braces over SQLITE_OPEN_READ_ONLY.
    conn.pragma_update(None, "query_only", true)?;
    // Reads of a big file go faster through the page cache of the kernel.
    conn.pragma_update(None, "mmap_size", 1i64 << 30)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)?;
    // SAFETY: the handle is valid for the life of `conn`; this call takes an
    // int and a nullable int pointer for this option, as documented.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_db_config(
            conn.handle(),
            rusqlite::ffi::SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION,
            0 as std::os::raw::c_int,
            std::ptr::null_mut::<std::os::raw::c_int>(),
        )
    };
    if rc != rusqlite::ffi::SQLITE_OK {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rc),
            None,
        ));
    }
    // No ATTACH even if the authorizer were bypassed (or absent: a person's
    // query), so no statement can create or open another file.
    // (sqlite3_limit directly: rusqlite's wrapper is behind a feature not enabled.)
    // SAFETY: valid handle; sqlite3_limit only reads and sets an int.
    unsafe { rusqlite::ffi::sqlite3_limit(conn.handle(), rusqlite::ffi::SQLITE_LIMIT_ATTACHED, 0) };
    Ok(())
}

/// `tables` are the schema's; `modules` what the query's includes added
/// (TEMP views, which SQLite reports in database "temp", and functions).
fn authorize(
    ctx: &AuthContext<'_>,
    tables: &[String],
    modules: &Installed,
    note: &DenyNote,
) -> Authorization {
    let deny = |why: String| {
        if let Ok(mut n) = note.lock() {
            n.get_or_insert(why);
        }
        Authorization::Deny
    };
    let db_ok = matches!(ctx.database_name, None | Some("main"));
    match ctx.action {
        AuthAction::Select | AuthAction::Recursive => Authorization::Allow,
        // A FROM item read for no column at all (count(*)) is announced with
        // no database, also for CTEs and subqueries; the columns of real tables
        // are authorized one by one.
        AuthAction::Read {
            column_name: "", ..
        } if ctx.database_name.is_none() => Authorization::Allow,
        AuthAction::Read { table_name, .. } => {
            let known = tables.iter().any(|t| t.eq_ignore_ascii_case(table_name))
                || ALLOWED_EXTRA_TABLES
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(table_name));
            let module_object = matches!(ctx.database_name, None | Some("main" | "temp"))
                && modules
                    .tables
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(table_name));
            if (db_ok && known) || module_object {
                Authorization::Allow
            } else {
                deny(format!("reading {table_name:?}"))
            }
        }
        AuthAction::Function { function_name } => {
            if ALLOWED_FUNCTIONS
                .iter()
                .chain(crate::analyzer::functions::NAMES)
                .chain(&modules.functions)
                .any(|f| f.eq_ignore_ascii_case(function_name))
            {
                Authorization::Allow
            } else {
                deny(format!("calling function {function_name}()"))
            }
        }
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } => {
            let listed = ALLOWED_PRAGMAS
                .iter()
                .any(|p| p.eq_ignore_ascii_case(pragma_name));
            // For the listed pragmas the value is a table or index name; a
            // schema-qualified or odd value is refused rather than interpreted.
            let value_ok =
                pragma_value.is_none_or(|v| v.chars().all(|c| c.is_alphanumeric() || c == '_'));
            if listed && value_ok && db_ok {
                Authorization::Allow
            } else {
                deny(format!("PRAGMA {pragma_name}"))
            }
        }
        AuthAction::Insert { table_name } => deny(format!("INSERT into {table_name}")),
        AuthAction::Update { table_name, .. } => deny(format!("UPDATE of {table_name}")),
        AuthAction::Delete { table_name } => deny(format!("DELETE from {table_name}")),
        AuthAction::Attach { .. } => deny("ATTACH".into()),
        AuthAction::Detach { .. } => deny("DETACH".into()),
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => {
            deny("transactions".into())
        }
        other => {
            // The variant name ("CreateTempTrigger", "Reindex", ...) says enough.
            let debug = format!("{other:?}");
            let name = debug
                .split([' ', '{', '('])
                .next()
                .unwrap_or("this statement");
            deny(name.to_string())
        }
    }
}

/// One cell of a result row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// An integer with magnitude up to 2^53.
    Int(i64),
    /// A real number (NaN and infinities become null).
    Real(f64),
    /// Text; also integers beyond 2^53 as decimal strings, and long text cut
    /// with a note of the full length.
    Text(String),
    /// A BLOB, described rather than sent.
    Blob {
        /// Size of the BLOB.
        blob_bytes: usize,
        /// Hex of its first bytes (up to 16).
        hex_prefix: String,
    },
}

impl Cell {
    fn from_sql(v: ValueRef<'_>, max_cell_bytes: usize) -> (Cell, bool) {
        match v {
            ValueRef::Null => (Cell::Null, false),
            ValueRef::Integer(i) if i.unsigned_abs() <= JS_SAFE_INT as u64 => (Cell::Int(i), false),
            ValueRef::Integer(i) => (Cell::Text(i.to_string()), false),
            ValueRef::Real(f) => (Cell::Real(f), false),
            ValueRef::Text(t) => {
                let s = String::from_utf8_lossy(t);
                if s.len() <= max_cell_bytes {
                    (Cell::Text(s.into_owned()), false)
                } else {
                    let mut cut = max_cell_bytes;
                    while !s.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    let text = format!("{}… [{} bytes in all]", &s[..cut], t.len());
                    (Cell::Text(text), true)
                }
            }
            ValueRef::Blob(b) => {
                let hex_prefix = b.iter().take(16).map(|x| format!("{x:02x}")).collect();
                (
                    Cell::Blob {
                        blob_bytes: b.len(),
                        hex_prefix,
                    },
                    false,
                )
            }
        }
    }
}

/// The result of `query`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct QueryResult {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Rows, each an array of cells in column order.
    pub rows: Vec<Vec<Cell>>,
    /// Number of rows returned.
    pub row_count: usize,
    /// Rows skipped before the first returned one.
    pub offset: u64,
    /// The row limit applied (the requested one, or the default).
    pub limit: usize,
    /// True when the query has more rows than were returned.
    pub truncated: bool,
    /// What cut the result: "limit" (row limit) or "bytes" (size budget); absent if complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated_by: Option<String>,
    /// True when some long text cells were cut.
    pub cells_cut: bool,
    /// Advice when the result was cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Time the query took, ms.
    pub elapsed_ms: u64,
}

/// Runs one statement of untrusted SQL and collects a bounded result, within
/// the `budget` armed on `db`. `limit` and `offset` are as the caller gave
/// them; errors are messages for the caller.
pub fn run_query(
    db: &mut ReadOnlyDb,
    sql: &str,
    limit: Option<i64>,
    offset: Option<i64>,
    limits: &Limits,
    budget: &Budget,
) -> Result<QueryResult, String> {
    let given = limit.is_some();
    let limit = match limit {
        None => limits.default_rows,
        Some(n) if n < 1 => {
            return Err(format!(
                "limit must be at least 1 (got {n}); at most {} rows are returned",
                limits.max_rows
            ));
        }
        Some(n) if n as u64 > limits.max_rows as u64 => {
            return Err(format!(
                "limit {n} is above the maximum of {} rows: page through a longer result with \
                 offset, or aggregate it in SQL",
                limits.max_rows
            ));
        }
        Some(n) => n as usize,
    };
    let offset = match offset {
        None => 0,
        Some(n) if n < 0 => return Err(format!("offset must not be negative (got {n})")),
        Some(n) => n as u64,
    };
    if sql.trim().is_empty() {
        return Err("sql is empty: give one SELECT statement".to_string());
    }
    if let Ok(mut n) = db.denied.lock() {
        *n = None;
    }
    let bytes = if given {
        limits.max_bytes
    } else {
        limits.default_bytes
    };
    let mut result = collect(db, sql, (limit, bytes), offset, limits, budget);
    if let Ok(r) = &mut result
        && !given
        && let Some(hint) = &mut r.hint
    {
        hint.push_str(&format!(
            "; without a limit a result is kept to {} rows and {} bytes: pass limit (at most {}) \
             for up to {} bytes",
            limits.default_rows, limits.default_bytes, limits.max_rows, limits.max_bytes
        ));
    }
    result.map_err(|e| match e {
        Failure::Sql(e) => db.explain(&e, budget),
        Failure::Rule(m) => m,
    })
}

enum Failure {
    Sql(rusqlite::Error),
    Rule(String),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::MultipleStatement => Failure::Rule(
                "only one SQL statement may run per call: remove the text after the first ';'"
                    .into(),
            ),
            rusqlite::Error::Empty => {
                Failure::Rule("sql holds no statement (only comments?): give one SELECT".into())
            }
            e => Failure::Sql(e),
        }
    }
}

/// Text cells keep at least this much when a wide row shares the budget.
const MIN_CELL_BYTES: usize = 32;
/// Quotes, comma and "… [N bytes in all]" around a cut text cell.
const CELL_OVERHEAD_BYTES: usize = 40;

/// The rows of `sql` after `offset`, up to `limit` rows and `bytes` bytes
/// (the first row may take up to the whole `limits.max_bytes`).
fn collect(
    db: &ReadOnlyDb,
    sql: &str,
    (limit, max_bytes): (usize, usize),
    offset: u64,
    limits: &Limits,
    budget: &Budget,
) -> Result<QueryResult, Failure> {
    // prepare() compiles the first statement and rejects any tail that is not
    // whitespace or comments (compiling it, so the authorizer sees it too).
    let mut st = db.conn.prepare(sql)?;
    if !st.readonly() {
        return Err(Failure::Rule(
            "not allowed: the statement would change the database or the connection. Only a \
             single read-only SELECT may run."
                .into(),
        ));
    }
    let columns: Vec<String> = st.column_names().map(String::from).collect();
    let ncol = columns.len();
    // The budget holds for the first row too: with many columns each cell
    // gets its share of it, less what the JSON and a cut's note add (but
    // never less than a few words).
    let share = (limits.max_bytes / ncol.max(1)).saturating_sub(CELL_OVERHEAD_BYTES);
    let max_cell_bytes = limits.max_cell_bytes.min(share.max(MIN_CELL_BYTES));
    let mut rows_iter = st.query([])?;
    let mut skipped = 0u64;
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    let mut truncated_by = None;
    let mut cells_cut = false;
    while let Some(row) = rows_iter.next()? {
        if skipped < offset {
            skipped += 1;
            continue;
        }
        if rows.len() == limit {
            truncated_by = Some("limit");
            break;
        }
        let mut cells = Vec::with_capacity(ncol);
        for i in 0..ncol {
            let (cell, cut) = Cell::from_sql(row.get_ref(i)?, max_cell_bytes);
            cells_cut |= cut;
            cells.push(cell);
        }
        let size = serde_json::to_vec(&cells).map_or(0, |v| v.len()) + 1;
        if bytes + size > max_bytes && !(rows.is_empty() && size <= limits.max_bytes) {
            if rows.is_empty() {
                return Err(Failure::Rule(format!(
                    "the first row alone takes {size} bytes, more than the result budget of {} \
                     bytes even with its text cut: select fewer columns",
                    limits.max_bytes
                )));
            }
            truncated_by = Some("bytes");
            break;
        }
        bytes += size;
        rows.push(cells);
    }
    let hint = truncated_by.map(|by| {
        let next = offset + rows.len() as u64;
        format!(
            "result cut by the {}: aggregate (GROUP BY, COUNT, SUM), filter with WHERE, select \
             fewer columns, or page on with offset={next}",
            if by == "limit" {
                "row limit"
            } else {
                "size budget"
            }
        )
    });
    Ok(QueryResult {
        columns,
        row_count: rows.len(),
        rows,
        offset,
        limit,
        truncated: truncated_by.is_some(),
        truncated_by: truncated_by.map(String::from),
        cells_cut,
        hint,
        elapsed_ms: budget.elapsed().as_millis() as u64,
    })
}

/// The hidden subcommand that runs one query in a worker process.
pub const WORKER_COMMAND: &str = "sql-worker";

/// What a worker is asked to run.
#[derive(Serialize, Deserialize)]
struct WorkerRequest {
    db: PathBuf,
    sql: String,
    limit: Option<i64>,
    offset: Option<i64>,
    limits: Limits,
}

/// Most bytes of answer read from a worker: the result budget and the
/// worst-case escaping of its cells, with room to spare.
const WORKER_OUTPUT_CAP: u64 = 64 << 20;
/// Memory a worker needs besides SQLite's heap (Rust's, the result's).
const WORKER_HEADROOM: usize = 128 << 20;

/// Runs a model's `sql` on the database `db` in a worker process (see the
/// module docs): stopped at the time limit even inside one SQL function
/// call, at once when `cancel` is set, and bounded in memory. Errors are
/// messages for the model.
pub fn run_isolated(
    db: &Path,
    sql: &str,
    limit: Option<i64>,
    offset: Option<i64>,
    limits: &Limits,
    cancel: &AtomicBool,
) -> Result<QueryResult, String> {
    let request = WorkerRequest {
        db: db.to_path_buf(),
        sql: sql.to_string(),
        limit,
        offset,
        limits: limits.clone(),
    };
    let request = serde_json::to_vec(&request).map_err(|e| format!("internal error: {e}"))?;
    // This very binary, even if it was replaced on disk since it started.
    let mut child = Command::new("/proc/self/exe")
        .arg(WORKER_COMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("internal error: cannot start a query worker: {e}"))?;
    // The worker reads its whole request before it answers, so writing it
    // first cannot deadlock; a worker that died early only makes this fail.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&request);
    }
    let reader = child.stdout.take().map(|out| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.take(WORKER_OUTPUT_CAP).read_to_end(&mut buf);
            buf
        })
    });
    let deadline = Instant::now() + limits.timeout + WORKER_GRACE;
    let stopped = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(format!("internal error: waiting for the query worker: {e}")),
        }
        let why = if cancel.load(Ordering::Relaxed) {
            Some("query cancelled by the client".to_string())
        } else if Instant::now() >= deadline {
            Some(past_time_limit(limits.timeout))
        } else {
            None
        };
        if let Some(why) = why {
            let _ = child.kill();
            let _ = child.wait();
            break Err(why);
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let output = reader.and_then(|r| r.join().ok()).unwrap_or_default();
    let status = stopped?;
    if let Ok(reply) = serde_json::from_slice::<Result<QueryResult, String>>(&output) {
        return reply;
    }
    use std::os::unix::process::ExitStatusExt as _;
    Err(match status.signal() {
        Some(libc::SIGXCPU) => past_time_limit(limits.timeout),
        Some(sig) => format!(
            "query stopped: its worker process died (signal {sig}); a query that builds large \
             values reaches its memory limit of {} MiB this way. {}",
            limits.max_memory >> 20,
            "Aggregate in SQL or select fewer, shorter columns."
        ),
        None => format!("internal error: the query worker failed ({status})"),
    })
}

/// The worker process: reads one [`WorkerRequest`] on stdin, answers
/// `Result<QueryResult, String>` as JSON on stdout.
pub fn worker_main() -> anyhow::Result<()> {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input)?;
    let req: WorkerRequest = serde_json::from_slice(&input)?;
    limit_this_process(&req.limits)?;
    let reply = (|| {
        // The includes name modules to install; the rest is the one statement.
        let (modules, sql) = stdlib::split_includes(&req.sql)?;
        let mut db = ReadOnlyDb::open_with(&req.db, &modules)?;
        let mut budget = db.arm(req.limits.timeout, Arc::default());
        budget.max_memory = req.limits.max_memory;
        run_query(&mut db, sql, req.limit, req.offset, &req.limits, &budget)
    })();
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &reply)?;
    out.flush()?;
    Ok(())
}

/// SQLite's heap limit gives a clean "out of memory" error; RLIMIT_DATA
/// stops what SQLite does not allocate, RLIMIT_CPU a worker nobody waits for.
fn limit_this_process(limits: &Limits) -> anyhow::Result<()> {
    // SAFETY: sets a process-wide limit; this process runs one query only.
    unsafe { rusqlite::ffi::sqlite3_hard_heap_limit64(limits.max_memory as i64) };
    let data = (limits.max_memory + WORKER_HEADROOM) as libc::rlim_t;
    let cpu = (limits.timeout + WORKER_GRACE).as_secs() as libc::rlim_t + 2;
    for (resource, value) in [(libc::RLIMIT_DATA, data), (libc::RLIMIT_CPU, cpu)] {
        // The soft limit signals (SIGXCPU for the CPU), the hard one kills.
        let limit = libc::rlimit {
            rlim_cur: value,
            rlim_max: value + 1,
        };
        // SAFETY: a valid rlimit struct for a valid resource.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            anyhow::bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE thread (utid INTEGER PRIMARY KEY, tid INTEGER, name TEXT);
             INSERT INTO thread VALUES (0, 0, 'swapper'), (1, 10, 'bash'), (2, 11, 'x');
             CREATE INDEX thread_tid ON thread(tid);
             CREATE TABLE big (v);
             INSERT INTO big VALUES (9007199254740993), (1.5), (x'00ff'), (NULL);",
        )
        .unwrap();
        (dir, path)
    }

    fn run(path: &Path, sql: &str) -> Result<QueryResult, String> {
        let mut db = ReadOnlyDb::open(path).unwrap();
        let limits = Limits {
            timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let budget = db.arm(limits.timeout, Arc::default());
        run_query(&mut db, sql, None, None, &limits, &budget)
    }

    #[test]
    fn reads_work() {
        let (_d, p) = fixture();
        let r = run(
            &p,
            "SELECT tid, upper(name) FROM thread ORDER BY tid; -- done",
        )
        .unwrap();
        assert_eq!(r.columns, ["tid", "upper(name)"]);
        assert_eq!(r.rows[1], [Cell::Int(10), Cell::Text("BASH".into())]);
        let r = run(&p, "SELECT v FROM big").unwrap();
        assert_eq!(r.rows[0][0], Cell::Text("9007199254740993".into()));
        assert_eq!(r.rows[1][0], Cell::Real(1.5));
        assert!(matches!(r.rows[2][0], Cell::Blob { blob_bytes: 2, .. }));
        assert_eq!(r.rows[3][0], Cell::Null);
        run(&p, "PRAGMA table_info(thread)").unwrap();
        run(&p, "SELECT * FROM pragma_table_info('thread')").unwrap();
        run(&p, "SELECT j.value FROM json_each('[1,2]') j").unwrap();
        run(&p, "SELECT '{\"a\":1}' ->> '$.a'").unwrap();
        run(&p, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<5) SELECT sum(x) FROM c").unwrap();
    }

    #[test]
    fn limits_and_offsets() {
        let (_d, p) = fixture();
        let mut db = ReadOnlyDb::open(&p).unwrap();
        let l = Limits::default();
        let b = db.arm(l.timeout, Arc::default());
        let r = run_query(
            &mut db,
            "SELECT tid FROM thread ORDER BY tid",
            Some(2),
            Some(1),
            &l,
            &b,
        )
        .unwrap();
        assert_eq!(r.rows, [[Cell::Int(10)], [Cell::Int(11)]]);
        assert!(!r.truncated);
        let r = run_query(
            &mut db,
            "SELECT tid FROM thread ORDER BY tid",
            Some(1),
            None,
            &l,
            &b,
        )
        .unwrap();
        assert!(r.truncated && r.truncated_by.as_deref() == Some("limit"));
        assert!(run_query(&mut db, "SELECT 1", Some(-1), None, &l, &b).is_err());
        assert!(run_query(&mut db, "SELECT 1", None, Some(-1), &l, &b).is_err());
        let small = Limits {
            max_bytes: 100,
            ..Limits::default()
        };
        let r = run_query(&mut db, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<1000) SELECT x, 'padding padding' FROM c", Some(1000), None, &small, &b).unwrap();
        assert_eq!(r.truncated_by.as_deref(), Some("bytes"));
        let e = run_query(&mut db, "SELECT 1", Some(2001), None, &l, &b).unwrap_err();
        assert!(e.contains("above the maximum of 2000 rows"), "{e}");
        // Without a limit: the default rows, and the default bytes.
        let count = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<1000)";
        let r = run_query(
            &mut db,
            &format!("{count} SELECT x FROM c"),
            None,
            None,
            &l,
            &b,
        )
        .unwrap();
        assert_eq!((r.row_count, r.limit), (l.default_rows, l.default_rows));
        let wide = format!("{count} SELECT x, printf('%.200c', 'x') FROM c");
        let r = run_query(&mut db, &wide, None, None, &l, &b).unwrap();
        assert_eq!(r.truncated_by.as_deref(), Some("bytes"));
        assert!(
            r.row_count < l.default_rows && r.row_count > 5,
            "{}",
            r.row_count
        );
        assert!(r.hint.unwrap().contains("pass limit"));
        let r = run_query(&mut db, &wide, Some(100), None, &l, &b).unwrap();
        assert_eq!(r.row_count, 100, "a limit given lifts the default bytes");
    }

    #[test]
    fn attacks_are_refused() {
        let (_d, p) = fixture();
        let before = std::fs::read(&p).unwrap();
        for sql in [
            "INSERT INTO thread VALUES (9, 9, 'x')",
            "DELETE FROM thread",
            "SELECT 1; DROP TABLE thread",
            "/* hi */ DELETE FROM thread",
            "-- x\nDROP TABLE thread",
            "ATTACH DATABASE '/tmp/evil.db' AS e",
            "PRAGMA writable_schema=1",
            "PRAGMA query_only=0",
            "PRAGMA journal_mode=WAL",
            "SELECT load_extension('x')",
            "VACUUM INTO '/tmp/schedlens-evil.db'",
            "CREATE TEMP TABLE t(x)",
            "BEGIN",
            "SELECT * FROM dbstat",
            "SELECT sqlite_version()",
            "SELECT fts3_tokenizer('simple')",
            "REPLACE INTO thread VALUES (1, 1, 'y')",
            "UPDATE thread SET name = 'y'",
            "CREATE TEMP TRIGGER t AFTER INSERT ON thread BEGIN SELECT 1; END",
            "SELECT * FROM temp.sqlite_master",
            "SAVEPOINT a",
            "ANALYZE",
            "REINDEX",
            "SELECT zeroblob(1000000000)",
            "SELECT count(*) FROM big a, big b, big c, big d, big e, big f, big g, big h, big i, big j, big k, big l, big m, big n",
            "PRAGMA table_info(thread); DELETE FROM thread",
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c",
            "",
            "-- nothing",
        ] {
            let r = run(&p, sql);
            assert!(r.is_err(), "{sql:?} was allowed: {r:?}");
            eprintln!("{sql:?} -> {}", r.unwrap_err());
        }
        assert!(!Path::new("/tmp/schedlens-evil.db").exists());
        assert_eq!(before, std::fs::read(&p).unwrap());
    }
}
