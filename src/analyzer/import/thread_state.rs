//! Switches, wakings and new tasks -> thread_state and wakeup
//! (trace_processor's ThreadStateTracker, plus our wakeup table).
//!
//! Per thread, its latest thread_state row stays in memory until the next
//! state replaces it (so memory follows the number of threads, not events),
//! and so does a wakeup until the thread runs. Per thread, states never
//! overlap: a task switched out while its latest state is not Running (its
//! switch-in was lost, or fell before the first compact switch of its CPU)
//! gets that state ended at the switch; Perfetto leaves it open. Counted as
//! thread_state_gap. Likewise a task whose switch-out was lost (a switch on
//! its CPU names another prev) stops Running at that switch and is in an
//! unknown state (NULL) until its next event; Perfetto keeps it Running.

use super::Storage;
use super::process::Utid;
use super::sched::Switched;
use crate::analyzer::stats::Stat;
use crate::analyzer::strings::{Str, Strings};
use crate::analyzer::tables::{StateRow, THREAD_STATE, WakeupRow};

/// thread_state's stored columns that sched_blocked_reason amends.
const IO_WAIT: usize = THREAD_STATE.stored_column("io_wait");
const BLOCKED_FUNCTION: usize = THREAD_STATE.stored_column("blocked_function");

/// A sched_waking, its tasks resolved.
pub struct Wake {
    pub cpu: u32,
    pub wakee: Utid,
    pub waker: Utid,
    pub target_cpu: i32,
    pub prio: i32,
    pub common_flags: Option<u32>,
}

#[derive(Default)]
struct Thread {
    /// The latest thread_state row (trace_processor's last_row); dur -1
    /// while it lasts.
    last: Option<StateRow>,
    /// Row id of its latest blocked row, until it runs again.
    last_blocked: Option<i64>,
    /// A wakeup waiting for the thread to run.
    wakeup: Option<WakeupRow>,
}

pub struct ThreadStateTracker {
    threads: Vec<Thread>,
    next_state_id: i64,
    next_wakeup_id: i64,
    running: Str,
    runnable: Str,
}

/// thread_state.irq_context of a waking's common_flags: 1 in a hard IRQ or a
/// softirq (TRACE_FLAG_HARDIRQ, TRACE_FLAG_SOFTIRQ; trace_processor leaves
/// NMIs out: no wakeup comes from one).
fn irq_context(common_flags: u32) -> u32 {
    u32::from(common_flags & (0x08 | 0x10) != 0)
}

impl ThreadStateTracker {
    pub fn new(strings: &mut Strings) -> ThreadStateTracker {
        ThreadStateTracker {
            threads: Vec::new(),
            next_state_id: 0,
            next_wakeup_id: 0,
            running: strings.intern("Running"),
            runnable: strings.intern("R"),
        }
    }

    fn thread(&mut self, utid: Utid) -> &mut Thread {
        let u = utid as usize;
        if self.threads.len() <= u {
            self.threads.resize_with(u + 1, Thread::default);
        }
        &mut self.threads[u]
    }

    /// Whether the thread has a thread_state row yet (it was switched,
    /// woken or created).
    pub fn has_state(&self, utid: Utid) -> bool {
        self.threads
            .get(utid as usize)
            .is_some_and(|t| t.last.is_some())
    }

    fn is_blocked(&self, state: Option<Str>) -> bool {
        state != Some(self.runnable) && state != Some(self.running)
    }

    /// One sched_switch: prev gets prev_state, next Running (and its
    /// wakeup, if one waits, its run time).
    pub fn switch(&mut self, st: &mut Storage<'_>, ts: i64, sw: Switched) -> anyhow::Result<()> {
        let running = self.running;
        if let Some(lost) = sw.lost
            && let Some(l) = &self.thread(lost).last
            // Not if it was seen running elsewhere since.
            && l.state == Some(running)
            && l.cpu == Some(sw.cpu)
        {
            self.close(ts, lost);
            self.open(st, ts, lost, None, None, None, None)?;
        }
        if let Some(l) = &self.thread(sw.prev).last
            && l.state != Some(running)
        {
            st.stats.add(Stat::thread_state_gap, 1);
        }
        self.close(ts, sw.prev);
        self.open(st, ts, sw.prev, sw.prev_state, None, None, None)?;
        self.close(ts, sw.next);
        self.open(st, ts, sw.next, Some(running), Some(sw.cpu), None, None)?;
        if let Some(mut w) = self.thread(sw.next).wakeup.take() {
            w.run_ts = Some(ts);
            w.run_cpu = Some(sw.cpu);
            st.sink.wakeup(w, &st.strings)?;
        }
        Ok(())
    }

