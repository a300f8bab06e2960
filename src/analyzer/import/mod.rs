//! Perfetto trace -> SQLite, following trace_processor's rules.
//!
//! The pipeline mirrors trace_processor's: the [`reader`](crate::perfetto::reader)
//! yields packets; the [`tokenizer`] turns them into events (in file order)
//! and takes in the packets that describe the trace ([`trace_info`]); the
//! [`sorter`] orders events by timestamp within a bounded window; the
//! [`parser`] hands each event to the trackers that apply trace_processor's
//! rules: [`sched`] (sched_slice), [`thread_state`] (thread_state, wakeup),
//! [`lifecycle`] (task_event), [`process`] and [`process_tree`] (thread,
//! process), [`counter`], [`slice`] (on the [`track`]s). They write rows through the [`sink`]. Threads,
//! processes, CPUs, stats and metadata are written at the end from memory
//! (they are small).

mod counter;
mod events;
mod lifecycle;
mod parser;
mod process;
mod process_tree;
mod sched;
mod sink;
mod slice;
mod sorter;
pub(crate) mod stacks;
mod thread_state;
mod tokenizer;
mod trace_info;
mod track;

use crate::analyzer::schema::SqlWriter;
use crate::analyzer::stats::{Stat, Stats};
use crate::analyzer::strings::Strings;
use crate::analyzer::tables::{
    COUNTER_TRACK, CPU, CounterTrackRow, FtraceEventRow, LOST_EVENTS, METADATA, MetadataRow,
    PERF_SAMPLE, PERF_SESSION, PROCESS, PerfSampleRow, PerfSessionRow, ProcessRow,
    STACK_PROFILE_CALLSITE, STACK_PROFILE_FRAME, STACK_PROFILE_MAPPING, STATS,
    StackProfileCallsiteRow, StackProfileFrameRow, StackProfileMappingRow, StatsRow, THREAD,
    TRACE_BOUNDS, TRACK, ThreadRow, TraceBoundsRow, TrackRow,
};
use crate::perfetto::reader::{TraceReader, Truncation};
use anyhow::Context;
use process::{ProcessTracker, Utid};
use rusqlite::Connection;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;
use trace_info::{Meta, TraceInfo};

/// Progress bars only for files that take noticeable time.
const PROGRESS_MIN_BYTES: u64 = 32 << 20;

/// What one import did.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    /// Packets read (including those inside compressed containers).
    pub packets: u64,
    /// Events tokenized (switches, wakings, other ftrace events, snapshots).
    pub events: u64,
    /// Rows written to the event tables.
    pub rows: u64,
    /// Packets of kinds the importer does not use.
    pub unknown_packets: u64,
    /// Set when the file ended inside a packet.
    pub truncation: Option<Truncation>,
    pub seconds: f64,
}

/// What the trackers share, as in trace_processor's context and storage:
/// the trace's strings, the thread and process tables (with the process
/// tracker's identity rules), the rows written so far, and the counters.
/// Each tracker keeps its own state; this is only what they all use.
pub struct Storage<'c> {
    pub strings: Strings,
    pub stats: Stats,
    pub procs: ProcessTracker,
    pub tracks: track::Tracks,
    pub sink: sink::Sink<'c>,
}

impl Storage<'_> {
    /// An ftrace_event row: an event no table models, or one the tables
    /// cannot take (before the tracing window).
    pub fn ftrace_event(
        &mut self,
        ts: i64,
        name: &str,
        cpu: u32,
        utid: Option<Utid>,
        common_flags: Option<u32>,
        args: &str,
    ) -> anyhow::Result<()> {
        self.sink.ftrace_event(&FtraceEventRow {
            ts,
            name,
            cpu,
            utid,
            common_flags,
            args,
        })
    }
}

/// Loads `trace` into `conn`, whose schema must exist; the caller owns the
/// transaction. A truncated file loads what is complete (see the report);
/// a corrupt packet is an error naming its index and byte offset.
pub fn import(trace: &Path, conn: &Connection, progress: bool) -> anyhow::Result<ImportReport> {
    import_from(TraceReader::open(trace)?, conn, progress)
}

