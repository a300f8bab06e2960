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
use crate::analyzer::columns::row_id;
use crate::analyzer::stats::Stat;
use crate::analyzer::strings::{FastMap, Str, Strings};
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

/// Absent, in a [`Thread`]'s u32 fields: row ids stop below it (the column
/// file's limit), CPUs below MAX_CPUS, and utids and strings never reach it.
const NONE: u32 = u32::MAX;

/// [`Thread::flags`] bits: the row's irq_context (known, value), io_wait
/// (known, value), and whether `blocked_functions` holds its blocked_function.
const IRQ_KNOWN: u8 = 1;
const IRQ: u8 = 2;
const IO_WAIT_KNOWN: u8 = 4;
const IO_WAIT_SET: u8 = 8;
const HAS_FUNCTION: u8 = 16;

/// A thread's latest thread_state row (trace_processor's last_row), packed:
/// a trace of many tasks holds one per task to the end, so it is 40 bytes
/// (a StateRow and a waiting WakeupRow took 176); what few rows have lives
/// in the tracker's side tables.
#[derive(Clone, Copy)]
struct Thread {
    ts: i64,
    /// Its row id; NONE until the thread has a row.
    id: u32,
    state: u32,
    cpu: u32,
    waker_utid: u32,
    waker_id: u32,
    /// Row id of its latest blocked row, until it runs again.
    last_blocked: u32,
    /// Index in `waiting` of a wakeup waiting for the thread to run.
    wakeup: u32,
    flags: u8,
}

// The size the comment above promises.
const _: () = assert!(std::mem::size_of::<Thread>() == 40);

impl Thread {
    const EMPTY: Thread = Thread {
        ts: 0,
        id: NONE,
        state: NONE,
        cpu: NONE,
        waker_utid: NONE,
        waker_id: NONE,
        last_blocked: NONE,
        wakeup: NONE,
        flags: 0,
    };

    fn has_row(&self) -> bool {
        self.id != NONE
    }

    fn state(&self) -> Option<Str> {
        opt(self.state)
    }
}

fn opt(v: u32) -> Option<u32> {
    (v != NONE).then_some(v)
}

fn packed(v: Option<u32>) -> u32 {
    v.unwrap_or(NONE)
}

