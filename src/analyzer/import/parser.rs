//! Sorted events -> the trackers (trace_processor's parsing stage). Each
//! event goes to the tracker that owns its rows: [`SchedTracker`] (slices),
//! [`ThreadStateTracker`] (states, wakeups), [`lifecycle`] (task events and
//! the process tree they change), [`counter`], [`SliceTracker`] (IRQ,
//! softirq and work item slices), or straight to an ftrace_event row. Rows are written when they can no longer change.
//!
//! Ftrace events before the trace's data is complete on every CPU (`soft`:
//! before the latest CPU's first bundle said its data started) only get
//! ftrace_event rows, as in trace_processor; those before tracing started
//! are dropped.

use super::Storage;
use super::counter;
use super::events::{Event, PerfSampleEvent, Switch, Waking};
use super::lifecycle;
use super::process::NamePriority;
use super::process_tree;
use super::sched::SchedTracker;
use super::slice::SliceTracker;
use super::thread_state::{ThreadStateTracker, Wake};
use super::trace_info::TraceInfo;
use crate::analyzer::stats::Stat;
use crate::analyzer::strings::Strings;
use crate::analyzer::tables::FtraceEventRow;
use serde_json::json;

/// Where the ftrace drop windows end, fixed at the first ftrace event.
#[derive(Clone, Copy)]
struct Windows {
    /// Events before this are dropped.
    hard: i64,
    /// Events before this only get ftrace_event rows.
    soft: i64,
}

pub struct Parser {
    sched: SchedTracker,
    states: ThreadStateTracker,
    slices: SliceTracker,
    windows: Option<Windows>,
    /// trace_bounds as trace_processor defines it: the first and last
    /// timestamp of the ftrace events kept (those that make rows), never of
    /// packets that describe the trace (process snapshots, machine info).
    bounds: Option<(i64, i64)>,
    /// perf_sample rows: (ts, utid, sample), in time order.
    perf_samples: Vec<(i64, u32, PerfSampleEvent)>,
}

impl Parser {
    pub fn new(strings: &mut Strings) -> Parser {
        Parser {
            sched: SchedTracker::default(),
            states: ThreadStateTracker::new(strings),
            slices: SliceTracker::default(),
            windows: None,
            bounds: None,
            perf_samples: Vec::new(),
        }
    }

    pub fn perf_samples(&self) -> &[(i64, u32, PerfSampleEvent)] {
        &self.perf_samples
    }

    /// (start_ts, end_ts) of trace_bounds: (0, 0) without events, and as
    /// trace_processor pins it, never an empty interval.
    pub fn bounds(&self) -> (i64, i64) {
        match self.bounds {
            None => (0, 0),
            Some((start, end)) if start == end => (start, end + 1),
            Some(b) => b,
        }
    }

    pub fn event(
        &mut self,
        st: &mut Storage<'_>,
        info: &TraceInfo,
        ts: i64,
        event: Event,
    ) -> anyhow::Result<()> {
        let mut soft = false;
        if event.is_ftrace() {
            let w = *self.windows.get_or_insert_with(|| {
                let hard = info.tracing_started.unwrap_or(0);
                Windows {
                    hard,
                    soft: info.latest_data_start.unwrap_or(0).max(hard),
                }
            });
            if ts < w.hard {
                st.stats.add(Stat::ftrace_packet_before_tracing_start, 1);
                return Ok(());
            }
            soft = ts < w.soft;
            if !self.skipped_compact(&event) {
                self.bounds = Some(
                    self.bounds
                        .map_or((ts, ts), |(a, b)| (a.min(ts), b.max(ts))),
                );
            }
        }
        match event {
            Event::Switch(e) if soft => soft_switch(st, ts, &e),
            Event::Switch(e) => {
                let switched = self.sched.switch(st, info, ts, &e)?;
                self.states.switch(st, ts, switched)
            }
            Event::CompactSwitch(e) => match self.sched.compact_switch(st, info, ts, &e, soft)? {
                Some(switched) => self.states.switch(st, ts, switched),
                None => Ok(()),
            },
            Event::Waking(e) => self.waking(st, ts, &e, soft),
            Event::NewTask(e) => {
                // Listed by a snapshot and never scheduled since: the task
                // this fork creates. One that ran is an older task with the
                // same tid whose free was lost.
                let listed = st
                    .procs
                    .snapshot_thread(e.pid.into())
                    .filter(|&u| !self.states.has_state(u));
                match lifecycle::new_task(st, ts, &e, soft, listed)? {
                    Some((utid, parent)) => self.states.new_task(st, ts, utid, parent),
                    None => Ok(()),
                }
            }
            Event::Rename(e) => lifecycle::rename(st, ts, &e, soft),
            Event::Free(e) => lifecycle::free(st, ts, &e, soft),
            Event::Exec(e) => lifecycle::exec(st, ts, &e, soft),
            Event::Exit(e) => lifecycle::exit(st, ts, &e, soft),
            Event::Migrate(e) => lifecycle::migrate(st, ts, &e, soft),
            Event::BlockedReason(e) => {
                st.procs.get_or_create_thread(e.src.into());
                if soft {
                    return Ok(());
                }
                let utid = st.procs.get_or_create_thread(e.pid.into());
                self.states.blocked_reason(st, utid, e.io_wait, e.caller)
            }
            Event::CpuCounter(e) => {
                st.procs.get_or_create_thread(e.src.into());
                if soft {
                    return Ok(());
                }
                counter::cpu_counter(st, ts, &e)
            }
            Event::CpuSlice(e) => {
                let src = st.procs.get_or_create_thread(e.src.into());
                if soft {
                    return SliceTracker::soft(st, ts, &e, src);
                }
                self.slices.cpu_slice(st, ts, &e)
            }
            Event::Work(e) => {
                let kworker = st.procs.get_or_create_thread(e.src.into());
                if soft {
                    return SliceTracker::soft_work(st, ts, &e, kworker);
                }
                self.slices.work(st, ts, &e, kworker)
            }
            Event::Print(e) => {
                let src = st.procs.get_or_create_thread(e.src.into());
                let args = json!({ "buf": &*e.buf }).to_string();
                st.ftrace_event(ts, "print", e.cpu, Some(src), None, &args)?;
                if !soft {
                    process_tree::atrace(&mut st.procs, e.src, &e.buf);
                }
                Ok(())
            }
            Event::Raw {
                cpu,
                src,
                name,
                common_flags,
                args,
            } => {
                let utid = st.procs.get_or_create_thread(src.into());
                st.sink.ftrace_event(&FtraceEventRow {
                    ts,
                    name: st.strings.get(name),
                    cpu,
                    utid: Some(utid),
                    common_flags,
                    args: &args,
                })
            }
            Event::ProcessTree(tree) => {
                process_tree::process_tree(&mut st.procs, &mut st.strings, &tree);
                Ok(())
            }
            Event::ProcessStats(stats) => {
                process_tree::process_stats(&mut st.procs, &stats);
                Ok(())
            }
            Event::PerfSample(e) => {
                // As trace_processor: the sample names the thread's process.
                let utid = if e.pid > 0 && e.tid > 0 {
                    st.procs.update_thread(e.tid.into(), e.pid.into())
                } else {
                    st.procs.get_or_create_thread(e.tid.into())
                };
                self.perf_samples.push((ts, utid, e));
                Ok(())
            }
        }
    }

