//! Tokenized events: what the tokenizer extracts from packets and the
//! trackers consume in timestamp order. Small and allocation-free for the
//! frequent kinds (switch, waking), since up to a sort window of them is
//! buffered.
//!
//! In the ftrace events, `cpu` is the CPU the event fired on and `src` the
//! FtraceEvent.pid: the task that was running there.
//!
//! An event is 40 bytes (see the test): each payload is at most 36 bytes
//! with 4-byte alignment, or 32 with 8, leaving room for the tag.

use super::track::TrackKind;
use crate::analyzer::strings::Str;
use crate::perfetto::proto::ProcessTree;

#[derive(Debug, Clone)]
pub enum Event {
    Switch(Switch),
    CompactSwitch(CompactSwitch),
    Waking(Waking),
    NewTask(NewTask),
    Rename(Rename),
    Free(Free),
    Exec(Exec),
    Exit(Exit),
    BlockedReason(BlockedReason),
    CpuCounter(CpuCounter),
    CpuSlice(CpuSlice),
    Work(Work),
    Migrate(Migrate),
    Print(Print),
    /// Any other ftrace event: only an ftrace_event row. Its fields are
    /// inline: as a struct (36 bytes, 8-aligned for `args`) they would make
    /// every event 8 bytes bigger.
    Raw {
        cpu: u32,
        src: i32,
        name: Str,
        common_flags: Option<u32>,
        args: Box<str>,
    },
    ProcessTree(Box<ProcessTree>),
    ProcessStats(Vec<StatsProcess>),
    PerfSample(PerfSampleEvent),
}

/// A stack sample (PerfSample), its stack already resolved (import/stacks.rs).
#[derive(Debug, Clone)]
pub struct PerfSampleEvent {
    pub tid: i32,
    pub pid: i32,
    pub cpu: Option<u32>,
    /// PerfSample.cpu_mode.
    pub cpu_mode: u8,
    /// Innermost callsite.
    pub callsite: Option<u32>,
    /// perf_session row.
    pub session: u32,
}

/// A full sched_switch.
#[derive(Debug, Clone)]
pub struct Switch {
    pub cpu: u32,
    pub prev_pid: i32,
    pub prev_prio: i32,
    pub prev_state: PrevState,
    pub prev_comm: Str,
    pub next_pid: i32,
    pub next_prio: i32,
    pub next_comm: Str,
}

/// sched_switch's prev_state (an int64 in the trace) as two u32s, so that a
/// switch needs only 4-byte alignment.
#[derive(Debug, Clone, Copy)]
pub struct PrevState([u32; 2]);

impl PrevState {
    pub fn new(v: i64) -> PrevState {
        let v = v as u64;
        PrevState([v as u32, (v >> 32) as u32])
    }

    pub fn get(self) -> i64 {
        (u64::from(self.0[0]) | (u64::from(self.0[1]) << 32)) as i64
    }
}

/// A CompactSched switch: prev_* come from the CPU's previous switch.
#[derive(Debug, Clone)]
pub struct CompactSwitch {
    pub cpu: u32,
    pub prev_state: PrevState,
    pub next_pid: i32,
    pub next_prio: i32,
    pub next_comm: Str,
}

/// sched_waking of `pid`.
#[derive(Debug, Clone)]
pub struct Waking {
    pub cpu: u32,
    /// FtraceEvent.pid for full events, None for compact ones (the waker is
    /// then the task running on `cpu`).
    pub waker: Option<i32>,
    pub pid: i32,
    pub prio: i32,
    pub target_cpu: i32,
    pub comm: Str,
    pub common_flags: Option<u32>,
}

/// task_newtask: `src` created `pid`.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub cpu: u32,
    pub src: i32,
    pub pid: i32,
    pub comm: Str,
    pub clone_flags: u64,
}

/// task_rename.
#[derive(Debug, Clone)]
pub struct Rename {
    pub cpu: u32,
    pub src: i32,
    pub pid: i32,
    pub comm: Str,
}