    /// A wakeup row, and a runnable state unless the task was not blocked.
    pub fn waking(&mut self, st: &mut Storage<'_>, ts: i64, w: Wake) -> anyhow::Result<()> {
        if w.wakee == 0 {
            return Ok(());
        }
        let id = self.next_wakeup_id;
        self.next_wakeup_id += 1;
        let row = WakeupRow {
            id,
            ts,
            utid: w.wakee,
            waker_utid: Some(w.waker),
            waking_cpu: w.cpu,
            target_cpu: w.target_cpu,
            run_ts: None,
            run_cpu: None,
            priority: w.prio,
            irq_context: w.common_flags.map(irq_context),
        };
        let last_state = self.thread(w.wakee).last.as_ref().map(|l| l.state);
        match last_state {
            Some(state) if !self.is_blocked(state) => {
                // Already runnable or running: nothing to wake (spurious).
                st.stats.add(Stat::spurious_sched_wakeup, 1);
                return st.sink.wakeup(row, &st.strings);
            }
            Some(_) => self.close(ts, w.wakee),
            None => {}
        }
        let runnable = Some(self.runnable);
        self.open(
            st,
            ts,
            w.wakee,
            runnable,
            None,
            Some(w.waker),
            w.common_flags,
        )?;
        if let Some(old) = self.thread(w.wakee).wakeup.replace(row) {
            st.sink.wakeup(old, &st.strings)?;
        }
        Ok(())
    }

    /// A task just created by `parent` is runnable.
    pub fn new_task(
        &mut self,
        st: &mut Storage<'_>,
        ts: i64,
        utid: Utid,
        parent: Utid,
    ) -> anyhow::Result<()> {
        let runnable = Some(self.runnable);
        self.open(st, ts, utid, runnable, None, Some(parent), Some(0))
    }

    /// sched_blocked_reason: where the task's latest blocked state waits.
    pub fn blocked_reason(
        &mut self,
        st: &mut Storage<'_>,
        utid: Utid,
        io_wait: bool,
        caller: Option<Str>,
    ) -> anyhow::Result<()> {
        let t = self.thread(utid);
        let (Some(last), Some(blocked)) = (t.last.as_mut(), t.last_blocked) else {
            return Ok(());
        };
        if last.id == blocked {
            last.io_wait = Some(io_wait);
            if caller.is_some() {
                last.blocked_function = caller;
            }
            return Ok(());
        }
        // Already handed to the sink: amend it there.
        st.sink
            .amend(&THREAD_STATE, blocked, IO_WAIT, Some(io_wait.into()))?;
        match caller {
            Some(f) => st
                .sink
                .amend_text(&THREAD_STATE, blocked, BLOCKED_FUNCTION, f, &st.strings),
            None => Ok(()),
        }
    }

    fn close(&mut self, ts: i64, utid: Utid) {
        if let Some(l) = &mut self.thread(utid).last {
            l.dur = ts - l.ts;
        }
    }

    /// Makes `state` the thread's latest, writing the one it replaces.
    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        st: &mut Storage<'_>,
        ts: i64,
        utid: Utid,
        state: Option<Str>,
        cpu: Option<u32>,
        waker: Option<Utid>,
        common_flags: Option<u32>,
    ) -> anyhow::Result<()> {
        if utid == 0 {
            return Ok(());
        }
        let running = self.running;
        // The waker's row if it is running now: the one that woke us.
        let waker_id = waker.and_then(|w| {
            self.threads
                .get(w as usize)
                .and_then(|t| t.last.as_ref())
                .filter(|l| l.state == Some(running))
                .map(|l| l.id)
        });
        let id = self.next_state_id;
        self.next_state_id += 1;
        let row = StateRow {
            id,
            ts,
            dur: -1,
            cpu,
            utid,
            state,
            io_wait: None,
            blocked_function: None,
            waker_utid: waker,
            waker_id,
            irq_context: common_flags.map(irq_context),
        };
        let blocked = self.is_blocked(state);
        let t = self.thread(utid);
        let old = t.last.replace(row);
        if state == Some(running) {
            t.last_blocked = None;
        } else if blocked {
            t.last_blocked = Some(id);
        }
        match old {
            Some(old) => st.sink.state(old, &st.strings),
            None => Ok(()),
        }
    }

    /// Writes every row still held (states that last to the end have dur -1).
    pub fn finish(&mut self, st: &mut Storage<'_>) -> anyhow::Result<()> {
        for t in std::mem::take(&mut self.threads) {
            if let Some(l) = t.last {
                st.sink.state(l, &st.strings)?;
            }
            if let Some(w) = t.wakeup {
                st.sink.wakeup(w, &st.strings)?;
            }
        }
        Ok(())
    }
}
