//! Rows -> storage. The three big tables (sched_slice, thread_state,
//! wakeup) go to the column file (see [`crate::analyzer::columns`]): a row
//! is a few values appended to a block, where an SQLite insert cost
//! ~0.5 us. Appending and packing them is a quarter of a load's work, so it
//! runs on a thread of its own, fed batches of rows, beside the parse. The
//! small tables (task_event, ftrace_event, counter) are SQLite rows through
//! prepared statements, inside the caller's transaction.

use crate::analyzer::aggregate::Aggregator;
use crate::analyzer::columns::{self, ColumnFile, ColumnRow, Layout, Put, StrMap, TableWriter};
use crate::analyzer::strings::{Str, Strings};
use anyhow::Context;
use rusqlite::{Connection, Statement, params};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

type R = anyhow::Result<()>;

/// A sched_slice row. Its Str fields are the importer's strings until the
/// sink hands the row to the column writer, then the column file's.
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

/// A thread_state row (Str fields: as in [`SliceRow`]).
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
        out.int(self.end_state);
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
        out.int(self.state);
        out.int(self.io_wait);
        out.int(self.blocked_function);
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

/// Work for the column writer.
enum Op {
    Slice(SliceRow),
    State(StateRow),
    /// sched_blocked_reason for a closed thread_state row.
    Blocked {
        id: i64,
        io_wait: bool,
        func: Option<u32>,
    },
    Wakeup(WakeupRow),
}

enum Msg {
    Ops(Vec<Op>),
    /// The last message: the file's strings.
    Finish(Vec<String>),
}

/// Ops per batch handed to the writer thread.
const BATCH: usize = 4096;
/// Batches in flight: enough to ride out a slow block write, few enough to
/// bound memory (each is ~0.5 MB).
const IN_FLIGHT: usize = 4;

/// The column file and its table writers, on the writer thread.
struct ColumnWriter {
    file: ColumnFile,
    slice: TableWriter<SliceRow>,
    state: TableWriter<StateRow>,
    wakeup: TableWriter<WakeupRow>,
}

impl ColumnWriter {
    /// Applies batches until told to finish, returning the tables' row
    /// counts; returns early (unfinished) if the importer drops the sender.
    fn run(mut self, ops: Receiver<Msg>, empties: SyncSender<Vec<Op>>) -> anyhow::Result<[u64; 3]> {
        for msg in ops {
            match msg {
                Msg::Ops(mut batch) => {
                    for op in batch.drain(..) {
                        self.apply(op)?;
                    }
                    // The importer reuses it (or it is dropped if it has one).
                    let _ = empties.try_send(batch);
                }
                Msg::Finish(strings) => return self.finish(strings),
            }
        }
        Ok([0; 3])
    }

    fn apply(&mut self, op: Op) -> R {
        let file = &mut self.file;
        match op {
            Op::Slice(r) => self.slice.add(r, file),
            Op::State(r) => self.state.add(r, file),
            Op::Wakeup(r) => self.wakeup.add(r, file),
            Op::Blocked { id, io_wait, func } => {
                if let Some(r) = self.state.pending(id) {
                    r.io_wait = Some(io_wait);
                    if func.is_some() {
                        r.blocked_function = func;
                    }
                    return Ok(());
                }
                self.state.patch(id, STATE_IO_WAIT, Some(io_wait.into()));
                if let Some(f) = func {
                    self.state.patch(id, STATE_BLOCKED_FUNCTION, Some(f.into()));
                }
                Ok(())
            }
        }
    }

    fn finish(mut self, strings: Vec<String>) -> anyhow::Result<[u64; 3]> {
        self.slice.flush(&mut self.file)?;
        self.state.flush(&mut self.file)?;
        self.wakeup.flush(&mut self.file)?;
        let rows = [self.slice.rows(), self.state.rows(), self.wakeup.rows()];
        self.file.finish(
            &mut [&mut self.slice, &mut self.state, &mut self.wakeup],
            strings,
        )?;
        Ok(rows)
    }
}

