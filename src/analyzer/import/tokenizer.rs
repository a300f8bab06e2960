//! Packet -> events, in file order (trace_processor's tokenization stage).
//!
//! Packets that only describe the trace (SystemInfo, CpuInfo, clock
//! snapshots, service events, our topology and recorder stats) take effect
//! here, as they do in trace_processor. Ftrace bundles and process snapshots
//! become events for the sorter. The ftrace path walks the wire format by
//! hand: building prost structs for every switch would cost more than the
//! rest of the import.

use super::events::{
    BlockedReason, CompactSwitch, CpuCounter, CpuSlice, Event, Exec, Exit, Free, Migrate, NewTask,
    PrevState, Print, Rename, StatsProcess, Switch, Waking, Work,
};
use super::sorter::{Sorter, Stream};
use super::stacks::StackImport;
use super::trace_info::TraceInfo;
use super::track::TrackKind;
use crate::analyzer::stats::{Stat, Stats};
use crate::analyzer::strings::{FastMap, Str, Strings};
use crate::analyzer::tables::LostEventsRow;
use crate::perfetto::proto::fields::{
    cpu_frequency_ftrace_event as cpu_frequency, cpu_frequency_limits_ftrace_event as limits,
    ftrace_event as fe, ftrace_event_bundle as bundle, ftrace_event_bundle::compact_sched as cs,
    interned_data, interned_string, irq_handler_entry_ftrace_event as irq_entry,
    irq_handler_exit_ftrace_event as irq_exit, print_ftrace_event as print, process_stats as ps,
    sched_blocked_reason_ftrace_event as blocked, sched_process_free_ftrace_event as free,
    sched_switch_ftrace_event as switch, sched_waking_ftrace_event as waking,
    softirq_entry_ftrace_event as softirq_entry, task_newtask_ftrace_event as newtask,
    task_rename_ftrace_event as rename, trace_packet as packet, tracing_service_event,
    workqueue_execute_start_ftrace_event as work_start,
};
use crate::perfetto::proto::{
    ClockSnapshot, CpuInfo, GenericFtraceEvent, IpiEntryFtraceEvent, IpiExitFtraceEvent,
    IpiRaiseFtraceEvent, PerfSample, ProcessTree, SchedMigrateTaskFtraceEvent,
    SchedProcessExecFtraceEvent, SchedProcessExitFtraceEvent, SchedProcessForkFtraceEvent,
    SchedWakeupFtraceEvent, SchedWakeupNewFtraceEvent, SystemInfo,
    WorkqueueActivateWorkFtraceEvent, WorkqueueQueueWorkFtraceEvent,
    schedlens::{SchedlensPacket, schedlens_packet},
};
use crate::perfetto::wire::{Fields, PackedVarints, Value, WireError};
use prost::Message;
use serde_json::json;

/// Bundles of CPUs at or beyond this are corrupt (counted, dropped); a
/// description of more CPUs than this is an error.
const MAX_CPUS: u32 = crate::model::MAX_CPUS as u32;
/// Most events one packet may hold. A bundle is one CPU's events of one
/// chunk: ours stay under 512 KB, about 100,000 compact events at 5 bytes
/// each; Perfetto's hold one ftrace page's. The events of a packet all wait
/// in the sorter at once (about 40 bytes each), so this bounds its memory.
pub const MAX_EVENTS_PER_PACKET: u64 = 1 << 20;
/// Most processes, and most threads, one process snapshot may list: Linux
/// cannot have more pids than this (PID_MAX_LIMIT, 2^22, on 64-bit).
pub const MAX_TASKS_PER_SNAPSHOT: usize = 1 << 22;
const CLOCK_REALTIME: u32 = 1;
const CLOCK_BOOTTIME: u32 = 6;

/// Why a packet could not be tokenized.
#[derive(Debug)]
pub enum PacketError {
    Wire(WireError),
    Decode(&'static str, prost::DecodeError),
    /// The packet describes more than any real machine has.
    Limit(String),
}

impl std::fmt::Display for PacketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PacketError::Wire(e) => write!(f, "{e}"),
            PacketError::Decode(what, e) => write!(f, "invalid {what}: {e}"),
            PacketError::Limit(what) => write!(f, "{what}"),
        }
    }
}

/// Counts the occurrences of field `field` in a message, failing past `max`.
fn count_at_most(b: &[u8], field: u32, max: usize, what: &str) -> Result<usize, PacketError> {
    let mut n = 0;
    for f in Fields::new(b) {
        if f?.0 == field {
            n += 1;
            if n > max {
                return Err(PacketError::Limit(format!(
                    "{what} lists more than {max}, more than any machine has"
                )));
            }
        }
    }
    Ok(n)
}

impl From<WireError> for PacketError {
    fn from(e: WireError) -> Self {
        PacketError::Wire(e)
    }
}

fn decode<M: Message + Default>(what: &'static str, b: &[u8]) -> Result<M, PacketError> {
    M::decode(b).map_err(|e| PacketError::Decode(what, e))
}

