//! The recording's stacks into the trace. User stacks are normalized while
//! the recording runs: when a shard's consumer first sees a distinct
//! (process, user stack id), [`UserStacks`] has the shard's normalizing
//! thread read the frames from the BPF stack map and normalize them with
//! blazesym against the process's
//! mappings as they are then (each address to its ELF file, with its build
//! id, and the file offset in it), keeping only that. A process that exits
//! before the recording ends, or execs another image, keeps the frames it
//! had: at the end they are named per file from the file's symbols and DWARF
//! by file offset, which needs the file, not the process.
//!
//! At the end, each stack id's kernel frames are read from the map and named
//! through kallsyms, and everything is written in Perfetto's own form: per
//! stack kind, one packet sequence whose first packet holds the
//! TracePacketDefaults (the kind's timebase, see [`StackKind::tracepoint`])
//! and the interned mappings, frames, function names and callstacks,
//! followed by one PerfSample per stack event.
//!
//! An off-CPU sample sits at its sched_switch; its weight, how long the task
//! then stayed off the CPU, is the thread_state that starts there (the
//! importer's `off_cpu_sample`). A frame that does not resolve keeps its
//! mapping and offset, without a function name.

use crate::model::event::{Event, Header};
use crate::model::stack::{StackKind, StackSample};
use crate::perfetto::proto::{
    Callstack, Frame, InternedData, InternedString, Mapping, PerfSample, PerfSampleDefaults,
    TracePacket, TracePacketDefaults, perf_events, profiling, trace_packet,
};
use crate::perfetto::writer::{STACK_SEQUENCE_BASE, TraceWriter};
use crate::recorder::bpf::{self, StackCounters};
use crate::recorder::consumer::EventSink;
use anyhow::Context;
use blazesym::normalize::{Normalizer, UserMeta};
use blazesym::symbolize::source::{Elf, Kernel, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use libbpf_rs::MapHandle;
use rustc_hash::{FxHashMap, FxHashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// TracePacket.sequence_flags.
const SEQ_INCREMENTAL_STATE_CLEARED: u32 = 1;
const SEQ_NEEDS_INCREMENTAL_STATE: u32 = 2;
/// Samples per `write_packets` call: bounds the memory of the encoded batch.
const SAMPLES_PER_BATCH: usize = 8192;
/// The mapping of kernel frames (as perf names it) and of user frames whose
/// file could not be found (their rel_pc is then the absolute address).
const KERNEL_MAPPING: &str = "[kernel.kallsyms]";
const UNKNOWN_MAPPING: &str = "[unknown]";
/// Distinct (process, user stack) pairs a shard normalizes while recording,
/// at most (each up to 127 frames of 16 bytes: at most 32 MiB a shard, and
/// about 1 KiB for a typical stack of 60 frames). Past it, the rest are
/// normalized at the end, which names only those of processes still alive.
const MAX_USER_STACKS_PER_SHARD: usize = 16 * 1024;

/// What the summary and the trace's StackStats say about the stacks.
#[derive(Debug, Default)]
pub struct StackSummary {
    /// Stack events by kind ([`StackKind::ALL`] order).
    pub samples: [u64; 3],
    /// Distinct callstacks written.
    pub callstacks: usize,
    /// Distinct frames written, and how many of them got a function name.
    pub frames: usize,
    pub frames_named: usize,
    /// What BPF counted: stacks it could not take, and reuses.
    pub counters: StackCounters,
    /// Stack ids whose frames were gone from the map when read.
    pub unreadable: u64,
    /// Distinct (process, user stack) pairs, and of them those whose
    /// process was gone when first seen, and those normalized only at the
    /// end (past [`MAX_USER_STACKS_PER_SHARD`]).
    pub user_stacks: usize,
    pub user_stacks_gone: usize,
    pub user_stacks_late: usize,
    /// Normalizing user stacks while recording (on the shards' normalizing
    /// threads).
    pub normalize_time: Duration,
    /// Naming the frames at the end.
    pub symbolize_time: Duration,
}

impl StackSummary {
    /// Stack halves BPF could not take or store, all reasons.
    pub fn lost(&self) -> u64 {
        let c = &self.counters;
        c.map_full + c.collided + c.no_user + c.dropped + self.unreadable
    }

    /// The trace's StackStats.
    pub fn to_proto(&self) -> crate::perfetto::proto::schedlens::StackStats {
        use crate::perfetto::proto::schedlens::{StackStats, recorder_stats::Counter};
        StackStats {
            taken: StackKind::ALL
                .iter()
                .zip(self.samples)
                .map(|(k, n)| Counter {
                    name: Some(k.name().to_string()),
                    value: Some(n),
                })
                .collect(),
            lost_map_full: Some(self.counters.map_full),
            lost_collision: Some(self.counters.collided),
            lost_no_user_stack: Some(self.counters.no_user),
            lost_ring_full: Some(self.counters.dropped),
            unreadable: Some(self.unreadable),
            reused: Some(self.counters.reused),
            frames: Some(self.frames as u64),
            frames_named: Some(self.frames_named as u64),
            user_stacks: Some(self.user_stacks as u64),
            user_stacks_gone: Some(self.user_stacks_gone as u64),
            symbolize_ns: Some(self.symbolize_time.as_nanos() as u64),
        }
    }
}

/// A user address once normalized: the file it lies in (an index in
/// [`Modules`]) and the offset in that file; [`NO_MODULE`] (in no file, or
/// its process was gone) keeps the address itself.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct UserFrame {
    module: u32,
    offset: u64,
}

const NO_MODULE: u32 = u32::MAX;

/// The ELF files user frames lie in, each once.
#[derive(Default)]
struct Modules {
    list: Vec<Module>,
    ids: FxHashMap<Module, u32>,
}

impl Modules {
    fn id(&mut self, module: Module) -> u32 {
        if let Some(&id) = self.ids.get(&module) {
            return id;
        }
        let id = self.list.len() as u32;
        self.list.push(module.clone());
        self.ids.insert(module, id);
        id
    }
}

/// Normalizes `addrs`, a user stack of process `tgid`, against the process's
/// mappings as they are now. None when the process (or its memory) is gone.
fn normalize(
    normalizer: &Normalizer,
    modules: &mut Modules,
    tgid: i32,
    addrs: &[u64],
) -> Option<Box<[UserFrame]>> {
    let pid = u32::try_from(tgid).ok().filter(|&p| p != 0)?;
    let normalized = normalizer.normalize_user_addrs(pid.into(), addrs).ok()?;
    // Each file's module id once, not once per frame.
    let mut module_of: FxHashMap<usize, u32> = FxHashMap::default();
    let frames = normalized
        .outputs
        .iter()
        .zip(addrs)
        .map(|(&(offset, meta), &addr)| match normalized.meta.get(meta) {
            Some(UserMeta::Elf(elf)) => UserFrame {
                module: *module_of.entry(meta).or_insert_with(|| {
                    modules.id(Module {
                        path: elf.path.clone(),
                        build_id: elf.build_id.as_ref().map(|b| b.to_vec()),
                    })
                }),
                offset,
            },
            _ => UserFrame {
                module: NO_MODULE,
                offset: addr,
            },
        })
        .collect();
    Some(frames)
}

/// One shard's user stacks, normalized soon after its consumer first sees
/// each distinct (process, user stack id): while the process most likely
/// still runs (its stack was taken about a ring poll, 50 ms, ago), and before
/// an exec can change its image. A process that exits before that is counted
/// as gone. The consumer only dedupes and queues each new pair; a thread of
/// the shard's own reads the frames and normalizes them (reads of
/// /proc/PID/maps and of build ids, up to a millisecond a stack), so a burst
/// of new processes never stops the ring from being drained. Pairs the queue
/// has no room for are normalized at the end.
pub struct UserStacks {
    queued: FxHashSet<(i32, u32)>,
    queue: std::sync::mpsc::SyncSender<(i32, u32)>,
    worker: std::thread::JoinHandle<NormalizedStacks>,
}

/// What a shard's normalizing thread found.
#[derive(Default)]
struct NormalizedStacks {
    modules: Modules,
    /// None: the process was gone when its pair came up (not retried at the
    /// end, when its pid may be another process's).
    stacks: FxHashMap<(i32, u32), Option<Box<[UserFrame]>>>,
    elapsed: Duration,
}

/// New pairs waiting for the normalizing thread, at most.
const NORMALIZE_QUEUE: usize = 4096;

impl UserStacks {
    pub fn new(map: MapHandle) -> anyhow::Result<UserStacks> {
        let (queue, pairs) = std::sync::mpsc::sync_channel::<(i32, u32)>(NORMALIZE_QUEUE);
        let worker = std::thread::Builder::new()
            .name("schedlens-normalize".into())
            .spawn(move || {
                let normalizer = new_normalizer();
                let mut out = NormalizedStacks::default();
                for (tgid, id) in pairs {
                    let started = Instant::now();
                    let frames = bpf::read_stack(&map, id)
                        .and_then(|addrs| normalize(&normalizer, &mut out.modules, tgid, &addrs));
                    out.stacks.insert((tgid, id), frames);
                    out.elapsed += started.elapsed();
                }
                out
            })
            .map_err(|e| anyhow::anyhow!("starting a stack-normalizing thread: {e}"))?;
        Ok(UserStacks {
            queued: FxHashSet::default(),
            queue,
            worker,
        })
    }

    fn see(&mut self, tgid: i32, id: u32) {
        if self.queued.len() >= MAX_USER_STACKS_PER_SHARD || self.queued.contains(&(tgid, id)) {
            return;
        }
        // Full: left for the end, like pairs past the bound.
        if self.queue.try_send((tgid, id)).is_ok() {
            self.queued.insert((tgid, id));
        }
    }

    /// Waits for the queued pairs to be normalized. A thread that panicked
    /// normalized nothing: its pairs are done at the end.
    fn finish(self) -> NormalizedStacks {
        drop(self.queue);
        self.worker.join().unwrap_or_default()
    }
}

/// A shard's event sink that hands each stack event's user stack to its
/// [`UserStacks`] before the event goes on to `inner`.
pub struct WithUserStacks<S> {
    pub inner: S,
    pub user_stacks: Option<UserStacks>,
}

impl<S: EventSink> EventSink for WithUserStacks<S> {
    fn push(&mut self, h: &Header, ev: &Event<'_>) -> anyhow::Result<()> {
        if let (
            Some(u),
            Event::Stack {
                tgid,
                user: Some(id),
                ..
            },
        ) = (&mut self.user_stacks, ev)
        {
            u.see(*tgid, *id);
        }
        self.inner.push(h, ev)
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.inner.flush()
    }
}

fn new_normalizer() -> Normalizer {
    Normalizer::builder()
        .enable_build_ids(true)
        // A file's build id is read once, not at every stack in it.
        .enable_build_id_caching(true)
        // 6.11+: the VMAs of the stack's addresses by ioctl instead of
        // parsing the whole of /proc/PID/maps.
        .enable_procmap_query(blazesym::helper::is_procmap_query_supported().unwrap_or(false))
        .build()
}

/// Where a user address lies, after normalization.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Module {
    path: PathBuf,
    build_id: Option<Vec<u8>>,
}

