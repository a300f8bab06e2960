//! The recording's stacks into the trace, at its end: each stack id's frames
//! are read from the BPF stack map, symbolized with blazesym (kernel frames
//! through kallsyms, user frames normalized to a file offset in their ELF
//! file, with its build id, then named from its symbols and DWARF) and
//! written in Perfetto's own form: per stack kind, one packet sequence whose
//! first packet holds the TracePacketDefaults (the kind's timebase, see
//! [`StackKind::tracepoint`]) and the interned mappings, frames, function
//! names and callstacks, followed by one PerfSample per stack event.
//!
//! An off-CPU sample sits at its sched_switch; its weight, how long the task
//! then stayed off the CPU, is the thread_state that starts there (the
//! importer's `off_cpu_sample`). A frame that does not resolve keeps its
//! mapping and offset, without a function name.

use crate::model::stack::{StackKind, StackSample};
use crate::perfetto::proto::{
    Callstack, Frame, InternedData, InternedString, Mapping, PerfSample, PerfSampleDefaults,
    TracePacket, TracePacketDefaults, perf_events, profiling, trace_packet,
};
use crate::perfetto::writer::{STACK_SEQUENCE_BASE, TraceWriter};
use blazesym::normalize::{Normalizer, UserMeta};
use blazesym::symbolize::source::{Elf, Kernel, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
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

/// What the summary says about the stacks.
#[derive(Debug, Default)]
pub struct StackSummary {
    /// Stack events by kind ([`StackKind::ALL`] order).
    pub samples: [u64; 3],
    /// Distinct callstacks written.
    pub callstacks: usize,
    /// Distinct frames written, and how many of them got a function name.
    pub frames: usize,
    pub frames_named: usize,
    /// Stacks the BPF stack map could not take (full, or a hash collision).
    pub misses: u64,
    /// Stack ids whose frames were gone from the map when read.
    pub unreadable: u64,
    pub symbolize_time: Duration,
}

/// Where a user address lies, after normalization.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Module {
    path: PathBuf,
    build_id: Option<Vec<u8>>,
}

/// An address to name: `adjusted` when it is a return address, looked up
/// one byte earlier so a call at a function's end names the caller.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Pc {
    addr: u64,
    adjusted: bool,
}

