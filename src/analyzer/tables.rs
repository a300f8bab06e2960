//! The tables of a loaded trace, each declared once: what a row is, where
//! the rows live (SQLite or the column file), and every column's SQL type,
//! meaning and value. The CREATE statements, schema/tables.sql, the
//! documentation models read, the column file's layouts and the row structs
//! with their writers all derive from these declarations (see
//! [`table!`](crate::analyzer::schema) for the column forms).
//!
//! Adding a table: declare it here (with `table!`), list it in [`SCHEMA`],
//! fill its row struct where the importer learns the rows, and regenerate
//! schema/tables.sql (`SCHEDLENS_WRITE_SCHEMA=1 cargo test --lib schema_file`).

use crate::analyzer::schema::{Item, View, ViewColumn, table};
use crate::analyzer::strings::Str;

/// Every table and view, in the order they are created and documented.
pub static SCHEMA: &[Item] = &[
    Item::Table(&TRACE_BOUNDS),
    Item::Table(&METADATA),
    Item::Table(&STATS),
    Item::Table(&CPU),
    Item::Table(&PROCESS),
    Item::Table(&THREAD),
    Item::Table(&SCHED_SLICE),
    Item::View(&SCHED),
    Item::Table(&THREAD_STATE),
    Item::Table(&FTRACE_EVENT),
    Item::View(&RAW),
    Item::Table(&SLICE_ARGS),
    Item::View(&ARGS),
    Item::Table(&COUNTER),
    Item::Table(&COUNTER_TRACK),
    Item::Table(&TRACK),
    Item::View(&THREAD_TRACK),
    Item::Table(&SLICE),
    Item::Table(&MIGRATION),
    Item::Table(&WAKEUP),
    Item::Table(&TASK_EVENT),
    Item::Table(&LOST_EVENTS),
    Item::Table(&AGG_CPU),
    Item::Table(&AGG_THREAD),
    Item::Table(&AGG_CPU_THREAD),
    Item::Table(&STACK_PROFILE_MAPPING),
    Item::Table(&STACK_PROFILE_FRAME),
    Item::Table(&STACK_PROFILE_CALLSITE),
    Item::Table(&PERF_SESSION),
    Item::Table(&PERF_SAMPLE),
    Item::View(&OFF_CPU_SAMPLE),
];

/// The comment at the top of schema/tables.sql.
pub const HEADER: &[&str] = &[
    "schedlens analysis database: the SQLite schema `schedlens analyze/query/summary` load traces into.",
    "",
    "Generated from the table declarations in src/analyzer/tables.rs: do not edit it by hand; after",
    "changing them, `SCHEDLENS_WRITE_SCHEMA=1 cargo test --lib schema_file` rewrites it.",
    "`-- @table NAME:` says what a row of NAME is and the lines after it add detail; each column's",
    "comment says what it holds. Models read the same text (describe_table, the schema resource).",
    "Tables named as in Perfetto's trace_processor keep its column names and meanings, so queries",
    "written for Perfetto work unchanged. Timestamps (ts, *_ts) are nanoseconds on the trace clock",
    "(CLOCK_BOOTTIME, as in the trace file); durations (dur, latency) are nanoseconds.",
    "utid/upid are row ids of `thread`/`process`: a tid or pid that the kernel reused gets a new row.",
];

table! {
    /// One row: the first and last timestamp of the trace (Perfetto's trace_bounds).
    /// The span of the kernel events that made rows. Packets that describe the trace (process
    /// snapshots, machine info) do not count; both are 0 for a trace without events, and end_ts is
    /// start_ts + 1 for one instant.
    pub static TRACE_BOUNDS = trace_bounds in sqlite;
    pub struct TraceBoundsRow {
        /// Earliest event timestamp, ns.
        start_ts: i64 = INTEGER NOT NULL,
        /// Latest event timestamp, ns.
        end_ts: i64 = INTEGER NOT NULL,
    }
}

table! {
    /// Facts about the trace and the recording as key/value rows (Perfetto's metadata).
    /// Keys include: trace_path, trace_size_bytes, trace_mtime_ns (the cache is reused while both match),
    /// system_name, system_release, system_version, system_machine, host_name (uname nodename), num_cpus, page_size, timezone_off_mins,
    /// realtime_offset_ns (add to ts for Unix-epoch ns), recorder_version, recorder_argv, recorder_start_ts,
    /// recorder_end_ts, recorder_bytes_written, recorder_events_<type> (events the recorder received),
    /// recorder_ring_peak_fill_pct (the fullest ring buffer when its reader woke; events drop at 100),
    /// unknown_packets (packets of kinds not imported), loaded_packets, loaded_events,
    /// truncated_at_offset (present only if the file was cut: byte offset of the first incomplete packet in the
    /// decompressed stream), load_seconds, schema_version.
    pub static METADATA = metadata in sqlite;
    pub struct MetadataRow<'a> {
        /// Key.
        name: &'a str = TEXT PRIMARY KEY,
        /// 'single' (one value per trace) as in Perfetto.
        key_type: &'a str = TEXT NOT NULL,
        /// Value when it is an integer, else NULL.
        int_value: Option<i64> = INTEGER,
        /// Value when it is a string, else NULL.
        str_value: Option<&'a str> = TEXT,
    }
}

