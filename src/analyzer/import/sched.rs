//! sched_switch -> sched_slice (trace_processor's SchedEventTracker): per
//! CPU, the slice of the task running there is open until the next switch.
//!
//! A deliberate departure from trace_processor, only on damaged data, so
//! that slices of a CPU never overlap: a sched_switch whose prev_pid is not
//! the task the CPU was running (its switch-out was lost) ends the open
//! slice at the switch with end_state NULL (unknown), and the thread-state
//! tracker ends that task's Running there too; Perfetto leaves both open
//! until the task's next event and counts mismatched_sched_switch_tids. We
//! count it too.

use super::Storage;
use super::events::{CompactSwitch, Switch};
use super::process::{NamePriority, Utid};
use super::trace_info::TraceInfo;
use crate::analyzer::stats::Stat;
use crate::analyzer::strings::{FastMap, Str, Strings};
use crate::analyzer::tables::SliceRow;
use serde_json::json;

/// What a switch did to the two tasks, for the thread-state tracker.
pub struct Switched {
    pub cpu: u32,
    pub prev: Utid,
    /// prev_state decoded; None if invalid for the kernel version.
    pub prev_state: Option<Str>,
    pub next: Utid,
    /// The task the CPU was running when prev is another one: the kernel
    /// did not report its switch-out, which was at the latest this switch.
    pub lost: Option<Utid>,
}

struct OpenSlice {
    id: i64,
    ts: i64,
    utid: Utid,
    priority: i32,
}

/// One CPU: its open slice and the task running on it.
#[derive(Default)]
struct Cpu {
    slice: Option<OpenSlice>,
    pid: i64,
    utid: Option<Utid>,
    prio: i32,
}

#[derive(Default)]
pub struct SchedTracker {
    cpus: Vec<Cpu>,
    next_slice_id: i64,
    states: TaskStates,
}

impl SchedTracker {
    fn cpu(&mut self, cpu: u32) -> &mut Cpu {
        let c = cpu as usize;
        if self.cpus.len() <= c {
            self.cpus.resize_with(c + 1, Cpu::default);
        }
        &mut self.cpus[c]
    }

    /// The task running on `cpu`, as the last switch there said.
    pub fn running(&mut self, cpu: u32) -> Option<Utid> {
        self.cpu(cpu).utid
    }

    /// A full sched_switch: closes the CPU's slice, opens next's.
    pub fn switch(
        &mut self,
        st: &mut Storage<'_>,
        info: &TraceInfo,
        ts: i64,
        e: &Switch,
    ) -> anyhow::Result<Switched> {
        let next = st.procs.get_or_create_thread(e.next_pid.into());
        st.procs
            .update_thread_name(next, e.next_comm, NamePriority::Ftrace);
        let state = self.states.decode(st, info, e.prev_state.get());
        let cpu = self.cpu(e.cpu);
        let mut lost = None;
        if let Some(open) = cpu.slice.take() {
            let matched = i64::from(e.prev_pid) == cpu.pid;
            if !matched {
                st.stats.add(Stat::mismatched_sched_switch_tids, 1);
                lost = Some(open.utid);
            }
            close(st, e.cpu, open, ts, if matched { state } else { None })?;
        }
        let prev = st.procs.get_or_create_thread(e.prev_pid.into());
        st.procs
            .update_thread_name(prev, e.prev_comm, NamePriority::Ftrace);
        self.open(ts, e.cpu, next, e.next_pid, e.next_prio);
        Ok(Switched {
            cpu: e.cpu,
            prev,
            prev_state: state,
            next,
            lost,
        })
    }

    /// A CompactSched switch: the previous task is the one the CPU's last
    /// switch let in. Before the tracing window (`soft`) it ends the slice
    /// but only leaves an ftrace_event row.
    pub fn compact_switch(
        &mut self,
        st: &mut Storage<'_>,
        info: &TraceInfo,
        ts: i64,
        e: &CompactSwitch,
        soft: bool,
    ) -> anyhow::Result<Option<Switched>> {
        let next = st.procs.get_or_create_thread(e.next_pid.into());
        st.procs
            .update_thread_name(next, e.next_comm, NamePriority::Ftrace);
        let cpu = self.cpu(e.cpu);
        let Some(prev) = cpu.utid else {
            // No prev_* for the first compact switch of a CPU: it only says
            // who runs from now on.
            (cpu.pid, cpu.utid, cpu.prio) = (e.next_pid.into(), Some(next), e.next_prio);
            st.stats.add(Stat::compact_sched_switch_skipped, 1);
            return Ok(None);
        };
        let (prev_pid, prev_prio) = (cpu.pid, cpu.prio);
        let open = cpu.slice.take();
        let state = self.states.decode(st, info, e.prev_state.get());
        if let Some(open) = open {
            close(st, e.cpu, open, ts, state)?;
        }
        let cpu = self.cpu(e.cpu);
        (cpu.pid, cpu.utid, cpu.prio) = (e.next_pid.into(), Some(next), e.next_prio);
        if soft {
            let s = &st.strings;
            let prev_comm = st.procs.threads[prev as usize]
                .name
                .map_or("", |c| s.get(c));
            let args = json!({"prev_comm": prev_comm, "prev_pid": prev_pid, "prev_prio": prev_prio,
                "prev_state": e.prev_state.get(), "next_comm": s.get(e.next_comm), "next_pid": e.next_pid,
                "next_prio": e.next_prio});
            st.ftrace_event(
                ts,
                "sched_switch",
                e.cpu,
                Some(prev),
                None,
                &args.to_string(),
            )?;
            return Ok(None);
        }
        self.open(ts, e.cpu, next, e.next_pid, e.next_prio);
        Ok(Some(Switched {
            cpu: e.cpu,
            prev,
            prev_state: state,
            next,
            lost: None,
        }))
    }

