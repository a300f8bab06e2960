//! What `schedlens trace` can record on this build, declared once: the event
//! groups (which `--events` selects and `--list-events` prints, and the
//! recorder service offers) and the stack kinds. A group or stack kind added
//! to the recorder is added here, and the flags and the service follow.

use crate::model::event::FieldKind;
use crate::model::stack;
use crate::recorder::abi::{self, RecordType};
use crate::recorder::skel::types::sl_type as t;

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

/// One group's declaration.
struct Group {
    name: &'static str,
    description: &'static str,
    default: bool,
    /// Its record types; the sched group has every record type no other
    /// group lists.
    records: &'static [RecordType],
    /// Its BPF programs (bpf/schedlens.bpf.c), loaded only when the group is
    /// recorded; the sched group's are always loaded.
    programs: &'static [&'static str],
}

/// The group that is always recorded.
pub const SCHED: &str = "sched";
/// Where D blocks wait: a part of sched_switch's program, not one of its own.
pub const BLOCKED: &str = "blocked";

/// Every group, in the order `schedlens trace` documents them.
static GROUPS: &[Group] = &[
    Group {
        name: SCHED,
        description: "context switches, wakeups, task lifecycle (fork, exec, exit, free) and \
                      renames: every CPU's timeline and each task's waits",
        default: true,
        records: &[],
        programs: &[],
    },
    // Default: sched_switch pays nothing when no task blocks in D, and a
    // walk of the kernel stack when one does (DEVELOPERS.md, "Where tasks
    // block in D").
    Group {
        name: BLOCKED,
        description: "where tasks block in uninterruptible sleep (D): the kernel function \
                      (as /proc/PID/wchan names it) and whether it waits for I/O \
                      (thread_state.blocked_function, io_wait); costs a kernel stack walk per \
                      D block, nothing otherwise",
        default: true,
        records: &[t::SL_BLOCKED_REASON],
        programs: &[],
    },
    Group {
        name: "irq",
        description: "hardware interrupt handlers: which device's handler ran on which CPU, \
                      for how long",
        default: true,
        records: &[t::SL_IRQ_ENTRY, t::SL_IRQ_EXIT],
        programs: &["handle_irq_entry", "handle_irq_exit"],
    },
    Group {
        name: "softirq",
        description: "softirqs (network, timers, RCU, block, tasklets, ...) and how long each \
                      ran on which CPU",
        default: true,
        records: &[t::SL_SOFTIRQ_ENTRY, t::SL_SOFTIRQ_EXIT],
        programs: &["handle_softirq_entry", "handle_softirq_exit"],
    },
    Group {
        name: "migrate",
        description: "task migrations between CPUs (wakeups placed elsewhere, load balancing, \
                      affinity changes)",
        default: true,
        records: &[t::SL_MIGRATE],
        programs: &["handle_migrate"],
    },
    Group {
        name: "idle",
        description: "CPU idle states entered and left (cpuidle counter tracks)",
        default: true,
        records: &[t::SL_CPU_IDLE],
        programs: &["handle_cpu_idle"],
    },
    Group {
        name: "freq",
        description: "CPU frequency changes and policy limits (cpufreq counter tracks; none \
                      without a cpufreq driver, which the trace's metadata then says)",
        default: true,
        records: &[t::SL_CPU_FREQUENCY, t::SL_CPU_FREQUENCY_LIMITS],
        programs: &["handle_cpu_frequency", "handle_cpu_frequency_limits"],
    },
    // Where IPIs' handlers run is not traced: arm64's ipi_entry/ipi_exit
    // (Perfetto's messages) need an arm64 machine to be tested on, and
    // x86's irq_vectors tracepoints (call_function_entry, reschedule_entry,
    // ...) have no Perfetto message.
    Group {
        name: "ipi",
        description: "inter-processor interrupts sent: from which task and kernel function to \
                      which CPUs, to run what (wakeups, TLB shootdowns, membarrier)",
        default: false,
        records: &[t::SL_IPI_SEND_CPU, t::SL_IPI_SEND_CPUMASK],
        programs: &["handle_ipi_cpu", "handle_ipi_mask"],
    },
    // workqueue_activate_work is left out: it fires right after
    // workqueue_queue_work for almost every item, telling only when a
    // workqueue at its max_active let an item wait.
    Group {
        name: "workqueue",
        description: "kernel work items: who queued which function on which workqueue, and \
                      when a kworker ran it (slices on the kworker's thread)",
        default: false,
        records: &[
            t::SL_WORKQUEUE_QUEUE_WORK,
            t::SL_WORKQUEUE_EXECUTE_START,
            t::SL_WORKQUEUE_EXECUTE_END,
        ],
        programs: &["handle_queue_work", "handle_work_start", "handle_work_end"],
    },
];