table! {
    /// Importer and recorder counters (Perfetto's stats), e.g. mismatched_sched_switch_tids.
    /// Only counters that occurred have rows. severity 'data_loss' rows mean some analyses undercount.
    pub static STATS = stats in sqlite;
    pub struct StatsRow<'a> {
        /// Counter name.
        name: &'a str = TEXT NOT NULL,
        /// Index for per-CPU counters (the cpu), else NULL.
        idx: Option<u32> = INTEGER,
        /// 'info', 'data_loss' or 'error'.
        severity: &'a str = TEXT NOT NULL,
        /// 'trace' (written by the recorder) or 'analysis' (found while importing).
        source: &'a str = TEXT NOT NULL,
        /// Count.
        value: i64 = INTEGER NOT NULL,
        /// What the counter means.
        description: &'a str = TEXT,
    }
}

table! {
    /// One row per CPU (Perfetto's cpu), with the recording machine's topology.
    /// Topology columns are NULL for traces not recorded by schedlens.
    pub static CPU = cpu in sqlite;
    pub struct CpuRow {
        /// Row id (equals ucpu).
        id = INTEGER PRIMARY KEY => same_as(cpu),
        /// CPU number as the kernel names it.
        cpu: u32 = INTEGER NOT NULL,
        /// CPUs of equal capacity (or max frequency) share a cluster, ordered from the smallest.
        cluster_id: Option<u32> = INTEGER,
        /// Processor model name.
        processor: Option<String> = TEXT,
        /// Relative compute capacity (cpu_capacity, 1024 = biggest), NULL if unknown.
        capacity: Option<u32> = INTEGER,
        /// Always NULL: one machine per trace.
        machine_id = INTEGER => null,
        /// Physical package (socket).
        package_id: Option<i32> = INTEGER,
        /// Core within the package; SMT siblings share it.
        core_id: Option<i32> = INTEGER,
        /// Last-level cache group; CPUs with the same llc_id share an LLC.
        llc_id: Option<i32> = INTEGER,
        /// NUMA node.
        numa_node: Option<i32> = INTEGER,
        /// Maximum frequency, kHz.
        max_freq_khz: Option<u32> = INTEGER,
        /// Recorder ring-buffer shard this CPU's events went through.
        shard: Option<u32> = INTEGER,
    }
}

table! {
    /// One row per process instance (Perfetto's process). upid 0 is the idle 'process' (pid 0).
    pub static PROCESS = process in sqlite;
    pub struct ProcessRow<'a> {
        /// Unique process id within this trace.
        upid: u32 = INTEGER PRIMARY KEY,
        /// Process id (tgid) as the kernel gave it.
        pid: i64 = INTEGER NOT NULL,
        /// argv[0] from the process snapshot, else the main thread's comm.
        name: Option<&'a str> = TEXT,
        /// When the process started (fork seen in the trace or start time from /proc), NULL if
        /// unknown.
        start_ts: Option<i64> = INTEGER,
        /// When the process ended (its main thread was freed), NULL if alive at the end.
        end_ts: Option<i64> = INTEGER,
        /// upid of the parent process, NULL if unknown.
        parent_upid: Option<u32> = INTEGER,
        /// User id, NULL if unknown.
        uid: Option<i64> = INTEGER,
        /// Always NULL (Perfetto compatibility).
        android_appid = INTEGER => null,
        /// Command line, arguments joined by spaces.
        cmdline: Option<&'a str> = TEXT,
        /// Always NULL (Perfetto compatibility).
        arg_set_id = INTEGER => null,
        /// Always NULL (Perfetto compatibility).
        machine_id = INTEGER => null,
        /// 1 for kernel threads, 0 for user processes, NULL if unknown.
        is_kthread: Option<bool> = INTEGER,
    }
}

table! {
    /// One row per thread instance (Perfetto's thread). utid 0 is the idle thread 'swapper' (tid 0).
    pub static THREAD = thread in sqlite;
    pub struct ThreadRow<'a> {
        /// Unique thread id within this trace.
        utid: u32 = INTEGER PRIMARY KEY,
        /// Thread id as the kernel gave it.
        tid: i64 = INTEGER NOT NULL,
        /// Thread name (comm); the process snapshot's name wins over names seen in events.
        name: Option<&'a str> = TEXT,
        /// When the thread was created, NULL if it existed before the trace.
        start_ts: Option<i64> = INTEGER,
        /// When the thread was freed, NULL if alive at the end.
        end_ts: Option<i64> = INTEGER,
        /// Process (upid) the thread belongs to, NULL if unknown.
        upid: Option<u32> = INTEGER,
        /// 1 if tid equals the process's pid, 0 if not, NULL if the process is unknown.
        is_main_thread: Option<bool> = INTEGER,
        /// 1 for the per-CPU idle threads (tid 0).
        is_idle: bool = INTEGER,
        /// Always NULL (Perfetto compatibility).
        machine_id = INTEGER => null,
    }
}

