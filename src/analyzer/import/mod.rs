//! Perfetto trace -> SQLite, following trace_processor's rules. (Issue 3; owner: analyze.)
//!
//! The pipeline mirrors trace_processor's: the [`reader`](crate::perfetto::reader)
//! yields packets; the [`tokenizer`] turns them into events (in file order);
//! the [`sorter`] orders events by timestamp within a bounded window; the
//! [`parser`] applies the scheduler and process-tracking rules and writes rows
//! through the [`sink`]. Threads, processes, CPUs, stats and metadata are
//! written at the end from memory (they are small).

mod events;
mod parser;
mod process;
mod sink;
mod sorter;
mod tokenizer;

use crate::analyzer::strings::Strings;
use crate::perfetto::proto::CpuInfo;
use crate::perfetto::proto::schedlens::{RecorderStats, Topology};
use crate::perfetto::reader::{TraceReader, Truncation};
use anyhow::Context;
use rusqlite::{Connection, params};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

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

/// A metadata value.
#[derive(Debug, Clone)]
pub enum Meta {
    Int(i64),
    Str(String),
}

#[derive(Debug, Clone, Default)]
struct CpuRow {
    processor: Option<String>,
    cluster_id: Option<u32>,
    capacity: Option<u32>,
    package_id: Option<i32>,
    core_id: Option<i32>,
    llc_id: Option<i32>,
    numa_node: Option<i32>,
    max_freq_khz: Option<u32>,
    shard: Option<u32>,
}

/// State shared by the tokenizer and the parser.
#[derive(Default)]
pub struct Ctx {
    strings: Strings,
    stats: BTreeMap<(&'static str, Option<u32>), i64>,
    meta: BTreeMap<String, Meta>,
    kernel_version: Option<(u32, u32)>,
    tracing_started: Option<i64>,
    /// Latest first-bundle previous_bundle_end_timestamp over CPUs.
    latest_data_start: Option<i64>,
    cpus: BTreeMap<u32, CpuRow>,
    /// (ts, cpu, count) of lost events; count None when unknown.
    lost: Vec<(i64, u32, Option<i64>)>,
    unknown_packets: u64,
    events: u64,
}

/// Severity, source and meaning of each stats counter.
fn stat_info(name: &str) -> (&'static str, &'static str, &'static str) {
    match name {
        "mismatched_sched_switch_tids" => (
            "data_loss",
            "analysis",
            "sched_switch whose prev_pid was not the task its CPU was running: events were lost",
        ),
        "thread_state_gap" => (
            "data_loss",
            "analysis",
            "a task was switched out while its last known state was not Running: its switch-in is missing",
        ),
        "ftrace_cpu_has_data_loss" => (
            "data_loss",
            "trace",
            "the kernel overwrote events of this CPU's ftrace buffer (FtraceEventBundle.lost_events)",
        ),
        "recorder_lost_events" => (
            "data_loss",
            "trace",
            "events of this CPU the recorder lost because its ring buffer was full (schedlens LostEvents)",
        ),
        "recorder_lost_events_total" => (
            "data_loss",
            "trace",
            "per-CPU lost event totals as the recorder counted them at the end (RecorderStats)",
        ),
        "sorter_push_event_out_of_order" => (
            "data_loss",
            "analysis",
            "events dropped because they arrived later in the file than the sort window allows",
        ),
        "compact_sched_switch_skipped" => (
            "info",
            "analysis",
            "first compact sched_switch of a CPU: it only seeds who runs (no prev_* fields)",
        ),
        "compact_sched_waking_skipped" => (
            "info",
            "analysis",
            "compact sched_waking before any switch on its CPU: the waker is unknown",
        ),
        "ftrace_packet_before_tracing_start" => (
            "info",
            "analysis",
            "ftrace events before the tracing_started service event, dropped",
        ),
        "spurious_sched_wakeup" => (
            "info",
            "analysis",
            "sched_waking of a task that was already runnable or running",
        ),
        "compact_sched_has_parse_errors" => (
            "error",
            "analysis",
            "CompactSched arrays of unequal length or bad comm indices",
        ),
        "ftrace_bundle_tokenizer_errors" => (
            "error",
            "analysis",
            "ftrace bundles without cpu or events without timestamp, dropped",
        ),
        "ftrace_missing_event_id" => (
            "error",
            "analysis",
            "ftrace events without a payload, dropped",
        ),
        "task_state_invalid" => (
            "error",
            "analysis",
            "sched_switch prev_state values invalid for the kernel version",
        ),
        "process_tracker_errors" => (
            "error",
            "analysis",
            "threads of different processes that events tried to put in one process",
        ),
        _ => ("info", "analysis", ""),
    }
}

impl Ctx {
    fn set_int(&mut self, k: &str, v: i64) {
        self.meta.insert(k.to_string(), Meta::Int(v));
    }
    fn set_str(&mut self, k: &str, v: &str) {
        self.meta.insert(k.to_string(), Meta::Str(v.to_string()));
    }
    fn add_stat(&mut self, name: &'static str, idx: Option<u32>, v: i64) {
        *self.stats.entry((name, idx)).or_insert(0) += v;
    }
    fn add_stat_set(&mut self, name: &'static str, idx: Option<u32>, v: i64) {
        self.stats.insert((name, idx), v);
    }
    fn cpu(&mut self, cpu: u32) {
        self.cpus.entry(cpu).or_default();
    }