    /// A compact switch or waking before its CPU's first switch: it has no
    /// prev or waker to give it, so it makes no row and, as in
    /// trace_processor, does not count in the trace's bounds.
    fn skipped_compact(&mut self, event: &Event) -> bool {
        match event {
            Event::CompactSwitch(e) => self.sched.running(e.cpu).is_none(),
            Event::Waking(e) if e.waker.is_none() => self.sched.running(e.cpu).is_none(),
            _ => false,
        }
    }

    /// sched_waking: the waker is the event's task, or for compact events
    /// the task running on the CPU.
    fn waking(
        &mut self,
        st: &mut Storage<'_>,
        ts: i64,
        e: &Waking,
        soft: bool,
    ) -> anyhow::Result<()> {
        let waker = match e.waker {
            Some(pid) => Some(st.procs.get_or_create_thread(pid.into())),
            None => self.sched.running(e.cpu),
        };
        let Some(waker) = waker else {
            st.stats.add(Stat::compact_sched_waking_skipped, 1);
            return Ok(());
        };
        if soft {
            let args = json!({"comm": st.strings.get(e.comm), "pid": e.pid, "prio": e.prio,
                "target_cpu": e.target_cpu});
            return st.ftrace_event(
                ts,
                "sched_waking",
                e.cpu,
                Some(waker),
                e.common_flags,
                &args.to_string(),
            );
        }
        let wakee = st.procs.get_or_create_thread(e.pid.into());
        // Only full events name the wakee.
        if e.waker.is_some() {
            st.procs
                .update_thread_name(wakee, e.comm, NamePriority::Ftrace);
        }
        self.states.waking(
            st,
            ts,
            Wake {
                cpu: e.cpu,
                wakee,
                waker,
                target_cpu: e.target_cpu,
                prio: e.prio,
                common_flags: e.common_flags,
            },
        )
    }

    /// Writes every row still held in memory (open slices and states have
    /// dur -1) and completes the sink.
    pub fn finish(&mut self, st: &mut Storage<'_>) -> anyhow::Result<()> {
        self.sched.finish(st)?;
        self.states.finish(st)?;
        self.slices.finish(st)?;
        st.sink.finish()?;
        if st.procs.errors > 0 {
            st.stats
                .add(Stat::process_tracker_errors, st.procs.errors as i64);
        }
        Ok(())
    }
}

/// A full switch before the window: only its ftrace_event row.
fn soft_switch(st: &mut Storage<'_>, ts: i64, e: &Switch) -> anyhow::Result<()> {
    let s = &st.strings;
    let args = json!({"prev_comm": s.get(e.prev_comm), "prev_pid": e.prev_pid,
        "prev_prio": e.prev_prio, "prev_state": e.prev_state.get(), "next_comm": s.get(e.next_comm),
        "next_pid": e.next_pid, "next_prio": e.next_prio});
    st.ftrace_event(ts, "sched_switch", e.cpu, None, None, &args.to_string())
}
