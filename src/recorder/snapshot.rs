//! What the recorder writes besides events: the machine (SystemInfo, clock
//! snapshot, CPU info and topology), the processes alive at the start
//! (ProcessTree from /proc), and the end-of-trace statistics.

use crate::perfetto::proto::schedlens::{self as sl, SchedlensPacket, schedlens_packet};
use crate::perfetto::proto::{
    ClockSnapshot, CpuInfo, FtraceCpuStats, FtraceStats, ProcessTree, SystemInfo, TracePacket,
    Utsname, clock_snapshot, cpu_info, ftrace_stats, process_tree, trace_packet,
};
use crate::recorder::topology::Topology;
use std::collections::HashMap;
use std::path::Path;

/// Perfetto's builtin clock ids.
const CLOCK_REALTIME: u32 = 1;
const CLOCK_MONOTONIC: u32 = 3;
const CLOCK_BOOTTIME: u32 = 6;

/// task->flags bit of kernel threads (include/linux/sched.h; SL_PF_KTHREAD
/// in bpf/events.h, which the BPF side tests).
pub(crate) const PF_KTHREAD: u64 = 0x0020_0000;

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// CLOCK_BOOTTIME now, the trace's clock.
pub fn boottime_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

fn c_chars(field: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = field
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn uname() -> Option<libc::utsname> {
    // SAFETY: utsname is plain old data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is a valid, writable utsname.
    (unsafe { libc::uname(&mut u) } == 0).then_some(u)
}

fn utsname() -> Option<Utsname> {
    let u = uname()?;
    Some(Utsname {
        sysname: Some(c_chars(&u.sysname)),
        version: Some(c_chars(&u.version)),
        release: Some(c_chars(&u.release)),
        machine: Some(c_chars(&u.machine)),
    })
}

/// The host name, which Perfetto's Utsname has no field for.
fn hostname() -> Option<String> {
    uname().map(|u| c_chars(&u.nodename))
}

fn timezone_off_mins() -> Option<i32> {
    // SAFETY: time(NULL) and localtime_r with valid pointers to locals.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return None;
        }
        i32::try_from(tm.tm_gmtoff / 60).ok()
    }
}

/// Processor model of each cpu from /proc/cpuinfo ("model name"), and the
/// arm "Hardware" line for CPUs listed without a model name.
fn cpu_models(cpuinfo: &str) -> (HashMap<u32, String>, Option<String>) {
    let mut out = HashMap::new();
    let mut hardware = None;
    let mut current: Option<u32> = None;
    for line in cpuinfo.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "processor" => current = v.parse().ok(),
            "model name" => {
                if let Some(c) = current {
                    out.insert(c, v.to_owned());
                }
            }
            "Hardware" => hardware = Some(v.to_owned()),
            _ => {}
        }
    }
    (out, hardware)
}

fn packet(ts: u64, data: trace_packet::Data) -> TracePacket {
    TracePacket {
        timestamp: Some(ts),
        data: Some(data),
        ..Default::default()
    }
}

fn schedlens(ts: u64, data: schedlens_packet::Data) -> TracePacket {
    packet(
        ts,
        trace_packet::Data::Schedlens(SchedlensPacket { data: Some(data) }),
    )
}