#[derive(Default)]
pub struct Tokenizer {
    pub sorter: Sorter,
    /// What the packets said about the trace and its machine.
    pub info: TraceInfo,
    /// Counters of what could not be tokenized.
    pub stats: Stats,
    /// Events handed to the sorter (switches, wakings, other ftrace
    /// events, snapshots).
    pub events: u64,
    /// Packets of kinds the importer does not use.
    pub unknown_packets: u64,
    /// Events the current packet has queued (bounded by MAX_EVENTS_PER_PACKET).
    packet_events: u64,
    /// Interned kernel symbols per packet sequence (iid -> name).
    symbols: FastMap<u32, FastMap<u64, Str>>,
    /// The names of kernel addresses no sequence named ("0x..."), made once.
    unnamed_symbols: FastMap<u64, Str>,
    first_bundle_seen: Vec<bool>,
    latest_packet_ts: i64,
    /// Scratch for a bundle's compact intern table.
    comm_table: Vec<Str>,
    /// Stack samples' interned data and the stack tables.
    pub stacks: StackImport,
}

/// Softirq slice names by vec, as trace_processor names them (kActionNames).
const SOFTIRQ_NAMES: [&str; 10] = [
    "HI",
    "TIMER",
    "NET_TX",
    "NET_RX",
    "BLOCK",
    "BLOCK_IOPOLL",
    "TASKLET",
    "SCHED",
    "HRTIMER",
    "RCU",
];

impl Tokenizer {
    pub fn new() -> Tokenizer {
        Tokenizer {
            sorter: Sorter::new(),
            ..Default::default()
        }
    }

    pub fn packet(&mut self, strings: &mut Strings, data: &[u8]) -> Result<(), PacketError> {
        self.packet_events = 0;
        let mut ts = None;
        let mut seq = 0u32;
        let mut cleared = false;
        let mut interned = None;
        let mut defaults = None;
        let mut payload = None;
        for f in Fields::new(data) {
            let (field, v) = f?;
            match field {
                packet::TIMESTAMP => ts = Some(v.as_u64() as i64),
                packet::TRUSTED_PACKET_SEQUENCE_ID => seq = v.as_u64() as u32,
                packet::SEQUENCE_FLAGS => cleared |= v.as_u64() & 1 != 0,
                packet::INCREMENTAL_STATE_CLEARED => cleared |= v.as_u64() != 0,
                packet::INTERNED_DATA => interned = v.as_bytes(),
                packet::TRACE_PACKET_DEFAULTS => defaults = v.as_bytes(),
                packet::FTRACE_EVENTS
                | packet::PROCESS_TREE
                | packet::CLOCK_SNAPSHOT
                | packet::PROCESS_STATS
                | packet::TRACE_CONFIG
                | packet::FTRACE_STATS
                | packet::SYSTEM_INFO
                | packet::CPU_INFO
                | packet::SERVICE_EVENT
                | packet::PERF_SAMPLE
                | packet::SCHEDLENS => {
                    if let Value::Bytes(b) = v {
                        payload = Some((field, b));
                    }
                }
                _ => {}
            }
        }
        if cleared {
            self.symbols.remove(&seq);
            self.stacks.clear(seq);
        }
        if let Some(b) = defaults {
            self.stacks
                .defaults(seq, &decode("TracePacketDefaults", b)?);
        }
        if let Some(b) = interned {
            self.interned_data(strings, seq, b)?;
            self.stacks
                .interned(strings, &mut self.stats, seq, decode("InternedData", b)?);
        }
        let packet_ts = match ts {
            Some(t) => t,
            None => self.latest_packet_ts.max(self.sorter.max_ts),
        };
        self.latest_packet_ts = self.latest_packet_ts.max(packet_ts);
        let Some((field, b)) = payload else {
            self.unknown_packets += 1;
            return Ok(());
        };
        match field {
            packet::FTRACE_EVENTS => self.bundle(strings, b, seq)?,
            packet::PROCESS_TREE => {
                // Counted before decoding: the decoded tree costs far more
                // memory than its bytes.
                use crate::perfetto::proto::fields::process_tree as tree;
                count_at_most(
                    b,
                    tree::PROCESSES,
                    MAX_TASKS_PER_SNAPSHOT,
                    "a ProcessTree: processes",
                )?;
                count_at_most(
                    b,
                    tree::THREADS,
                    MAX_TASKS_PER_SNAPSHOT,
                    "a ProcessTree: threads",
                )?;
                let tree: ProcessTree = decode("ProcessTree", b)?;
                self.push(
                    Stream::Packet,
                    packet_ts,
                    Event::ProcessTree(Box::new(tree)),
                )?;
            }
            packet::PROCESS_STATS => {
                let procs = process_stats(b)?;
                self.push(Stream::Packet, packet_ts, Event::ProcessStats(procs))?;
            }
            packet::CLOCK_SNAPSHOT => {
                let snap: ClockSnapshot = decode("ClockSnapshot", b)?;
                let clock = |id| {
                    snap.clocks
                        .iter()
                        .find(|c| c.clock_id == Some(id))
                        .and_then(|c| c.timestamp)
                };
                // A hostile snapshot can hold any u64: an offset that does not
                // fit is no offset (and must not panic in checked builds).
                if let (Some(real), Some(boot)) = (clock(CLOCK_REALTIME), clock(CLOCK_BOOTTIME))
                    && let Some(offset) = (real as i64).checked_sub(boot as i64)
                    && !self.info.meta.contains_key("realtime_offset_ns")
                {
                    self.info.set_int("realtime_offset_ns", offset);
                }
            }
            packet::SYSTEM_INFO => self.system_info(decode("SystemInfo", b)?),
            packet::CPU_INFO => {
                use crate::perfetto::proto::fields::cpu_info;
                count_at_most(b, cpu_info::CPUS, MAX_CPUS as usize, "a CpuInfo: CPUs")?;
                self.info.cpu_info(decode::<CpuInfo>("CpuInfo", b)?)
            }
            packet::SERVICE_EVENT => {
                for f in Fields::new(b) {
                    if let (tracing_service_event::TRACING_STARTED, Value::Varint(v)) = f?
                        && v != 0
                    {
                        self.info.tracing_started = Some(packet_ts);
                    }
                }
            }
            packet::SCHEDLENS => self.schedlens(packet_ts, decode("schedlens packet", b)?)?,
            packet::PERF_SAMPLE => {
                let sample = decode::<PerfSample>("PerfSample", b)?;
                let event = self.stacks.sample(&mut self.stats, seq, &sample);
                self.push(Stream::Packet, packet_ts, Event::PerfSample(event))?;
            }
            // trace_config and ftrace_stats are understood but
            // carry nothing the tables show.
            _ => {}
        }
        Ok(())
    }

