//! The writer's files, decoded with the official Perfetto definitions
//! (perfetto_protos): what a reader following trace_processor's rules
//! reconstructs must be exactly what was pushed.

mod oracle;
mod tracegen;

use perfetto_protos::ftrace_event::ftrace_event::Event as Fe;
use perfetto_protos::ftrace_event_bundle::FtraceEventBundle;
use perfetto_protos::trace_packet::TracePacket;
use prost::Message as _;
use protobuf::UnknownValueRef;
use schedlens::model::event::{
    COMM_LEN, Event, FieldKind, FtraceField, FtraceLayout, Header, TaskId,
};
use schedlens::perfetto::proto::fields;
use schedlens::perfetto::proto::schedlens::{SchedlensPacket, schedlens_packet};
use schedlens::perfetto::writer::{Compression, ShardEncoder, TraceWriter};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tracegen::Rng;

// ---- decoding --------------------------------------------------------------

/// Every packet in the file, zstd chunks expanded; also the uncompressed
/// size of each zstd chunk.
fn decode(path: &Path) -> (Vec<TracePacket>, Vec<usize>) {
    let d = oracle::decode(path);
    (d.packets, d.chunk_sizes)
}

fn schedlens_of(p: &TracePacket) -> Option<SchedlensPacket> {
    match p
        .special_fields
        .unknown_fields()
        .get(oracle::SCHEDLENS_PACKET)
    {
        Some(UnknownValueRef::LengthDelimited(b)) => Some(SchedlensPacket::decode(b).unwrap()),
        _ => None,
    }
}

fn bundles(packets: &[TracePacket]) -> Vec<&FtraceEventBundle> {
    packets
        .iter()
        .filter(|p| p.has_ftrace_events())
        .map(|p| p.ftrace_events())
        .collect()
}

// ---- a reader with trace_processor's pairing rules -------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Switch {
    ts: u64,
    cpu: u32,
    prev_pid: i32,
    prev_comm: String,
    prev_prio: i32,
    prev_state: i64,
    next_pid: i32,
    next_comm: String,
    next_prio: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Waking {
    ts: u64,
    cpu: u32,
    waker_pid: i32,
    pid: i32,
    comm: String,
    prio: i32,
    target_cpu: i32,
}

enum Item {
    Full(Box<perfetto_protos::ftrace_event::FtraceEvent>),
    CompactSwitch {
        ts: u64,
        state: i64,
        pid: i32,
        prio: i32,
        comm: String,
    },
    CompactWaking {
        ts: u64,
        pid: i32,
        tcpu: i32,
        prio: i32,
        comm: String,
    },
}

fn item_ts(i: &Item) -> u64 {
    match i {
        Item::Full(e) => e.timestamp(),
        Item::CompactSwitch { ts, .. } | Item::CompactWaking { ts, .. } => *ts,
    }
}

/// Switches and wakings as a reader sees them: compact switches take prev
/// from the CPU's previous switch (the first only seeds state), compact
/// wakings take the CPU's running task as waker and are dropped before any
/// switch.
fn reconstruct(packets: &[TracePacket]) -> (Vec<Switch>, Vec<Waking>) {
    let mut per_cpu: HashMap<u32, Vec<Item>> = HashMap::new();
    for b in bundles(packets) {
        let items = per_cpu.entry(b.cpu()).or_default();
        for e in &b.event {
            items.push(Item::Full(Box::new(e.clone())));
        }
        let c = &b.compact_sched;
        let n = c.switch_timestamp.len();
        assert_eq!(c.switch_prev_state.len(), n);
        assert_eq!(c.switch_next_pid.len(), n);
        assert_eq!(c.switch_next_prio.len(), n);
        assert_eq!(c.switch_next_comm_index.len(), n);
        let mut ts = 0u64;
        for k in 0..n {
            ts = ts.wrapping_add(c.switch_timestamp[k]);
            items.push(Item::CompactSwitch {
                ts,
                state: c.switch_prev_state[k],
                pid: c.switch_next_pid[k],
                prio: c.switch_next_prio[k],
                comm: c.intern_table[c.switch_next_comm_index[k] as usize].clone(),
            });
        }
        let n = c.waking_timestamp.len();
        assert_eq!(c.waking_pid.len(), n);
        assert_eq!(c.waking_target_cpu.len(), n);
        assert_eq!(c.waking_prio.len(), n);
        assert_eq!(c.waking_comm_index.len(), n);
        // One context per waking (trace_processor pairs them by position).
        assert_eq!(c.waking_common_flags.len(), n);
        let mut ts = 0u64;
        for k in 0..n {
            ts = ts.wrapping_add(c.waking_timestamp[k]);
            items.push(Item::CompactWaking {
                ts,
                pid: c.waking_pid[k],
                tcpu: c.waking_target_cpu[k],
                prio: c.waking_prio[k],
                comm: c.intern_table[c.waking_comm_index[k] as usize].clone(),
            });
        }
    }
    let mut switches = Vec::new();
    let mut wakings = Vec::new();
    let mut cpus: Vec<_> = per_cpu.into_iter().collect();
    cpus.sort_by_key(|(c, _)| *c);
    for (cpu, mut items) in cpus {
        items.sort_by_key(item_ts);
        let mut last: Option<(i32, String, i32)> = None;
        for it in items {
            match it {
                Item::Full(e) => match &e.event {
                    Some(Fe::SchedSwitch(s)) => {
                        switches.push(Switch {
                            ts: e.timestamp(),
                            cpu,
                            prev_pid: s.prev_pid(),
                            prev_comm: s.prev_comm().into(),
                            prev_prio: s.prev_prio(),
                            prev_state: s.prev_state(),
                            next_pid: s.next_pid(),
                            next_comm: s.next_comm().into(),
                            next_prio: s.next_prio(),
                        });
                        last = Some((s.next_pid(), s.next_comm().into(), s.next_prio()));
                    }
                    Some(Fe::SchedWaking(w)) => wakings.push(Waking {
                        ts: e.timestamp(),
                        cpu,
                        waker_pid: e.pid() as i32,
                        pid: w.pid(),
                        comm: w.comm().into(),
                        prio: w.prio(),
                        target_cpu: w.target_cpu(),
                    }),
                    _ => {}
                },
                Item::CompactSwitch {
                    ts,
                    state,
                    pid,
                    prio,
                    comm,
                } => {
                    if let Some((ppid, pcomm, pprio)) = last.take() {
                        switches.push(Switch {
                            ts,
                            cpu,
                            prev_pid: ppid,
                            prev_comm: pcomm,
                            prev_prio: pprio,
                            prev_state: state,
                            next_pid: pid,
                            next_comm: comm.clone(),
                            next_prio: prio,
                        });
                    }
                    last = Some((pid, comm, prio));
                }
                Item::CompactWaking {
                    ts,
                    pid,
                    tcpu,
                    prio,
                    comm,
                } => {
                    if let Some((running, _, _)) = &last {
                        wakings.push(Waking {
                            ts,
                            cpu,
                            waker_pid: *running,
                            pid,
                            comm,
                            prio,
                            target_cpu: tcpu,
                        });
                    }
                }
            }
        }
    }
    (switches, wakings)
}