/// An address to name: `adjusted` when it is a return address
/// ([`lookup_offset`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Pc {
    addr: u64,
    adjusted: bool,
}

impl Pc {
    fn lookup(self) -> u64 {
        lookup_offset(self.addr, self.adjusted)
    }
}

/// What a sample's callstack depends on: its process (user addresses are
/// per process), its two stack ids, and whether it is a CPU sample.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct StackKey {
    tgid: i32,
    user: Option<u32>,
    kernel: Option<u32>,
    cpu_sample: bool,
}

impl StackKey {
    fn of(s: &StackSample) -> StackKey {
        StackKey {
            tgid: s.tgid,
            user: s.user,
            kernel: s.kernel,
            cpu_sample: s.kind == StackKind::Cpu,
        }
    }
}

/// A resolved frame: module (None: the kernel), offset in it, name.
#[derive(Clone)]
struct Resolved {
    module: Option<Module>,
    rel_pc: u64,
    name: Option<String>,
}

/// Writes the samples that each call of `samples` reads (in time order; it
/// is read twice, so a sample is never held longer than its batch) to
/// `writer` as described above. `read_stack` gives a stack id's frames,
/// innermost first (None if the id is not in the map); `early` are the
/// shards' user stacks normalized while recording. A sample `samples`
/// fails to read stops the first reading, before anything is written.
pub fn write<I>(
    writer: &TraceWriter,
    samples: impl Fn() -> I,
    counters: StackCounters,
    early: Vec<UserStacks>,
    read_stack: impl Fn(u32) -> Option<Vec<u64>>,
) -> anyhow::Result<StackSummary>
where
    I: Iterator<Item = anyhow::Result<StackSample>>,
{
    let started = Instant::now();
    let mut summary = StackSummary {
        counters,
        ..StackSummary::default()
    };
    // A hot stack is in millions of samples: its addresses are gathered
    // once. In order of first sample, so callstacks are numbered as they
    // appear.
    let mut distinct: Vec<StackKey> = Vec::new();
    let mut seen: FxHashSet<StackKey> = FxHashSet::default();
    for s in samples() {
        let s = s?;
        if let Some(i) = StackKind::ALL.iter().position(|&k| k == s.kind) {
            summary.samples[i] += 1;
        }
        let key = StackKey::of(&s);
        if seen.insert(key) {
            distinct.push(key);
        }
    }
    drop(seen);
    // The shards' normalized stacks, their modules numbered anew in one table.
    let mut modules = Modules::default();
    let mut user_stacks: FxHashMap<(i32, u32), Option<Box<[UserFrame]>>> = FxHashMap::default();
    for shard in early.into_iter().map(UserStacks::finish) {
        summary.normalize_time += shard.elapsed;
        let renumbered: Vec<u32> = shard
            .modules
            .list
            .into_iter()
            .map(|m| modules.id(m))
            .collect();
        // A pair two shards saw: the first normalization that found the process.
        for (key, frames) in shard.stacks {
            let slot = user_stacks.entry(key).or_default();
            if let (None, Some(mut frames)) = (&slot, frames) {
                for f in frames.iter_mut().filter(|f| f.module != NO_MODULE) {
                    f.module = renumbered[f.module as usize];
                }
                *slot = Some(frames);
            }
        }
    }
    if distinct.is_empty() {
        return Ok(summary);
    }
    let mut stacks: FxHashMap<u32, Vec<u64>> = FxHashMap::default();
    for id in distinct.iter().flat_map(|k| [k.kernel, k.user]).flatten() {
        if let std::collections::hash_map::Entry::Vacant(slot) = stacks.entry(id) {
            match read_stack(id) {
                Some(frames) => {
                    slot.insert(frames);
                }
                None => summary.unreadable += 1,
            }
        }
    }
    // Pairs the shards did not normalize (past their bound): now, which
    // finds only the processes still alive.
    let normalizer = new_normalizer();
    for k in &distinct {
        let Some(id) = k.user else { continue };
        if let std::collections::hash_map::Entry::Vacant(slot) = user_stacks.entry((k.tgid, id)) {
            summary.user_stacks_late += 1;
            let frames = stacks
                .get(&id)
                .and_then(|addrs| normalize(&normalizer, &mut modules, k.tgid, addrs));
            slot.insert(frames);
        }
    }
    summary.user_stacks = user_stacks.len();
    summary.user_stacks_gone = user_stacks.values().filter(|f| f.is_none()).count();

    // A CPU sample's innermost frame is where the CPU was, not a return
    // address: `leaf_exact` for the stack that holds it.
    let pcs = |key: &StackKey, id: Option<u32>, leaf_exact: bool| -> Vec<Pc> {
        let frames = id
            .and_then(|id| stacks.get(&id))
            .map_or(&[][..], |f| &f[..]);
        frames
            .iter()
            .enumerate()
            .map(|(i, &addr)| Pc {
                addr,
                adjusted: !(leaf_exact && i == 0 && key.cpu_sample),
            })
            .collect()
    };
    // A user stack's frames, innermost first, with whether each is a return
    // address: normalized, or (its process gone) bare addresses.
    let user_frames = |key: &StackKey| -> Vec<(UserFrame, bool)> {
        let pcs = pcs(key, key.user, key.kernel.is_none());
        let normalized = key
            .user
            .and_then(|id| user_stacks.get(&(key.tgid, id)))
            .and_then(Option::as_deref);
        match normalized {
            Some(frames) => frames
                .iter()
                .zip(&pcs)
                .map(|(&f, pc)| (f, pc.adjusted))
                .collect(),
            None => pcs
                .iter()
                .map(|pc| {
                    let f = UserFrame {
                        module: NO_MODULE,
                        offset: pc.addr,
                    };
                    (f, pc.adjusted)
                })
                .collect(),
        }
    };

    // Every distinct kernel address, and every user file offset by file.
    let mut kernel_pcs: FxHashSet<Pc> = FxHashSet::default();
    let mut offsets: FxHashMap<u32, FxHashSet<u64>> = FxHashMap::default();
    for k in &distinct {
        kernel_pcs.extend(pcs(k, k.kernel, true));
        for (f, adjusted) in user_frames(k) {
            if f.module != NO_MODULE {
                offsets
                    .entry(f.module)
                    .or_default()
                    .insert(lookup_offset(f.offset, adjusted));
            }
        }
    }
    let symbolizer = Symbolizer::new();
    let kernel = resolve_kernel(&symbolizer, &kernel_pcs);
    let user_names = resolve_user(&symbolizer, &modules, offsets);
    summary.symbolize_time = started.elapsed();

    let mut interner = Interner::default();
    let mut callstack_of: FxHashMap<StackKey, u64> = FxHashMap::default();
    for key in distinct {
        // Outermost first: the user stack from its root, then the kernel's.
        let user_frames = user_frames(&key);
        let mut kernel_frames = pcs(&key, key.kernel, true);
        if !key.cpu_sample {
            let ours = recorder_frames(&kernel_frames, &kernel);
            kernel_frames.drain(..ours);
        }
        let mut frame_ids = Vec::with_capacity(user_frames.len() + kernel_frames.len());
        for &(f, adjusted) in user_frames.iter().rev() {
            let r = Resolved {
                module: Some(match modules.list.get(f.module as usize) {
                    Some(m) => m.clone(),
                    None => unknown_module(),
                }),
                rel_pc: f.offset,
                name: user_names
                    .get(&(f.module, lookup_offset(f.offset, adjusted)))
                    .cloned(),
            };
            frame_ids.push(interner.frame(&r));
        }
        for pc in kernel_frames.iter().rev() {
            let r = Resolved {
                module: None,
                rel_pc: pc.addr,
                name: kernel.get(pc).cloned().flatten(),
            };
            frame_ids.push(interner.frame(&r));
        }
        let iid = if frame_ids.is_empty() {
            0
        } else {
            interner.callstack(frame_ids)
        };
        callstack_of.insert(key, iid);
    }
    summary.callstacks = interner.data.callstacks.len();
    summary.frames = interner.data.frames.len();
    summary.frames_named = interner.named_frames;

    // One sequence per kind; its header goes before its first sample, so a
    // kind without any has no sequence.
    let mut kinds: Vec<(u32, Option<TracePacket>, Vec<TracePacket>)> = StackKind::ALL
        .iter()
        .map(|&kind| {
            let sequence = STACK_SEQUENCE_BASE + u32::from(kind.bit());
            let header = TracePacket {
                optional_trusted_packet_sequence_id: Some(
                    trace_packet::OptionalTrustedPacketSequenceId::TrustedPacketSequenceId(
                        sequence,
                    ),
                ),
                sequence_flags: Some(SEQ_INCREMENTAL_STATE_CLEARED),
                first_packet_on_sequence: Some(true),
                trace_packet_defaults: Some(defaults(kind)),
                interned_data: Some(interner.data.clone()),
                ..TracePacket::default()
            };
            (sequence, Some(header), Vec::new())
        })
        .collect();
    for s in samples() {
        let s = s?;
        let Some(i) = StackKind::ALL.iter().position(|&k| k == s.kind) else {
            continue;
        };
        let (sequence, header, batch) = &mut kinds[i];
        if let Some(h) = header.take() {
            batch.reserve(SAMPLES_PER_BATCH);
            batch.push(h);
        }
        let iid = callstack_of
            .get(&StackKey::of(&s))
            .context("the second reading of the stack samples has one the first did not")?;
        batch.push(sample_packet(*sequence, &s, *iid));
        if batch.len() >= SAMPLES_PER_BATCH {
            writer.write_packets(batch)?;
            batch.clear();
        }
    }
    for (_, _, batch) in kinds.iter().filter(|(_, _, b)| !b.is_empty()) {
        writer.write_packets(batch)?;
    }
    Ok(summary)
}

