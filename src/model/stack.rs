//! The kinds of call stack the recorder takes, declared once: the recorder's
//! flags and catalog, the BPF bits (enum sl_stack_kind in bpf/events.h), how
//! each kind is written to the trace (a Perfetto PerfSample sequence per kind,
//! told apart by its timebase) and how the importer names it.

/// A kind of stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StackKind {
    /// The task's stacks when it blocks (sched_switch with prev in S or D).
    OffCpu,
    /// Stacks sampled on every CPU at a fixed rate.
    Cpu,
    /// The waker's stacks at sched_waking.
    Waker,
}

impl StackKind {
    pub const ALL: [StackKind; 3] = [StackKind::OffCpu, StackKind::Cpu, StackKind::Waker];

    /// The name in `--stacks`, the recorder catalog and the tables.
    pub fn name(self) -> &'static str {
        match self {
            StackKind::OffCpu => "off-cpu",
            StackKind::Cpu => "cpu",
            StackKind::Waker => "waker",
        }
    }

    /// What it records and what it costs, for `--help` and the catalog.
    pub fn description(self) -> &'static str {
        match self {
            StackKind::OffCpu => {
                "kernel and user stack of a task when it blocks (sleeps in S or D), weighted by \
                 how long it stays off the CPU; costs a stack walk per blocking switch"
            }
            StackKind::Cpu => {
                "stacks sampled on every CPU at --sample-hz (CPU clock): where CPU time goes; \
                 costs a stack walk per sample"
            }
            StackKind::Waker => {
                "stack of the task that wakes another (at sched_waking): who woke it and from \
                 where; costs a stack walk per wakeup"
            }
        }
    }

    /// Its bit in the BPF programs' `stack_kinds` (enum sl_stack_kind).
    pub fn bit(self) -> u8 {
        match self {
            StackKind::OffCpu => 1,
            StackKind::Cpu => 2,
            StackKind::Waker => 4,
        }
    }

    pub fn from_bit(bit: u8) -> Option<StackKind> {
        StackKind::ALL.into_iter().find(|k| k.bit() == bit)
    }

    pub fn from_name(name: &str) -> Option<StackKind> {
        StackKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The tracepoint its samples are taken at, as Perfetto's
    /// PerfEvents.Tracepoint names it (the CPU kind is a counter instead):
    /// the trace's samples of a kind are the PerfSamples whose sequence's
    /// TracePacketDefaults has this timebase.
    pub fn tracepoint(self) -> Option<&'static str> {
        match self {
            StackKind::OffCpu => Some("sched:sched_switch"),
            StackKind::Cpu => None,
            StackKind::Waker => Some("sched:sched_waking"),
        }
    }

    /// The timebase's name in the trace (PerfEvents.Timebase.name), which the
    /// importer maps back to the kind.
    pub fn timebase_name(self) -> &'static str {
        match self {
            StackKind::OffCpu => "schedlens off-cpu",
            StackKind::Cpu => "schedlens cpu",
            StackKind::Waker => "schedlens waker",
        }
    }

    pub fn from_timebase_name(name: &str) -> Option<StackKind> {
        StackKind::ALL
            .into_iter()
            .find(|k| k.timebase_name() == name)
    }
}

/// Sampling rate of `--stacks cpu` without `--sample-hz` (an odd rate, so
/// sampling does not beat with periodic work at round rates).
pub const DEFAULT_SAMPLE_HZ: u64 = 99;

/// `--stack-reuse` without the flag: an off-CPU stack is walked at least at
/// every 16th block of a task (schedlens.bpf.c, "Off-CPU stack reuse").
pub const DEFAULT_STACK_REUSE: u8 = 15;

/// One stack event as the recorder spools it until the end of the recording
/// (`crate::recorder::spool`), when its ids' frames are read and symbolized:
/// the samples are written after the interned callstacks they refer to,
/// which only exist then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackSample {
    pub ts: u64,
    pub tid: i32,
    pub tgid: i32,
    pub kernel: Option<u32>,
    pub user: Option<u32>,
    pub cpu: u16,
    pub kind: StackKind,
}
