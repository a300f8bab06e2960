//! Import on hand-made traces: compressions, damaged files, process tracking
//! invariants, and the database cache.

mod tracegen;

use prost::Message;
use schedlens::analyses::{task_timeline, timespec};
use schedlens::analyzer::db::{self, LoadOptions};
use schedlens::perfetto::proto::{self as pb, trace_packet};
use std::io::Write;
use std::path::{Path, PathBuf};
use tracegen::*;

/// Two CPUs, a wakeup, a fork, a pid reused after sched_process_free.
fn small_trace() -> Vec<pb::TracePacket> {
    vec![
        bundle(
            0,
            vec![
                switch(1_000, (0, "swapper/0", 0), (100, "app")),
                waking(1_500, 100, 200, "worker", 1),
                newtask(1_600, 100, 300, "child", 0),
                switch(2_000, (100, "app", 1), (300, "child")),
                switch(2_400, (300, "child", 0x10), (0, "swapper/0")),
                free(2_500, 300, "child"),
                newtask(2_600, 100, 300, "again", 0),
                switch(3_000, (0, "swapper/0", 0), (300, "again")),
            ],
        ),
        bundle(
            1,
            vec![
                switch(1_100, (0, "swapper/1", 0), (400, "other")),
                switch(1_800, (400, "other", 1), (200, "worker")),
                switch(2_200, (200, "worker", 1), (0, "swapper/1")),
            ],
        ),
    ]
}

fn load(
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> anyhow::Result<(PathBuf, schedlens::analyzer::import::ImportReport)> {
    let trace = dir.join(name);
    write(&trace, bytes);
    let db = dir.join(format!("{name}.db"));
    let report = db::build_into(&trace, &db)?;
    Ok((db, report))
}

fn int(db: &Path, sql: &str) -> i64 {
    let conn = db::open_readonly(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn every_compression_loads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let plain = encode(&small_trace());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&plain[..], 3).unwrap();
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(&plain).unwrap();
    let in_zlib = encode(&[packet(trace_packet::Data::CompressedPackets(
        zlib.finish().unwrap(),
    ))]);
    let in_zstd = encode(&[packet(trace_packet::Data::ZstdCompressedPackets(
        zstd::encode_all(&plain[..], 3).unwrap(),
    ))]);
    let mut counts = Vec::new();
    for (name, bytes) in [
        ("plain", plain.clone()),
        ("gzip", gz),
        ("zstd", zst),
        ("zlib_packets", in_zlib),
        ("zstd_packets", in_zstd),
    ] {
        let (db, report) =
            load(dir.path(), name, &bytes).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert!(report.truncation.is_none(), "{name}");
        counts.push((
            name,
            int(&db, "SELECT count(*) FROM sched_slice"),
            int(&db, "SELECT count(*) FROM thread_state"),
            int(&db, "SELECT count(*) FROM wakeup"),
        ));
    }
    assert_eq!(counts[0].1, 7, "{counts:?}");
    for c in &counts {
        assert_eq!(
            (c.1, c.2, c.3),
            (counts[0].1, counts[0].2, counts[0].3),
            "{counts:?}"
        );
    }
}

#[test]
fn truncated_file_loads_the_complete_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let packets = small_trace();
    let first = frame(&packets[0]);
    let mut bytes = encode(&packets);
    bytes.truncate(bytes.len() - 5);
    let (db, report) = load(dir.path(), "cut", &bytes).unwrap();
    let t = report.truncation.expect("truncation reported");
    assert_eq!(t.offset, first.len() as u64);
    assert_eq!(
        int(&db, "SELECT count(*) FROM sched_slice WHERE cpu = 1"),
        0
    );
    assert_eq!(
        int(&db, "SELECT count(*) FROM sched_slice WHERE cpu = 0"),
        4
    );
    assert_eq!(
        int(
            &db,
            "SELECT int_value FROM metadata WHERE name = 'truncated_at_offset'"
        ),
        first.len() as i64
    );
}

