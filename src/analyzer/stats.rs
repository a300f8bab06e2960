//! Every counter the importer keeps or the recorder writes, declared once
//! with its severity, source and meaning (trace_processor's stats.h). The
//! `stats` table's rows take their severity, source and description from
//! here; call sites name a [`Stat`], never a string.

use std::collections::BTreeMap;

/// How much a counter matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    /// Some analyses undercount.
    DataLoss,
    /// The trace is malformed.
    Error,
}

/// Who counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The recorder, in the trace.
    Trace,
    /// The importer, while loading.
    Analysis,
}

/// One value, or one per CPU (the `idx` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Index {
    Single,
    PerCpu,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::DataLoss => "data_loss",
            Severity::Error => "error",
        }
    }
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Trace => "trace",
            Source::Analysis => "analysis",
        }
    }
}

/// Declares the counters: the doc comment is the description the stats
/// table shows.
macro_rules! stats {
    ($($(#[doc = $doc:literal])* $name:ident: $index:ident, $severity:ident, $source:ident;)*) => {
        /// A counter, named as its `stats.name`.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Stat {
            $($(#[doc = $doc])* $name,)*
        }

        impl Stat {
            pub const ALL: &'static [Stat] = &[$(Stat::$name),*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Stat::$name => stringify!($name),)*
                }
            }

            pub fn index(self) -> Index {
                match self {
                    $(Stat::$name => Index::$index,)*
                }
            }

            pub fn severity(self) -> Severity {
                match self {
                    $(Stat::$name => Severity::$severity,)*
                }
            }

            pub fn source(self) -> Source {
                match self {
                    $(Stat::$name => Source::$source,)*
                }
            }

            /// What it counts, in one line.
            pub fn description(self) -> &'static str {
                match self {
                    $(Stat::$name => concat!($($doc),*).trim_ascii_start(),)*
                }
            }
        }
    };
}

stats! {
    /// sched_switch whose prev_pid was not the task its CPU was running: events were lost
    mismatched_sched_switch_tids: Single, DataLoss, Analysis;
    /// a task was switched out while its last known state was not Running: its switch-in is missing
    thread_state_gap: Single, DataLoss, Analysis;
    /// the kernel overwrote events of this CPU's ftrace buffer (FtraceEventBundle.lost_events)
    ftrace_cpu_has_data_loss: PerCpu, DataLoss, Trace;
    /// events of this CPU the recorder lost because its ring buffer was full (schedlens LostEvents)
    recorder_lost_events: PerCpu, DataLoss, Trace;
    /// per-CPU lost event totals as the recorder counted them at the end (RecorderStats)
    recorder_lost_events_total: PerCpu, DataLoss, Trace;
    /// recorder handler runs the kernel skipped because a BPF program was already running on that CPU: their events are missing (RecorderStats.recursion_misses)
    recorder_bpf_recursion_misses: Single, DataLoss, Trace;
    /// stack events the recorder took, all kinds (RecorderStats.stacks.taken)
    recorder_stacks_taken: Single, Info, Trace;
    /// off-CPU stacks the recorder reused from the task's previous block instead of walking them (--stack-reuse)
    recorder_stacks_reused: Single, Info, Trace;
    /// stack halves not taken because the recorder's BPF stack map was full: those samples lack that half
    recorder_stacks_lost_map_full: Single, DataLoss, Trace;
    /// stack halves not taken because another stack held their hash bucket in the BPF stack map
    recorder_stacks_lost_collision: Single, DataLoss, Trace;
    /// user stacks of user tasks that had no frames (no user context, as in io_uring or vhost workers)
    recorder_stacks_lost_no_user_stack: Single, DataLoss, Trace;
    /// stack events the recorder's ring had no room for (also among the lost events)
    recorder_stacks_lost_ring_full: Single, DataLoss, Trace;
    /// stack ids whose frames were gone from the BPF stack map at the end of the recording
    recorder_stacks_unreadable: Single, DataLoss, Trace;
    /// distinct stack frames the recorder wrote
    recorder_stack_frames: Single, Info, Trace;
    /// distinct stack frames the recorder named (a function from kallsyms, ELF symbols or DWARF)
    recorder_stack_frames_named: Single, Info, Trace;
    /// distinct (process, user stack) pairs the recorder normalized to file offsets
    recorder_user_stacks: Single, Info, Trace;
    /// distinct user stacks whose process was gone before the recorder saw them: their frames keep only addresses, unnamed
    recorder_user_stacks_process_gone: Single, DataLoss, Trace;
    /// time the recorder spent naming stack frames at the end of the recording, in ns
    recorder_stacks_symbolize_ns: Single, Info, Trace;
    /// events dropped because they arrived later in the file than the sort window allows
    sorter_push_event_out_of_order: Single, DataLoss, Analysis;
    /// first compact sched_switch of a CPU: it only seeds who runs (no prev_* fields)
    compact_sched_switch_skipped: Single, Info, Analysis;
    /// compact sched_waking before any switch on its CPU: the waker is unknown
    compact_sched_waking_skipped: Single, Info, Analysis;
    /// ftrace events before the tracing_started service event, dropped
    ftrace_packet_before_tracing_start: Single, Info, Analysis;
    /// sched_waking of a task that was already runnable or running
    spurious_sched_wakeup: Single, Info, Analysis;
    /// CompactSched arrays of unequal length or bad comm indices
    compact_sched_has_parse_errors: Single, Error, Analysis;
    /// ftrace bundles without cpu or events without timestamp, dropped
    ftrace_bundle_tokenizer_errors: Single, Error, Analysis;
    /// ftrace events without a payload, dropped
    ftrace_missing_event_id: Single, Error, Analysis;
    /// sched_switch prev_state values invalid for the kernel version
    task_state_invalid: Single, Error, Analysis;
    /// threads of different processes that events tried to put in one process
    process_tracker_errors: Single, Error, Analysis;
    /// an IRQ or softirq exit without its entry (the trace starts inside the handler, or events were lost): no slice
    misplaced_end_event: Single, DataLoss, Analysis;
    /// softirq_entry/exit with a vec beyond the kernel's softirqs, dropped
    softirq_unknown_vec: Single, Error, Analysis;
    /// stack data naming an interned mapping, frame, callstack or string that its sequence never defined: the entry or the sample's stack is left out
    stack_profile_missing_interned: Single, Error, Analysis;
    /// callstacks deeper than the importer takes (1024 frames): left out
    stack_profile_too_deep: Single, Error, Analysis;
}

