-- schedlens analysis database: the SQLite schema `schedlens analyze/query/summary` load traces into.
--
-- Generated from the table declarations in src/analyzer/tables.rs: do not edit it by hand; after
-- changing them, `SCHEDLENS_WRITE_SCHEMA=1 cargo test --lib schema_file` rewrites it.
-- `-- @table NAME:` says what a row of NAME is and the lines after it add detail; each column's
-- comment says what it holds. Models read the same text (describe_table, the schema resource).
-- Tables named as in Perfetto's trace_processor keep its column names and meanings, so queries
-- written for Perfetto work unchanged. Timestamps (ts, *_ts) are nanoseconds on the trace clock
-- (CLOCK_BOOTTIME, as in the trace file); durations (dur, latency) are nanoseconds.
-- utid/upid are row ids of `thread`/`process`: a tid or pid that the kernel reused gets a new row.
-- These tables are virtual tables over the column file beside the database
-- (src/analyzer/columns): fast on id and ts (ranges and ORDER BY), on their keys (equality,
-- ORDER BY, GROUP BY) and on ORDER BY <order> DESC; other conditions scan.
--   sched_slice: keys utid, cpu
--   thread_state: keys utid
--   wakeup: keys utid; order latency

-- @table trace_bounds: One row: the first and last timestamp of the trace (Perfetto's trace_bounds).
-- The span of the kernel events that made rows. Packets that describe the trace (process
-- snapshots, machine info) do not count; both are 0 for a trace without events, and end_ts is
-- start_ts + 1 for one instant.
CREATE TABLE trace_bounds (
  start_ts INTEGER NOT NULL, -- Earliest event timestamp, ns.
  end_ts INTEGER NOT NULL -- Latest event timestamp, ns.
);

-- @table metadata: Facts about the trace and the recording as key/value rows (Perfetto's metadata).
-- Keys include: trace_path, trace_size_bytes, trace_mtime_ns (the cache is reused while both match),
-- system_name, system_release, system_version, system_machine, host_name (uname nodename), num_cpus, page_size, timezone_off_mins,
-- realtime_offset_ns (add to ts for Unix-epoch ns), recorder_version, recorder_argv, recorder_start_ts,
-- recorder_end_ts, recorder_bytes_written, recorder_events_<type> (events the recorder received),
-- recorder_ring_peak_fill_pct (the fullest ring buffer when its reader woke; events drop at 100),
-- unknown_packets (packets of kinds not imported), loaded_packets, loaded_events,
-- truncated_at_offset (present only if the file was cut: byte offset of the first incomplete packet in the
-- decompressed stream), load_seconds, schema_version.
CREATE TABLE metadata (
  name TEXT PRIMARY KEY, -- Key.
  key_type TEXT NOT NULL, -- 'single' (one value per trace) as in Perfetto.
  int_value INTEGER, -- Value when it is an integer, else NULL.
  str_value TEXT -- Value when it is a string, else NULL.
);

-- @table stats: Importer and recorder counters (Perfetto's stats), e.g. mismatched_sched_switch_tids.
-- Only counters that occurred have rows. severity 'data_loss' rows mean some analyses undercount.
CREATE TABLE stats (
  name TEXT NOT NULL, -- Counter name.
  idx INTEGER, -- Index for per-CPU counters (the cpu), else NULL.
  severity TEXT NOT NULL, -- 'info', 'data_loss' or 'error'.
  source TEXT NOT NULL, -- 'trace' (written by the recorder) or 'analysis' (found while importing).
  value INTEGER NOT NULL, -- Count.
  description TEXT -- What the counter means.
);

-- @table cpu: One row per CPU (Perfetto's cpu), with the recording machine's topology.
-- Topology columns are NULL for traces not recorded by schedlens.
CREATE TABLE cpu (
  id INTEGER PRIMARY KEY, -- Row id (equals ucpu).
  cpu INTEGER NOT NULL, -- CPU number as the kernel names it.
  cluster_id INTEGER, -- CPUs of equal capacity (or max frequency) share a cluster, ordered from the smallest.
  processor TEXT, -- Processor model name.
  capacity INTEGER, -- Relative compute capacity (cpu_capacity, 1024 = biggest), NULL if unknown.
  machine_id INTEGER, -- Always NULL: one machine per trace.
  package_id INTEGER, -- Physical package (socket).
  core_id INTEGER, -- Core within the package; SMT siblings share it.
  llc_id INTEGER, -- Last-level cache group; CPUs with the same llc_id share an LLC.
  numa_node INTEGER, -- NUMA node.
  max_freq_khz INTEGER, -- Maximum frequency, kHz.
  shard INTEGER -- Recorder ring-buffer shard this CPU's events went through.
);

-- @table process: One row per process instance (Perfetto's process). upid 0 is the idle 'process' (pid 0).
CREATE TABLE process (
  upid INTEGER PRIMARY KEY, -- Unique process id within this trace.
  pid INTEGER NOT NULL, -- Process id (tgid) as the kernel gave it.
  name TEXT, -- argv[0] from the process snapshot, else the main thread's comm.
  start_ts INTEGER, -- When the process started (fork seen in the trace or start time from /proc), NULL if unknown.
  end_ts INTEGER, -- When the process ended (its main thread was freed), NULL if alive at the end.
  parent_upid INTEGER, -- upid of the parent process, NULL if unknown.
  uid INTEGER, -- User id, NULL if unknown.
  android_appid INTEGER, -- Always NULL (Perfetto compatibility).
  cmdline TEXT, -- Command line, arguments joined by spaces.
  arg_set_id INTEGER, -- Always NULL (Perfetto compatibility).
  machine_id INTEGER, -- Always NULL (Perfetto compatibility).
  is_kthread INTEGER -- 1 for kernel threads, 0 for user processes, NULL if unknown.
);

-- @table thread: One row per thread instance (Perfetto's thread). utid 0 is the idle thread 'swapper' (tid 0).
CREATE TABLE thread (
  utid INTEGER PRIMARY KEY, -- Unique thread id within this trace.
  tid INTEGER NOT NULL, -- Thread id as the kernel gave it.
  name TEXT, -- Thread name (comm); the process snapshot's name wins over names seen in events.
  start_ts INTEGER, -- When the thread was created, NULL if it existed before the trace.
  end_ts INTEGER, -- When the thread was freed, NULL if alive at the end.
  upid INTEGER, -- Process (upid) the thread belongs to, NULL if unknown.
  is_main_thread INTEGER, -- 1 if tid equals the process's pid, 0 if not, NULL if the process is unknown.
  is_idle INTEGER, -- 1 for the per-CPU idle threads (tid 0).
  machine_id INTEGER -- Always NULL (Perfetto compatibility).
);

-- @table sched_slice: One row per period a thread ran on a CPU (Perfetto's sched_slice).
-- The view `sched` is the same with ts_end = ts + dur.
CREATE VIRTUAL TABLE sched_slice USING schedlens_columns(
  id INTEGER PRIMARY KEY, -- Row id.
  ts INTEGER NOT NULL, -- When the thread was switched in, ns.
  dur INTEGER NOT NULL, -- How long it ran, ns; -1 if still running at the end of the trace.
  cpu INTEGER NOT NULL, -- CPU it ran on.
  utid INTEGER NOT NULL, -- Thread that ran (thread.utid); utid 0 is idle.
  end_state TEXT, -- State the thread left in: R (preempted: R+), S, D, T, t, X, Z, P, I, ... NULL if still running (dur -1) or unknown: the prev_state value was invalid, or the kernel did not report the switch-out and the slice ends at the CPU's next switch, which names another prev (stats mismatched_sched_switch_tids).
  priority INTEGER NOT NULL, -- Kernel priority while running (prio: 0-99 RT, 100-139 normal, 120 = nice 0).
  ucpu INTEGER -- Same as cpu (Perfetto compatibility).
);

-- @table sched: Perfetto's view of sched_slice: the same rows with their end time.
-- @column ts_end INTEGER: ts + dur, when the thread was switched out (ts - 1 for a slice still running at the end).
CREATE VIEW sched AS SELECT *, ts + dur AS ts_end FROM sched_slice;

-- @table thread_state: One row per period a thread spent in one scheduling state (Perfetto's thread_state).
-- States: 'Running', 'R' (runnable, waiting for a CPU), 'R+' (preempted, runnable), 'S' (sleeping),
-- 'D' (uninterruptible), 'I' (idle kernel thread), 'T', 't', 'X', 'Z', 'P'.
CREATE VIRTUAL TABLE thread_state USING schedlens_columns(
  id INTEGER PRIMARY KEY, -- Row id.
  ts INTEGER NOT NULL, -- Start of the state, ns.
  dur INTEGER NOT NULL, -- Length, ns; -1 if the state lasts to the end of the trace.
  cpu INTEGER, -- CPU for Running, else NULL (as in trace_processor: a wakeup's target CPU is wakeup.target_cpu).
  utid INTEGER NOT NULL, -- Thread (thread.utid).
  state TEXT, -- State code, see the table description; NULL if unknown: the trace's prev_state value was invalid, or the kernel did not report the thread's switch-out (Running then ends at its CPU's next switch, which names another prev, and NULL lasts until the thread's next event).
  io_wait INTEGER, -- For D: 1 if the wait was for I/O (when the trace says), else NULL.
  blocked_function TEXT, -- For D: kernel function it blocked in (when the trace says), else NULL.
  waker_utid INTEGER, -- For R after a wakeup or a new task: the thread that woke or created it.
  waker_id INTEGER, -- For R after a wakeup: thread_state.id of the waker's row at that time.
  irq_context INTEGER, -- For R after a wakeup: 1 if the waker ran in interrupt context (a hard IRQ or a softirq, common_flags 0x08 or 0x10 of a compact sched_waking), else 0; 0 for a new task; NULL if unknown (a full sched_waking event, or a compact one without waking_common_flags, where trace_processor says 0).
  ucpu INTEGER -- Same as cpu (Perfetto compatibility).
);

-- @table ftrace_event: Raw kernel events that do not build the tables above, one row each (Perfetto's ftrace_event).
-- name is the tracepoint: sched_wakeup, sched_wakeup_new, sched_process_fork, sched_process_exec,
-- sched_process_exit, sched_migrate_task, print, workqueue_queue_work (args work, function: the
-- kernel symbol, workqueue, req_cpu, cpu), ipi_send_cpu (args cpu, callsite and callback: kernel
-- functions), ipi_send_cpumask (cpumask: a CPU list like '0-3,8'), ipi_raise, ipi_entry, ipi_exit, ...
CREATE TABLE ftrace_event (
  id INTEGER PRIMARY KEY, -- Row id.
  ts INTEGER NOT NULL, -- Event time, ns.
  name TEXT NOT NULL, -- Tracepoint name.
  cpu INTEGER NOT NULL, -- CPU it fired on.
  utid INTEGER, -- Thread that was running when it fired.
  arg_set_id INTEGER, -- The event's fields: the args rows with this arg_set_id (equal to id), EXTRACT_ARG(arg_set_id, 'pid').
  common_flags INTEGER, -- Kernel common_flags, NULL if absent.
  ucpu INTEGER, -- Same as cpu (Perfetto compatibility).
  args TEXT -- The event's fields as a JSON object, e.g. {"pid":12,"comm":"bash"} (the same as its args rows).
);

-- @table raw: ftrace_event under its older Perfetto name: the same rows and columns.
CREATE VIEW raw AS SELECT * FROM ftrace_event;

-- @table slice_args: One field of an arg set that slices share (slice.arg_set_id): an IRQ's ret, a softirq's vec.
-- Slices with equal fields share one set, as in trace_processor, so the table holds a few rows
-- whatever the trace's length. Their ids start at 2^40, where ftrace_event's (each event its
-- own set) never reach. Read them through the args view.
CREATE TABLE slice_args (
  arg_set_id INTEGER NOT NULL, -- The set's id (slice.arg_set_id).
  key TEXT NOT NULL, -- Field name.
  int_value INTEGER, -- Value when an integer, else NULL.
  string_value TEXT -- Value when a string, else NULL.
);

-- @table args: One field of an ftrace_event row or of a slice (Perfetto's args): rows with the event's or the
-- slice's arg_set_id, one per field. EXTRACT_ARG(arg_set_id, key) returns the value of one
-- (int_value, string_value or real_value); keys are the tracepoint's field names (pid, comm, prio,
-- target_cpu, buf, ...), or field numbers for events this importer has no schema for, and a slice's
-- ret or vec. A view of ftrace_event.args and slice_args: arg_set_id = ... is a row lookup.
-- @column arg_set_id INTEGER: ftrace_event.arg_set_id or slice.arg_set_id.
-- @column flat_key TEXT: Field name (the same as key: the fields are flat).
-- @column key TEXT: Field name.
-- @column int_value INTEGER: Value when an integer (also booleans: 1 or 0), else NULL.
-- @column string_value TEXT: Value when a string, else NULL.
-- @column real_value REAL: Value when a real number, else NULL.
-- @column value_type TEXT: 'int', 'string', 'real' or 'bool'.
-- @column display_value TEXT: The value as text.
CREATE VIEW args AS SELECT a.arg_set_id AS arg_set_id, a.key AS flat_key, a.key AS key, CASE a.type WHEN 'integer' THEN a.value WHEN 'true' THEN 1 WHEN 'false' THEN 0 END AS int_value, CASE a.type WHEN 'text' THEN a.value END AS string_value, CASE a.type WHEN 'real' THEN a.value END AS real_value, CASE a.type WHEN 'integer' THEN 'int' WHEN 'real' THEN 'real' WHEN 'text' THEN 'string' WHEN 'true' THEN 'bool' WHEN 'false' THEN 'bool' ELSE 'json' END AS value_type, CASE a.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE CAST(a.value AS TEXT) END AS display_value FROM (SELECT e.id AS arg_set_id, CAST(j.key AS TEXT) AS key, j.type AS type, j.value AS value FROM ftrace_event AS e, json_each(e.args) AS j WHERE j.type <> 'null' UNION ALL SELECT arg_set_id, key, CASE WHEN int_value IS NULL THEN 'text' ELSE 'integer' END, coalesce(int_value, string_value) FROM slice_args) AS a;

-- @table counter: Counter samples (Perfetto's counter): CPU frequency (cpu_frequency), idle state (cpu_idle) and
-- frequency limits (cpu_frequency_limits); track_id says which (track.type).
CREATE TABLE counter (
  id INTEGER PRIMARY KEY, -- Row id.
  ts INTEGER NOT NULL, -- Sample time, ns.
  track_id INTEGER NOT NULL, -- counter_track.id the sample belongs to.
  value REAL NOT NULL -- Sample value.
);

-- @table counter_track: One row per counter time series, e.g. 'cpufreq' or 'cpuidle' of a CPU (the counter rows of track).
CREATE TABLE counter_track (
  id INTEGER PRIMARY KEY, -- Track id (counter.track_id).
  name TEXT NOT NULL, -- Series name, e.g. 'cpufreq'.
  cpu INTEGER -- CPU the series describes, NULL if none.
);

-- @table track: One row per timeline of events (Perfetto's track): every counter_track and every track of slices.
-- type says what it holds, as trace_processor types and names it: slices of a CPU's IRQ handlers
-- ('cpu_irq', 'Irq Cpu N') and softirqs ('cpu_softirq', 'SoftIrq Cpu N'); slices of what a
-- thread executes ('thread_execution', unnamed: its work items when it is a kworker); counters of
-- its frequency in kHz ('cpu_frequency', 'cpufreq'), idle state ('cpu_idle', 'cpuidle': the state
-- entered, 4294967295 on leaving idle) and frequency policy bounds in kHz
-- ('cpu_max_frequency_limit', 'Cpu N Max Freq Limit'; 'cpu_min_frequency_limit', 'Cpu N Min
-- Freq Limit'). The counter tracks are also counter_track rows, the thread tracks thread_track rows.
CREATE TABLE track (
  id INTEGER PRIMARY KEY, -- Track id (slice.track_id, counter.track_id).
  name TEXT, -- Track name, e.g. 'Irq Cpu 0'; NULL for a thread's track.
  type TEXT NOT NULL, -- What the track holds, e.g. 'cpu_irq'.
  cpu INTEGER, -- CPU the track belongs to, NULL if none (trace_processor keeps it in the track's dimensions).
  utid INTEGER -- Thread the track belongs to (thread.utid), NULL if none (as cpu: a dimension in trace_processor).
);

-- @table thread_track: A thread's track (Perfetto's thread_track): the track rows with a utid.
-- @column id INTEGER: Track id (slice.track_id).
-- @column name TEXT: Track name; NULL, as trace_processor leaves it.
-- @column type TEXT: What the track holds: 'thread_execution'.
-- @column utid INTEGER: Its thread (thread.utid).
CREATE VIEW thread_track AS SELECT id AS id, name AS name, type AS type, utid AS utid FROM track WHERE utid IS NOT NULL;

-- @table slice: One row per span of time on a track (Perfetto's slice): an IRQ handler ('IRQ (name)', name
-- from irq_handler_entry) on its CPU's cpu_irq track, a softirq (its action: 'HI', 'TIMER',
-- 'NET_TX', 'NET_RX', 'BLOCK', 'BLOCK_IOPOLL', 'TASKLET', 'SCHED', 'HRTIMER', 'RCU') on its CPU's
-- cpu_softirq track, a work item (its function's kernel symbol, e.g. 'flush_to_ldisc', or its
-- address in hex when the trace names none) on its kworker's thread_execution track. An exit
-- without its entry makes no row (stats misplaced_end_event); an entry without its exit (the trace
-- ends inside the handler) has dur -1. An IRQ that interrupts a softirq is on another track: the
-- two overlap in time. A work item's time is its kworker's: inside the kworker's sched_slice rows.
CREATE TABLE slice (
  id INTEGER PRIMARY KEY, -- Row id, in ts order.
  ts INTEGER NOT NULL, -- Start, ns.
  dur INTEGER NOT NULL, -- Length, ns; -1 if it had not ended when the trace did.
  track_id INTEGER NOT NULL, -- track.id of its track.
  category TEXT, -- 'irq' for IRQ and softirq slices, 'workqueue' for work items.
  name TEXT NOT NULL, -- What ran, e.g. 'IRQ (virtio0-input.0)', 'NET_RX' or 'flush_to_ldisc'.
  depth INTEGER NOT NULL, -- Nesting level on its track, 0 at the top.
  parent_id INTEGER, -- slice.id of the slice it is nested in on its track, NULL at depth 0.
  arg_set_id INTEGER -- Its fields as trace_processor gives them when it ends (args rows with this arg_set_id): an IRQ's ret ('handled' or 'unhandled'), a softirq's vec (its number); NULL for work items and slices that never ended. EXTRACT_ARG(arg_set_id, 'ret').
);

-- @table migration: One row per move of a thread to another CPU's runqueue (sched_migrate_task).
-- Each is also an ftrace_event row, as in Perfetto. running says why: 1 the thread was runnable
-- or running and was moved (load balancing, an affinity change, CPU hotplug), 0 it was waking
-- and the wakeup placed it elsewhere.
CREATE TABLE migration (
  id INTEGER PRIMARY KEY, -- Row id.
  ts INTEGER NOT NULL, -- When it moved, ns.
  utid INTEGER NOT NULL, -- Thread moved (thread.utid).
  from_cpu INTEGER NOT NULL, -- CPU it left.
  to_cpu INTEGER NOT NULL, -- CPU it moved to.
  running INTEGER -- 1 runnable or running, 0 waking; NULL if the trace does not say (Perfetto's own recordings).
);

-- @table wakeup: One row per wakeup (sched_waking) of a thread, with how long it waited for a CPU.
-- latency = run_ts - ts: the scheduling latency (waking to running). NULL when the thread did not run
-- again before the trace ended or the wakeup found the thread already runnable.
-- Runnable time (agg_thread.runnable_ns, "runnable time" in summary and top_tasks) is the time in
-- thread_state R and R+: from a wakeup (its ts), a fork or a preemption until the thread runs. Each
-- latency is part of it, so it starts at sched_waking too, before the kernel queues the task: it
-- exceeds schedstat's run_delay (time queued) by the wakeup path, about 0.7 us per wakeup (21-23% in
-- a pipe ping-pong on a 2-CPU VM).
CREATE VIRTUAL TABLE wakeup USING schedlens_columns(
  id INTEGER PRIMARY KEY, -- Row id.
  ts INTEGER NOT NULL, -- When the wakeup happened (sched_waking), ns.
  utid INTEGER NOT NULL, -- Thread woken (the wakee).
  waker_utid INTEGER, -- Thread that woke it (running on the waking CPU), NULL if unknown.
  waking_cpu INTEGER NOT NULL, -- CPU the wakeup was issued on.
  target_cpu INTEGER, -- CPU the kernel chose to run the wakee on.
  run_ts INTEGER, -- When the wakee next started running, ns; NULL if never in the trace.
  run_cpu INTEGER, -- CPU it then ran on; differs from target_cpu if it migrated.
  latency INTEGER, -- run_ts - ts, ns; NULL if run_ts is NULL.
  priority INTEGER, -- Wakee priority at the wakeup.
  irq_context INTEGER -- 1 if the waker ran in interrupt context (a hard IRQ or a softirq: a timer, a packet), 0 if a task woke it, NULL if the trace does not say (thread_state.irq_context's rule).
);

-- @table task_event: Task lifecycle: one row per fork, exec, exit, free or rename of a thread.
CREATE TABLE task_event (
  id INTEGER PRIMARY KEY, -- Row id.
  ts INTEGER NOT NULL, -- Event time, ns.
  type TEXT NOT NULL, -- 'fork' (new thread or process), 'exec', 'exit', 'free' (task_struct released), 'rename'.
  utid INTEGER NOT NULL, -- Thread it happened to (for fork: the new thread).
  tid INTEGER NOT NULL, -- Its tid.
  pid INTEGER, -- Its process id (tgid), NULL if unknown.
  parent_utid INTEGER, -- For fork: the thread that created it.
  parent_tid INTEGER, -- For fork: the creating thread's tid.
  comm TEXT, -- Name after the event (new comm for exec and rename).
  filename TEXT, -- For exec: the executed file.
  clone_flags INTEGER, -- For fork: clone flags (0x10000 CLONE_THREAD means a new thread, not a process).
  cpu INTEGER -- CPU it happened on.
);

-- @table lost_events: Gaps: events the recorder could not keep because a ring buffer was full.
-- Analyses over a CPU and time range that contains a gap undercount; see stats for the totals.
CREATE TABLE lost_events (
  id INTEGER PRIMARY KEY, -- Row id.
  ts INTEGER NOT NULL, -- First event after the gap, ns.
  cpu INTEGER NOT NULL, -- CPU whose events were lost.
  count INTEGER -- How many events were lost; NULL when the trace only says some were (ftrace lost_events).
);

-- @table agg_cpu: Per time bucket and CPU: how long non-idle threads ran and how often one was switched in.
-- Use it for utilization over long windows: sum(busy_ns) / (dur * buckets) per CPU.
-- Aggregates are totals per time bucket summed while the trace loads (schedlens only; not in Perfetto).
-- Buckets are [ts, ts + dur) with ts a multiple of dur; dur is the same for every row (metadata
-- aggregate_bucket_ns, a power of two chosen so the trace spans at most 1024 buckets). Intervals that
-- cross a bucket edge are cut there, so summing the buckets inside a window gives exact totals for
-- that part of it. Idle (utid 0) is left out.
CREATE TABLE agg_cpu (
  ts INTEGER NOT NULL, -- Bucket start, ns.
  dur INTEGER NOT NULL, -- Bucket length, ns.
  cpu INTEGER NOT NULL, -- CPU.
  busy_ns INTEGER NOT NULL, -- Time non-idle threads ran on the CPU within the bucket, ns.
  switches INTEGER NOT NULL -- Non-idle sched_slice rows starting within the bucket.
);

-- @table agg_thread: Per time bucket and thread: CPU time, switch-ins, runnable time, wakeups and their latency.
-- Buckets as in agg_cpu. Only buckets where the thread ran, waited or was woken have a row.
CREATE TABLE agg_thread (
  ts INTEGER NOT NULL, -- Bucket start, ns.
  dur INTEGER NOT NULL, -- Bucket length, ns.
  utid INTEGER NOT NULL, -- Thread (thread.utid).
  cpu_ns INTEGER NOT NULL, -- Time it ran (sched_slice) within the bucket, ns.
  switches INTEGER NOT NULL, -- Its sched_slice rows starting within the bucket.
  runnable_ns INTEGER NOT NULL, -- Its runnable time (thread_state R and R+, see wakeup) within the bucket, ns.
  wakeups INTEGER NOT NULL, -- Its wakeup rows with a latency whose ts is within the bucket.
  latency_max INTEGER, -- Largest latency among those wakeups, ns; NULL without any.
  latency_hist BLOB -- Their latencies as a histogram: (bin u16, count u32) little-endian pairs; bins exact below 64 ns, then 32 per power of two. NULL without wakeups.
);

-- @table agg_cpu_thread: Per time bucket, CPU and thread: its time on that CPU.
-- Buckets as in agg_cpu; only (bucket, CPU, thread) that ran have a row. What held a CPU over a
-- long wait is read here.
CREATE TABLE agg_cpu_thread (
  ts INTEGER NOT NULL, -- Bucket start, ns.
  dur INTEGER NOT NULL, -- Bucket length, ns.
  cpu INTEGER NOT NULL, -- CPU.
  utid INTEGER NOT NULL, -- Thread (thread.utid).
  cpu_ns INTEGER NOT NULL -- Time it ran on the CPU (sched_slice) within the bucket, ns.
);

-- @table stack_profile_mapping: A binary or library that stack frames lie in (Perfetto's stack_profile_mapping).
-- schedlens writes one per file (and one for the kernel, '[kernel.kallsyms]', and one for
-- addresses in no file, '[unknown]'), not one per process mapping: start, end and the offsets
-- are 0 and a frame's rel_pc is its offset in the file.
CREATE TABLE stack_profile_mapping (
  id INTEGER PRIMARY KEY, -- Row id.
  build_id TEXT NOT NULL, -- Hex-encoded build id of the file, '' when unknown.
  exact_offset INTEGER NOT NULL, -- Offset of the mapping in the file when known exactly.
  start_offset INTEGER NOT NULL, -- Offset of the mapping's start in the file.
  start INTEGER NOT NULL, -- Start of the mapping in the process's address space.
  end INTEGER NOT NULL, -- End of the mapping in the process's address space.
  load_bias INTEGER NOT NULL, -- Load bias.
  name TEXT NOT NULL -- Path of the file.
);

-- @table stack_profile_frame: A frame: a code address in a mapping, with its function's name when it was resolved
-- (Perfetto's stack_profile_frame). The recorder names frames on the recording machine.
CREATE TABLE stack_profile_frame (
  id INTEGER PRIMARY KEY, -- Row id.
  name TEXT NOT NULL, -- Function name; '' when the address did not resolve (the mapping and rel_pc remain).
  mapping INTEGER NOT NULL, -- Mapping (stack_profile_mapping.id).
  rel_pc INTEGER NOT NULL -- Address relative to the mapping (for schedlens: the offset in the file; for the kernel, the address).
);

-- @table stack_profile_callsite: A node of the call tree: a frame called from its parent (Perfetto's stack_profile_callsite).
-- A stack is the path from a sample's callsite up to its root (depth 0, the outermost frame).
CREATE TABLE stack_profile_callsite (
  id INTEGER PRIMARY KEY, -- Row id.
  depth INTEGER NOT NULL, -- Distance from the root: 0 for the outermost frame.
  parent_id INTEGER, -- Caller's callsite; NULL at the root.
  frame_id INTEGER NOT NULL -- Frame (stack_profile_frame.id).
);

-- @table perf_session: A stream of samples (Perfetto's perf_session): for schedlens, one per stack kind recorded.
CREATE TABLE perf_session (
  id INTEGER PRIMARY KEY, -- Row id.
  cmdline TEXT, -- Command line of the profiler; NULL for schedlens recordings.
  stack_kind TEXT -- What the samples are (schedlens): 'off-cpu' (a task's stack when it blocked), 'cpu' (sampled on the CPU clock), 'waker' (the waker's stack at sched_waking); NULL for sessions of other recorders.
);

-- @table perf_sample: A stack sample (Perfetto's perf_sample): for CPU samples, where a thread was running; for
-- off-CPU ones, where it blocked (see off_cpu_sample for their weights); for waker ones, where
-- the thread that woke another was. perf_session.stack_kind says which.
CREATE TABLE perf_sample (
  id INTEGER PRIMARY KEY, -- Row id.
  ts INTEGER NOT NULL, -- Sample time, ns.
  utid INTEGER NOT NULL, -- Sampled thread (thread.utid).
  cpu INTEGER, -- CPU the thread was on.
  cpu_mode TEXT NOT NULL, -- 'kernel', 'user' or 'unknown': where the thread was when sampled.
  callsite_id INTEGER, -- Innermost frame's callsite (stack_profile_callsite.id); NULL when no stack was taken.
  unwind_error TEXT, -- Why unwinding failed, when it did.
  perf_session_id INTEGER -- Stream (perf_session.id).
);

-- @table off_cpu_sample: An off-CPU stack with its weight (schedlens only): a perf_sample of the 'off-cpu' session, taken when
-- the thread blocked (sched_switch with prev in S or D), and how long it then stayed off the CPU: the
-- thread_state that starts at the sample. SUM(dur) per callsite_id is an off-CPU profile.
-- @column id INTEGER: The sample (perf_sample.id).
-- @column ts INTEGER: When the thread blocked, ns.
-- @column utid INTEGER: Thread (thread.utid).
-- @column callsite_id INTEGER: Innermost callsite (stack_profile_callsite.id); NULL when no stack was taken.
-- @column dur INTEGER: How long it stayed off the CPU, ns (the thread_state's dur: -1 if it lasted to the end of the trace); NULL when the trace has no state starting there.
-- @column state TEXT: That thread_state's state (S or D).
CREATE VIEW off_cpu_sample AS SELECT p.id AS id, p.ts AS ts, p.utid AS utid, p.callsite_id AS callsite_id, t.dur AS dur, t.state AS state FROM perf_sample p JOIN perf_session s ON s.id = p.perf_session_id AND s.stack_kind = 'off-cpu' LEFT JOIN thread_state t ON t.utid = p.utid AND t.ts = p.ts;
