//! The per-shard encoder: recorder events -> per-CPU FtraceEventBundles.
//!
//! Switches and wakings go into CompactSched columns, which are kept as
//! ready-encoded packed varints; everything else is encoded at once as a full
//! FtraceEvent. A chunk is the set of bundles (plus LostEvents and
//! ProcessTree packets) buffered since the last flush.

use super::{ChunkScratch, MAX_CHUNK_BYTES, SHARD_SEQUENCE_BASE, TraceWriter};
use crate::model::event::{COMM_LEN, Event, FieldKind, FtraceLayout, Header, TaskId, comm_str};
use crate::model::ksyms::KernelSymbols;
use crate::model::stack::StackSample;
use crate::perfetto::proto::fields::{
    ftrace_event as fe, ftrace_event_bundle as bundle, ftrace_event_bundle::compact_sched as cs,
    generic_ftrace_event as generic, interned_data, interned_string,
    sched_process_exec_ftrace_event as exec, sched_process_fork_ftrace_event as fork,
    sched_process_free_ftrace_event as free, sched_switch_ftrace_event as switch,
    sched_waking_ftrace_event as waking, task_newtask_ftrace_event as newtask,
    task_rename_ftrace_event as rename, trace, trace_packet as packet,
};
use crate::perfetto::proto::schedlens::{LostEvents, SchedlensPacket, schedlens_packet};
use crate::perfetto::proto::{ProcessTree, TracePacket, process_tree, trace_packet};
use crate::perfetto::wire;
use crate::recorder::spool::Spool;
use prost::Message as _;
use rustc_hash::FxHashMap as FastMap;
use std::sync::Arc;

/// The encoder's own counters, for the end-of-trace summary (events are
/// counted by type where they are decoded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncoderStats {
    /// Lost events reported by `Lost`, indexed by cpu.
    pub lost_per_cpu: Vec<u64>,
    /// Events that named a task no TaskInfo announced (written with an empty comm).
    pub unknown_tasks: u64,
    /// Uncompressed chunk bytes handed to the writer.
    pub bytes_in: u64,
    /// Bytes this shard's chunks added to the file.
    pub bytes_out: u64,
    pub chunks: u64,
}

impl EncoderStats {
    /// Adds another shard's counters to these.
    pub fn merge(&mut self, other: &EncoderStats) {
        if self.lost_per_cpu.len() < other.lost_per_cpu.len() {
            self.lost_per_cpu.resize(other.lost_per_cpu.len(), 0);
        }
        for (a, b) in self.lost_per_cpu.iter_mut().zip(&other.lost_per_cpu) {
            *a += b;
        }
        self.unknown_tasks += other.unknown_tasks;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.chunks += other.chunks;
    }
}

/// CPU numbers beyond this are rejected: a corrupt record must not make the
/// encoder allocate per-CPU state for billions of CPUs.
const MAX_CPUS: u32 = crate::model::MAX_CPUS as u32;

/// Room kept below the chunk limit for the event that crosses the flush
/// threshold. The largest event is an exec: its file name is cut to PATH_MAX.
const CHUNK_MARGIN: usize = 8 * 1024;
const MAX_FILENAME: usize = 4096;

/// Upper bound of a bundle's framing (packet and bundle headers, cpu,
/// lost_events, compact_sched header and the twelve column headers).
const BUNDLE_OVERHEAD: usize = 96;

/// What the shard knows about a task.
struct Task {
    pid: i32,
    tgid: i32,
    /// NUL-padded, bytes after the first NUL zeroed so equal names compare equal.
    comm: [u8; COMM_LEN],
    /// Intern index of `comm` in the bundle whose generation is `intern_gen`
    /// (0: none), so a task's comm is hashed once per bundle, not per event.
    intern_gen: u32,
    intern_idx: u32,
}

fn clean_comm(comm: &[u8; COMM_LEN]) -> [u8; COMM_LEN] {
    let mut c = [0u8; COMM_LEN];
    let s = comm_str(comm);
    c[..s.len()].copy_from_slice(s);
    c
}

const EMPTY_COMM: [u8; COMM_LEN] = [0; COMM_LEN];

