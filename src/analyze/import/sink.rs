//! Rows -> SQLite, all inside the caller's transaction.
//!
//! sched_slice, thread_state and wakeup get millions of rows, so their path
//! is built for SQLite's cheapest case:
//! - Rows are written in id order. A row's id is fixed when the row opens
//!   (other rows refer to it: waker_id), but the row is written when it
//!   closes, so closed rows wait in a reorder window until the rows before
//!   them are written. Appending keeps the B-tree pages full and lets SQLite
//!   skip the seek; a row that stays open longer than the window (a long
//!   sleep) is inserted later in its place.
//! - [`BATCH`] rows go through one multi-row INSERT: the statement overhead
//!   (step, reset, opening the table cursor) is paid once per batch, and
//!   consecutive ids within it hit the B-tree's append fast path.
//! - Values are bound through the C API: integers as integers, and text
//!   (interned state names) as SQLITE_STATIC, where rusqlite would copy
//!   every string.
//!
//! The small tables (task_event, ftrace_event, counter) keep plain prepared
//! statements.

use super::strings::{Str, Strings};
use crate::analyze::aggregate::Aggregator;
use rusqlite::{Connection, Statement, ffi, params};
use std::collections::VecDeque;
use std::ffi::{CStr, c_int};
use std::marker::PhantomData;
use std::ptr;

/// Rows per multi-row INSERT.
const BATCH: usize = 64;
/// Closed rows held for reordering before a row still open is given up on
/// (written out of order later).
const REORDER_WINDOW: usize = 1 << 15;

type R = rusqlite::Result<()>;

/// A sched_slice row.
#[derive(Debug, Clone)]
pub struct SliceRow {
    pub id: i64,
    pub ts: i64,
    pub dur: i64,
    pub cpu: u32,
    pub utid: u32,
    pub end_state: Option<Str>,
    pub priority: i32,
}

/// A thread_state row.
#[derive(Debug, Clone)]
pub struct StateRow {
    pub id: i64,
    pub ts: i64,
    pub dur: i64,
    pub cpu: Option<u32>,
    pub utid: u32,
    pub state: Option<Str>,
    pub io_wait: Option<bool>,
    pub blocked_function: Option<Str>,
    pub waker_utid: Option<u32>,
    pub waker_id: Option<i64>,
    pub irq_context: Option<u32>,
}

/// A wakeup row.
#[derive(Debug, Clone)]
pub struct WakeupRow {
    pub id: i64,
    pub ts: i64,
    pub utid: u32,
    pub waker_utid: Option<u32>,
    pub waking_cpu: u32,
    pub target_cpu: i32,
    pub run_ts: Option<i64>,
    pub run_cpu: Option<u32>,
    pub priority: i32,
}

/// A task_event row.
#[derive(Debug, Clone, Default)]
pub struct TaskEventRow<'a> {
    pub ts: i64,
    pub kind: &'a str,
    pub utid: u32,
    pub tid: i64,
    pub pid: Option<i64>,
    pub parent_utid: Option<u32>,
    pub parent_tid: Option<i64>,
    pub comm: Option<&'a str>,
    pub filename: Option<&'a str>,
    pub clone_flags: Option<i64>,
    pub cpu: u32,
}

/// A prepared statement driven through the C API.
struct RawStmt<'c> {
    db: *mut ffi::sqlite3,
    stmt: *mut ffi::sqlite3_stmt,
    _conn: PhantomData<&'c Connection>,
}

fn error(db: *mut ffi::sqlite3, rc: c_int) -> rusqlite::Error {
    // SAFETY: db is a live connection; errmsg returns a NUL-terminated string
    // owned by SQLite, copied before any other call.
    let msg = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db)) }
        .to_string_lossy()
        .into_owned();
    rusqlite::Error::SqliteFailure(ffi::Error::new(rc), Some(msg))
}

impl<'c> RawStmt<'c> {
    fn prepare(conn: &'c Connection, sql: &str) -> rusqlite::Result<RawStmt<'c>> {
        // SAFETY: the handle stays valid while `conn` lives, and the 'c
        // borrow keeps it alive as long as this statement.
        let db = unsafe { conn.handle() };
        let mut stmt = ptr::null_mut();
        // SAFETY: sql is valid for its length; stmt receives the statement.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                db,
                sql.as_ptr().cast(),
                sql.len() as c_int,
                ffi::SQLITE_PREPARE_PERSISTENT,
                &mut stmt,
                ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(error(db, rc));
        }
        Ok(RawStmt {
            db,
            stmt,
            _conn: PhantomData,
        })
    }

