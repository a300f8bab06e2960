//! The reader streams: its peak memory does not grow with the file. A large
//! synthetic trace (compact sched bundles in zstd_compressed_packets chunks,
//! as the recorder writes them) is streamed to disk, then read in a fresh
//! child process (this test binary re-run on `memory_child`) whose peak
//! resident set (VmHWM) is compared with a fixed budget.
//!
//! The fast test reads 128 MB; the ignored one reads 1 GB against the same
//! budget. What the reader holds is bounded per packet (two 1 MB stream
//! buffers, the zstd window, one top-level packet, one decompressed chunk),
//! so a budget that holds at 128 MB and at 1 GB holds at any size.
//!
//! The importer's memory (ignored test, run in release) is measured on the
//! real `schedlens query` through wait4's ru_maxrss: past the sorter's window
//! it must not grow with the number of events.

mod tracegen;

use prost::Message;
use schedlens::perfetto::proto::ftrace_event_bundle::CompactSched;
use schedlens::perfetto::proto::trace_packet::Data;
use schedlens::perfetto::proto::{FtraceEventBundle, TracePacket};
use schedlens::perfetto::reader::TraceReader;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use tracegen::Rng;

const CHILD_ENV: &str = "SCHEDLENS_MEMORY_CHILD_TRACE";
/// Peak RSS allowed for the whole child (test harness included, ~3 MB):
/// far below the file sizes, well above what the reader needs (~6 MB measured).
const BUDGET_KB: u64 = 32 << 10;
const CPUS: u32 = 8;
const EVENTS_PER_BUNDLE: usize = 2_000;