table! {
    /// One row per period a thread ran on a CPU (Perfetto's sched_slice).
    /// The view `sched` is the same with ts_end = ts + dur.
    pub static SCHED_SLICE = sched_slice in column_file(keys: [utid, cpu]);
    pub struct SliceRow {
        /// Row id.
        id: i64 = INTEGER PRIMARY KEY => row_id,
        /// When the thread was switched in, ns.
        ts: i64 = INTEGER NOT NULL,
        /// How long it ran, ns; -1 if still running at the end of the trace.
        dur: i64 = INTEGER NOT NULL,
        /// CPU it ran on.
        cpu: u32 = INTEGER NOT NULL,
        /// Thread that ran (thread.utid); utid 0 is idle.
        utid: u32 = INTEGER NOT NULL,
        /// State the thread left in: R (preempted: R+), S, D, T, t, X, Z, P, I, ... NULL if still
        /// running (dur -1) or unknown: the prev_state value was invalid, or the kernel did not report
        /// the switch-out and the slice ends at the CPU's next switch, which names another prev
        /// (stats mismatched_sched_switch_tids).
        end_state: Option<Str> = TEXT,
        /// Kernel priority while running (prio: 0-99 RT, 100-139 normal, 120 = nice 0).
        priority: i32 = INTEGER NOT NULL,
        /// Same as cpu (Perfetto compatibility).
        ucpu = INTEGER => same_as(cpu),
    }
}

pub static SCHED: View = View {
    name: "sched",
    doc: &["Perfetto's view of sched_slice: the same rows with their end time."],
    base: &SCHED_SLICE,
    columns: &[ViewColumn {
        name: "ts_end",
        sql: "INTEGER",
        expr: "ts + dur",
        doc: "ts + dur, when the thread was switched out (ts - 1 for a slice still running at the end).",
    }],
    from: None,
};

table! {
    /// One row per period a thread spent in one scheduling state (Perfetto's thread_state).
    /// States: 'Running', 'R' (runnable, waiting for a CPU), 'R+' (preempted, runnable), 'S' (sleeping),
    /// 'D' (uninterruptible), 'I' (idle kernel thread), 'T', 't', 'X', 'Z', 'P'.
    pub static THREAD_STATE = thread_state in column_file(keys: [utid]);
    pub struct StateRow {
        /// Row id.
        id: i64 = INTEGER PRIMARY KEY => row_id,
        /// Start of the state, ns.
        ts: i64 = INTEGER NOT NULL,
        /// Length, ns; -1 if the state lasts to the end of the trace.
        dur: i64 = INTEGER NOT NULL,
        /// CPU for Running, else NULL (as in trace_processor: a wakeup's target CPU is
        /// wakeup.target_cpu).
        cpu: Option<u32> = INTEGER,
        /// Thread (thread.utid).
        utid: u32 = INTEGER NOT NULL,
        /// State code, see the table description; NULL if unknown: the trace's prev_state value was
        /// invalid, or the kernel did not report the thread's switch-out (Running then ends at its
        /// CPU's next switch, which names another prev, and NULL lasts until the thread's next event).
        state: Option<Str> = TEXT,
        /// For D: 1 if the wait was for I/O (when the trace says), else NULL.
        io_wait: Option<bool> = INTEGER,
        /// For D: kernel function it blocked in (when the trace says), else NULL.
        blocked_function: Option<Str> = TEXT,
        /// For R after a wakeup or a new task: the thread that woke or created it.
        waker_utid: Option<u32> = INTEGER,
        /// For R after a wakeup: thread_state.id of the waker's row at that time.
        waker_id: Option<i64> = INTEGER,
        /// For R after a wakeup: 1 if the waker ran in interrupt context (a hard IRQ or a softirq,
        /// common_flags 0x08 or 0x10 of a compact sched_waking), else 0; 0 for a new task; NULL if
        /// unknown (a full sched_waking event, or a compact one without waking_common_flags, where
        /// trace_processor says 0).
        irq_context: Option<u32> = INTEGER,
        /// Same as cpu (Perfetto compatibility).
        ucpu = INTEGER => same_as(cpu),
    }
}

table! {
    /// Raw kernel events that do not build the tables above, one row each (Perfetto's ftrace_event).
    /// name is the tracepoint: sched_wakeup, sched_wakeup_new, sched_process_fork, sched_process_exec,
    /// sched_process_exit, sched_migrate_task, print, workqueue_queue_work (args work, function: the
    /// kernel symbol, workqueue, req_cpu, cpu), ipi_send_cpu (args cpu, callsite and callback: kernel
    /// functions), ipi_send_cpumask (cpumask: a CPU list like '0-3,8'), ipi_raise, ipi_entry, ipi_exit, ...
    pub static FTRACE_EVENT = ftrace_event in sqlite;
    pub struct FtraceEventRow<'a> {
        /// Row id.
        id = INTEGER PRIMARY KEY => row_id,
        /// Event time, ns.
        ts: i64 = INTEGER NOT NULL,
        /// Tracepoint name.
        name: &'a str = TEXT NOT NULL,
        /// CPU it fired on.
        cpu: u32 = INTEGER NOT NULL,
        /// Thread that was running when it fired.
        utid: Option<u32> = INTEGER,
        /// The event's fields: the args rows with this arg_set_id (equal to id), EXTRACT_ARG(arg_set_id, 'pid').
        arg_set_id = INTEGER => same_as(id),
        /// Kernel common_flags, NULL if absent.
        common_flags: Option<u32> = INTEGER,
        /// Same as cpu (Perfetto compatibility).
        ucpu = INTEGER => same_as(cpu),
        /// The event's fields as a JSON object, e.g. {"pid":12,"comm":"bash"} (the same as its args rows).
        args: &'a str = TEXT,
    }
}

