//! Traces that cost far more to load than they hold: decompression bombs,
//! packets claiming more CPUs, tasks or events than a machine has. Each must
//! end in a clear one-line error (or a warning for a trace that holds
//! nothing), quickly, instead of loading for minutes or using gigabytes.

mod tracegen;

use schedlens::perfetto::proto::ftrace_event_bundle::CompactSched;
use schedlens::perfetto::proto::process_tree::Thread;
use schedlens::perfetto::proto::trace_packet::Data;
use schedlens::perfetto::proto::{CpuInfo, FtraceEventBundle, ProcessTree, TracePacket, cpu_info};
use std::io::Write;
use tracegen::*;

/// `schedlens query` on `bytes` fails with one line containing `needle`,
/// and leaves no cache or temporary file behind.
fn refused(bytes: &[u8], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pftrace");
    write(&trace, bytes);
    let out = schedlens(
        &[
            "query",
            trace.to_str().unwrap(),
            "SELECT count(*) FROM sched",
        ],
        &dir.path().join("cache"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{needle}: {stderr}");
    let error = stderr.lines().last().unwrap_or("");
    assert!(error.starts_with("schedlens: "), "{stderr}");
    assert!(error.contains(needle), "{needle}: {stderr}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "t.pftrace" && n != "cache")
        .collect();
    assert!(left.is_empty(), "{needle}: left {left:?}");
}

/// `n` bytes of `pattern` through `encode`, streamed (never all in memory).
fn stream(n: u64, pattern: &[u8], mut w: impl Write) {
    let block = pattern.repeat((1 << 20) / pattern.len());
    let mut left = n;
    while left > 0 {
        let k = left.min(block.len() as u64) as usize;
        w.write_all(&block[..k]).unwrap();
        left -= k as u64;
    }
}

fn zstd_of(n: u64, head: &[u8], pattern: &[u8]) -> Vec<u8> {
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    z.write_all(head).unwrap();
    stream(n, pattern, &mut z);
    z.finish().unwrap()
}

fn gzip_of(n: u64, head: &[u8], pattern: &[u8]) -> Vec<u8> {
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    g.write_all(head).unwrap();
    stream(n, pattern, &mut g);
    g.finish().unwrap()
}

/// A zstd file of zeros behind a valid first packet: before, the zeros were
/// skipped as "field 0" forever (2 MB of zstd: still loading after 300 s;
/// 1 GiB of zeros in 32 KB: 19 s, then an empty trace without a word).
#[test]
fn zeros_are_corrupt_not_skipped() {
    let head = frame(&system_info("6.8.0"));
    let bomb = zstd_of(256 << 20, &head, &[0]);
    assert!(bomb.len() < 100 << 10, "{} bytes", bomb.len());
    refused(&bomb, "field number 0");
}

/// Empty packets (valid, each costs a loop turn) compressed as far as gzip
/// goes: 4 MB of gzip took 93 s and exited 0. Now the expansion limit stops
/// it (past 64 MB plus 100 times the file: 256 MiB expand 1000 times).
#[test]
fn decompression_bombs_stop_at_the_expansion_limit() {
    let gz = gzip_of(256 << 20, &[], &[0x0a, 0x00]);
    refused(&gz, "decompression bomb");
    let zst = zstd_of(256 << 20, &[], &[0x0a, 0x00]);
    refused(&zst, "decompression bomb");
}

fn compact_bundle(cpu: u32, switches: usize) -> TracePacket {
    packet(Data::FtraceEvents(FtraceEventBundle {
        cpu: Some(cpu),
        compact_sched: Some(CompactSched {
            intern_table: vec!["a".into()],
            switch_timestamp: vec![1; switches],
            switch_prev_state: vec![1; switches],
            switch_next_pid: vec![7; switches],
            switch_next_prio: vec![120; switches],
            switch_next_comm_index: vec![0; switches],
            ..Default::default()
        }),
        ..Default::default()
    }))
}

/// A container of compressed packets that expands thousands of times (a
/// 7.7 KB one held a bundle that made 2.6 GB of RSS; 77 KB of them made an
/// 18.5 GB column file).
#[test]
fn a_container_that_expands_too_far_is_corrupt() {
    let inner = frame(&compact_bundle(0, 2_000_000));
    let container = packet(Data::ZstdCompressedPackets(
        zstd::bulk::compress(&inner, 19).unwrap(),
    ));
    let bytes = [frame(&system_info("6.8.0")), frame(&container)].concat();
    assert!(bytes.len() < 20 << 10, "{} bytes", bytes.len());
    refused(&bytes, "expand beyond");
}

/// One bundle with more events than any writer puts in one (all of them
/// wait in the sorter at once): uncompressed, so only the event cap applies.
#[test]
fn a_bundle_with_more_events_than_a_chunk_holds_is_corrupt() {
    let bytes = [
        frame(&system_info("6.8.0")),
        frame(&compact_bundle(0, (1 << 20) + 1)),
    ]
    .concat();
    refused(&bytes, "more than 1048576 events");
}

fn cpu_info(n: usize) -> TracePacket {
    packet(Data::CpuInfo(CpuInfo {
        cpus: vec![
            cpu_info::Cpu {
                processor: Some("x".into()),
                frequencies: vec![],
                capacity: Some(1024),
            };
            n
        ],
    }))
}

/// A 20 KB CpuInfo listed 31 M CPUs (past 14 GB): one past a 4096-CPU
/// machine's is an error; that machine's loads.
#[test]
fn cpu_info_past_4096_cpus_is_an_error_and_4096_load() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("big.pftrace");
    write(
        &trace,
        &[frame(&system_info("6.8.0")), frame(&cpu_info(4096))].concat(),
    );
    let out = schedlens(
        &[
            "query",
            trace.to_str().unwrap(),
            "SELECT count(*) FROM cpu",
            "--format",
            "csv",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "\"count(*)\"\n4096\n");
    let bytes = [frame(&system_info("6.8.0")), frame(&cpu_info(4097))].concat();
    refused(&bytes, "a CpuInfo: CPUs lists more than 4096");
}

/// A ProcessTree with 20 M threads took 8.1 GB; Linux has at most 2^22 pids.
#[test]
fn a_process_tree_with_more_threads_than_pids_is_an_error() {
    let tree = ProcessTree {
        threads: vec![
            Thread {
                tid: Some(1),
                ..Default::default()
            };
            (1 << 22) + 1
        ],
        ..Default::default()
    };
    let bytes = [
        frame(&system_info("6.8.0")),
        frame(&packet(Data::ProcessTree(tree))),
    ]
    .concat();
    refused(&bytes, "a ProcessTree: threads lists more than 4194304");
}

/// A trace that decompresses to packets the tables never show loads (it is
/// a valid trace) but says so.
#[test]
fn a_trace_with_nothing_in_it_loads_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("empty.pftrace");
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    // TracePacket field 60 (not imported), framed as Trace.packet.
    z.write_all(&[0x0a, 0x05, 0xe2, 0x03, 0x02, 0x08, 0x01])
        .unwrap();
    write(&trace, &z.finish().unwrap());
    let out = schedlens(
        &[
            "query",
            trace.to_str().unwrap(),
            "SELECT count(*) FROM sched",
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("holds no events"),
        "{stderr}"
    );
}

/// A bundle flagged lost_events without a count made trace_info and
/// summary fail ("Invalid column type Null ... sum(count)").
#[test]
fn lost_events_without_a_count_still_summarize() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("lost.pftrace");
    let mut lost = compact_bundle(1, 3);
    if let Some(Data::FtraceEvents(b)) = &mut lost.data {
        b.lost_events = Some(true);
    }
    let bytes = [
        frame(&system_info("6.8.0")),
        frame(&bundle(
            0,
            vec![
                switch(1_000, (0, "swapper/0", 0), (100, "app")),
                switch(2_000, (100, "app", 1), (0, "swapper/0")),
            ],
        )),
        frame(&lost),
    ]
    .concat();
    write(&trace, &bytes);
    let out = schedlens(&["summary", trace.to_str().unwrap()], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("0 lost events"), "{stdout}");
    assert!(
        stdout.contains("ftrace_cpu_has_data_loss 1 (cpu1)"),
        "{stdout}"
    );
}