    // The bind functions return SQLite's code; callers OR them together and
    // check once (SQLITE_OK is 0).
    #[inline]
    fn int(&self, i: c_int, v: i64) -> c_int {
        // SAFETY: stmt is a live statement; an index out of range is an error code.
        unsafe { ffi::sqlite3_bind_int64(self.stmt, i, v) }
    }

    #[inline]
    fn opt(&self, i: c_int, v: Option<i64>) -> c_int {
        match v {
            Some(v) => self.int(i, v),
            // SAFETY: as for int.
            None => unsafe { ffi::sqlite3_bind_null(self.stmt, i) },
        }
    }

    /// Binds text without copying it: only valid because every batch binds
    /// all its parameters and runs before `s`'s strings can change (they are
    /// interned and never freed while the import runs).
    #[inline]
    fn text(&self, i: c_int, s: Option<&str>) -> c_int {
        match s {
            // SAFETY: the pointer and length describe s, which outlives the
            // step that reads it (see above).
            Some(s) => unsafe {
                ffi::sqlite3_bind_text(
                    self.stmt,
                    i,
                    s.as_ptr().cast(),
                    s.len() as c_int,
                    ffi::SQLITE_STATIC(),
                )
            },
            None => self.opt(i, None),
        }
    }

    /// Runs the statement with the parameters bound (after `bound`, the OR of
    /// the bind codes) and resets it.
    fn run(&self, bound: c_int) -> R {
        if bound != ffi::SQLITE_OK {
            return Err(error(self.db, bound));
        }
        // SAFETY: stmt is a live statement with all parameters bound.
        let rc = unsafe { ffi::sqlite3_step(self.stmt) };
        let result = if rc == ffi::SQLITE_DONE {
            Ok(())
        } else {
            Err(error(self.db, rc))
        };
        // SAFETY: as above; the step's error, if any, was read first.
        unsafe { ffi::sqlite3_reset(self.stmt) };
        result
    }
}

impl Drop for RawStmt<'_> {
    fn drop(&mut self) {
        // SAFETY: stmt was prepared on db, which the 'c borrow keeps open.
        unsafe { ffi::sqlite3_finalize(self.stmt) };
    }
}

/// A row type of one of the big tables.
trait Row {
    const TABLE: &'static str;
    /// Column names, and for each the parameter (1-based, within the row)
    /// it takes its value from.
    const COLUMNS: &'static [(&'static str, c_int)];
    /// Parameters per row.
    const PARAMS: c_int;
    fn id(&self) -> i64;
    /// Binds parameters `base + 1 ..= base + PARAMS`.
    fn bind(&self, st: &RawStmt<'_>, base: c_int, s: &Strings) -> c_int;
}

impl Row for SliceRow {
    const TABLE: &'static str = "sched_slice";
    const COLUMNS: &'static [(&'static str, c_int)] = &[
        ("id", 1),
        ("ts", 2),
        ("dur", 3),
        ("cpu", 4),
        ("utid", 5),
        ("end_state", 6),
        ("priority", 7),
        ("ucpu", 4),
    ];
    const PARAMS: c_int = 7;
    fn id(&self) -> i64 {
        self.id
    }
    #[inline]
    fn bind(&self, st: &RawStmt<'_>, b: c_int, s: &Strings) -> c_int {
        st.int(b + 1, self.id)
            | st.int(b + 2, self.ts)
            | st.int(b + 3, self.dur)
            | st.int(b + 4, self.cpu.into())
            | st.int(b + 5, self.utid.into())
            | st.text(b + 6, self.end_state.map(|x| s.get(x)))
            | st.int(b + 7, self.priority.into())
    }
}

impl Row for StateRow {
    const TABLE: &'static str = "thread_state";
    const COLUMNS: &'static [(&'static str, c_int)] = &[
        ("id", 1),
        ("ts", 2),
        ("dur", 3),
        ("cpu", 4),
        ("utid", 5),
        ("state", 6),
        ("io_wait", 7),
        ("blocked_function", 8),
        ("waker_utid", 9),
        ("waker_id", 10),
        ("irq_context", 11),
        ("ucpu", 4),
    ];
    const PARAMS: c_int = 11;
    fn id(&self) -> i64 {
        self.id
    }
    #[inline]
    fn bind(&self, st: &RawStmt<'_>, b: c_int, s: &Strings) -> c_int {
        st.int(b + 1, self.id)
            | st.int(b + 2, self.ts)
            | st.int(b + 3, self.dur)
            | st.opt(b + 4, self.cpu.map(i64::from))
            | st.int(b + 5, self.utid.into())
            | st.text(b + 6, self.state.map(|x| s.get(x)))
            | st.opt(b + 7, self.io_wait.map(i64::from))
            | st.text(b + 8, self.blocked_function.map(|x| s.get(x)))
            | st.opt(b + 9, self.waker_utid.map(i64::from))
            | st.opt(b + 10, self.waker_id)
            | st.opt(b + 11, self.irq_context.map(i64::from))
    }
}