/// One zstd_compressed_packets chunk: a compact bundle per CPU.
fn chunk() -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut inner = Vec::new();
    for cpu in 0..CPUS {
        let n = EVENTS_PER_BUNDLE;
        let mut deltas = |n| -> Vec<u64> { (0..n).map(|_| rng.next() % 50_000).collect() };
        let (switch_timestamp, waking_timestamp) = (deltas(n), deltas(n));
        let pids: Vec<i32> = (0..n).map(|_| (rng.next() % 4_000) as i32).collect();
        let bundle = TracePacket {
            data: Some(Data::FtraceEvents(FtraceEventBundle {
                cpu: Some(cpu),
                compact_sched: Some(CompactSched {
                    intern_table: (0..16).map(|i| format!("task-{i}")).collect(),
                    switch_timestamp,
                    switch_prev_state: (0..n).map(|i| (i % 3) as i64).collect(),
                    switch_next_pid: pids.clone(),
                    switch_next_prio: vec![120; n],
                    switch_next_comm_index: (0..n).map(|i| (i % 16) as u32).collect(),
                    waking_timestamp,
                    waking_pid: pids,
                    waking_target_cpu: vec![cpu as i32; n],
                    waking_prio: vec![120; n],
                    waking_comm_index: (0..n).map(|i| (i % 16) as u32).collect(),
                    waking_common_flags: vec![1; n],
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        inner.push(0x0a);
        bundle.encode_length_delimited(&mut inner).unwrap();
    }
    let compressed = zstd::bulk::compress(&inner, 1).expect("zstd");
    let packet = TracePacket {
        data: Some(Data::ZstdCompressedPackets(compressed)),
        ..Default::default()
    };
    let mut out = vec![0x0a];
    packet.encode_length_delimited(&mut out).unwrap();
    out
}

/// Streams about `size` bytes of chunks to `path`; returns the chunk count.
/// The same chunk repeats: the reader neither knows nor cares, and writing
/// 1 GB then costs only the disk.
fn write_trace(path: &Path, size: u64) -> u64 {
    let chunk = chunk();
    assert!(
        chunk.len() < 512 << 10,
        "chunks stay under Perfetto's 512 KB"
    );
    let mut out = BufWriter::new(std::fs::File::create(path).expect("create trace"));
    let n = size.div_ceil(chunk.len() as u64);
    for _ in 0..n {
        out.write_all(&chunk).expect("write trace");
    }
    out.flush().expect("flush trace");
    n
}

fn vm_hwm_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Entry point of the child process: reads the trace named by CHILD_ENV and
/// prints its packet count and peak memory.
#[test]
fn memory_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        eprintln!("memory_child is the memory tests' child process; alone it has nothing to do");
        return;
    };
    let before = vm_hwm_kb();
    let mut reader = TraceReader::open(Path::new(&path)).expect("open");
    let mut packets = 0u64;
    while reader.next_packet().expect("read").is_some() {
        packets += 1;
    }
    assert!(reader.truncation().is_none(), "{:?}", reader.truncation());
    let after = vm_hwm_kb();
    println!(
        "MEMORY packets={packets} containers={} hwm_before_kb={before} hwm_after_kb={after}",
        reader.stats().containers
    );
}

/// Writes a trace of `size` bytes, reads it in a child and checks the budget.
fn check(size: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.pftrace");
    let chunks = write_trace(&path, size);
    let file_size = std::fs::metadata(&path).unwrap().len();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "memory_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // libtest prints "test memory_child ... " before the child's own output.
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("MEMORY ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no MEMORY line in {stdout}"));
    let field = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{k} missing in {line}"))
    };
    eprintln!(
        "memory: {file_size} byte trace, {chunks} chunks: peak RSS {} kB (before reading {} kB), budget {BUDGET_KB} kB",
        field("hwm_after_kb"),
        field("hwm_before_kb")
    );
    assert_eq!(field("containers"), chunks);
    assert_eq!(field("packets"), chunks * u64::from(CPUS));
    assert!(
        field("hwm_after_kb") < BUDGET_KB,
        "reading a {file_size} byte trace peaked at {} kB, over the {BUDGET_KB} kB budget",
        field("hwm_after_kb")
    );
}

#[test]
fn reader_memory_is_bounded_128mb() {
    check(128 << 20);
}

#[test]
#[ignore = "writes and reads a 1 GB trace; run with --ignored"]
fn reader_memory_is_bounded_1gb() {
    check(1 << 30);
}

/// Peak RSS in kB of `schedlens query` loading `trace` from scratch.
#[expect(
    clippy::zombie_processes,
    reason = "reaped by wait4, which std's wait cannot replace: it returns the rusage"
)]
fn query_peak_rss_kb(trace: &Path, cache: &Path) -> u64 {
    let child = Command::new(env!("CARGO_BIN_EXE_schedlens"))
        .args(["query", "--rebuild"])
        .arg(trace)
        .arg("SELECT COUNT(*) FROM sched")
        .env("XDG_CACHE_HOME", cache)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run schedlens query");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our unwaited child; status and usage are ours to write.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "schedlens query failed on {}: status {status:#x}",
        trace.display()
    );
    usage.ru_maxrss as u64
}

/// The sorter holds at most 2M events (~100 MB) and SQLite's page cache is
/// 64 MB: 4M events already fill both, so 4x the events must stay far below
/// 4x the memory. Measured (release): 217 MB at 4M events, 279 MB at 16M;
/// with SQLite's temp store in memory it was 347 MB and 1171 MB. The residual
/// growth (~5 bytes an event) is not explained yet, hence the 1.5x margin.
#[test]
#[ignore = "imports 20M events; run in release with --ignored"]
fn importer_memory_does_not_grow_with_the_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut peaks = Vec::new();
    for events in [4_000_000u64, 16_000_000] {
        let trace = dir.path().join(format!("synthetic-{events}.pftrace"));
        tracegen::write_synthetic(&trace, events, 4, 64, 2000);
        let peak = query_peak_rss_kb(&trace, &dir.path().join("cache"));
        eprintln!(
            "memory: schedlens query loading {events} events ({} MB trace): peak RSS {} MB",
            std::fs::metadata(&trace).unwrap().len() >> 20,
            peak >> 10
        );
        std::fs::remove_file(&trace).unwrap();
        std::fs::remove_file(dir.path().join(format!("synthetic-{events}.pftrace.db"))).unwrap();
        peaks.push(peak);
    }
    assert!(
        peaks[1] < peaks[0] + peaks[0] / 2,
        "4x the events raised the importer's peak RSS from {} to {} kB",
        peaks[0],
        peaks[1]
    );
}