// ---- synthetic streams -----------------------------------------------------

fn comm(name: &str) -> [u8; COMM_LEN] {
    let mut c = [0u8; COMM_LEN];
    c[..name.len()].copy_from_slice(name.as_bytes());
    c
}

#[derive(Clone)]
struct T {
    id: TaskId,
    pid: i32,
    tgid: i32,
    comm: [u8; COMM_LEN],
    prio: i32,
}

fn tasks(n: usize) -> Vec<T> {
    (0..n)
        .map(|k| T {
            id: 0xffff_8880_0000_0000 + (k as u64) * 0x2c0,
            pid: 1000 + k as i32,
            tgid: 1000 + (k as i32 / 4) * 4,
            comm: comm(&format!("worker-{k}")),
            prio: 100 + (k as i32 % 40),
        })
        .collect()
}

struct Expected {
    switches: Vec<Switch>,
    wakings: Vec<Waking>,
}

fn name(t: &T) -> String {
    String::from_utf8(schedlens::model::event::comm_str(&t.comm).to_vec()).unwrap()
}

/// Pushes a random switch/waking stream over `cpus` CPUs with occasional
/// losses, flushes, and filtered-out switches (prev != last next); returns
/// what a reader must reconstruct (switches from the first one per CPU on).
fn random_stream(enc: &mut ShardEncoder, seed: u64, events: usize, cpus: u32) -> Expected {
    let ts_base = 1_000_000_000u64;
    let all = tasks(64);
    let mut rng = Rng(seed);
    let mut ts = ts_base;
    for t in &all {
        let h = Header { ts, cpu: 0, pid: 0 };
        let ev = Event::TaskInfo {
            task: t.id,
            pid: t.pid,
            tgid: t.tgid,
            ppid: 1,
            comm: &t.comm,
            is_kthread: false,
        };
        enc.push(&h, &ev).unwrap();
    }
    let mut running: Vec<usize> = (0..cpus as usize).collect();
    let mut exp = Expected {
        switches: vec![],
        wakings: vec![],
    };
    for _ in 0..events {
        ts += 1 + rng.below(20_000);
        let cpu = rng.below(u64::from(cpus)) as u32;
        let cur = &all[running[cpu as usize]];
        let h = Header {
            ts,
            cpu,
            pid: cur.pid,
        };
        match rng.below(100) {
            0 => {
                enc.push(
                    &h,
                    &Event::Lost {
                        count: 1 + rng.below(5),
                    },
                )
                .unwrap();
            }
            1 => enc.flush().unwrap(),
            2..=40 => {
                let w = &all[rng.below(all.len() as u64) as usize];
                let target_cpu = rng.below(u64::from(cpus)) as i32;
                let ev = Event::Waking {
                    wakee: w.id,
                    pid: w.pid,
                    prio: w.prio,
                    target_cpu,
                    common_flags: Some([0, 0x08, 0x10][rng.below(3) as usize]),
                };
                enc.push(&h, &ev).unwrap();
                exp.wakings.push(Waking {
                    ts,
                    cpu,
                    waker_pid: cur.pid,
                    pid: w.pid,
                    comm: name(w),
                    prio: w.prio,
                    target_cpu,
                });
            }
            _ => {
                // 2% of switches name a prev the CPU was not running, as
                // happens when a filter hides some switches.
                let prev = if rng.below(50) == 0 {
                    &all[rng.below(all.len() as u64) as usize]
                } else {
                    cur
                };
                let next_i = rng.below(all.len() as u64) as usize;
                let next = &all[next_i];
                let state = [0i64, 1, 2, 0x100, 0x80][rng.below(5) as usize];
                let ev = Event::Switch {
                    prev: prev.id,
                    prev_pid: prev.pid,
                    prev_prio: prev.prio,
                    prev_state: state,
                    next: next.id,
                    next_pid: next.pid,
                    next_prio: next.prio,
                };
                enc.push(&h, &ev).unwrap();
                exp.switches.push(Switch {
                    ts,
                    cpu,
                    prev_pid: prev.pid,
                    prev_comm: name(prev),
                    prev_prio: prev.prio,
                    prev_state: state,
                    next_pid: next.pid,
                    next_comm: name(next),
                    next_prio: next.prio,
                });
                running[cpu as usize] = next_i;
            }
        }
    }
    enc.flush().unwrap();
    exp
}