/// SystemInfo, ClockSnapshot (BOOTTIME, MONOTONIC, REALTIME), CpuInfo and the
/// schedlens Topology packet, which records which ring buffer shard each CPU
/// used: `shards[i]` lists the CPUs of shard `i` (for example
/// [`Topology::llc_groups`]). CPUs in no shard have no shard field.
pub fn machine_packets(
    topology: &Topology,
    shards: &[Vec<u32>],
) -> anyhow::Result<Vec<TracePacket>> {
    // The three clocks back to back, so their offsets are exact to ~100 ns.
    let boot = boottime_ns();
    let mono = clock_ns(libc::CLOCK_MONOTONIC);
    let real = clock_ns(libc::CLOCK_REALTIME);
    let clocks = ClockSnapshot {
        clocks: [
            (CLOCK_BOOTTIME, boot),
            (CLOCK_MONOTONIC, mono),
            (CLOCK_REALTIME, real),
        ]
        .into_iter()
        .map(|(id, ts)| clock_snapshot::Clock {
            clock_id: Some(id),
            timestamp: Some(ts),
        })
        .collect(),
        primary_trace_clock: Some(CLOCK_BOOTTIME),
    };

    // SAFETY: sysconf has no memory effects.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let system = SystemInfo {
        utsname: utsname(),
        page_size: u32::try_from(page_size).ok(),
        timezone_off_mins: timezone_off_mins(),
        num_cpus: u32::try_from(topology.cpus.len()).ok(),
        tracing_service_version: Some(format!("schedlens {}", env!("CARGO_PKG_VERSION"))),
    };

    let (models, fallback_model) = std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| cpu_models(&s))
        .unwrap_or_default();
    let cpu_info = CpuInfo {
        cpus: topology
            .cpus
            .iter()
            .map(|c| cpu_info::Cpu {
                processor: models
                    .get(&c.cpu)
                    .cloned()
                    .or_else(|| fallback_model.clone()),
                frequencies: c.max_freq_khz.into_iter().collect(),
                capacity: c.capacity,
            })
            .collect(),
    };

    let shard_of: HashMap<u32, u32> = shards
        .iter()
        .enumerate()
        .flat_map(|(i, cpus)| cpus.iter().map(move |&c| (c, i as u32)))
        .collect();
    let topo = sl::Topology {
        cpus: topology
            .cpus
            .iter()
            .map(|c| sl::topology::Cpu {
                cpu: Some(c.cpu),
                package_id: Some(c.package_id),
                core_id: Some(c.core_id),
                llc_id: Some(c.llc_id),
                numa_node: Some(c.numa_node),
                capacity: c.capacity,
                max_freq_khz: c.max_freq_khz,
                shard: shard_of.get(&c.cpu).copied(),
                online: Some(c.online),
            })
            .collect(),
        hostname: hostname(),
        cpufreq_driver: Some(
            topology
                .cpufreq_driver
                .clone()
                .unwrap_or_else(|| "none".into()),
        ),
    };

    Ok(vec![
        packet(boot, trace_packet::Data::ClockSnapshot(clocks)),
        packet(boot, trace_packet::Data::SystemInfo(system)),
        packet(boot, trace_packet::Data::CpuInfo(cpu_info)),
        schedlens(boot, schedlens_packet::Data::Topology(topo)),
    ])
}

/// The fields of /proc/PID/stat schedlens needs.
struct Stat {
    comm: String,
    ppid: i32,
    flags: u64,
    starttime: u64,
}

fn parse_stat(s: &str) -> Option<Stat> {
    // comm may contain spaces and parentheses: it ends at the last ')'.
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s.get(open + 1..close)?.to_owned();
    // Fields after comm, numbered from 3 (state) as in proc(5).
    let rest: Vec<&str> = s.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).copied();
    Some(Stat {
        comm,
        ppid: field(4)?.parse().ok()?,
        flags: field(9)?.parse().ok()?,
        starttime: field(22)?.parse().ok()?,
    })
}

fn uid_of(status: &str) -> Option<i32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    let real: u32 = line.split_whitespace().nth(1)?.parse().ok()?;
    // Perfetto's field is int32; uids above i32::MAX wrap as the kernel's
    // own int interfaces do.
    Some(real as i32)
}

fn numeric_entries(dir: &Path) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<i32> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