/// Kernel functions through which a tracepoint runs our BPF program: the
/// innermost frames of a stack the program takes at its tracepoint (as in
/// `schedule;__schedule;__traceiter_sched_switch;bpf_trace_run4;bpf_prog_..`).
/// They are the recorder, not the task, and would end every off-CPU and
/// waker stack, so they are left out of the trace.
const RECORDER_FRAME_PREFIXES: &[&str] = &[
    "bpf_prog_",
    "bpf_trace_run",
    "__traceiter_",
    "__bpf_trace_",
    "bpf_trampoline_",
];

/// How many of `frames` (innermost first) belong to the recorder: up to the
/// outermost of the first few that [`RECORDER_FRAME_PREFIXES`] names.
fn recorder_frames(frames: &[Pc], names: &FxHashMap<Pc, Option<String>>) -> usize {
    /// The recorder's frames are at most this deep (tracepoint, its
    /// iterator, the BPF dispatcher or trampoline, the program).
    const DEPTH: usize = 6;
    let ours = |pc: &Pc| {
        names.get(pc).and_then(Option::as_deref).is_some_and(|n| {
            RECORDER_FRAME_PREFIXES
                .iter()
                .any(|prefix| n.starts_with(prefix))
        })
    };
    frames
        .iter()
        .take(DEPTH)
        .rposition(ours)
        .map_or(0, |i| i + 1)
}