fn sorted<T: Clone, K: Ord>(v: &[T], key: impl Fn(&T) -> K) -> Vec<T> {
    let mut v = v.to_vec();
    v.sort_by_key(key);
    v
}

fn check_roundtrip(compression: Compression) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pftrace");
    let writer = Arc::new(TraceWriter::create(&path, compression).unwrap());
    let mut enc = ShardEncoder::new(Arc::clone(&writer));
    enc.set_chunk_limit(32 * 1024);
    let exp = random_stream(&mut enc, 0x5eed, 60_000, 4);
    let stats = enc.stats().clone();
    let size = writer.finish().unwrap();
    assert_eq!(size, std::fs::metadata(&path).unwrap().len());
    if compression == Compression::Gzip {
        // finish() adds the gzip trailer after the last chunk.
        assert!(size - stats.bytes_out <= 32, "{size} {}", stats.bytes_out);
    } else {
        assert_eq!(stats.bytes_out, size);
    }
    assert_eq!(stats.unknown_tasks, 0);

    let (packets, chunks) = decode(&path);
    if compression == Compression::Zstd {
        assert!(chunks.len() > 10, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|&c| c <= 32 * 1024), "{chunks:?}");
    }
    let (switches, wakings) = reconstruct(&packets);
    let want = sorted(&exp.switches, |s| (s.cpu, s.ts));
    assert_eq!(switches.len(), want.len());
    for (got, want) in switches.iter().zip(&want) {
        assert_eq!(got, want);
    }
    let got = sorted(&wakings, |w| w.ts);
    assert_eq!(got.len(), exp.wakings.len());
    for (got, want) in got.iter().zip(&exp.wakings) {
        assert_eq!(got, want);
    }

    // Losses: a bundle with lost_events, a LostEvents packet, the totals.
    let lost_bundles = bundles(&packets).iter().filter(|b| b.lost_events()).count();
    let lost_packets: Vec<_> = packets
        .iter()
        .filter_map(|p| match schedlens_of(p)?.data? {
            schedlens_packet::Data::LostEvents(l) => Some((p.timestamp(), l)),
            _ => None,
        })
        .collect();
    assert!(lost_bundles > 0);
    assert_eq!(lost_bundles, lost_packets.len());
    let mut totals = vec![0u64; 4];
    for (_, l) in &lost_packets {
        totals[l.cpu() as usize] += l.count();
    }
    assert_eq!(totals, stats.lost_per_cpu);
    // previous_bundle_end_timestamp is never set: it is not exact here.
    assert!(
        bundles(&packets)
            .iter()
            .all(|b| b.previous_bundle_end_timestamp.is_none())
    );
}

#[test]
fn roundtrip_zstd() {
    check_roundtrip(Compression::Zstd);
}

#[test]
fn roundtrip_gzip() {
    check_roundtrip(Compression::Gzip);
}

#[test]
fn roundtrip_plain() {
    check_roundtrip(Compression::None);
}

fn full_events(packets: &[TracePacket]) -> Vec<(u32, perfetto_protos::ftrace_event::FtraceEvent)> {
    let mut v: Vec<_> = bundles(packets)
        .iter()
        .flat_map(|b| b.event.iter().map(|e| (b.cpu(), e.clone())))
        .collect();
    v.sort_by_key(|(_, e)| e.timestamp());
    v
}

/// Each compact waking's context goes into waking_common_flags, in step with
/// the other columns; a bundle with a waking whose context the recorder could
/// not tell leaves the column out rather than claim task context for it.
#[test]
fn waking_contexts_are_the_common_flags_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pftrace");
    let writer = Arc::new(TraceWriter::create(&path, Compression::Zstd).unwrap());
    let mut enc = ShardEncoder::new(Arc::clone(&writer));
    let t = tasks(2);
    for x in &t {
        let ev = Event::TaskInfo {
            task: x.id,
            pid: x.pid,
            tgid: x.tgid,
            ppid: 1,
            comm: &x.comm,
            is_kthread: false,
        };
        enc.push(
            &Header {
                ts: 1,
                cpu: 0,
                pid: 0,
            },
            &ev,
        )
        .unwrap();
    }
    let h = |ts| Header {
        ts,
        cpu: 0,
        pid: t[0].pid,
    };
    let switch = Event::Switch {
        prev: 0,
        prev_pid: 0,
        prev_prio: 120,
        prev_state: 0,
        next: t[0].id,
        next_pid: t[0].pid,
        next_prio: 120,
    };
    let wake = |common_flags| Event::Waking {
        wakee: t[1].id,
        pid: t[1].pid,
        prio: 120,
        target_cpu: 1,
        common_flags,
    };
    enc.push(
        &Header {
            ts: 5,
            cpu: 0,
            pid: 0,
        },
        &switch,
    )
    .unwrap();
    for (ts, flags) in [(10, Some(0x08)), (20, Some(0)), (30, Some(0x10))] {
        enc.push(&h(ts), &wake(flags)).unwrap();
    }
    enc.flush().unwrap();
    for (ts, flags) in [(40, Some(0x08)), (50, None)] {
        enc.push(&h(ts), &wake(flags)).unwrap();
    }
    enc.flush().unwrap();
    writer.finish().unwrap();
    let (packets, _) = decode(&path);
    let columns: Vec<_> = bundles(&packets)
        .iter()
        .map(|b| &b.compact_sched)
        .filter(|c| !c.waking_pid.is_empty())
        .map(|c| (c.waking_pid.len(), c.waking_common_flags.clone()))
        .collect();
    assert_eq!(columns, [(3, vec![0x08, 0, 0x10]), (2, vec![])]);
}