pub static RAW: View = View {
    name: "raw",
    doc: &["ftrace_event under its older Perfetto name: the same rows and columns."],
    base: &FTRACE_EVENT,
    columns: &[],
    from: None,
};

table! {
    /// One field of an arg set that slices share (slice.arg_set_id): an IRQ's ret, a softirq's vec.
    /// Slices with equal fields share one set, as in trace_processor, so the table holds a few rows
    /// whatever the trace's length. Their ids start at 2^40, where ftrace_event's (each event its
    /// own set) never reach. Read them through the args view.
    pub static SLICE_ARGS = slice_args in sqlite;
    pub struct SliceArgsRow<'a> {
        /// The set's id (slice.arg_set_id).
        arg_set_id: i64 = INTEGER NOT NULL,
        /// Field name.
        key: &'a str = TEXT NOT NULL,
        /// Value when an integer, else NULL.
        int_value: Option<i64> = INTEGER,
        /// Value when a string, else NULL.
        string_value: Option<&'a str> = TEXT,
    }
}

pub static ARGS: View = View {
    name: "args",
    doc: &[
        "One field of an ftrace_event row or of a slice (Perfetto's args): rows with the event's or the",
        "slice's arg_set_id, one per field. EXTRACT_ARG(arg_set_id, key) returns the value of one",
        "(int_value, string_value or real_value); keys are the tracepoint's field names (pid, comm, prio,",
        "target_cpu, buf, ...), or field numbers for events this importer has no schema for, and a slice's",
        "ret or vec. A view of ftrace_event.args and slice_args: arg_set_id = ... is a row lookup.",
    ],
    base: &FTRACE_EVENT,
    columns: &[
        ViewColumn {
            name: "arg_set_id",
            sql: "INTEGER",
            expr: "a.arg_set_id",
            doc: "ftrace_event.arg_set_id or slice.arg_set_id.",
        },
        ViewColumn {
            name: "flat_key",
            sql: "TEXT",
            expr: "a.key",
            doc: "Field name (the same as key: the fields are flat).",
        },
        ViewColumn {
            name: "key",
            sql: "TEXT",
            expr: "a.key",
            doc: "Field name.",
        },
        ViewColumn {
            name: "int_value",
            sql: "INTEGER",
            expr: "CASE a.type WHEN 'integer' THEN a.value WHEN 'true' THEN 1 WHEN 'false' THEN 0 END",
            doc: "Value when an integer (also booleans: 1 or 0), else NULL.",
        },
        ViewColumn {
            name: "string_value",
            sql: "TEXT",
            expr: "CASE a.type WHEN 'text' THEN a.value END",
            doc: "Value when a string, else NULL.",
        },
        ViewColumn {
            name: "real_value",
            sql: "REAL",
            expr: "CASE a.type WHEN 'real' THEN a.value END",
            doc: "Value when a real number, else NULL.",
        },
        ViewColumn {
            name: "value_type",
            sql: "TEXT",
            expr: "CASE a.type WHEN 'integer' THEN 'int' WHEN 'real' THEN 'real' WHEN 'text' THEN 'string' \
                   WHEN 'true' THEN 'bool' WHEN 'false' THEN 'bool' ELSE 'json' END",
            doc: "'int', 'string', 'real' or 'bool'.",
        },
        ViewColumn {
            name: "display_value",
            sql: "TEXT",
            expr: "CASE a.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE CAST(a.value AS TEXT) END",
            doc: "The value as text.",
        },
    ],
    // json_each's types name the value's kind; slice_args' rows are given the same names.
    from: Some(
        "(SELECT e.id AS arg_set_id, CAST(j.key AS TEXT) AS key, j.type AS type, j.value AS value \
         FROM ftrace_event AS e, json_each(e.args) AS j WHERE j.type <> 'null' \
         UNION ALL SELECT arg_set_id, key, CASE WHEN int_value IS NULL THEN 'text' ELSE 'integer' END, \
         coalesce(int_value, string_value) FROM slice_args) AS a",
    ),
};

table! {
    /// Counter samples (Perfetto's counter): CPU frequency (cpu_frequency), idle state (cpu_idle) and
    /// frequency limits (cpu_frequency_limits); track_id says which (track.type).
    pub static COUNTER = counter in sqlite;
    pub struct CounterRow {
        /// Row id.
        id = INTEGER PRIMARY KEY => row_id,
        /// Sample time, ns.
        ts: i64 = INTEGER NOT NULL,
        /// counter_track.id the sample belongs to.
        track_id: i64 = INTEGER NOT NULL,
        /// Sample value.
        value: f64 = REAL NOT NULL,
    }
}

