//! Import of what else uses the CPU (IRQ handlers, softirqs, CPU frequency)
//! from hand-made traces in Perfetto's official definitions (the
//! perfetto_protos crate): the slice and track tables trace_processor makes
//! of them, with the damaged cases a real trace has (an exit whose entry is
//! before the trace, a trace cut inside a handler).

use perfetto_protos::ftrace_event::FtraceEvent;
use perfetto_protos::ftrace_event_bundle::FtraceEventBundle;
use perfetto_protos::irq::{
    IrqHandlerEntryFtraceEvent, IrqHandlerExitFtraceEvent, SoftirqEntryFtraceEvent,
    SoftirqExitFtraceEvent,
};
use perfetto_protos::power::CpuFrequencyFtraceEvent;
use perfetto_protos::trace::Trace;
use perfetto_protos::trace_packet::TracePacket;
use protobuf::Message as _;
use schedlens::analyzer::db;
use std::path::Path;

fn event(ts: u64, pid: u32) -> FtraceEvent {
    let mut e = FtraceEvent::new();
    e.set_timestamp(ts);
    e.set_pid(pid);
    e
}

fn irq_entry(ts: u64, irq: i32, name: &str) -> FtraceEvent {
    let mut b = IrqHandlerEntryFtraceEvent::new();
    b.set_irq(irq);
    b.set_name(name.into());
    let mut e = event(ts, 100);
    e.set_irq_handler_entry(b);
    e
}

fn irq_exit(ts: u64, irq: i32) -> FtraceEvent {
    let mut b = IrqHandlerExitFtraceEvent::new();
    b.set_irq(irq);
    b.set_ret(1);
    let mut e = event(ts, 100);
    e.set_irq_handler_exit(b);
    e
}

fn softirq_entry(ts: u64, vec: u32) -> FtraceEvent {
    let mut b = SoftirqEntryFtraceEvent::new();
    b.set_vec(vec);
    let mut e = event(ts, 100);
    e.set_softirq_entry(b);
    e
}

fn softirq_exit(ts: u64, vec: u32) -> FtraceEvent {
    let mut b = SoftirqExitFtraceEvent::new();
    b.set_vec(vec);
    let mut e = event(ts, 100);
    e.set_softirq_exit(b);
    e
}

fn cpu_frequency(ts: u64, cpu: u32, khz: u32) -> FtraceEvent {
    let mut b = CpuFrequencyFtraceEvent::new();
    b.set_cpu_id(cpu);
    b.set_state(khz);
    let mut e = event(ts, 0);
    e.set_cpu_frequency(b);
    e
}

fn bundle(cpu: u32, events: Vec<FtraceEvent>) -> TracePacket {
    let mut b = FtraceEventBundle::new();
    b.set_cpu(cpu);
    b.event = events;
    let mut p = TracePacket::new();
    p.set_ftrace_events(b);
    p
}

fn load(dir: &Path, packets: Vec<TracePacket>) -> rusqlite::Connection {
    let mut t = Trace::new();
    t.packet = packets;
    let trace = dir.join("t.pftrace");
    std::fs::write(&trace, t.write_to_bytes().unwrap()).unwrap();
    let db = dir.join("t.db");
    db::build_into(&trace, &db).unwrap();
    db::open_readonly(&db).unwrap()
}