/// One CPU's open bundle and the reader-side state it must stay in step with.
#[derive(Default)]
struct CpuState {
    /// Generation of the open bundle; unique within the shard, never 0.
    generation: u32,
    /// The bundle has something to write (events, interned names or the lost flag).
    open: bool,
    lost: bool,
    /// Encoded `FtraceEventBundle.event` records.
    full: Vec<u8>,
    /// Encoded `intern_table` records and the index of each name.
    intern: Vec<u8>,
    intern_map: FastMap<[u8; COMM_LEN], u32>,
    n_intern: u32,
    /// Packed column bodies: switch timestamp deltas, prev_state, next_pid,
    /// next_prio, next_comm_index.
    switches: [Vec<u8>; 5],
    /// waking timestamp deltas, pid, target_cpu, prio, comm_index,
    /// common_flags.
    wakings: [Vec<u8>; 6],
    /// A waking of this bundle had no common_flags: the bundle leaves the
    /// column out (a reader pairs its values with the wakings by position).
    waking_flags_unknown: bool,
    switch_last_ts: u64,
    waking_last_ts: u64,
    /// A reader knows which task runs on this CPU: a switch was written since
    /// the start or the last loss. Until then compact events would be
    /// mis-paired (switch) or dropped (waking).
    synced: bool,
    running: TaskId,
    running_pid: i32,
}

/// CompactSched fields of the `switches` and `wakings` columns.
const SWITCH_COLUMNS: [u32; 5] = [
    cs::SWITCH_TIMESTAMP,
    cs::SWITCH_PREV_STATE,
    cs::SWITCH_NEXT_PID,
    cs::SWITCH_NEXT_PRIO,
    cs::SWITCH_NEXT_COMM_INDEX,
];
const WAKING_COLUMNS: [u32; 6] = [
    cs::WAKING_TIMESTAMP,
    cs::WAKING_PID,
    cs::WAKING_TARGET_CPU,
    cs::WAKING_PRIO,
    cs::WAKING_COMM_INDEX,
    cs::WAKING_COMMON_FLAGS,
];

impl CpuState {
    fn columns_len<const N: usize>(cols: &[Vec<u8>; N], fields: [u32; N]) -> usize {
        cols.iter()
            .zip(fields)
            .filter(|(c, _)| !c.is_empty())
            .map(|(c, f)| wire::tag_len(f) + wire::varint_len(c.len() as u64) + c.len())
            .sum()
    }

    /// Appends this bundle as one `Trace.packet` record (on packet sequence
    /// `sequence`, if any) and empties it, keeping every buffer's capacity.
    fn encode_into(&mut self, cpu: u32, sequence: Option<u32>, out: &mut Vec<u8>) {
        if self.waking_flags_unknown {
            self.wakings[5].clear();
        }
        let compact = self.intern.len()
            + Self::columns_len(&self.switches, SWITCH_COLUMNS)
            + Self::columns_len(&self.wakings, WAKING_COLUMNS);
        let mut bundle_len =
            wire::tag_len(bundle::CPU) + wire::varint_len(u64::from(cpu)) + self.full.len();
        if self.lost {
            bundle_len += wire::tag_len(bundle::LOST_EVENTS) + 1;
        }
        if compact > 0 {
            bundle_len +=
                wire::tag_len(bundle::COMPACT_SCHED) + wire::varint_len(compact as u64) + compact;
        }
        let mut packet_len =
            wire::tag_len(packet::FTRACE_EVENTS) + wire::varint_len(bundle_len as u64) + bundle_len;
        if let Some(seq) = sequence {
            packet_len +=
                wire::tag_len(packet::TRUSTED_PACKET_SEQUENCE_ID) + wire::varint_len(seq.into());
        }
        out.reserve(
            wire::tag_len(trace::PACKET) + wire::varint_len(packet_len as u64) + packet_len,
        );
        wire::put_tag(out, trace::PACKET, wire::WIRE_LEN);
        wire::put_varint(out, packet_len as u64);
        if let Some(seq) = sequence {
            wire::put_u64_field(out, packet::TRUSTED_PACKET_SEQUENCE_ID, seq.into());
        }
        wire::put_tag(out, packet::FTRACE_EVENTS, wire::WIRE_LEN);
        wire::put_varint(out, bundle_len as u64);
        wire::put_u64_field(out, bundle::CPU, u64::from(cpu));
        out.extend_from_slice(&self.full);
        if self.lost {
            wire::put_u64_field(out, bundle::LOST_EVENTS, 1);
        }
        if compact > 0 {
            wire::put_tag(out, bundle::COMPACT_SCHED, wire::WIRE_LEN);
            wire::put_varint(out, compact as u64);
            out.extend_from_slice(&self.intern);
            let switches = self.switches.iter().zip(SWITCH_COLUMNS);
            for (c, f) in switches.chain(self.wakings.iter().zip(WAKING_COLUMNS)) {
                if !c.is_empty() {
                    wire::put_tag(out, f, wire::WIRE_LEN);
                    wire::put_varint(out, c.len() as u64);
                    out.extend_from_slice(c);
                }
            }
        }
        self.reset();
    }

