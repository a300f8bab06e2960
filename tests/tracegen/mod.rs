//! Builders for hand-made traces (prost types of schedlens::perfetto::proto).
#![allow(dead_code)] // each test binary uses a different subset

use prost::Message;
use schedlens::perfetto::proto::{
    self as pb, FtraceEvent, FtraceEventBundle, TracePacket, ftrace_event, ftrace_event_bundle,
    trace_packet,
};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

/// xorshift: reproducible data that zstd cannot squeeze to nothing, like
/// real switches.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn packet(data: trace_packet::Data) -> TracePacket {
    TracePacket {
        data: Some(data),
        ..Default::default()
    }
}

pub fn bundle(cpu: u32, events: Vec<FtraceEvent>) -> TracePacket {
    packet(trace_packet::Data::FtraceEvents(FtraceEventBundle {
        cpu: Some(cpu),
        event: events,
        ..Default::default()
    }))
}

pub fn ev(ts: u64, pid: u32, e: ftrace_event::Event) -> FtraceEvent {
    FtraceEvent {
        timestamp: Some(ts),
        pid: Some(pid),
        event: Some(e),
        ..Default::default()
    }
}

pub fn switch(ts: u64, prev: (i32, &str, i64), next: (i32, &str)) -> FtraceEvent {
    ev(
        ts,
        prev.0 as u32,
        ftrace_event::Event::SchedSwitch(pb::SchedSwitchFtraceEvent {
            prev_comm: Some(prev.1.into()),
            prev_pid: Some(prev.0),
            prev_prio: Some(120),
            prev_state: Some(prev.2),
            next_comm: Some(next.1.into()),
            next_pid: Some(next.0),
            next_prio: Some(120),
        }),
    )
}

pub fn waking(ts: u64, waker: u32, pid: i32, comm: &str, target_cpu: i32) -> FtraceEvent {
    ev(
        ts,
        waker,
        ftrace_event::Event::SchedWaking(pb::SchedWakingFtraceEvent {
            comm: Some(comm.into()),
            pid: Some(pid),
            prio: Some(120),
            success: Some(1),
            target_cpu: Some(target_cpu),
        }),
    )
}

pub fn newtask(ts: u64, parent: u32, pid: i32, comm: &str, clone_flags: u64) -> FtraceEvent {
    ev(
        ts,
        parent,
        ftrace_event::Event::TaskNewtask(pb::TaskNewtaskFtraceEvent {
            pid: Some(pid),
            comm: Some(comm.into()),
            clone_flags: Some(clone_flags),
            oom_score_adj: Some(0),
        }),
    )
}

pub fn free(ts: u64, pid: i32, comm: &str) -> FtraceEvent {
    ev(
        ts,
        0,
        ftrace_event::Event::SchedProcessFree(pb::SchedProcessFreeFtraceEvent {
            comm: Some(comm.into()),
            pid: Some(pid),
            prio: Some(120),
        }),
    )
}

/// `p` with a packet timestamp.
pub fn at(ts: u64, mut p: TracePacket) -> TracePacket {
    p.timestamp = Some(ts);
    p
}

/// A ProcessTree packet: (pid, ppid, cmdline) processes and (tid, tgid, name) threads.
pub fn process_tree(
    ts: u64,
    processes: &[(i32, i32, &str)],
    threads: &[(i32, i32, Option<&str>)],
) -> TracePacket {
    at(
        ts,
        packet(trace_packet::Data::ProcessTree(pb::ProcessTree {
            processes: processes
                .iter()
                .map(|&(pid, ppid, cmdline)| pb::process_tree::Process {
                    pid: Some(pid),
                    ppid: Some(ppid),
                    cmdline: vec![cmdline.into()],
                    ..Default::default()
                })
                .collect(),
            threads: threads
                .iter()
                .map(|&(tid, tgid, name)| pb::process_tree::Thread {
                    tid: Some(tid),
                    tgid: Some(tgid),
                    name: name.map(Into::into),
                })
                .collect(),
            ..Default::default()
        })),
    )
}

/// A CompactSched bundle: switches (ts, prev_state, next_pid, next_comm) and
/// wakings (ts, pid, target_cpu), each in time order.
pub fn compact_bundle(
    cpu: u32,
    switches: &[(u64, i64, i32, &str)],
    wakings: &[(u64, i32, i32)],
) -> TracePacket {
    let mut c = ftrace_event_bundle::CompactSched::default();
    let intern = |comm: &str, table: &mut Vec<String>| -> u32 {
        match table.iter().position(|c| c == comm) {
            Some(i) => i as u32,
            None => {
                table.push(comm.into());
                table.len() as u32 - 1
            }
        }
    };
    let mut last = 0;
    for &(ts, prev_state, pid, comm) in switches {
        c.switch_timestamp.push(ts - last);
        last = ts;
        c.switch_prev_state.push(prev_state);
        c.switch_next_pid.push(pid);
        c.switch_next_prio.push(120);
        let idx = intern(comm, &mut c.intern_table);
        c.switch_next_comm_index.push(idx);
    }
    let mut last = 0;
    for &(ts, pid, target_cpu) in wakings {
        c.waking_timestamp.push(ts - last);
        last = ts;
        c.waking_pid.push(pid);
        c.waking_target_cpu.push(target_cpu);
        c.waking_prio.push(120);
        let idx = intern("wakee", &mut c.intern_table);
        c.waking_comm_index.push(idx);
        c.waking_common_flags.push(1);
    }
    packet(trace_packet::Data::FtraceEvents(FtraceEventBundle {
        cpu: Some(cpu),
        compact_sched: Some(c),
        ..Default::default()
    }))
}

