//! Scheduler totals per time bucket, summed while the trace loads, so that
//! whole-trace and long-window analyses read a few thousand aggregate rows
//! instead of millions of events.
//!
//! The importer hands every completed sched_slice, thread_state and wakeup row
//! to an [`Aggregator`] (a few adds per row, no SQL); [`Aggregator::write`]
//! stores the `agg_cpu`, `agg_thread` and `agg_cpu_thread` tables at the end
//! of the load.
//! Buckets are aligned on multiples of a power-of-two width that starts at
//! about 1 ms and doubles whenever the trace would span more than
//! [`MAX_BUCKETS`], so the tables stay small for any trace length. Intervals
//! crossing a bucket edge are cut there, so a window made of whole buckets is
//! the exact sum of its buckets; the analyses compute the partial buckets at a
//! window's two ends from the event tables (see [`WindowSplit`]).

use crate::analyzer::schema::SqlWriter;
use crate::analyzer::tables::{
    AGG_CPU, AGG_CPU_THREAD, AGG_THREAD, AggCpuRow, AggCpuThreadRow, AggThreadRow, METADATA,
    MetadataRow, RUNNABLE_STATES,
};
use rusqlite::{Connection, OptionalExtension};
use smallvec::SmallVec;

/// Most buckets a trace spans; the width doubles to stay below it.
pub const MAX_BUCKETS: i64 = 1024;
/// The first width: 2^20 ns (about 1 ms).
const FIRST_SHIFT: u32 = 20;
/// The metadata key holding the bucket width in ns.
pub const WIDTH_KEY: &str = "aggregate_bucket_ns";

/// Histogram bins: exact below 64 ns, then 32 bins per power of two, so a
/// bin's midpoint is within 1/64 of every value in it.
pub const HIST_REL_ERROR: f64 = 1.0 / 64.0;

/// The histogram bin of a latency.
pub fn bin(v: i64) -> u16 {
    let v = v.max(0) as u64;
    if v < 64 {
        return v as u16;
    }
    let e = 63 - v.leading_zeros();
    let sub = (v >> (e - 5)) & 31;
    (64 + (e - 6) * 32 + sub as u32) as u16
}

/// [lo, hi) of a bin's values.
pub fn bin_range(b: u16) -> (i64, i64) {
    if b < 64 {
        return (i64::from(b), i64::from(b) + 1);
    }
    let e = u32::from(b - 64) / 32 + 6;
    let sub = u128::from(b - 64) % 32;
    let lo = (32 + sub) << (e - 5);
    let hi = lo + (1u128 << (e - 5));
    // The top bins reach past i64::MAX (only a hostile trace gets there):
    // clamp rather than wrap.
    let clamp = |x: u128| x.min(i64::MAX as u128) as i64;
    (clamp(lo), clamp(hi))
}

/// Per (bucket, thread) sums, 72 bytes and no heap for the usual bucket (a
/// CPU or two, a few wakeups): a trace of many short tasks holds one per
/// task to the end.
#[derive(Debug, Clone)]
struct ThreadAcc {
    switches: i64,
    runnable_ns: i64,
    /// The longest wakeup latency; i64::MIN while there is no wakeup.
    latency_max: i64,
    /// One bin per wakeup (so also their count); turned into (bin, count)
    /// pairs when written.
    bins: SmallVec<[u16; 8]>,
    /// cpu_ns per CPU (their sum is cpu_ns): (cpu, ns), a thread runs on one
    /// or two CPUs per bucket.
    on_cpu: SmallVec<[(u32, i64); 1]>,
}

// The size the comment above promises.
const _: () = assert!(std::mem::size_of::<ThreadAcc>() == 72);

impl Default for ThreadAcc {
    fn default() -> ThreadAcc {
        ThreadAcc {
            switches: 0,
            runnable_ns: 0,
            latency_max: i64::MIN,
            bins: SmallVec::new(),
            on_cpu: SmallVec::new(),
        }
    }
}

