//! `interference` on a hand-made trace in Perfetto's official definitions
//! (the perfetto_protos crate) whose preemptions, IRQ and softirq slices
//! (nested, cut by the window) and migrations are known: every number of the
//! answer against a nanosecond-by-nanosecond walk of the same model. And the
//! IRQ time `scheduling_latency` and `task_timeline` report in a wait.

use std::collections::BTreeMap;

use perfetto_protos::ftrace_event::FtraceEvent;
use perfetto_protos::ftrace_event_bundle::FtraceEventBundle;
use perfetto_protos::irq::{
    IrqHandlerEntryFtraceEvent, IrqHandlerExitFtraceEvent, SoftirqEntryFtraceEvent,
    SoftirqExitFtraceEvent,
};
use perfetto_protos::sched::{
    SchedMigrateTaskFtraceEvent, SchedSwitchFtraceEvent, SchedWakingFtraceEvent,
};
use perfetto_protos::trace::Trace;
use perfetto_protos::trace_packet::TracePacket;
use protobuf::Message as _;
use schedlens::analyses::interference::{Interference, MAX_STATES, interference};
use schedlens::analyses::scheduling_latency::scheduling_latency;
use schedlens::analyses::task_timeline::{TaskSel, task_timeline};
use schedlens::analyses::tasks::TaskFilter;
use schedlens::analyses::timespec::Window;
use schedlens::analyzer::db;

const VICTIM: i32 = 100;
const HOG: i32 = 200;
const OTHER: i32 = 300;
/// The trace's first event: times in windows are relative to it.
const T0: i64 = 1_000;
const END: i64 = 12_000;

fn comm(pid: i32) -> &'static str {
    match pid {
        VICTIM => "victim",
        HOG => "hog",
        OTHER => "other",
        _ => "swapper/0",
    }
}

/// A thread's run on a CPU: [start, end), and how it left (prev_state:
/// 0 runnable, i.e. preempted; 1 sleeping).
struct Run {
    cpu: u32,
    start: i64,
    end: i64,
    pid: i32,
    left: i64,
}

/// An IRQ (name "IRQ (x)") or softirq (vector) on a CPU: [start, end).
struct Handler {
    cpu: u32,
    start: i64,
    end: i64,
    irq: Option<(i32, &'static str)>,
    softirq: u32,
}

struct Model {
    runs: Vec<Run>,
    handlers: Vec<Handler>,
    /// (ts, waking cpu, wakee pid)
    wakings: Vec<(i64, u32, i32)>,
    /// (ts, cpu, pid, from, to, running)
    migrations: Vec<(i64, u32, i32, i32, i32, i32)>,
}

fn run(cpu: u32, start: i64, end: i64, pid: i32, left: i64) -> Run {
    Run {
        cpu,
        start,
        end,
        pid,
        left,
    }
}

fn irq(cpu: u32, start: i64, end: i64, n: i32, name: &'static str) -> Handler {
    Handler {
        cpu,
        start,
        end,
        irq: Some((n, name)),
        softirq: 0,
    }
}

fn softirq(cpu: u32, start: i64, end: i64, vec: u32) -> Handler {
    Handler {
        cpu,
        start,
        end,
        irq: None,
        softirq: vec,
    }
}

/// Softirq vector names as the kernel (and the slice table) has them.
fn softirq_name(vec: u32) -> &'static str {
    [
        "HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER",
        "RCU",
    ][vec as usize]
}

impl Handler {
    fn name(&self) -> String {
        match self.irq {
            Some((_, n)) => format!("IRQ ({n})"),
            None => softirq_name(self.softirq).to_string(),
        }
    }
}

