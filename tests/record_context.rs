//! Recording what else uses the CPU: `schedlens trace` around a workload that
//! makes known interrupts (fsync'd writes: block-device IRQs; loopback TCP
//! traffic: NET_RX softirqs), moves itself between CPUs a known number of
//! times (sched_setaffinity) and waits for its writes, then the trace decoded
//! with Perfetto's official protos and loaded by the importer. The kernel's own counters
//! (/proc/interrupts, /proc/softirqs) bound what the trace must hold: every
//! handler run the workload saw (read at its start and end, inside the
//! recording) is in the trace, and the trace holds no more than ran between
//! before the recorder started and after it ended. A second recording (the
//! opt-in ipi and workqueue groups) runs a workload of known IPIs (membarrier
//! calls while a thread of the process spins on the other CPU) and known work
//! items (writes to a pseudo-terminal, each pushed to its reader by one run of
//! the tty's flip-buffer work). Needs root; see `require_bpf`.
#![cfg(feature = "record")]

mod oracle;
mod root;

use perfetto_protos::ftrace_event::ftrace_event::Event as Fe;
use root::{boottime, fifo, pin};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_schedlens");
/// Selects the workload role when this binary is re-executed.
const ROLE_ENV: &str = "SCHEDLENS_TEST_ROLE";
const REPORT_ENV: &str = "SCHEDLENS_TEST_REPORT";
/// fsync'd writes, each at least one block-device request and its IRQ.
const SYNCED_WRITES: usize = 50;
/// Messages echoed over loopback TCP.
const MESSAGES: usize = 500;
/// Times the workload moves itself to the other CPU with sched_setaffinity.
const MOVES: usize = 40;

/// Per (row, cpu) counts of /proc/interrupts (rows: IRQ numbers) or
/// /proc/softirqs (rows: softirq names).
type Counts = BTreeMap<(String, u32), u64>;

fn kernel_counts(path: &str) -> Counts {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    // The header names the CPUs: "CPU0 CPU1 ...".
    let cpus: Vec<u32> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|c| c.trim_start_matches("CPU").parse().unwrap())
        .collect();
    let mut counts = Counts::new();
    for line in lines {
        let mut f = line.split_whitespace();
        let Some(row) = f.next().and_then(|r| r.strip_suffix(':')) else {
            continue;
        };
        for (&cpu, n) in cpus.iter().zip(f) {
            if let Ok(n) = n.parse() {
                counts.insert((row.to_string(), cpu), n);
            }
        }
    }
    counts
}

fn delta(before: &Counts, after: &Counts) -> Counts {
    after
        .iter()
        .map(|(k, &n)| (k.clone(), n - before.get(k).copied().unwrap_or(0)))
        .collect()
}

fn write_counts(out: &mut String, tag: &str, counts: &Counts) {
    for ((row, cpu), n) in counts {
        *out += &format!("{tag} {row} {cpu} {n}\n");
    }
}

/// Not a real test: the entry point of the workload role.
#[test]
fn context_workload_entry() {
    if std::env::var(ROLE_ENV).as_deref() != Ok("context") {
        return;
    }
    let report = PathBuf::from(std::env::var(REPORT_ENV).expect("report path"));
    let irqs = kernel_counts("/proc/interrupts");
    let softirqs = kernel_counts("/proc/softirqs");

    // Block-device IRQs: small writes, each forced to the disk.
    let scratch = report.with_extension("scratch");
    let mut f = std::fs::File::create(&scratch).unwrap();
    for i in 0..SYNCED_WRITES {
        f.write_all(&[i as u8; 4096]).unwrap();
        f.sync_data().unwrap();
    }
    drop(f);
    std::fs::remove_file(&scratch).unwrap();

    // NET_RX softirqs: loopback delivers every segment through one.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..MESSAGES {
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        }
    });
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = [7u8; 64];
    for _ in 0..MESSAGES {
        s.write_all(&buf).unwrap();
        s.read_exact(&mut buf).unwrap();
    }
    echo.join().unwrap();

    // Migrations: pinned to one CPU at a time, the thread moves only when
    // it moves itself.
    // SAFETY: gettid and sched_getcpu have no preconditions.
    let (tid, here) = unsafe { (libc::gettid(), libc::sched_getcpu() as usize) };
    let other = if here == 0 { 1 } else { 0 };
    pin(here);
    let moves_start = boottime();
    for i in 0..MOVES {
        pin(if i % 2 == 0 { other } else { here });
    }
    let moves_end = boottime();

    let mut out = format!("moves {tid} {moves_start} {moves_end}\n");
    write_counts(
        &mut out,
        "irq",
        &delta(&irqs, &kernel_counts("/proc/interrupts")),
    );
    write_counts(
        &mut out,
        "softirq",
        &delta(&softirqs, &kernel_counts("/proc/softirqs")),
    );
    std::fs::write(&report, out).unwrap();
}