fn rows(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        let cols: Vec<String> = (0..n)
            .map(|i| match r.get_ref(i).unwrap() {
                rusqlite::types::ValueRef::Null => "NULL".to_string(),
                rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                rusqlite::types::ValueRef::Real(v) => v.to_string(),
                rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                rusqlite::types::ValueRef::Blob(_) => "blob".to_string(),
            })
            .collect();
        Ok(cols.join(" "))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn stat(conn: &rusqlite::Connection, name: &str) -> i64 {
    conn.query_row(
        "SELECT coalesce(sum(value), 0) FROM stats WHERE name = ?1",
        [name],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn irqs_and_softirqs_become_slices_on_their_cpus_tracks() {
    let dir = tempfile::tempdir().unwrap();
    let conn = load(
        dir.path(),
        vec![
            bundle(
                0,
                vec![
                    irq_entry(1_000, 36, "virtio1-req.0"),
                    irq_exit(1_400, 36),
                    // An IRQ while a softirq runs: the two overlap, each at
                    // depth 0 of its own track.
                    softirq_entry(2_000, 3),
                    irq_entry(2_100, 38, "virtio2-input.0"),
                    irq_exit(2_300, 38),
                    softirq_exit(2_900, 3),
                    softirq_entry(3_000, 1),
                    softirq_exit(3_050, 1),
                    cpu_frequency(3_100, 0, 2_000_000),
                ],
            ),
            bundle(
                1,
                vec![
                    // The trace starts inside a handler: exits without entries.
                    irq_exit(1_100, 41),
                    softirq_exit(1_200, 9),
                    softirq_entry(1_500, 9),
                    softirq_exit(1_700, 9),
                    // A vec past the kernel's softirqs.
                    softirq_entry(1_800, 12),
                    // The trace ends inside a handler.
                    irq_entry(4_000, 42, "virtio3-tx"),
                ],
            ),
        ],
    );
    assert_eq!(
        rows(&conn, "SELECT id, name, type, cpu FROM track ORDER BY id"),
        [
            "0 Irq Cpu 0 cpu_irq 0",
            "1 Irq Cpu 1 cpu_irq 1",
            "2 SoftIrq Cpu 1 cpu_softirq 1",
            "3 SoftIrq Cpu 0 cpu_softirq 0",
            "4 cpufreq cpu_frequency 0",
        ]
    );
    assert_eq!(
        rows(
            &conn,
            "SELECT s.id, s.ts, s.dur, t.name, s.category, s.name, s.depth, s.parent_id \
             FROM slice s JOIN track t ON t.id = s.track_id ORDER BY s.id"
        ),
        [
            "0 1000 400 Irq Cpu 0 irq IRQ (virtio1-req.0) 0 NULL",
            "1 1500 200 SoftIrq Cpu 1 irq RCU 0 NULL",
            "2 2000 900 SoftIrq Cpu 0 irq NET_RX 0 NULL",
            "3 2100 200 Irq Cpu 0 irq IRQ (virtio2-input.0) 0 NULL",
            "4 3000 50 SoftIrq Cpu 0 irq TIMER 0 NULL",
            "5 4000 -1 Irq Cpu 1 irq IRQ (virtio3-tx) 0 NULL",
        ]
    );
    assert_eq!(stat(&conn, "misplaced_end_event"), 2);
    assert_eq!(stat(&conn, "softirq_unknown_vec"), 1);
    // Counter tracks are tracks too: counter.track_id names a track row.
    assert_eq!(
        rows(
            &conn,
            "SELECT c.ts, c.value, t.type, ct.name, ct.cpu FROM counter c \
             JOIN track t ON t.id = c.track_id JOIN counter_track ct ON ct.id = c.track_id"
        ),
        ["3100 2000000 cpu_frequency cpufreq 0"]
    );
}

/// Slices on one track nest: an entry before the open one's exit is its child.
#[test]
fn nested_entries_on_a_track_are_children_of_the_open_slice() {
    let dir = tempfile::tempdir().unwrap();
    let conn = load(
        dir.path(),
        vec![bundle(
            0,
            vec![
                irq_entry(1_000, 36, "outer"),
                irq_entry(1_100, 37, "inner"),
                irq_exit(1_200, 37),
                irq_exit(1_500, 36),
                irq_entry(2_000, 36, "outer"),
                irq_entry(2_100, 37, "inner"),
            ],
        )],
    );
    assert_eq!(
        rows(
            &conn,
            "SELECT id, ts, dur, name, depth, parent_id FROM slice ORDER BY id"
        ),
        [
            "0 1000 500 IRQ (outer) 0 NULL",
            "1 1100 100 IRQ (inner) 1 0",
            "2 2000 -1 IRQ (outer) 0 NULL",
            "3 2100 -1 IRQ (inner) 1 2",
        ]
    );
}

fn migrate(ts: u64, pid: i32, from: i32, to: i32, running: Option<i32>) -> FtraceEvent {
    let mut b = perfetto_protos::sched::SchedMigrateTaskFtraceEvent::new();
    b.set_comm("mover".into());
    b.set_pid(pid);
    b.set_prio(120);
    b.set_orig_cpu(from);
    b.set_dest_cpu(to);
    if let Some(r) = running {
        b.set_running(r);
    }
    let mut e = event(ts, 0);
    e.set_sched_migrate_task(b);
    e
}

/// sched_migrate_task: an ftrace_event row, as in Perfetto, and a migration row.
#[test]
fn migrations_are_ftrace_events_and_migration_rows() {
    let dir = tempfile::tempdir().unwrap();
    let conn = load(
        dir.path(),
        vec![
            bundle(0, vec![migrate(1_000, 77, 0, 1, Some(1))]),
            bundle(
                1,
                vec![
                    migrate(2_000, 77, 1, 0, Some(0)),
                    // Perfetto's own recordings have no running field.
                    migrate(3_000, 78, 1, 0, None),
                ],
            ),
        ],
    );
    assert_eq!(
        rows(
            &conn,
            "SELECT m.ts, t.tid, m.from_cpu, m.to_cpu, m.running FROM migration m \
             JOIN thread t USING (utid) ORDER BY m.ts"
        ),
        ["1000 77 0 1 1", "2000 77 1 0 0", "3000 78 1 0 NULL"]
    );
    assert_eq!(
        rows(
            &conn,
            "SELECT ts, cpu, EXTRACT_ARG(arg_set_id, 'pid'), EXTRACT_ARG(arg_set_id, 'dest_cpu'), \
             EXTRACT_ARG(arg_set_id, 'running') FROM ftrace_event \
             WHERE name = 'sched_migrate_task' ORDER BY ts"
        ),
        ["1000 0 77 1 1", "2000 1 77 0 0", "3000 1 78 0 NULL"]
    );
}

/// cpu_idle and cpu_frequency_limits: counters on their CPU's tracks, named
/// and typed as trace_processor does.
#[test]
fn idle_states_and_frequency_limits_are_counters() {
    let idle = |ts: u64, cpu: u32, state: u32| {
        let mut b = perfetto_protos::power::CpuIdleFtraceEvent::new();
        b.set_state(state);
        b.set_cpu_id(cpu);
        let mut e = event(ts, 0);
        e.set_cpu_idle(b);
        e
    };
    let mut limits = perfetto_protos::power::CpuFrequencyLimitsFtraceEvent::new();
    limits.set_min_freq(400_000);
    limits.set_max_freq(3_000_000);
    limits.set_cpu_id(1);
    let mut limits_event = event(1_500, 0);
    limits_event.set_cpu_frequency_limits(limits);
    let dir = tempfile::tempdir().unwrap();
    let conn = load(
        dir.path(),
        vec![bundle(
            1,
            vec![idle(1_000, 1, 1), limits_event, idle(2_000, 1, u32::MAX)],
        )],
    );
    assert_eq!(
        rows(
            &conn,
            "SELECT c.ts, t.name, t.type, t.cpu, c.value FROM counter c \
             JOIN track t ON t.id = c.track_id ORDER BY c.ts, t.id"
        ),
        [
            "1000 cpuidle cpu_idle 1 1",
            "1500 Cpu 1 Max Freq Limit cpu_max_frequency_limit 1 3000000",
            "1500 Cpu 1 Min Freq Limit cpu_min_frequency_limit 1 400000",
            "2000 cpuidle cpu_idle 1 4294967295",
        ]
    );
    assert_eq!(
        rows(&conn, "SELECT name, cpu FROM counter_track ORDER BY id"),
        [
            "cpuidle 1",
            "Cpu 1 Max Freq Limit 1",
            "Cpu 1 Min Freq Limit 1"
        ]
    );
}