    fn reset(&mut self) {
        self.open = false;
        self.lost = false;
        self.full.clear();
        self.intern.clear();
        self.intern_map.clear();
        self.n_intern = 0;
        self.switches.iter_mut().for_each(Vec::clear);
        self.wakings.iter_mut().for_each(Vec::clear);
        self.waking_flags_unknown = false;
        self.switch_last_ts = 0;
        self.waking_last_ts = 0;
        self.generation = 0;
    }
}

/// Most a ProcessTree.Thread of `new_threads` adds to a chunk: tag+len,
/// two int32 fields.
const NEW_THREAD_BYTES: usize = 26;

/// TracePacket.sequence_flags: SEQ_INCREMENTAL_STATE_CLEARED.
const SEQ_INCREMENTAL_STATE_CLEARED: u64 = 1;

/// Kernel function names on the shard's packet sequence, as Perfetto's
/// symbolize_ksyms writes them: a [`FieldKind::KernelFunction`] field holds
/// the address, which is also the iid of its name in the sequence's
/// InternedData.kernel_symbols. Interning restarts with every chunk (the
/// chunk's first symbols clear the sequence's state), so a chunk read
/// without those before it (a flight recorder's ring drops the oldest)
/// still names its functions.
struct Symbols {
    table: Arc<KernelSymbols>,
    sequence: u32,
    /// Address -> the chunk it was last interned in.
    interned: FastMap<u64, u64>,
    /// Encoded `kernel_symbols` records not yet in a packet.
    pending: Vec<u8>,
    /// Chunks flushed so far.
    chunk: u64,
    /// This chunk's symbols cleared the sequence's state already.
    cleared: bool,
}

impl Symbols {
    /// Interns `addr`'s name in this chunk unless it is there; returns the
    /// bytes that adds.
    #[inline]
    fn intern(&mut self, addr: u64) -> usize {
        let chunk = self.chunk;
        if self.interned.insert(addr, chunk) == Some(chunk) {
            return 0;
        }
        let Some(name) = self.table.name(addr) else {
            return 0;
        };
        let before = self.pending.len();
        let at = wire::begin_len(&mut self.pending, interned_data::KERNEL_SYMBOLS);
        wire::put_u64_field(&mut self.pending, interned_string::IID, addr);
        wire::put_str_field(&mut self.pending, interned_string::STR, name.as_bytes());
        wire::end_len(&mut self.pending, at);
        self.pending.len() - before
    }

    /// Appends the pending names as one packet, before any bundle that uses them.
    fn put_pending(&mut self, out: &mut Vec<u8>) {
        if self.pending.is_empty() {
            return;
        }
        let packet = wire::begin_len(out, trace::PACKET);
        wire::put_u64_field(
            out,
            packet::TRUSTED_PACKET_SEQUENCE_ID,
            self.sequence.into(),
        );
        if !self.cleared {
            wire::put_u64_field(out, packet::SEQUENCE_FLAGS, SEQ_INCREMENTAL_STATE_CLEARED);
            self.cleared = true;
        }
        let data = wire::begin_len(out, packet::INTERNED_DATA);
        out.extend_from_slice(&self.pending);
        wire::end_len(out, data);
        wire::end_len(out, packet);
        self.pending.clear();
    }
}