#[test]
fn first_switch_and_switch_after_loss_are_full() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pftrace");
    let writer = Arc::new(TraceWriter::create(&path, Compression::Zstd).unwrap());
    let mut enc = ShardEncoder::new(Arc::clone(&writer));
    let t = tasks(3);
    for x in &t {
        let ev = Event::TaskInfo {
            task: x.id,
            pid: x.pid,
            tgid: x.tgid,
            ppid: 1,
            comm: &x.comm,
            is_kthread: false,
        };
        enc.push(
            &Header {
                ts: 1,
                cpu: 0,
                pid: 0,
            },
            &ev,
        )
        .unwrap();
    }
    let sw = |a: &T, b: &T| Event::Switch {
        prev: a.id,
        prev_pid: a.pid,
        prev_prio: a.prio,
        prev_state: 1,
        next: b.id,
        next_pid: b.pid,
        next_prio: b.prio,
    };
    let h = |ts, cpu, pid| Header { ts, cpu, pid };
    // A waking before the CPU's first switch must be full.
    let wk = Event::Waking {
        wakee: t[1].id,
        pid: t[1].pid,
        prio: 120,
        target_cpu: 2,
        common_flags: Some(0),
    };
    enc.push(&h(10, 2, t[0].pid), &wk).unwrap();
    enc.push(&h(20, 2, t[0].pid), &sw(&t[0], &t[1])).unwrap();
    enc.push(&h(30, 2, t[1].pid), &sw(&t[1], &t[2])).unwrap();
    enc.push(&h(40, 2, t[2].pid), &Event::Lost { count: 7 })
        .unwrap();
    enc.push(&h(50, 2, t[0].pid), &sw(&t[0], &t[1])).unwrap();
    enc.push(&h(60, 2, t[1].pid), &sw(&t[1], &t[0])).unwrap();
    enc.flush().unwrap();
    writer.finish().unwrap();

    let (packets, _) = decode(&path);
    let full = full_events(&packets);
    let kinds: Vec<_> = full
        .iter()
        .map(|(_, e)| match &e.event {
            Some(Fe::SchedSwitch(s)) => (
                "switch",
                e.timestamp(),
                s.prev_pid(),
                s.prev_comm().to_string(),
            ),
            Some(Fe::SchedWaking(w)) => ("waking", e.timestamp(), w.pid(), w.comm().to_string()),
            _ => ("other", e.timestamp(), 0, String::new()),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("waking", 10, t[1].pid, "worker-1".to_string()),
            ("switch", 20, t[0].pid, "worker-0".to_string()),
            ("switch", 50, t[0].pid, "worker-0".to_string()),
        ]
    );
    let b = bundles(&packets);
    assert_eq!(b.len(), 2, "one bundle before the loss, one after");
    assert!(!b[0].lost_events() && b[1].lost_events());
    assert_eq!(b[0].compact_sched.switch_timestamp, vec![30]);
    assert_eq!(b[1].compact_sched.switch_timestamp, vec![60]);
    let (_, full_switch) = &full[1];
    let Some(Fe::SchedSwitch(s)) = &full_switch.event else {
        panic!()
    };
    assert_eq!(
        (s.prev_prio(), s.prev_state(), s.next_pid(), s.next_comm()),
        (t[0].prio, 1, t[1].pid, "worker-1")
    );
    let lost: Vec<_> = packets.iter().filter_map(schedlens_of).collect();
    assert_eq!(lost.len(), 1);
    let Some(schedlens_packet::Data::LostEvents(l)) = &lost[0].data else {
        panic!()
    };
    assert_eq!((l.cpu(), l.count()), (2, 7));
    assert_eq!(enc.stats().lost_per_cpu, vec![0, 0, 7]);
}

/// A record body of a TaskId and three i32s, as bpf/events.h's sl_waking and
/// sl_exit are.
fn task_body(task: TaskId, values: [i32; 3]) -> Vec<u8> {
    let mut b = task.to_ne_bytes().to_vec();
    for v in values {
        b.extend_from_slice(&v.to_ne_bytes());
    }
    b.extend_from_slice(&[0; 4]);
    b
}

const fn field(number: u32, offset: usize, kind: FieldKind) -> FtraceField {
    FtraceField {
        name: "",
        number,
        offset,
        kind,
    }
}

/// Layouts of those bodies, as the recorder declares sched_wakeup_new and
/// sched_process_exit (src/recorder/abi.rs).
static WAKEUP_NEW: FtraceLayout = FtraceLayout {
    name: "sched_wakeup_new",
    event: fields::ftrace_event::SCHED_WAKEUP_NEW,
    size: 24,
    fields: &[
        field(
            fields::sched_wakeup_new_ftrace_event::COMM,
            0,
            FieldKind::TaskComm,
        ),
        field(
            fields::sched_wakeup_new_ftrace_event::PID,
            8,
            FieldKind::I32,
        ),
        field(
            fields::sched_wakeup_new_ftrace_event::PRIO,
            12,
            FieldKind::I32,
        ),
        field(
            fields::sched_wakeup_new_ftrace_event::TARGET_CPU,
            16,
            FieldKind::I32,
        ),
    ],
};
static EXIT: FtraceLayout = FtraceLayout {
    name: "sched_process_exit",
    event: fields::ftrace_event::SCHED_PROCESS_EXIT,
    size: 24,
    fields: &[
        field(
            fields::sched_process_exit_ftrace_event::COMM,
            0,
            FieldKind::TaskComm,
        ),
        field(
            fields::sched_process_exit_ftrace_event::PID,
            8,
            FieldKind::I32,
        ),
        field(
            fields::sched_process_exit_ftrace_event::TGID,
            12,
            FieldKind::I32,
        ),
        field(
            fields::sched_process_exit_ftrace_event::PRIO,
            16,
            FieldKind::I32,
        ),
    ],
};

fn ftrace<'a>(layout: &'static FtraceLayout, body: &'a [u8]) -> Event<'a> {
    Event::Ftrace { layout, body }
}

