//! What `schedlens trace` can record on this build, declared for those who
//! ask before recording (the recorder service and its clients): the event
//! groups and the stack kinds. A group or stack kind added to the recorder is
//! added here, and the service offers it with no change of its own.

use crate::recorder::abi;

/// A set of events recorded together.
#[derive(Debug, Clone)]
pub struct EventGroup {
    pub name: &'static str,
    pub description: &'static str,
    /// Recorded without being asked for.
    pub default: bool,
    /// Kernel tracepoints (and the recorder's own records) it captures.
    pub events: Vec<&'static str>,
}

/// A kind of call stack the recorder can attach to events.
#[derive(Debug, Clone)]
pub struct StackKind {
    pub name: &'static str,
    pub description: &'static str,
}

/// The event groups, in the order `schedlens trace` documents them.
pub fn event_groups() -> Vec<EventGroup> {
    vec![EventGroup {
        name: "sched",
        description: "context switches, wakeups, task lifecycle (fork, exec, exit, free) and \
                      renames: every CPU's timeline and each task's waits",
        default: true,
        events: abi::RECORDS.iter().filter_map(|r| r.event).collect(),
    }]
}

/// The stack kinds (none in this build).
pub fn stack_kinds() -> Vec<StackKind> {
    Vec::new()
}