impl Row for WakeupRow {
    const TABLE: &'static str = "wakeup";
    const COLUMNS: &'static [(&'static str, c_int)] = &[
        ("id", 1),
        ("ts", 2),
        ("utid", 3),
        ("waker_utid", 4),
        ("waking_cpu", 5),
        ("target_cpu", 6),
        ("run_ts", 7),
        ("run_cpu", 8),
        ("latency", 9),
        ("priority", 10),
    ];
    const PARAMS: c_int = 10;
    fn id(&self) -> i64 {
        self.id
    }
    #[inline]
    fn bind(&self, st: &RawStmt<'_>, b: c_int, _: &Strings) -> c_int {
        st.int(b + 1, self.id)
            | st.int(b + 2, self.ts)
            | st.int(b + 3, self.utid.into())
            | st.opt(b + 4, self.waker_utid.map(i64::from))
            | st.int(b + 5, self.waking_cpu.into())
            | st.int(b + 6, self.target_cpu.into())
            | st.opt(b + 7, self.run_ts)
            | st.opt(b + 8, self.run_cpu.map(i64::from))
            | st.opt(b + 9, self.run_ts.map(|r| r - self.ts))
            | st.int(b + 10, self.priority.into())
    }
}

/// `INSERT INTO table (columns) VALUES (...), ...` for `rows` rows.
fn insert_sql<T: Row>(rows: usize) -> String {
    let names: Vec<&str> = T::COLUMNS.iter().map(|c| c.0).collect();
    let values: Vec<String> = (0..rows as c_int)
        .map(|r| {
            let params: Vec<String> = T::COLUMNS
                .iter()
                .map(|c| format!("?{}", r * T::PARAMS + c.1))
                .collect();
            format!("({})", params.join(","))
        })
        .collect();
    format!(
        "INSERT INTO {} ({}) VALUES {}",
        T::TABLE,
        names.join(","),
        values.join(",")
    )
}

/// One big table's writer: reorder window, batch, statements.
struct Table<'c, T: Row> {
    batch_stmt: RawStmt<'c>,
    one_stmt: RawStmt<'c>,
    /// Id of the first slot of `window`.
    base: i64,
    /// Rows with ids from `base` on; None for rows not closed yet.
    window: VecDeque<Option<T>>,
    /// Rows ready to be written, up to BATCH.
    batch: Vec<T>,
}

impl<'c, T: Row> Table<'c, T> {
    fn new(conn: &'c Connection) -> rusqlite::Result<Table<'c, T>> {
        Ok(Table {
            batch_stmt: RawStmt::prepare(conn, &insert_sql::<T>(BATCH))?,
            one_stmt: RawStmt::prepare(conn, &insert_sql::<T>(1))?,
            base: 0,
            window: VecDeque::new(),
            batch: Vec::with_capacity(BATCH),
        })
    }

    /// Takes a closed row and writes every row that is now in order.
    fn add(&mut self, row: T, s: &Strings) -> R {
        let Ok(at) = usize::try_from(row.id() - self.base) else {
            // Its slot was given up on: insert it in place.
            return self.ready(row, s);
        };
        if at >= self.window.len() {
            self.window.resize_with(at + 1, || None);
        }
        self.window[at] = Some(row);
        if at > 0 && self.window.len() <= REORDER_WINDOW {
            return Ok(());
        }
        while self.window.len() > REORDER_WINDOW || matches!(self.window.front(), Some(Some(_))) {
            let front = self.window.pop_front().flatten();
            self.base += 1;
            if let Some(r) = front {
                self.ready(r, s)?;
            }
        }
        Ok(())
    }

    fn ready(&mut self, row: T, s: &Strings) -> R {
        self.batch.push(row);
        if self.batch.len() < BATCH {
            return Ok(());
        }
        let st = &self.batch_stmt;
        let mut bound = ffi::SQLITE_OK;
        for (i, r) in self.batch.iter().enumerate() {
            bound |= r.bind(st, i as c_int * T::PARAMS, s);
        }
        self.batch.clear();
        st.run(bound)
    }

    /// A row not written yet, to be amended.
    fn pending(&mut self, id: i64) -> Option<&mut T> {
        let in_window = usize::try_from(id - self.base)
            .ok()
            .and_then(|at| self.window.get_mut(at))
            .and_then(Option::as_mut);
        match in_window {
            Some(r) => Some(r),
            None => self.batch.iter_mut().find(|r| r.id() == id),
        }
    }

    /// Writes every row held.
    fn flush(&mut self, s: &Strings) -> R {
        while let Some(r) = self.window.pop_front() {
            self.base += 1;
            if let Some(r) = r {
                self.ready(r, s)?;
            }
        }
        for r in std::mem::take(&mut self.batch) {
            self.one_stmt.run(r.bind(&self.one_stmt, 0, s))?;
        }
        Ok(())
    }
}

pub struct Sink<'c> {
    slice: Table<'c, SliceRow>,
    state: Table<'c, StateRow>,
    wakeup: Table<'c, WakeupRow>,
    state_blocked: Statement<'c>,
    task_event: Statement<'c>,
    ftrace_event: Statement<'c>,
    counter: Statement<'c>,
    task_event_id: i64,
    ftrace_event_id: i64,
    counter_id: i64,
    /// Rows written, for the load summary.
    pub rows: u64,
    /// Per-bucket totals of the rows written (aggregate.rs).
    pub agg: Aggregator,
}

