//! Rows -> storage. The big tables (declared `in column_file`) go to the
//! column file (see [`crate::analyzer::columns`]): a row is a few values
//! appended to a block, where an SQLite insert cost ~0.5 us. Appending and
//! packing them is a quarter of a load's work, so it runs on a thread of its
//! own, fed batches of rows, beside the parse. The small event tables are
//! SQLite rows through prepared statements, inside the caller's
//! transaction.

use crate::analyzer::aggregate::Aggregator;
use crate::analyzer::columns::{ColumnFile, ColumnRow, StrMap, TableWriter};
use crate::analyzer::schema::{SqlRow, SqlWriter, Table};
use crate::analyzer::strings::{Str, Strings};
use crate::analyzer::tables::{
    COUNTER, CounterRow, FTRACE_EVENT, FtraceEventRow, MIGRATION, MigrationRow, SLICE, SLICE_ARGS,
    SliceArgsRow, SliceRow, StateRow, TASK_EVENT, TaskEventRow, TrackSliceRow, WakeupRow,
};
use anyhow::Context;
use rusqlite::Connection;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// The column file's tables: each gets an [`Op`] variant and a writer on
/// the writer thread. A new column-file table is one more line here.
macro_rules! column_tables {
    ($($row:ident => $writer:ident),* $(,)?) => {
        /// Work for the column writer.
        pub enum Op {
            $($row($row),)*
            /// An amendment to a row already closed: (table, id, physical
            /// column, value).
            Amend(&'static Table, i64, usize, Option<i64>),
        }

        $(impl From<$row> for Op {
            fn from(r: $row) -> Op {
                Op::$row(r)
            }
        })*

        /// The column file and its table writers, on the writer thread.
        struct ColumnWriter {
            file: ColumnFile,
            $($writer: TableWriter<$row>,)*
        }

        impl ColumnWriter {
            fn new(file: ColumnFile) -> ColumnWriter {
                ColumnWriter {
                    file,
                    $($writer: TableWriter::default(),)*
                }
            }

            fn apply(&mut self, op: Op) -> anyhow::Result<()> {
                match op {
                    $(Op::$row(r) => self.$writer.add(r, &mut self.file),)*
                    Op::Amend(table, id, col, value) => {
                        $(if std::ptr::eq(table, <$row as ColumnRow>::TABLE) {
                            self.$writer.amend(id, col, value);
                        })*
                        Ok(())
                    }
                }
            }

            /// Writes the rest and completes the file; the tables' row counts.
            fn finish(mut self, strings: Vec<String>) -> anyhow::Result<Vec<(&'static str, u64)>> {
                $(self.$writer.flush(&mut self.file)?;)*
                let rows = vec![$((<$row as ColumnRow>::TABLE.name, self.$writer.rows()),)*];
                self.file.finish(&mut [$(&mut self.$writer),*], strings)?;
                Ok(rows)
            }
        }
    };
}

column_tables! {
    SliceRow => slice,
    StateRow => state,
    WakeupRow => wakeup,
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

type ColumnRows = Vec<(&'static str, u64)>;

impl ColumnWriter {
    /// Applies batches until told to finish, returning the tables' row
    /// counts; returns early (unfinished) if the importer drops the sender.
    fn run(
        mut self,
        ops: Receiver<Msg>,
        empties: SyncSender<Vec<Op>>,
    ) -> anyhow::Result<ColumnRows> {
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
        Ok(Vec::new())
    }
}

pub struct Sink<'c> {
    build_id: u64,
    /// The batch being filled for the writer thread.
    batch: Vec<Op>,
    /// None once finished.
    to_writer: Option<SyncSender<Msg>>,
    empties: Receiver<Vec<Op>>,
    writer: Option<JoinHandle<anyhow::Result<ColumnRows>>>,
    /// Importer strings -> the column file's.
    strs: StrMap,
    /// (table, rows) of the column tables, once finished.
    column_rows: ColumnRows,
    task_event: SqlWriter<'c>,
    ftrace_event: SqlWriter<'c>,
    counter: SqlWriter<'c>,
    slice: SqlWriter<'c>,
    slice_args: SqlWriter<'c>,
    migration: SqlWriter<'c>,
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
        let writer = ColumnWriter::new(file);
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
            column_rows: Vec::new(),
            task_event: SqlWriter::new(conn, &TASK_EVENT)?,
            ftrace_event: SqlWriter::new(conn, &FTRACE_EVENT)?,
            counter: SqlWriter::new(conn, &COUNTER)?,
            slice: SqlWriter::new(conn, &SLICE)?,
            slice_args: SqlWriter::new(conn, &SLICE_ARGS)?,
            migration: SqlWriter::new(conn, &MIGRATION)?,
            rows: 0,
            agg: Aggregator::new(),
        })
    }

    /// The id of the column file being written (recorded in the metadata,
    /// so a database is only ever used with its own columns).
    pub fn build_id(&self) -> u64 {
        self.build_id
    }

    /// Queues a row of a column-file table for the writer thread, its
    /// strings mapped to the file's. Rows arrive when they close, each with
    /// the id it got when it opened (ids dense from 0, in ts order).
    #[inline]
    pub fn column_row<R: ColumnRow>(&mut self, mut r: R, s: &Strings) -> anyhow::Result<()>
    where
        Op: From<R>,
    {
        self.rows += 1;
        r.map_text(&mut |x| self.strs.get(x, s));
        self.push(Op::from(r))
    }

    #[inline]
    fn push(&mut self, op: Op) -> anyhow::Result<()> {
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

    fn send(&mut self, msg: Msg) -> anyhow::Result<()> {
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

    fn join(&mut self) -> anyhow::Result<ColumnRows> {
        match self.writer.take() {
            Some(w) => w
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
                .context("writing the column file"),
            None => Err(finished()),
        }
    }

    pub fn slice(&mut self, r: SliceRow, s: &Strings) -> anyhow::Result<()> {
        self.agg.slice(r.cpu, r.utid, r.ts, r.dur);
        self.column_row(r, s)
    }

    pub fn state(&mut self, r: StateRow, s: &Strings) -> anyhow::Result<()> {
        self.agg
            .state(r.utid, r.ts, r.dur, r.state.map(|x| s.get(x)));
        self.column_row(r, s)
    }

    pub fn wakeup(&mut self, r: WakeupRow, s: &Strings) -> anyhow::Result<()> {
        self.agg.wakeup(r.utid, r.ts, r.run_ts.map(|t| t - r.ts));
        self.column_row(r, s)
    }

    /// Amends stored column `col` of row `id` of a column-file table, a
    /// row already handed over.
    pub fn amend(
        &mut self,
        table: &'static Table,
        id: i64,
        col: usize,
        value: Option<i64>,
    ) -> anyhow::Result<()> {
        self.push(Op::Amend(table, id, col, value))
    }

    /// [`Sink::amend`] with a string.
    pub fn amend_text(
        &mut self,
        table: &'static Table,
        id: i64,
        col: usize,
        value: Str,
        s: &Strings,
    ) -> anyhow::Result<()> {
        let value = self.strs.get(value, s);
        self.amend(table, id, col, Some(value.into()))
    }

    /// (table, rows) of the column-file tables, once finished.
    pub fn column_rows(&self) -> &[(&'static str, u64)] {
        &self.column_rows
    }

    /// Completes the column file; call once, after the last row.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        let last = std::mem::take(&mut self.batch);
        self.send(Msg::Ops(last))?;
        let strings = std::mem::take(&mut self.strs).into_list();
        self.send(Msg::Finish(strings))?;
        self.to_writer = None;
        self.column_rows = self.join()?;
        Ok(())
    }

    fn sql_row<R: SqlRow>(w: &mut SqlWriter<'_>, rows: &mut u64, r: &R) -> anyhow::Result<()> {
        *rows += 1;
        w.insert(r).map_err(Into::into)
    }

    pub fn task_event(&mut self, r: &TaskEventRow<'_>) -> anyhow::Result<()> {
        Self::sql_row(&mut self.task_event, &mut self.rows, r)
    }

    pub fn ftrace_event(&mut self, r: &FtraceEventRow<'_>) -> anyhow::Result<()> {
        Self::sql_row(&mut self.ftrace_event, &mut self.rows, r)
    }

    pub fn counter(&mut self, r: &CounterRow) -> anyhow::Result<()> {
        Self::sql_row(&mut self.counter, &mut self.rows, r)
    }

    pub fn slice_args(&mut self, r: &SliceArgsRow<'_>) -> anyhow::Result<()> {
        Self::sql_row(&mut self.slice_args, &mut self.rows, r)
    }

    pub fn migration(&mut self, r: &MigrationRow) -> anyhow::Result<()> {
        Self::sql_row(&mut self.migration, &mut self.rows, r)
    }

    pub fn track_slice(&mut self, r: &TrackSliceRow<'_>) -> anyhow::Result<()> {
        Self::sql_row(&mut self.slice, &mut self.rows, r)
    }
}

fn finished() -> anyhow::Error {
    anyhow::anyhow!("row written after the column file was finished")
}