/// One process and its threads `tids` (listed before), or None if it
/// vanished while being read.
fn read_process(
    proc: &Path,
    pid: i32,
    tids: Vec<i32>,
    ticks_per_sec: u64,
) -> Option<(process_tree::Process, Vec<process_tree::Thread>)> {
    let dir = proc.join(pid.to_string());
    let stat = parse_stat(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
    let uid = uid_of(&std::fs::read_to_string(dir.join("status")).ok()?);
    let raw = std::fs::read(dir.join("cmdline")).ok()?;
    let mut args: Vec<String> = raw
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // The cmdline ends with a NUL, which leaves one empty trailing piece.
    while args.last().is_some_and(String::is_empty) {
        args.pop();
    }
    let is_kthread = stat.flags & PF_KTHREAD != 0;
    // trace_processor skips a process without cmdline; kernel threads and
    // zombies have none, so their comm stands in, flagged as such.
    let cmdline_is_comm = is_kthread || args.is_empty();
    if cmdline_is_comm {
        args = vec![stat.comm.clone()];
    }
    let start_ns = stat
        .starttime
        .saturating_mul(1_000_000_000)
        .checked_div(ticks_per_sec);
    let process = process_tree::Process {
        pid: Some(pid),
        ppid: Some(stat.ppid),
        cmdline: args,
        uid,
        process_start_from_boot: start_ns,
        is_kthread: Some(is_kthread),
        cmdline_is_comm: Some(cmdline_is_comm),
    };
    let threads = tids
        .into_iter()
        .filter_map(|tid| {
            let comm = std::fs::read_to_string(dir.join(format!("task/{tid}/comm"))).ok()?;
            Some(process_tree::Thread {
                tid: Some(tid),
                name: Some(comm.trim_end_matches('\n').to_owned()),
                tgid: Some(pid),
            })
        })
        .collect();
    Some((process, threads))
}

/// A ProcessTree of every process and thread in /proc (BOOTTIME), stamped
/// between listing the tasks and reading them: each task in it existed
/// before its timestamp (it was listed) and had not been freed by then (it
/// was read after). The scan takes hundreds of ms on a busy machine, so a
/// stamp taken before the listing would date tasks forked during it before
/// their forks, and one taken at the end would list tasks freed meanwhile.
pub fn process_tree_packet() -> anyhow::Result<TracePacket> {
    process_tree_from(Path::new("/proc"))
}

fn process_tree_from(proc: &Path) -> anyhow::Result<TracePacket> {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).unwrap_or(100);
    let listed: Vec<(i32, Vec<i32>)> = numeric_entries(proc)
        .into_iter()
        .map(|pid| (pid, numeric_entries(&proc.join(format!("{pid}/task")))))
        .collect();
    anyhow::ensure!(!listed.is_empty(), "no processes in {}", proc.display());
    let ts = boottime_ns();
    let mut tree = ProcessTree::default();
    for (pid, tids) in listed {
        // A process that exits mid-scan is simply not in the snapshot.
        if let Some((p, threads)) = read_process(proc, pid, tids, ticks) {
            tree.processes.push(p);
            tree.threads.extend(threads);
        }
    }
    tree.collection_end_timestamp = Some(boottime_ns());
    Ok(packet(ts, trace_packet::Data::ProcessTree(tree)))
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
    /// Per shard: (ring size, peak fill) in bytes.
    pub ring_fill: Vec<(u64, u64)>,
    /// Per BPF program: runs the kernel skipped (recursion protection).
    pub recursion_misses: Vec<(String, u64)>,
    /// With --stacks, at the end: how the stacks went.
    pub stacks: Option<sl::StackStats>,
}

impl RecordingStats {
    /// What was counted after `base`, an earlier sample of the same
    /// recording (a flight snapshot's window); ring peaks and argv stay.
    pub fn since(&self, base: &RecordingStats) -> RecordingStats {
        let minus = |now: &[(String, u64)], before: &[(String, u64)]| {
            now.iter()
                .map(|(name, n)| {
                    let was = before.iter().find(|(b, _)| b == name).map_or(0, |b| b.1);
                    (name.clone(), n.saturating_sub(was))
                })
                .collect()
        };
        RecordingStats {
            start_ts: base.end_ts,
            end_ts: self.end_ts,
            events: minus(&self.events, &base.events),
            lost_per_cpu: self
                .lost_per_cpu
                .iter()
                .enumerate()
                .map(|(cpu, n)| n.saturating_sub(base.lost_per_cpu.get(cpu).copied().unwrap_or(0)))
                .collect(),
            bytes_written: self.bytes_written,
            argv: self.argv.clone(),
            ring_fill: self.ring_fill.clone(),
            recursion_misses: minus(&self.recursion_misses, &base.recursion_misses),
            // Stacks are written at the end of a whole recording only.
            stacks: None,
        }
    }
}