/// What the workload reported.
#[derive(Default)]
struct Report {
    irqs: Counts,
    softirqs: Counts,
    /// The thread that moved itself, and when it started and ended.
    mover: (i32, i64, i64),
}

fn read_report(path: &Path) -> Report {
    let mut r = Report::default();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f[0] == "moves" {
            r.mover = (
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            );
            continue;
        }
        let key = (f[1].to_string(), f[2].parse().unwrap());
        let n = f[3].parse().unwrap();
        match f[0] {
            "irq" => r.irqs.insert(key, n),
            "softirq" => r.softirqs.insert(key, n),
            other => panic!("bad report line {other}"),
        };
    }
    r
}

/// /proc/softirqs' row names by softirq number (the kernel's softirq_to_name).
const SOFTIRQ_ROWS: [&str; 10] = [
    "HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU",
];

#[test]
fn records_irqs_and_softirqs_the_kernel_counted() {
    if !root::require_bpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pftrace");
    let report = dir.path().join("report");
    let irqs_before = kernel_counts("/proc/interrupts");
    let softirqs_before = kernel_counts("/proc/softirqs");
    let out = Command::new(BIN)
        .args(["trace", "-o"])
        .arg(&trace)
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args([
            "context_workload_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_ENV, "context")
        .env(REPORT_ENV, &report)
        .output()
        .unwrap();
    let irqs_outer = delta(&irqs_before, &kernel_counts("/proc/interrupts"));
    let softirqs_outer = delta(&softirqs_before, &kernel_counts("/proc/softirqs"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schedlens trace failed: {stderr}");
    assert!(stderr.contains("0 dropped"), "summary: {stderr}");
    let Report {
        irqs: irqs_inner,
        softirqs: softirqs_inner,
        mover: (mover, moves_start, moves_end),
    } = read_report(&report);

    // What the trace holds, per (IRQ number or softirq name, cpu).
    let decoded = oracle::decode(&trace);
    assert!(decoded.complete);
    let (mut irqs, mut softirqs) = (Counts::new(), Counts::new());
    let mut irq_names: BTreeMap<i32, std::collections::BTreeSet<String>> = BTreeMap::new();
    let mut moves = Vec::new();
    let mut idle_events = 0i64;
    let mut handled_exits = 0u64;
    for p in &decoded.packets {
        for e in &p.ftrace_events().event {
            let cpu = p.ftrace_events().cpu();
            match &e.event {
                Some(Fe::SchedMigrateTask(m)) if m.pid() == mover => {
                    let ts = e.timestamp() as i64;
                    if (moves_start..moves_end).contains(&ts) {
                        moves.push((ts, m.orig_cpu(), m.dest_cpu()));
                    }
                }
                Some(Fe::IrqHandlerEntry(x)) => {
                    *irqs.entry((x.irq().to_string(), cpu)).or_default() += 1;
                    irq_names
                        .entry(x.irq())
                        .or_default()
                        .insert(x.name().to_string());
                }
                Some(Fe::IrqHandlerExit(x)) if x.ret() == 1 => handled_exits += 1,
                Some(Fe::CpuIdle(_)) => idle_events += 1,
                Some(Fe::SoftirqEntry(x)) => {
                    let row = SOFTIRQ_ROWS[x.vec() as usize].to_string();
                    *softirqs.entry((row, cpu)).or_default() += 1;
                }
                _ => {}
            }
        }
    }
    // Every run the workload saw is in the trace; the trace holds no more
    // than the kernel ran around the recording (`bounded` rows).
    let check = |what: &str,
                 trace: &Counts,
                 inner: &Counts,
                 outer: &Counts,
                 bounded: &dyn Fn(&str) -> bool| {
        for (key, &n) in inner.iter().filter(|(k, _)| bounded(&k.0)) {
            let got = trace.get(key).copied().unwrap_or(0);
            assert!(
                got >= n,
                "{what} {key:?}: the workload saw {n}, the trace has {got}"
            );
        }
        for (key, &got) in trace.iter().filter(|(k, _)| bounded(&k.0)) {
            let most = outer.get(key).copied().unwrap_or(0);
            assert!(
                got <= most,
                "{what} {key:?}: the trace has {got}, the kernel ran {most}"
            );
        }
    };
    // Device IRQs only (/proc/interrupts also counts the CPU's own vectors,
    // LOC, CAL, ..., which are no irq_handler events), and of those the lines
    // with one handler (a shared line runs each of its handlers).
    check("irq", &irqs, &irqs_inner, &irqs_outer, &|irq| {
        irq.parse::<i32>()
            .is_ok_and(|n| irq_names.get(&n).is_none_or(|names| names.len() == 1))
    });
    check(
        "softirq",
        &softirqs,
        &softirqs_inner,
        &softirqs_outer,
        &|_| true,
    );
    // The workload made both kinds.
    let sum = |c: &Counts, row: Option<&str>| -> u64 {
        c.iter()
            .filter(|((r, _), _)| row.is_none_or(|row| r == row))
            .map(|(_, n)| n)
            .sum()
    };
    let device_irqs: u64 = irqs_inner
        .iter()
        .filter(|((r, _), _)| r.parse::<i32>().is_ok())
        .map(|(_, n)| n)
        .sum();
    assert!(
        device_irqs > 0,
        "the fsync'd writes raised no device IRQ: {irqs_inner:?}"
    );
    assert!(
        sum(&softirqs_inner, Some("NET_RX")) > 0,
        "no NET_RX softirq: {softirqs_inner:?}"
    );
    assert!(sum(&irqs, None) >= device_irqs);

    // Each move is one migration, alternating between the two CPUs.
    moves.sort();
    assert_eq!(moves.len(), MOVES, "migrations of {mover}: {moves:?}");
    for pair in moves.windows(2) {
        assert_eq!(pair[0].2, pair[1].1, "not from where it went: {moves:?}");
        assert_ne!(pair[1].1, pair[1].2);
    }

    // Loaded: each IRQ and softirq entry is a slice on its CPU's track.
    let db = dir.path().join("t.db");
    schedlens::analyzer::db::build_into(&trace, &db).unwrap();
    let conn = schedlens::analyzer::db::open_readonly(&db).unwrap();
    let slices = |kind: &str| -> u64 {
        conn.query_row(
            "SELECT count(*) FROM slice s JOIN track t ON t.id = s.track_id WHERE t.type = ?1",
            [kind],
            |r| r.get::<_, i64>(0),
        )
        .unwrap() as u64
    };
    assert_eq!(slices("cpu_irq"), sum(&irqs, None));
    assert_eq!(slices("cpu_softirq"), sum(&softirqs, None));
    let net_rx: i64 = conn
        .query_row(
            "SELECT count(*) FROM slice WHERE name = 'NET_RX'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(net_rx as u64, sum(&softirqs, Some("NET_RX")));
    // Each ended slice has its exit's field as an arg, as trace_processor
    // gives it: a softirq its vec (the number its name is for), an IRQ its
    // ret; the handled ones are the trace's handled exits that closed one.
    let mut st = conn
        .prepare(
            "SELECT s.name, t.type, EXTRACT_ARG(s.arg_set_id, 'vec'), \
             EXTRACT_ARG(s.arg_set_id, 'ret') FROM slice s JOIN track t ON t.id = s.track_id \
             WHERE t.type IN ('cpu_irq', 'cpu_softirq') AND s.dur >= 0",
        )
        .unwrap();
    let mut handled_slices = 0u64;
    let ended = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })
        .unwrap();
    for row in ended {
        let (name, track, vec, ret) = row.unwrap();
        if track == "cpu_softirq" {
            let vec = vec.unwrap_or_else(|| panic!("softirq {name} without vec"));
            assert_eq!(SOFTIRQ_ROWS[vec as usize], name);
        } else {
            match ret.as_deref() {
                Some("handled") => handled_slices += 1,
                Some("unhandled") => {}
                other => panic!("IRQ {name} with ret {other:?}"),
            }
        }
    }
    assert!(
        handled_slices > 0 && handled_slices <= handled_exits,
        "handled IRQ slices {handled_slices}, the trace's handled exits {handled_exits}"
    );
    let loaded_moves: i64 = conn
        .query_row(
            "SELECT count(*) FROM migration m JOIN thread t USING (utid) \
             WHERE t.tid = ?1 AND m.ts >= ?2 AND m.ts < ?3 AND m.from_cpu <> m.to_cpu \
             AND m.running IS NOT NULL",
            (mover, moves_start, moves_end),
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(loaded_moves as usize, MOVES);

    // Each CPU's time tiles into task, IRQ, softirq and idle time: none
    // negative, the interrupt parts the slices' own time.
    let u = schedlens::analyses::cpu_utilization::cpu_utilization(
        &conn,
        schedlens::analyses::timespec::resolve_window(&conn, None).unwrap(),
        schedlens::analyses::cpu_utilization::GroupBy::Cpu,
    )
    .unwrap();
    let ns = |d: &schedlens::analyses::durations::Dur| d.ns.0;
    for g in &u.groups {
        let parts = [ns(&g.task), ns(&g.irq), ns(&g.softirq), ns(&g.idle)];
        assert!(parts.iter().all(|&p| p >= 0), "cpu {}: {parts:?}", g.id);
        assert_eq!(parts.iter().sum::<i64>(), ns(&g.capacity), "cpu {}", g.id);
        assert!(ns(&g.task) <= ns(&g.busy));
    }
    let slice_ns: i64 = conn
        .query_row(
            "SELECT sum(CASE WHEN s.dur < 0 THEN b.end_ts - s.ts ELSE s.dur END) \
             FROM slice s JOIN track t ON t.id = s.track_id, trace_bounds b \
             WHERE t.type = 'cpu_irq'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        ns(&u.total.irq),
        slice_ns,
        "IRQ handlers do not nest on a CPU"
    );
    assert!(ns(&u.total.softirq) > 0);

    // The trace says which cpufreq driver the machine has ("none": no
    // frequency tracks can appear), and the CPUs went idle while the
    // workload waited for its writes.
    let driver: String = conn
        .query_row(
            "SELECT str_value FROM metadata WHERE name = 'cpufreq_driver'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let expected = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/scaling_driver")
        .map_or_else(|_| "none".to_string(), |d| d.trim().to_string());
    assert_eq!(driver, expected);
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    if driver == "none" {
        assert_eq!(
            count("SELECT count(*) FROM track WHERE type = 'cpu_frequency'"),
            0
        );
    }
    // Each cpu_idle event is a sample of its CPU's cpuidle counter. (This
    // test's VM fires none: its haltpoll idle path has no cpu_idle
    // tracepoint calls, which ftrace confirms; idle time is swapper's.)
    assert_eq!(
        count(
            "SELECT count(*) FROM counter c JOIN track t ON t.id = c.track_id \
             WHERE t.type = 'cpu_idle'"
        ),
        idle_events
    );
}

/// membarrier(2) calls, each an IPI to the spinner's CPU while it runs there.
const MEMBARRIERS: usize = 200;
/// Bytes written one at a time to a pseudo-terminal and read back.
const PTY_WRITES: usize = 100;
/// membarrier(2) commands (include/uapi/linux/membarrier.h).
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

/// Not a real test: the entry point of the IPI and work item workload.
#[test]
fn ipi_work_workload_entry() {
    if std::env::var(ROLE_ENV).as_deref() != Ok("ipi_work") {
        return;
    }
    use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
    let report = PathBuf::from(std::env::var(REPORT_ENV).expect("report path"));
    let membarrier = |cmd: libc::c_long| {
        // SAFETY: membarrier takes two integers and reads no memory.
        let rc = unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) };
        assert_eq!(
            rc,
            0,
            "membarrier {cmd}: {}",
            std::io::Error::last_os_error()
        );
    };
    // This thread on CPU 0, a SCHED_FIFO spinner of the same process on
    // CPU 1: each expedited membarrier interrupts the spinner's CPU, as
    // long as the spinner is what runs there.
    pin(0);
    membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED);
    static STOP: AtomicBool = AtomicBool::new(false);
    static SPINNER: AtomicI32 = AtomicI32::new(0);
    let spinner = std::thread::spawn(|| {
        pin(1);
        fifo(10);
        // SAFETY: gettid has no preconditions.
        SPINNER.store(unsafe { libc::gettid() }, Ordering::SeqCst);
        while !STOP.load(Ordering::Relaxed) {
            std::hint::spin_loop();
        }
    });
    while SPINNER.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let mut out = format!("membarrier {tid} {}\n", SPINNER.load(Ordering::SeqCst));
    for _ in 0..MEMBARRIERS {
        let start = boottime();
        membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED);
        out += &format!("call {start} {}\n", boottime());
    }
    STOP.store(true, Ordering::Relaxed);
    spinner.join().unwrap();

    // A pseudo-terminal in raw mode (no echo): each byte written to the
    // master reaches the slave's reader through one run of flush_to_ldisc,
    // queued by the write and done before the read returns.
    // SAFETY: plain libc calls on descriptors this code opens; ptsname_r
    // writes at most buf.len() bytes; termios is written by tcgetattr.
    let (master, slave) = unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(master >= 0, "posix_openpt");
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let mut name = [0 as libc::c_char; 64];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        let slave = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        assert!(slave >= 0, "opening the pty's slave");
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(slave, &mut t), 0);
        libc::cfmakeraw(&mut t);
        assert_eq!(libc::tcsetattr(slave, libc::TCSANOW, &t), 0);
        (master, slave)
    };
    let start = boottime();
    for i in 0..PTY_WRITES {
        let mut b = [i as u8];
        // SAFETY: b is a valid one-byte buffer.
        unsafe {
            assert_eq!(libc::write(master, b.as_ptr().cast(), 1), 1);
            assert_eq!(libc::read(slave, b.as_mut_ptr().cast(), 1), 1);
        }
        assert_eq!(b[0], i as u8);
    }
    let end = boottime();
    // SAFETY: both are descriptors this code opened.
    unsafe {
        libc::close(slave);
        libc::close(master);
    }
    out += &format!("pty {tid} {start} {end}\n");
    std::fs::write(&report, out).unwrap();
}