impl ThreadAcc {
    fn merge(&mut self, o: ThreadAcc) {
        self.switches += o.switches;
        self.runnable_ns += o.runnable_ns;
        self.latency_max = self.latency_max.max(o.latency_max);
        self.bins.extend(o.bins);
        for (cpu, ns) in o.on_cpu {
            self.ran_on(cpu, ns);
        }
    }

    fn cpu_ns(&self) -> i64 {
        self.on_cpu.iter().map(|e| e.1).sum()
    }

    fn wakeups(&self) -> i64 {
        self.bins.len() as i64
    }

    fn ran_on(&mut self, cpu: u32, ns: i64) {
        match self.on_cpu.iter_mut().find(|e| e.0 == cpu) {
            Some(e) => e.1 += ns,
            None => self.on_cpu.push((cpu, ns)),
        }
    }
}

/// Per (bucket, CPU) sums of non-idle slices.
#[derive(Debug, Clone, Copy, Default)]
struct CpuAcc {
    busy_ns: i64,
    switches: i64,
}

impl CpuAcc {
    fn merge(&mut self, o: CpuAcc) {
        self.busy_ns += o.busy_ns;
        self.switches += o.switches;
    }
}

/// Buckets of one thread or CPU, sorted by bucket index. Rows arrive nearly
/// in time order, so the last entry is almost always the one to update.
/// Most threads of a trace of many short tasks span one bucket: held inline.
type Series<T> = SmallVec<[(i64, T); 1]>;

fn slot<T: Default>(s: &mut Series<T>, b: i64) -> &mut T {
    let i = match s.last() {
        Some(&(last, _)) if last == b => s.len() - 1,
        Some(&(last, _)) if last > b => match s.binary_search_by_key(&b, |e| e.0) {
            Ok(i) => i,
            Err(i) => {
                s.insert(i, (b, T::default()));
                i
            }
        },
        _ => {
            s.push((b, T::default()));
            s.len() - 1
        }
    };
    &mut s[i].1
}

/// Halves a series' resolution: bucket b becomes b >> 1.
fn coarsen<T>(s: &mut Series<T>, merge: impl Fn(&mut T, T)) {
    let mut out: Series<T> = SmallVec::with_capacity(s.len());
    for (b, v) in s.drain(..) {
        match out.last_mut() {
            Some(last) if last.0 == b >> 1 => merge(&mut last.1, v),
            _ => out.push((b >> 1, v)),
        }
    }
    *s = out;
}

/// Calls `add(bucket, ns)` for each bucket part of [ts, end), buckets
/// 2^`shift` ns wide.
fn split(shift: u32, ts: i64, end: i64, mut add: impl FnMut(i64, i64)) {
    let (first, last) = (ts >> shift, (end - 1) >> shift);
    for b in first..=last {
        let part = end.min((b + 1) << shift) - ts.max(b << shift);
        if part > 0 {
            add(b, part);
        }
    }
}

/// Accumulates the aggregates of one load. Utid 0 is the idle thread (as the
/// importer assigns it): idle time is neither busy time nor a task's.
#[derive(Debug)]
pub struct Aggregator {
    shift: u32,
    /// Lowest and highest bucket index seen (at the current shift).
    span: Option<(i64, i64)>,
    threads: Vec<Series<ThreadAcc>>,
    cpus: Vec<Series<CpuAcc>>,
    /// Slices (cpu, utid, ts) and runnable states (utid, ts) still open at
    /// the end of the trace: they last to the trace end, known only then.
    open_slices: Vec<(u32, u32, i64)>,
    open_runnable: Vec<(u32, i64)>,
}

impl Default for Aggregator {
    fn default() -> Aggregator {
        Aggregator {
            shift: FIRST_SHIFT,
            span: None,
            threads: Vec::new(),
            cpus: Vec::new(),
            open_slices: Vec::new(),
            open_runnable: Vec::new(),
        }
    }
}

impl Aggregator {
    pub fn new() -> Aggregator {
        Aggregator::default()
    }