fn sample_packet(sequence: u32, s: &StackSample, callstack: u64) -> TracePacket {
    TracePacket {
        timestamp: Some(s.ts),
        optional_trusted_packet_sequence_id: Some(
            trace_packet::OptionalTrustedPacketSequenceId::TrustedPacketSequenceId(sequence),
        ),
        sequence_flags: Some(SEQ_NEEDS_INCREMENTAL_STATE),
        data: Some(trace_packet::Data::PerfSample(PerfSample {
            cpu: Some(u32::from(s.cpu)),
            pid: Some(s.tgid as u32),
            tid: Some(s.tid as u32),
            callstack_iid: (callstack != 0).then_some(callstack),
            cpu_mode: Some(if s.kernel.is_some() {
                profiling::CpuMode::ModeKernel
            } else {
                profiling::CpuMode::ModeUser
            } as i32),
            ..PerfSample::default()
        })),
        ..TracePacket::default()
    }
}

/// The kind's timebase: a tracepoint's for off-CPU and waker stacks, the CPU
/// clock's (at its rate, unknown here, so left out) for CPU samples.
fn defaults(kind: StackKind) -> TracePacketDefaults {
    let event = match kind.tracepoint() {
        Some(name) => perf_events::timebase::Event::Tracepoint(perf_events::Tracepoint {
            name: Some(name.into()),
        }),
        None => perf_events::timebase::Event::Counter(perf_events::Counter::SwCpuClock as i32),
    };
    TracePacketDefaults {
        timestamp_clock_id: None,
        perf_sample_defaults: Some(PerfSampleDefaults {
            timebase: Some(perf_events::Timebase {
                interval: None,
                event: Some(event),
                name: Some(kind.timebase_name().into()),
            }),
        }),
    }
}