/// The victim runs on CPU 0, is preempted by the hog, by the hog again and
/// then moved to CPU 1 while waiting (running migration), sleeps, is woken
/// onto CPU 0 (waking migration), sleeps, is woken without a migration and
/// preempted a third time. IRQs and softirqs hit it while it runs and while
/// it waits, one nested in a softirq, one on a CPU it was not waiting for.
fn model() -> Model {
    Model {
        runs: vec![
            run(0, 1_000, 2_000, VICTIM, 0),
            run(0, 2_000, 2_500, HOG, 1),
            run(0, 2_500, 2_800, OTHER, 1),
            run(0, 2_800, 4_000, VICTIM, 0),
            run(0, 4_000, 4_300, HOG, 1),
            run(1, 4_600, 5_000, VICTIM, 1),
            run(0, 5_200, 5_900, OTHER, 1),
            run(0, 6_500, 8_000, VICTIM, 1),
            run(1, 8_500, 9_100, OTHER, 1),
            run(0, 9_200, 9_500, VICTIM, 0),
            run(0, 9_500, 9_800, HOG, 1),
            run(0, 9_800, 9_900, OTHER, 1),
            run(0, 9_900, 10_000, HOG, 1),
            run(0, 10_000, 10_500, VICTIM, 1),
            run(1, 11_000, END, OTHER, 1),
        ],
        handlers: vec![
            irq(0, 1_500, 1_600, 1, "timer"),
            softirq(0, 1_600, 1_700, 1),
            irq(0, 2_100, 2_150, 9, "eth0"),
            softirq(0, 2_200, 2_400, 3),
            irq(0, 2_250, 2_300, 9, "eth0"),
            // On CPU 0 while the victim waits for (and then runs on) CPU 1.
            irq(0, 4_450, 4_500, 1, "timer"),
            irq(1, 4_100, 4_200, 5, "virtio"),
            // CPU 0 is idle, the victim woken onto it waits.
            irq(0, 6_100, 6_150, 9, "eth0"),
            softirq(0, 7_000, 7_300, 1),
            irq(0, 9_300, 9_320, 1, "timer"),
            softirq(0, 9_600, 9_700, 3),
        ],
        wakings: vec![(6_000, 1, VICTIM), (9_000, 1, VICTIM)],
        migrations: vec![
            (4_400, 0, VICTIM, 0, 1, 1),
            (6_010, 1, VICTIM, 1, 0, 0),
            // Not the victim's.
            (8_400, 1, OTHER, 0, 1, 1),
        ],
    }
}

fn base(ts: i64, pid: i32) -> FtraceEvent {
    let mut e = FtraceEvent::new();
    e.set_timestamp(ts as u64);
    e.set_pid(pid as u32);
    e
}

fn switch(ts: i64, prev: i32, prev_state: i64, next: i32) -> FtraceEvent {
    let mut s = SchedSwitchFtraceEvent::new();
    s.set_prev_comm(comm(prev).into());
    s.set_prev_pid(prev);
    s.set_prev_prio(120);
    s.set_prev_state(prev_state);
    s.set_next_comm(comm(next).into());
    s.set_next_pid(next);
    s.set_next_prio(120);
    let mut e = base(ts, prev);
    e.set_sched_switch(s);
    e
}

/// The model as Perfetto ftrace bundles, one per CPU, in time order.
fn encode(m: &Model) -> Vec<u8> {
    let mut per_cpu: BTreeMap<u32, Vec<(i64, FtraceEvent)>> = BTreeMap::new();
    for cpu in [0u32, 1] {
        let mut runs: Vec<&Run> = m.runs.iter().filter(|r| r.cpu == cpu).collect();
        runs.sort_by_key(|r| r.start);
        let mut current: (i32, i64) = (0, 0); // pid running, and how it will leave
        let mut cursor = None::<i64>;
        let events = per_cpu.entry(cpu).or_default();
        for r in runs {
            if let Some(end) = cursor
                && end < r.start
            {
                events.push((end, switch(end, current.0, current.1, 0)));
                current = (0, 0);
            }
            events.push((r.start, switch(r.start, current.0, current.1, r.pid)));
            current = (r.pid, r.left);
            cursor = Some(r.end);
        }
        if let Some(end) = cursor
            && end <= END
        {
            events.push((end, switch(end, current.0, current.1, 0)));
        }
    }
    for h in &m.handlers {
        let (mut entry, mut exit) = (base(h.start, 0), base(h.end, 0));
        match h.irq {
            Some((n, name)) => {
                let mut b = IrqHandlerEntryFtraceEvent::new();
                b.set_irq(n);
                b.set_name(name.into());
                entry.set_irq_handler_entry(b);
                let mut b = IrqHandlerExitFtraceEvent::new();
                b.set_irq(n);
                b.set_ret(1);
                exit.set_irq_handler_exit(b);
            }
            None => {
                let mut b = SoftirqEntryFtraceEvent::new();
                b.set_vec(h.softirq);
                entry.set_softirq_entry(b);
                let mut b = SoftirqExitFtraceEvent::new();
                b.set_vec(h.softirq);
                exit.set_softirq_exit(b);
            }
        }
        let events = per_cpu.entry(h.cpu).or_default();
        events.push((h.start, entry));
        events.push((h.end, exit));
    }
    for &(ts, cpu, pid) in &m.wakings {
        let mut w = SchedWakingFtraceEvent::new();
        w.set_comm(comm(pid).into());
        w.set_pid(pid);
        w.set_prio(120);
        w.set_success(1);
        w.set_target_cpu(0);
        let mut e = base(ts, 0);
        e.set_sched_waking(w);
        per_cpu.entry(cpu).or_default().push((ts, e));
    }
    for &(ts, cpu, pid, from, to, running) in &m.migrations {
        let mut b = SchedMigrateTaskFtraceEvent::new();
        b.set_comm(comm(pid).into());
        b.set_pid(pid);
        b.set_prio(120);
        b.set_orig_cpu(from);
        b.set_dest_cpu(to);
        b.set_running(running);
        let mut e = base(ts, 0);
        e.set_sched_migrate_task(b);
        per_cpu.entry(cpu).or_default().push((ts, e));
    }
    let mut t = Trace::new();
    for (cpu, mut events) in per_cpu {
        // Stable: an exit and the next entry at one time keep their order.
        events.sort_by_key(|e| e.0);
        let mut b = FtraceEventBundle::new();
        b.set_cpu(cpu);
        b.event = events.into_iter().map(|e| e.1).collect();
        let mut p = TracePacket::new();
        p.set_ftrace_events(b);
        t.packet.push(p);
    }
    t.write_to_bytes().unwrap()
}