/// Encodes the events of one ring-buffer shard (one consumer thread).
pub struct ShardEncoder {
    writer: Arc<TraceWriter>,
    tasks: FastMap<TaskId, Task>,
    cpus: Vec<CpuState>,
    next_gen: u32,
    /// Finished bundles and other packets of the chunk being built.
    payload: Vec<u8>,
    /// Upper bound of the chunk's encoded size if flushed now.
    buffered: usize,
    flush_at: usize,
    /// Threads announced since the last flush whose fork the chunk does not
    /// hold (tid, tgid), and the first announcement's time: each of them
    /// existed by then.
    new_threads: Vec<(i32, i32)>,
    new_threads_ts: u64,
    scratch: ChunkScratch,
    stats: EncoderStats,
    /// Stack events, written at the end (None: not recording stacks).
    stack_spool: Option<Spool>,
    /// None: kernel addresses are written as they are, unnamed.
    symbols: Option<Symbols>,
    /// Scratch for a cpumask's CPU list.
    cpu_list: String,
}

impl ShardEncoder {
    pub fn new(writer: Arc<TraceWriter>) -> ShardEncoder {
        ShardEncoder {
            writer,
            tasks: FastMap::default(),
            cpus: Vec::new(),
            next_gen: 1,
            payload: Vec::new(),
            buffered: 0,
            flush_at: MAX_CHUNK_BYTES - CHUNK_MARGIN,
            new_threads: Vec::new(),
            new_threads_ts: 0,
            scratch: ChunkScratch::default(),
            stats: EncoderStats::default(),
            stack_spool: None,
            symbols: None,
            cpu_list: String::new(),
        }
    }

    /// Names kernel addresses from `table`, as shard `shard` of the trace
    /// (each shard's bundles are a packet sequence of their own).
    pub fn with_kernel_symbols(mut self, shard: usize, table: Arc<KernelSymbols>) -> ShardEncoder {
        self.symbols = Some(Symbols {
            table,
            sequence: SHARD_SEQUENCE_BASE + shard as u32,
            interned: FastMap::default(),
            pending: Vec::new(),
            chunk: 0,
            cleared: false,
        });
        self
    }

    /// Spools the stack events into `spool`.
    pub fn with_stack_spool(mut self, spool: Spool) -> ShardEncoder {
        self.stack_spool = Some(spool);
        self
    }

    /// The stack events spooled so far.
    pub fn take_stack_spool(&mut self) -> Option<Spool> {
        self.stack_spool.take()
    }

    /// Lowers the uncompressed chunk size (clamped to 16 KiB..=512 KiB).
    /// Smaller chunks lose less on a crash and compress worse.
    pub fn set_chunk_limit(&mut self, bytes: usize) {
        self.flush_at = bytes.clamp(2 * CHUNK_MARGIN, MAX_CHUNK_BYTES) - CHUNK_MARGIN;
    }

    /// This shard's counters, exact as of the last push.
    pub fn stats(&self) -> &EncoderStats {
        &self.stats
    }

    /// Tasks in the shard's table (its memory use is proportional).
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    fn cpu_index(&mut self, cpu: u32) -> anyhow::Result<usize> {
        anyhow::ensure!(cpu < MAX_CPUS, "event for cpu {cpu}: out of range");
        let i = cpu as usize;
        if i >= self.cpus.len() {
            self.cpus.resize_with(i + 1, CpuState::default);
        }
        Ok(i)
    }

    /// Opens the CPU's bundle if needed and counts its framing.
    #[inline]
    fn open(&mut self, i: usize) {
        let c = &mut self.cpus[i];
        if !c.open {
            c.open = true;
            c.generation = self.next_gen;
            // Generation 0 means "no cached index"; skip it on wrap-around.
            self.next_gen = self.next_gen.checked_add(1).unwrap_or(1);
            self.buffered += BUNDLE_OVERHEAD;
        }
    }