impl Pc {
    fn lookup(self) -> u64 {
        if self.adjusted {
            self.addr.saturating_sub(1)
        } else {
            self.addr
        }
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

/// Writes `samples` to `writer` as described above. `read_stack` gives a
/// stack id's frames, innermost first (None if the id is not in the map).
pub fn write(
    writer: &TraceWriter,
    samples: &[StackSample],
    misses: u64,
    read_stack: impl Fn(u32) -> Option<Vec<u64>>,
) -> anyhow::Result<StackSummary> {
    let started = Instant::now();
    let mut summary = StackSummary {
        misses,
        ..StackSummary::default()
    };
    for s in samples {
        if let Some(i) = StackKind::ALL.iter().position(|&k| k == s.kind) {
            summary.samples[i] += 1;
        }
    }
    if samples.is_empty() {
        return Ok(summary);
    }
    let mut stacks: FxHashMap<u32, Vec<u64>> = FxHashMap::default();
    for id in samples.iter().flat_map(|s| [s.kernel, s.user]).flatten() {
        if let std::collections::hash_map::Entry::Vacant(slot) = stacks.entry(id) {
            match read_stack(id) {
                Some(frames) => {
                    slot.insert(frames);
                }
                None => summary.unreadable += 1,
            }
        }
    }
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

    // A hot stack is in millions of samples: its addresses are gathered once.
    let distinct: FxHashSet<StackKey> = samples.iter().map(StackKey::of).collect();
    // Every distinct address, kernel ones together, user ones per process.
    let mut kernel_pcs: FxHashSet<Pc> = FxHashSet::default();
    let mut user_pcs: FxHashMap<i32, FxHashSet<Pc>> = FxHashMap::default();
    for k in &distinct {
        kernel_pcs.extend(pcs(k, k.kernel, true));
        user_pcs
            .entry(k.tgid)
            .or_default()
            .extend(pcs(k, k.user, k.kernel.is_none()));
    }
    let symbolizer = Symbolizer::new();
    let kernel = resolve_kernel(&symbolizer, &kernel_pcs);
    let normalizer = Normalizer::builder().enable_build_ids(true).build();
    let mut user: FxHashMap<(i32, Pc), Resolved> = FxHashMap::default();
    for (tgid, set) in &user_pcs {
        for (pc, r) in resolve_user(&symbolizer, &normalizer, *tgid, set) {
            user.insert((*tgid, pc), r);
        }
    }
    summary.symbolize_time = started.elapsed();

    let mut interner = Interner::default();
    let mut callstack_of: FxHashMap<StackKey, u64> = FxHashMap::default();
    let mut sample_stacks = Vec::with_capacity(samples.len());
    for key in samples.iter().map(StackKey::of) {
        let iid = match callstack_of.get(&key) {
            Some(&iid) => iid,
            None => {
                // Outermost first: the user stack from its root, then the kernel's.
                let user_frames = pcs(&key, key.user, key.kernel.is_none());
                let mut kernel_frames = pcs(&key, key.kernel, true);
                if !key.cpu_sample {
                    let ours = recorder_frames(&kernel_frames, &kernel);
                    kernel_frames.drain(..ours);
                }
                let mut frame_ids = Vec::with_capacity(user_frames.len() + kernel_frames.len());
                for pc in user_frames.iter().rev() {
                    let r = user.get(&(key.tgid, *pc)).cloned().unwrap_or(Resolved {
                        module: Some(unknown_module()),
                        rel_pc: pc.addr,
                        name: None,
                    });
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
                iid
            }
        };
        sample_stacks.push(iid);
    }
    summary.callstacks = interner.data.callstacks.len();
    summary.frames = interner.data.frames.len();
    summary.frames_named = interner.named_frames;

    for kind in StackKind::ALL {
        let sequence = STACK_SEQUENCE_BASE + u32::from(kind.bit());
        // Sent before the kind's first sample, so a kind without any has no sequence.
        let mut header = Some(TracePacket {
            optional_trusted_packet_sequence_id: Some(
                trace_packet::OptionalTrustedPacketSequenceId::TrustedPacketSequenceId(sequence),
            ),
            sequence_flags: Some(SEQ_INCREMENTAL_STATE_CLEARED),
            first_packet_on_sequence: Some(true),
            trace_packet_defaults: Some(defaults(kind)),
            interned_data: Some(interner.data.clone()),
            ..TracePacket::default()
        });
        let mut batch = Vec::with_capacity(SAMPLES_PER_BATCH);
        let of_kind = samples
            .iter()
            .zip(&sample_stacks)
            .filter(|(s, _)| s.kind == kind);
        for (s, &iid) in of_kind {
            if let Some(h) = header.take() {
                batch.push(h);
            }
            batch.push(sample_packet(sequence, s, iid));
            if batch.len() >= SAMPLES_PER_BATCH {
                writer.write_packets(&batch)?;
                batch.clear();
            }
        }
        if !batch.is_empty() {
            writer.write_packets(&batch)?;
        }
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

/// Normalizes a process's addresses (from /proc/TGID/maps: the process must
/// still exist) to file offsets in their ELF files and names them. Addresses
/// of a gone process, or outside any file, stay in the unknown mapping.
fn resolve_user(
    symbolizer: &Symbolizer,
    normalizer: &Normalizer,
    tgid: i32,
    pcs: &FxHashSet<Pc>,
) -> Vec<(Pc, Resolved)> {
    let mut pcs: Vec<Pc> = pcs.iter().copied().collect();
    pcs.sort_unstable_by_key(|pc| (pc.addr, pc.adjusted));
    let Ok(pid) = u32::try_from(tgid) else {
        return Vec::new();
    };
    if pid == 0 || pcs.is_empty() {
        return Vec::new();
    }
    let addrs: Vec<u64> = pcs.iter().map(|pc| pc.addr).collect();
    let Ok(normalized) = normalizer.normalize_user_addrs(pid.into(), &addrs) else {
        return Vec::new();
    };
    // Per ELF file: the offsets to name, with their place in `pcs`.
    let mut by_file: FxHashMap<usize, Vec<usize>> = FxHashMap::default();
    let mut out: Vec<(Pc, Resolved)> = Vec::with_capacity(pcs.len());
    for (i, (&(offset, meta), pc)) in normalized.outputs.iter().zip(&pcs).enumerate() {
        let module = match normalized.meta.get(meta) {
            Some(UserMeta::Elf(elf)) => {
                by_file.entry(meta).or_default().push(i);
                Module {
                    path: elf.path.clone(),
                    build_id: elf.build_id.as_ref().map(|b| b.to_vec()),
                }
            }
            _ => unknown_module(),
        };
        let known = module.path != std::path::Path::new(UNKNOWN_MAPPING);
        out.push((
            *pc,
            Resolved {
                module: Some(module),
                rel_pc: if known { offset } else { pc.addr },
                name: None,
            },
        ));
    }
    for (meta, idxs) in by_file {
        let Some(UserMeta::Elf(elf)) = normalized.meta.get(meta) else {
            continue;
        };
        let offsets: Vec<u64> = idxs
            .iter()
            .map(|&i| {
                let (pc, r) = &out[i];
                if pc.adjusted {
                    r.rel_pc.saturating_sub(1)
                } else {
                    r.rel_pc
                }
            })
            .collect();
        let src = Source::Elf(Elf::new(&elf.path));
        let Ok(names) = symbolizer.symbolize(&src, Input::FileOffset(&offsets)) else {
            continue;
        };
        for (&i, name) in idxs.iter().zip(&names) {
            out[i].1.name = sym_name(name);
        }
    }
    out
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
