//! The ring buffer record ABI (bpf/events.h) and its zero-allocation decoder.
//!
//! Each struct mirrors its C twin field for field; the size asserts here and
//! the `_Static_assert`s in events.h pin both sides to the same layout.

use crate::model::event::{COMM_LEN, Event, Header, TaskId};
use std::mem::{offset_of, size_of};

pub const SL_SWITCH: u8 = 1;
pub const SL_WAKING: u8 = 2;
pub const SL_WAKEUP_NEW: u8 = 3;
pub const SL_TASK_INFO: u8 = 4;
pub const SL_FORK: u8 = 5;
pub const SL_EXEC: u8 = 6;
pub const SL_EXIT: u8 = 7;
pub const SL_FREE: u8 = 8;
pub const SL_FORGET: u8 = 9;
pub const SL_RENAME: u8 = 10;
pub const SL_LOST: u8 = 11;
/// Record types are 1..=SL_LOST; arrays of per-type counters use this length.
pub const N_TYPES: usize = SL_LOST as usize + 1;

/// Must match SL_MAX_SHARDS in events.h (a u64 bitmask in task storage).
pub const MAX_SHARDS: usize = 64;
pub use crate::model::MAX_CPUS;
/// Must match SL_MAX_FILTER in schedlens.bpf.c.
pub const MAX_FILTER: usize = 16;

