//! Tokenized events: what the tokenizer extracts from packets and the parser
//! consumes in timestamp order. Small and allocation-free for the frequent
//! kinds (switch, waking), since up to a sort window of them is buffered.

use crate::analyzer::strings::Str;
use crate::perfetto::proto::ProcessTree;

/// A process of a ProcessStats packet: what trace_processor uses from it.
#[derive(Debug, Clone)]
pub struct StatsProcess {
    pub pid: i64,
    /// The entry has counters (so trace_processor creates the process).
    pub has_counters: bool,
    pub tids: Vec<i64>,
}

#[derive(Debug, Clone)]
pub enum Ev {
    /// A full sched_switch.
    Switch {
        cpu: u32,
        prev_pid: i32,
        prev_prio: i32,
        prev_state: i64,
        prev_comm: Str,
        next_pid: i32,
        next_prio: i32,
        next_comm: Str,
    },
    /// A CompactSched switch: prev_* come from the CPU's previous switch.
    CompactSwitch {
        cpu: u32,
        prev_state: i64,
        next_pid: i32,
        next_prio: i32,
        next_comm: Str,
    },
    /// sched_waking; `waker` is FtraceEvent.pid for full events, None for
    /// compact ones (the waker is then the task running on `cpu`).
    Waking {
        cpu: u32,
        waker: Option<i32>,
        pid: i32,
        prio: i32,
        target_cpu: i32,
        comm: Str,
        common_flags: Option<u32>,
    },
    NewTask {
        cpu: u32,
        src: i32,
        pid: i32,
        comm: Str,
        clone_flags: u64,
    },
    Rename {
        cpu: u32,
        src: i32,
        pid: i32,
        comm: Str,
    },
    Free {
        cpu: u32,
        src: i32,
        pid: i32,
    },
    Exec {
        cpu: u32,
        src: i32,
        pid: i32,
        filename: Str,
        args: Box<str>,
    },
    Exit {
        cpu: u32,
        src: i32,
        pid: i32,
        comm: Str,
        args: Box<str>,
    },
    BlockedReason {
        cpu: u32,
        src: i32,
        pid: i32,
        io_wait: bool,
        /// Resolved through the sequence's interned kernel_symbols at
        /// tokenization (the interning state is positional in the file).
        caller: Option<Str>,
    },
    CpuFreq {
        cpu: u32,
        src: i32,
        state: u32,
        cpu_id: u32,
    },
    /// An atrace marker write (`print`).
    Print {
        cpu: u32,
        src: i32,
        buf: Box<str>,
    },
    /// Any other ftrace event: only an ftrace_event row.
    Raw {
        cpu: u32,
        src: i32,
        name: Str,
        common_flags: Option<u32>,
        args: Box<str>,
    },
    ProcessTree(Box<ProcessTree>),
    ProcessStats(Vec<StatsProcess>),
}

impl Ev {
    /// Whether this event came from ftrace (subject to the drop windows).
    pub fn ftrace_cpu(&self) -> Option<u32> {
        match self {
            Ev::Switch { cpu, .. }
            | Ev::CompactSwitch { cpu, .. }
            | Ev::Waking { cpu, .. }
            | Ev::NewTask { cpu, .. }
            | Ev::Rename { cpu, .. }
            | Ev::Free { cpu, .. }
            | Ev::Exec { cpu, .. }
            | Ev::Exit { cpu, .. }
            | Ev::BlockedReason { cpu, .. }
            | Ev::CpuFreq { cpu, .. }
            | Ev::Print { cpu, .. }
            | Ev::Raw { cpu, .. } => Some(*cpu),
            Ev::ProcessTree(_) | Ev::ProcessStats(_) => None,
        }
    }
}