/// FtraceStats (END_OF_TRACE, per-CPU drops) and the schedlens RecorderStats packet.
pub fn epilogue_packets(stats: &RecordingStats) -> Vec<TracePacket> {
    let ftrace = FtraceStats {
        phase: Some(ftrace_stats::Phase::EndOfTrace as i32),
        cpu_stats: stats
            .lost_per_cpu
            .iter()
            .enumerate()
            .map(|(cpu, &lost)| FtraceCpuStats {
                cpu: Some(cpu as u64),
                overrun: Some(lost),
                dropped_events: Some(lost),
                ..Default::default()
            })
            .collect(),
    };
    let counters = |named: &[(String, u64)]| {
        named
            .iter()
            .map(|(name, value)| sl::recorder_stats::Counter {
                name: Some(name.clone()),
                value: Some(*value),
            })
            .collect()
    };
    let recorder = sl::RecorderStats {
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        argv: stats.argv.clone(),
        start_ts: Some(stats.start_ts),
        end_ts: Some(stats.end_ts),
        events: counters(&stats.events),
        lost_per_cpu: stats.lost_per_cpu.clone(),
        bytes_written: Some(stats.bytes_written),
        ring_fill: stats
            .ring_fill
            .iter()
            .map(|&(size, peak)| sl::recorder_stats::RingFill {
                size: Some(size),
                peak: Some(peak),
            })
            .collect(),
        recursion_misses: counters(&stats.recursion_misses),
        stacks: stats.stacks.clone(),
    };
    vec![
        packet(stats.end_ts, trace_packet::Data::FtraceStats(ftrace)),
        schedlens(
            stats.end_ts,
            schedlens_packet::Data::RecorderStats(recorder),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine() {
        let topo = Topology::read().unwrap();
        let groups = topo.llc_groups();
        let packets = machine_packets(&topo, &groups).unwrap();
        let Some(trace_packet::Data::SystemInfo(si)) = &packets[1].data else {
            panic!()
        };
        let u = si.utsname.as_ref().unwrap();
        assert_eq!(u.sysname.as_deref(), Some("Linux"));
        assert!(
            u.release
                .as_deref()
                .unwrap()
                .chars()
                .next()
                .unwrap()
                .is_ascii_digit()
        );
        assert_eq!(si.num_cpus, Some(topo.cpus.len() as u32));
        let Some(trace_packet::Data::ClockSnapshot(cs)) = &packets[0].data else {
            panic!()
        };
        assert_eq!(cs.clocks.len(), 3);
        assert_eq!(cs.primary_trace_clock, Some(6));
        let Some(trace_packet::Data::Schedlens(s)) = &packets[3].data else {
            panic!()
        };
        let Some(schedlens_packet::Data::Topology(t)) = &s.data else {
            panic!()
        };
        assert!(t.cpus.iter().all(|c| c.shard.is_some()));
    }

    #[test]
    fn stat_parsing() {
        let s = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 12345 0 0";
        let st = parse_stat(s).unwrap();
        assert_eq!(
            (st.comm.as_str(), st.ppid, st.flags, st.starttime),
            ("a (weird) name", 1, 4194560, 12345)
        );
        assert!(parse_stat("42 (x").is_none());
        assert!(parse_stat("").is_none());
    }

    #[test]
    fn cpuinfo_models() {
        let (m, _) = cpu_models(
            "processor\t: 0\nmodel name\t: Foo CPU\n\nprocessor\t: 1\nmodel name\t: Foo CPU\n",
        );
        assert_eq!(m.get(&1).map(String::as_str), Some("Foo CPU"));
    }

    #[test]
    fn this_machines_processes() {
        let p = process_tree_packet().unwrap();
        let Some(trace_packet::Data::ProcessTree(t)) = &p.data else {
            panic!()
        };
        let me = std::process::id() as i32;
        let mine = t.processes.iter().find(|p| p.pid == Some(me)).unwrap();
        assert!(!mine.cmdline.is_empty() && mine.is_kthread == Some(false));
        assert!(t.processes.iter().all(|p| !p.cmdline.is_empty()));
        assert!(t.threads.iter().any(|th| th.tgid == Some(me)));
        if let Some(kthreadd) = t.processes.iter().find(|p| p.pid == Some(2)) {
            assert_eq!(
                (kthreadd.is_kthread, kthreadd.cmdline_is_comm),
                (Some(true), Some(true))
            );
        }
    }

    #[test]
    fn epilogue() {
        let stats = RecordingStats {
            end_ts: 9,
            lost_per_cpu: vec![0, 3],
            events: vec![("sched_switch".into(), 5)],
            ..Default::default()
        };
        let p = epilogue_packets(&stats);
        let Some(trace_packet::Data::FtraceStats(f)) = &p[0].data else {
            panic!()
        };
        assert_eq!(f.phase, Some(2));
        assert_eq!(f.cpu_stats[1].dropped_events, Some(3));
        assert_eq!(p[1].timestamp, Some(9));
    }

    #[test]
    fn a_window_counts_what_came_after_its_base() {
        let base = RecordingStats {
            start_ts: 1,
            end_ts: 10,
            lost_per_cpu: vec![2, 0],
            events: vec![("sched_switch".into(), 5)],
            recursion_misses: vec![("switch".into(), 1)],
            ..Default::default()
        };
        let now = RecordingStats {
            end_ts: 30,
            lost_per_cpu: vec![2, 7, 1],
            events: vec![("sched_switch".into(), 12), ("sched_waking".into(), 4)],
            recursion_misses: vec![("switch".into(), 1)],
            ring_fill: vec![(64, 32)],
            ..base.clone()
        };
        let w = now.since(&base);
        assert_eq!((w.start_ts, w.end_ts), (10, 30));
        assert_eq!(w.lost_per_cpu, [0, 7, 1]);
        assert_eq!(
            w.events,
            [
                ("sched_switch".to_string(), 7),
                ("sched_waking".to_string(), 4)
            ]
        );
        assert_eq!(w.recursion_misses, [("switch".to_string(), 0)]);
        assert_eq!(w.ring_fill, now.ring_fill);
    }
}
