//! The ring buffer record ABI (bpf/events.h) and its zero-allocation decoder.
//!
//! Nothing here copies events.h by hand: records are read through the
//! skeleton's generated types (`c::`), which libbpf-cargo derives from the BPF
//! object's BTF, so a C field that is renamed, retyped or moved changes the
//! type the decoder reads, and the build fails where the two disagree. The few
//! limits that code without the recorder needs are Rust constants tied to
//! their C values by the compile-time checks below.
//!
//! A record type the writer keeps no state for is declared once, as an
//! [`FtraceLayout`] in [`RECORDS`]; the others have a decoding arm here and an
//! [`Event`] variant of their own.

use super::skel::types as c;
use super::{MAX_FILTER, MAX_SHARDS};
use crate::model::MAX_CPUS;
use crate::model::event::{
    COMM_LEN, CPUMASK_WORDS, Event, FieldKind, FtraceField, FtraceLayout, Header, NAME_LEN,
};
use crate::model::stack::StackKind;
use crate::perfetto::proto::fields;
use std::mem::{offset_of, size_of};

/// A record's type (enum sl_type).
pub type RecordType = c::sl_type;

/// What the recorder says about a record type.
pub struct RecordInfo {
    pub ty: RecordType,
    /// Name its events are counted under in the trace's recorder stats
    /// (Perfetto's event name; schedlens_* for our bookkeeping records).
    /// None: not an event (Lost).
    pub event: Option<&'static str>,
    /// Label in the `schedlens trace` summary.
    pub label: &'static str,
    /// How the writer stores it, for records with no variant of their own.
    pub ftrace: Option<&'static FtraceLayout>,
}

impl RecordInfo {
    const fn own(ty: RecordType, event: Option<&'static str>, label: &'static str) -> Self {
        RecordInfo {
            ty,
            event,
            label,
            ftrace: None,
        }
    }

    const fn ftrace(ty: RecordType, label: &'static str, layout: &'static FtraceLayout) -> Self {
        RecordInfo {
            ty,
            event: Some(layout.name),
            label,
            ftrace: Some(layout),
        }
    }
}

/// The announcement that precedes a task's first event in a shard.
pub const TASK_INFO: RecordType = c::sl_type::SL_TASK_INFO;