table! {
    /// One row per counter time series, e.g. 'cpufreq' or 'cpuidle' of a CPU (the counter rows of track).
    pub static COUNTER_TRACK = counter_track in sqlite;
    pub struct CounterTrackRow<'a> {
        /// Track id (counter.track_id).
        id: i64 = INTEGER PRIMARY KEY,
        /// Series name, e.g. 'cpufreq'.
        name: &'a str = TEXT NOT NULL,
        /// CPU the series describes, NULL if none.
        cpu: Option<u32> = INTEGER,
    }
}

table! {
    /// One row per timeline of events (Perfetto's track): every counter_track and every track of slices.
    /// type says what it holds, as trace_processor types and names it: slices of a CPU's IRQ handlers
    /// ('cpu_irq', 'Irq Cpu N') and softirqs ('cpu_softirq', 'SoftIrq Cpu N'); slices of what a
    /// thread executes ('thread_execution', unnamed: its work items when it is a kworker); counters of
    /// its frequency in kHz ('cpu_frequency', 'cpufreq'), idle state ('cpu_idle', 'cpuidle': the state
    /// entered, 4294967295 on leaving idle) and frequency policy bounds in kHz
    /// ('cpu_max_frequency_limit', 'Cpu N Max Freq Limit'; 'cpu_min_frequency_limit', 'Cpu N Min
    /// Freq Limit'). The counter tracks are also counter_track rows, the thread tracks thread_track rows.
    pub static TRACK = track in sqlite;
    pub struct TrackRow<'a> {
        /// Track id (slice.track_id, counter.track_id).
        id: i64 = INTEGER PRIMARY KEY,
        /// Track name, e.g. 'Irq Cpu 0'; NULL for a thread's track.
        name: Option<&'a str> = TEXT,
        /// What the track holds, e.g. 'cpu_irq'.
        kind as "type": &'a str = TEXT NOT NULL,
        /// CPU the track belongs to, NULL if none (trace_processor keeps it in the track's dimensions).
        cpu: Option<u32> = INTEGER,
        /// Thread the track belongs to (thread.utid), NULL if none (as cpu: a dimension in trace_processor).
        utid: Option<u32> = INTEGER,
    }
}

pub static THREAD_TRACK: View = View {
    name: "thread_track",
    doc: &["A thread's track (Perfetto's thread_track): the track rows with a utid."],
    base: &TRACK,
    columns: &[
        ViewColumn {
            name: "id",
            sql: "INTEGER",
            expr: "id",
            doc: "Track id (slice.track_id).",
        },
        ViewColumn {
            name: "name",
            sql: "TEXT",
            expr: "name",
            doc: "Track name; NULL, as trace_processor leaves it.",
        },
        ViewColumn {
            name: "type",
            sql: "TEXT",
            expr: "type",
            doc: "What the track holds: 'thread_execution'.",
        },
        ViewColumn {
            name: "utid",
            sql: "INTEGER",
            expr: "utid",
            doc: "Its thread (thread.utid).",
        },
    ],
    from: Some("track WHERE utid IS NOT NULL"),
};

table! {
    /// One row per span of time on a track (Perfetto's slice): an IRQ handler ('IRQ (name)', name
    /// from irq_handler_entry) on its CPU's cpu_irq track, a softirq (its action: 'HI', 'TIMER',
    /// 'NET_TX', 'NET_RX', 'BLOCK', 'BLOCK_IOPOLL', 'TASKLET', 'SCHED', 'HRTIMER', 'RCU') on its CPU's
    /// cpu_softirq track, a work item (its function's kernel symbol, e.g. 'flush_to_ldisc', or its
    /// address in hex when the trace names none) on its kworker's thread_execution track. An exit
    /// without its entry makes no row (stats misplaced_end_event); an entry without its exit (the trace
    /// ends inside the handler) has dur -1. An IRQ that interrupts a softirq is on another track: the
    /// two overlap in time. A work item's time is its kworker's: inside the kworker's sched_slice rows.
    pub static SLICE = slice in sqlite;
    pub struct TrackSliceRow<'a> {
        /// Row id, in ts order.
        id: i64 = INTEGER PRIMARY KEY,
        /// Start, ns.
        ts: i64 = INTEGER NOT NULL,
        /// Length, ns; -1 if it had not ended when the trace did.
        dur: i64 = INTEGER NOT NULL,
        /// track.id of its track.
        track_id: i64 = INTEGER NOT NULL,
        /// 'irq' for IRQ and softirq slices, 'workqueue' for work items.
        category: Option<&'a str> = TEXT,
        /// What ran, e.g. 'IRQ (virtio0-input.0)', 'NET_RX' or 'flush_to_ldisc'.
        name: &'a str = TEXT NOT NULL,
        /// Nesting level on its track, 0 at the top.
        depth: u32 = INTEGER NOT NULL,
        /// slice.id of the slice it is nested in on its track, NULL at depth 0.
        parent_id: Option<i64> = INTEGER,
        /// Its fields as trace_processor gives them when it ends (args rows with this arg_set_id): an
        /// IRQ's ret ('handled' or 'unhandled'), a softirq's vec (its number); NULL for work items and
        /// slices that never ended. EXTRACT_ARG(arg_set_id, 'ret').
        arg_set_id: Option<i64> = INTEGER,
    }
}