    /// Queues one event; fails once the packet has queued more than
    /// [`MAX_EVENTS_PER_PACKET`] (they all wait in the sorter at once).
    #[inline]
    fn push(&mut self, stream: Stream, ts: i64, event: Event) -> Result<(), PacketError> {
        self.packet_events += 1;
        if self.packet_events > MAX_EVENTS_PER_PACKET {
            return Err(PacketError::Limit(format!(
                "a packet holds more than {MAX_EVENTS_PER_PACKET} events (real ones hold at most a \
                 few hundred thousand)"
            )));
        }
        self.events += 1;
        self.sorter.push(stream, ts, event);
        Ok(())
    }

    fn interned_data(
        &mut self,
        strings: &mut Strings,
        seq: u32,
        b: &[u8],
    ) -> Result<(), PacketError> {
        for f in Fields::new(b) {
            let (field, v) = f?;
            let (interned_data::KERNEL_SYMBOLS, Value::Bytes(sym)) = (field, v) else {
                continue;
            };
            let mut iid = 0;
            let mut name = None;
            for f in Fields::new(sym) {
                match f? {
                    (interned_string::IID, v) => iid = v.as_u64(),
                    (interned_string::STR, Value::Bytes(s)) => name = Some(s),
                    _ => {}
                }
            }
            if let Some(name) = name {
                let id = strings.intern_bytes(name);
                self.symbols.entry(seq).or_default().insert(iid, id);
            }
        }
        Ok(())
    }

    fn system_info(&mut self, info: SystemInfo) {
        let out = &mut self.info;
        if let Some(u) = &info.utsname {
            out.kernel_version = kernel_version(u.sysname(), u.release());
            for (k, v) in [
                ("system_name", &u.sysname),
                ("system_version", &u.version),
                ("system_release", &u.release),
                ("system_machine", &u.machine),
            ] {
                if let Some(v) = v {
                    out.set_str(k, v);
                }
            }
        }
        if let Some(v) = info.timezone_off_mins {
            out.set_int("timezone_off_mins", i64::from(v));
        }
        if let Some(v) = info.num_cpus {
            out.set_int("num_cpus", i64::from(v));
        }
        if let Some(v) = info.page_size {
            out.set_int("page_size", i64::from(v));
        }
        if let Some(v) = &info.tracing_service_version {
            out.set_str("tracing_service_version", v);
        }
    }

    fn schedlens(&mut self, ts: i64, p: SchedlensPacket) -> Result<(), PacketError> {
        match p.data {
            Some(schedlens_packet::Data::Topology(t)) => {
                if t.cpus.len() > MAX_CPUS as usize || t.cpus.iter().any(|c| c.cpu() >= MAX_CPUS) {
                    return Err(PacketError::Limit(format!(
                        "a Topology describes CPUs beyond the {MAX_CPUS} any machine has"
                    )));
                }
                self.info.topology(t)
            }
            Some(schedlens_packet::Data::LostEvents(l)) => {
                let (cpu, count) = (l.cpu(), l.count() as i64);
                self.info.lost.push(LostEventsRow {
                    ts,
                    cpu,
                    count: Some(count),
                });
                self.stats.add_at(Stat::recorder_lost_events, cpu, count);
            }
            Some(schedlens_packet::Data::RecorderStats(r)) => {
                self.info.recorder_stats(r, &mut self.stats)
            }
            None => self.unknown_packets += 1,
        }
        Ok(())
    }

