//! Stack samples (PerfSample packets) and the interned data they point into,
//! as trace_processor imports them: per packet sequence, the interned
//! mappings, frames, function names and callstacks (valid until the sequence
//! clears its incremental state), resolved into the trace-wide tables
//! stack_profile_mapping, stack_profile_frame and stack_profile_callsite (a
//! call tree: each callstack's frames from the outermost in, sharing the
//! prefixes other callstacks have). The samples go through the sorter
//! ([`super::events::Event::PerfSample`]) so they meet the thread tracker at
//! their time; the sample's stack kind is its sequence's, named by the
//! timebase of its TracePacketDefaults ([`StackKind::from_timebase_name`]).
//!
//! Hostile input cannot make it loop or grow without bound: an iid that no
//! interned entry defines, or a callstack deeper than [`MAX_DEPTH`], is
//! counted (`stack_profile_*` stats) and the entry or sample left without it.

use super::events::PerfSampleEvent;
use crate::analyzer::stats::{Stat, Stats};
use crate::analyzer::strings::{FastMap, Str, Strings};
use crate::model::stack::StackKind;
use crate::perfetto::proto::{InternedData, PerfSample, TracePacketDefaults, perf_events};

/// Frames one callstack may have (the kernel walks at most 127 per half).
pub const MAX_DEPTH: usize = 1024;

/// A mapping row, before writing.
pub struct MappingRow {
    pub build_id: Str,
    pub name: Str,
}

/// A frame row.
pub struct FrameRow {
    pub name: Option<Str>,
    pub mapping: u32,
    pub rel_pc: i64,
}

/// A callsite row.
pub struct CallsiteRow {
    pub depth: u32,
    pub parent: Option<u32>,
    pub frame: u32,
}

/// What one sequence has interned (iid -> id in the trace-wide tables).
#[derive(Default)]
struct Sequence {
    /// The session (index in `sessions`) its samples belong to.
    session: Option<u32>,
    names: FastMap<u64, Str>,
    paths: FastMap<u64, Str>,
    build_ids: FastMap<u64, Str>,
    mappings: FastMap<u64, u32>,
    frames: FastMap<u64, u32>,
    /// Callstack iid -> its innermost callsite (None: an empty callstack).
    callstacks: FastMap<u64, Option<u32>>,
}

#[derive(Default)]
pub struct StackImport {
    sequences: FastMap<u32, Sequence>,
    pub mappings: Vec<MappingRow>,
    mapping_of: FastMap<(Str, Str), u32>,
    pub frames: Vec<FrameRow>,
    frame_of: FastMap<(u32, i64, Option<Str>), u32>,
    pub callsites: Vec<CallsiteRow>,
    callsite_of: FastMap<(Option<u32>, u32), u32>,
    /// perf_session rows: the stack kind of each (None: not a schedlens kind).
    pub sessions: Vec<Option<StackKind>>,
}

impl StackImport {
    /// The sequence's incremental state was cleared: its iids mean nothing now.
    pub fn clear(&mut self, seq: u32) {
        if let Some(s) = self.sequences.get_mut(&seq) {
            let session = s.session;
            *s = Sequence {
                session,
                ..Sequence::default()
            };
        }
    }

    /// TracePacketDefaults: a sequence with a perf sample timebase is a session.
    pub fn defaults(&mut self, seq: u32, d: &TracePacketDefaults) {
        let Some(tb) = d
            .perf_sample_defaults
            .as_ref()
            .and_then(|p| p.timebase.as_ref())
        else {
            return;
        };
        let kind = tb
            .name
            .as_deref()
            .and_then(StackKind::from_timebase_name)
            .or(match &tb.event {
                Some(perf_events::timebase::Event::Counter(_)) | None => Some(StackKind::Cpu),
                Some(perf_events::timebase::Event::Tracepoint(_)) => None,
            });
        let sessions = &mut self.sessions;
        let s = self.sequences.entry(seq).or_default();
        if s.session.is_none() {
            s.session = Some(sessions.len() as u32);
            sessions.push(kind);
        }
    }