table! {
    /// One row per move of a thread to another CPU's runqueue (sched_migrate_task).
    /// Each is also an ftrace_event row, as in Perfetto. running says why: 1 the thread was runnable
    /// or running and was moved (load balancing, an affinity change, CPU hotplug), 0 it was waking
    /// and the wakeup placed it elsewhere.
    pub static MIGRATION = migration in sqlite;
    pub struct MigrationRow {
        /// Row id.
        id = INTEGER PRIMARY KEY => row_id,
        /// When it moved, ns.
        ts: i64 = INTEGER NOT NULL,
        /// Thread moved (thread.utid).
        utid: u32 = INTEGER NOT NULL,
        /// CPU it left.
        from_cpu: i32 = INTEGER NOT NULL,
        /// CPU it moved to.
        to_cpu: i32 = INTEGER NOT NULL,
        /// 1 runnable or running, 0 waking; NULL if the trace does not say (Perfetto's own recordings).
        running: Option<u32> = INTEGER,
    }
}

/// The thread_state states whose time is a thread's runnable time (see the wakeup table).
pub const RUNNABLE_STATES: [&str; 2] = ["R", "R+"];

table! {
    /// One row per wakeup (sched_waking) of a thread, with how long it waited for a CPU.
    /// latency = run_ts - ts: the scheduling latency (waking to running). NULL when the thread did not run
    /// again before the trace ended or the wakeup found the thread already runnable.
    /// Runnable time (agg_thread.runnable_ns, "runnable time" in summary and top_tasks) is the time in
    /// thread_state R and R+: from a wakeup (its ts), a fork or a preemption until the thread runs. Each
    /// latency is part of it, so it starts at sched_waking too, before the kernel queues the task: it
    /// exceeds schedstat's run_delay (time queued) by the wakeup path, about 0.7 us per wakeup (21-23% in
    /// a pipe ping-pong on a 2-CPU VM).
    pub static WAKEUP = wakeup in column_file(keys: [utid], order: latency);
    pub struct WakeupRow {
        /// Row id.
        id: i64 = INTEGER PRIMARY KEY => row_id,
        /// When the wakeup happened (sched_waking), ns.
        ts: i64 = INTEGER NOT NULL,
        /// Thread woken (the wakee).
        utid: u32 = INTEGER NOT NULL,
        /// Thread that woke it (running on the waking CPU), NULL if unknown.
        waker_utid: Option<u32> = INTEGER,
        /// CPU the wakeup was issued on.
        waking_cpu: u32 = INTEGER NOT NULL,
        /// CPU the kernel chose to run the wakee on.
        target_cpu: i32 = INTEGER,
        /// When the wakee next started running, ns; NULL if never in the trace.
        run_ts: Option<i64> = INTEGER,
        /// CPU it then ran on; differs from target_cpu if it migrated.
        run_cpu: Option<u32> = INTEGER,
        /// run_ts - ts, ns; NULL if run_ts is NULL.
        latency = INTEGER => difference(run_ts, ts),
        /// Wakee priority at the wakeup.
        priority: i32 = INTEGER,
        /// 1 if the waker ran in interrupt context (a hard IRQ or a softirq: a timer, a packet), 0
        /// if a task woke it, NULL if the trace does not say (thread_state.irq_context's rule).
        irq_context: Option<u32> = INTEGER,
    }
}

table! {
    /// Task lifecycle: one row per fork, exec, exit, free or rename of a thread.
    pub static TASK_EVENT = task_event in sqlite;
    pub struct TaskEventRow<'a> {
        /// Row id.
        id = INTEGER PRIMARY KEY => row_id,
        /// Event time, ns.
        ts: i64 = INTEGER NOT NULL,
        /// 'fork' (new thread or process), 'exec', 'exit', 'free' (task_struct released), 'rename'.
        kind as "type": &'a str = TEXT NOT NULL,
        /// Thread it happened to (for fork: the new thread).
        utid: u32 = INTEGER NOT NULL,
        /// Its tid.
        tid: i64 = INTEGER NOT NULL,
        /// Its process id (tgid), NULL if unknown.
        pid: Option<i64> = INTEGER,
        /// For fork: the thread that created it.
        parent_utid: Option<u32> = INTEGER,
        /// For fork: the creating thread's tid.
        parent_tid: Option<i64> = INTEGER,
        /// Name after the event (new comm for exec and rename).
        comm: Option<&'a str> = TEXT,
        /// For exec: the executed file.
        filename: Option<&'a str> = TEXT,
        /// For fork: clone flags (0x10000 CLONE_THREAD means a new thread, not a process).
        clone_flags: Option<i64> = INTEGER,
        /// CPU it happened on.
        cpu: u32 = INTEGER,
    }
}

table! {
    /// Gaps: events the recorder could not keep because a ring buffer was full.
    /// Analyses over a CPU and time range that contains a gap undercount; see stats for the totals.
    pub static LOST_EVENTS = lost_events in sqlite;
    pub struct LostEventsRow {
        /// Row id.
        id = INTEGER PRIMARY KEY => row_id,
        /// First event after the gap, ns.
        ts: i64 = INTEGER NOT NULL,
        /// CPU whose events were lost.
        cpu: u32 = INTEGER NOT NULL,
        /// How many events were lost; NULL when the trace only says some were (ftrace lost_events).
        count: Option<i64> = INTEGER,
    }
}