#[test]
fn corrupt_packet_is_an_error_with_index_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let good = frame(&small_trace()[0]);
    let mut bytes = good.clone();
    // A packet whose ftrace_events field claims more bytes than the packet has.
    bytes.extend_from_slice(&[0x0a, 0x04, 0x0a, 0x10, 0x08, 0x01]);
    let err = load(dir.path(), "corrupt", &bytes).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("packet #1"), "{msg}");
    assert!(
        msg.contains(&format!("byte offset {}", good.len())),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn empty_and_foreign_files_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let e = load(dir.path(), "empty", b"").unwrap_err();
    assert!(format!("{e:#}").contains("empty"), "{e:#}");
    let e = load(dir.path(), "text", b"hello, world\n").unwrap_err();
    assert!(format!("{e:#}").contains("not a Perfetto trace"), "{e:#}");
    let gz_text = {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"plain text").unwrap();
        gz.finish().unwrap()
    };
    let e = load(dir.path(), "gztext", &gz_text).unwrap_err();
    assert!(format!("{e:#}").contains("not a Perfetto trace"), "{e:#}");
    assert!(!format!("{e:#}").contains('\n'));
}

#[test]
fn unknown_packets_are_counted_and_missing_system_info_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = encode(&small_trace());
    // TracePacket field 60 (not imported), wrapped as Trace.packet.
    let unknown = [0xe2, 0x03, 0x02, 0x08, 0x01];
    bytes.push(0x0a);
    bytes.push(unknown.len() as u8);
    bytes.extend_from_slice(&unknown);
    let (db, report) = load(dir.path(), "unknown", &bytes).unwrap();
    assert_eq!(report.unknown_packets, 1);
    assert_eq!(
        int(
            &db,
            "SELECT int_value FROM metadata WHERE name = 'unknown_packets'"
        ),
        1
    );
    assert_eq!(
        int(
            &db,
            "SELECT count(*) FROM metadata WHERE name = 'system_release'"
        ),
        0
    );
    // 4.4 decoding without SystemInfo: prev_state 1 is S.
    assert_eq!(
        int(
            &db,
            "SELECT count(*) FROM sched_slice WHERE end_state = 'S'"
        ),
        3
    );
}

#[test]
fn reused_pid_gets_a_new_utid() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = load(dir.path(), "reuse", &encode(&small_trace())).unwrap();
    assert_eq!(int(&db, "SELECT count(*) FROM thread WHERE tid = 300"), 2);
    assert_eq!(int(&db, "SELECT count(*) FROM process WHERE pid = 300"), 2);
    assert_eq!(
        int(
            &db,
            "SELECT count(*) FROM thread WHERE tid = 300 AND end_ts = 2500"
        ),
        1
    );
    assert_eq!(
        int(
            &db,
            "SELECT count(DISTINCT utid) FROM sched_slice JOIN thread USING (utid) WHERE tid = 300"
        ),
        2
    );
    // The wakee's latency: woken at 1500, ran at 1800.
    assert_eq!(
        int(
            &db,
            "SELECT latency FROM wakeup JOIN thread USING (utid) WHERE tid = 200"
        ),
        300
    );
    assert_eq!(
        int(&db, "SELECT count(*) FROM task_event WHERE type = 'fork'"),
        2
    );
}

#[test]
fn slices_tile_cpus_and_thread_states_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("synthetic.pftrace");
    write_synthetic(&trace, 20_000, 2, 8, 200);
    let db = dir.path().join("synthetic.db");
    db::build_into(&trace, &db).unwrap();
    let overlaps_or_gaps = int(
        &db,
        "SELECT count(*) FROM (SELECT cpu, ts, dur, lead(ts) OVER (PARTITION BY cpu ORDER BY ts) AS next
         FROM sched_slice) WHERE next IS NOT NULL AND (dur < 0 OR ts + dur != next)",
    );
    assert_eq!(overlaps_or_gaps, 0);
    let state_overlaps = int(
        &db,
        "SELECT count(*) FROM (SELECT utid, ts, dur, lead(ts) OVER (PARTITION BY utid ORDER BY ts, id) AS next
         FROM thread_state) WHERE next IS NOT NULL AND (dur < 0 OR ts + dur > next)",
    );
    assert_eq!(state_overlaps, 0);
    assert!(int(&db, "SELECT count(*) FROM sched_slice") > 9_000);
    assert!(int(&db, "SELECT count(*) FROM wakeup WHERE latency = 2000") > 9_000);
}