/// Every record type, in the order the summary and the recorder stats list them.
pub const RECORDS: [RecordInfo; 26] = [
    RecordInfo::own(c::sl_type::SL_SWITCH, Some("sched_switch"), "sched_switch"),
    RecordInfo::own(c::sl_type::SL_WAKING, Some("sched_waking"), "sched_waking"),
    RecordInfo::ftrace(c::sl_type::SL_WAKEUP_NEW, "sched_wakeup_new", &WAKEUP_NEW),
    RecordInfo::ftrace(
        c::sl_type::SL_BLOCKED_REASON,
        "blocked in D",
        &BLOCKED_REASON,
    ),
    RecordInfo::own(c::sl_type::SL_FORK, Some("sched_process_fork"), "fork"),
    RecordInfo::own(c::sl_type::SL_EXEC, Some("sched_process_exec"), "exec"),
    RecordInfo::ftrace(c::sl_type::SL_EXIT, "exit", &EXIT),
    RecordInfo::own(c::sl_type::SL_FREE, Some("sched_process_free"), "free"),
    RecordInfo::own(c::sl_type::SL_RENAME, Some("task_rename"), "rename"),
    RecordInfo::own(
        c::sl_type::SL_TASK_INFO,
        Some("schedlens_task_info"),
        "task info",
    ),
    RecordInfo::own(c::sl_type::SL_FORGET, Some("schedlens_forget"), "forget"),
    RecordInfo::own(c::sl_type::SL_LOST, None, "lost markers"),
    RecordInfo::ftrace(c::sl_type::SL_IRQ_ENTRY, "irq entry", &IRQ_ENTRY),
    RecordInfo::ftrace(c::sl_type::SL_IRQ_EXIT, "irq exit", &IRQ_EXIT),
    RecordInfo::ftrace(
        c::sl_type::SL_SOFTIRQ_ENTRY,
        "softirq entry",
        &SOFTIRQ_ENTRY,
    ),
    RecordInfo::ftrace(c::sl_type::SL_SOFTIRQ_EXIT, "softirq exit", &SOFTIRQ_EXIT),
    RecordInfo::ftrace(c::sl_type::SL_MIGRATE, "migrations", &MIGRATE),
    RecordInfo::ftrace(c::sl_type::SL_CPU_IDLE, "cpu idle", &CPU_IDLE),
    RecordInfo::ftrace(
        c::sl_type::SL_CPU_FREQUENCY,
        "cpu frequency",
        &CPU_FREQUENCY,
    ),
    RecordInfo::ftrace(
        c::sl_type::SL_CPU_FREQUENCY_LIMITS,
        "cpu frequency limits",
        &CPU_FREQUENCY_LIMITS,
    ),
    RecordInfo::ftrace(c::sl_type::SL_IPI_SEND_CPU, "ipi to a cpu", &IPI_SEND_CPU),
    RecordInfo::ftrace(
        c::sl_type::SL_IPI_SEND_CPUMASK,
        "ipi to cpus",
        &IPI_SEND_CPUMASK,
    ),
    RecordInfo::ftrace(
        c::sl_type::SL_WORKQUEUE_QUEUE_WORK,
        "work queued",
        &QUEUE_WORK,
    ),
    RecordInfo::ftrace(
        c::sl_type::SL_WORKQUEUE_EXECUTE_START,
        "work start",
        &WORK_START,
    ),
    RecordInfo::ftrace(c::sl_type::SL_WORKQUEUE_EXECUTE_END, "work end", &WORK_END),
    RecordInfo::own(c::sl_type::SL_STACK, None, "stacks"),
];

/// Length of per-type counter arrays, which are indexed by the type's value.
pub const N_TYPES: usize = {
    let mut max = 0;
    let mut i = 0;
    while i < RECORDS.len() {
        if RECORDS[i].ty.0 as usize > max {
            max = RECORDS[i].ty.0 as usize;
        }
        i += 1;
    }
    max + 1
};

/// The index of a record type in per-type counter arrays.
pub fn type_index(ty: RecordType) -> usize {
    ty.0 as usize
}

/// The layout of each record type stored as a plain FtraceEvent, by type value.
static FTRACE_LAYOUTS: [Option<&FtraceLayout>; N_TYPES] = {
    let mut table = [None; N_TYPES];
    let mut i = 0;
    while i < RECORDS.len() {
        table[RECORDS[i].ty.0 as usize] = RECORDS[i].ftrace;
        i += 1;
    }
    table
};

/// Declares the [`FtraceLayout`] of a record body: the generated struct, the
/// FtraceEvent field and message it becomes, then each struct field with its
/// kind and its field in that message, in the order they are written. Offsets
/// come from the generated struct and each field's Rust type is checked
/// against its kind, so the declaration cannot drift from events.h.
macro_rules! ftrace_layout {
    ($name:literal: $body:ident as $event:ident, $message:ident {
        $($field:ident: $kind:ident => $number:ident),* $(,)?
    }) => {
        FtraceLayout {
            name: $name,
            event: fields::ftrace_event::$event,
            size: size_of::<c::$body>(),
            fields: &[$(FtraceField {
                name: stringify!($field),
                number: fields::$message::$number,
                offset: offset_of!(c::$body, $field),
                kind: {
                    let _typed: fn(&c::$body) -> &field_type!($kind) = |b| &b.$field;
                    FieldKind::$kind
                },
            }),*],
        }
    };
    // A tracepoint Perfetto has no message for: a GenericFtraceEvent, whose
    // fields are named after the struct's (the tracepoint's names).
    (generic $name:literal: $body:ident {
        $($field:ident: $kind:ident),* $(,)?
    }) => {
        FtraceLayout {
            name: $name,
            event: fields::ftrace_event::GENERIC,
            size: size_of::<c::$body>(),
            fields: &[$(FtraceField {
                name: stringify!($field),
                number: 0,
                offset: offset_of!(c::$body, $field),
                kind: {
                    let _typed: fn(&c::$body) -> &field_type!($kind) = |b| &b.$field;
                    FieldKind::$kind
                },
            }),*],
        }
    };
}

