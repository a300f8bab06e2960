//! Begin/end events -> slice rows (trace_processor's slice tracker), for
//! IRQ handlers and softirqs on their CPU's tracks and work items on their
//! kworker's thread track. A track keeps a stack of
//! open slices: an entry opens one nested in the top, an exit closes the
//! top. A slice's row is written when it ends (or, open, at the end with
//! dur -1); its id is taken when it begins, so ids follow ts.

use super::Storage;
use super::events::{CpuSlice, Work};
use super::process::Utid;
use super::track::TrackKind;
use crate::analyzer::stats::Stat;
use crate::analyzer::strings::{FastMap, Str};
use crate::analyzer::tables::{SliceArgsRow, TrackSliceRow};
use serde_json::json;

/// The categories trace_processor gives IRQ and softirq slices, and work
/// item slices.
const IRQ_CATEGORY: &str = "irq";
const WORK_CATEGORY: &str = "workqueue";

/// Where the ids of slices' arg sets start: ftrace_event's arg sets are its
/// row ids, which never come near.
const SLICE_ARG_SET_BASE: i64 = 1 << 40;

/// The field trace_processor gives a slice when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum EndArg {
    /// An IRQ handler's ret: handled (1) or not.
    Ret { handled: bool },
    /// A softirq's number.
    Vec(i32),
}

/// A slice that has begun and not ended.
#[derive(Debug, Clone, Copy)]
struct Open {
    id: i64,
    ts: i64,
    name: Str,
    category: &'static str,
}

#[derive(Default)]
pub struct SliceTracker {
    /// Open slices per track id, innermost last.
    open: FastMap<i64, Vec<Open>>,
    next_id: i64,
    /// An IRQ handler's name -> its slice name, "IRQ (name)": formatted once.
    irq_slice_names: FastMap<Str, Str>,
    /// The arg sets written so far, shared by the slices that end alike.
    arg_sets: FastMap<EndArg, i64>,
}

impl SliceTracker {
    /// An entry (`e.name` set) or exit of an IRQ handler or softirq.
    pub fn cpu_slice(&mut self, st: &mut Storage<'_>, ts: i64, e: &CpuSlice) -> anyhow::Result<()> {
        let track_id = st.tracks.cpu_track(e.track, e.cpu);
        let name = match (e.track, e.name) {
            (TrackKind::Irq, Some(handler)) => {
                Some(*self.irq_slice_names.entry(handler).or_insert_with(|| {
                    let name = format!("IRQ ({})", st.strings.get(handler));
                    st.strings.intern(&name)
                }))
            }
            (_, name) => name,
        };
        let arg = match e.track {
            TrackKind::Irq => EndArg::Ret {
                handled: e.ret == 1,
            },
            _ => EndArg::Vec(e.number),
        };
        self.begin_or_end(st, ts, track_id, name, IRQ_CATEGORY, Some(arg))
    }

    /// workqueue_execute_start or _end of `kworker`: a slice of its thread
    /// named after the work function, as trace_processor makes them.
    pub fn work(
        &mut self,
        st: &mut Storage<'_>,
        ts: i64,
        e: &Work,
        kworker: Utid,
    ) -> anyhow::Result<()> {
        let track_id = st.tracks.thread_track(kworker);
        let name = e.start.then_some(e.function);
        self.begin_or_end(st, ts, track_id, name, WORK_CATEGORY, None)
    }

    /// Begins a slice named `name` on the track, or (None) ends its top one,
    /// giving it the end's field.
    fn begin_or_end(
        &mut self,
        st: &mut Storage<'_>,
        ts: i64,
        track_id: i64,
        name: Option<Str>,
        category: &'static str,
        end_arg: Option<EndArg>,
    ) -> anyhow::Result<()> {
        let stack = self.open.entry(track_id).or_default();
        match name {
            Some(name) => {
                stack.push(Open {
                    id: self.next_id,
                    ts,
                    name,
                    category,
                });
                self.next_id += 1;
                Ok(())
            }
            None => match stack.pop() {
                Some(open) => {
                    let depth = stack.len() as u32;
                    let parent_id = stack.last().map(|p| p.id);
                    let arg_set_id = match end_arg {
                        Some(arg) => Some(self.arg_set(st, arg)?),
                        None => None,
                    };
                    let dur = ts - open.ts;
                    write(st, track_id, open, dur, depth, parent_id, arg_set_id)
                }
                None => {
                    st.stats.add(Stat::misplaced_end_event, 1);
                    Ok(())
                }
            },
        }
    }