    /// Makes room for [ts, end) within MAX_BUCKETS, coarsening if needed.
    fn cover(&mut self, ts: i64, end: i64) {
        let (mut lo, mut hi) = self.span.unwrap_or((ts >> self.shift, ts >> self.shift));
        lo = lo.min(ts >> self.shift);
        hi = hi.max((end - 1).max(ts) >> self.shift);
        while hi - lo + 1 > MAX_BUCKETS {
            self.shift += 1;
            lo >>= 1;
            hi >>= 1;
            for s in &mut self.threads {
                coarsen(s, ThreadAcc::merge);
            }
            for s in &mut self.cpus {
                coarsen(s, CpuAcc::merge);
            }
        }
        self.span = Some((lo, hi));
    }

    /// A sched_slice row; `dur` -1 means still running at the end.
    pub fn slice(&mut self, cpu: u32, utid: u32, ts: i64, dur: i64) {
        if utid == 0 {
            return;
        }
        if dur < 0 {
            self.open_slices.push((cpu, utid, ts));
            return;
        }
        self.add_slice(cpu, utid, ts, ts + dur);
    }

    fn add_slice(&mut self, cpu: u32, utid: u32, ts: i64, end: i64) {
        self.cover(ts, end);
        let (u, c) = (utid as usize, cpu as usize);
        if self.threads.len() <= u {
            self.threads.resize_with(u + 1, Series::new);
        }
        if self.cpus.len() <= c {
            self.cpus.resize_with(c + 1, Series::new);
        }
        let shift = self.shift;
        let (threads, cpus) = (&mut self.threads[u], &mut self.cpus[c]);
        slot(threads, ts >> shift).switches += 1;
        slot(cpus, ts >> shift).switches += 1;
        split(shift, ts, end, |b, ns| {
            slot(threads, b).ran_on(cpu, ns);
            slot(cpus, b).busy_ns += ns;
        });
    }

    /// A thread_state row: only runnable time is summed.
    pub fn state(&mut self, utid: u32, ts: i64, dur: i64, state: Option<&str>) {
        if utid == 0 || !state.is_some_and(|s| RUNNABLE_STATES.contains(&s)) {
            return;
        }
        if dur < 0 {
            self.open_runnable.push((utid, ts));
            return;
        }
        self.add_runnable(utid, ts, ts + dur);
    }

    fn add_runnable(&mut self, utid: u32, ts: i64, end: i64) {
        self.cover(ts, end);
        let u = utid as usize;
        if self.threads.len() <= u {
            self.threads.resize_with(u + 1, Series::new);
        }
        let series = &mut self.threads[u];
        split(self.shift, ts, end, |b, ns| {
            slot(series, b).runnable_ns += ns
        });
    }

    /// A wakeup row; `latency` None (never ran, or spurious) is not counted.
    pub fn wakeup(&mut self, utid: u32, ts: i64, latency: Option<i64>) {
        let Some(latency) = latency else {
            return;
        };
        self.cover(ts, ts + 1);
        let u = utid as usize;
        if self.threads.len() <= u {
            self.threads.resize_with(u + 1, Series::new);
        }
        let a = slot(&mut self.threads[u], ts >> self.shift);
        a.latency_max = a.latency_max.max(latency);
        a.bins.push(bin(latency));
    }