/// The Rust type a field of each [`FieldKind`] has in a generated struct.
macro_rules! field_type {
    (I32) => {
        i32
    };
    (U32) => {
        u32
    };
    (U64) => {
        u64
    };
    (TaskComm) => {
        u64
    };
    (Name) => {
        [std::ffi::c_char; NAME_LEN]
    };
    (KernelFunction) => {
        u64
    };
    (CpuMask) => {
        [u64; CPUMASK_WORDS]
    };
}

/// sched_wakeup_new: a new task is woken for the first time (sl_waking body).
static WAKEUP_NEW: FtraceLayout = ftrace_layout!("sched_wakeup_new":
sl_waking as SCHED_WAKEUP_NEW, sched_wakeup_new_ftrace_event {
    task: TaskComm => COMM,
    pid: I32 => PID,
    prio: I32 => PRIO,
    target_cpu: I32 => TARGET_CPU,
});

/// sched_blocked_reason: the task blocked in D in kernel function `caller`
/// (bpf/events.h sl_blocked_reason).
static BLOCKED_REASON: FtraceLayout = ftrace_layout!("sched_blocked_reason":
sl_blocked_reason as SCHED_BLOCKED_REASON, sched_blocked_reason_ftrace_event {
    pid: I32 => PID,
    caller: KernelFunction => CALLER,
    io_wait: U32 => IO_WAIT,
});

/// sched_process_exit: the task is exiting.
static EXIT: FtraceLayout = ftrace_layout!("sched_process_exit":
sl_exit as SCHED_PROCESS_EXIT, sched_process_exit_ftrace_event {
    task: TaskComm => COMM,
    pid: I32 => PID,
    tgid: I32 => TGID,
    prio: I32 => PRIO,
});

/// irq_handler_entry: a device's interrupt handler starts (the kernel's
/// tracepoint prints no handler address: Perfetto's `handler` stays unset).
static IRQ_ENTRY: FtraceLayout = ftrace_layout!("irq_handler_entry":
sl_irq_entry as IRQ_HANDLER_ENTRY, irq_handler_entry_ftrace_event {
    irq: I32 => IRQ,
    name: Name => NAME,
});

/// irq_handler_exit: the handler returned `ret` (1: handled).
static IRQ_EXIT: FtraceLayout = ftrace_layout!("irq_handler_exit":
sl_irq_exit as IRQ_HANDLER_EXIT, irq_handler_exit_ftrace_event {
    irq: I32 => IRQ,
    ret: I32 => RET,
});

/// softirq_entry: softirq `vec` (HI, TIMER, NET_TX, ...) starts running.
static SOFTIRQ_ENTRY: FtraceLayout = ftrace_layout!("softirq_entry":
sl_softirq as SOFTIRQ_ENTRY, softirq_entry_ftrace_event {
    vec: U32 => VEC,
});

/// softirq_exit: softirq `vec` is done.
static SOFTIRQ_EXIT: FtraceLayout = ftrace_layout!("softirq_exit":
sl_softirq as SOFTIRQ_EXIT, softirq_exit_ftrace_event {
    vec: U32 => VEC,
});

/// sched_migrate_task: the task moves to another CPU's runqueue.
static MIGRATE: FtraceLayout = ftrace_layout!("sched_migrate_task":
sl_migrate as SCHED_MIGRATE_TASK, sched_migrate_task_ftrace_event {
    task: TaskComm => COMM,
    pid: I32 => PID,
    prio: I32 => PRIO,
    orig_cpu: I32 => ORIG_CPU,
    dest_cpu: I32 => DEST_CPU,
    running: I32 => RUNNING,
});