    fn bundle(&mut self, strings: &mut Strings, b: &[u8], seq: u32) -> Result<(), PacketError> {
        let mut cpu = None;
        let mut lost = false;
        let mut compact = None;
        let mut data_start = None;
        for f in Fields::new(b) {
            let (field, v) = f?;
            match field {
                bundle::CPU => cpu = Some(v.as_u64()),
                bundle::LOST_EVENTS => lost = v.as_u64() != 0,
                bundle::COMPACT_SCHED => compact = v.as_bytes(),
                bundle::LAST_READ_EVENT_TIMESTAMP => {
                    data_start = data_start.or(Some(v.as_u64() as i64))
                }
                bundle::PREVIOUS_BUNDLE_END_TIMESTAMP => data_start = Some(v.as_u64() as i64),
                _ => {}
            }
        }
        let Some(cpu) = cpu.filter(|&c| c < u64::from(MAX_CPUS)) else {
            self.stats.add(Stat::ftrace_bundle_tokenizer_errors, 1);
            return Ok(());
        };
        let cpu = cpu as u32;
        self.info.cpu(cpu);
        let first_ts_before = self.sorter.max_ts;
        let mut first_ts = None;
        if let Some(c) = compact {
            first_ts = self.compact(strings, cpu, c)?;
        }
        for f in Fields::new(b) {
            if let (bundle::EVENT, Value::Bytes(e)) = f?
                && let Some(ts) = self.event(strings, cpu, seq, e)?
            {
                first_ts = Some(first_ts.map_or(ts, |f: i64| f.min(ts)));
            }
        }
        if lost {
            self.stats.set_at(Stat::ftrace_cpu_has_data_loss, cpu, 1);
            let at = first_ts.or(data_start).unwrap_or(first_ts_before);
            self.info.lost.push(LostEventsRow {
                ts: at,
                cpu,
                count: None,
            });
        }
        let c = cpu as usize;
        if self.first_bundle_seen.len() <= c {
            self.first_bundle_seen.resize(c + 1, false);
        }
        if !self.first_bundle_seen[c] {
            self.first_bundle_seen[c] = true;
            if let Some(ts) = data_start {
                let latest = &mut self.info.latest_data_start;
                *latest = Some(latest.map_or(ts, |l| l.max(ts)));
            }
        }
        Ok(())
    }

    /// CompactSched: parallel packed arrays, delta-encoded timestamps, comms
    /// interned per bundle. Returns the earliest timestamp.
    fn compact(
        &mut self,
        strings: &mut Strings,
        cpu: u32,
        b: &[u8],
    ) -> Result<Option<i64>, PacketError> {
        // Indexed by field number: CompactSched's fields are 1 to waking_common_flags.
        let mut arrays: [&[u8]; cs::WAKING_COMMON_FLAGS as usize + 1] =
            [&[]; cs::WAKING_COMMON_FLAGS as usize + 1];
        self.comm_table.clear();
        for f in Fields::new(b) {
            let (field, v) = f?;
            match (field, v) {
                (cs::INTERN_TABLE, Value::Bytes(s)) => {
                    self.comm_table.push(strings.intern_bytes(s))
                }
                (1..=cs::WAKING_COMMON_FLAGS, Value::Bytes(s)) => arrays[field as usize] = s,
                // An unpacked single value would be legal protobuf but no
                // writer emits it; count it rather than guess.
                (1..=cs::WAKING_COMMON_FLAGS, _) => {
                    self.stats.add(Stat::compact_sched_has_parse_errors, 1)
                }
                _ => {}
            }
        }
        let mut first = None;
        let mut errors = false;
        // Switches.
        {
            let mut ts_it = PackedVarints::new(arrays[cs::SWITCH_TIMESTAMP as usize]);
            let mut state_it = PackedVarints::new(arrays[cs::SWITCH_PREV_STATE as usize]);
            let mut pid_it = PackedVarints::new(arrays[cs::SWITCH_NEXT_PID as usize]);
            let mut prio_it = PackedVarints::new(arrays[cs::SWITCH_NEXT_PRIO as usize]);
            let mut comm_it = PackedVarints::new(arrays[cs::SWITCH_NEXT_COMM_INDEX as usize]);
            let mut ts = 0i64;
            while let (Some(d), Some(st), Some(pid), Some(prio), Some(comm)) = (
                ts_it.next(),
                state_it.next(),
                pid_it.next(),
                prio_it.next(),
                comm_it.next(),
            ) {
                ts = ts.wrapping_add(d as i64);
                let Some(&next_comm) = self.comm_table.get(comm as usize) else {
                    errors = true;
                    break;
                };
                first.get_or_insert(ts);
                self.push(
                    Stream::CompactSwitch(cpu),
                    ts,
                    Event::CompactSwitch(CompactSwitch {
                        cpu,
                        prev_state: PrevState::new(st as i64),
                        next_pid: pid as i32,
                        next_prio: prio as i32,
                        next_comm,
                    }),
                )?;
            }
            errors |= ts_it.next().is_some()
                || state_it.next().is_some()
                || pid_it.next().is_some()
                || prio_it.next().is_some()
                || comm_it.next().is_some();
        }
        // Wakings.
        {
            let mut ts_it = PackedVarints::new(arrays[cs::WAKING_TIMESTAMP as usize]);
            let mut pid_it = PackedVarints::new(arrays[cs::WAKING_PID as usize]);
            let mut tcpu_it = PackedVarints::new(arrays[cs::WAKING_TARGET_CPU as usize]);
            let mut prio_it = PackedVarints::new(arrays[cs::WAKING_PRIO as usize]);
            let mut comm_it = PackedVarints::new(arrays[cs::WAKING_COMM_INDEX as usize]);
            let mut flags_it = PackedVarints::new(arrays[cs::WAKING_COMMON_FLAGS as usize]);
            let mut ts = 0i64;
            while let (Some(d), Some(pid), Some(tcpu), Some(prio), Some(comm)) = (
                ts_it.next(),
                pid_it.next(),
                tcpu_it.next(),
                prio_it.next(),
                comm_it.next(),
            ) {
                ts = ts.wrapping_add(d as i64);
                let Some(&comm) = self.comm_table.get(comm as usize) else {
                    errors = true;
                    break;
                };
                let first_ts = first.get_or_insert(ts);
                *first_ts = (*first_ts).min(ts);
                self.push(
                    Stream::CompactWaking(cpu),
                    ts,
                    Event::Waking(Waking {
                        cpu,
                        waker: None,
                        pid: pid as i32,
                        prio: prio as i32,
                        target_cpu: tcpu as i32,
                        comm,
                        common_flags: flags_it.next().map(|f| f as u32),
                    }),
                )?;
            }
            errors |= ts_it.next().is_some()
                || pid_it.next().is_some()
                || tcpu_it.next().is_some()
                || prio_it.next().is_some()
                || comm_it.next().is_some();
        }
        if errors {
            self.stats.add(Stat::compact_sched_has_parse_errors, 1);
        }
        Ok(first)
    }