fn load(dir: &std::path::Path, m: &Model) -> rusqlite::Connection {
    let trace = dir.join("t.pftrace");
    std::fs::write(&trace, encode(m)).unwrap();
    let db = dir.join("t.db");
    db::build_into(&trace, &db).unwrap();
    db::open_readonly(&db).unwrap()
}

/// What the victim was doing at one nanosecond, from the model alone.
#[derive(Debug, Clone, Copy, PartialEq)]
enum At {
    Ran(u32),
    /// Runnable, then ran on this CPU (None: it did not run again).
    Waited(Option<u32>),
    Other,
}

/// The victim's runnable spans: after each preemption and each waking,
/// until it next ran: (start, end, CPU it then ran on, preempted on).
fn victim_waits(m: &Model) -> Vec<(i64, i64, u32, Option<u32>)> {
    let mut runs: Vec<&Run> = m.runs.iter().filter(|r| r.pid == VICTIM).collect();
    runs.sort_by_key(|r| r.start);
    let mut starts: Vec<(i64, Option<u32>)> = runs
        .iter()
        .filter(|r| r.left == 0)
        .map(|r| (r.end, Some(r.cpu)))
        .collect();
    starts.extend(m.wakings.iter().map(|w| (w.0, None)));
    starts.sort();
    starts
        .into_iter()
        .map(|(s, pre)| {
            let next = runs.iter().find(|r| r.start >= s).unwrap();
            (s, next.start, next.cpu, pre)
        })
        .collect()
}

fn victim_at(m: &Model, t: i64) -> At {
    if let Some(r) = m
        .runs
        .iter()
        .find(|r| r.pid == VICTIM && r.start <= t && t < r.end)
    {
        return At::Ran(r.cpu);
    }
    match victim_waits(m).iter().find(|w| w.0 <= t && t < w.1) {
        Some(w) => At::Waited(Some(w.2)),
        None => At::Other,
    }
}

/// The innermost handler on `cpu` at `t`: an IRQ before a softirq, and the
/// latest started among those on one track.
fn handler_at(m: &Model, cpu: u32, t: i64) -> Option<&Handler> {
    m.handlers
        .iter()
        .filter(|h| h.cpu == cpu && h.start <= t && t < h.end)
        .max_by_key(|h| (h.irq.is_some(), h.start))
}

/// The answer computed from the model, nanosecond by nanosecond over
/// [lo, hi) (absolute).
struct Expected {
    running: i64,
    runnable: i64,
    preemptions: usize,
    preempted_wait: i64,
    /// (tid, count, ns)
    preempters: Vec<(i64, usize, i64)>,
    stolen: (i64, i64),
    delayed: (i64, i64),
    /// name -> (stolen, delayed)
    handlers: BTreeMap<String, (i64, i64)>,
    migrations: (usize, usize, usize),
    waits_after: Vec<i64>,
    other_waits: Vec<i64>,
}