pub fn system_info(release: &str) -> TracePacket {
    packet(trace_packet::Data::SystemInfo(pb::SystemInfo {
        utsname: Some(pb::Utsname {
            sysname: Some("Linux".into()),
            version: Some("#1 SMP".into()),
            release: Some(release.into()),
            machine: Some("x86_64".into()),
        }),
        num_cpus: Some(2),
        ..Default::default()
    }))
}

/// Serializes packets as a Trace (each one `0x0a len packet`).
pub fn encode(packets: &[TracePacket]) -> Vec<u8> {
    pb::Trace {
        packet: packets.to_vec(),
    }
    .encode_to_vec()
}

/// One packet framed as a Trace record.
pub fn frame(p: &TracePacket) -> Vec<u8> {
    pb::Trace {
        packet: vec![p.clone()],
    }
    .encode_to_vec()
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write trace");
}

/// A compact-sched trace like a busy recording: on each of `cpus` CPUs,
/// `tasks` tasks take turns; every turn is a waking of the next task and a
/// switch to it. `events` switches + wakings in total, written in bundles of
/// `per_bundle` events per CPU, CPUs interleaved in time as a recorder does.
pub fn write_synthetic(path: &Path, events: u64, cpus: u32, tasks: i32, per_bundle: usize) {
    let f = std::fs::File::create(path).expect("create");
    let mut w = std::io::BufWriter::new(f);
    w.write_all(&frame(&system_info("6.8.0"))).unwrap();
    let turns_per_cpu = events / 2 / u64::from(cpus);
    let mut turn = 0u64;
    let mut ts = 1_000_000u64;
    while turn < turns_per_cpu {
        let n = (per_bundle as u64 / 2).min(turns_per_cpu - turn);
        for cpu in 0..cpus {
            let base = 1000 + cpu as i32 * 1000;
            let mut c = ftrace_event_bundle::CompactSched {
                intern_table: (0..tasks).map(|t| format!("task-{cpu}-{t}")).collect(),
                ..Default::default()
            };
            let (mut last_sw, mut last_wk) = (0u64, 0u64);
            for i in 0..n {
                let t = ((turn + i) % tasks as u64) as i32;
                let at = ts + i * 10_000 + u64::from(cpu) * 3;
                c.waking_timestamp.push(at - last_wk);
                last_wk = at;
                c.waking_pid.push(base + t);
                c.waking_target_cpu.push(cpu as i32);
                c.waking_prio.push(120);
                c.waking_comm_index.push(t as u32);
                c.waking_common_flags.push(1);
                let sw = at + 2_000;
                c.switch_timestamp.push(sw - last_sw);
                last_sw = sw;
                c.switch_prev_state.push(if i % 7 == 0 { 0x100 } else { 1 });
                c.switch_next_pid.push(base + t);
                c.switch_next_prio.push(120);
                c.switch_next_comm_index.push(t as u32);
            }
            let p = packet(trace_packet::Data::FtraceEvents(FtraceEventBundle {
                cpu: Some(cpu),
                compact_sched: Some(c),
                ..Default::default()
            }));
            w.write_all(&frame(&p)).unwrap();
        }
        ts += n * 10_000;
        turn += n;
    }
    w.flush().unwrap();
}

/// Runs the schedlens binary with its caches under `cache_home`.
pub fn schedlens(args: &[&str], cache_home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_schedlens"))
        .args(args)
        .env("XDG_CACHE_HOME", cache_home)
        .output()
        .expect("run schedlens")
}

/// A hostile trace: `tasks` tasks, each with its own pid and name (pids run
/// past Linux's 2^22, as trace_processor accepts), each woken and switched
/// in once on one of `cpus` CPUs, then switched out asleep for good. Every
/// task stays open to the end, which is the worst case for what a load
/// holds per task.
pub fn write_distinct_tasks(path: &Path, tasks: u64, cpus: u32) {
    const PER_BUNDLE: u64 = 2_000;
    let f = std::fs::File::create(path).expect("create");
    let mut w = std::io::BufWriter::new(f);
    w.write_all(&frame(&system_info("6.8.0"))).unwrap();
    let mut next = 0u64;
    let mut ts = 1_000_000u64;
    while next < tasks {
        for cpu in 0..cpus {
            let n = PER_BUNDLE.min(tasks - next);
            let mut c = ftrace_event_bundle::CompactSched::default();
            let (mut last_sw, mut last_wk) = (0u64, 0u64);
            for i in 0..n {
                let task = next + i;
                let pid = i32::try_from(task + 1).expect("tasks fit in pids");
                c.intern_table.push(format!("t{task:x}"));
                let at = ts + i * 10_000 + u64::from(cpu) * 3;
                c.waking_timestamp.push(at - last_wk);
                last_wk = at;
                c.waking_pid.push(pid);
                c.waking_target_cpu.push(cpu as i32);
                c.waking_prio.push(120);
                c.waking_comm_index.push(i as u32);
                c.waking_common_flags.push(1);
                let sw = at + 2_000;
                c.switch_timestamp.push(sw - last_sw);
                last_sw = sw;
                c.switch_prev_state.push(1);
                c.switch_next_pid.push(pid);
                c.switch_next_prio.push(120);
                c.switch_next_comm_index.push(i as u32);
            }
            let p = packet(trace_packet::Data::FtraceEvents(FtraceEventBundle {
                cpu: Some(cpu),
                compact_sched: Some(c),
                ..Default::default()
            }));
            w.write_all(&frame(&p)).unwrap();
            next += n;
            if next == tasks {
                break;
            }
        }
        ts += PER_BUNDLE * 10_000;
    }
    w.flush().unwrap();
}