    /// Interned data of a sequence, in the order its entries refer to each other.
    pub fn interned(
        &mut self,
        strings: &mut Strings,
        stats: &mut Stats,
        seq: u32,
        d: InternedData,
    ) {
        let s = self.sequences.entry(seq).or_default();
        // Build ids are interned as raw bytes; the table shows them in hex.
        for (table, entries, hex) in [
            (&mut s.names, &d.function_names, false),
            (&mut s.paths, &d.mapping_paths, false),
            (&mut s.build_ids, &d.build_ids, true),
        ] {
            for e in entries {
                let (Some(iid), Some(b)) = (e.iid, e.str.as_deref()) else {
                    stats.add(Stat::stack_profile_missing_interned, 1);
                    continue;
                };
                let id = if hex {
                    let hex: String = b.iter().map(|b| format!("{b:02x}")).collect();
                    strings.intern(&hex)
                } else {
                    strings.intern_bytes(b)
                };
                table.insert(iid, id);
            }
        }
        let empty = strings.intern("");
        for m in &d.mappings {
            let Some(iid) = m.iid else {
                stats.add(Stat::stack_profile_missing_interned, 1);
                continue;
            };
            let build_id = match m.build_id {
                None => empty,
                Some(b) => match s.build_ids.get(&b) {
                    Some(&id) => id,
                    None => {
                        stats.add(Stat::stack_profile_missing_interned, 1);
                        empty
                    }
                },
            };
            let mut parts = Vec::with_capacity(m.path_string_ids.len());
            for p in &m.path_string_ids {
                match s.paths.get(p) {
                    Some(&id) => parts.push(strings.get(id).to_string()),
                    None => stats.add(Stat::stack_profile_missing_interned, 1),
                }
            }
            // Perfetto's path components ("system", "lib64", "libc.so"), or one whole path.
            let joined = if parts.len() == 1 {
                parts.remove(0)
            } else {
                parts.iter().map(|p| format!("/{p}")).collect()
            };
            let name = strings.intern(&joined);
            let id = *self.mapping_of.entry((build_id, name)).or_insert_with(|| {
                self.mappings.push(MappingRow { build_id, name });
                self.mappings.len() as u32 - 1
            });
            s.mappings.insert(iid, id);
        }
        for f in &d.frames {
            let (Some(iid), Some(mapping)) = (f.iid, f.mapping_id.and_then(|m| s.mappings.get(&m)))
            else {
                stats.add(Stat::stack_profile_missing_interned, 1);
                continue;
            };
            let name = match f.function_name_id {
                None => None,
                Some(n) => {
                    let found = s.names.get(&n).copied();
                    if found.is_none() {
                        stats.add(Stat::stack_profile_missing_interned, 1);
                    }
                    found
                }
            };
            let key = (*mapping, f.rel_pc.unwrap_or(0) as i64, name);
            let id = *self.frame_of.entry(key).or_insert_with(|| {
                self.frames.push(FrameRow {
                    name,
                    mapping: key.0,
                    rel_pc: key.1,
                });
                self.frames.len() as u32 - 1
            });
            s.frames.insert(iid, id);
        }
        'callstacks: for c in &d.callstacks {
            let Some(iid) = c.iid else {
                stats.add(Stat::stack_profile_missing_interned, 1);
                continue;
            };
            if c.frame_ids.len() > MAX_DEPTH {
                stats.add(Stat::stack_profile_too_deep, 1);
                continue;
            }
            let mut frames = Vec::with_capacity(c.frame_ids.len());
            for f in &c.frame_ids {
                match s.frames.get(f) {
                    Some(&id) => frames.push(id),
                    None => {
                        stats.add(Stat::stack_profile_missing_interned, 1);
                        continue 'callstacks;
                    }
                }
            }
            // Parents are created before their children: no cycle can form.
            let mut parent = None;
            for (depth, frame) in frames.into_iter().enumerate() {
                let id = *self.callsite_of.entry((parent, frame)).or_insert_with(|| {
                    self.callsites.push(CallsiteRow {
                        depth: depth as u32,
                        parent,
                        frame,
                    });
                    self.callsites.len() as u32 - 1
                });
                parent = Some(id);
            }
            s.callstacks.insert(iid, parent);
        }
    }

    /// A PerfSample: the event for the sorter.
    pub fn sample(&mut self, stats: &mut Stats, seq: u32, p: &PerfSample) -> PerfSampleEvent {
        let s = self.sequences.get(&seq);
        let callsite = match p.callstack_iid {
            None => None,
            Some(iid) => match s.and_then(|s| s.callstacks.get(&iid)) {
                Some(&c) => c,
                None => {
                    stats.add(Stat::stack_profile_missing_interned, 1);
                    None
                }
            },
        };
        let session = match s.and_then(|s| s.session) {
            Some(id) => id,
            None => {
                // A sample on a sequence without defaults: Perfetto's default session.
                let id = self.sessions.len() as u32;
                self.sessions.push(None);
                self.sequences.entry(seq).or_default().session = Some(id);
                id
            }
        };
        PerfSampleEvent {
            tid: p.tid.unwrap_or(0) as i32,
            pid: p.pid.unwrap_or(0) as i32,
            cpu: p.cpu,
            cpu_mode: p.cpu_mode.unwrap_or(0) as u8,
            callsite,
            session,
        }
    }
}

/// PerfSample.cpu_mode as trace_processor's perf_sample.cpu_mode shows it.
pub fn cpu_mode_name(mode: u8) -> &'static str {
    match mode {
        1 => "kernel",
        2 => "user",
        3 => "hypervisor",
        4 => "guest_kernel",
        5 => "guest_user",
        _ => "unknown",
    }
}
