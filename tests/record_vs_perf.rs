//! The kernel's other witness: `perf sched record` records the same seconds
//! as `schedlens trace` around a pinned pipe ping-pong, and every switch and
//! waking perf saw must be in our trace, on the same CPU, in the same order,
//! between the same neighbours. The check is one way because perf on the test
//! VMs misses some switches out of idle on CPU 1 and sometimes writes a
//! record twice.
//! Our file is decoded with Perfetto's official protos (tests/oracle), not with
//! schedlens's reader. Needs root and perf; see `require_bpf_and_perf`.
#![cfg(feature = "record")]

mod oracle;

use perfetto_protos::ftrace_event::ftrace_event::Event as Fe;
use perfetto_protos::trace_packet::TracePacket;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_schedlens");
/// Selects the workload role when this binary is re-executed.
const ROLE_ENV: &str = "SCHEDLENS_TEST_ROLE";
const REPORT_ENV: &str = "SCHEDLENS_TEST_REPORT";
/// Round trips of the ping-pong: about 5,000 wakings of each thread.
const ROUNDS: usize = 5000;
/// The CPU both workload threads are pinned to.
const PINNED_CPU: usize = 0;
/// BOOTTIME and MONOTONIC read this close together in the ClockSnapshot are
/// one clock (they part only when the machine sleeps, by at least that long).
const SAME_CLOCK_NS: i64 = 5_000;
/// How far perf's times converted through the ClockSnapshot may be off when
/// the two clocks differ: the time between the snapshot's two reads.
const CONVERSION_SLACK_NS: u64 = 1_000;
/// Perfetto's builtin clocks (ClockSnapshot).
const CLOCK_MONOTONIC: u32 = 3;
const CLOCK_BOOTTIME: u32 = 6;

/// True when the test may run: root and a working `perf`. Outside CI it skips
/// loudly without them; in CI (CI=true) a missing recorder or perf fails.
fn require_bpf_and_perf() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let perf = Command::new("perf")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let missing = match (root, perf) {
        (true, true) => return true,
        (false, _) => "root (BPF and perf record system-wide)",
        (true, false) => "perf (scripts/install-deps.sh installs it)",
    };
    if ci {
        panic!("CI=true but this test cannot run without {missing}: it must run, not skip");
    }
    eprintln!(
        "\n!!! SKIPPED: the perf cross-check needs {missing} (run: sudo -E cargo test --test record_vs_perf) !!!\n"
    );
    false
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Not a real test: the workload role. Two threads pinned to one CPU
/// ping-pong a byte over pipes, so each round trip is a waking and a switch
/// of each; reports its tgid and the two tids.
#[test]
fn pingpong_entry() {
    if std::env::var(ROLE_ENV).as_deref() != Ok("pingpong") {
        return;
    }
    let report = std::env::var(REPORT_ENV).expect("report path");
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the call only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(PINNED_CPU, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
            0
        );
    }
    let (mut a, mut b) = ([0i32; 2], [0i32; 2]);
    // SAFETY: valid arrays for pipe().
    unsafe {
        assert_eq!(libc::pipe(a.as_mut_ptr()), 0);
        assert_eq!(libc::pipe(b.as_mut_ptr()), 0);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let threads: Vec<_> = [("sl-ping", b[0], a[1]), ("sl-pong", a[0], b[1])]
        .into_iter()
        .enumerate()
        .map(|(i, (name, rd, wr))| {
            let tx = tx.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    tx.send(gettid()).unwrap();
                    let mut byte = [0u8; 1];
                    for round in 0..ROUNDS {
                        // SAFETY: open pipe ends, a 1-byte buffer.
                        unsafe {
                            if i == 0 || round > 0 {
                                assert_eq!(libc::write(wr, byte.as_ptr().cast(), 1), 1);
                            }
                            assert_eq!(libc::read(rd, byte.as_mut_ptr().cast(), 1), 1);
                        }
                    }
                    if i == 1 {
                        // SAFETY: as above.
                        unsafe { assert_eq!(libc::write(wr, byte.as_ptr().cast(), 1), 1) };
                    }
                })
                .unwrap()
        })
        .collect();
    drop(tx);
    for t in threads {
        t.join().unwrap();
    }
    let tids: Vec<String> = rx.iter().map(|t| t.to_string()).collect();
    std::fs::write(
        report,
        format!("{} {}\n", std::process::id(), tids.join(" ")),
    )
    .unwrap();
}