    /// Hot path: appends one event to its CPU's bundle.
    pub fn push(&mut self, h: &Header, ev: &Event<'_>) -> anyhow::Result<()> {
        let i = self.cpu_index(h.cpu)?;
        match *ev {
            Event::Switch {
                prev,
                prev_pid,
                prev_prio,
                prev_state,
                next,
                next_pid,
                next_prio,
            } => {
                self.open(i);
                self.ensure_idle(next, next_pid, h.cpu);
                let c = &self.cpus[i];
                if c.synced && c.running == prev {
                    let idx = self.intern_task(i, next);
                    let c = &mut self.cpus[i];
                    let delta = h.ts.wrapping_sub(c.switch_last_ts);
                    c.switch_last_ts = h.ts;
                    let n = wire::put_varint(&mut c.switches[0], delta)
                        + wire::put_varint(&mut c.switches[1], prev_state as u64)
                        + wire::put_i32(&mut c.switches[2], next_pid)
                        + wire::put_i32(&mut c.switches[3], next_prio)
                        + wire::put_varint(&mut c.switches[4], u64::from(idx));
                    self.buffered += n;
                } else {
                    self.ensure_idle(prev, prev_pid, h.cpu);
                    let prev_comm = self.comm_of(prev);
                    let next_comm = self.comm_of(next);
                    self.full_event(i, h.ts, h.pid, fe::SCHED_SWITCH, |b| {
                        wire::put_str_field(b, switch::PREV_COMM, comm_str(&prev_comm));
                        wire::put_i32_field(b, switch::PREV_PID, prev_pid);
                        wire::put_i32_field(b, switch::PREV_PRIO, prev_prio);
                        wire::put_u64_field(b, switch::PREV_STATE, prev_state as u64);
                        wire::put_str_field(b, switch::NEXT_COMM, comm_str(&next_comm));
                        wire::put_i32_field(b, switch::NEXT_PID, next_pid);
                        wire::put_i32_field(b, switch::NEXT_PRIO, next_prio);
                    });
                }
                let c = &mut self.cpus[i];
                c.synced = true;
                c.running = next;
                c.running_pid = next_pid;
            }
            Event::Waking {
                wakee,
                pid,
                prio,
                target_cpu,
                common_flags,
            } => {
                self.open(i);
                let c = &self.cpus[i];
                // A compact waking's waker is whoever a reader thinks runs on
                // this CPU; write it in full when that is not the header's task.
                if c.synced && c.running_pid == h.pid {
                    let idx = self.intern_task(i, wakee);
                    let c = &mut self.cpus[i];
                    let delta = h.ts.wrapping_sub(c.waking_last_ts);
                    c.waking_last_ts = h.ts;
                    let n = wire::put_varint(&mut c.wakings[0], delta)
                        + wire::put_i32(&mut c.wakings[1], pid)
                        + wire::put_i32(&mut c.wakings[2], target_cpu)
                        + wire::put_i32(&mut c.wakings[3], prio)
                        + wire::put_varint(&mut c.wakings[4], u64::from(idx))
                        + wire::put_varint(&mut c.wakings[5], common_flags.map_or(0, u64::from));
                    c.waking_flags_unknown |= common_flags.is_none();
                    self.buffered += n;
                } else {
                    let comm = self.comm_of(wakee);
                    self.full_event(i, h.ts, h.pid, fe::SCHED_WAKING, |b| {
                        wire::put_str_field(b, waking::COMM, comm_str(&comm));
                        wire::put_i32_field(b, waking::PID, pid);
                        wire::put_i32_field(b, waking::PRIO, prio);
                        wire::put_i32_field(b, waking::TARGET_CPU, target_cpu);
                    });
                }
            }
            Event::TaskInfo {
                task,
                pid,
                tgid,
                comm,
                ..
            } => {
                let comm = clean_comm(comm);
                match self.tasks.get_mut(&task) {
                    Some(t) => {
                        t.pid = pid;
                        t.tgid = tgid;
                        if t.comm != comm {
                            t.comm = comm;
                            t.intern_gen = 0;
                        }
                    }
                    None => {
                        self.tasks.insert(
                            task,
                            Task {
                                pid,
                                tgid,
                                comm,
                                intern_gen: 0,
                                intern_idx: 0,
                            },
                        );
                        if pid != tgid {
                            if self.new_threads.is_empty() {
                                self.new_threads_ts = h.ts;
                            }
                            self.new_threads.push((pid, tgid));
                            self.buffered += NEW_THREAD_BYTES;
                        }
                    }
                }
            }
            Event::Fork {
                parent,
                parent_pid,
                child_pid,
                clone_flags,
                ..
            } => {
                self.open(i);
                // The child was announced just before: its task_newtask
                // ties it to its process, at the right time. Listed in the
                // chunk's ProcessTree too, it would precede its own fork.
                if let Some(k) = self
                    .new_threads
                    .iter()
                    .rposition(|&(tid, _)| tid == child_pid)
                {
                    self.new_threads.remove(k);
                    self.buffered -= NEW_THREAD_BYTES;
                }
                let comm = self.comm_of(parent);
                // The kernel fires task_newtask inside copy_process, before
                // sched_process_fork; Perfetto builds the thread from it.
                self.full_event(i, h.ts, parent_pid, fe::TASK_NEWTASK, |b| {
                    wire::put_i32_field(b, newtask::PID, child_pid);
                    wire::put_str_field(b, newtask::COMM, comm_str(&comm));
                    wire::put_u64_field(b, newtask::CLONE_FLAGS, clone_flags);
                });
                self.full_event(i, h.ts, h.pid, fe::SCHED_PROCESS_FORK, |b| {
                    wire::put_str_field(b, fork::PARENT_COMM, comm_str(&comm));
                    wire::put_i32_field(b, fork::PARENT_PID, parent_pid);
                    wire::put_str_field(b, fork::CHILD_COMM, comm_str(&comm));
                    wire::put_i32_field(b, fork::CHILD_PID, child_pid);
                });
            }
            Event::Exec {
                task,
                pid,
                old_pid,
                comm,
                filename,
            } => {
                self.open(i);
                let filename = &filename[..filename.len().min(MAX_FILENAME)];
                self.full_event(i, h.ts, h.pid, fe::SCHED_PROCESS_EXEC, |b| {
                    wire::put_str_field(b, exec::FILENAME, filename);
                    wire::put_i32_field(b, exec::PID, pid);
                    wire::put_i32_field(b, exec::OLD_PID, old_pid);
                });
                if let Some(t) = self.tasks.get_mut(&task) {
                    // de_thread() gives the exec'ing thread the leader's pid.
                    t.pid = pid;
                    t.tgid = pid;
                    t.comm = clean_comm(comm);
                    t.intern_gen = 0;
                }
            }
            Event::Free { task, pid, prio } => {
                self.open(i);
                let comm = self.comm_of(task);
                self.full_event(i, h.ts, h.pid, fe::SCHED_PROCESS_FREE, |b| {
                    wire::put_str_field(b, free::COMM, comm_str(&comm));
                    wire::put_i32_field(b, free::PID, pid);
                    wire::put_i32_field(b, free::PRIO, prio);
                });
                self.tasks.remove(&task);
            }
            Event::Forget { task } => {
                self.tasks.remove(&task);
            }
            Event::Rename { task, pid, newcomm } => {
                self.open(i);
                let old = self.comm_of(task);
                let new = clean_comm(newcomm);
                self.full_event(i, h.ts, h.pid, fe::TASK_RENAME, |b| {
                    wire::put_i32_field(b, rename::PID, pid);
                    wire::put_str_field(b, rename::OLDCOMM, comm_str(&old));
                    wire::put_str_field(b, rename::NEWCOMM, comm_str(&new));
                });
                if let Some(t) = self.tasks.get_mut(&task) {
                    t.comm = new;
                    t.intern_gen = 0;
                }
            }
            Event::Lost { count } => self.lost(i, h, count)?,
            Event::Stack {
                tgid,
                kind,
                kernel,
                user,
            } => {
                if let Some(spool) = &mut self.stack_spool {
                    spool.push(StackSample {
                        ts: h.ts,
                        tid: h.pid,
                        tgid,
                        kernel,
                        user,
                        cpu: h.cpu as u16,
                        kind,
                    })?;
                }
            }
            Event::Ftrace { layout, body } => {
                self.open(i);
                self.ftrace_event(i, h, layout, body);
            }
        }
        if self.buffered >= self.flush_at {
            self.flush()?;
        }
        Ok(())
    }

