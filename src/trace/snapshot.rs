//! What the recorder writes besides events: the machine (SystemInfo, clock
//! snapshot, CPU info and topology), the processes alive at the start
//! (ProcessTree from /proc), and the end-of-trace statistics. (Issue 2; owner: writer.)

use crate::perfetto::proto::TracePacket;
use crate::trace::topology::Topology;

/// SystemInfo, ClockSnapshot (BOOTTIME, MONOTONIC, REALTIME), CpuInfo and the
/// schedlens Topology packet.
pub fn machine_packets(_topology: &Topology) -> anyhow::Result<Vec<TracePacket>> {
    unimplemented!("issue 2: snapshot")
}

/// A ProcessTree of every process and thread in /proc, timestamped now (BOOTTIME).
pub fn process_tree_packet() -> anyhow::Result<TracePacket> {
    unimplemented!("issue 2: snapshot")
}

/// Totals of a recording, for the end-of-trace packets and the summary.
#[derive(Debug, Default, Clone)]
pub struct RecordingStats {
    pub start_ts: u64,
    pub end_ts: u64,
    /// Events by Perfetto event name ("sched_switch", ...).
    pub events: Vec<(String, u64)>,
    /// Lost events, indexed by cpu.
    pub lost_per_cpu: Vec<u64>,
    pub bytes_written: u64,
    pub argv: Vec<String>,
}

/// FtraceStats (END_OF_TRACE, per-CPU drops) and the schedlens RecorderStats packet.
pub fn epilogue_packets(_stats: &RecordingStats) -> Vec<TracePacket> {
    unimplemented!("issue 2: snapshot")
}