/// The counters of one load. Only counters that occurred get a row, even
/// with a value of 0 (a recorder total of none lost is still a total).
#[derive(Debug, Default)]
pub struct Stats {
    values: BTreeMap<(Stat, Option<u32>), i64>,
}

impl Stats {
    /// Adds `n` to a single counter.
    #[inline]
    pub fn add(&mut self, stat: Stat, n: i64) {
        debug_assert_eq!(stat.index(), Index::Single, "{}", stat.name());
        *self.values.entry((stat, None)).or_insert(0) += n;
    }

    /// Adds `n` to a per-CPU counter.
    pub fn add_at(&mut self, stat: Stat, cpu: u32, n: i64) {
        debug_assert_eq!(stat.index(), Index::PerCpu, "{}", stat.name());
        *self.values.entry((stat, Some(cpu))).or_insert(0) += n;
    }

    /// Sets a per-CPU counter.
    pub fn set_at(&mut self, stat: Stat, cpu: u32, n: i64) {
        debug_assert_eq!(stat.index(), Index::PerCpu, "{}", stat.name());
        self.values.insert((stat, Some(cpu)), n);
    }

    /// Adds another load phase's counters to these.
    pub fn merge(&mut self, other: Stats) {
        for (k, v) in other.values {
            *self.values.entry(k).or_insert(0) += v;
        }
    }

    /// (counter, index, value) of every counter that occurred, by name and
    /// index.
    pub fn rows(&self) -> Vec<(Stat, Option<u32>, i64)> {
        let mut rows: Vec<_> = self.values.iter().map(|(&(s, i), &v)| (s, i, v)).collect();
        rows.sort_by_key(|r| (r.0.name(), r.1));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_described() {
        for s in Stat::ALL {
            assert!(!s.description().is_empty(), "{}", s.name());
            assert!(!s.description().starts_with(' '), "{}", s.name());
        }
        assert_eq!(
            Stat::thread_state_gap.description(),
            "a task was switched out while its last known state was not Running: its switch-in is missing"
        );
    }

    #[test]
    fn rows_are_by_name_then_cpu() {
        let mut a = Stats::default();
        a.add(Stat::thread_state_gap, 2);
        a.set_at(Stat::recorder_lost_events_total, 3, 0);
        a.set_at(Stat::recorder_lost_events_total, 1, 5);
        let mut b = Stats::default();
        b.add(Stat::thread_state_gap, 1);
        b.add(Stat::compact_sched_switch_skipped, 1);
        a.merge(b);
        let rows: Vec<(&str, Option<u32>, i64)> = a
            .rows()
            .into_iter()
            .map(|(s, i, v)| (s.name(), i, v))
            .collect();
        assert_eq!(
            rows,
            [
                ("compact_sched_switch_skipped", None, 1),
                ("recorder_lost_events_total", Some(1), 5),
                ("recorder_lost_events_total", Some(3), 0),
                ("thread_state_gap", None, 3),
            ]
        );
    }
}