table! {
    /// Per time bucket and CPU: how long non-idle threads ran and how often one was switched in.
    /// Use it for utilization over long windows: sum(busy_ns) / (dur * buckets) per CPU.
    /// Aggregates are totals per time bucket summed while the trace loads (schedlens only; not in Perfetto).
    /// Buckets are [ts, ts + dur) with ts a multiple of dur; dur is the same for every row (metadata
    /// aggregate_bucket_ns, a power of two chosen so the trace spans at most 1024 buckets). Intervals that
    /// cross a bucket edge are cut there, so summing the buckets inside a window gives exact totals for
    /// that part of it. Idle (utid 0) is left out.
    pub static AGG_CPU = agg_cpu in sqlite;
    pub struct AggCpuRow {
        /// Bucket start, ns.
        ts: i64 = INTEGER NOT NULL,
        /// Bucket length, ns.
        dur: i64 = INTEGER NOT NULL,
        /// CPU.
        cpu: i64 = INTEGER NOT NULL,
        /// Time non-idle threads ran on the CPU within the bucket, ns.
        busy_ns: i64 = INTEGER NOT NULL,
        /// Non-idle sched_slice rows starting within the bucket.
        switches: i64 = INTEGER NOT NULL,
    }
}

table! {
    /// Per time bucket and thread: CPU time, switch-ins, runnable time, wakeups and their latency.
    /// Buckets as in agg_cpu. Only buckets where the thread ran, waited or was woken have a row.
    pub static AGG_THREAD = agg_thread in sqlite;
    pub struct AggThreadRow<'a> {
        /// Bucket start, ns.
        ts: i64 = INTEGER NOT NULL,
        /// Bucket length, ns.
        dur: i64 = INTEGER NOT NULL,
        /// Thread (thread.utid).
        utid: i64 = INTEGER NOT NULL,
        /// Time it ran (sched_slice) within the bucket, ns.
        cpu_ns: i64 = INTEGER NOT NULL,
        /// Its sched_slice rows starting within the bucket.
        switches: i64 = INTEGER NOT NULL,
        /// Its runnable time (thread_state R and R+, see wakeup) within the bucket, ns.
        runnable_ns: i64 = INTEGER NOT NULL,
        /// Its wakeup rows with a latency whose ts is within the bucket.
        wakeups: i64 = INTEGER NOT NULL,
        /// Largest latency among those wakeups, ns; NULL without any.
        latency_max: Option<i64> = INTEGER,
        /// Their latencies as a histogram: (bin u16, count u32) little-endian pairs; bins exact
        /// below 64 ns, then 32 per power of two. NULL without wakeups.
        latency_hist: Option<&'a [u8]> = BLOB,
    }
}

table! {
    /// Per time bucket, CPU and thread: its time on that CPU.
    /// Buckets as in agg_cpu; only (bucket, CPU, thread) that ran have a row. What held a CPU over a
    /// long wait is read here.
    pub static AGG_CPU_THREAD = agg_cpu_thread in sqlite;
    pub struct AggCpuThreadRow {
        /// Bucket start, ns.
        ts: i64 = INTEGER NOT NULL,
        /// Bucket length, ns.
        dur: i64 = INTEGER NOT NULL,
        /// CPU.
        cpu: i64 = INTEGER NOT NULL,
        /// Thread (thread.utid).
        utid: i64 = INTEGER NOT NULL,
        /// Time it ran on the CPU (sched_slice) within the bucket, ns.
        cpu_ns: i64 = INTEGER NOT NULL,
    }
}

table! {
    /// A binary or library that stack frames lie in (Perfetto's stack_profile_mapping).
    /// schedlens writes one per file (and one for the kernel, '[kernel.kallsyms]', and one for
    /// addresses in no file, '[unknown]'), not one per process mapping: start, end and the offsets
    /// are 0 and a frame's rel_pc is its offset in the file.
    pub static STACK_PROFILE_MAPPING = stack_profile_mapping in sqlite;
    pub struct StackProfileMappingRow<'a> {
        /// Row id.
        id = INTEGER PRIMARY KEY => row_id,
        /// Hex-encoded build id of the file, '' when unknown.
        build_id: &'a str = TEXT NOT NULL,
        /// Offset of the mapping in the file when known exactly.
        exact_offset: i64 = INTEGER NOT NULL,
        /// Offset of the mapping's start in the file.
        start_offset: i64 = INTEGER NOT NULL,
        /// Start of the mapping in the process's address space.
        start: i64 = INTEGER NOT NULL,
        /// End of the mapping in the process's address space.
        end: i64 = INTEGER NOT NULL,
        /// Load bias.
        load_bias: i64 = INTEGER NOT NULL,
        /// Path of the file.
        name: &'a str = TEXT NOT NULL,
    }
}