#[test]
fn task_lifecycle_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pftrace");
    let writer = Arc::new(TraceWriter::create(&path, Compression::None).unwrap());
    let mut enc = ShardEncoder::new(Arc::clone(&writer));
    let parent = 0xa000u64;
    let child = 0xb000u64;
    let pcomm = comm("bash");
    let info = |task, pid, tgid, c| Event::TaskInfo {
        task,
        pid,
        tgid,
        ppid: 1,
        comm: c,
        is_kthread: false,
    };
    let h = |ts| Header {
        ts,
        cpu: 1,
        pid: 500,
    };
    enc.push(&h(1), &info(parent, 500, 500, &pcomm)).unwrap();
    let fork = Event::Fork {
        parent,
        parent_pid: 500,
        child,
        child_pid: 501,
        child_tgid: 500,
        clone_flags: 0x3d0f00,
    };
    enc.push(&h(2), &fork).unwrap();
    // A thread first announced: the chunk carries ProcessTree.Thread.
    enc.push(&h(3), &info(child, 501, 500, &pcomm)).unwrap();
    let newcomm = comm("ls");
    let exec = Event::Exec {
        task: parent,
        pid: 500,
        old_pid: 500,
        comm: &newcomm,
        filename: b"/usr/bin/ls",
    };
    enc.push(&h(4), &exec).unwrap();
    let rn = comm("lister");
    enc.push(
        &h(5),
        &Event::Rename {
            task: parent,
            pid: 500,
            newcomm: &rn,
        },
    )
    .unwrap();
    let wakeup_new = task_body(child, [501, 120, 0]);
    enc.push(&h(6), &ftrace(&WAKEUP_NEW, &wakeup_new)).unwrap();
    let exit = task_body(child, [501, 500, 120]);
    enc.push(&h(7), &ftrace(&EXIT, &exit)).unwrap();
    enc.push(
        &h(8),
        &Event::Free {
            task: child,
            pid: 501,
            prio: 120,
        },
    )
    .unwrap();
    assert_eq!(enc.task_count(), 1);
    enc.push(&h(9), &Event::Forget { task: parent }).unwrap();
    assert_eq!(enc.task_count(), 0);
    // Freed: the comm is no longer known.
    enc.push(&h(10), &ftrace(&EXIT, &exit)).unwrap();
    assert_eq!(enc.stats().unknown_tasks, 1);
    enc.flush().unwrap();
    writer.finish().unwrap();

    let (packets, _) = decode(&path);
    let full = full_events(&packets);
    let mut it = full.iter().map(|(_, e)| e);
    let e = it.next().unwrap();
    assert_eq!((e.timestamp(), e.pid()), (2, 500));
    let n = e.task_newtask();
    assert_eq!(
        (n.pid(), n.comm(), n.clone_flags()),
        (501, "bash", 0x3d0f00)
    );
    let f = it.next().unwrap().sched_process_fork();
    assert_eq!(
        (
            f.parent_comm(),
            f.parent_pid(),
            f.child_comm(),
            f.child_pid()
        ),
        ("bash", 500, "bash", 501)
    );
    let x = it.next().unwrap().sched_process_exec();
    assert_eq!(
        (x.filename(), x.pid(), x.old_pid()),
        ("/usr/bin/ls", 500, 500)
    );
    let r = it.next().unwrap().task_rename();
    assert_eq!((r.pid(), r.oldcomm(), r.newcomm()), (500, "ls", "lister"));
    let w = it.next().unwrap().sched_wakeup_new();
    assert_eq!(
        (w.comm(), w.pid(), w.prio(), w.target_cpu()),
        ("bash", 501, 120, 0)
    );
    let x = it.next().unwrap().sched_process_exit();
    assert_eq!(
        (x.comm(), x.pid(), x.tgid(), x.prio()),
        ("bash", 501, 500, 120)
    );
    let fr = it.next().unwrap().sched_process_free();
    assert_eq!((fr.comm(), fr.pid(), fr.prio()), ("bash", 501, 120));
    assert_eq!(it.next().unwrap().sched_process_exit().comm(), "");
    let trees: Vec<_> = packets.iter().filter(|p| p.has_process_tree()).collect();
    assert_eq!(trees.len(), 1);
    let th = &trees[0].process_tree().threads;
    assert_eq!(th.len(), 1);
    assert_eq!(
        (th[0].tid(), th[0].tgid(), th[0].has_name()),
        (501, 500, false)
    );
    assert_eq!(trees[0].timestamp(), 3);
}

/// A chunk's ProcessTree lists the threads it announced that it holds no
/// fork of (they existed before the trace): a forked thread is announced
/// just before its fork, and listing it under the chunk's first
/// announcement would date it before its birth.
#[test]
fn a_chunk_lists_no_thread_it_holds_the_fork_of() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pftrace");
    let writer = Arc::new(TraceWriter::create(&path, Compression::None).unwrap());
    let mut enc = ShardEncoder::new(Arc::clone(&writer));
    let c = comm("app");
    let info = |task, pid| Event::TaskInfo {
        task,
        pid,
        tgid: 600,
        ppid: 1,
        comm: &c,
        is_kthread: false,
    };
    let h = |ts| Header {
        ts,
        cpu: 0,
        pid: 600,
    };
    enc.push(&h(10), &info(0xa000, 600)).unwrap();
    enc.push(&h(11), &info(0xa100, 601)).unwrap();
    // As the BPF side emits a fork: its tasks announced, then the fork.
    enc.push(&h(20), &info(0xa200, 602)).unwrap();
    let fork = Event::Fork {
        parent: 0xa000,
        parent_pid: 600,
        child: 0xa200,
        child_pid: 602,
        child_tgid: 600,
        clone_flags: 0x3d0f00,
    };
    enc.push(&h(20), &fork).unwrap();
    enc.flush().unwrap();
    writer.finish().unwrap();

    let (packets, _) = decode(&path);
    let trees: Vec<_> = packets.iter().filter(|p| p.has_process_tree()).collect();
    assert_eq!(trees.len(), 1);
    let listed: Vec<_> = trees[0]
        .process_tree()
        .threads
        .iter()
        .map(|t| (t.tid(), t.tgid()))
        .collect();
    assert_eq!(listed, [(601, 600)]);
    assert_eq!(trees[0].timestamp(), 11);
    let forks = full_events(&packets)
        .iter()
        .filter(|(_, e)| e.has_task_newtask())
        .count();
    assert_eq!(forks, 1);
}