    /// One FtraceEvent; returns its timestamp if it was queued.
    fn event(
        &mut self,
        s: &mut Strings,
        cpu: u32,
        seq: u32,
        b: &[u8],
    ) -> Result<Option<i64>, PacketError> {
        let mut ts = None;
        let mut pid = 0i32;
        let mut flags = None;
        let mut body = None;
        for f in Fields::new(b) {
            match f? {
                (fe::TIMESTAMP, v) => ts = Some(v.as_u64() as i64),
                (fe::PID, v) => pid = v.as_i32(),
                (fe::COMMON_FLAGS, v) => flags = Some(v.as_u64() as u32),
                (id, Value::Bytes(p)) if body.is_none() => body = Some((id, p)),
                _ => {}
            }
        }
        let Some(ts) = ts else {
            self.stats.add(Stat::ftrace_bundle_tokenizer_errors, 1);
            return Ok(None);
        };
        let Some((id, p)) = body else {
            self.stats.add(Stat::ftrace_missing_event_id, 1);
            return Ok(None);
        };
        let event = match id {
            fe::SCHED_SWITCH => {
                let (mut prev_comm, mut prev_pid, mut prev_prio, mut prev_state) =
                    (&[][..], 0, 0, 0);
                let (mut next_comm, mut next_pid, mut next_prio) = (&[][..], 0, 0);
                for f in Fields::new(p) {
                    match f? {
                        (switch::PREV_COMM, Value::Bytes(c)) => prev_comm = c,
                        (switch::PREV_PID, v) => prev_pid = v.as_i32(),
                        (switch::PREV_PRIO, v) => prev_prio = v.as_i32(),
                        (switch::PREV_STATE, v) => prev_state = v.as_i64(),
                        (switch::NEXT_COMM, Value::Bytes(c)) => next_comm = c,
                        (switch::NEXT_PID, v) => next_pid = v.as_i32(),
                        (switch::NEXT_PRIO, v) => next_prio = v.as_i32(),
                        _ => {}
                    }
                }
                Event::Switch(Switch {
                    cpu,
                    prev_pid,
                    prev_prio,
                    prev_state: PrevState::new(prev_state),
                    prev_comm: s.intern_bytes(prev_comm),
                    next_pid,
                    next_prio,
                    next_comm: s.intern_bytes(next_comm),
                })
            }
            fe::SCHED_WAKING => {
                let (mut comm, mut wpid, mut prio, mut target_cpu) = (&[][..], 0, 0, 0);
                for f in Fields::new(p) {
                    match f? {
                        (waking::COMM, Value::Bytes(c)) => comm = c,
                        (waking::PID, v) => wpid = v.as_i32(),
                        (waking::PRIO, v) => prio = v.as_i32(),
                        (waking::TARGET_CPU, v) => target_cpu = v.as_i32(),
                        _ => {}
                    }
                }
                Event::Waking(Waking {
                    cpu,
                    waker: Some(pid),
                    pid: wpid,
                    prio,
                    target_cpu,
                    comm: s.intern_bytes(comm),
                    // Perfetto takes irq context only from compact wakings.
                    common_flags: None,
                })
            }
            fe::TASK_NEWTASK => {
                let (mut npid, mut comm, mut clone_flags) = (0, &[][..], 0);
                for f in Fields::new(p) {
                    match f? {
                        (newtask::PID, v) => npid = v.as_i32(),
                        (newtask::COMM, Value::Bytes(c)) => comm = c,
                        (newtask::CLONE_FLAGS, v) => clone_flags = v.as_u64(),
                        _ => {}
                    }
                }
                Event::NewTask(NewTask {
                    cpu,
                    src: pid,
                    pid: npid,
                    comm: s.intern_bytes(comm),
                    clone_flags,
                })
            }
            fe::TASK_RENAME => {
                let (mut rpid, mut comm) = (0, &[][..]);
                for f in Fields::new(p) {
                    match f? {
                        (rename::PID, v) => rpid = v.as_i32(),
                        (rename::NEWCOMM, Value::Bytes(c)) => comm = c,
                        _ => {}
                    }
                }
                Event::Rename(Rename {
                    cpu,
                    src: pid,
                    pid: rpid,
                    comm: s.intern_bytes(comm),
                })
            }
            fe::SCHED_PROCESS_FREE => {
                let mut fpid = 0;
                for f in Fields::new(p) {
                    if let (free::PID, v) = f? {
                        fpid = v.as_i32();
                    }
                }
                Event::Free(Free {
                    cpu,
                    src: pid,
                    pid: fpid,
                })
            }
            fe::SCHED_BLOCKED_REASON => {
                let (mut bpid, mut caller, mut io_wait) = (0, 0u64, false);
                for f in Fields::new(p) {
                    match f? {
                        (blocked::PID, v) => bpid = v.as_i32(),
                        (blocked::CALLER, v) => caller = v.as_u64(),
                        (blocked::IO_WAIT, v) => io_wait = v.as_u64() != 0,
                        _ => {}
                    }
                }
                let caller = self.symbols.get(&seq).and_then(|m| m.get(&caller)).copied();
                Event::BlockedReason(BlockedReason {
                    src: pid,
                    pid: bpid,
                    io_wait,
                    caller,
                })
            }
            fe::CPU_FREQUENCY | fe::CPU_IDLE => {
                // Both messages are (state, cpu_id) with the same numbers.
                let (mut value, mut cpu_id) = (0, 0);
                for f in Fields::new(p) {
                    match f? {
                        (cpu_frequency::STATE, v) => value = v.as_u64() as u32,
                        (cpu_frequency::CPU_ID, v) => cpu_id = v.as_u64() as u32,
                        _ => {}
                    }
                }
                let track = if id == fe::CPU_IDLE {
                    TrackKind::Idle
                } else {
                    TrackKind::Frequency
                };
                Event::CpuCounter(CpuCounter {
                    src: pid,
                    track,
                    cpu_id,
                    value,
                })
            }
            fe::CPU_FREQUENCY_LIMITS => {
                let (mut min, mut max, mut cpu_id) = (0, 0, 0);
                for f in Fields::new(p) {
                    match f? {
                        (limits::MIN_FREQ, v) => min = v.as_u64() as u32,
                        (limits::MAX_FREQ, v) => max = v.as_u64() as u32,
                        (limits::CPU_ID, v) => cpu_id = v.as_u64() as u32,
                        _ => {}
                    }
                }
                // Two samples at one time, max first as trace_processor pushes them.
                let max = Event::CpuCounter(CpuCounter {
                    src: pid,
                    track: TrackKind::MaxFrequencyLimit,
                    cpu_id,
                    value: max,
                });
                self.push(Stream::Ftrace(cpu), ts, max)?;
                Event::CpuCounter(CpuCounter {
                    src: pid,
                    track: TrackKind::MinFrequencyLimit,
                    cpu_id,
                    value: min,
                })
            }
            fe::IRQ_HANDLER_ENTRY | fe::IRQ_HANDLER_EXIT => {
                // Entry and exit number the IRQ alike; only entries name
                // it, only exits say what the handler returned.
                let (mut irq, mut name, mut ret) = (0, &[][..], 0);
                let entry = id == fe::IRQ_HANDLER_ENTRY;
                for f in Fields::new(p) {
                    match f? {
                        (irq_entry::IRQ, v) => irq = v.as_i32(),
                        (irq_entry::NAME, Value::Bytes(n)) if entry => name = n,
                        (irq_exit::RET, v) if !entry => ret = v.as_i32(),
                        _ => {}
                    }
                }
                Event::CpuSlice(CpuSlice {
                    cpu,
                    src: pid,
                    track: TrackKind::Irq,
                    number: irq,
                    name: entry.then(|| s.intern_bytes(name)),
                    ret,
                })
            }
            fe::SOFTIRQ_ENTRY | fe::SOFTIRQ_EXIT => {
                // Entry and exit carry the same field.
                let mut vec = 0u64;
                for f in Fields::new(p) {
                    if let (softirq_entry::VEC, v) = f? {
                        vec = v.as_u64();
                    }
                }
                let Some((number, action)) = i32::try_from(vec)
                    .ok()
                    .and_then(|v| Some((v, *SOFTIRQ_NAMES.get(usize::try_from(v).ok()?)?)))
                else {
                    self.stats.add(Stat::softirq_unknown_vec, 1);
                    return Ok(None);
                };
                Event::CpuSlice(CpuSlice {
                    cpu,
                    src: pid,
                    track: TrackKind::Softirq,
                    number,
                    name: (id == fe::SOFTIRQ_ENTRY).then(|| s.intern(action)),
                    ret: 0,
                })
            }
            fe::WORKQUEUE_EXECUTE_START | fe::WORKQUEUE_EXECUTE_END => {
                // Both messages are (work, function) with the same numbers.
                let (mut work, mut function) = (0, 0);
                for f in Fields::new(p) {
                    match f? {
                        (work_start::WORK, v) => work = v.as_u64(),
                        (work_start::FUNCTION, v) => function = v.as_u64(),
                        _ => {}
                    }
                }
                Event::Work(Work {
                    cpu,
                    src: pid,
                    start: id == fe::WORKQUEUE_EXECUTE_START,
                    work,
                    function: self.kernel_symbol(s, seq, function),
                })
            }
            fe::PRINT => {
                let mut buf = String::new();
                for f in Fields::new(p) {
                    if let (print::BUF, Value::Bytes(c)) = f? {
                        buf = String::from_utf8_lossy(c).into_owned();
                    }
                }
                Event::Print(Print {
                    cpu,
                    src: pid,
                    buf: buf.into(),
                })
            }
            fe::SCHED_PROCESS_EXEC => {
                let e: SchedProcessExecFtraceEvent = decode("sched_process_exec", p)?;
                let args =
                    json!({"filename": e.filename(), "pid": e.pid(), "old_pid": e.old_pid()});
                Event::Exec(Exec {
                    cpu,
                    src: pid,
                    pid: e.pid(),
                    filename: s.intern(e.filename()),
                    args: args.to_string().into(),
                })
            }
            fe::SCHED_MIGRATE_TASK => {
                let e: SchedMigrateTaskFtraceEvent = decode("sched_migrate_task", p)?;
                Event::Migrate(Migrate {
                    cpu,
                    src: pid,
                    pid: e.pid(),
                    comm: s.intern(e.comm()),
                    prio: e.prio(),
                    orig_cpu: e.orig_cpu(),
                    dest_cpu: e.dest_cpu(),
                    running: e.running.map(|r| r != 0),
                })
            }
            fe::SCHED_PROCESS_EXIT => {
                let e: SchedProcessExitFtraceEvent = decode("sched_process_exit", p)?;
                let args =
                    json!({"comm": e.comm(), "pid": e.pid(), "tgid": e.tgid(), "prio": e.prio()});
                Event::Exit(Exit {
                    cpu,
                    src: pid,
                    pid: e.pid(),
                    comm: s.intern(e.comm()),
                    args: args.to_string().into(),
                })
            }
            _ => {
                let (name, args) = raw_args(id, p, &|key| {
                    let name = self.symbols.get(&seq)?.get(&key)?;
                    Some(s.get(*name).to_string())
                })?;
                Event::Raw {
                    cpu,
                    src: pid,
                    name: s.intern(&name),
                    common_flags: flags,
                    args: args.into(),
                }
            }
        };
        self.push(Stream::Ftrace(cpu), ts, event)?;
        Ok(Some(ts))
    }