fn unknown_module() -> Module {
    Module {
        path: PathBuf::from(UNKNOWN_MAPPING),
        build_id: None,
    }
}

/// Names kernel addresses from kallsyms (None: no symbol covers it).
fn resolve_kernel(symbolizer: &Symbolizer, pcs: &FxHashSet<Pc>) -> FxHashMap<Pc, Option<String>> {
    let pcs: Vec<Pc> = pcs.iter().copied().collect();
    let addrs: Vec<u64> = pcs.iter().map(|pc| pc.lookup()).collect();
    let src = Source::Kernel(Kernel::default());
    let names = symbolizer
        .symbolize(&src, Input::AbsAddr(&addrs))
        .unwrap_or_default();
    pcs.into_iter()
        .enumerate()
        .map(|(i, pc)| (pc, names.get(i).and_then(sym_name)))
        .collect()
}

fn sym_name(s: &Symbolized<'_>) -> Option<String> {
    match s {
        Symbolized::Sym(sym) => Some(sym.name.to_string()),
        Symbolized::Unknown(_) => None,
    }
}

/// Where a frame's name is looked up: a return address one byte earlier,
/// so a call at a function's end names the caller.
fn lookup_offset(offset: u64, adjusted: bool) -> u64 {
    if adjusted {
        offset.saturating_sub(1)
    } else {
        offset
    }
}