/// cpu_idle: a CPU enters idle state `value`, or leaves idle (u32::MAX).
static CPU_IDLE: FtraceLayout = ftrace_layout!("cpu_idle":
sl_cpu_value as CPU_IDLE, cpu_idle_ftrace_event {
    value: U32 => STATE,
    cpu_id: U32 => CPU_ID,
});

/// cpu_frequency: a CPU now runs at `value` kHz.
static CPU_FREQUENCY: FtraceLayout = ftrace_layout!("cpu_frequency":
sl_cpu_value as CPU_FREQUENCY, cpu_frequency_ftrace_event {
    value: U32 => STATE,
    cpu_id: U32 => CPU_ID,
});

/// cpu_frequency_limits: a CPU's frequency policy bounds changed.
static CPU_FREQUENCY_LIMITS: FtraceLayout = ftrace_layout!("cpu_frequency_limits":
sl_freq_limits as CPU_FREQUENCY_LIMITS, cpu_frequency_limits_ftrace_event {
    min_freq: U32 => MIN_FREQ,
    max_freq: U32 => MAX_FREQ,
    cpu_id: U32 => CPU_ID,
});

/// ipi_send_cpu (no Perfetto message: a GenericFtraceEvent): an IPI to
/// `cpu`, sent from `callsite` to run `callback` there (none: a reschedule).
static IPI_SEND_CPU: FtraceLayout = ftrace_layout!(generic "ipi_send_cpu": sl_ipi_send_cpu {
    cpu: U32,
    callsite: KernelFunction,
    callback: KernelFunction,
});

/// ipi_send_cpumask (a GenericFtraceEvent): the same to each CPU of `cpumask`.
static IPI_SEND_CPUMASK: FtraceLayout = ftrace_layout!(generic "ipi_send_cpumask":
sl_ipi_send_cpumask {
    cpumask: CpuMask,
    callsite: KernelFunction,
    callback: KernelFunction,
});

/// workqueue_queue_work: the header's task queued a work item.
static QUEUE_WORK: FtraceLayout = ftrace_layout!("workqueue_queue_work":
sl_queue_work as WORKQUEUE_QUEUE_WORK, workqueue_queue_work_ftrace_event {
    work: U64 => WORK,
    function: KernelFunction => FUNCTION,
    req_cpu: U32 => REQ_CPU,
    cpu: U32 => CPU,
    workqueue: Name => WORKQUEUE,
});

/// workqueue_execute_start: a kworker starts running a work item.
static WORK_START: FtraceLayout = ftrace_layout!("workqueue_execute_start":
sl_work as WORKQUEUE_EXECUTE_START, workqueue_execute_start_ftrace_event {
    work: U64 => WORK,
    function: KernelFunction => FUNCTION,
});

/// workqueue_execute_end: the work item's function returned.
static WORK_END: FtraceLayout = ftrace_layout!("workqueue_execute_end":
sl_work as WORKQUEUE_EXECUTE_END, workqueue_execute_end_ftrace_event {
    work: U64 => WORK,
    function: KernelFunction => FUNCTION,
});

// The Rust constants that code without the recorder uses, tied to events.h.
const _: () = {
    assert!(c::sl_limits::SL_MAX_CPUS.0 as usize == MAX_CPUS);
    assert!(c::sl_limits::SL_MAX_SHARDS.0 as usize == MAX_SHARDS);
    assert!(c::sl_limits::SL_MAX_FILTER.0 as usize == MAX_FILTER);
    assert!(c::sl_limits::SL_COMM_LEN.0 as usize == COMM_LEN);
    assert!(c::sl_limits::SL_NAME_LEN.0 as usize == NAME_LEN);
    assert!(c::sl_limits::SL_IPI_MASK_WORDS.0 as usize == CPUMASK_WORDS);
    assert!(c::sl_kernel_flags::SL_CLONE_THREAD.0 as i64 == libc::CLONE_THREAD as i64);
    assert!(c::sl_kernel_flags::SL_PF_KTHREAD.0 as u64 == super::snapshot::PF_KTHREAD);
    // The header's type field is a u8.
    assert!(N_TYPES <= 256);
};