    /// Ends the CPU's bundle, starts one flagged lost_events, and makes the
    /// next switch carry its prev fields again.
    fn lost(&mut self, i: usize, h: &Header, count: u64) -> anyhow::Result<()> {
        if self.stats.lost_per_cpu.len() <= i {
            self.stats.lost_per_cpu.resize(i + 1, 0);
        }
        self.stats.lost_per_cpu[i] = self.stats.lost_per_cpu[i].saturating_add(count);
        if self.cpus[i].open {
            self.encode_bundle(i);
        }
        self.open(i);
        let c = &mut self.cpus[i];
        c.lost = true;
        c.synced = false;
        let packet = TracePacket {
            timestamp: Some(h.ts),
            data: Some(trace_packet::Data::Schedlens(SchedlensPacket {
                data: Some(schedlens_packet::Data::LostEvents(LostEvents {
                    cpu: Some(h.cpu),
                    count: Some(count),
                })),
            })),
            ..Default::default()
        };
        let before = self.payload.len();
        put_packet(&mut self.payload, &packet)?;
        self.buffered += self.payload.len() - before;
        Ok(())
    }

    /// The idle task is never announced by the BPF side; name it the way
    /// the kernel does so it does not count as unknown.
    #[inline]
    fn ensure_idle(&mut self, task: TaskId, pid: i32, cpu: u32) {
        if pid == 0 && !self.tasks.contains_key(&task) {
            let mut comm = [0u8; COMM_LEN];
            let name = format!("swapper/{cpu}");
            let n = name.len().min(COMM_LEN - 1);
            comm[..n].copy_from_slice(&name.as_bytes()[..n]);
            self.tasks.insert(
                task,
                Task {
                    pid: 0,
                    tgid: 0,
                    comm,
                    intern_gen: 0,
                    intern_idx: 0,
                },
            );
        }
    }