struct Tmp(PathBuf);
impl Tmp {
    fn new(tag: &str) -> Tmp {
        let dir = std::env::temp_dir().join(format!("schedlens-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Tmp(dir)
    }
}
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `perf sched record`, system-wide, started with its events disabled and
/// enabled through its control fifo, so it is recording once `start` returns.
/// Stopped (SIGINT) when dropped if the test fails first.
struct Perf {
    child: Option<Child>,
}

impl Perf {
    fn start(dir: &Path) -> (Perf, PathBuf) {
        let data = dir.join("perf.data");
        let (ctl, ack) = (dir.join("perf.ctl"), dir.join("perf.ack"));
        for fifo in [&ctl, &ack] {
            assert!(Command::new("mkfifo").arg(fifo).status().unwrap().success());
        }
        let child = Command::new("perf")
            .args(["sched", "record", "-k", "mono", "-m", "64M", "-D", "-1"])
            .arg(format!(
                "--control=fifo:{},{}",
                ctl.display(),
                ack.display()
            ))
            .arg("-o")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("perf starts");
        let perf = Perf { child: Some(child) };
        // Opening the fifos waits for perf to open its ends.
        let mut ctl = std::fs::OpenOptions::new().write(true).open(&ctl).unwrap();
        let mut ack = BufReader::new(std::fs::File::open(&ack).unwrap());
        ctl.write_all(b"enable\n").unwrap();
        let mut line = String::new();
        ack.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ack", "perf did not acknowledge enable");
        (perf, data)
    }

    /// Stops perf (SIGINT, as Ctrl-C) and returns its stderr.
    fn stop(mut self) -> String {
        self.interrupt();
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        // perf re-raises the SIGINT it stopped on once the file is written.
        assert!(
            stderr.contains("Captured and wrote"),
            "perf record failed ({:?}): {stderr}",
            out.status
        );
        stderr
    }

    fn interrupt(&self) {
        if let Some(child) = &self.child {
            // SAFETY: kill with the pid of a child we own and have not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        }
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        self.interrupt();
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

/// What both recorders must agree on for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Switch {
        prev_pid: i32,
        prev_state: i64,
        next_pid: i32,
    },
    Waking {
        pid: i32,
        target_cpu: i32,
    },
}

#[derive(Debug, Clone, Copy)]
struct Ev {
    ts: u64,
    key: Key,
    /// perf's events: the times of perf's previous and next records on this
    /// CPU, of any event (0 and u64::MAX at the ends).
    after: u64,
    until: u64,
}

/// The value of `name=` in a perf script line (values have no spaces, except
/// comms, which this does not read).
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    line[at..].split_whitespace().next()
}

/// perf prints prev_state as the tracepoint does: letters joined by '|', "R"
/// for 0, and a '+' for a preemption (TASK_REPORT_MAX).
fn perf_state(s: &str) -> i64 {
    let (letters, preempt) = match s.strip_suffix('+') {
        Some(l) => (l, 0x100),
        None => (s, 0),
    };
    let bits = letters
        .split('|')
        .map(|l| match l {
            "R" => 0,
            "S" => 1,
            "D" => 2,
            "T" => 4,
            "t" => 8,
            "X" => 0x10,
            "Z" => 0x20,
            "P" => 0x40,
            "I" => 0x80,
            other => panic!("unknown prev_state {other:?} in {s:?}"),
        })
        .fold(0, |a, b| a | b);
    bits | preempt
}

/// perf's switches and wakings per CPU (CLOCK_MONOTONIC), records written
/// twice kept once, and the number of events perf reported lost.
fn perf_events(data: &Path) -> (BTreeMap<u32, Vec<Ev>>, u64) {
    // Per CPU, every record's time, and the switches and wakings by index.
    let mut times: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    let mut sched: BTreeMap<u32, Vec<(usize, Ev)>> = BTreeMap::new();
    let out = Command::new("perf")
        .args([
            "script",
            "--ns",
            "--show-lost-events",
            "-F",
            "cpu,time,event,trace",
            "-i",
        ])
        .arg(data)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "perf script failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut per_cpu: BTreeMap<u32, Vec<Ev>> = BTreeMap::new();
    let mut lost = 0;
    let mut last_line: HashMap<u32, &str> = HashMap::new();
    for line in text.lines() {
        if line.contains("LOST") {
            // "... LOST N events!"
            lost += line
                .split_whitespace()
                .skip_while(|w| *w != "LOST")
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(1);
            continue;
        }
        // "[000]  8664.725539081:       sched:sched_waking: comm=... pid=18 ..."
        let Some(rest) = line.trim_start().strip_prefix('[') else {
            continue;
        };
        let Some((cpu, rest)) = rest.split_once(']') else {
            continue;
        };
        let cpu: u32 = cpu.parse().unwrap();
        let mut words = rest.split_whitespace();
        let (Some(time), Some(event)) = (words.next(), words.next()) else {
            continue;
        };
        if last_line.insert(cpu, line) == Some(line) {
            continue; // the same record written twice
        }
        let (secs, ns) = time.trim_end_matches(':').split_once('.').unwrap();
        let ts = secs.parse::<u64>().unwrap() * 1_000_000_000 + ns.parse::<u64>().unwrap();
        let cpu_times = times.entry(cpu).or_default();
        cpu_times.push(ts);
        let key = match event {
            "sched:sched_switch:" => Key::Switch {
                prev_pid: field(line, "prev_pid").unwrap().parse().unwrap(),
                prev_state: perf_state(field(line, "prev_state").unwrap()),
                next_pid: field(line, "next_pid").unwrap().parse().unwrap(),
            },
            "sched:sched_waking:" => Key::Waking {
                pid: field(line, "pid").unwrap().parse().unwrap(),
                target_cpu: field(line, "target_cpu").unwrap().parse().unwrap(),
            },
            _ => continue,
        };
        let index = cpu_times.len() - 1;
        let (after, until) = (0, u64::MAX);
        sched.entry(cpu).or_default().push((
            index,
            Ev {
                ts,
                key,
                after,
                until,
            },
        ));
    }
    for (cpu, evs) in sched {
        let t = &times[&cpu];
        let out = per_cpu.entry(cpu).or_default();
        for (i, mut e) in evs {
            e.after = t[..i]
                .iter()
                .rev()
                .copied()
                .find(|&n| n < e.ts)
                .unwrap_or(0);
            e.until = t[i + 1..]
                .iter()
                .copied()
                .find(|&n| n > e.ts)
                .unwrap_or(u64::MAX);
            out.push(e);
        }
    }
    (per_cpu, lost)
}

/// Our switches and wakings per CPU in stream order, decoded with the
/// official protos: a compact switch's prev is the CPU's previous next; within
/// a bundle full and compact events are merged by time.
fn our_events(packets: &[TracePacket]) -> BTreeMap<u32, Vec<Ev>> {
    let mut per_cpu: BTreeMap<u32, Vec<Ev>> = BTreeMap::new();
    let mut running: HashMap<u32, i32> = HashMap::new();
    for p in packets.iter().filter(|p| p.has_ftrace_events()) {
        let b = p.ftrace_events();
        let cpu = b.cpu();
        // (ts, switch (state, next) or waking, full prev)
        let mut items: Vec<(u64, Item)> = Vec::new();
        for e in &b.event {
            match &e.event {
                Some(Fe::SchedSwitch(s)) => items.push((
                    e.timestamp(),
                    Item::Switch(Some(s.prev_pid()), s.prev_state(), s.next_pid()),
                )),
                Some(Fe::SchedWaking(w)) => {
                    items.push((e.timestamp(), Item::Waking(w.pid(), w.target_cpu())))
                }
                _ => {}
            }
        }
        let c = &b.compact_sched;
        let mut ts = 0u64;
        for k in 0..c.switch_timestamp.len() {
            ts = ts.wrapping_add(c.switch_timestamp[k]);
            items.push((
                ts,
                Item::Switch(None, c.switch_prev_state[k], c.switch_next_pid[k]),
            ));
        }
        let mut ts = 0u64;
        for k in 0..c.waking_timestamp.len() {
            ts = ts.wrapping_add(c.waking_timestamp[k]);
            items.push((ts, Item::Waking(c.waking_pid[k], c.waking_target_cpu[k])));
        }
        items.sort_by_key(|(ts, _)| *ts);
        let out = per_cpu.entry(cpu).or_default();
        for (ts, item) in items {
            let key = match item {
                Item::Switch(prev, prev_state, next_pid) => {
                    let prev_pid = prev
                        .or(running.get(&cpu).copied())
                        .expect("a compact switch before any full one on its CPU");
                    running.insert(cpu, next_pid);
                    Key::Switch {
                        prev_pid,
                        prev_state,
                        next_pid,
                    }
                }
                Item::Waking(pid, target_cpu) => Key::Waking { pid, target_cpu },
            };
            out.push(Ev {
                ts,
                key,
                after: 0,
                until: u64::MAX,
            });
        }
    }
    per_cpu
}

enum Item {
    Switch(Option<i32>, i64, i32),
    Waking(i32, i32),
}

/// BOOTTIME minus MONOTONIC, what turns perf's `-k mono` times into ours,
/// and how far the result may be off. The two are one clock until the machine
/// sleeps, which puts BOOTTIME that long ahead for good; the ClockSnapshot
/// reads them one after the other, so a few microseconds apart is one clock.
fn boot_minus_mono(packets: &[TracePacket]) -> (i64, u64) {
    let snap = packets
        .iter()
        .find(|p| p.has_clock_snapshot())
        .expect("a ClockSnapshot")
        .clock_snapshot();
    let clock = |id: u32| {
        snap.clocks
            .iter()
            .find(|c| c.clock_id() == id)
            .unwrap_or_else(|| panic!("clock {id} in the snapshot"))
            .timestamp() as i64
    };
    let offset = clock(CLOCK_BOOTTIME) - clock(CLOCK_MONOTONIC);
    if offset.abs() <= SAME_CLOCK_NS {
        (0, 0)
    } else {
        eprintln!("BOOTTIME is {offset} ns ahead of MONOTONIC (the machine slept): converting");
        (offset, CONVERSION_SLACK_NS)
    }
}

/// The recorder's start (after every program was attached), from RecorderStats.
fn recording_start(packets: &[TracePacket]) -> u64 {
    use prost::Message as _;
    use protobuf::UnknownValueRef;
    use schedlens::perfetto::proto::schedlens::{SchedlensPacket, schedlens_packet::Data};
    packets
        .iter()
        .find_map(|p| {
            let Some(UnknownValueRef::LengthDelimited(bytes)) = p
                .special_fields
                .unknown_fields()
                .get(oracle::SCHEDLENS_PACKET)
            else {
                return None;
            };
            match SchedlensPacket::decode(bytes).ok()?.data? {
                Data::RecorderStats(s) => s.start_ts,
                _ => None,
            }
        })
        .expect("RecorderStats with start_ts")
}

/// Finds each of perf's events of one CPU in ours, in order: the first of
/// ours after the previous match with the same key, stamped after perf's
/// previous record on the CPU and before its next one. Those bounds are
/// causal, not a tolerance: perf's probe and ours run in the same tracepoint
/// call (in the order they were registered, which is the kernel's business),
/// and a switch or a waking runs with interrupts off, so no other event of
/// that CPU comes between them. How far apart the two stamps are is up to the
/// host: a vCPU it takes away between them delays one by as long.
/// Returns the unmatched ones with both views around them; `deltas` gets our
/// time minus perf's of each match. `slack` widens the bounds by the clock
/// conversion's error.
fn unmatched(perf: &[Ev], ours: &[Ev], slack: u64, deltas: &mut Vec<i64>) -> Vec<String> {
    let mut failures = Vec::new();
    let mut from = 0;
    for p in perf {
        let lo = p.after.saturating_sub(slack);
        let hi = p.until.saturating_add(slack);
        let hit = ours[from..]
            .iter()
            .take_while(|o| o.ts <= hi)
            .position(|o| o.ts >= lo && o.key == p.key)
            .map(|i| from + i);
        match hit {
            Some(i) => {
                deltas.push(ours[i].ts as i64 - p.ts as i64);
                from = i + 1;
            }
            None => {
                // Both views around the miss, relative to perf's time.
                let around = |evs: &[Ev]| -> Vec<String> {
                    let start = evs.partition_point(|e| e.ts + 20_000 < p.ts);
                    evs[start..]
                        .iter()
                        .take_while(|e| e.ts <= p.ts.max(p.until.min(p.ts + 100_000)) + 20_000)
                        .map(|e| format!("{:+} {:?}", e.ts as i64 - p.ts as i64, e.key))
                        .collect()
                };
                failures.push(format!(
                    "perf's {:?} at {} (perf's records before and after it {:+} and {:+} ns): \
                     not in ours between them after the previous match\n  perf: {:?}\n  ours: {:?}",
                    p.key,
                    p.ts,
                    p.after as i64 - p.ts as i64,
                    p.until.saturating_sub(p.ts),
                    around(perf),
                    around(ours)
                ));
            }
        }
    }
    failures
}

#[test]
fn every_switch_and_waking_perf_saw_is_in_the_trace() {
    if !require_bpf_and_perf() {
        return;
    }
    let tmp = Tmp::new("vs-perf");
    let trace = tmp.0.join("t.pftrace");
    let report = tmp.0.join("report");
    let (perf, perf_data) = Perf::start(&tmp.0);
    let out = Command::new(BIN)
        .args(["trace", "-o"])
        .arg(&trace)
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args(["pingpong_entry", "--exact", "--test-threads=1"])
        .env(ROLE_ENV, "pingpong")
        .env(REPORT_ENV, &report)
        .output()
        .unwrap();
    let perf_stderr = perf.stop();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schedlens trace failed: {stderr}");
    assert!(stderr.contains("0 dropped"), "schedlens dropped: {stderr}");
    let ids: Vec<i32> = std::fs::read_to_string(&report)
        .unwrap()
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    let [tgid, ping, pong] = ids[..] else {
        panic!("bad report {ids:?}")
    };

    let decoded = oracle::decode(&trace);
    assert!(
        decoded.complete,
        "the trace does not end on a packet boundary"
    );
    let packets = decoded.packets;
    let (offset, slack) = boot_minus_mono(&packets);
    let (mut perf_cpus, perf_lost) = perf_events(&perf_data);
    assert_eq!(
        perf_lost, 0,
        "perf lost events, the comparison would be partial: {perf_stderr}"
    );
    let convert = |t: u64| match t {
        0 | u64::MAX => t,
        _ => t.saturating_add_signed(offset),
    };
    for e in perf_cpus.values_mut().flatten() {
        (e.ts, e.after, e.until) = (convert(e.ts), convert(e.after), convert(e.until));
    }
    let ours = our_events(&packets);

    // The seconds both recorded: from our start (every program attached) to
    // the workload's last event in perf's view (the recorder detaches only
    // after the command exited).
    let workload = [ping, pong];
    let names_workload = |k: &Key| match *k {
        Key::Switch {
            prev_pid, next_pid, ..
        } => workload.contains(&prev_pid) || workload.contains(&next_pid),
        Key::Waking { pid, .. } => workload.contains(&pid),
    };
    let lo = recording_start(&packets);
    let hi = perf_cpus
        .values()
        .flatten()
        .filter(|e| names_workload(&e.key))
        .map(|e| e.ts)
        .max()
        .expect("perf saw the workload");
    assert!(
        hi > lo,
        "perf's last workload event {hi} before our start {lo}"
    );

    let mut failures = Vec::new();
    let mut compared = 0;
    let mut deltas = Vec::new();
    for (cpu, evs) in &perf_cpus {
        let in_window: Vec<Ev> = evs
            .iter()
            .filter(|e| (lo..=hi).contains(&e.ts))
            .copied()
            .collect();
        compared += in_window.len();
        let empty = Vec::new();
        let mine = ours.get(cpu).unwrap_or(&empty);
        failures.extend(
            unmatched(&in_window, mine, slack, &mut deltas)
                .into_iter()
                .map(|f| format!("cpu {cpu}: {f}")),
        );
    }
    deltas.sort_unstable();
    let pct = |p: usize| {
        deltas
            .get(deltas.len().saturating_sub(1) * p / 1000)
            .copied()
    };
    eprintln!(
        "matched {} of perf's {compared} events; ours minus perf: median {:?}, p99.9 {:?}, min {:?}, max {:?} ns",
        deltas.len(),
        pct(500),
        pct(999),
        deltas.first(),
        deltas.last()
    );
    assert!(
        failures.is_empty(),
        "{} of perf's {compared} switches and wakings are not in our trace at the same place \
         (first 10):\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );

    // Per workload thread, over its whole life (both recorders ran before it
    // was born and after it died): as many wakings as perf saw, and at least
    // as many switches in; and the ping-pong did what it does.
    let count = |cpus: &BTreeMap<u32, Vec<Ev>>, f: &dyn Fn(&Key) -> bool| {
        cpus.values().flatten().filter(|e| f(&e.key)).count()
    };
    for tid in workload {
        let woken = |k: &Key| matches!(*k, Key::Waking { pid, .. } if pid == tid);
        let switched_in = |k: &Key| matches!(*k, Key::Switch { next_pid, .. } if next_pid == tid);
        let (ours_woken, perf_woken) = (count(&ours, &woken), count(&perf_cpus, &woken));
        assert_eq!(ours_woken, perf_woken, "wakings of {tid} (tgid {tgid})");
        // A round trip wakes each thread unless it was preempted before
        // its read blocked (the machine is shared).
        assert!(
            ours_woken >= ROUNDS / 4,
            "{tid} woken {ours_woken} times in {ROUNDS} round trips"
        );
        let (ours_in, perf_in) = (count(&ours, &switched_in), count(&perf_cpus, &switched_in));
        assert!(
            ours_in >= perf_in && ours_in >= ours_woken,
            "{tid} switched in {ours_in} times (woken {ours_woken}), perf saw {perf_in}"
        );
    }
}
