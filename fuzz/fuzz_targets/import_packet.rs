//! Arbitrary bytes as ONE TracePacket, after a valid preamble (SystemInfo, a
//! process tree and compact switches on two CPUs) so the packet meets a live
//! importer state: open slices, known threads, a kernel version. Mutating a
//! whole file rarely gets this deep with a well-formed packet.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use schedlens::perfetto::proto::ftrace_event_bundle::CompactSched;
use schedlens::perfetto::proto::process_tree::{Process, Thread};
use schedlens::perfetto::proto::trace_packet::Data;
use schedlens::perfetto::proto::{
    FtraceEventBundle, ProcessTree, SystemInfo, TracePacket, Utsname,
};
use std::sync::LazyLock;

fn packet(ts: u64, data: Data) -> TracePacket {
    TracePacket {
        timestamp: Some(ts),
        data: Some(data),
        ..Default::default()
    }
}

/// Two switches per CPU (the first only seeds prev_* state), then a waking.
fn switches(cpu: u32, base: u64) -> TracePacket {
    let pid = 100 + cpu as i32;
    packet(
        base,
        Data::FtraceEvents(FtraceEventBundle {
            cpu: Some(cpu),
            compact_sched: Some(CompactSched {
                intern_table: vec!["swapper".into(), "worker".into()],
                switch_timestamp: vec![base, 1_000],
                switch_prev_state: vec![0, 1],
                switch_next_pid: vec![pid, 0],
                switch_next_prio: vec![120, 120],
                switch_next_comm_index: vec![1, 0],
                waking_timestamp: vec![base + 2_000],
                waking_pid: vec![pid],
                waking_target_cpu: vec![cpu as i32],
                waking_prio: vec![120],
                waking_comm_index: vec![1],
                waking_common_flags: vec![1],
            }),
            ..Default::default()
        }),
    )
}

/// The preamble as file bytes: each packet framed as `Trace.packet`.
static PREAMBLE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let packets = [
        packet(
            1_000,
            Data::SystemInfo(SystemInfo {
                utsname: Some(Utsname {
                    sysname: Some("Linux".into()),
                    release: Some("6.8.0".into()),
                    ..Default::default()
                }),
                num_cpus: Some(2),
                ..Default::default()
            }),
        ),
        packet(
            1_000,
            Data::ProcessTree(ProcessTree {
                processes: vec![Process {
                    pid: Some(100),
                    ppid: Some(1),
                    cmdline: vec!["/bin/worker".into(), "-x".into()],
                    ..Default::default()
                }],
                threads: vec![Thread {
                    tid: Some(101),
                    name: Some("worker2".into()),
                    tgid: Some(100),
                }],
                ..Default::default()
            }),
        ),
        switches(0, 10_000),
        switches(1, 10_500),
    ];
    let mut out = Vec::new();
    for p in packets {
        out.push(0x0a);
        p.encode_length_delimited(&mut out).expect("Vec grows");
    }
    out
});

fuzz_target!(|data: &[u8]| {
    let mut file = PREAMBLE.clone();
    file.push(0x0a);
    prost::encoding::encode_varint(data.len() as u64, &mut file);
    file.extend_from_slice(data);
    common::import_bytes(file);
});