const HDR: usize = size_of::<c::sl_header>();

/// Marker for types any byte pattern is a valid value of.
///
/// # Safety
/// Only for plain integer structs and arrays (the generated record types).
unsafe trait Pod: Copy {}
// SAFETY: generated from events.h, whose records hold only integers and
// integer arrays with explicit padding.
unsafe impl Pod for c::sl_header {}
// SAFETY: as above.
unsafe impl Pod for c::sl_switch {}
// SAFETY: as above.
unsafe impl Pod for c::sl_waking {}
// SAFETY: as above.
unsafe impl Pod for c::sl_task_info {}
// SAFETY: as above.
unsafe impl Pod for c::sl_fork {}
// SAFETY: as above.
unsafe impl Pod for c::sl_exec {}
// SAFETY: as above.
unsafe impl Pod for c::sl_exit {}
// SAFETY: as above.
unsafe impl Pod for c::sl_free {}
// SAFETY: as above.
unsafe impl Pod for c::sl_forget {}
// SAFETY: as above.
unsafe impl Pod for c::sl_rename {}
// SAFETY: as above.
unsafe impl Pod for c::sl_lost {}
unsafe impl Pod for c::sl_stack {}

/// Why a record could not be decoded (counted by the consumer, never fatal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its header plus the body its type needs.
    Short,
    /// A type this build does not know.
    UnknownType(u8),
    /// A field outside the values BPF writes (a stack kind).
    BadField,
}