pub struct ThreadStateTracker {
    threads: Vec<Thread>,
    /// Wakeups waiting for their thread to run, in no order.
    waiting: Vec<WakeupRow>,
    /// blocked_function of rows still held (sched_blocked_reason), by utid.
    blocked_functions: FastMap<Utid, Str>,
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
            waiting: Vec::new(),
            blocked_functions: FastMap::default(),
            next_state_id: 0,
            next_wakeup_id: 0,
            running: strings.intern("Running"),
            runnable: strings.intern("R"),
        }
    }

    fn thread(&mut self, utid: Utid) -> &mut Thread {
        let u = utid as usize;
        if self.threads.len() <= u {
            self.threads.resize(u + 1, Thread::EMPTY);
        }
        &mut self.threads[u]
    }

    /// Whether the thread has a thread_state row yet (it was switched,
    /// woken or created).
    pub fn has_state(&self, utid: Utid) -> bool {
        self.threads.get(utid as usize).is_some_and(Thread::has_row)
    }

    fn is_blocked(&self, state: Option<Str>) -> bool {
        state != Some(self.runnable) && state != Some(self.running)
    }

    /// The thread's waiting wakeup, taken out of `waiting`.
    fn take_wakeup(&mut self, utid: Utid) -> Option<WakeupRow> {
        let at = std::mem::replace(&mut self.thread(utid).wakeup, NONE);
        let at = opt(at)? as usize;
        let w = self.waiting.swap_remove(at);
        if let Some(moved) = self.waiting.get(at) {
            self.threads[moved.utid as usize].wakeup = at as u32;
        }
        Some(w)
    }

    /// One sched_switch: prev gets prev_state, next Running (and its
    /// wakeup, if one waits, its run time).
    pub fn switch(&mut self, st: &mut Storage<'_>, ts: i64, sw: Switched) -> anyhow::Result<()> {
        let running = self.running;
        if let Some(lost) = sw.lost {
            let l = *self.thread(lost);
            // Not if it was seen running elsewhere since.
            if l.has_row() && l.state == running && l.cpu == sw.cpu {
                self.open(st, ts, lost, true, None, None, None, None)?;
            }
        }
        let l = self.thread(sw.prev);
        if l.has_row() && l.state != running {
            st.stats.add(Stat::thread_state_gap, 1);
        }
        self.open(st, ts, sw.prev, true, sw.prev_state, None, None, None)?;
        self.open(
            st,
            ts,
            sw.next,
            true,
            Some(running),
            Some(sw.cpu),
            None,
            None,
        )?;
        if let Some(mut w) = self.take_wakeup(sw.next) {
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
        let t = *self.thread(w.wakee);
        if t.has_row() && !self.is_blocked(t.state()) {
            // Already runnable or running: nothing to wake (spurious).
            st.stats.add(Stat::spurious_sched_wakeup, 1);
            return st.sink.wakeup(row, &st.strings);
        }
        let runnable = Some(self.runnable);
        self.open(
            st,
            ts,
            w.wakee,
            true,
            runnable,
            None,
            Some(w.waker),
            w.common_flags,
        )?;
        match opt(t.wakeup) {
            Some(at) => {
                let old = std::mem::replace(&mut self.waiting[at as usize], row);
                st.sink.wakeup(old, &st.strings)?;
            }
            None => {
                self.threads[w.wakee as usize].wakeup = self.waiting.len() as u32;
                self.waiting.push(row);
            }
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
        self.open(st, ts, utid, false, runnable, None, Some(parent), Some(0))
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
        let Some(blocked) = opt(t.last_blocked).filter(|_| t.has_row()) else {
            return Ok(());
        };
        if t.id == blocked {
            t.flags |= IO_WAIT_KNOWN;
            t.flags = if io_wait {
                t.flags | IO_WAIT_SET
            } else {
                t.flags & !IO_WAIT_SET
            };
            if let Some(f) = caller {
                t.flags |= HAS_FUNCTION;
                self.blocked_functions.insert(utid, f);
            }
            return Ok(());
        }
        // Already handed to the sink: amend it there.
        let blocked = i64::from(blocked);
        st.sink
            .amend(&THREAD_STATE, blocked, IO_WAIT, Some(io_wait.into()))?;
        match caller {
            Some(f) => st
                .sink
                .amend_text(&THREAD_STATE, blocked, BLOCKED_FUNCTION, f, &st.strings),
            None => Ok(()),
        }
    }

    /// The thread's held row as written; `end` closes it (else it lasts).
    fn row(&mut self, utid: Utid, end: Option<i64>) -> StateRow {
        let t = self.threads[utid as usize];
        let flag = |known: u8, set: u8| (t.flags & known != 0).then_some(t.flags & set != 0);
        let blocked_function = if t.flags & HAS_FUNCTION != 0 {
            self.blocked_functions.remove(&utid)
        } else {
            None
        };
        StateRow {
            id: i64::from(t.id),
            ts: t.ts,
            dur: end.map_or(-1, |end| end - t.ts),
            cpu: opt(t.cpu),
            utid,
            state: t.state(),
            io_wait: flag(IO_WAIT_KNOWN, IO_WAIT_SET),
            blocked_function,
            waker_utid: opt(t.waker_utid),
            waker_id: opt(t.waker_id).map(i64::from),
            irq_context: flag(IRQ_KNOWN, IRQ).map(u32::from),
        }
    }

    /// Makes `state` the thread's latest, writing the one it replaces
    /// (ended now if `close`).
    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        st: &mut Storage<'_>,
        ts: i64,
        utid: Utid,
        close: bool,
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
                .filter(|t| t.has_row() && t.state == running)
                .map(|t| t.id)
        });
        let id = row_id(&THREAD_STATE, self.next_state_id)?;
        self.next_state_id += 1;
        let old = self
            .thread(utid)
            .has_row()
            .then(|| self.row(utid, close.then_some(ts)));
        let blocked = self.is_blocked(state);
        let irq = common_flags.map_or(0, |f| IRQ_KNOWN | if irq_context(f) != 0 { IRQ } else { 0 });
        let t = &mut self.threads[utid as usize];
        let last_blocked = if state == Some(running) {
            NONE
        } else if blocked {
            id
        } else {
            t.last_blocked
        };
        *t = Thread {
            ts,
            id,
            state: packed(state),
            cpu: packed(cpu),
            waker_utid: packed(waker),
            waker_id: packed(waker_id),
            last_blocked,
            wakeup: t.wakeup,
            flags: irq,
        };
        match old {
            Some(old) => st.sink.state(old, &st.strings),
            None => Ok(()),
        }
    }

    /// Writes every row still held (states that last to the end have dur -1).
    pub fn finish(&mut self, st: &mut Storage<'_>) -> anyhow::Result<()> {
        let mut waiting: Vec<Option<WakeupRow>> = std::mem::take(&mut self.waiting)
            .into_iter()
            .map(Some)
            .collect();
        for utid in 0..self.threads.len() as Utid {
            let t = self.threads[utid as usize];
            if t.has_row() {
                let row = self.row(utid, None);
                st.sink.state(row, &st.strings)?;
            }
            if let Some(w) = opt(t.wakeup).and_then(|at| waiting[at as usize].take()) {
                st.sink.wakeup(w, &st.strings)?;
            }
        }
        self.threads = Vec::new();
        Ok(())
    }
}