/// Names file offsets, per ELF file, from its symbols and DWARF: (module,
/// offset) -> name, for those that resolved.
fn resolve_user(
    symbolizer: &Symbolizer,
    modules: &Modules,
    offsets: FxHashMap<u32, FxHashSet<u64>>,
) -> FxHashMap<(u32, u64), String> {
    let mut names = FxHashMap::default();
    for (module, set) in offsets {
        let Some(m) = modules.list.get(module as usize) else {
            continue;
        };
        let mut offsets: Vec<u64> = set.into_iter().collect();
        offsets.sort_unstable();
        // A file whose debug info cannot be read (an unsupported compression,
        // a corrupt section) still has its symbol tables: names from those.
        let found = symbolizer
            .symbolize(&Source::Elf(Elf::new(&m.path)), Input::FileOffset(&offsets))
            .or_else(|_| {
                let mut symbols_only = Elf::new(&m.path);
                symbols_only.debug_syms = false;
                symbolizer.symbolize(&Source::Elf(symbols_only), Input::FileOffset(&offsets))
            });
        let Ok(found) = found else {
            continue;
        };
        for (&offset, sym) in offsets.iter().zip(&found) {
            if let Some(name) = sym_name(sym) {
                names.insert((module, offset), name);
            }
        }
    }
    names
}