table! {
    /// A frame: a code address in a mapping, with its function's name when it was resolved
    /// (Perfetto's stack_profile_frame). The recorder names frames on the recording machine.
    pub static STACK_PROFILE_FRAME = stack_profile_frame in sqlite;
    pub struct StackProfileFrameRow<'a> {
        /// Row id.
        id = INTEGER PRIMARY KEY => row_id,
        /// Function name; '' when the address did not resolve (the mapping and rel_pc remain).
        name: &'a str = TEXT NOT NULL,
        /// Mapping (stack_profile_mapping.id).
        mapping: u32 = INTEGER NOT NULL,
        /// Address relative to the mapping (for schedlens: the offset in the file; for the kernel,
        /// the address).
        rel_pc: i64 = INTEGER NOT NULL,
    }
}

table! {
    /// A node of the call tree: a frame called from its parent (Perfetto's stack_profile_callsite).
    /// A stack is the path from a sample's callsite up to its root (depth 0, the outermost frame).
    pub static STACK_PROFILE_CALLSITE = stack_profile_callsite in sqlite;
    pub struct StackProfileCallsiteRow {
        /// Row id.
        id = INTEGER PRIMARY KEY => row_id,
        /// Distance from the root: 0 for the outermost frame.
        depth: u32 = INTEGER NOT NULL,
        /// Caller's callsite; NULL at the root.
        parent_id: Option<u32> = INTEGER,
        /// Frame (stack_profile_frame.id).
        frame_id: u32 = INTEGER NOT NULL,
    }
}

table! {
    /// A stream of samples (Perfetto's perf_session): for schedlens, one per stack kind recorded.
    pub static PERF_SESSION = perf_session in sqlite;
    pub struct PerfSessionRow<'a> {
        /// Row id.
        id = INTEGER PRIMARY KEY => row_id,
        /// Command line of the profiler; NULL for schedlens recordings.
        cmdline: Option<&'a str> = TEXT,
        /// What the samples are (schedlens): 'off-cpu' (a task's stack when it blocked), 'cpu'
        /// (sampled on the CPU clock), 'waker' (the waker's stack at sched_waking); NULL for
        /// sessions of other recorders.
        stack_kind: Option<&'a str> = TEXT,
    }
}

table! {
    /// A stack sample (Perfetto's perf_sample): for CPU samples, where a thread was running; for
    /// off-CPU ones, where it blocked (see off_cpu_sample for their weights); for waker ones, where
    /// the thread that woke another was. perf_session.stack_kind says which.
    pub static PERF_SAMPLE = perf_sample in sqlite;
    pub struct PerfSampleRow<'a> {
        /// Row id.
        id = INTEGER PRIMARY KEY => row_id,
        /// Sample time, ns.
        ts: i64 = INTEGER NOT NULL,
        /// Sampled thread (thread.utid).
        utid: u32 = INTEGER NOT NULL,
        /// CPU the thread was on.
        cpu: Option<u32> = INTEGER,
        /// 'kernel', 'user' or 'unknown': where the thread was when sampled.
        cpu_mode: &'a str = TEXT NOT NULL,
        /// Innermost frame's callsite (stack_profile_callsite.id); NULL when no stack was taken.
        callsite_id: Option<u32> = INTEGER,
        /// Why unwinding failed, when it did.
        unwind_error: Option<&'a str> = TEXT,
        /// Stream (perf_session.id).
        perf_session_id: Option<u32> = INTEGER,
    }
}

/// Off-CPU stacks with their weights, joined from perf_sample and thread_state.
pub static OFF_CPU_SAMPLE: View = View {
    name: "off_cpu_sample",
    doc: &[
        "An off-CPU stack with its weight (schedlens only): a perf_sample of the 'off-cpu' session, taken when",
        "the thread blocked (sched_switch with prev in S or D), and how long it then stayed off the CPU: the",
        "thread_state that starts at the sample. SUM(dur) per callsite_id is an off-CPU profile.",
    ],
    base: &PERF_SAMPLE,
    columns: &[
        ViewColumn {
            name: "id",
            sql: "INTEGER",
            expr: "p.id",
            doc: "The sample (perf_sample.id).",
        },
        ViewColumn {
            name: "ts",
            sql: "INTEGER",
            expr: "p.ts",
            doc: "When the thread blocked, ns.",
        },
        ViewColumn {
            name: "utid",
            sql: "INTEGER",
            expr: "p.utid",
            doc: "Thread (thread.utid).",
        },
        ViewColumn {
            name: "callsite_id",
            sql: "INTEGER",
            expr: "p.callsite_id",
            doc: "Innermost callsite (stack_profile_callsite.id); NULL when no stack was taken.",
        },
        ViewColumn {
            name: "dur",
            sql: "INTEGER",
            expr: "t.dur",
            doc: "How long it stayed off the CPU, ns (the thread_state's dur: -1 if it lasted to the end of \
                  the trace); NULL when the trace has no state starting there.",
        },
        ViewColumn {
            name: "state",
            sql: "TEXT",
            expr: "t.state",
            doc: "That thread_state's state (S or D).",
        },
    ],
    from: Some(
        "perf_sample p JOIN perf_session s ON s.id = p.perf_session_id AND s.stack_kind = 'off-cpu' \
         LEFT JOIN thread_state t ON t.utid = p.utid AND t.ts = p.ts",
    ),
};