#[test]
fn unknown_tasks_and_idle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pftrace");
    let writer = Arc::new(TraceWriter::create(&path, Compression::Zstd).unwrap());
    let mut enc = ShardEncoder::new(Arc::clone(&writer));
    let sw = |prev, prev_pid, next, next_pid| Event::Switch {
        prev,
        prev_pid,
        prev_prio: 120,
        prev_state: 0,
        next,
        next_pid,
        next_prio: 120,
    };
    let h = |ts, pid| Header { ts, cpu: 3, pid };
    enc.push(&h(1, 0), &sw(0x10, 0, 0x20, 77)).unwrap();
    enc.push(&h(2, 77), &sw(0x20, 77, 0x10, 0)).unwrap();
    let wk = Event::Waking {
        wakee: 0x30,
        pid: 78,
        prio: 120,
        target_cpu: 3,
        common_flags: Some(0),
    };
    enc.push(&h(3, 0), &wk).unwrap();
    enc.push(&h(4, 0), &Event::Lost { count: 0 }).unwrap();
    enc.flush().unwrap();
    assert!(enc.push(&h(5, 0).clone_with_cpu(u32::MAX), &wk).is_err());
    writer.finish().unwrap();
    // Unknown: 0x20 as next of the full switch (as prev of the compact one
    // it is not looked up), and the wakee. The idle task is never unknown.
    assert_eq!(enc.stats().unknown_tasks, 2);
    let (packets, _) = decode(&path);
    let (switches, wakings) = reconstruct(&packets);
    assert_eq!(switches[0].prev_comm, "swapper/3");
    assert_eq!(switches[0].next_comm, "");
    assert_eq!(switches[1].next_comm, "swapper/3");
    assert_eq!(wakings[0].comm, "");
}

trait WithCpu {
    fn clone_with_cpu(&self, cpu: u32) -> Header;
}
impl WithCpu for Header {
    fn clone_with_cpu(&self, cpu: u32) -> Header {
        Header { cpu, ..*self }
    }
}

#[test]
fn truncated_last_chunk_keeps_earlier_chunks() {
    for compression in [Compression::Zstd, Compression::Gzip, Compression::None] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.pftrace");
        let writer = Arc::new(TraceWriter::create(&path, compression).unwrap());
        // As the recorder does once recording starts: a kill leaves it there.
        writer.publish().unwrap();
        let mut enc = ShardEncoder::new(Arc::clone(&writer));
        let mut sizes = Vec::new();
        let t = tasks(2);
        let mut ts = 100;
        for chunk in 0..5 {
            for k in 0..2000 {
                ts += 10;
                let (a, b) = if k % 2 == 0 {
                    (&t[0], &t[1])
                } else {
                    (&t[1], &t[0])
                };
                let ev = Event::Switch {
                    prev: a.id,
                    prev_pid: a.pid,
                    prev_prio: 120,
                    prev_state: 1,
                    next: b.id,
                    next_pid: b.pid,
                    next_prio: 120,
                };
                enc.push(
                    &Header {
                        ts,
                        cpu: chunk % 2,
                        pid: a.pid,
                    },
                    &ev,
                )
                .unwrap();
            }
            enc.flush().unwrap();
            sizes.push(writer.bytes_written());
        }
        // Not finished: a killed recorder. Cut the last chunk in half.
        let cut = (sizes[3] + sizes[4]) / 2;
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(cut).unwrap();
        let (packets, _) = decode(&path);
        let n: usize = bundles(&packets)
            .iter()
            .map(|b| b.event.len() + b.compact_sched.switch_timestamp.len())
            .sum();
        assert_eq!(n, 4 * 2000, "{compression:?}");
    }
}

#[test]
fn file_mode_and_errors() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pftrace");
    std::fs::write(&path, b"old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let old = dir.path().join("old-link");
    std::fs::hard_link(&path, &old).unwrap();
    let w = TraceWriter::create(&path, Compression::Zstd).unwrap();
    // Until published, the old file stays as it was.
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
    assert_eq!(w.finish().unwrap(), 0);
    // Then a new file replaces it; the old one was never truncated or chmodded.
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 0, "a new file");
    assert_eq!(std::fs::read(&old).unwrap(), b"old");
    let old_mode = std::fs::metadata(&old).unwrap().permissions().mode();
    assert_eq!(old_mode & 0o777, 0o644);
    assert!(w.write_packets(&[Default::default()]).is_err(), "finished");

    let bad = dir.path().join("missing-dir").join("t.pftrace");
    let err = TraceWriter::create(&bad, Compression::Zstd).err().unwrap();
    assert!(
        format!("{err:#}").contains("missing-dir/t.pftrace"),
        "{err:#}"
    );
}

#[test]
fn write_packets_roundtrip() {
    use schedlens::perfetto::proto as p;
    for compression in [Compression::Zstd, Compression::Gzip, Compression::None] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.pftrace");
        let w = TraceWriter::create(&path, compression).unwrap();
        let packets: Vec<p::TracePacket> = (0..3)
            .map(|i| p::TracePacket {
                timestamp: Some(i),
                data: Some(p::trace_packet::Data::SystemInfo(p::SystemInfo {
                    num_cpus: Some(8),
                    ..Default::default()
                })),
                ..Default::default()
            })
            .collect();
        w.write_packets(&packets).unwrap();
        w.finish().unwrap();
        let (got, _) = decode(&path);
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].timestamp(), 2);
        assert_eq!(got[1].system_info().num_cpus(), 8);
    }
}