impl<'c> Sink<'c> {
    pub fn new(conn: &'c Connection) -> rusqlite::Result<Sink<'c>> {
        Ok(Sink {
            slice: Table::new(conn)?,
            state: Table::new(conn)?,
            wakeup: Table::new(conn)?,
            state_blocked: conn.prepare(
                "UPDATE thread_state SET io_wait = ?2, blocked_function = coalesce(?3, blocked_function) \
                 WHERE id = ?1",
            )?,
            task_event: conn.prepare(
                "INSERT INTO task_event (id, ts, type, utid, tid, pid, parent_utid, parent_tid, comm, \
                 filename, clone_flags, cpu) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?,
            ftrace_event: conn.prepare(
                "INSERT INTO ftrace_event (id, ts, name, cpu, utid, common_flags, ucpu, args) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?4, ?7)",
            )?,
            counter: conn.prepare("INSERT INTO counter (id, ts, track_id, value) VALUES (?1, ?2, ?3, ?4)")?,
            task_event_id: 0,
            ftrace_event_id: 0,
            counter_id: 0,
            rows: 0,
            agg: Aggregator::new(),
        })
    }

    pub fn slice(&mut self, r: SliceRow, s: &Strings) -> R {
        self.rows += 1;
        self.agg.slice(r.cpu, r.utid, r.ts, r.dur);
        self.slice.add(r, s)
    }

    pub fn state(&mut self, r: StateRow, s: &Strings) -> R {
        self.rows += 1;
        self.agg
            .state(r.utid, r.ts, r.dur, r.state.map(|x| s.get(x)));
        self.state.add(r, s)
    }

    /// sched_blocked_reason for a thread_state row already closed.
    pub fn state_blocked(&mut self, id: i64, io_wait: bool, func: Option<Str>, s: &Strings) -> R {
        if let Some(r) = self.state.pending(id) {
            r.io_wait = Some(io_wait);
            if func.is_some() {
                r.blocked_function = func;
            }
            return Ok(());
        }
        self.state_blocked
            .execute(params![id, io_wait, func.map(|f| s.get(f))])
            .map(drop)
    }

    pub fn wakeup(&mut self, r: WakeupRow, s: &Strings) -> R {
        self.rows += 1;
        self.agg.wakeup(r.utid, r.ts, r.run_ts.map(|t| t - r.ts));
        self.wakeup.add(r, s)
    }

    /// Writes the rows still held for reordering; call once, after the last row.
    pub fn finish(&mut self, s: &Strings) -> R {
        self.slice.flush(s)?;
        self.state.flush(s)?;
        self.wakeup.flush(s)
    }

    pub fn task_event(&mut self, r: &TaskEventRow<'_>) -> R {
        self.rows += 1;
        let id = self.task_event_id;
        self.task_event_id += 1;
        self.task_event
            .execute(params![
                id,
                r.ts,
                r.kind,
                r.utid,
                r.tid,
                r.pid,
                r.parent_utid,
                r.parent_tid,
                r.comm,
                r.filename,
                r.clone_flags,
                r.cpu
            ])
            .map(drop)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn ftrace_event(
        &mut self,
        ts: i64,
        name: &str,
        cpu: u32,
        utid: Option<u32>,
        common_flags: Option<u32>,
        args: &str,
    ) -> R {
        self.rows += 1;
        let id = self.ftrace_event_id;
        self.ftrace_event_id += 1;
        self.ftrace_event
            .execute(params![id, ts, name, cpu, utid, common_flags, args])
            .map(drop)
    }

    pub fn counter(&mut self, ts: i64, track: i64, value: f64) -> R {
        self.rows += 1;
        let id = self.counter_id;
        self.counter_id += 1;
        self.counter
            .execute(params![id, ts, track, value])
            .map(drop)
    }
}