fn expected(m: &Model, lo: i64, hi: i64) -> Expected {
    let mut e = Expected {
        running: 0,
        runnable: 0,
        preemptions: 0,
        preempted_wait: 0,
        preempters: Vec::new(),
        stolen: (0, 0),
        delayed: (0, 0),
        handlers: BTreeMap::new(),
        migrations: (0, 0, 0),
        waits_after: Vec::new(),
        other_waits: Vec::new(),
    };
    for t in lo..hi {
        let (cpu, stolen) = match victim_at(m, t) {
            At::Ran(c) => {
                e.running += 1;
                (c, true)
            }
            At::Waited(c) => {
                e.runnable += 1;
                match c {
                    Some(c) => (c, false),
                    None => continue,
                }
            }
            At::Other => continue,
        };
        if let Some(h) = handler_at(m, cpu, t) {
            let slot = e.handlers.entry(h.name()).or_default();
            let split = if stolen {
                slot.0 += 1;
                &mut e.stolen
            } else {
                slot.1 += 1;
                &mut e.delayed
            };
            if h.irq.is_some() {
                split.0 += 1;
            } else {
                split.1 += 1;
            }
        }
    }
    let mut by: BTreeMap<i64, (usize, i64)> = BTreeMap::new();
    for (start, end, _, pre) in victim_waits(m) {
        let Some(cpu) = pre else { continue };
        if start < lo || start >= hi {
            continue;
        }
        e.preemptions += 1;
        let until = end.min(hi);
        e.preempted_wait += until - start;
        let next = m
            .runs
            .iter()
            .find(|r| r.cpu == cpu && r.start == start)
            .unwrap()
            .pid;
        let ns: i64 = (start..until)
            .filter(|&t| {
                m.runs
                    .iter()
                    .any(|r| r.pid == next && r.cpu == cpu && r.start <= t && t < r.end)
            })
            .count() as i64;
        let slot = by.entry(next as i64).or_default();
        slot.0 += 1;
        slot.1 += ns;
    }
    e.preempters = by.into_iter().map(|(t, (n, ns))| (t, n, ns)).collect();
    e.preempters
        .sort_by_key(|&(t, n, ns)| (std::cmp::Reverse(n), std::cmp::Reverse(ns), t));
    let moves: Vec<_> = m
        .migrations
        .iter()
        .filter(|x| x.2 == VICTIM && lo <= x.0 && x.0 < hi)
        .collect();
    e.migrations = (
        moves.len(),
        moves.iter().filter(|x| x.5 == 1).count(),
        moves.iter().filter(|x| x.5 == 0).count(),
    );
    for (start, end, _, _) in victim_waits(m) {
        let len = end.min(hi) - start.max(lo);
        if len <= 0 {
            continue;
        }
        // The wait ending at the first run after the migration.
        let migrated = moves
            .iter()
            .any(|x| end > x.0 && !victim_waits(m).iter().any(|w| w.1 > x.0 && w.1 < end));
        if migrated {
            e.waits_after.push(len);
        } else {
            e.other_waits.push(len);
        }
    }
    e
}

fn stats(mut v: Vec<i64>) -> (usize, Option<i64>, Option<i64>, Option<i64>) {
    v.sort();
    let n = v.len();
    let mean = (n > 0).then(|| v.iter().sum::<i64>() / n as i64);
    // Nearest rank.
    let p50 = (n > 0).then(|| v[(n as f64 * 0.5).ceil() as usize - 1]);
    (n, mean, p50, v.last().copied())
}