pub struct Sink<'c> {
    build_id: u64,
    /// The batch being filled for the writer thread.
    batch: Vec<Op>,
    /// None once finished.
    to_writer: Option<SyncSender<Msg>>,
    empties: Receiver<Vec<Op>>,
    writer: Option<JoinHandle<anyhow::Result<[u64; 3]>>>,
    /// Importer strings -> the column file's.
    strs: StrMap,
    /// Row counts of the column tables, once finished.
    column_rows: [u64; 3],
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
        let build_id = file.build_id();
        let (to_writer, ops) = sync_channel(IN_FLIGHT);
        let (to_importer, empties) = sync_channel(IN_FLIGHT);
        let writer = ColumnWriter {
            file,
            slice: TableWriter::default(),
            state: TableWriter::default(),
            wakeup: TableWriter::default(),
        };
        let writer = std::thread::Builder::new()
            .name("column-writer".into())
            .spawn(move || writer.run(ops, to_importer))
            .context("cannot start the column writer thread")?;
        Ok(Sink {
            build_id,
            batch: Vec::with_capacity(BATCH),
            to_writer: Some(to_writer),
            empties,
            writer: Some(writer),
            strs: StrMap::default(),
            column_rows: [0; 3],
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

    /// Queues an op for the writer thread.
    #[inline]
    fn push(&mut self, op: Op) -> R {
        self.batch.push(op);
        if self.batch.len() < BATCH {
            return Ok(());
        }
        let next = self
            .empties
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH));
        let full = std::mem::replace(&mut self.batch, next);
        self.send(Msg::Ops(full))
    }

    fn send(&mut self, msg: Msg) -> R {
        let sent = match &self.to_writer {
            Some(tx) => tx.send(msg).is_ok(),
            None => return Err(finished()),
        };
        if sent {
            return Ok(());
        }
        // The writer stopped: its error says why.
        self.to_writer = None;
        self.join().map(drop)
    }

    fn join(&mut self) -> anyhow::Result<[u64; 3]> {
        match self.writer.take() {
            Some(w) => w
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
                .context("writing the column file"),
            None => Err(finished()),
        }
    }

    pub fn slice(&mut self, mut r: SliceRow, s: &Strings) -> R {
        self.rows += 1;
        self.agg.slice(r.cpu, r.utid, r.ts, r.dur);
        r.end_state = r.end_state.map(|x| self.strs.get(x, s));
        self.push(Op::Slice(r))
    }

    pub fn state(&mut self, mut r: StateRow, s: &Strings) -> R {
        self.rows += 1;
        self.agg
            .state(r.utid, r.ts, r.dur, r.state.map(|x| s.get(x)));
        r.state = r.state.map(|x| self.strs.get(x, s));
        r.blocked_function = r.blocked_function.map(|x| self.strs.get(x, s));
        self.push(Op::State(r))
    }

    /// sched_blocked_reason for a thread_state row already closed.
    pub fn state_blocked(&mut self, id: i64, io_wait: bool, func: Option<Str>, s: &Strings) -> R {
        let func = func.map(|x| self.strs.get(x, s));
        self.push(Op::Blocked { id, io_wait, func })
    }

    pub fn wakeup(&mut self, r: WakeupRow) -> R {
        self.rows += 1;
        self.agg.wakeup(r.utid, r.ts, r.run_ts.map(|t| t - r.ts));
        self.push(Op::Wakeup(r))
    }

    /// (table, rows) of the columnar tables, once finished.
    pub fn column_rows(&self) -> [(&'static str, u64); 3] {
        let [a, b, c] = self.column_rows;
        [
            (columns::SCHED_SLICE.name, a),
            (columns::THREAD_STATE.name, b),
            (columns::WAKEUP.name, c),
        ]
    }

    /// Completes the column file; call once, after the last row.
    pub fn finish(&mut self) -> R {
        let last = std::mem::take(&mut self.batch);
        self.send(Msg::Ops(last))?;
        let strings = std::mem::take(&mut self.strs).into_list();
        self.send(Msg::Finish(strings))?;
        self.to_writer = None;
        self.column_rows = self.join()?;
        Ok(())
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
