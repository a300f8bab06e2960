//! Rows -> SQLite through prepared statements, all inside the caller's
//! transaction.

use rusqlite::{Connection, Statement, params};

/// A thread_state row.
#[derive(Debug, Clone)]
pub struct StateRow<'a> {
    pub id: i64,
    pub ts: i64,
    pub dur: i64,
    pub cpu: Option<u32>,
    pub utid: u32,
    pub state: Option<&'a str>,
    pub io_wait: Option<bool>,
    pub blocked_function: Option<&'a str>,
    pub waker_utid: Option<u32>,
    pub waker_id: Option<i64>,
    pub irq_context: Option<u32>,
}

/// A wakeup row.
#[derive(Debug, Clone)]
pub struct WakeupRow {
    pub id: i64,
    pub ts: i64,
    pub utid: u32,
    pub waker_utid: Option<u32>,
    pub waking_cpu: u32,
    pub target_cpu: i32,
    pub run_ts: Option<i64>,
    pub run_cpu: Option<u32>,
    pub priority: i32,
}

/// A task_event row.
#[derive(Debug, Clone, Default)]
pub struct TaskEventRow<'a> {
    pub ts: i64,
    pub kind: &'a str,
    pub utid: u32,
    pub tid: i64,
    pub pid: Option<i64>,
    pub parent_utid: Option<u32>,
    pub parent_tid: Option<i64>,
    pub comm: Option<&'a str>,
    pub filename: Option<&'a str>,
    pub clone_flags: Option<i64>,
    pub cpu: u32,
}

pub struct Sink<'c> {
    slice: Statement<'c>,
    state: Statement<'c>,
    state_blocked: Statement<'c>,
    wakeup: Statement<'c>,
    task_event: Statement<'c>,
    ftrace_event: Statement<'c>,
    counter: Statement<'c>,
    task_event_id: i64,
    ftrace_event_id: i64,
    counter_id: i64,
    /// Rows written, for the load summary.
    pub rows: u64,
}

impl<'c> Sink<'c> {
    pub fn new(conn: &'c Connection) -> rusqlite::Result<Sink<'c>> {
        Ok(Sink {
            slice: conn.prepare(
                "INSERT INTO sched_slice (id, ts, dur, cpu, utid, end_state, priority, ucpu) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?4)",
            )?,
            state: conn.prepare(
                "INSERT INTO thread_state (id, ts, dur, cpu, utid, state, io_wait, blocked_function, \
                 waker_utid, waker_id, irq_context, ucpu) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?4)",
            )?,
            state_blocked: conn.prepare(
                "UPDATE thread_state SET io_wait = ?2, blocked_function = coalesce(?3, blocked_function) \
                 WHERE id = ?1",
            )?,
            wakeup: conn.prepare(
                "INSERT INTO wakeup (id, ts, utid, waker_utid, waking_cpu, target_cpu, run_ts, run_cpu, \
                 latency, priority) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?7 - ?2, ?9)",
            )?,
            task_event: conn.prepare(
                "INSERT INTO task_event (id, ts, type, utid, tid, pid, parent_utid, parent_tid, comm, \
                 filename, clone_flags, cpu) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?,
            ftrace_event: conn.prepare(
                "INSERT INTO ftrace_event (id, ts, name, cpu, utid, common_flags, ucpu, args) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?4, ?7)",
            )?,
            counter: conn.prepare("INSERT INTO counter (id, ts, track_id, value) VALUES (?1, ?2, ?3, ?4)")?,
            task_event_id: 0,
            ftrace_event_id: 0,
            counter_id: 0,
            rows: 0,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn slice(
        &mut self,
        id: i64,
        ts: i64,
        dur: i64,
        cpu: u32,
        utid: u32,
        end_state: Option<&str>,
        priority: i32,
    ) -> rusqlite::Result<()> {
        self.rows += 1;
        let st = &mut self.slice;
        st.raw_bind_parameter(1, id)?;
        st.raw_bind_parameter(2, ts)?;
        st.raw_bind_parameter(3, dur)?;
        st.raw_bind_parameter(4, cpu)?;
        st.raw_bind_parameter(5, utid)?;
        st.raw_bind_parameter(6, end_state)?;
        st.raw_bind_parameter(7, priority)?;
        st.raw_execute().map(drop)
    }

    pub fn state(&mut self, r: &StateRow<'_>) -> rusqlite::Result<()> {
        self.rows += 1;
        let st = &mut self.state;
        st.raw_bind_parameter(1, r.id)?;
        st.raw_bind_parameter(2, r.ts)?;
        st.raw_bind_parameter(3, r.dur)?;
        st.raw_bind_parameter(4, r.cpu)?;
        st.raw_bind_parameter(5, r.utid)?;
        st.raw_bind_parameter(6, r.state)?;
        st.raw_bind_parameter(7, r.io_wait)?;
        st.raw_bind_parameter(8, r.blocked_function)?;
        st.raw_bind_parameter(9, r.waker_utid)?;
        st.raw_bind_parameter(10, r.waker_id)?;
        st.raw_bind_parameter(11, r.irq_context)?;
        st.raw_execute().map(drop)
    }

    /// sched_blocked_reason for a thread_state row already written.
    pub fn state_blocked(
        &mut self,
        id: i64,
        io_wait: bool,
        func: Option<&str>,
    ) -> rusqlite::Result<()> {
        self.state_blocked
            .execute(params![id, io_wait, func])
            .map(drop)
    }

    pub fn wakeup(&mut self, r: &WakeupRow) -> rusqlite::Result<()> {
        self.rows += 1;
        let st = &mut self.wakeup;
        st.raw_bind_parameter(1, r.id)?;
        st.raw_bind_parameter(2, r.ts)?;
        st.raw_bind_parameter(3, r.utid)?;
        st.raw_bind_parameter(4, r.waker_utid)?;
        st.raw_bind_parameter(5, r.waking_cpu)?;
        st.raw_bind_parameter(6, r.target_cpu)?;
        st.raw_bind_parameter(7, r.run_ts)?;
        st.raw_bind_parameter(8, r.run_cpu)?;
        st.raw_bind_parameter(9, r.priority)?;
        st.raw_execute().map(drop)
    }

    pub fn task_event(&mut self, r: &TaskEventRow<'_>) -> rusqlite::Result<()> {
        self.rows += 1;
        let id = self.task_event_id;
        self.task_event_id += 1;
        self.task_event
            .execute(params![
                id,
                r.ts,
                r.kind,
                r.utid,
                r.tid,
                r.pid,
                r.parent_utid,
                r.parent_tid,
                r.comm,
                r.filename,
                r.clone_flags,
                r.cpu
            ])
            .map(drop)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn ftrace_event(
        &mut self,
        ts: i64,
        name: &str,
        cpu: u32,
        utid: Option<u32>,
        common_flags: Option<u32>,
        args: &str,
    ) -> rusqlite::Result<()> {
        self.rows += 1;
        let id = self.ftrace_event_id;
        self.ftrace_event_id += 1;
        self.ftrace_event
            .execute(params![id, ts, name, cpu, utid, common_flags, args])
            .map(drop)
    }

    pub fn counter(&mut self, ts: i64, track: i64, value: f64) -> rusqlite::Result<()> {
        self.rows += 1;
        let id = self.counter_id;
        self.counter_id += 1;
        self.counter
            .execute(params![id, ts, track, value])
            .map(drop)
    }
}