    /// Writes agg_cpu, agg_thread, agg_cpu_thread and the bucket width
    /// (metadata), with the indexes the analyses use. `end_ts` closes the
    /// rows still open.
    pub fn write(mut self, conn: &Connection, end_ts: i64) -> rusqlite::Result<()> {
        for (cpu, utid, ts) in std::mem::take(&mut self.open_slices) {
            self.add_slice(cpu, utid, ts, end_ts.max(ts));
        }
        for (utid, ts) in std::mem::take(&mut self.open_runnable) {
            self.add_runnable(utid, ts, end_ts.max(ts));
        }
        let width = 1i64 << self.shift;
        let mut w = SqlWriter::new(conn, &AGG_CPU)?;
        for (cpu, series) in self.cpus.iter().enumerate() {
            for (b, a) in series {
                w.insert(&AggCpuRow {
                    ts: b << self.shift,
                    dur: width,
                    cpu: cpu as i64,
                    busy_ns: a.busy_ns,
                    switches: a.switches,
                })?;
            }
        }
        let mut w = SqlWriter::new(conn, &AGG_THREAD)?;
        let mut blob = Vec::new();
        for (utid, series) in self.threads.iter_mut().enumerate() {
            for (b, a) in series.iter_mut() {
                a.bins.sort_unstable();
                encode_hist(&a.bins, &mut blob);
                w.insert(&AggThreadRow {
                    ts: *b << self.shift,
                    dur: width,
                    utid: utid as i64,
                    cpu_ns: a.cpu_ns(),
                    switches: a.switches,
                    runnable_ns: a.runnable_ns,
                    wakeups: a.wakeups(),
                    latency_max: (a.wakeups() > 0).then_some(a.latency_max),
                    latency_hist: (!blob.is_empty()).then_some(&blob[..]),
                })?;
            }
        }
        let mut w = SqlWriter::new(conn, &AGG_CPU_THREAD)?;
        for (utid, series) in self.threads.iter().enumerate() {
            for (b, a) in series {
                for &(cpu, cpu_ns) in &a.on_cpu {
                    w.insert(&AggCpuThreadRow {
                        ts: b << self.shift,
                        dur: width,
                        cpu: i64::from(cpu),
                        utid: utid as i64,
                        cpu_ns,
                    })?;
                }
            }
        }
        SqlWriter::new(conn, &METADATA)?.insert(&MetadataRow {
            name: WIDTH_KEY,
            key_type: "single",
            int_value: Some(width),
            str_value: None,
        })?;
        conn.execute_batch(INDEXES_SQL)
    }
}

/// Indexes on the aggregate tables.
const INDEXES_SQL: &str = "
CREATE INDEX agg_cpu_ts ON agg_cpu(ts, cpu);
CREATE INDEX agg_thread_ts ON agg_thread(ts, utid);
CREATE INDEX agg_thread_utid_ts ON agg_thread(utid, ts);
CREATE INDEX agg_cpu_thread_cpu_ts ON agg_cpu_thread(cpu, ts);
";

/// Sorted bins -> (bin u16 LE, count u32 LE) pairs.
fn encode_hist(sorted_bins: &[u16], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < sorted_bins.len() {
        let b = sorted_bins[i];
        let n = sorted_bins[i..].iter().take_while(|&&x| x == b).count();
        out.extend_from_slice(&b.to_le_bytes());
        out.extend_from_slice(&(n as u32).to_le_bytes());
        i += n;
    }
}

/// A latency histogram: counts per bin.
#[derive(Debug, Clone)]
pub struct Hist {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Hist {
    fn default() -> Hist {
        Hist {
            counts: vec![0; usize::from(bin(i64::MAX)) + 1],
            total: 0,
        }
    }
}

impl Hist {
    pub fn add(&mut self, latency: i64) {
        self.counts[usize::from(bin(latency))] += 1;
        self.total += 1;
    }

    /// Adds an `agg_thread.latency_hist` blob.
    pub fn add_blob(&mut self, blob: &[u8]) {
        for pair in blob.chunks_exact(6) {
            let b = u16::from_le_bytes([pair[0], pair[1]]);
            let n = u32::from_le_bytes([pair[2], pair[3], pair[4], pair[5]]);
            if let Some(c) = self.counts.get_mut(usize::from(b)) {
                *c += u64::from(n);
                self.total += u64::from(n);
            }
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Nearest-rank percentile, as the midpoint of its bin clamped to `max`
    /// (within HIST_REL_ERROR of the exact value).
    pub fn percentile(&self, p: f64, max: i64) -> Option<i64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p / 100.0) * self.total as f64 - 1e-9).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (lo, hi) = bin_range(b as u16);
                return Some((lo + (hi - lo) / 2).min(max));
            }
        }
        Some(max)
    }
}

/// A window cut along bucket edges: whole buckets [full.0, full.1) read from
/// the aggregate tables, and at most two partial pieces, each inside one
/// bucket, computed from the event tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSplit {
    pub width: i64,
    pub full: Option<(i64, i64)>,
    pub edges: Vec<(i64, i64)>,
}