/// Builds the interned data: each mapping, function name, frame and
/// callstack once, iids from 1.
#[derive(Default)]
struct Interner {
    data: InternedData,
    names: FxHashMap<String, u64>,
    paths: FxHashMap<String, u64>,
    build_ids: FxHashMap<Vec<u8>, u64>,
    mappings: FxHashMap<Option<Module>, u64>,
    frames: FxHashMap<(u64, u64, u64), u64>,
    callstacks: FxHashMap<Vec<u64>, u64>,
    named_frames: usize,
}

fn intern_string(
    table: &mut FxHashMap<String, u64>,
    out: &mut Vec<InternedString>,
    s: &str,
) -> u64 {
    if let Some(&iid) = table.get(s) {
        return iid;
    }
    let iid = out.len() as u64 + 1;
    out.push(InternedString {
        iid: Some(iid),
        str: Some(s.as_bytes().to_vec()),
    });
    table.insert(s.to_string(), iid);
    iid
}

impl Interner {
    fn mapping(&mut self, module: &Option<Module>) -> u64 {
        if let Some(&iid) = self.mappings.get(module) {
            return iid;
        }
        let path = match module {
            None => KERNEL_MAPPING.to_string(),
            Some(m) => m.path.to_string_lossy().into_owned(),
        };
        let path_iid = intern_string(&mut self.paths, &mut self.data.mapping_paths, &path);
        let build_id = match module.as_ref().and_then(|m| m.build_id.as_ref()) {
            Some(b) => Some(match self.build_ids.get(b) {
                Some(&iid) => iid,
                None => {
                    let iid = self.data.build_ids.len() as u64 + 1;
                    self.data.build_ids.push(InternedString {
                        iid: Some(iid),
                        // Perfetto's interned build ids are the raw bytes.
                        str: Some(b.clone()),
                    });
                    self.build_ids.insert(b.clone(), iid);
                    iid
                }
            }),
            None => None,
        };
        let iid = self.data.mappings.len() as u64 + 1;
        self.data.mappings.push(Mapping {
            iid: Some(iid),
            build_id,
            path_string_ids: vec![path_iid],
            ..Mapping::default()
        });
        self.mappings.insert(module.clone(), iid);
        iid
    }

