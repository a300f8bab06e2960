//! Rows -> storage. The three big tables (sched_slice, thread_state,
//! wakeup) go to the column file (see [`crate::analyze::columns`]): a row
//! is a few fixed-width values appended to a block, where an SQLite insert
//! cost ~0.5 us. The small tables (task_event, ftrace_event, counter) are
//! SQLite rows through prepared statements, inside the caller's transaction.

use super::strings::{Str, Strings};
use crate::analyze::aggregate::Aggregator;
use crate::analyze::columns::{self, ColumnFile, ColumnRow, Layout, Patch, Put, TableWriter};
use rusqlite::{Connection, Statement, params};
use std::path::Path;

type R = anyhow::Result<()>;

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

/// thread_state's physical columns amended by sched_blocked_reason.
const STATE_IO_WAIT: usize = 5;
const STATE_BLOCKED_FUNCTION: usize = 6;

impl ColumnRow for SliceRow {
    const LAYOUT: &'static Layout = &columns::SCHED_SLICE;
    fn id(&self) -> i64 {
        self.id
    }
    #[inline]
    fn put(&self, out: &mut impl Put) {
        out.int(Some(self.ts));
        out.int(Some(self.dur));
        out.int(Some(self.cpu));
        out.int(Some(self.utid));
        out.str(self.end_state);
        out.int(Some(self.priority));
    }
}

impl ColumnRow for StateRow {
    const LAYOUT: &'static Layout = &columns::THREAD_STATE;
    fn id(&self) -> i64 {
        self.id
    }
    #[inline]
    fn put(&self, out: &mut impl Put) {
        out.int(Some(self.ts));
        out.int(Some(self.dur));
        out.int(self.cpu);
        out.int(Some(self.utid));
        out.str(self.state);
        out.int(self.io_wait);
        out.str(self.blocked_function);
        out.int(self.waker_utid);
        out.int(self.waker_id);
        out.int(self.irq_context);
    }
}

impl ColumnRow for WakeupRow {
    const LAYOUT: &'static Layout = &columns::WAKEUP;
    fn id(&self) -> i64 {
        self.id
    }
    #[inline]
    fn put(&self, out: &mut impl Put) {
        out.int(Some(self.ts));
        out.int(Some(self.utid));
        out.int(self.waker_utid);
        out.int(Some(self.waking_cpu));
        out.int(Some(self.target_cpu));
        out.int(self.run_ts);
        out.int(self.run_cpu);
        out.int(Some(self.priority));
    }
}

pub struct Sink<'c> {
    /// None once finished.
    file: Option<ColumnFile>,
    build_id: u64,
    slice: TableWriter<SliceRow>,
    state: TableWriter<StateRow>,
    wakeup: TableWriter<WakeupRow>,
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
    /// Writes the big tables to the column file `columns` (an anonymous
    /// temporary file if None) and the others to `conn`.
    pub fn new(conn: &'c Connection, columns: Option<&Path>) -> anyhow::Result<Sink<'c>> {
        let file = ColumnFile::create(columns)?;
        Ok(Sink {
            build_id: file.build_id(),
            file: Some(file),
            slice: TableWriter::default(),
            state: TableWriter::default(),
            wakeup: TableWriter::default(),
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

    /// The id of the column file being written (recorded in the metadata,
    /// so a database is only ever used with its own columns).
    pub fn build_id(&self) -> u64 {
        self.build_id
    }

    pub fn slice(&mut self, r: SliceRow, s: &Strings) -> R {
        self.rows += 1;
        self.agg.slice(r.cpu, r.utid, r.ts, r.dur);
        let file = self.file.as_mut().ok_or_else(finished)?;
        self.slice.add(r, file, s)
    }

    pub fn state(&mut self, r: StateRow, s: &Strings) -> R {
        self.rows += 1;
        self.agg
            .state(r.utid, r.ts, r.dur, r.state.map(|x| s.get(x)));
        let file = self.file.as_mut().ok_or_else(finished)?;
        self.state.add(r, file, s)
    }

    /// sched_blocked_reason for a thread_state row already closed.
    pub fn state_blocked(&mut self, id: i64, io_wait: bool, func: Option<Str>, _: &Strings) -> R {
        if let Some(r) = self.state.pending(id) {
            r.io_wait = Some(io_wait);
            if func.is_some() {
                r.blocked_function = func;
            }
            return Ok(());
        }
        self.state
            .patch(id, STATE_IO_WAIT, Patch::Int(Some(io_wait.into())));
        if func.is_some() {
            self.state
                .patch(id, STATE_BLOCKED_FUNCTION, Patch::Str(func));
        }
        Ok(())
    }

    pub fn wakeup(&mut self, r: WakeupRow, s: &Strings) -> R {
        self.rows += 1;
        self.agg.wakeup(r.utid, r.ts, r.run_ts.map(|t| t - r.ts));
        let file = self.file.as_mut().ok_or_else(finished)?;
        self.wakeup.add(r, file, s)
    }

    /// (table, rows) of the columnar tables.
    pub fn column_rows(&self) -> [(&'static str, u64); 3] {
        [
            (columns::SCHED_SLICE.name, self.slice.rows()),
            (columns::THREAD_STATE.name, self.state.rows()),
            (columns::WAKEUP.name, self.wakeup.rows()),
        ]
    }

    /// Completes the column file; call once, after the last row.
    pub fn finish(&mut self, s: &Strings) -> R {
        let mut file = self.file.take().ok_or_else(finished)?;
        self.slice.flush(&mut file, s)?;
        self.state.flush(&mut file, s)?;
        self.wakeup.flush(&mut file, s)?;
        file.finish(&mut [&mut self.slice, &mut self.state, &mut self.wakeup], s)
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
            .map_err(Into::into)
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
            .map_err(Into::into)
    }

    pub fn counter(&mut self, ts: i64, track: i64, value: f64) -> R {
        self.rows += 1;
        let id = self.counter_id;
        self.counter_id += 1;
        self.counter
            .execute(params![id, ts, track, value])
            .map(drop)
            .map_err(Into::into)
    }
}

fn finished() -> anyhow::Error {
    anyhow::anyhow!("row written after the column file was finished")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amended_columns_are_the_layout_s() {
        let phys = columns::THREAD_STATE.phys;
        assert_eq!(phys[STATE_IO_WAIT].0, "io_wait");
        assert_eq!(phys[STATE_BLOCKED_FUNCTION].0, "blocked_function");
    }
}