    /// The task's comm, or an empty one (counted) if it was never announced.
    #[inline]
    fn comm_of(&mut self, task: TaskId) -> [u8; COMM_LEN] {
        match self.tasks.get(&task) {
            Some(t) => t.comm,
            None => {
                self.stats.unknown_tasks += 1;
                EMPTY_COMM
            }
        }
    }

    /// Index of the task's comm in CPU `i`'s intern table, adding it if new.
    #[inline]
    fn intern_task(&mut self, i: usize, task: TaskId) -> u32 {
        let c = &mut self.cpus[i];
        let t = self.tasks.get_mut(&task);
        let comm = match &t {
            Some(t) if t.intern_gen == c.generation => return t.intern_idx,
            Some(t) => t.comm,
            None => {
                self.stats.unknown_tasks += 1;
                EMPTY_COMM
            }
        };
        let idx = match c.intern_map.get(&comm) {
            Some(&idx) => idx,
            None => {
                let idx = c.n_intern;
                c.n_intern += 1;
                c.intern_map.insert(comm, idx);
                let before = c.intern.len();
                wire::put_str_field(&mut c.intern, cs::INTERN_TABLE, comm_str(&comm));
                self.buffered += c.intern.len() - before;
                idx
            }
        };
        if let Some(t) = t {
            t.intern_gen = c.generation;
            t.intern_idx = idx;
        }
        idx
    }

    /// Appends one full FtraceEvent whose payload `body` writes into field `field`.
    #[inline]
    fn full_event(
        &mut self,
        i: usize,
        ts: u64,
        pid: i32,
        field: u32,
        body: impl FnOnce(&mut Vec<u8>),
    ) {
        let buf = &mut self.cpus[i].full;
        let before = buf.len();
        let marks = begin_full_event(buf, ts, pid, field);
        body(buf);
        end_full_event(buf, marks);
        self.buffered += buf.len() - before;
    }

    /// Appends an [`Event::Ftrace`] as its layout says.
    fn ftrace_event(&mut self, i: usize, h: &Header, layout: &FtraceLayout, body: &[u8]) {
        use crate::perfetto::proto::fields::generic_ftrace_event::field as gf;
        let is_generic = layout.event == fe::GENERIC;
        let buf = &mut self.cpus[i].full;
        let before = buf.len();
        let marks = begin_full_event(buf, h.ts, h.pid, layout.event);
        if is_generic {
            wire::put_str_field(buf, generic::EVENT_NAME, layout.name.as_bytes());
        }
        for f in layout.fields {
            // A generic event's field is a Field message: its name, then its
            // value in the member of its type.
            let (field_at, [int, uint, string]) = if is_generic {
                let at = wire::begin_len(buf, generic::FIELD);
                wire::put_str_field(buf, gf::NAME, f.name.as_bytes());
                (Some(at), [gf::INT_VALUE, gf::UINT_VALUE, gf::STR_VALUE])
            } else {
                (None, [f.number; 3])
            };
            let value = f.read(body);
            match f.kind {
                // read() widened the value as its varint carries it.
                FieldKind::I32 => wire::put_u64_field(buf, int, value),
                FieldKind::U32 | FieldKind::U64 => wire::put_u64_field(buf, uint, value),
                FieldKind::TaskComm => {
                    let comm = match self.tasks.get(&value) {
                        Some(t) => &t.comm,
                        None => {
                            self.stats.unknown_tasks += 1;
                            &EMPTY_COMM
                        }
                    };
                    wire::put_str_field(buf, string, comm_str(comm));
                }
                FieldKind::Name => wire::put_str_field(buf, string, f.name_bytes(body)),
                FieldKind::KernelFunction if is_generic => {
                    let name = self.symbols.as_ref().and_then(|s| s.table.name(value));
                    match name.filter(|_| value != 0) {
                        Some(name) => wire::put_str_field(buf, string, name.as_bytes()),
                        None => wire::put_u64_field(buf, uint, value),
                    }
                }
                FieldKind::KernelFunction => {
                    wire::put_u64_field(buf, uint, value);
                    if let Some(sym) = &mut self.symbols {
                        self.buffered += sym.intern(value);
                    }
                }
                FieldKind::CpuMask => {
                    f.cpu_list(body, &mut self.cpu_list);
                    wire::put_str_field(buf, string, self.cpu_list.as_bytes());
                }
            }
            if let Some(at) = field_at {
                wire::end_len(buf, at);
            }
        }
        end_full_event(buf, marks);
        self.buffered += buf.len() - before;
    }