fn check(got: &Interference, want: &Expected) {
    assert_eq!(got.threads, 1);
    assert_eq!(got.running.ns.0, want.running, "running");
    assert_eq!(got.runnable.ns.0, want.runnable, "runnable");
    let p = &got.preemptions;
    assert_eq!(p.count, want.preemptions, "preemptions");
    assert_eq!(p.wait.ns.0, want.preempted_wait, "wait after preemptions");
    let by: Vec<(i64, usize, i64)> = p.by.iter().map(|x| (x.tid, x.count, x.ns)).collect();
    assert_eq!(by, want.preempters, "preempters");
    let i = &got.interrupts;
    assert_eq!(
        (i.stolen.irq_ns, i.stolen.softirq_ns),
        want.stolen,
        "stolen"
    );
    assert_eq!(i.stolen.total.ns.0, want.stolen.0 + want.stolen.1);
    assert_eq!(
        (i.delayed.irq_ns, i.delayed.softirq_ns),
        want.delayed,
        "delayed"
    );
    assert_eq!(i.delayed.total.ns.0, want.delayed.0 + want.delayed.1);
    let mut handlers: Vec<(&String, &(i64, i64))> = want.handlers.iter().collect();
    handlers.sort_by_key(|h| std::cmp::Reverse(h.1.0 + h.1.1));
    let got_handlers: BTreeMap<String, (i64, i64)> = i
        .handlers
        .iter()
        .map(|h| (h.name.clone(), (h.stolen_ns, h.delayed_ns)))
        .collect();
    // The top few (3 by default), each with its times.
    assert_eq!(i.handlers.len(), handlers.len().min(3), "{:?}", i.handlers);
    for h in &i.handlers {
        assert_eq!(
            Some(&(h.stolen_ns, h.delayed_ns)),
            want.handlers.get(&h.name),
            "{}",
            h.name
        );
    }
    let top_total: Vec<i64> = handlers.iter().take(3).map(|h| h.1.0 + h.1.1).collect();
    let got_total: Vec<i64> = i
        .handlers
        .iter()
        .map(|h| got_handlers[&h.name].0 + got_handlers[&h.name].1)
        .collect();
    assert_eq!(got_total, top_total, "handlers most time first");
    let mg = &got.migrations;
    assert_eq!(
        (mg.count, mg.running, mg.waking),
        want.migrations,
        "migrations"
    );
    let s =
        |w: &schedlens::analyses::interference::WaitStats| (w.count, w.mean_ns, w.p50_ns, w.max_ns);
    assert_eq!(
        s(&mg.waits_after),
        stats(want.waits_after.clone()),
        "waits after"
    );
    assert_eq!(
        s(&mg.other_waits),
        stats(want.other_waits.clone()),
        "other waits"
    );
}

#[test]
fn interference_matches_a_walk_of_the_model() {
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    let conn = load(dir.path(), &m);
    // The whole trace, then windows that cut handlers, runs and waits, and
    // windows starting at the very nanosecond of a preemption (2000, 4000,
    // 9500), which the window still holds.
    for (lo, hi) in [
        (T0, END),
        (1_550, 9_000),
        (2_120, 4_150),
        (4_250, 6_400),
        (9_310, 9_650),
        (2_000, 9_000),
        (4_000, END),
        (9_500, 9_501),
    ] {
        let w = Window {
            start: lo - T0,
            end: hi - T0,
        };
        let got = interference(&conn, TaskSel::Tid(VICTIM as i64), w, 3).unwrap();
        check(&got, &expected(&m, lo, hi));
    }
    // What the model makes, said once by hand, so the walk itself is checked.
    let all = interference(
        &conn,
        TaskSel::Tid(VICTIM as i64),
        Window {
            start: 0,
            end: END - T0,
        },
        3,
    )
    .unwrap();
    assert_eq!(all.preemptions.count, 3);
    assert_eq!(all.preemptions.by[0].tid, HOG as i64);
    assert_eq!(all.preemptions.by[0].count, 3);
    // 500 + 300 + (300 + 100): the hog ran twice in the third wait.
    assert_eq!(all.preemptions.by[0].ns, 1_200);
    assert_eq!(all.preemptions.by[0].name.as_deref(), Some("hog"));
    assert_eq!(all.migrations.count, 2);
    assert_eq!(all.migrations.waits_after.count, 2);
    // IRQ (eth0) inside NET_RX counts as IRQ, the CPU-0 timer IRQ at 4450
    // (the victim waited for CPU 1 then) not at all.
    assert_eq!(all.interrupts.delayed.irq_ns, 50 + 50 + 100 + 50);
    assert_eq!(all.interrupts.stolen.irq_ns, 100 + 20);
}

