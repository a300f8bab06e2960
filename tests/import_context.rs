//! Import of what else uses the CPU (IRQ handlers, softirqs, CPU frequency)
//! from hand-made traces in Perfetto's official definitions (the
//! perfetto_protos crate): the slice and track tables trace_processor makes
//! of them, with the damaged cases a real trace has (an exit whose entry is
//! before the trace, a trace cut inside a handler), and where D states wait
//! (sched_blocked_reason).

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
    irq_exit_returning(ts, irq, 1)
}

/// irq_handler_exit whose handler returned `ret` (1: handled, 0: not its device's).
fn irq_exit_returning(ts: u64, irq: i32, ret: i32) -> FtraceEvent {
    let mut b = IrqHandlerExitFtraceEvent::new();
    b.set_irq(irq);
    b.set_ret(ret);
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

/// An IRQ slice's ret and a softirq slice's vec are its args, as trace_processor gives them
/// (an arg set shared by the slices that ended alike); a slice that never ended has none.
#[test]
fn slices_carry_their_exits_fields_as_args() {
    let dir = tempfile::tempdir().unwrap();
    let conn = load(
        dir.path(),
        vec![bundle(
            0,
            vec![
                irq_entry(1_000, 36, "virtio1-req.0"),
                irq_exit_returning(1_100, 36, 1),
                irq_entry(1_200, 36, "virtio1-req.0"),
                irq_exit_returning(1_300, 36, 0),
                softirq_entry(1_400, 3),
                softirq_exit(1_500, 3),
                irq_entry(1_600, 36, "virtio1-req.0"),
                irq_exit_returning(1_700, 36, 1),
                softirq_entry(1_800, 3),
                softirq_exit(1_900, 3),
                softirq_entry(2_000, 9),
            ],
        )],
    );
    assert_eq!(
        rows(
            &conn,
            "SELECT id, name, EXTRACT_ARG(arg_set_id, 'ret'), EXTRACT_ARG(arg_set_id, 'vec') \
             FROM slice ORDER BY id"
        ),
        [
            "0 IRQ (virtio1-req.0) handled NULL",
            "1 IRQ (virtio1-req.0) unhandled NULL",
            "2 NET_RX NULL 3",
            "3 IRQ (virtio1-req.0) handled NULL",
            "4 NET_RX NULL 3",
            "5 RCU NULL NULL",
        ]
    );
    // One set per distinct field, listed by the args view like an event's.
    assert_eq!(
        rows(
            &conn,
            "SELECT a.key, a.value_type, a.display_value, count(*) FROM slice s \
             JOIN args a USING (arg_set_id) GROUP BY s.arg_set_id ORDER BY min(s.id)"
        ),
        [
            "ret string handled 2",
            "ret string unhandled 1",
            "vec int 3 2"
        ]
    );
    assert_eq!(rows(&conn, "SELECT count(*) FROM slice_args"), ["3"]);
    // A lookup by arg_set_id reads the matching rows, not every event's fields.
    let plan = rows(
        &conn,
        "EXPLAIN QUERY PLAN SELECT * FROM args WHERE arg_set_id = 5",
    )
    .join("\n");
    assert!(
        plan.contains("SEARCH e USING INTEGER PRIMARY KEY"),
        "{plan}"
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

fn work_event(ts: u64, kworker: u32, start: bool, work: u64, function: u64) -> FtraceEvent {
    use perfetto_protos::workqueue::{
        WorkqueueExecuteEndFtraceEvent, WorkqueueExecuteStartFtraceEvent,
    };
    let mut e = event(ts, kworker);
    if start {
        let mut b = WorkqueueExecuteStartFtraceEvent::new();
        b.set_work(work);
        b.set_function(function);
        e.set_workqueue_execute_start(b);
    } else {
        let mut b = WorkqueueExecuteEndFtraceEvent::new();
        b.set_work(work);
        b.set_function(function);
        e.set_workqueue_execute_end(b);
    }
    e
}

/// A packet of sequence `seq` that clears its state and interns kernel
/// symbols (iid, name), as Perfetto's symbolize_ksyms writes them.
fn kernel_symbols(seq: u32, symbols: &[(u64, &str)]) -> TracePacket {
    let mut p = TracePacket::new();
    p.set_trusted_packet_sequence_id(seq);
    p.set_sequence_flags(1);
    for &(iid, name) in symbols {
        let mut s = perfetto_protos::profile_common::InternedString::new();
        s.set_iid(iid);
        s.set_str(name.as_bytes().to_vec());
        p.interned_data
            .mut_or_insert_default()
            .kernel_symbols
            .push(s);
    }
    p
}

fn on_sequence(seq: u32, mut p: TracePacket) -> TracePacket {
    p.set_trusted_packet_sequence_id(seq);
    p
}

/// workqueue_execute_start/end: slices on the kworker's thread track named
/// after the work function's interned kernel symbol (its sequence's: the same
/// iid names another function on another sequence), or its address when the
/// sequence names none; an end whose start is before the trace makes no
/// slice, a trace that ends inside a work item leaves it open (dur -1).
/// workqueue_queue_work is an ftrace_event row naming its function.
#[test]
fn work_items_are_slices_on_their_kworkers_thread_tracks() {
    let mut queue = perfetto_protos::workqueue::WorkqueueQueueWorkFtraceEvent::new();
    queue.set_work(0xa0);
    queue.set_function(1);
    queue.set_req_cpu(256);
    // int32 in today's Perfetto, uint32 in these protos: the same varint.
    queue.set_cpu(u32::MAX);
    // The workqueue's name (field 6, in Perfetto's protos since November
    // 2025) is newer than these protos: an unknown field here.
    queue
        .special_fields
        .mut_unknown_fields()
        .add_length_delimited(6, b"events_unbound".to_vec());
    let mut queued = event(900, 55);
    queued.set_workqueue_queue_work(queue);
    let dir = tempfile::tempdir().unwrap();
    let conn = load(
        dir.path(),
        vec![
            kernel_symbols(7, &[(1, "flush_to_ldisc"), (2, "vmstat_update")]),
            kernel_symbols(8, &[(1, "wq_barrier_func")]),
            on_sequence(
                7,
                bundle(
                    0,
                    vec![
                        // The trace starts inside kworker 40's work item.
                        work_event(850, 40, false, 0xc0, 2),
                        queued,
                        work_event(1_000, 40, true, 0xa0, 1),
                        work_event(1_300, 40, false, 0xa0, 1),
                        work_event(2_000, 41, true, 0xb0, 2),
                        work_event(2_500, 41, false, 0xb0, 2),
                        // No symbol for iid 3 on this sequence.
                        work_event(3_000, 40, true, 0xd0, 3),
                        work_event(3_100, 40, false, 0xd0, 3),
                    ],
                ),
            ),
            on_sequence(
                8,
                bundle(
                    1,
                    vec![
                        work_event(1_500, 42, true, 0xe0, 1),
                        work_event(1_600, 42, false, 0xe0, 1),
                        // The trace ends inside a work item.
                        work_event(4_000, 42, true, 0xe8, 1),
                    ],
                ),
            ),
        ],
    );
    assert_eq!(
        rows(
            &conn,
            "SELECT s.ts, s.dur, s.category, s.name, s.depth, t.type, t.name, th.tid \
             FROM slice s JOIN thread_track t ON t.id = s.track_id \
             JOIN thread th USING (utid) ORDER BY s.ts"
        ),
        [
            "1000 300 workqueue flush_to_ldisc 0 thread_execution NULL 40",
            "1500 100 workqueue wq_barrier_func 0 thread_execution NULL 42",
            "2000 500 workqueue vmstat_update 0 thread_execution NULL 41",
            "3000 100 workqueue 0x3 0 thread_execution NULL 40",
            "4000 -1 workqueue wq_barrier_func 0 thread_execution NULL 42",
        ]
    );
    assert_eq!(
        rows(&conn, "SELECT type, name, cpu FROM track ORDER BY id"),
        [
            "thread_execution NULL NULL",
            "thread_execution NULL NULL",
            "thread_execution NULL NULL"
        ]
    );
    assert_eq!(stat(&conn, "misplaced_end_event"), 1);
    assert_eq!(
        rows(
            &conn,
            "SELECT e.ts, t.tid, EXTRACT_ARG(arg_set_id, 'function'), \
             EXTRACT_ARG(arg_set_id, 'workqueue'), EXTRACT_ARG(arg_set_id, 'req_cpu'), \
             EXTRACT_ARG(arg_set_id, 'cpu'), EXTRACT_ARG(arg_set_id, 'work') \
             FROM ftrace_event e JOIN thread t USING (utid)"
        ),
        ["900 55 flush_to_ldisc events_unbound 256 -1 160"]
    );
}

/// IPIs: ipi_raise, ipi_entry and ipi_exit (arm's), and the events Perfetto
/// has no message for (ipi_send_cpu on other kernels) as GenericFtraceEvent,
/// are ftrace_event rows with their fields by name, as in trace_processor.
#[test]
fn ipis_are_ftrace_events_with_named_fields() {
    use perfetto_protos::generic::GenericFtraceEvent;
    use perfetto_protos::generic::generic_ftrace_event::Field;
    use perfetto_protos::ipi::{IpiEntryFtraceEvent, IpiExitFtraceEvent, IpiRaiseFtraceEvent};
    let mut raise = IpiRaiseFtraceEvent::new();
    raise.set_target_cpus(0b110);
    raise.set_reason("Rescheduling interrupts".into());
    let mut raised = event(1_000, 10);
    raised.set_ipi_raise(raise);
    let mut entry = IpiEntryFtraceEvent::new();
    entry.set_reason("Rescheduling interrupts".into());
    let mut entered = event(1_100, 0);
    entered.set_ipi_entry(entry);
    let mut exit = IpiExitFtraceEvent::new();
    exit.set_reason("Rescheduling interrupts".into());
    let mut exited = event(1_200, 0);
    exited.set_ipi_exit(exit);
    let field = |name: &str, f: &dyn Fn(&mut Field)| {
        let mut x = Field::new();
        x.set_name(name.into());
        f(&mut x);
        x
    };
    let mut send = GenericFtraceEvent::new();
    send.set_event_name("ipi_send_cpu".into());
    send.field = vec![
        field("cpu", &|f| f.set_uint_value(1)),
        field("callsite", &|f| {
            f.set_str_value("membarrier_private_expedited".into())
        }),
        field("callback", &|f| f.set_uint_value(0)),
        field("delta", &|f| f.set_int_value(-5)),
    ];
    let mut sent = event(1_050, 10);
    sent.set_generic(send);
    let dir = tempfile::tempdir().unwrap();
    let conn = load(
        dir.path(),
        vec![
            bundle(0, vec![raised, sent]),
            bundle(1, vec![entered, exited]),
        ],
    );
    assert_eq!(
        rows(
            &conn,
            "SELECT e.ts, e.name, e.cpu, t.tid, e.args FROM ftrace_event e \
             JOIN thread t USING (utid) ORDER BY e.ts"
        ),
        [
            r#"1000 ipi_raise 0 10 {"reason":"Rescheduling interrupts","target_cpus":6}"#,
            r#"1050 ipi_send_cpu 0 10 {"callback":0,"callsite":"membarrier_private_expedited","cpu":1,"delta":-5}"#,
            r#"1100 ipi_entry 1 0 {"reason":"Rescheduling interrupts"}"#,
            r#"1200 ipi_exit 1 0 {"reason":"Rescheduling interrupts"}"#,
        ]
    );
    assert_eq!(
        rows(
            &conn,
            "SELECT EXTRACT_ARG(arg_set_id, 'callsite'), EXTRACT_ARG(arg_set_id, 'cpu') \
             FROM ftrace_event WHERE name = 'ipi_send_cpu'"
        ),
        ["membarrier_private_expedited 1"]
    );
}

/// A CompactSched bundle of `cpu`: a switch to `running` at 1_000, then a
/// waking of each (pid, ts) with `flags` as waking_common_flags (None: the
/// field absent, as older writers leave it).
fn compact_wakings(
    cpu: u32,
    running: i32,
    wakings: &[(i32, u64)],
    flags: Option<&[u32]>,
) -> TracePacket {
    use perfetto_protos::ftrace_event_bundle::ftrace_event_bundle::CompactSched;
    let mut c = CompactSched::new();
    c.intern_table = vec!["waker".into(), "wakee".into()];
    c.switch_timestamp = vec![1_000];
    c.switch_prev_state = vec![0];
    c.switch_next_pid = vec![running];
    c.switch_next_prio = vec![120];
    c.switch_next_comm_index = vec![0];
    let mut last = 0;
    for &(pid, ts) in wakings {
        c.waking_timestamp.push(ts - last);
        last = ts;
        c.waking_pid.push(pid);
        c.waking_target_cpu.push(cpu as i32);
        c.waking_prio.push(120);
        c.waking_comm_index.push(1);
    }
    c.waking_common_flags = flags.map(<[u32]>::to_vec).unwrap_or_default();
    let mut b = bundle(cpu, vec![]);
    b.mut_ftrace_events().compact_sched = Some(c).into();
    b
}

/// A compact waking's common_flags become irq_context (1: a hard IRQ or a
/// softirq, 0x08 or 0x10; trace_processor's rule, which leaves other bits,
/// NMI's too, at 0) on the runnable state it begins and on its wakeup row.
/// Without the field (older recordings), and for a full sched_waking event
/// (trace_processor reads no context there either), it is NULL.
#[test]
fn waking_common_flags_become_irq_context() {
    let dir = tempfile::tempdir().unwrap();
    let mut full = perfetto_protos::sched::SchedWakingFtraceEvent::new();
    full.set_pid(401);
    full.set_comm("wakee".into());
    full.set_prio(120);
    full.set_target_cpu(2);
    let mut full_waking = event(1_500, 100);
    full_waking.set_common_flags(0x08);
    full_waking.set_sched_waking(full);
    let conn = load(
        dir.path(),
        vec![
            compact_wakings(
                0,
                100,
                &[(201, 1_100), (202, 1_200), (203, 1_300), (204, 1_400)],
                // irqs off + hard IRQ, softirq, irqs off only, NMI.
                Some(&[0x09, 0x10, 0x01, 0x40]),
            ),
            compact_wakings(1, 110, &[(301, 1_100), (302, 1_200)], None),
            bundle(2, vec![full_waking]),
        ],
    );
    let expected = [
        "201 1", "202 1", "203 0", "204 0", "301 NULL", "302 NULL", "401 NULL",
    ];
    assert_eq!(
        rows(
            &conn,
            "SELECT tid, irq_context FROM thread_state JOIN thread USING (utid) \
             WHERE state = 'R' ORDER BY tid"
        ),
        expected
    );
    assert_eq!(
        rows(
            &conn,
            "SELECT tid, irq_context FROM wakeup JOIN thread USING (utid) ORDER BY tid"
        ),
        expected
    );
}

/// A sched_blocked_reason of `pid` (caller: an interned kernel symbol's iid).
fn blocked_reason(ts: u64, pid: i32, caller: u64, io_wait: bool) -> FtraceEvent {
    let mut b = perfetto_protos::sched::SchedBlockedReasonFtraceEvent::new();
    b.set_pid(pid);
    b.set_caller(caller);
    b.set_io_wait(u32::from(io_wait));
    let mut e = event(ts, pid as u32);
    e.set_sched_blocked_reason(b);
    e
}

/// sched_blocked_reason fills blocked_function (its caller's interned
/// symbol) and io_wait of the task's latest blocked row when it comes after
/// the switch that opened that row, as the recorder writes it (1 ns later).
/// At the switch's own time it may come first: a compact switch and a full
/// event are in different streams of their CPU, and the sorter, like
/// trace_processor's, drains one stream up to the next one's first time,
/// that time included: here the full events' stream, drained from its IRQ
/// at 3500, takes the reason at 4000 before the compact switch at 4000. It
/// then finds the task running, no blocked row, and changes nothing.
#[test]
fn a_blocked_reason_after_its_switch_names_the_d_state() {
    use perfetto_protos::ftrace_event_bundle::ftrace_event_bundle::CompactSched;
    let mut c = CompactSched::new();
    c.intern_table = vec!["sleeper".into()];
    // Task 10 runs at 1000, blocks in D at 2000, runs at 3000, blocks in D
    // again at 4000 (the idle task between).
    let mut last = 0;
    for (ts, state, next) in [(1_000, 0, 10), (2_000, 2, 0), (3_000, 0, 10), (4_000, 2, 0)] {
        c.switch_timestamp.push(ts - last);
        last = ts;
        c.switch_prev_state.push(state);
        c.switch_next_pid.push(next);
        c.switch_next_prio.push(120);
        c.switch_next_comm_index.push(0);
    }
    let mut switches = bundle(
        0,
        vec![
            blocked_reason(2_001, 10, 0xf2, true),
            irq_entry(3_500, 1, "timer"),
            blocked_reason(4_000, 10, 0xf1, false),
        ],
    );
    switches.mut_ftrace_events().compact_sched = Some(c).into();
    let dir = tempfile::tempdir().unwrap();
    let conn = load(
        dir.path(),
        vec![
            kernel_symbols(
                7,
                &[(0xf1, "kernel_clone"), (0xf2, "folio_wait_bit_common")],
            ),
            on_sequence(7, bundle(0, vec![irq_entry(500, 1, "timer")])),
            on_sequence(7, switches),
        ],
    );
    assert_eq!(
        rows(
            &conn,
            "SELECT s.ts, s.state, s.blocked_function, s.io_wait FROM thread_state s JOIN \
             thread t USING (utid) WHERE t.tid = 10 ORDER BY s.ts"
        ),
        // (A CPU's first compact switch only says who runs next: it opens no row.)
        [
            "2000 D folio_wait_bit_common 1",
            "3000 Running NULL NULL",
            "4000 D NULL NULL",
        ]
    );
}
