//! Recorder events as userspace sees them after decoding a ring buffer record.
//!
//! This is the interface between the BPF side (bpf/events.h, decoded in the
//! consumer threads) and the Perfetto writer ([`crate::perfetto::writer`]).
//! Every variant borrows from the ring buffer record: decoding allocates nothing.
//! Events the writer handles specially (CompactSched, the task table) have
//! their own variant; the rest are [`Event::Ftrace`], described by a layout.

use crate::model::stack::StackKind;

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

/// Length of the kernel names a BPF handler copies (an IRQ handler's), NUL-padded.
pub const NAME_LEN: usize = 28;

/// Words of an IPI's target cpumask a record keeps (its first 256 CPUs).
pub const CPUMASK_WORDS: usize = 4;

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
        /// The waker's context as the kernel's ftrace common_flags bits
        /// (hard IRQ 0x08, softirq 0x10, NMI 0x40; no others), None if the
        /// recorder could not tell on this kernel.
        common_flags: Option<u8>,
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
        /// The clone flags (CLONE_THREAD marks a thread, not a process).
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
    /// The kernel and user stacks of the header's task (its tid), as ids in
    /// the recorder's stack map (None: no such stack, or the map could not
    /// take it). Off-CPU stacks follow their switch, waker stacks their waking.
    Stack {
        tgid: i32,
        kind: StackKind,
        kernel: Option<u32>,
        user: Option<u32>,
    },
    /// A tracepoint the writer keeps no state for, copied into one Perfetto
    /// FtraceEvent field by field: `body` is the record's bytes and `layout`,
    /// the recorder's static declaration of that record type, says which
    /// FtraceEvent it is and where each field's value lies in `body`.
    Ftrace {
        layout: &'static FtraceLayout,
        body: &'a [u8],
    },
}

/// How the bytes of one record type become a Perfetto FtraceEvent: static
/// metadata, declared once per record type (src/recorder/abi.rs) and read by
/// the writer, as tracing-core's `Metadata` describes an event's fields.
/// Field numbers are those of Perfetto's FtraceEvent messages, which mirror
/// the kernel's tracepoint formats.
#[derive(Debug, PartialEq, Eq)]
pub struct FtraceLayout {
    /// The tracepoint as the kernel and Perfetto name it ("sched_process_exit").
    pub name: &'static str,
    /// Its field number in FtraceEvent's `event` oneof. For a tracepoint
    /// Perfetto has no message for, `generic`: it is then written as
    /// Perfetto writes those, a GenericFtraceEvent named `name` whose
    /// fields carry their names.
    pub event: u32,
    /// Bytes of the body; decoding guarantees `body` has them.
    pub size: usize,
    /// Written in this order.
    pub fields: &'static [FtraceField],
}

/// One field of an [`FtraceLayout`].
#[derive(Debug, PartialEq, Eq)]
pub struct FtraceField {
    /// The tracepoint's name for it (a GenericFtraceEvent's field name).
    pub name: &'static str,
    /// Field number in the event's message (none in a GenericFtraceEvent).
    pub number: u32,
    /// Byte offset of the value in the body.
    pub offset: usize,
    pub kind: FieldKind,
}

/// What a field holds in the body (native endian) and how it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// An i32, written as a proto int32.
    I32,
    /// A u32, written as a proto uint32.
    U32,
    /// A u64, written as a proto uint64.
    U64,
    /// A [`TaskId`] (u64), written as that task's comm (a proto string).
    TaskComm,
    /// A NUL-padded name of [`NAME_LEN`] bytes, written as a proto string
    /// up to its first NUL.
    Name,
    /// A kernel code address (u64). In an event's own message, written as a
    /// proto uint64 and, as Perfetto's symbolize_ksyms writes it, interned
    /// on the packet's sequence as that iid's InternedData.kernel_symbols
    /// name. In a GenericFtraceEvent, written as the name of the function
    /// it is in (as the kernel's text output, `%pS`, names it), or as the
    /// address when that is not known.
    KernelFunction,
    /// A cpumask of [`CPUMASK_WORDS`] u64s, written as the list of its CPUs
    /// ("1", "0-3,8"; the kernel's `%*pbl`), a proto string.
    CpuMask,
}

impl FtraceField {
    /// The value in `body`, widened to 64 bits as protobuf's varints carry it
    /// (an i32 sign-extended); 0 if `body` is too short, which decoding rules
    /// out, and for a [`FieldKind::Name`] or [`FieldKind::CpuMask`] (see
    /// [`FtraceField::name_bytes`], [`FtraceField::cpu_list`]).
    #[inline]
    pub fn read(&self, body: &[u8]) -> u64 {
        let at = self.offset;
        let word = |n: usize| body.get(at..at + n);
        match self.kind {
            FieldKind::I32 => word(4).map_or(0, |b| {
                i64::from(i32::from_ne_bytes(b.try_into().unwrap_or_default())) as u64
            }),
            FieldKind::U32 => word(4).map_or(0, |b| {
                u64::from(u32::from_ne_bytes(b.try_into().unwrap_or_default()))
            }),
            FieldKind::U64 | FieldKind::TaskComm | FieldKind::KernelFunction => {
                word(8).map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap_or_default()))
            }
            FieldKind::Name | FieldKind::CpuMask => 0,
        }
    }

    /// A [`FieldKind::CpuMask`] field's CPUs as the kernel lists a cpumask
    /// (`%*pbl`: "1", "0-3,8", "" for none), into `out` (cleared first).
    pub fn cpu_list(&self, body: &[u8], out: &mut String) {
        use std::fmt::Write as _;
        out.clear();
        let words = body
            .get(self.offset..self.offset + 8 * CPUMASK_WORDS)
            .filter(|_| self.kind == FieldKind::CpuMask)
            .unwrap_or(&[]);
        let bit = |cpu: usize| {
            words.get(cpu / 64 * 8..cpu / 64 * 8 + 8).is_some_and(|w| {
                u64::from_ne_bytes(w.try_into().unwrap_or_default()) >> (cpu % 64) & 1 != 0
            })
        };
        let mut cpu = 0;
        while cpu < 64 * CPUMASK_WORDS {
            if !bit(cpu) {
                cpu += 1;
                continue;
            }
            let first = cpu;
            while bit(cpu + 1) {
                cpu += 1;
            }
            let sep = if out.is_empty() { "" } else { "," };
            let _ = if cpu == first {
                write!(out, "{sep}{first}")
            } else {
                write!(out, "{sep}{first}-{cpu}")
            };
            cpu += 1;
        }
    }

    /// A [`FieldKind::Name`] field's bytes up to its first NUL (empty for
    /// other kinds, or if `body` is too short, which decoding rules out).
    #[inline]
    pub fn name_bytes<'b>(&self, body: &'b [u8]) -> &'b [u8] {
        if self.kind != FieldKind::Name {
            return &[];
        }
        let name = body.get(self.offset..self.offset + NAME_LEN).unwrap_or(&[]);
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        &name[..end]
    }
}

impl FtraceLayout {
    /// The tasks an event of this layout names (its [`FieldKind::TaskComm`] fields).
    pub fn tasks<'b>(&'static self, body: &'b [u8]) -> impl Iterator<Item = TaskId> + 'b {
        self.fields
            .iter()
            .filter(|f| f.kind == FieldKind::TaskComm)
            .map(move |f| f.read(body))
    }
}