#[test]
fn waits_name_the_irq_time_on_their_cpu() {
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    let conn = load(dir.path(), &m);
    let whole = Window {
        start: 0,
        end: END - T0,
    };
    let filter = TaskFilter {
        tid: Some(VICTIM as i64),
        ..TaskFilter::default()
    };
    let l = scheduling_latency(&conn, &filter, whole, 5).unwrap();
    // Woken at 6000 (ran at 6500 on CPU 0, idle but for eth0) and 9000 (ran
    // at 9200 on CPU 0: no handler then).
    assert_eq!(l.worst.len(), 2);
    let irq = l.worst[0].held_by_irq.clone().unwrap();
    assert_eq!((irq.ns, irq.top), (50, vec!["IRQ (eth0)".to_string()]));
    assert!(l.worst[0].held_by.is_empty());
    assert_eq!(l.worst[1].held_by_irq, None);
    // summary's worst waits say it too.
    let text = schedlens::analyses::summary::render(&conn, "t").unwrap();
    let row = text
        .lines()
        .find(|l| l.contains("IRQs 50ns"))
        .unwrap_or_else(|| panic!("no worst-wait row for the 6000 wakeup: {text}"));
    assert!(
        row.contains("IRQs 50ns (IRQ (eth0))") && row.contains("victim"),
        "{row}"
    );
    let tl = task_timeline(&conn, TaskSel::Tid(VICTIM as i64), whole, 100).unwrap();
    let waits: Vec<_> = tl.threads[0]
        .intervals
        .iter()
        .filter(|i| i.held_by.is_some())
        .map(|i| (i.start.ns.0 + T0, i.held_by_irq.clone()))
        .collect();
    let at = |ts: i64| waits.iter().find(|w| w.0 == ts).unwrap().1.clone().unwrap();
    // [2000, 2800) on CPU 0: eth0 50 + 50 inside NET_RX, NET_RX 150.
    let first = at(2_000);
    assert_eq!(first.ns, 250);
    assert_eq!(first.top, ["NET_RX", "IRQ (eth0)"]);
    // [4000, 4600), then on CPU 1: virtio 100 (not CPU 0's timer).
    let second = at(4_000);
    assert_eq!(
        (second.ns, second.top.clone()),
        (100, vec!["IRQ (virtio)".to_string()])
    );
    // [9500, 10000) on CPU 0: NET_RX 100.
    assert_eq!(at(9_500).ns, 100);
}

/// A task with more state changes in the window than a call reads: the
/// answer stops at the first row past `MAX_STATES`, says where, and is exact
/// up to there; asked again from there, it gives the rest.
#[test]
fn a_window_with_more_states_than_a_call_reads_stops_and_says_where() {
    const ROUNDS: i64 = 15_000;
    // The victim runs 100 ns and is preempted by the hog for 100 ns, over
    // and over: its rows alternate Running and R, one every 100 ns.
    let runs = (0..ROUNDS)
        .flat_map(|i| {
            let t = T0 + i * 200;
            [
                run(0, t, t + 100, VICTIM, 0),
                run(0, t + 100, t + 200, HOG, 0),
            ]
        })
        .collect();
    let m = Model {
        runs,
        handlers: vec![],
        wakings: vec![],
        migrations: vec![],
    };
    let dir = tempfile::tempdir().unwrap();
    let conn = load(dir.path(), &m);
    let end = ROUNDS * 200;
    let ask = |start, end| {
        interference(&conn, TaskSel::Tid(VICTIM as i64), Window { start, end }, 3).unwrap()
    };
    let first = ask(0, end);
    let cut = first.walked_until.as_ref().expect("not cut").ns.0;
    assert_eq!(cut, MAX_STATES as i64 * 100, "the row past the budget");
    assert_eq!(first.preemptions.count, MAX_STATES / 2);
    let upto = ask(0, cut);
    assert!(upto.walked_until.is_none());
    assert_eq!(
        serde_json::to_value(&first.preemptions).unwrap(),
        serde_json::to_value(&upto.preemptions).unwrap()
    );
    assert_eq!(first.running, upto.running);
    assert_eq!(first.runnable, upto.runnable);
    let rest = ask(cut, end);
    assert!(rest.walked_until.is_none());
    assert_eq!(
        first.preemptions.count + rest.preemptions.count,
        ROUNDS as usize
    );
    // Resumed at the first nanosecond of the first preemption after the cut,
    // that preemption is still counted.
    let at_preemption = ask(cut + 100, end);
    assert_eq!(
        at_preemption.preemptions.count,
        rest.preemptions.count,
        "from {} ns",
        cut + 100
    );
}