const SL_STATE_PREEMPT: u32 = 0x8000_0000;
const SL_TASK_KTHREAD: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy)]
struct RawHeader {
    ts: u64,
    pid: i32,
    cpu: u16,
    ty: u8,
    _pad: u8,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawSwitch {
    prev: u64,
    next: u64,
    prev_pid: i32,
    next_pid: i32,
    prev_state: u32,
    prev_prio: i16,
    next_prio: i16,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawWaking {
    task: u64,
    pid: i32,
    target_cpu: i32,
    prio: i32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawTaskInfo {
    task: u64,
    pid: i32,
    tgid: i32,
    ppid: i32,
    flags: u32,
    comm: [u8; COMM_LEN],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawFork {
    parent: u64,
    child: u64,
    clone_flags: u64,
    parent_pid: i32,
    child_pid: i32,
    child_tgid: i32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawExec {
    task: u64,
    pid: i32,
    old_pid: i32,
    comm: [u8; COMM_LEN],
    filename_len: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawExit {
    task: u64,
    pid: i32,
    tgid: i32,
    prio: i32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawFree {
    task: u64,
    pid: i32,
    prio: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawRename {
    task: u64,
    pid: i32,
    _pad: u32,
    newcomm: [u8; COMM_LEN],
}

const _: () = {
    assert!(size_of::<RawHeader>() == 16);
    assert!(size_of::<RawSwitch>() == 32);
    assert!(size_of::<RawWaking>() == 24);
    assert!(size_of::<RawTaskInfo>() == 40);
    assert!(size_of::<RawFork>() == 40);
    assert!(size_of::<RawExec>() == 40);
    assert!(size_of::<RawExit>() == 24);
    assert!(size_of::<RawFree>() == 16);
    assert!(size_of::<RawRename>() == 32);
};

const HDR: usize = size_of::<RawHeader>();

/// Marker for the plain-old-data mirrors above: any byte pattern is a valid value.
trait Pod: Copy {}
impl Pod for RawHeader {}
impl Pod for RawSwitch {}
impl Pod for RawWaking {}
impl Pod for RawTaskInfo {}
impl Pod for RawFork {}
impl Pod for RawExec {}
impl Pod for RawExit {}
impl Pod for RawFree {}
impl Pod for RawRename {}
impl Pod for u64 {}

/// Why a record could not be decoded (counted by the consumer, never fatal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its header plus the body its type needs.
    Short,
    /// A type this build does not know.
    UnknownType(u8),
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
    const TASK_REPORT: u32 = 0x7f;
    const TASK_UNINTERRUPTIBLE: u32 = 0x2;
    const TASK_IDLE: u32 = 0x402;
    const TASK_REPORT_IDLE: u32 = 0x80;
    const TASK_REPORT_MAX: i64 = 0x100;
    const TASK_RTLOCK_WAIT: u32 = 0x1000;
    const TASK_FROZEN: u32 = 0x8000;
    if raw & SL_STATE_PREEMPT != 0 {
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
pub fn decode(data: &[u8]) -> Result<(Header, Event<'_>), DecodeError> {
    let h: RawHeader = read(data, 0)?;
    let header = Header {
        ts: h.ts,
        cpu: u32::from(h.cpu),
        pid: h.pid,
    };
    let ev = match h.ty {
        SL_SWITCH => {
            let b: RawSwitch = read(data, HDR)?;
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
        SL_WAKING | SL_WAKEUP_NEW => {
            let b: RawWaking = read(data, HDR)?;
            if h.ty == SL_WAKING {
                Event::Waking {
                    wakee: b.task,
                    pid: b.pid,
                    prio: b.prio,
                    target_cpu: b.target_cpu,
                }
            } else {
                Event::WakeupNew {
                    task: b.task,
                    pid: b.pid,
                    prio: b.prio,
                    target_cpu: b.target_cpu,
                }
            }
        }
        SL_TASK_INFO => {
            let b: RawTaskInfo = read(data, HDR)?;
            Event::TaskInfo {
                task: b.task,
                pid: b.pid,
                tgid: b.tgid,
                ppid: b.ppid,
                comm: comm_at(data, HDR + offset_of!(RawTaskInfo, comm))?,
                is_kthread: b.flags & SL_TASK_KTHREAD != 0,
            }
        }
        SL_FORK => {
            let b: RawFork = read(data, HDR)?;
            Event::Fork {
                parent: b.parent,
                parent_pid: b.parent_pid,
                child: b.child,
                child_pid: b.child_pid,
                child_tgid: b.child_tgid,
                clone_flags: b.clone_flags,
            }
        }
        SL_EXEC => {
            let b: RawExec = read(data, HDR)?;
            let start = HDR + size_of::<RawExec>();
            let filename = usize::try_from(b.filename_len)
                .ok()
                .and_then(|len| data.get(start..start.checked_add(len)?))
                .ok_or(DecodeError::Short)?;
            Event::Exec {
                task: b.task,
                pid: b.pid,
                old_pid: b.old_pid,
                comm: comm_at(data, HDR + offset_of!(RawExec, comm))?,
                filename,
            }
        }
        SL_EXIT => {
            let b: RawExit = read(data, HDR)?;
            Event::Exit {
                task: b.task,
                pid: b.pid,
                tgid: b.tgid,
                prio: b.prio,
            }
        }
        SL_FREE => {
            let b: RawFree = read(data, HDR)?;
            Event::Free {
                task: b.task,
                pid: b.pid,
                prio: b.prio,
            }
        }
        SL_FORGET => {
            let task: TaskId = read(data, HDR)?;
            Event::Forget { task }
        }
        SL_RENAME => {
            let b: RawRename = read(data, HDR)?;
            Event::Rename {
                task: b.task,
                pid: b.pid,
                newcomm: comm_at(data, HDR + offset_of!(RawRename, newcomm))?,
            }
        }
        SL_LOST => {
            let count: u64 = read(data, HDR)?;
            Event::Lost { count }
        }
        other => return Err(DecodeError::UnknownType(other)),
    };
    Ok((header, ev))
}

/// The record type of a decoded event, for per-type counters.
pub fn type_of(ev: &Event<'_>) -> u8 {
    match ev {
        Event::Switch { .. } => SL_SWITCH,
        Event::Waking { .. } => SL_WAKING,
        Event::WakeupNew { .. } => SL_WAKEUP_NEW,
        Event::TaskInfo { .. } => SL_TASK_INFO,
        Event::Fork { .. } => SL_FORK,
        Event::Exec { .. } => SL_EXEC,
        Event::Exit { .. } => SL_EXIT,
        Event::Free { .. } => SL_FREE,
        Event::Forget { .. } => SL_FORGET,
        Event::Rename { .. } => SL_RENAME,
        Event::Lost { .. } => SL_LOST,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&1234u64.to_ne_bytes());
        v.extend_from_slice(&42i32.to_ne_bytes());
        v.extend_from_slice(&3u16.to_ne_bytes());
        v.push(ty);
        v.push(0);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn states_match_the_kernel_tracepoint() {
        assert_eq!(report_state(SL_STATE_PREEMPT), 0x100);
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
        let rec = record(SL_SWITCH, &body);
        let (h, ev) = decode(&rec).unwrap();
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
        assert_eq!(decode(&record(99, &[])), Err(DecodeError::UnknownType(99)));
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
        let rec = record(SL_EXEC, &body);
        match decode(&rec).unwrap().1 {
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
            matches!(decode(&padded).unwrap().1, Event::Exec { filename, .. } if filename == b"/bin/true")
        );
        // A filename_len beyond the record is malformed, not a panic.
        assert_eq!(decode(&rec[..rec.len() - 1]), Err(DecodeError::Short));
        let mut huge = rec.clone();
        let at = HDR + offset_of!(RawExec, filename_len);
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
        body.extend_from_slice(&SL_TASK_KTHREAD.to_ne_bytes());
        body.extend_from_slice(b"kworker/0:1\0\0\0\0\0");
        let rec = record(SL_TASK_INFO, &body);
        let (_, ev) = decode(&rec).unwrap();
        let Event::TaskInfo {
            comm, is_kthread, ..
        } = ev
        else {
            panic!("{ev:?}")
        };
        assert!(is_kthread);
        assert_eq!(crate::model::event::comm_str(comm), b"kworker/0:1");
    }
}