    /// CpuInfo: processor names, capacities, and clusters by capacity (if every
    /// CPU has one) or else by max frequency, as trace_processor assigns them.
    fn cpu_info(&mut self, info: CpuInfo) {
        let keys: Vec<Option<u32>> = if info.cpus.iter().all(|c| c.capacity.is_some()) {
            info.cpus.iter().map(|c| c.capacity).collect()
        } else if info.cpus.iter().all(|c| !c.frequencies.is_empty()) {
            info.cpus
                .iter()
                .map(|c| c.frequencies.iter().max().copied())
                .collect()
        } else {
            vec![None; info.cpus.len()]
        };
        let clusters = clusters(&keys);
        for (i, c) in info.cpus.iter().enumerate() {
            let row = self.cpus.entry(i as u32).or_default();
            if let Some(p) = c.processor.as_deref().filter(|p| !p.is_empty()) {
                row.processor = Some(p.to_string());
            }
            row.cluster_id = Some(clusters[i].unwrap_or(0));
            if c.capacity.is_some() {
                row.capacity = c.capacity;
            }
            if let Some(&f) = c.frequencies.iter().max() {
                row.max_freq_khz = Some(f);
            }
        }
    }

    /// schedlens Topology: the recording machine's CPUs.
    fn topology(&mut self, t: Topology) {
        let have_clusters = self.cpus.values().any(|c| c.cluster_id.is_some());
        let keys: Vec<Option<u32>> = if t.cpus.iter().all(|c| c.capacity.is_some()) {
            t.cpus.iter().map(|c| c.capacity).collect()
        } else if t.cpus.iter().all(|c| c.max_freq_khz.is_some()) {
            t.cpus.iter().map(|c| c.max_freq_khz).collect()
        } else {
            vec![None; t.cpus.len()]
        };
        let clusters = clusters(&keys);
        for (c, cluster) in t.cpus.iter().zip(clusters) {
            let row = self.cpus.entry(c.cpu()).or_default();
            row.package_id = c.package_id;
            row.core_id = c.core_id;
            row.llc_id = c.llc_id;
            row.numa_node = c.numa_node;
            row.shard = c.shard;
            if c.capacity.is_some() {
                row.capacity = c.capacity;
            }
            if c.max_freq_khz.is_some() {
                row.max_freq_khz = c.max_freq_khz;
            }
            if !have_clusters {
                row.cluster_id = cluster;
            }
        }
    }