/// ipi_send_cpu's fields as the recorder writes them: a GenericFtraceEvent.
fn generic_fields(g: &perfetto_protos::generic::GenericFtraceEvent) -> BTreeMap<String, String> {
    use perfetto_protos::generic::generic_ftrace_event::field::Value;
    g.field
        .iter()
        .map(|f| {
            let v = match &f.value {
                Some(Value::StrValue(s)) => s.clone(),
                Some(Value::IntValue(v)) => v.to_string(),
                Some(Value::UintValue(v)) => v.to_string(),
                _ => String::new(),
            };
            (f.name().to_string(), v)
        })
        .collect()
}

#[test]
fn records_the_ipis_and_work_items_the_workload_made() {
    if !root::require_bpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pftrace");
    let report = dir.path().join("report");
    let out = Command::new(BIN)
        .args(["trace", "--events", "ipi,workqueue", "-o"])
        .arg(&trace)
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args([
            "ipi_work_workload_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_ENV, "ipi_work")
        .env(REPORT_ENV, &report)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schedlens trace failed: {stderr}");
    assert!(stderr.contains("0 dropped"), "summary: {stderr}");
    let text = std::fs::read_to_string(&report).unwrap();
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    let num = |s: &str| -> i64 { s.parse().unwrap() };
    let caller = num(lines[0][1]) as u32;
    let spinner = num(lines[0][2]);
    let calls: Vec<(i64, i64)> = lines
        .iter()
        .filter(|l| l[0] == "call")
        .map(|l| (num(l[1]), num(l[2])))
        .collect();
    let pty = lines.iter().find(|l| l[0] == "pty").unwrap();
    let (writer, pty_start, pty_end) = (num(pty[1]) as u32, num(pty[2]), num(pty[3]));
    assert_eq!(calls.len(), MEMBARRIERS);

    // Decoded with the official protos, functions named through each
    // packet's sequence's interned kernel symbols as trace_processor does.
    let decoded = oracle::decode(&trace);
    assert!(decoded.complete);
    let mut membarrier_ipis = Vec::new();
    let mut queued = Vec::new();
    // (ts, cpu, kworker, work, function) of each start and end.
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    oracle::with_kernel_symbols(&decoded.packets, |p, symbols| {
        if !p.has_ftrace_events() {
            return;
        }
        let cpu = p.ftrace_events().cpu();
        let name = |f: u64| symbols.get(&f).cloned().unwrap_or_default();
        for e in &p.ftrace_events().event {
            let ts = e.timestamp() as i64;
            match &e.event {
                Some(Fe::Generic(g)) if g.event_name() == "ipi_send_cpu" && e.pid() == caller => {
                    let f = generic_fields(g);
                    if f["callsite"] == "membarrier_private_expedited" {
                        membarrier_ipis.push((ts, cpu, f["cpu"].clone(), f["callback"].clone()));
                    }
                }
                Some(Fe::WorkqueueQueueWork(q))
                    if e.pid() == writer && (pty_start..=pty_end).contains(&ts) =>
                {
                    queued.push((q.work(), name(q.function())));
                }
                Some(Fe::WorkqueueExecuteStart(w)) => {
                    starts.push((ts, cpu, e.pid(), w.work(), name(w.function())))
                }
                Some(Fe::WorkqueueExecuteEnd(w)) => {
                    ends.push((ts, cpu, e.pid(), w.work(), name(w.function())))
                }
                _ => {}
            }
        }
    });

    // Loaded: the spinner's time on CPU 1 says which calls had to interrupt
    // it (it ran there through the call) and which could have (it ran there
    // at some time of the call, give or take the tracepoints' 10 us).
    let db = dir.path().join("t.db");
    schedlens::analyzer::db::build_into(&trace, &db).unwrap();
    let conn = schedlens::analyzer::db::open_readonly(&db).unwrap();
    let spinner_slices: Vec<(i64, i64)> = conn
        .prepare(
            "SELECT s.ts, s.ts + s.dur FROM sched_slice s JOIN thread t USING (utid) \
             WHERE t.tid = ?1 AND s.cpu = 1 AND s.dur > 0",
        )
        .unwrap()
        .query_map([spinner], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    const SLACK: i64 = 10_000;
    let must = calls
        .iter()
        .filter(|&&(a, b)| spinner_slices.iter().any(|&(s, e)| s <= a && b <= e))
        .count();
    let may = calls
        .iter()
        .filter(|&&(a, b)| {
            spinner_slices
                .iter()
                .any(|&(s, e)| s < b + SLACK && a - SLACK < e)
        })
        .count();
    assert!(
        must >= MEMBARRIERS / 2,
        "the spinner ran through only {must} of {MEMBARRIERS} calls: {spinner_slices:?}"
    );
    assert!(
        (must..=may).contains(&membarrier_ipis.len()),
        "{} membarrier IPIs, {must} to {may} expected",
        membarrier_ipis.len()
    );
    // Each during a call, at most one per call, from CPU 0 to CPU 1, to run
    // a named function there.
    let mut per_call = vec![0; calls.len()];
    for (ts, cpu, target, callback) in &membarrier_ipis {
        let call = calls
            .iter()
            .position(|&(a, b)| (a..=b).contains(ts))
            .unwrap_or_else(|| panic!("an IPI at {ts} outside every call"));
        per_call[call] += 1;
        assert_eq!((*cpu, target.as_str()), (0, "1"));
        assert!(
            !callback.is_empty() && callback.parse::<u64>().is_err(),
            "callback {callback:?} is not a function name"
        );
    }
    assert!(per_call.iter().all(|&n| n <= 1), "{per_call:?}");
    let loaded: i64 = conn
        .query_row(
            "SELECT count(*) FROM ftrace_event e JOIN thread t USING (utid) \
             WHERE e.name = 'ipi_send_cpu' AND t.tid = ?1 \
             AND EXTRACT_ARG(e.arg_set_id, 'callsite') = 'membarrier_private_expedited' \
             AND EXTRACT_ARG(e.arg_set_id, 'cpu') = 1",
            [caller],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(loaded as usize, membarrier_ipis.len());

    // Each write queued the slave's flip-buffer work once (one work_struct;
    // closing the terminal queues others), and a kworker ran it once per
    // write, each run ended on its CPU.
    assert_eq!(
        queued.len(),
        PTY_WRITES,
        "work queued by the writer: {queued:?}"
    );
    let work = queued[0].0;
    assert!(
        queued
            .iter()
            .all(|q| q == &(work, "flush_to_ldisc".to_string())),
        "{queued:?}"
    );
    let runs: Vec<_> = starts.iter().filter(|s| s.3 == work).collect();
    assert_eq!(runs.len(), PTY_WRITES);
    for &&(ts, cpu, kworker, _, ref function) in &runs {
        assert_eq!(function, "flush_to_ldisc");
        assert!((pty_start..=pty_end).contains(&ts));
        assert!(
            ends.iter()
                .any(|e| e.0 >= ts && (e.1, e.2, e.3) == (cpu, kworker, work)),
            "the run at {ts} never ended"
        );
    }
    // Loaded: every run of flush_to_ldisc in the trace is a slice of its
    // kworker's thread track, and none is left open.
    let decoded_runs = starts.iter().filter(|s| s.4 == "flush_to_ldisc").count();
    let (slices, open, kworkers): (i64, i64, i64) = conn
        .query_row(
            "SELECT count(*), count(*) FILTER (WHERE s.dur < 0), \
             count(*) FILTER (WHERE th.name LIKE 'kworker/%') \
             FROM slice s JOIN thread_track t ON t.id = s.track_id JOIN thread th USING (utid) \
             WHERE s.name = 'flush_to_ldisc' AND s.category = 'workqueue' \
             AND t.type = 'thread_execution'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(slices as usize, decoded_runs);
    assert_eq!((open, kworkers), (0, slices));
    let loaded_queued: i64 = conn
        .query_row(
            "SELECT count(*) FROM ftrace_event e JOIN thread t USING (utid) \
             WHERE e.name = 'workqueue_queue_work' AND t.tid = ?1 \
             AND EXTRACT_ARG(e.arg_set_id, 'function') = 'flush_to_ldisc' \
             AND EXTRACT_ARG(e.arg_set_id, 'workqueue') <> ''",
            [writer],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(loaded_queued as usize, PTY_WRITES);
}

/// Sleeps of the timer sleeper, datagrams to the UDP reader (each answered
/// over a pipe).
const SLEEPS: usize = 30;
const DATAGRAMS: usize = 100;

/// Not a real test: the entry point of the wakeups role. Three threads whose
/// wakeups come from known contexts: a sleeper woken by its hrtimer (a hard
/// IRQ), a UDP reader woken by loopback delivery (the NET_RX softirq), and
/// the sender, woken by the reader's write to a pipe (a task).
#[test]
fn wakeups_workload_entry() {
    if std::env::var(ROLE_ENV).as_deref() != Ok("wakeups") {
        return;
    }
    let report = PathBuf::from(std::env::var(REPORT_ENV).expect("report path"));
    let start = boottime();
    // Each thread's own start: before it, its creation made it runnable.
    let sleeper = std::thread::spawn(|| {
        let since = boottime();
        for _ in 0..SLEEPS {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // SAFETY: gettid has no preconditions.
        (unsafe { libc::gettid() }, since)
    });
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = socket.local_addr().unwrap();
    let (mut answers, mut answer) = std::io::pipe().unwrap();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let since = boottime();
        // SAFETY: gettid has no preconditions.
        tid_tx.send(unsafe { libc::gettid() }).unwrap();
        let mut buf = [0u8; 1];
        for _ in 0..DATAGRAMS {
            socket.recv(&mut buf).unwrap();
            answer.write_all(&buf).unwrap();
        }
        // SAFETY: gettid has no preconditions.
        (unsafe { libc::gettid() }, since)
    });
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let reader_tid = tid_rx.recv().unwrap();
    let mut buf = [0u8; 1];
    for _ in 0..DATAGRAMS {
        // Each datagram must find the reader asleep in recv, or no softirq
        // wakes it: on one CPU, the sender, woken by the answer, would
        // otherwise preempt the reader and queue the next datagram before
        // the reader sleeps again, every time. Yielding is no sleep, so the
        // sender's own wakeups stay the pipe's.
        while !asleep(reader_tid) {
            std::thread::yield_now();
        }
        sender.send_to(&buf, to).unwrap();
        answers.read_exact(&mut buf).unwrap();
    }
    let (sleeper, reader) = (sleeper.join().unwrap(), reader.join().unwrap());
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    let end = boottime();
    let (sleeper, reader) = ((sleeper.0, sleeper.1), (reader.0, reader.1));
    std::fs::write(
        report,
        format!(
            "{} {} {} {} {me} {start} {end}\n",
            sleeper.0, sleeper.1, reader.0, reader.1
        ),
    )
    .unwrap();
}

/// Whether thread `tid` of this process is asleep (state S).
fn asleep(tid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // The state follows the name, which may hold spaces and parentheses.
    stat.rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('S'))
}

/// Wakeups from a hard IRQ, a softirq and a task are told apart: in the file
/// (each compact waking's common_flags), in thread_state.irq_context of the
/// runnable state each starts, and in wakeup.irq_context.
#[test]
fn records_the_context_each_wakeup_came_from() {
    if !root::require_bpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pftrace");
    let report = dir.path().join("report");
    let out = Command::new(BIN)
        .args(["trace", "-o"])
        .arg(&trace)
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args([
            "wakeups_workload_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_ENV, "wakeups")
        .env(REPORT_ENV, &report)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schedlens trace failed: {stderr}");
    assert!(stderr.contains("0 dropped"), "summary: {stderr}");
    let f: Vec<i64> = std::fs::read_to_string(&report)
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    // (tid, since) of each thread, and the end.
    let (sleeper, reader, sender, end) = ((f[0], f[1]), (f[2], f[3]), (f[4], f[5]), f[6]);

    // The file: every compact waking has its flags; per wakee, which flags
    // its wakings in the workload's time had.
    // A full sched_waking event carries no flags.
    const FULL: u32 = u32::MAX;
    let mut flags: Vec<(u64, i64, u32)> = Vec::new();
    for p in &oracle::decode(&trace).packets {
        for e in &p.ftrace_events().event {
            if let Some(Fe::SchedWaking(w)) = &e.event {
                flags.push((e.timestamp(), i64::from(w.pid()), FULL));
            }
        }
        let c = &p.ftrace_events().compact_sched;
        assert_eq!(c.waking_common_flags.len(), c.waking_pid.len());
        let mut ts = 0u64;
        for (k, d) in c.waking_timestamp.iter().enumerate() {
            ts += d;
            flags.push((ts, i64::from(c.waking_pid[k]), c.waking_common_flags[k]));
        }
    }
    let of = |(tid, since): (i64, i64)| -> BTreeMap<u32, usize> {
        let mut n = BTreeMap::new();
        for &(ts, pid, f) in &flags {
            if pid == tid && (since..end).contains(&(ts as i64)) {
                *n.entry(f).or_default() += 1;
            }
        }
        n
    };
    // Every wakeup of the sleeper is its timer's, in a hard IRQ (which may
    // have interrupted a softirq: both bits); the
    // reader's are loopback deliveries in NET_RX (they are not all
    // wakeups: a datagram may arrive before it sleeps again); the sender's
    // come from the reader's writes. A waking on a CPU whose running task
    // the file has not named yet (no switch there since the start) is a
    // full event, without flags: rare, never all.
    let (sleeper_flags, reader_flags, sender_flags) = (of(sleeper), of(reader), of(sender));
    // Wakings with flags, each of which has `bit` (none at all for 0).
    let only = |n: &BTreeMap<u32, usize>, bit: u32| -> usize {
        let fits = |f: u32| if bit == 0 { f == 0 } else { f & bit != 0 };
        assert!(n.keys().all(|&f| f == FULL || fits(f)), "{n:?}");
        let known = n.iter().filter(|(f, _)| **f != FULL).map(|(_, k)| k).sum();
        assert!(known > 0, "{n:?}");
        known
    };
    let sleeper_known = only(&sleeper_flags, 0x08);
    let sleeper_wakings = sleeper_flags.values().sum::<usize>();
    let reader_known = only(&reader_flags, 0x10);
    only(&sender_flags, 0);

    // Loaded: the runnable state each wakeup began says where it came
    // from, and so does its wakeup row.
    let db = dir.path().join("t.db");
    schedlens::analyzer::db::build_into(&trace, &db).unwrap();
    let conn = schedlens::analyzer::db::open_readonly(&db).unwrap();
    let contexts = |table: &str, (tid, since): (i64, i64)| -> Vec<(Option<i64>, i64)> {
        let filter = if table == "thread_state" {
            "AND w.state = 'R' AND w.waker_utid IS NOT NULL"
        } else {
            ""
        };
        let sql = format!(
            "SELECT w.irq_context, count(*) FROM {table} w JOIN thread USING (utid) \
             WHERE tid = ?1 AND w.ts >= ?2 AND w.ts < ?3 {filter} GROUP BY 1 ORDER BY 1"
        );
        let mut stmt = conn.prepare(&sql).unwrap();
        stmt.query_map((tid, since, end), |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    // One waking per sleep, but the stream misses a task's switch-in and its
    // waking now and then (this kernel's recordings show it, counted as
    // thread_state_gap, with or without the flags): each gap hides at most
    // one.
    let gaps: i64 = conn
        .query_row(
            "SELECT coalesce(sum(value), 0) FROM stats WHERE name = 'thread_state_gap'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        sleeper_wakings <= SLEEPS && sleeper_wakings + gaps as usize >= SLEEPS,
        "{sleeper_flags:?}, {gaps} gaps"
    );
    // Full wakings: irq_context NULL, as trace_processor has it.
    let rows = |n: &BTreeMap<u32, usize>, known: usize, context: i64| {
        let mut v = Vec::new();
        if let Some(&full) = n.get(&FULL) {
            v.push((None, full as i64));
        }
        v.push((Some(context), known as i64));
        v
    };
    for table in ["thread_state", "wakeup"] {
        assert_eq!(
            contexts(table, sleeper),
            rows(&sleeper_flags, sleeper_known, 1),
            "{table}"
        );
    }
    // A reader's runnable state is one per wakeup that found it asleep;
    // each of its wakeup rows (some found it running) is a delivery's.
    let woke = contexts("thread_state", reader);
    assert!(
        matches!(woke[..], [(Some(1), n)] | [(None, _), (Some(1), n)] if n > 0),
        "{woke:?}"
    );
    assert_eq!(
        contexts("wakeup", reader),
        rows(&reader_flags, reader_known, 1)
    );
    let woke = contexts("thread_state", sender);
    assert!(
        matches!(woke[..], [(Some(0), n)] | [(None, _), (Some(0), n)] if n > 0),
        "{woke:?}"
    );
}