    fn open(&mut self, ts: i64, cpu: u32, utid: Utid, pid: i32, priority: i32) {
        let id = self.next_slice_id;
        self.next_slice_id += 1;
        let c = self.cpu(cpu);
        c.slice = Some(OpenSlice {
            id,
            ts,
            utid,
            priority,
        });
        (c.pid, c.utid, c.prio) = (pid.into(), Some(utid), priority);
    }

    /// Writes the slices still open (dur -1: running at the end).
    pub fn finish(&mut self, st: &mut Storage<'_>) -> anyhow::Result<()> {
        for (cpu, c) in self.cpus.iter_mut().enumerate() {
            if let Some(s) = c.slice.take() {
                write(st, cpu as u32, s, -1, None)?;
            }
        }
        Ok(())
    }
}

fn close(
    st: &mut Storage<'_>,
    cpu: u32,
    s: OpenSlice,
    end: i64,
    end_state: Option<Str>,
) -> anyhow::Result<()> {
    let dur = end - s.ts;
    write(st, cpu, s, dur, end_state)
}

fn write(
    st: &mut Storage<'_>,
    cpu: u32,
    s: OpenSlice,
    dur: i64,
    end_state: Option<Str>,
) -> anyhow::Result<()> {
    let row = SliceRow {
        id: s.id,
        ts: s.ts,
        dur,
        cpu,
        utid: s.utid,
        end_state,
        priority: s.priority,
    };
    st.sink.slice(row, &st.strings)
}

/// sched_switch prev_state values as text, decoded once per value for the
/// trace's kernel version.
#[derive(Default)]
struct TaskStates {
    names: FastMap<u16, Option<Str>>,
    version: Option<(u32, u32)>,
}

impl TaskStates {
    /// The state, or None (counted) if the value is invalid.
    fn decode(&mut self, st: &mut Storage<'_>, info: &TraceInfo, raw: i64) -> Option<Str> {
        let state = self.name(&mut st.strings, info.kernel_version, raw);
        if state.is_none() {
            st.stats.add(Stat::task_state_invalid, 1);
        }
        state
    }

    fn name(
        &mut self,
        strings: &mut Strings,
        version: Option<(u32, u32)>,
        raw: i64,
    ) -> Option<Str> {
        if self.version != version {
            self.names.clear();
            self.version = version;
        }
        let raw = raw as u16;
        if let Some(&s) = self.names.get(&raw) {
            return s;
        }
        let s = decode_task_state(raw, version.unwrap_or((4, 4))).map(|t| strings.intern(&t));
        self.names.insert(raw, s);
        s
    }
}

/// The kernel's sched_switch prev_state as trace_processor shows it: 'R',
/// 'R+' (preempted), or the sleep flags ('S', 'D', 'DK', ...). None when the
/// value has bits this kernel version cannot produce.
pub fn decode_task_state(raw: u16, version: (u32, u32)) -> Option<String> {
    const S: u16 = 0x1;
    const D: u16 = 0x2;
    const PARKED: u16 = 0x40;
    const DEAD: u16 = 0x80;
    const WAKEKILL: u16 = 0x100;
    const WAKING: u16 = 0x200;
    const NOLOAD: u16 = 0x400;
    const IDLE: u16 = 0x4000;
    const PREEMPTED: u16 = 0x8000;
    let mut parsed = raw & 0x3f;
    if version >= (4, 14) {
        if raw & 0x40 != 0 {
            parsed |= PARKED;
        }
        if raw & 0x80 != 0 {
            parsed |= IDLE;
        }
        if raw & 0x100 != 0 {
            parsed |= PREEMPTED;
        }
        if raw & 0xfe00 != 0 {
            return None;
        }
    } else {
        for (bit, flag) in [
            (0x40, DEAD),
            (0x80, WAKEKILL),
            (0x100, WAKING),
            (0x200, PARKED),
            (0x400, NOLOAD),
        ] {
            if raw & bit != 0 {
                parsed |= flag;
            }
        }
        if parsed == D | NOLOAD {
            parsed = IDLE;
        }
        let preempt_bit = if version >= (4, 8) { 0x1000 } else { 0x800 };
        if raw & preempt_bit != 0 {
            parsed |= PREEMPTED;
        }
    }
    if parsed & !PREEMPTED == 0 {
        return Some(if parsed & PREEMPTED != 0 { "R+" } else { "R" }.to_string());
    }
    let mut out = String::new();
    for (flag, c) in [
        (S, 'S'),
        (D, 'D'),
        (0x4, 'T'),
        (0x8, 't'),
        (0x10, 'X'),
        (0x20, 'Z'),
        (PARKED, 'P'),
        (DEAD, 'x'),
        (WAKEKILL, 'K'),
        (WAKING, 'W'),
        (NOLOAD, 'N'),
        (IDLE, 'I'),
    ] {
        if parsed & flag != 0 && out.len() < 3 {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_states_by_kernel_version() {
        assert_eq!(decode_task_state(0, (4, 4)).as_deref(), Some("R"));
        assert_eq!(decode_task_state(0x100, (5, 15)).as_deref(), Some("R+"));
        assert_eq!(decode_task_state(0x800, (4, 4)).as_deref(), Some("R+"));
        assert_eq!(decode_task_state(0x402, (4, 4)).as_deref(), Some("I"));
        assert_eq!(decode_task_state(0x80, (5, 15)).as_deref(), Some("I"));
        assert_eq!(decode_task_state(0x2, (5, 15)).as_deref(), Some("D"));
        assert_eq!(decode_task_state(0x200, (5, 15)), None);
    }
}