/// A thread asleep while tens of thousands of rows open and close after its
/// own: its row leaves the importer's reorder window and is inserted late,
/// in place; no row is lost or duplicated and ids stay dense.
#[test]
fn long_sleep_past_the_reorder_window_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = vec![
        switch(1_000, (0, "swapper/0", 0), (50, "sleeper")),
        switch(2_000, (50, "sleeper", 1), (100, "a")),
    ];
    let mut ts = 3_000;
    for i in 0..30_000 {
        let (prev, next) = if i % 2 == 0 { (100, 101) } else { (101, 100) };
        events.push(waking(ts, prev as u32, next, "ab", 0));
        events.push(switch(ts + 500, (prev, "ab", 1), (next, "ab")));
        ts += 1_000;
    }
    let last = if 30_000 % 2 == 0 { 100 } else { 101 };
    events.push(waking(ts, last as u32, 50, "sleeper", 0));
    events.push(switch(ts + 500, (last, "ab", 1), (50, "sleeper")));
    let (db, _) = load(dir.path(), "sleep.pftrace", &encode(&[bundle(0, events)])).unwrap();
    for table in ["thread_state", "sched_slice", "wakeup"] {
        assert_eq!(
            int(&db, &format!("SELECT count(*) FROM {table}")),
            int(&db, &format!("SELECT max(id) + 1 FROM {table}")),
            "{table}"
        );
    }
    assert_eq!(
        int(
            &db,
            "SELECT dur FROM thread_state JOIN thread USING (utid) WHERE tid = 50 AND state = 'S'"
        ),
        ts as i64 - 2_000
    );
}

#[test]
fn cache_is_reused_until_the_trace_changes_or_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pftrace");
    write(&trace, &encode(&small_trace()));
    let opts = LoadOptions::default();
    let first = db::load(&trace, &opts).unwrap();
    assert_eq!(
        first.db_path,
        dir.path().canonicalize().unwrap().join("t.pftrace.db")
    );
    let mtime = || {
        std::fs::metadata(&first.db_path)
            .unwrap()
            .modified()
            .unwrap()
    };
    let built = mtime();
    std::thread::sleep(std::time::Duration::from_millis(20));
    db::load(&trace, &opts).unwrap();
    assert_eq!(mtime(), built, "valid cache reused");
    db::load(
        &trace,
        &LoadOptions {
            rebuild: true,
            ..opts.clone()
        },
    )
    .unwrap();
    let rebuilt = mtime();
    assert_ne!(rebuilt, built, "--rebuild reloads");
    // A changed trace invalidates the cache.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut more = small_trace();
    more.push(system_info("6.1.0"));
    write(&trace, &encode(&more));
    db::load(&trace, &opts).unwrap();
    assert_ne!(mtime(), rebuilt);
    // A foreign file in the cache's place is rebuilt, not trusted.
    std::fs::write(&first.db_path, b"not a database").unwrap();
    let again = db::load(&trace, &opts).unwrap();
    let conn = db::open_readonly(&again.db_path).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM sched_slice", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 7);
    // The trace, its database and column file: no temporary files left behind.
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["t.pftrace", "t.pftrace.db", "t.pftrace.db.cols"]);
}

#[test]
fn prost_roundtrip_of_our_trace_matches_perfetto_protos() {
    // The same bytes decode with Perfetto's official definitions.
    let bytes = encode(&small_trace());
    let t = <perfetto_protos::trace::Trace as protobuf::Message>::parse_from_bytes(&bytes).unwrap();
    assert_eq!(t.packet.len(), 2);
    assert_eq!(pb::Trace::decode(&bytes[..]).unwrap().packet.len(), 2);
}