    fn frame(&mut self, r: &Resolved) -> u64 {
        let mapping = self.mapping(&r.module);
        let name = r.name.as_deref().map_or(0, |n| {
            intern_string(&mut self.names, &mut self.data.function_names, n)
        });
        let key = (mapping, r.rel_pc, name);
        if let Some(&iid) = self.frames.get(&key) {
            return iid;
        }
        let iid = self.data.frames.len() as u64 + 1;
        self.data.frames.push(Frame {
            iid: Some(iid),
            function_name_id: (name != 0).then_some(name),
            mapping_id: Some(mapping),
            rel_pc: Some(r.rel_pc),
        });
        self.named_frames += usize::from(name != 0);
        self.frames.insert(key, iid);
        iid
    }

    fn callstack(&mut self, frame_ids: Vec<u64>) -> u64 {
        if let Some(&iid) = self.callstacks.get(&frame_ids) {
            return iid;
        }
        let iid = self.data.callstacks.len() as u64 + 1;
        self.data.callstacks.push(Callstack {
            iid: Some(iid),
            frame_ids: frame_ids.clone(),
        });
        self.callstacks.insert(frame_ids, iid);
        iid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_function_to_find() -> u64 {
        std::hint::black_box(7)
    }

    /// Normalized while the process runs, named later from the file alone.
    #[test]
    fn a_normalized_address_is_named_from_its_file() {
        let addr = a_function_to_find as *const () as u64;
        let normalizer = new_normalizer();
        let mut modules = Modules::default();
        let pid = std::process::id() as i32;
        let frames = normalize(&normalizer, &mut modules, pid, &[addr, 1]).unwrap();
        let exe = std::env::current_exe().unwrap();
        assert_eq!(modules.list.len(), 1);
        assert_eq!(modules.list[0].path, exe);
        assert_eq!(frames[0].module, 0);
        // Address 1 is in no file: it keeps its address.
        assert_eq!((frames[1].module, frames[1].offset), (NO_MODULE, 1));
        let offsets = FxHashMap::from_iter([(0, FxHashSet::from_iter([frames[0].offset]))]);
        let names = resolve_user(&Symbolizer::new(), &modules, offsets);
        let name = &names[&(0, frames[0].offset)];
        assert!(name.ends_with("a_function_to_find"), "{name}");
    }

    #[test]
    fn a_gone_process_normalizes_to_nothing() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        let mut modules = Modules::default();
        assert!(normalize(&new_normalizer(), &mut modules, pid, &[0x1000]).is_none());
        assert!(normalize(&new_normalizer(), &mut modules, 0, &[0x1000]).is_none());
    }
}