fn read<T: Pod>(data: &[u8], at: usize) -> Result<T, DecodeError> {
    let bytes = data
        .get(at..at + size_of::<T>())
        .ok_or(DecodeError::Short)?;
    // SAFETY: `bytes` holds size_of::<T>() bytes and T is plain old data
    // (every bit pattern valid); read_unaligned needs no alignment.
    Ok(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

fn comm_at(data: &[u8], at: usize) -> Result<&[u8; COMM_LEN], DecodeError> {
    data.get(at..at + COMM_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(DecodeError::Short)
}

/// The prev_state the kernel's sched_switch tracepoint prints
/// (__trace_sched_switch_state) from what BPF recorded: the preempt flag, or
/// prev's raw `__state | exit_state`.
pub fn report_state(raw: u32) -> i64 {
    use c::sl_kernel_flags as k;
    const TASK_REPORT: u32 = 0x7f;
    const TASK_UNINTERRUPTIBLE: u32 = k::SL_TASK_UNINTERRUPTIBLE.0;
    const TASK_IDLE: u32 = TASK_UNINTERRUPTIBLE | k::SL_TASK_NOLOAD.0;
    const TASK_REPORT_IDLE: u32 = 0x80;
    const TASK_REPORT_MAX: i64 = 0x100;
    const TASK_RTLOCK_WAIT: u32 = k::SL_TASK_RTLOCK_WAIT.0;
    const TASK_FROZEN: u32 = k::SL_TASK_FROZEN.0;
    if raw & c::sl_switch_state::SL_STATE_PREEMPT.0 != 0 {
        return TASK_REPORT_MAX;
    }
    let mut state = raw & TASK_REPORT;
    if raw & TASK_IDLE == TASK_IDLE {
        state = TASK_REPORT_IDLE;
    }
    if raw & (TASK_RTLOCK_WAIT | TASK_FROZEN) != 0 {
        state = TASK_UNINTERRUPTIBLE;
    }
    // fls(state), then 1 << (fls - 1): the highest set bit.
    if state == 0 {
        0
    } else {
        1i64 << (31 - state.leading_zeros())
    }
}

/// Decodes one ring buffer record; the event borrows from `data`.
pub fn decode(data: &[u8]) -> Result<(RecordType, Header, Event<'_>), DecodeError> {
    let h: c::sl_header = read(data, 0)?;
    let ty = c::sl_type(u32::from(h.r#type));
    let header = Header {
        ts: h.ts,
        cpu: u32::from(h.cpu),
        pid: h.pid,
    };
    let ev = match ty {
        c::sl_type::SL_SWITCH => {
            let b: c::sl_switch = read(data, HDR)?;
            Event::Switch {
                prev: b.prev,
                prev_pid: b.prev_pid,
                prev_prio: i32::from(b.prev_prio),
                prev_state: report_state(b.prev_state),
                next: b.next,
                next_pid: b.next_pid,
                next_prio: i32::from(b.next_prio),
            }
        }
        c::sl_type::SL_WAKING => {
            let b: c::sl_waking = read(data, HDR)?;
            Event::Waking {
                wakee: b.task,
                pid: b.pid,
                prio: b.prio,
                target_cpu: b.target_cpu,
                common_flags: (b.common_flags != c::sl_trace_flags::SL_FLAGS_UNKNOWN.0)
                    .then_some(b.common_flags as u8),
            }
        }
        c::sl_type::SL_TASK_INFO => {
            let b: c::sl_task_info = read(data, HDR)?;
            Event::TaskInfo {
                task: b.task,
                pid: b.pid,
                tgid: b.tgid,
                ppid: b.ppid,
                comm: comm_at(data, HDR + offset_of!(c::sl_task_info, comm))?,
                is_kthread: b.flags & c::sl_task_flags::SL_TASK_KTHREAD.0 != 0,
            }
        }
        c::sl_type::SL_FORK => {
            let b: c::sl_fork = read(data, HDR)?;
            Event::Fork {
                parent: b.parent,
                parent_pid: b.parent_pid,
                child: b.child,
                child_pid: b.child_pid,
                child_tgid: b.child_tgid,
                clone_flags: b.clone_flags,
            }
        }
        c::sl_type::SL_EXEC => {
            let b: c::sl_exec = read(data, HDR)?;
            let start = HDR + size_of::<c::sl_exec>();
            let filename = usize::try_from(b.filename_len)
                .ok()
                .and_then(|len| data.get(start..start.checked_add(len)?))
                .ok_or(DecodeError::Short)?;
            Event::Exec {
                task: b.task,
                pid: b.pid,
                old_pid: b.old_pid,
                comm: comm_at(data, HDR + offset_of!(c::sl_exec, comm))?,
                filename,
            }
        }
        c::sl_type::SL_FREE => {
            let b: c::sl_free = read(data, HDR)?;
            Event::Free {
                task: b.task,
                pid: b.pid,
                prio: b.prio,
            }
        }
        c::sl_type::SL_FORGET => {
            let b: c::sl_forget = read(data, HDR)?;
            Event::Forget { task: b.task }
        }
        c::sl_type::SL_RENAME => {
            let b: c::sl_rename = read(data, HDR)?;
            Event::Rename {
                task: b.task,
                pid: b.pid,
                newcomm: comm_at(data, HDR + offset_of!(c::sl_rename, newcomm))?,
            }
        }
        c::sl_type::SL_LOST => {
            let b: c::sl_lost = read(data, HDR)?;
            Event::Lost { count: b.count }
        }
        c::sl_type::SL_STACK => {
            let b: c::sl_stack = read(data, HDR)?;
            let id = |id: i32| u32::try_from(id).ok();
            Event::Stack {
                tgid: b.tgid,
                kind: StackKind::from_bit(b.kind).ok_or(DecodeError::BadField)?,
                kernel: id(b.kstack),
                user: id(b.ustack),
            }
        }
        _ => {
            let layout = FTRACE_LAYOUTS
                .get(usize::from(h.r#type))
                .copied()
                .flatten()
                .ok_or(DecodeError::UnknownType(h.r#type))?;
            Event::Ftrace {
                layout,
                body: data.get(HDR..HDR + layout.size).ok_or(DecodeError::Short)?,
            }
        }
    };
    Ok((ty, header, ev))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ty: RecordType, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&1234u64.to_ne_bytes());
        v.extend_from_slice(&42i32.to_ne_bytes());
        v.extend_from_slice(&3u16.to_ne_bytes());
        v.push(ty.0 as u8);
        v.push(0);
        v.extend_from_slice(body);
        v
    }

    /// The bytes of a generated record struct, as BPF writes them.
    fn bytes_of<T: Pod>(v: &T) -> Vec<u8> {
        // SAFETY: T is plain old data with explicit padding: every byte is initialized.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn states_match_the_kernel_tracepoint() {
        assert_eq!(report_state(c::sl_switch_state::SL_STATE_PREEMPT.0), 0x100);
        assert_eq!(report_state(0), 0);
        assert_eq!(report_state(0x1), 0x1); // S
        assert_eq!(report_state(0x2), 0x2); // D
        assert_eq!(report_state(0x402), 0x80); // TASK_IDLE -> I
        assert_eq!(report_state(0x1000), 0x2); // RTLOCK_WAIT -> D
        assert_eq!(report_state(0x8001), 0x2); // frozen -> D
        assert_eq!(report_state(0x20), 0x20); // exit_state ZOMBIE
        assert_eq!(report_state(0x10 | 0x20), 0x20); // highest bit wins
        assert_eq!(report_state(0x100), 0); // TASK_WAKING: not reported
    }

    #[test]
    fn decodes_switch_and_rejects_short_records() {
        let mut body = Vec::new();
        body.extend_from_slice(&0xaaaau64.to_ne_bytes());
        body.extend_from_slice(&0xbbbbu64.to_ne_bytes());
        body.extend_from_slice(&10i32.to_ne_bytes());
        body.extend_from_slice(&11i32.to_ne_bytes());
        body.extend_from_slice(&1u32.to_ne_bytes());
        body.extend_from_slice(&120i16.to_ne_bytes());
        body.extend_from_slice(&100i16.to_ne_bytes());
        let rec = record(c::sl_type::SL_SWITCH, &body);
        let (ty, h, ev) = decode(&rec).unwrap();
        assert_eq!(ty, c::sl_type::SL_SWITCH);
        assert_eq!((h.ts, h.pid, h.cpu), (1234, 42, 3));
        assert_eq!(
            ev,
            Event::Switch {
                prev: 0xaaaa,
                prev_pid: 10,
                prev_prio: 120,
                prev_state: 1,
                next: 0xbbbb,
                next_pid: 11,
                next_prio: 100,
            }
        );
        for len in 0..rec.len() {
            assert_eq!(decode(&rec[..len]), Err(DecodeError::Short), "len {len}");
        }
        assert_eq!(
            decode(&record(c::sl_type(99), &[])),
            Err(DecodeError::UnknownType(99))
        );
    }

    #[test]
    fn decodes_exec_filename_within_bounds() {
        let mut body = Vec::new();
        body.extend_from_slice(&7u64.to_ne_bytes());
        body.extend_from_slice(&5i32.to_ne_bytes());
        body.extend_from_slice(&6i32.to_ne_bytes());
        body.extend_from_slice(b"true\0\0\0\0\0\0\0\0\0\0\0\0");
        body.extend_from_slice(&9u32.to_ne_bytes());
        body.extend_from_slice(&0u32.to_ne_bytes());
        body.extend_from_slice(b"/bin/true");
        let rec = record(c::sl_type::SL_EXEC, &body);
        match decode(&rec).unwrap().2 {
            Event::Exec {
                task,
                pid,
                old_pid,
                comm,
                filename,
            } => {
                assert_eq!((task, pid, old_pid), (7, 5, 6));
                assert_eq!(crate::model::event::comm_str(comm), b"true");
                assert_eq!(filename, b"/bin/true");
            }
            other => panic!("{other:?}"),
        }
        // BPF pads exec records to a size class: the padding is not filename.
        let mut padded = rec.clone();
        padded.resize(128, 0xff);
        assert!(
            matches!(decode(&padded).unwrap().2, Event::Exec { filename, .. } if filename == b"/bin/true")
        );
        // A filename_len beyond the record is malformed, not a panic.
        assert_eq!(decode(&rec[..rec.len() - 1]), Err(DecodeError::Short));
        let mut huge = rec.clone();
        let at = HDR + offset_of!(c::sl_exec, filename_len);
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(decode(&huge), Err(DecodeError::Short));
    }

    #[test]
    fn decodes_task_info_comm_by_reference() {
        let mut body = Vec::new();
        body.extend_from_slice(&1u64.to_ne_bytes());
        for v in [100i32, 100, 1] {
            body.extend_from_slice(&v.to_ne_bytes());
        }
        body.extend_from_slice(&c::sl_task_flags::SL_TASK_KTHREAD.0.to_ne_bytes());
        body.extend_from_slice(b"kworker/0:1\0\0\0\0\0");
        let rec = record(c::sl_type::SL_TASK_INFO, &body);
        let (_, _, ev) = decode(&rec).unwrap();
        let Event::TaskInfo {
            comm, is_kthread, ..
        } = ev
        else {
            panic!("{ev:?}")
        };
        assert!(is_kthread);
        assert_eq!(crate::model::event::comm_str(comm), b"kworker/0:1");
    }

    /// Decodes an Ftrace record; returns its layout's name and field values.
    fn decode_ftrace(rec: &[u8]) -> (&'static str, Vec<u64>, Vec<u64>) {
        let (_, _, ev) = decode(rec).unwrap();
        let Event::Ftrace { layout, body } = ev else {
            panic!("{ev:?}")
        };
        for len in HDR..rec.len() {
            assert_eq!(decode(&rec[..len]), Err(DecodeError::Short), "len {len}");
        }
        let values = layout.fields.iter().map(|f| f.read(body)).collect();
        (layout.name, values, layout.tasks(body).collect())
    }

    #[test]
    fn ftrace_records_decode_by_their_layout() {
        let exit = c::sl_exit {
            task: 0xfeed,
            pid: 501,
            tgid: 500,
            prio: -3,
            pad: 0,
        };
        assert_eq!(
            decode_ftrace(&record(c::sl_type::SL_EXIT, &bytes_of(&exit))),
            (
                "sched_process_exit",
                vec![0xfeed, 501, 500, -3i64 as u64],
                vec![0xfeed]
            )
        );
        let wakeup = c::sl_waking {
            task: 0xbeef,
            pid: 7,
            target_cpu: 3,
            prio: 120,
            common_flags: 0,
        };
        assert_eq!(
            decode_ftrace(&record(c::sl_type::SL_WAKEUP_NEW, &bytes_of(&wakeup))),
            ("sched_wakeup_new", vec![0xbeef, 7, 120, 3], vec![0xbeef])
        );
    }

    #[test]
    fn a_waking_carries_its_context_unless_unknown() {
        for (flags, expected) in [
            (0, Some(0)),
            (c::sl_trace_flags::SL_TRACE_FLAG_SOFTIRQ.0, Some(0x10)),
            (c::sl_trace_flags::SL_FLAGS_UNKNOWN.0, None),
        ] {
            let waking = c::sl_waking {
                task: 0xbeef,
                pid: 7,
                target_cpu: 3,
                prio: 120,
                common_flags: flags,
            };
            let rec = record(c::sl_type::SL_WAKING, &bytes_of(&waking));
            let (_, _, ev) = decode(&rec).unwrap();
            let Event::Waking { common_flags, .. } = ev else {
                panic!("{ev:?}")
            };
            assert_eq!(common_flags, expected);
        }
    }

    #[test]
    fn every_record_type_is_listed_once() {
        let mut seen = [false; N_TYPES];
        for r in &RECORDS {
            assert!(!seen[type_index(r.ty)], "{:?} listed twice", r.ty);
            seen[type_index(r.ty)] = true;
        }
        // Types are 1..: 0 is no record.
        assert_eq!(seen.iter().filter(|s| **s).count(), N_TYPES - 1);
    }
}