/// [`import`] from an opened reader: lets tests and the fuzzers load bytes
/// held in memory without a file per input.
pub fn import_from(
    mut reader: TraceReader,
    conn: &Connection,
    progress: bool,
) -> anyhow::Result<ImportReport> {
    let started = Instant::now();
    let bar =
        (progress && std::io::stderr().is_terminal() && reader.file_size() >= PROGRESS_MIN_BYTES)
            .then(|| {
                let bar = indicatif::ProgressBar::new(reader.file_size());
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "loading {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar
            });
    let bytes_read = reader.file_bytes_read();
    // The big tables go beside the database file (none for in-memory ones).
    let columns = conn
        .path()
        .filter(|p| !p.is_empty())
        .map(|p| crate::analyzer::columns::path_for(Path::new(p)));
    let sink = sink::Sink::new(conn, columns.as_deref())?;
    let mut tok = tokenizer::Tokenizer::new();
    tok.info.set_int("columns_build_id", sink.build_id() as i64);
    let mut strings = Strings::default();
    let procs = ProcessTracker::new(strings.intern("swapper"));
    let mut parser = parser::Parser::new(&mut strings);
    let mut st = Storage {
        strings,
        stats: Stats::default(),
        procs,
        tracks: track::Tracks::default(),
        sink,
    };
    let mut packets = 0u64;
    while let Some(p) = reader.next_packet()? {
        packets += 1;
        if let Err(e) = tok.packet(&mut st.strings, p.data) {
            anyhow::bail!(
                "corrupt trace: packet #{} at byte offset {}: {e}",
                p.index,
                p.offset
            );
        }
        if tok.sorter.len() > sorter::WINDOW_HIGH {
            tok.sorter.extract(sorter::WINDOW_LOW, |ts, event| {
                parser.event(&mut st, &tok.info, ts, event)
            })?;
        }
        if let Some(bar) = &bar
            && packets % 256 == 0
        {
            bar.set_position(bytes_read.load(Ordering::Relaxed));
        }
    }
    tok.sorter
        .extract(0, |ts, event| parser.event(&mut st, &tok.info, ts, event))?;
    parser.finish(&mut st)?;
    for &(table, rows) in st.sink.column_rows() {
        tok.info
            .set_int(&crate::analyzer::columns::row_count_key(table), rows as i64);
    }
    if tok.sorter.out_of_order > 0 {
        st.stats.add(
            Stat::sorter_push_event_out_of_order,
            tok.sorter.out_of_order as i64,
        );
    }
    st.stats.merge(std::mem::take(&mut tok.stats));
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = ImportReport {
        packets,
        events: tok.events,
        rows: st.sink.rows,
        unknown_packets: tok.unknown_packets,
        truncation: reader.truncation().cloned(),
        seconds: started.elapsed().as_secs_f64(),
    };
    write_tables(conn, &st, &mut tok.info, &parser, &report)?;
    write_stack_tables(conn, &st, &tok.stacks, &parser).context("writing the trace's tables")?;
    let (_, end_ts) = parser.bounds();
    std::mem::take(&mut st.sink.agg)
        .write(conn, end_ts)
        .context("writing the aggregate tables")?;
    Ok(report)
}

/// The stack tables (import/stacks.rs).
fn write_stack_tables(
    conn: &Connection,
    st: &Storage<'_>,
    stacks: &stacks::StackImport,
    parser: &parser::Parser,
) -> rusqlite::Result<()> {
    let s = &st.strings;
    let mut w = SqlWriter::new(conn, &STACK_PROFILE_MAPPING)?;
    for m in &stacks.mappings {
        w.insert(&StackProfileMappingRow {
            build_id: s.get(m.build_id),
            exact_offset: 0,
            start_offset: 0,
            start: 0,
            end: 0,
            load_bias: 0,
            name: s.get(m.name),
        })?;
    }
    let mut w = SqlWriter::new(conn, &STACK_PROFILE_FRAME)?;
    for f in &stacks.frames {
        w.insert(&StackProfileFrameRow {
            name: f.name.map_or("", |n| s.get(n)),
            mapping: f.mapping,
            rel_pc: f.rel_pc,
        })?;
    }
    let mut w = SqlWriter::new(conn, &STACK_PROFILE_CALLSITE)?;
    for c in &stacks.callsites {
        w.insert(&StackProfileCallsiteRow {
            depth: c.depth,
            parent_id: c.parent,
            frame_id: c.frame,
        })?;
    }
    let mut w = SqlWriter::new(conn, &PERF_SESSION)?;
    for kind in &stacks.sessions {
        w.insert(&PerfSessionRow {
            cmdline: None,
            stack_kind: kind.map(|k| k.name()),
        })?;
    }
    let mut w = SqlWriter::new(conn, &PERF_SAMPLE)?;
    for (ts, utid, p) in parser.perf_samples() {
        w.insert(&PerfSampleRow {
            ts: *ts,
            utid: *utid,
            cpu: p.cpu,
            cpu_mode: stacks::cpu_mode_name(p.cpu_mode),
            callsite_id: p.callsite,
            unwind_error: None,
            perf_session_id: Some(p.session),
        })?;
    }
    Ok(())
}