/// sched_process_free: the task_struct of `pid` is released.
#[derive(Debug, Clone)]
pub struct Free {
    pub cpu: u32,
    pub src: i32,
    pub pid: i32,
}

/// sched_process_exec.
#[derive(Debug, Clone)]
pub struct Exec {
    pub cpu: u32,
    pub src: i32,
    pub pid: i32,
    pub filename: Str,
    /// The ftrace_event row's arguments.
    pub args: Box<str>,
}

/// sched_process_exit.
#[derive(Debug, Clone)]
pub struct Exit {
    pub cpu: u32,
    pub src: i32,
    pub pid: i32,
    pub comm: Str,
    /// The ftrace_event row's arguments.
    pub args: Box<str>,
}

/// sched_blocked_reason: why `pid` went to sleep in D.
#[derive(Debug, Clone)]
pub struct BlockedReason {
    pub src: i32,
    pub pid: i32,
    pub io_wait: bool,
    /// Resolved through the sequence's interned kernel_symbols at
    /// tokenization (the interning state is positional in the file).
    pub caller: Option<Str>,
}

/// A sample of a CPU's counter: cpu_frequency (kHz), cpu_idle (the state,
/// u32::MAX on leaving idle), or one bound of cpu_frequency_limits (kHz).
#[derive(Debug, Clone)]
pub struct CpuCounter {
    pub src: i32,
    pub track: TrackKind,
    pub cpu_id: u32,
    pub value: u32,
}

/// irq_handler_entry/exit, softirq_entry/exit: a slice of `cpu`'s IRQ or
/// softirq track begins (`name` set) or ends.
#[derive(Debug, Clone)]
pub struct CpuSlice {
    pub cpu: u32,
    pub src: i32,
    pub track: TrackKind,
    /// The IRQ number, or the softirq's vec.
    pub number: i32,
    /// Entries: the IRQ handler's name, or the softirq's action name.
    pub name: Option<Str>,
    /// irq_handler_exit: what the handler returned (1: handled); 0 otherwise.
    pub ret: i32,
}

/// workqueue_execute_start/end: the kworker `src` starts (`start`) or ends
/// running a work item, a slice of its thread.
#[derive(Debug, Clone)]
pub struct Work {
    pub cpu: u32,
    pub src: i32,
    pub start: bool,
    /// The work_struct's address.
    pub work: u64,
    /// The work function's kernel symbol, or its address as "0x..." when
    /// the sequence interned none (trace_processor's fallback).
    pub function: Str,
}

/// sched_migrate_task: `pid` moves from `orig_cpu` to `dest_cpu`.
#[derive(Debug, Clone)]
pub struct Migrate {
    pub cpu: u32,
    pub src: i32,
    pub pid: i32,
    pub comm: Str,
    pub prio: i32,
    pub orig_cpu: i32,
    pub dest_cpu: i32,
    /// 1 runnable or running, 0 waking; None if the trace does not say.
    pub running: Option<bool>,
}

/// An atrace marker write (`print`).
#[derive(Debug, Clone)]
pub struct Print {
    pub cpu: u32,
    pub src: i32,
    pub buf: Box<str>,
}

/// A process of a ProcessStats packet: what trace_processor uses from it.
#[derive(Debug, Clone)]
pub struct StatsProcess {
    pub pid: i64,
    /// The entry has counters (so trace_processor creates the process).
    pub has_counters: bool,
    pub tids: Vec<i64>,
}

impl Event {
    /// Whether this event came from ftrace (subject to the drop windows).
    pub fn is_ftrace(&self) -> bool {
        !matches!(
            self,
            Event::ProcessTree(_) | Event::ProcessStats(_) | Event::PerfSample(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sorter holds millions of events.
    #[test]
    fn an_event_is_40_bytes() {
        assert_eq!(std::mem::size_of::<Event>(), 40);
        for v in [0, 1, 0x100, -1, i64::MIN, i64::MAX] {
            assert_eq!(PrevState::new(v).get(), v);
        }
    }
}