/// ns/event and bytes/event for a switch-heavy stream; run with
/// `cargo test --release --test writer -- --ignored --nocapture bench`.
#[test]
#[ignore]
fn bench_switch_stream() {
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000_000);
    let all = tasks(200);
    // Pre-build the stream so only push+flush is timed.
    let mut rng = Rng(42);
    let mut running = [0usize; 4];
    let mut ts = 1u64 << 40;
    let mut stream = Vec::with_capacity(n);
    for _ in 0..n {
        ts += 200 + rng.below(3000);
        let cpu = rng.below(4) as u32;
        let cur = running[cpu as usize];
        if rng.below(100) < 30 {
            let w = rng.below(all.len() as u64) as usize;
            stream.push((
                Header {
                    ts,
                    cpu,
                    pid: all[cur].pid,
                },
                None,
                w,
            ));
        } else {
            // Mostly a few tasks ping-pong per CPU, as in a switch-heavy load.
            let next = (cpu as usize * 8 + rng.below(8) as usize) % all.len();
            stream.push((
                Header {
                    ts,
                    cpu,
                    pid: all[cur].pid,
                },
                Some(cur),
                next,
            ));
            running[cpu as usize] = next;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    for (compression, level) in [
        (Compression::None, 0),
        (Compression::Zstd, 1),
        (Compression::Zstd, 3),
        (Compression::Zstd, 5),
        (Compression::Zstd, 7),
        (Compression::Zstd, 9),
        (Compression::Gzip, 0),
    ] {
        let path = dir.path().join("b.pftrace");
        let writer = Arc::new(TraceWriter::create_with_level(&path, compression, level).unwrap());
        let mut enc = ShardEncoder::new(Arc::clone(&writer));
        for t in &all {
            let ev = Event::TaskInfo {
                task: t.id,
                pid: t.pid,
                tgid: t.tgid,
                ppid: 1,
                comm: &t.comm,
                is_kthread: false,
            };
            enc.push(
                &Header {
                    ts: 1,
                    cpu: 0,
                    pid: 0,
                },
                &ev,
            )
            .unwrap();
        }
        let start = std::time::Instant::now();
        for (h, prev, x) in &stream {
            let ev = match prev {
                Some(p) => Event::Switch {
                    prev: all[*p].id,
                    prev_pid: all[*p].pid,
                    prev_prio: all[*p].prio,
                    prev_state: 1,
                    next: all[*x].id,
                    next_pid: all[*x].pid,
                    next_prio: all[*x].prio,
                },
                None => Event::Waking {
                    wakee: all[*x].id,
                    pid: all[*x].pid,
                    prio: all[*x].prio,
                    target_cpu: h.cpu as i32,
                    common_flags: Some(0),
                },
            };
            enc.push(h, &ev).unwrap();
        }
        enc.flush().unwrap();
        let el = start.elapsed();
        let size = writer.finish().unwrap();
        let s = enc.stats();
        println!(
            "{compression:?} level {level}: {:.1} ns/event, {:.2} B/event on disk, {:.2} B/event raw, {} chunks",
            el.as_nanos() as f64 / n as f64,
            size as f64 / n as f64,
            s.bytes_in as f64 / n as f64,
            s.chunks
        );
    }
}

#[test]
fn preamble_and_epilogue_decode_officially() {
    use schedlens::recorder::snapshot;
    use schedlens::recorder::topology::Topology;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pftrace");
    let w = TraceWriter::create(&path, Compression::Zstd).unwrap();
    let topo = Topology::read().unwrap();
    let mut packets = snapshot::machine_packets(&topo, &topo.llc_groups()).unwrap();
    packets.push(snapshot::process_tree_packet().unwrap());
    let stats = snapshot::RecordingStats {
        end_ts: 5,
        lost_per_cpu: vec![1, 2],
        ..Default::default()
    };
    packets.extend(snapshot::epilogue_packets(&stats));
    w.write_packets(&packets).unwrap();
    w.finish().unwrap();
    let (got, _) = decode(&path);
    assert_eq!(got.len(), packets.len());
    assert_eq!(got[1].system_info().utsname.sysname(), "Linux");
    assert_eq!(
        got[0].clock_snapshot().primary_trace_clock(),
        perfetto_protos::builtin_clock::BuiltinClock::BUILTIN_CLOCK_BOOTTIME
    );
    assert_eq!(got[2].cpu_info().cpus.len(), topo.cpus.len());
    let tree = got[4].process_tree();
    assert!(
        tree.processes
            .iter()
            .any(|p| p.pid() == std::process::id() as i32)
    );
    assert_eq!(got[5].ftrace_stats().cpu_stats[1].overrun(), 2);
    assert!(schedlens_of(&got[3]).is_some() && schedlens_of(&got[6]).is_some());
}

/// workqueue_execute_start's and ipi_send_cpu's layouts, as the recorder
/// declares them (src/recorder/abi.rs): a work item's (work, function) and an
/// IPI's (callsite, callback, cpu), and ipi_send_cpumask's cpumask.
static WORK_START: FtraceLayout = FtraceLayout {
    name: "workqueue_execute_start",
    event: fields::ftrace_event::WORKQUEUE_EXECUTE_START,
    size: 16,
    fields: &[
        field(
            fields::workqueue_execute_start_ftrace_event::WORK,
            0,
            FieldKind::U64,
        ),
        field(
            fields::workqueue_execute_start_ftrace_event::FUNCTION,
            8,
            FieldKind::KernelFunction,
        ),
    ],
};
static IPI_SEND_CPU: FtraceLayout = FtraceLayout {
    name: "ipi_send_cpu",
    event: fields::ftrace_event::GENERIC,
    size: 24,
    fields: &[
        FtraceField {
            name: "cpu",
            number: 0,
            offset: 16,
            kind: FieldKind::U32,
        },
        FtraceField {
            name: "callsite",
            number: 0,
            offset: 0,
            kind: FieldKind::KernelFunction,
        },
        FtraceField {
            name: "callback",
            number: 0,
            offset: 8,
            kind: FieldKind::KernelFunction,
        },
    ],
};
static IPI_SEND_CPUMASK: FtraceLayout = FtraceLayout {
    name: "ipi_send_cpumask",
    event: fields::ftrace_event::GENERIC,
    size: 48,
    fields: &[FtraceField {
        name: "cpumask",
        number: 0,
        offset: 16,
        kind: FieldKind::CpuMask,
    }],
};

fn words(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

const KALLSYMS: &str = "ffffffff81100000 t __pfx_flush_to_ldisc\n\
                        ffffffff81100010 T flush_to_ldisc\n\
                        ffffffff81100300 t membarrier_private_expedited\n";
const FLUSH_TO_LDISC: u64 = 0xffffffff81100010;

/// Kernel functions: each chunk interns the names its events use on the
/// shard's sequence before the bundles that use them (also a bundle ended
/// early by a loss), clearing the sequence's state first, so a chunk read
/// alone names them; generic events carry names and CPU lists.
#[test]
fn kernel_functions_are_named_on_the_shards_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pftrace");
    let writer = Arc::new(TraceWriter::create(&path, Compression::Zstd).unwrap());
    let table = Arc::new(schedlens::model::ksyms::KernelSymbols::parse(KALLSYMS));
    let mut enc = ShardEncoder::new(Arc::clone(&writer)).with_kernel_symbols(2, table);
    let h = |ts, cpu| Header { ts, cpu, pid: 77 };
    let work = |w: u64, f: u64| words(&[w, f]);
    let unnamed = 0xffffffff80000000;
    // Chunk 1: CPU 1's bundle ends at a loss after its first work item.
    enc.push(&h(10, 1), &ftrace(&WORK_START, &work(0xa0, FLUSH_TO_LDISC)))
        .unwrap();
    enc.push(&h(11, 1), &Event::Lost { count: 3 }).unwrap();
    enc.push(&h(12, 0), &ftrace(&WORK_START, &work(0xa0, FLUSH_TO_LDISC)))
        .unwrap();
    enc.push(&h(13, 0), &ftrace(&WORK_START, &work(0xb0, unnamed)))
        .unwrap();
    let ipi = words(&[0xffffffff81100331, 0, 1]);
    enc.push(&h(14, 0), &ftrace(&IPI_SEND_CPU, &ipi)).unwrap();
    let mask = words(&[0, 0, 0, 0, 0b1011 << 60, 1 << 63 | 1]);
    enc.push(&h(15, 0), &ftrace(&IPI_SEND_CPUMASK, &mask))
        .unwrap();
    enc.flush().unwrap();
    // Chunk 2 names the function again.
    enc.push(&h(20, 0), &ftrace(&WORK_START, &work(0xa0, FLUSH_TO_LDISC)))
        .unwrap();
    enc.flush().unwrap();
    writer.finish().unwrap();

    let decoded = oracle::decode(&path);
    assert_eq!(decoded.chunk_sizes.len(), 2);
    let mut works = Vec::new();
    let mut generic = Vec::new();
    oracle::with_kernel_symbols(&decoded.packets, |p, symbols| {
        if !p.has_ftrace_events() {
            return;
        }
        assert_eq!(p.trusted_packet_sequence_id(), 0x5d02);
        for e in &p.ftrace_events().event {
            match &e.event {
                Some(Fe::WorkqueueExecuteStart(w)) => works.push((
                    e.timestamp(),
                    w.work(),
                    w.function(),
                    symbols.get(&w.function()).cloned(),
                )),
                Some(Fe::Generic(g)) => {
                    let fields: Vec<String> = g
                        .field
                        .iter()
                        .map(|f| {
                            use perfetto_protos::generic::generic_ftrace_event::field::Value;
                            let v = match &f.value {
                                Some(Value::StrValue(s)) => s.clone(),
                                Some(Value::IntValue(v)) => format!("int {v}"),
                                Some(Value::UintValue(v)) => format!("uint {v}"),
                                _ => "none".into(),
                            };
                            format!("{}={v}", f.name())
                        })
                        .collect();
                    generic.push(format!("{} {}", g.event_name(), fields.join(" ")));
                }
                _ => {}
            }
        }
    });
    let named = Some("flush_to_ldisc".to_string());
    works.sort();
    assert_eq!(
        works,
        [
            (10, 0xa0, FLUSH_TO_LDISC, named.clone()),
            (12, 0xa0, FLUSH_TO_LDISC, named.clone()),
            (13, 0xb0, unnamed, None),
            (20, 0xa0, FLUSH_TO_LDISC, named),
        ]
    );
    assert_eq!(
        generic,
        [
            "ipi_send_cpu cpu=uint 1 callsite=membarrier_private_expedited callback=uint 0",
            "ipi_send_cpumask cpumask=188-189,191-192,255",
        ]
    );
    // Each chunk interned the name once, the first time clearing the state.
    let interned: Vec<(u32, usize)> = decoded
        .packets
        .iter()
        .filter(|p| !p.interned_data.kernel_symbols.is_empty())
        .map(|p| (p.sequence_flags(), p.interned_data.kernel_symbols.len()))
        .collect();
    assert_eq!(interned, [(1, 1), (1, 1)]);
}