/// The bucket width of a loaded database (metadata `aggregate_bucket_ns`).
pub fn width(conn: &Connection) -> anyhow::Result<i64> {
    let w: Option<i64> = conn
        .query_row(
            "SELECT int_value FROM metadata WHERE name = ?1",
            [WIDTH_KEY],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    match w {
        Some(w) if w > 0 => Ok(w),
        _ => anyhow::bail!(
            "the database has no aggregate tables (made by an older schedlens?): reload the trace"
        ),
    }
}

/// Splits the absolute window [lo, hi).
pub fn split_window(width: i64, lo: i64, hi: i64) -> WindowSplit {
    let first = lo.div_euclid(width) * width + if lo.rem_euclid(width) == 0 { 0 } else { width };
    let last = hi.div_euclid(width) * width;
    let mut edges = Vec::new();
    let full = if first < last {
        if lo < first {
            edges.push((lo, first));
        }
        if last < hi {
            edges.push((last, hi));
        }
        Some((first, last))
    } else {
        // No whole bucket: one or two pieces, cut at the bucket edge between.
        if lo < hi {
            let edge = lo.div_euclid(width) * width + width;
            if edge < hi {
                edges.push((lo, edge));
                edges.push((edge, hi));
            } else {
                edges.push((lo, hi));
            }
        }
        None
    };
    WindowSplit { width, full, edges }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_bound_the_error() {
        for v in (0..200_000).chain([1 << 40, i64::MAX / 3, i64::MAX]) {
            let (lo, hi) = bin_range(bin(v));
            assert!(lo <= v && v < hi || v == i64::MAX, "{v}: {lo}..{hi}");
            let mid = lo + (hi - lo) / 2;
            assert!(
                (mid - v).abs() as f64 <= v as f64 * HIST_REL_ERROR + 0.5,
                "{v}"
            );
        }
        let mut h = Hist::default();
        for v in 1..=1000 {
            h.add(v * 1000);
        }
        let p50 = h.percentile(50.0, 1_000_000).unwrap();
        assert!((p50 - 500_000).abs() as f64 <= 500_000.0 * HIST_REL_ERROR);
        assert_eq!(h.percentile(100.0, 1_000_000), Some(1_000_000));
    }

    #[test]
    fn windows_split_at_bucket_edges() {
        let s = |lo, hi| split_window(100, lo, hi);
        assert_eq!(s(0, 1000).full, Some((0, 1000)));
        assert!(s(0, 1000).edges.is_empty());
        assert_eq!(s(50, 1050).full, Some((100, 1000)));
        assert_eq!(s(50, 1050).edges, vec![(50, 100), (1000, 1050)]);
        assert_eq!(s(150, 250).full, None);
        assert_eq!(s(150, 250).edges, vec![(150, 200), (200, 250)]);
        assert_eq!(s(110, 190).edges, vec![(110, 190)]);
        assert!(s(5, 5).edges.is_empty());
    }

    #[test]
    fn intervals_are_cut_at_edges_and_coarsened() {
        let mut a = Aggregator::new();
        let w = 1i64 << FIRST_SHIFT;
        a.slice(0, 1, w - 10, 30);
        a.slice(0, 0, 0, 5 * w);
        a.state(1, 0, 5, Some("R"));
        a.state(1, 5, 5, Some("S"));
        a.wakeup(1, 3, Some(7));
        assert_eq!(a.threads[1].len(), 2);
        assert_eq!(a.threads[1][0].1.cpu_ns(), 10);
        assert_eq!(a.threads[1][1].1.cpu_ns(), 20);
        assert_eq!(a.threads[1][0].1.runnable_ns, 5);
        // A slice far away forces coarser buckets; the sums survive.
        a.slice(1, 1, w * MAX_BUCKETS * 3, 10);
        assert!(a.shift > FIRST_SHIFT);
        let total: i64 = a.threads[1].iter().map(|e| e.1.cpu_ns()).sum();
        assert_eq!(total, 40);
        assert_eq!(a.threads[1][0].1.switches, 1);
        assert_eq!(a.threads[1][0].1.wakeups(), 1);
    }
}