/// A trace from a 4096-CPU machine (CpuInfo and Topology of 4096 CPUs,
/// events on the last CPU) loads every CPU; a bundle from a CPU past
/// model::MAX_CPUS is counted and dropped.
#[test]
fn a_4096_cpu_machine_loads_every_cpu() {
    use schedlens::perfetto::proto::schedlens::{self as slpb, schedlens_packet, topology};
    const CPUS: u32 = 4096;
    assert_eq!(schedlens::model::MAX_CPUS as u32, CPUS);
    let last = CPUS - 1;
    let cpu_info = packet(trace_packet::Data::CpuInfo(pb::CpuInfo {
        cpus: (0..CPUS)
            .map(|c| pb::cpu_info::Cpu {
                processor: Some("Big CPU".into()),
                capacity: Some(if c < CPUS / 2 { 512 } else { 1024 }),
                ..Default::default()
            })
            .collect(),
    }));
    let topology = packet(trace_packet::Data::Schedlens(slpb::SchedlensPacket {
        data: Some(schedlens_packet::Data::Topology(slpb::Topology {
            cpus: (0..CPUS)
                .map(|c| topology::Cpu {
                    cpu: Some(c),
                    package_id: Some((c / 1024) as i32),
                    core_id: Some((c / 2) as i32),
                    llc_id: Some((c / 64) as i32),
                    numa_node: Some((c / 1024) as i32),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })),
    }));
    let packets = vec![
        system_info("6.8.0"),
        cpu_info,
        topology,
        bundle(
            0,
            vec![
                switch(1_000, (0, "swapper/0", 0), (100, "first")),
                switch(4_000, (100, "first", 1), (0, "swapper/0")),
            ],
        ),
        bundle(
            last,
            vec![
                waking(1_500, 0, 200, "last", last as i32),
                switch(2_000, (0, "swapper/4095", 0), (200, "last")),
                switch(3_000, (200, "last", 1), (0, "swapper/4095")),
            ],
        ),
        bundle(
            CPUS,
            vec![switch(2_500, (0, "swapper", 0), (300, "beyond"))],
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = load(dir.path(), "big.pftrace", &encode(&packets)).unwrap();
    assert_eq!(int(&db, "SELECT count(*) FROM cpu"), i64::from(CPUS));
    assert_eq!(
        int(
            &db,
            "SELECT llc_id * 10000 + numa_node * 100 + cluster_id FROM cpu WHERE cpu = 4095"
        ),
        63 * 10000 + 3 * 100 + 1
    );
    assert_eq!(
        int(&db, "SELECT count(*) FROM sched_slice WHERE cpu = 4095"),
        2
    );
    assert_eq!(
        int(
            &db,
            "SELECT dur FROM sched_slice JOIN thread USING (utid) WHERE tid = 200"
        ),
        1_000
    );
    assert_eq!(
        int(
            &db,
            "SELECT count(*) FROM thread_state WHERE state = 'Running' AND cpu = 4095"
        ),
        1
    );
    assert_eq!(
        int(
            &db,
            "SELECT waking_cpu + target_cpu + run_cpu FROM wakeup WHERE latency = 500"
        ),
        3 * 4095
    );
    assert_eq!(
        int(&db, "SELECT sum(busy_ns) FROM agg_cpu WHERE cpu = 4095"),
        1_000
    );
    assert_eq!(
        int(
            &db,
            "SELECT value FROM stats WHERE name = 'ftrace_bundle_tokenizer_errors'"
        ),
        1
    );
    assert_eq!(int(&db, "SELECT count(*) FROM thread WHERE tid = 300"), 0);
}

/// trace_bounds spans the kernel events, as trace_processor's: not a process
/// snapshot stamped before them, nor a CPU's compact waking and switch that
/// come before its first switch (they make no row).
#[test]
fn trace_bounds_span_the_events_not_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let packets = vec![
        process_tree(500, &[(100, 1, "app")], &[(100, 100, Some("app"))]),
        compact_bundle(
            1,
            &[(900, 0, 400, "other"), (1_500, 1, 0, "swapper/1")],
            &[(800, 200, 1)],
        ),
        bundle(
            0,
            vec![
                switch(1_000, (0, "swapper/0", 0), (100, "app")),
                switch(2_000, (100, "app", 1), (0, "swapper/0")),
            ],
        ),
    ];
    let (db, _) = load(dir.path(), "bounds", &encode(&packets)).unwrap();
    assert_eq!(
        (
            int(&db, "SELECT start_ts FROM trace_bounds"),
            int(&db, "SELECT end_ts FROM trace_bounds")
        ),
        (1_000, 2_000)
    );
    // The compact switch at 1500 is kept: it opens the CPU's first slice.
    assert_eq!(
        int(&db, "SELECT count(*) FROM sched_slice WHERE cpu = 1"),
        1
    );
}

/// A snapshot read while tasks forked lists them under a timestamp before
/// their forks (a /proc scan takes time; earlier schedlens recorders stamped
/// a whole scan with its start, and each chunk's thread list with its first
/// task's announcement). The fork is then the birth of the thread the snapshot
/// listed, not of a second one: one row per thread and process, with the
/// fork's start and parent, and the snapshot's command line.
#[test]
fn a_snapshot_stamped_before_a_fork_lists_the_forked_task() {
    const CLONE_THREAD: u64 = 0x10000;
    let dir = tempfile::tempdir().unwrap();
    let packets = vec![
        process_tree(
            500,
            &[
                (100, 1, "shell"),
                (300, 100, "worker --jobs 2"),
                (400, 1, "old"),
            ],
            &[(301, 300, Some("worker-io")), (400, 400, None)],
        ),
        // A thread list as a recorder chunk carries it: names a process
        // (500) that is forked later too.
        process_tree(600, &[], &[(501, 500, None)]),
        bundle(
            0,
            vec![
                switch(1_000, (0, "swapper/0", 0), (100, "shell")),
                newtask(1_100, 100, 300, "shell", 0),
                switch(1_200, (100, "shell", 1), (400, "old")),
                switch(1_300, (400, "old", 1), (300, "shell")),
                newtask(1_400, 300, 301, "shell", CLONE_THREAD),
                newtask(1_500, 300, 500, "shell", 0),
                switch(1_600, (300, "worker", 1), (500, "shell")),
                newtask(1_700, 500, 501, "shell", CLONE_THREAD),
                // 400 ran, so this fork is a new task with its pid (its
                // free was lost), not the one the snapshot listed.
                newtask(1_800, 500, 400, "shell", 0),
                switch(1_900, (500, "shell", 1), (0, "swapper/0")),
            ],
        ),
    ];
    let (db, _) = load(dir.path(), "snapshot", &encode(&packets)).unwrap();
    let rows = |tid: i64| {
        int(
            &db,
            &format!("SELECT count(*) FROM thread WHERE tid = {tid}"),
        )
    };
    assert_eq!([100, 300, 301, 500, 501, 400].map(rows), [1, 1, 1, 1, 1, 2]);
    assert_eq!(
        int(&db, "SELECT count(*) FROM process WHERE pid IN (300, 500)"),
        2
    );
    assert_eq!(
        int(
            &db,
            "SELECT count(*) FROM process WHERE name IS NULL AND pid IN (300, 500)"
        ),
        0,
        "no nameless copy"
    );
    let conn = db::open_readonly(&db).unwrap();
    let worker: (i64, String, i64) = conn
        .query_row(
            "SELECT p.start_ts, p.cmdline, parent.pid FROM process p
             JOIN process parent ON parent.upid = p.parent_upid WHERE p.pid = 300",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(worker, (1_100, "worker --jobs 2".to_string(), 100));
    // Each forked thread: the fork's start, in its process.
    for (tid, pid, start) in [(301, 300, 1_400), (501, 500, 1_700)] {
        assert_eq!(
            int(
                &db,
                &format!(
                    "SELECT count(*) FROM thread t JOIN process p USING (upid)
                     WHERE t.tid = {tid} AND p.pid = {pid} AND t.start_ts = {start}"
                )
            ),
            1,
            "thread {tid}"
        );
    }
    // The fork's rows name the one thread.
    assert_eq!(
        int(
            &db,
            "SELECT count(*) FROM task_event e JOIN thread t USING (utid) WHERE e.tid = 301 AND t.start_ts = 1400"
        ),
        1
    );
}

/// A switch-out the kernel never reported: the CPU's next switch names
/// another prev. The slice and the Running state of the task the CPU was
/// running end there, in an unknown state (NULL) until its next event; they
/// used to last until then (the task looked Running for seconds). A task
/// seen running on another CPU since keeps that Running.
#[test]
fn a_lost_switch_out_ends_running_at_the_next_switch() {
    let dir = tempfile::tempdir().unwrap();
    let packets = vec![
        bundle(
            0,
            vec![
                switch(1_000, (0, "swapper/0", 0), (100, "lost")),
                // 100's switch-out is missing.
                switch(1_300, (200, "other", 1), (300, "next")),
                switch(1_400, (300, "next", 1), (0, "swapper/0")),
            ],
        ),
        bundle(
            1,
            vec![
                switch(1_100, (0, "swapper/1", 0), (600, "moved")),
                // 600's switch-out is missing, it runs on CPU 2 since 1150.
                switch(1_250, (700, "another", 1), (0, "swapper/1")),
                waking(5_000, 0, 100, "lost", 1),
            ],
        ),
        bundle(
            2,
            vec![
                switch(1_150, (0, "swapper/2", 0), (600, "moved")),
                switch(2_000, (600, "moved", 1), (0, "swapper/2")),
            ],
        ),
    ];
    let (db, _) = load(dir.path(), "lost-switch-out", &encode(&packets)).unwrap();
    let conn = db::open_readonly(&db).unwrap();
    let states = |tid: i64| -> Vec<(i64, i64, Option<String>, Option<i64>)> {
        conn.prepare(
            "SELECT s.ts, s.dur, s.state, s.cpu FROM thread_state s JOIN thread USING (utid)
             WHERE tid = ?1 ORDER BY s.ts",
        )
        .unwrap()
        .query_map([tid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    let running = || Some("Running".to_string());
    assert_eq!(
        states(100),
        [
            (1_000, 300, running(), Some(0)),
            (1_300, 3_700, None, None),
            (5_000, -1, Some("R".to_string()), None),
        ]
    );
    assert_eq!(
        states(600),
        [
            (1_100, 50, running(), Some(1)),
            (1_150, 850, running(), Some(2)),
            (2_000, -1, Some("S".to_string()), None),
        ]
    );
    let slice: (i64, Option<String>) = conn
        .query_row(
            "SELECT dur, end_state FROM sched_slice JOIN thread USING (utid) WHERE tid = 100",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(slice, (300, None));
    assert_eq!(
        int(
            &db,
            "SELECT value FROM stats WHERE name = 'mismatched_sched_switch_tids'"
        ),
        2
    );
    // task_timeline shows the unknown state (R begins at the trace's end).
    let w = timespec::resolve_window(&conn, None).unwrap();
    let t = task_timeline::task_timeline(&conn, task_timeline::TaskSel::Tid(100), w, 10).unwrap();
    let shown: Vec<_> = t.threads[0]
        .intervals
        .iter()
        .map(|i| i.state.as_str())
        .collect();
    assert_eq!(shown, ["Running", "unknown"]);
}

/// thread_state.cpu is the CPU of Running only, as trace_processor fills it
/// (R rows have none; a wakeup's target CPU is in wakeup), and the schema's
/// documentation, which the MCP server hands to models, says so: it said R
/// rows held the wakeup's target CPU.
#[test]
fn thread_state_cpu_is_documented_as_filled() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = load(dir.path(), "cpu", &encode(&small_trace())).unwrap();
    assert_eq!(
        int(
            &db,
            "SELECT count(*) FROM thread_state WHERE state = 'R' AND cpu IS NULL"
        ),
        int(&db, "SELECT count(*) FROM thread_state WHERE state = 'R'")
    );
    assert!(int(&db, "SELECT count(*) FROM thread_state WHERE state = 'R'") > 0);
    assert_eq!(
        int(
            &db,
            "SELECT count(*) FROM thread_state WHERE state = 'Running' AND cpu IS NULL"
        ),
        0
    );
    assert_eq!(
        int(
            &db,
            "SELECT target_cpu FROM wakeup JOIN thread USING (utid) WHERE tid = 200"
        ),
        1
    );
    let doc = &schedlens::analyzer::schema::table_doc("thread_state")
        .unwrap()
        .columns
        .iter()
        .find(|c| c.name == "cpu")
        .unwrap()
        .doc;
    assert!(
        doc.starts_with("CPU for Running, else NULL") && doc.contains("wakeup.target_cpu"),
        "{doc}"
    );
}

#[test]
fn handler_runs_the_recorder_says_the_kernel_skipped_are_a_data_loss_stat() {
    use schedlens::perfetto::proto::schedlens::{self as slpb, recorder_stats::Counter};
    let dir = tempfile::tempdir().unwrap();
    let stats = |misses: &[(&str, u64)]| {
        packet(trace_packet::Data::Schedlens(slpb::SchedlensPacket {
            data: Some(slpb::schedlens_packet::Data::RecorderStats(
                slpb::RecorderStats {
                    recursion_misses: misses
                        .iter()
                        .map(|&(name, n)| Counter {
                            name: Some(name.into()),
                            value: Some(n),
                        })
                        .collect(),
                    ..Default::default()
                },
            )),
        }))
    };
    let sql = "SELECT value FROM stats WHERE name = 'recorder_bpf_recursion_misses' \
               AND severity = 'data_loss' AND source = 'trace'";
    let mut packets = small_trace();
    packets.push(stats(&[
        ("handle_switch", 0),
        ("handle_waking", 7),
        ("handle_exec", 2),
    ]));
    let (db, _) = load(dir.path(), "skipped.pftrace", &encode(&packets)).unwrap();
    assert_eq!(int(&db, sql), 9);
    // A recorder that did not count them leaves no row, not a false 0.
    let mut packets = small_trace();
    packets.push(stats(&[]));
    let (db, _) = load(dir.path(), "older.pftrace", &encode(&packets)).unwrap();
    assert_eq!(
        int(
            &db,
            "SELECT count(*) FROM stats WHERE name = 'recorder_bpf_recursion_misses'"
        ),
        0
    );
}

#[test]
fn the_recorders_stack_counters_are_stats() {
    use schedlens::perfetto::proto::schedlens::{self as slpb, recorder_stats::Counter};
    let dir = tempfile::tempdir().unwrap();
    let stats = |stacks: Option<slpb::StackStats>| {
        packet(trace_packet::Data::Schedlens(slpb::SchedlensPacket {
            data: Some(slpb::schedlens_packet::Data::RecorderStats(
                slpb::RecorderStats {
                    stacks,
                    ..Default::default()
                },
            )),
        }))
    };
    let mut packets = small_trace();
    packets.push(stats(Some(slpb::StackStats {
        taken: [("off-cpu", 40), ("cpu", 2), ("waker", 0)]
            .iter()
            .map(|&(name, n)| Counter {
                name: Some(name.into()),
                value: Some(n),
            })
            .collect(),
        lost_collision: Some(3),
        lost_no_user_stack: Some(1),
        reused: Some(30),
        frames: Some(20),
        frames_named: Some(15),
        user_stacks: Some(4),
        user_stacks_gone: Some(1),
        ..Default::default()
    })));
    let (db, _) = load(dir.path(), "stacks.pftrace", &encode(&packets)).unwrap();
    let row = |name: &str| {
        int(
            &db,
            &format!("SELECT value FROM stats WHERE name = '{name}' AND source = 'trace'"),
        )
    };
    assert_eq!(row("recorder_stacks_taken"), 42);
    assert_eq!(row("recorder_stacks_reused"), 30);
    assert_eq!(row("recorder_stacks_lost_collision"), 3);
    assert_eq!(row("recorder_stacks_lost_no_user_stack"), 1);
    // Left unset, a counter reads as 0 (the recorder writes them all).
    assert_eq!(row("recorder_stacks_lost_map_full"), 0);
    assert_eq!(
        (
            row("recorder_stack_frames"),
            row("recorder_stack_frames_named")
        ),
        (20, 15)
    );
    assert_eq!(row("recorder_user_stacks_process_gone"), 1);
    assert_eq!(
        int(
            &db,
            "SELECT count(*) FROM stats WHERE name = 'recorder_user_stacks_process_gone' \
             AND severity = 'data_loss'"
        ),
        1
    );
    // A recording without stacks leaves no stack rows.
    let mut packets = small_trace();
    packets.push(stats(None));
    let (db, _) = load(dir.path(), "plain.pftrace", &encode(&packets)).unwrap();
    assert_eq!(
        int(
            &db,
            "SELECT count(*) FROM stats WHERE name LIKE 'recorder_stack%' \
             OR name LIKE 'recorder_user_stacks%'"
        ),
        0
    );
}