    fn recorder_stats(&mut self, r: RecorderStats) {
        if let Some(v) = &r.version {
            self.set_str("recorder_version", v);
        }
        if !r.argv.is_empty() {
            self.set_str("recorder_argv", &r.argv.join(" "));
        }
        if let Some(v) = r.start_ts {
            self.set_int("recorder_start_ts", v as i64);
        }
        if let Some(v) = r.end_ts {
            self.set_int("recorder_end_ts", v as i64);
        }
        if let Some(v) = r.bytes_written {
            self.set_int("recorder_bytes_written", v as i64);
        }
        for c in &r.events {
            self.set_int(&format!("recorder_events_{}", c.name()), c.value() as i64);
        }
        for (cpu, &n) in r.lost_per_cpu.iter().enumerate() {
            self.add_stat_set("recorder_lost_events_total", Some(cpu as u32), n as i64);
        }
        // The fullest ring, in percent: how close the recording came to
        // dropping events.
        let peak = r
            .ring_fill
            .iter()
            .filter(|f| f.size() > 0)
            .map(|f| (f.peak() as f64 * 100.0 / f.size() as f64).ceil() as i64)
            .max();
        if let Some(pct) = peak {
            self.set_int("recorder_ring_peak_fill_pct", pct);
        }
    }
}

/// Equal keys share a cluster; clusters are numbered from the smallest key.
fn clusters(keys: &[Option<u32>]) -> Vec<Option<u32>> {
    let mut distinct: Vec<u32> = keys.iter().flatten().copied().collect();
    distinct.sort_unstable();
    distinct.dedup();
    keys.iter()
        .map(|k| k.map(|k| distinct.binary_search(&k).unwrap_or(0) as u32))
        .collect()
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
    let mut ctx = Ctx::default();
    // The big tables go beside the database file (none for in-memory ones).
    let columns = conn
        .path()
        .filter(|p| !p.is_empty())
        .map(|p| crate::analyzer::columns::path_for(Path::new(p)));
    let sink = sink::Sink::new(conn, columns.as_deref())?;
    ctx.set_int("columns_build_id", sink.build_id() as i64);
    let mut parser = parser::Parser::new(&mut ctx.strings, sink);
    let mut tok = tokenizer::Tokenizer::new();
    let mut packets = 0u64;
    while let Some(p) = reader.next_packet()? {
        packets += 1;
        if let Err(e) = tok.packet(&mut ctx, p.data) {
            anyhow::bail!(
                "corrupt trace: packet #{} at byte offset {}: {e}",
                p.index,
                p.offset
            );
        }
        if tok.sorter.len() > sorter::WINDOW_HIGH {
            tok.sorter
                .extract(sorter::WINDOW_LOW, |ts, ev| parser.event(&mut ctx, ts, ev))?;
        }
        if let Some(bar) = &bar
            && packets % 256 == 0
        {
            bar.set_position(bytes_read.load(Ordering::Relaxed));
        }
    }
    tok.sorter
        .extract(0, |ts, ev| parser.event(&mut ctx, ts, ev))?;
    parser.finish(&mut ctx)?;
    for (table, rows) in parser.sink.column_rows() {
        ctx.set_int(&crate::analyzer::columns::row_count_key(table), rows as i64);
    }
    if tok.sorter.out_of_order > 0 {
        ctx.add_stat(
            "sorter_push_event_out_of_order",
            None,
            tok.sorter.out_of_order as i64,
        );
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let truncation = reader.truncation().cloned();
    let report = ImportReport {
        packets,
        events: ctx.events,
        rows: parser.rows(),
        unknown_packets: ctx.unknown_packets,
        truncation,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_tables(conn, &mut ctx, &parser, &report).context("writing the trace's tables")?;
    let end_ts = parser.bounds.map_or(0, |b| b.1);
    std::mem::take(&mut parser.sink.agg)
        .write(conn, end_ts)
        .context("writing the aggregate tables")?;
    Ok(report)
}

fn write_tables(
    conn: &Connection,
    ctx: &mut Ctx,
    parser: &parser::Parser<'_>,
    report: &ImportReport,
) -> rusqlite::Result<()> {
    let s = &ctx.strings;
    let mut st = conn.prepare(
        "INSERT INTO thread (utid, tid, name, start_ts, end_ts, upid, is_main_thread, is_idle) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for (utid, t) in parser.procs.threads.iter().enumerate() {
        st.execute(params![
            utid as i64,
            t.tid,
            t.name.map(|n| s.get(n)),
            t.start_ts,
            t.end_ts,
            t.upid,
            t.is_main_thread,
            t.is_idle
        ])?;
    }
    let mut st = conn.prepare(
        "INSERT INTO process (upid, pid, name, start_ts, end_ts, parent_upid, uid, cmdline, is_kthread) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for (upid, p) in parser.procs.processes.iter().enumerate() {
        st.execute(params![
            upid as i64,
            p.pid,
            p.name.map(|n| s.get(n)),
            p.start_ts,
            p.end_ts,
            p.parent_upid,
            p.uid,
            p.cmdline.map(|n| s.get(n)),
            p.is_kthread
        ])?;
    }
    let mut st = conn.prepare(
        "INSERT INTO cpu (id, cpu, cluster_id, processor, capacity, package_id, core_id, llc_id, \
         numa_node, max_freq_khz, shard) VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for (cpu, c) in &ctx.cpus {
        st.execute(params![
            cpu,
            c.cluster_id,
            c.processor,
            c.capacity,
            c.package_id,
            c.core_id,
            c.llc_id,
            c.numa_node,
            c.max_freq_khz,
            c.shard
        ])?;
    }
    let mut st =
        conn.prepare("INSERT INTO counter_track (id, name, cpu) VALUES (?1, 'cpufreq', ?2)")?;
    for (id, cpu) in &parser.tracks {
        st.execute(params![id, cpu])?;
    }
    ctx.lost.sort_by_key(|l| (l.0, l.1));
    let mut st =
        conn.prepare("INSERT INTO lost_events (id, ts, cpu, count) VALUES (?1, ?2, ?3, ?4)")?;
    for (id, (ts, cpu, count)) in ctx.lost.iter().enumerate() {
        st.execute(params![id as i64, ts, cpu, count])?;
    }
    let mut st = conn.prepare(
        "INSERT INTO stats (name, idx, severity, source, value, description) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for ((name, idx), value) in &ctx.stats {
        let (severity, source, description) = stat_info(name);
        st.execute(params![name, idx, severity, source, value, description])?;
    }
    let (start, end) = parser.bounds.unwrap_or((0, 0));
    conn.execute(
        "INSERT INTO trace_bounds (start_ts, end_ts) VALUES (?1, ?2)",
        params![start, end],
    )?;
    ctx.set_int("unknown_packets", report.unknown_packets as i64);
    ctx.set_int("loaded_packets", report.packets as i64);
    ctx.set_int("loaded_events", report.events as i64);
    if let Some(t) = &report.truncation {
        ctx.set_int("truncated_at_offset", t.offset as i64);
    }
    let mut st = conn.prepare(
        "INSERT OR REPLACE INTO metadata (name, key_type, int_value, str_value) VALUES (?1, 'single', ?2, ?3)",
    )?;
    for (k, v) in &ctx.meta {
        match v {
            Meta::Int(i) => st.execute(params![k, i, None::<String>])?,
            Meta::Str(s) => st.execute(params![k, None::<i64>, s])?,
        };
    }
    Ok(())
}