fn group_of(ty: RecordType) -> &'static str {
    GROUPS
        .iter()
        .find(|g| g.records.contains(&ty))
        .map_or(SCHED, |g| g.name)
}

/// The event groups, in the order `schedlens trace` documents them.
pub fn event_groups() -> Vec<EventGroup> {
    GROUPS
        .iter()
        .map(|g| EventGroup {
            name: g.name,
            description: g.description,
            default: g.default,
            events: abi::RECORDS
                .iter()
                .filter(|r| group_of(r.ty) == g.name)
                .filter_map(|r| r.event)
                .collect(),
        })
        .collect()
}

/// The groups recorded when `--events` is not given.
pub fn default_groups() -> Vec<&'static str> {
    GROUPS
        .iter()
        .filter(|g| g.default)
        .map(|g| g.name)
        .collect()
}

/// Parses `--events`: group names separated by commas; sched is always
/// recorded, named or not.
pub fn parse_groups(s: &str) -> Result<Vec<&'static str>, String> {
    let mut groups = vec![SCHED];
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some(g) = GROUPS.iter().find(|g| g.name == name) else {
            let names: Vec<&str> = GROUPS.iter().map(|g| g.name).collect();
            return Err(format!(
                "unknown event group {name:?} (groups: {}; `schedlens trace --list-events` \
                 says what this kernel supports)",
                names.join(", ")
            ));
        };
        if !groups.contains(&g.name) {
            groups.push(g.name);
        }
    }
    Ok(groups)
}

/// Whether recording `groups` writes kernel addresses that the trace names
/// (a field of kind [`FieldKind::KernelFunction`]): then the writer needs the
/// kernel's symbols.
pub fn needs_kernel_symbols(groups: &[&str]) -> bool {
    abi::RECORDS
        .iter()
        .filter(|r| groups.contains(&group_of(r.ty)))
        .filter_map(|r| r.ftrace)
        .any(|l| l.fields.iter().any(|f| f.kind == FieldKind::KernelFunction))
}

/// The programs that end what another begins (a handler's exit, a work
/// item's end), attached before all others and detached after them: a
/// recording then never holds a begin whose end was not recorded yet, which
/// would stay open and nest every later slice of its track under it. (An exit whose entry was before
/// the recording is dropped by the importer, as trace_processor does.)
pub const ATTACH_FIRST: &[&str] = &["handle_irq_exit", "handle_softirq_exit", "handle_work_end"];

/// Whether BPF program `name` is loaded when recording `groups`.
pub fn program_wanted(name: &str, groups: &[&str]) -> bool {
    GROUPS
        .iter()
        .find(|g| g.programs.contains(&name))
        .is_none_or(|g| groups.contains(&g.name))
}

/// Events written at another tracepoint than their own, which mainline
/// kernels lack (sched_blocked_reason is an Android patch's): the
/// tracepoint each is recorded at.
const RECORDED_AT: &[(&str, &str)] = &[("sched_blocked_reason", "sched_switch")];