    /// Appends CPU `i`'s open bundle to the chunk, after the kernel names
    /// its events use.
    fn encode_bundle(&mut self, i: usize) {
        let sequence = self.symbols.as_mut().map(|sym| {
            sym.put_pending(&mut self.payload);
            sym.sequence
        });
        // i < MAX_CPUS, checked when the state was created.
        self.cpus[i].encode_into(i as u32, sequence, &mut self.payload);
    }

    /// Writes everything buffered as one chunk.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        for i in 0..self.cpus.len() {
            if self.cpus[i].open {
                self.encode_bundle(i);
            }
        }
        if !self.new_threads.is_empty() {
            let packet = TracePacket {
                timestamp: Some(self.new_threads_ts),
                data: Some(trace_packet::Data::ProcessTree(ProcessTree {
                    threads: self
                        .new_threads
                        .iter()
                        .map(|&(tid, tgid)| process_tree::Thread {
                            tid: Some(tid),
                            tgid: Some(tgid),
                            name: None,
                        })
                        .collect(),
                    ..Default::default()
                })),
                ..Default::default()
            };
            put_packet(&mut self.payload, &packet)?;
            self.new_threads.clear();
        }
        let result = self.writer.append_chunk(&self.payload, &mut self.scratch);
        if !self.payload.is_empty() {
            self.stats.bytes_in += self.payload.len() as u64;
            self.stats.chunks += 1;
        }
        self.payload.clear();
        self.buffered = 0;
        if let Some(sym) = &mut self.symbols {
            sym.chunk += 1;
            sym.cleared = false;
        }
        // A table that shrank far below its peak (a fork storm ended) gives
        // the memory back.
        if self.tasks.capacity() > 4096 && self.tasks.len() * 4 < self.tasks.capacity() {
            self.tasks.shrink_to(self.tasks.len() * 2);
        }
        self.stats.bytes_out += *result.as_ref().unwrap_or(&0);
        result.map(|_| ())
    }
}

/// Starts a `FtraceEventBundle.event` record with its timestamp and pid and
/// opens its payload field `field`; returns the length placeholders.
#[inline]
fn begin_full_event(buf: &mut Vec<u8>, ts: u64, pid: i32, field: u32) -> [usize; 2] {
    let event = wire::begin_len(buf, bundle::EVENT);
    wire::put_u64_field(buf, fe::TIMESTAMP, ts);
    // FtraceEvent.pid is uint32; a tid is never negative.
    wire::put_u64_field(buf, fe::PID, u64::from(pid as u32));
    [event, wire::begin_len(buf, field)]
}

#[inline]
fn end_full_event(buf: &mut Vec<u8>, [event, payload]: [usize; 2]) {
    wire::end_len(buf, payload);
    wire::end_len(buf, event);
}

/// Appends `packet` as a `Trace.packet` record.
fn put_packet(out: &mut Vec<u8>, packet: &TracePacket) -> anyhow::Result<()> {
    wire::put_tag(out, trace::PACKET, wire::WIRE_LEN);
    packet.encode_length_delimited(out)?;
    Ok(())
}