    /// The id of the arg set holding `arg`, written the first time.
    fn arg_set(&mut self, st: &mut Storage<'_>, arg: EndArg) -> anyhow::Result<i64> {
        if let Some(&id) = self.arg_sets.get(&arg) {
            return Ok(id);
        }
        let arg_set_id = SLICE_ARG_SET_BASE + self.arg_sets.len() as i64;
        let row = match arg {
            EndArg::Ret { handled } => SliceArgsRow {
                arg_set_id,
                key: "ret",
                int_value: None,
                string_value: Some(if handled { "handled" } else { "unhandled" }),
            },
            EndArg::Vec(vec) => SliceArgsRow {
                arg_set_id,
                key: "vec",
                int_value: Some(vec.into()),
                string_value: None,
            },
        };
        st.sink.slice_args(&row)?;
        self.arg_sets.insert(arg, arg_set_id);
        Ok(arg_set_id)
    }

    /// The ftrace_event row of an entry or exit before the trace's data is
    /// complete on every CPU (it makes no slice, as in trace_processor).
    pub fn soft(st: &mut Storage<'_>, ts: i64, e: &CpuSlice, utid: Utid) -> anyhow::Result<()> {
        let (event, args) = match (e.track, e.name) {
            (TrackKind::Irq, Some(name)) => (
                "irq_handler_entry",
                json!({"irq": e.number, "name": st.strings.get(name)}),
            ),
            (TrackKind::Irq, None) => ("irq_handler_exit", json!({"irq": e.number, "ret": e.ret})),
            (_, Some(_)) => ("softirq_entry", json!({"vec": e.number})),
            (_, None) => ("softirq_exit", json!({"vec": e.number})),
        };
        st.ftrace_event(ts, event, e.cpu, Some(utid), None, &args.to_string())
    }

    /// The ftrace_event row of a work item's start or end before the trace's
    /// data is complete on every CPU.
    pub fn soft_work(st: &mut Storage<'_>, ts: i64, e: &Work, utid: Utid) -> anyhow::Result<()> {
        let event = if e.start {
            "workqueue_execute_start"
        } else {
            "workqueue_execute_end"
        };
        let args = json!({"work": e.work as i64, "function": st.strings.get(e.function)});
        st.ftrace_event(ts, event, e.cpu, Some(utid), None, &args.to_string())
    }

    /// Writes the slices still open, with dur -1.
    pub fn finish(&mut self, st: &mut Storage<'_>) -> anyhow::Result<()> {
        let mut open: Vec<(i64, Vec<Open>)> = self.open.drain().collect();
        open.sort_by_key(|(track_id, _)| *track_id);
        for (track_id, stack) in open {
            for (depth, slice) in stack.iter().enumerate() {
                let parent_id = depth.checked_sub(1).map(|p| stack[p].id);
                write(st, track_id, *slice, -1, depth as u32, parent_id, None)?;
            }
        }
        Ok(())
    }
}

fn write(
    st: &mut Storage<'_>,
    track_id: i64,
    open: Open,
    dur: i64,
    depth: u32,
    parent_id: Option<i64>,
    arg_set_id: Option<i64>,
) -> anyhow::Result<()> {
    st.sink.track_slice(&TrackSliceRow {
        id: open.id,
        ts: open.ts,
        dur,
        track_id,
        category: Some(open.category),
        name: st.strings.get(open.name),
        depth,
        parent_id,
        arg_set_id,
    })
}