/// The tracepoints `events` need that this kernel lacks (its BTF has no
/// `btf_trace_<name>`); the recorder's own records need none.
fn missing_tracepoints<'e>(btf: &libbpf_rs::Btf<'_>, events: &[&'e str]) -> Vec<&'e str> {
    events
        .iter()
        .filter(|e| !e.starts_with("schedlens_"))
        .map(|&e| {
            RECORDED_AT
                .iter()
                .find(|(event, _)| *event == e)
                .map_or(e, |&(_, tracepoint)| tracepoint)
        })
        .filter(|e| {
            btf.type_by_name::<libbpf_rs::btf::types::Typedef<'_>>(&format!("btf_trace_{e}"))
                .is_none()
        })
        .collect()
}

/// Fails, naming them, if this kernel lacks tracepoints of `groups`.
pub fn check_supported(groups: &[&str]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let btf = libbpf_rs::Btf::from_vmlinux().context("reading the kernel's BTF")?;
    for g in event_groups().iter().filter(|g| groups.contains(&g.name)) {
        let missing = missing_tracepoints(&btf, &g.events);
        if !missing.is_empty() {
            anyhow::bail!(
                "--events {}: this kernel lacks the tracepoints {} (`schedlens trace \
                 --list-events` says what it can record)",
                g.name,
                missing.join(", ")
            );
        }
    }
    Ok(())
}

/// `schedlens trace --list-events`: a line per group: its name, whether it
/// is recorded by default, whether this kernel can record it, what it is
/// and its events.
pub fn list_events() -> anyhow::Result<String> {
    use anyhow::Context as _;
    let btf = libbpf_rs::Btf::from_vmlinux().context("reading the kernel's BTF")?;
    let mut out = String::new();
    let groups = event_groups();
    let width = groups.iter().map(|g| g.name.len()).max().unwrap_or(0);
    for g in groups {
        let missing = missing_tracepoints(&btf, &g.events);
        let support = if missing.is_empty() {
            "supported".to_string()
        } else {
            format!("NOT on this kernel (no {})", missing.join(", "))
        };
        out += &format!(
            "{:<width$} {:<8} {support}: {} [{}]\n",
            g.name,
            if g.default { "default" } else { "opt-in" },
            g.description,
            g.events.join(", ")
        );
    }
    Ok(out)
}

/// The stack kinds (`schedlens trace --stacks`).
pub fn stack_kinds() -> Vec<StackKind> {
    stack::StackKind::ALL
        .into_iter()
        .map(|k| StackKind {
            name: k.name(),
            description: k.description(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_is_in_one_group_and_sched_is_always_recorded() {
        let groups = event_groups();
        let listed: usize = groups.iter().map(|g| g.events.len()).sum();
        assert_eq!(
            listed,
            abi::RECORDS.iter().filter(|r| r.event.is_some()).count()
        );
        assert_eq!(
            groups.iter().find(|g| g.name == "irq").unwrap().events,
            ["irq_handler_entry", "irq_handler_exit"]
        );
        assert_eq!(parse_groups("irq").unwrap(), [SCHED, "irq"]);
        assert_eq!(parse_groups("").unwrap(), [SCHED]);
        assert_eq!(
            parse_groups("sched, softirq,softirq").unwrap(),
            [SCHED, "softirq"]
        );
        assert!(parse_groups("irq,bogus").unwrap_err().contains("\"bogus\""));
        assert!(program_wanted("handle_switch", &[SCHED]));
        assert!(!program_wanted("handle_irq_entry", &[SCHED]));
        assert!(program_wanted("handle_irq_entry", &[SCHED, "irq"]));
        // Opt-in groups; those with kernel addresses need the symbols, and
        // so does the default blocked group (where D blocks wait).
        assert!(!default_groups().contains(&"ipi"));
        assert!(!default_groups().contains(&"workqueue"));
        assert!(needs_kernel_symbols(&default_groups()));
        assert!(!needs_kernel_symbols(&[SCHED]));
        assert_eq!(
            groups.iter().find(|g| g.name == BLOCKED).unwrap().events,
            ["sched_blocked_reason"]
        );
        assert!(needs_kernel_symbols(&[SCHED, "ipi"]));
        assert!(needs_kernel_symbols(&[SCHED, "workqueue"]));
        assert_eq!(
            groups
                .iter()
                .find(|g| g.name == "workqueue")
                .unwrap()
                .events,
            [
                "workqueue_queue_work",
                "workqueue_execute_start",
                "workqueue_execute_end"
            ]
        );
    }

    #[test]
    fn every_end_program_attaches_first() {
        let programs: Vec<&str> = GROUPS.iter().flat_map(|g| g.programs).copied().collect();
        for p in &programs {
            let ends = p.ends_with("_exit") || p.ends_with("_end");
            assert_eq!(ATTACH_FIRST.contains(p), ends, "{p}");
        }
        assert!(ATTACH_FIRST.iter().all(|p| programs.contains(p)));
    }
}
