//! Stack data that lies: PerfSamples and interned data naming ids nothing
//! defines, callstacks deeper than any stack, entries without ids. The trace
//! must load, every lie counted in the stats table, nothing made up.

mod tracegen;

use schedlens::perfetto::proto::trace_packet::{Data, OptionalTrustedPacketSequenceId};
use schedlens::perfetto::proto::{
    Callstack, Frame, InternedData, InternedString, Mapping, PerfSample, TracePacket,
};
use tracegen::*;

const SEQ: u32 = 7;

fn on_seq(mut p: TracePacket) -> TracePacket {
    p.optional_trusted_packet_sequence_id = Some(
        OptionalTrustedPacketSequenceId::TrustedPacketSequenceId(SEQ),
    );
    p
}

fn sample(ts: u64, tid: u32, callstack: Option<u64>) -> TracePacket {
    on_seq(at(
        ts,
        packet(Data::PerfSample(PerfSample {
            tid: Some(tid),
            pid: Some(tid),
            callstack_iid: callstack,
            ..PerfSample::default()
        })),
    ))
}

fn query(trace: &std::path::Path, cache: &std::path::Path, sql: &str) -> String {
    let out = schedlens(
        &["query", "--format", "csv", trace.to_str().unwrap(), sql],
        cache,
    );
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn lying_stack_ids_are_counted_not_followed() {
    let string = |iid: u64, s: &str| InternedString {
        iid: Some(iid),
        str: Some(s.as_bytes().to_vec()),
    };
    let interned = InternedData {
        function_names: vec![string(1, "main"), string(2, "work")],
        mapping_paths: vec![string(1, "/bin/app")],
        mappings: vec![
            Mapping {
                iid: Some(1),
                path_string_ids: vec![1, 99], // 99: never interned
                ..Mapping::default()
            },
            Mapping::default(), // no iid
        ],
        frames: vec![
            Frame {
                iid: Some(1),
                function_name_id: Some(1),
                mapping_id: Some(1),
                rel_pc: Some(0x10),
            },
            Frame {
                iid: Some(2),
                function_name_id: Some(2),
                mapping_id: Some(1),
                rel_pc: Some(0x20),
            },
            Frame {
                iid: Some(3),
                function_name_id: Some(77), // no such name: the frame stays, unnamed
                mapping_id: Some(1),
                rel_pc: Some(0x30),
            },
            Frame {
                iid: Some(4),
                mapping_id: Some(42), // no such mapping: left out
                ..Frame::default()
            },
        ],
        callstacks: vec![
            Callstack {
                iid: Some(1),
                frame_ids: vec![1, 2],
            },
            // The same frames again and again: a path, never a cycle, but
            // far deeper than a stack.
            Callstack {
                iid: Some(2),
                frame_ids: [1, 2].repeat(100_000),
            },
            Callstack {
                iid: Some(3),
                frame_ids: vec![1, 4], // frame 4 was left out
            },
            Callstack {
                iid: Some(4),
                frame_ids: vec![1, 2, 3, 1, 2],
            },
        ],
        ..InternedData::default()
    };
    let mut first = on_seq(packet(Data::PerfSample(PerfSample::default())));
    first.data = None;
    first.sequence_flags = Some(1);
    first.interned_data = Some(interned);
    let packets = vec![
        system_info("6.8.0"),
        first,
        sample(1_000, 10, Some(1)),
        sample(2_000, 10, Some(2)),
        sample(3_000, 10, Some(3)),
        sample(4_000, 10, Some(4)),
        sample(5_000, 10, Some(u64::MAX)),
        sample(6_000, 10, None),
    ];
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pftrace");
    write(&trace, &encode(&packets));
    let cache = dir.path().join("cache");

    let stats = query(
        &trace,
        &cache,
        "SELECT name, value FROM stats WHERE name LIKE 'stack_profile%' ORDER BY name",
    );
    // The path id, the mapping without iid, the name, the mapping of frame
    // 4, callstack 3's frame; then the samples of callstacks 2 and 3 (left
    // out) and of u64::MAX.
    assert_eq!(
        stats,
        "\"name\",\"value\"\n\"stack_profile_missing_interned\",8\n\"stack_profile_too_deep\",1\n"
    );
    // Every sample is a row; those whose stack was a lie have none.
    assert_eq!(
        query(
            &trace,
            &cache,
            "SELECT ts, callsite_id IS NOT NULL FROM perf_sample ORDER BY ts"
        ),
        "\"ts\",\"callsite_id IS NOT NULL\"\n1000,1\n2000,0\n3000,0\n4000,1\n5000,0\n6000,0\n"
    );
    // Callstacks 1 and 4 share their prefix: main, work, then [unnamed], main, work.
    assert_eq!(
        query(
            &trace,
            &cache,
            "SELECT c.depth, c.parent_id, f.name FROM stack_profile_callsite c JOIN \
             stack_profile_frame f ON f.id = c.frame_id ORDER BY c.id"
        ),
        "\"depth\",\"parent_id\",\"name\"\n0,\"[NULL]\",\"main\"\n1,0,\"work\"\n2,1,\"\"\n\
         3,2,\"main\"\n4,3,\"work\"\n"
    );
}