    /// The name of kernel address `key` (a symbolized field holds the iid of
    /// its name on the sequence), or, as trace_processor names an unknown
    /// one, the address in hex.
    fn kernel_symbol(&mut self, s: &mut Strings, seq: u32, key: u64) -> Str {
        if let Some(&name) = self.symbols.get(&seq).and_then(|m| m.get(&key)) {
            return name;
        }
        *self.unnamed_symbols.entry(key).or_insert_with(|| {
            // printf's "%#x": no prefix for 0.
            s.intern(&if key == 0 {
                "0".to_string()
            } else {
                format!("{key:#x}")
            })
        })
    }
}

/// Name and JSON arguments of an ftrace event that only lands in ftrace_event.
/// A kernel function field is its name where `symbol` knows it (the iid of
/// an interned kernel symbol), as trace_processor keeps it, else its value.
/// Unsigned 64-bit values are kept as trace_processor keeps them, as int64
/// (a kernel address is negative).
fn raw_args(
    id: u32,
    p: &[u8],
    symbol: &dyn Fn(u64) -> Option<String>,
) -> Result<(String, String), PacketError> {
    let wake = |e: &SchedWakeupFtraceEvent| json!({"comm": e.comm(), "pid": e.pid(), "prio": e.prio(), "success": e.success(), "target_cpu": e.target_cpu()});
    let function = |f: u64| symbol(f).map_or_else(|| json!(f as i64), |name| json!(name));
    let (name, args) = match id {
        fe::SCHED_WAKEUP => ("sched_wakeup", wake(&decode("sched_wakeup", p)?)),
        fe::SCHED_WAKEUP_NEW => {
            let e: SchedWakeupNewFtraceEvent = decode("sched_wakeup_new", p)?;
            let as_wakeup = SchedWakeupFtraceEvent {
                comm: e.comm,
                pid: e.pid,
                prio: e.prio,
                success: e.success,
                target_cpu: e.target_cpu,
            };
            ("sched_wakeup_new", wake(&as_wakeup))
        }
        fe::SCHED_PROCESS_FORK => {
            let e: SchedProcessForkFtraceEvent = decode("sched_process_fork", p)?;
            (
                "sched_process_fork",
                json!({"parent_comm": e.parent_comm(), "parent_pid": e.parent_pid(), "child_comm": e.child_comm(), "child_pid": e.child_pid()}),
            )
        }
        fe::WORKQUEUE_QUEUE_WORK => {
            let e: WorkqueueQueueWorkFtraceEvent = decode("workqueue_queue_work", p)?;
            (
                "workqueue_queue_work",
                json!({"work": e.work() as i64, "function": function(e.function()),
                    "workqueue": e.workqueue(), "req_cpu": e.req_cpu(), "cpu": e.cpu()}),
            )
        }
        fe::WORKQUEUE_ACTIVATE_WORK => {
            let e: WorkqueueActivateWorkFtraceEvent = decode("workqueue_activate_work", p)?;
            (
                "workqueue_activate_work",
                json!({"work": e.work() as i64, "function": function(e.function())}),
            )
        }
        fe::IPI_RAISE => {
            let e: IpiRaiseFtraceEvent = decode("ipi_raise", p)?;
            (
                "ipi_raise",
                json!({"target_cpus": e.target_cpus(), "reason": e.reason()}),
            )
        }
        fe::IPI_ENTRY => {
            let e: IpiEntryFtraceEvent = decode("ipi_entry", p)?;
            ("ipi_entry", json!({"reason": e.reason()}))
        }
        fe::IPI_EXIT => {
            let e: IpiExitFtraceEvent = decode("ipi_exit", p)?;
            ("ipi_exit", json!({"reason": e.reason()}))
        }
        fe::GENERIC => {
            // An event Perfetto has no message for: named by the event, its
            // fields by their names (unsigned values as trace_processor's
            // int64 args).
            let e: GenericFtraceEvent = decode("generic ftrace event", p)?;
            use crate::perfetto::proto::generic_ftrace_event::field::Value as V;
            let mut m = serde_json::Map::new();
            for f in &e.field {
                let v = match &f.value {
                    Some(V::StrValue(s)) => json!(s),
                    Some(V::IntValue(v)) => json!(v),
                    Some(V::UintValue(v)) => json!(*v as i64),
                    None => continue,
                };
                m.insert(f.name().to_string(), v);
            }
            return Ok((
                e.event_name().to_string(),
                serde_json::Value::Object(m).to_string(),
            ));
        }
        _ => {
            // An event this importer has no schema for: keep its fields by number.
            let mut m = serde_json::Map::new();
            for f in Fields::new(p) {
                let (field, v) = f?;
                let val = match v {
                    Value::Bytes(b) => match std::str::from_utf8(b) {
                        Ok(s) => json!(s),
                        Err(_) => json!(b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
                    },
                    other => json!(other.as_u64()),
                };
                m.insert(field.to_string(), val);
            }
            return Ok((
                format!("ftrace_event_{id}"),
                serde_json::Value::Object(m).to_string(),
            ));
        }
    };
    Ok((name.to_string(), args.to_string()))
}

fn process_stats(b: &[u8]) -> Result<Vec<StatsProcess>, PacketError> {
    let mut out = Vec::new();
    for f in Fields::new(b) {
        let (ps::PROCESSES, Value::Bytes(p)) = f? else {
            continue;
        };
        let mut proc_ = StatsProcess {
            pid: 0,
            has_counters: false,
            tids: Vec::new(),
        };
        for f in Fields::new(p) {
            match f? {
                (ps::process::PID, v) => proc_.pid = i64::from(v.as_i32()),
                (ps::process::THREADS, Value::Bytes(t)) => {
                    for f in Fields::new(t) {
                        if let (ps::thread::TID, v) = f? {
                            proc_.tids.push(i64::from(v.as_i32()));
                        }
                    }
                }
                // File descriptors and Chrome-only fields make no counters.
                (
                    ps::process::IS_PEAK_RSS_RESETTABLE
                    | ps::process::CHROME_PRIVATE_FOOTPRINT_KB
                    | ps::process::FDS,
                    _,
                ) => {}
                _ => proc_.has_counters = true,
            }
        }
        out.push(proc_);
    }
    Ok(out)
}

/// (major, minor) from utsname, as trace_processor reads it: only for Linux.
pub fn kernel_version(sysname: &str, release: &str) -> Option<(u32, u32)> {
    if sysname != "Linux" {
        return None;
    }
    let mut parts = release.splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}