/// The small tables, from what the import holds in memory.
fn write_tables(
    conn: &Connection,
    st: &Storage<'_>,
    info: &mut TraceInfo,
    parser: &parser::Parser,
    report: &ImportReport,
) -> rusqlite::Result<()> {
    let s = &st.strings;
    let mut w = SqlWriter::new(conn, &THREAD)?;
    for (utid, t) in st.procs.threads.iter().enumerate() {
        w.insert(&ThreadRow {
            utid: utid as u32,
            tid: t.tid,
            name: t.name.map(|n| s.get(n)),
            start_ts: t.start_ts,
            end_ts: t.end_ts,
            upid: t.upid,
            is_main_thread: t.is_main_thread,
            is_idle: t.is_idle,
        })?;
    }
    let mut w = SqlWriter::new(conn, &PROCESS)?;
    for (upid, p) in st.procs.processes.iter().enumerate() {
        w.insert(&ProcessRow {
            upid: upid as u32,
            pid: p.pid,
            name: p.name.map(|n| s.get(n)),
            start_ts: p.start_ts,
            end_ts: p.end_ts,
            parent_upid: p.parent_upid,
            uid: p.uid,
            cmdline: p.cmdline.map(|n| s.get(n)),
            is_kthread: p.is_kthread,
        })?;
    }
    let mut w = SqlWriter::new(conn, &CPU)?;
    for row in info.cpus.values() {
        w.insert(row)?;
    }
    let mut tracks = SqlWriter::new(conn, &TRACK)?;
    let mut counter_tracks = SqlWriter::new(conn, &COUNTER_TRACK)?;
    for t in st.tracks.all() {
        let name = t.kind.track_name(t.of);
        let thread = t.kind == track::TrackKind::Thread;
        let (cpu, utid) = if thread {
            (None, Some(t.of))
        } else {
            (Some(t.of), None)
        };
        tracks.insert(&TrackRow {
            id: t.id,
            name: name.as_deref(),
            kind: t.kind.type_name(),
            cpu,
            utid,
        })?;
        if let (true, Some(name)) = (t.kind.is_counter(), &name) {
            counter_tracks.insert(&CounterTrackRow {
                id: t.id,
                name,
                cpu,
            })?;
        }
    }
    info.lost.sort_by_key(|l| (l.ts, l.cpu));
    let mut w = SqlWriter::new(conn, &LOST_EVENTS)?;
    for row in &info.lost {
        w.insert(row)?;
    }
    let mut w = SqlWriter::new(conn, &STATS)?;
    for (stat, idx, value) in st.stats.rows() {
        w.insert(&StatsRow {
            name: stat.name(),
            idx,
            severity: stat.severity().as_str(),
            source: stat.source().as_str(),
            value,
            description: stat.description(),
        })?;
    }
    let (start_ts, end_ts) = parser.bounds();
    SqlWriter::new(conn, &TRACE_BOUNDS)?.insert(&TraceBoundsRow { start_ts, end_ts })?;
    info.set_int("unknown_packets", report.unknown_packets as i64);
    info.set_int("loaded_packets", report.packets as i64);
    info.set_int("loaded_events", report.events as i64);
    if let Some(t) = &report.truncation {
        info.set_int("truncated_at_offset", t.offset as i64);
    }
    let mut w = SqlWriter::new(conn, &METADATA)?;
    for (name, v) in &info.meta {
        let (int_value, str_value) = match v {
            Meta::Int(i) => (Some(*i), None),
            Meta::Str(s) => (None, Some(s.as_str())),
        };
        w.insert(&MetadataRow {
            name,
            key_type: "single",
            int_value,
            str_value,
        })?;
    }
    Ok(())
}
