//! Recorder events as userspace sees them after decoding a ring buffer record.
//!
//! This is the interface between the BPF side (bpf/events.h, decoded in the
//! consumer threads) and the Perfetto writer ([`crate::perfetto::writer`]).
//! Every variant borrows from the ring buffer record: decoding allocates nothing.

/// Task identity: the kernel address of the task's `task_struct`. Stable for
/// the task's whole life, unlike a pid, which the kernel reuses.
pub type TaskId = u64;

/// Fields every event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// CLOCK_BOOTTIME, ns (Perfetto's default trace clock).
    pub ts: u64,
    /// CPU the tracepoint fired on.
    pub cpu: u32,
    /// tid of the task running when the tracepoint fired (FtraceEvent.pid).
    pub pid: i32,
}

/// Length of a kernel comm (TASK_COMM_LEN), NUL-padded.
pub const COMM_LEN: usize = 16;

/// The bytes of a comm up to its first NUL.
pub fn comm_str(comm: &[u8; COMM_LEN]) -> &[u8] {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    &comm[..end]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// sched_switch. `prev_state` is already the value the kernel's tracepoint
    /// prints (__trace_sched_switch_state): 0 R, 0x1 S, 0x2 D, ..., 0x100 preempted.
    Switch {
        prev: TaskId,
        prev_pid: i32,
        prev_prio: i32,
        prev_state: i64,
        next: TaskId,
        next_pid: i32,
        next_prio: i32,
    },
    /// sched_waking: `wakee` is being woken; the waker is the header's task.
    Waking {
        wakee: TaskId,
        pid: i32,
        prio: i32,
        target_cpu: i32,
    },
    /// sched_wakeup_new: a new task is woken for the first time.
    WakeupNew {
        task: TaskId,
        pid: i32,
        prio: i32,
        target_cpu: i32,
    },
    /// Names a task to this event's shard: sent the first time the shard sees
    /// the task and again after exec or rename. Every other event's TaskIds
    /// refer to tasks announced earlier in the same shard's stream.
    TaskInfo {
        task: TaskId,
        pid: i32,
        tgid: i32,
        /// tgid of the real parent.
        ppid: i32,
        comm: &'a [u8; COMM_LEN],
        is_kthread: bool,
    },
    /// sched_process_fork: `child` was created by `parent` (the header's task).
    Fork {
        parent: TaskId,
        parent_pid: i32,
        child: TaskId,
        child_pid: i32,
        child_tgid: i32,
        /// The clone flags (CLONE_THREAD 0x10000 marks a thread, not a process).
        clone_flags: u64,
    },
    /// sched_process_exec: `task` now runs `filename`; its comm changed (a
    /// TaskInfo with the new comm follows before the task's next use).
    Exec {
        task: TaskId,
        pid: i32,
        old_pid: i32,
        comm: &'a [u8; COMM_LEN],
        filename: &'a [u8],
    },
    /// sched_process_exit: the task is exiting.
    Exit {
        task: TaskId,
        pid: i32,
        tgid: i32,
        prio: i32,
    },
    /// sched_process_free: the task_struct is released; its TaskId may be reused.
    Free { task: TaskId, pid: i32, prio: i32 },
    /// A task in another shard was freed: drop it from this shard's task table
    /// without writing anything to the trace.
    Forget { task: TaskId },
    /// task_rename (prctl PR_SET_NAME, writes to /proc/.../comm).
    Rename {
        task: TaskId,
        pid: i32,
        newcomm: &'a [u8; COMM_LEN],
    },
    /// The ring buffer was full and `count` events of this CPU were lost just
    /// before this point.
    Lost { count: u64 },
}
