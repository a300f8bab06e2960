//! Sorted events -> table rows (trace_processor's parsing stage): sched
//! slices, thread states, wakeups, task lifecycle, process tracking.
//!
//! Rows are written when they can no longer change. An open slice or the
//! latest thread_state row of a thread stays in memory (one per CPU / per
//! thread), so memory follows the number of CPUs and threads, not events.
//!
//! Two deliberate departures from trace_processor, both only on damaged
//! data, so that our guarantees hold (per CPU, slices never overlap; per
//! thread, states never overlap):
//! - a sched_switch whose prev_pid is not the task the CPU was running
//!   (events lost) ends the open slice at the switch with end_state NULL;
//!   Perfetto leaves it open (dur -1) and counts mismatched_sched_switch_tids.
//!   We count it too.
//! - a task switched out while its latest state is not Running (its switch-in
//!   was lost, or fell before the first compact switch of its CPU) gets that
//!   state ended at the switch; Perfetto leaves it open. Counted as
//!   thread_state_gap.

use super::Ctx;
use super::events::{Ev, StatsProcess};
use super::process::{NamePriority, ProcessTracker, Utid};
use super::sink::{Sink, SliceRow, StateRow, TaskEventRow, WakeupRow};
use crate::analyzer::strings::{FastMap, Str, Strings};
use crate::perfetto::proto::ProcessTree;
use serde_json::json;

/// The kernel's flag (bpf/events.h SL_CLONE_THREAD is tied to the same value).
const CLONE_THREAD: u64 = libc::CLONE_THREAD as u64;
const KTHREADD_PID: i64 = 2;

struct OpenSlice {
    id: i64,
    ts: i64,
    cpu: u32,
    utid: Utid,
    priority: i32,
}

#[derive(Default)]
struct CpuState {
    slice: Option<OpenSlice>,
    last_pid: i64,
    last_utid: Option<Utid>,
    last_prio: i32,
}

#[derive(Clone)]
struct OpenState {
    id: i64,
    ts: i64,
    dur: Option<i64>,
    cpu: Option<u32>,
    state: Option<Str>,
    io_wait: Option<bool>,
    blocked_function: Option<Str>,
    waker_utid: Option<Utid>,
    waker_id: Option<i64>,
    irq_context: Option<u32>,
}

#[derive(Default)]
struct ThreadInfo {
    /// The thread's latest thread_state row (trace_processor's last_row).
    last: Option<OpenState>,
    /// Row id of its latest blocked row, until it runs again.
    last_blocked: Option<i64>,
    /// A wakeup waiting for the thread to run.
    wakeup: Option<WakeupRow>,
}

pub struct Parser<'c> {
    pub procs: ProcessTracker,
    pub sink: Sink<'c>,
    cpus: Vec<CpuState>,
    threads: Vec<ThreadInfo>,
    next_slice_id: i64,
    next_state_id: i64,
    next_wakeup_id: i64,
    running: Str,
    runnable: Str,
    state_names: FastMap<u16, Option<Str>>,
    state_names_version: Option<(u32, u32)>,
    /// (drop before, soft drop before), fixed at the first ftrace event.
    windows: Option<(i64, i64)>,
    counter_tracks: FastMap<u32, i64>,
    /// counter_track rows: (id, cpu).
    pub tracks: Vec<(i64, u32)>,
    pub bounds: Option<(i64, i64)>,
}

type R = anyhow::Result<()>;

impl<'c> Parser<'c> {
    pub fn new(strings: &mut Strings, sink: Sink<'c>) -> Parser<'c> {
        let swapper = strings.intern("swapper");
        Parser {
            procs: ProcessTracker::new(swapper),
            sink,
            cpus: Vec::new(),
            threads: Vec::new(),
            next_slice_id: 0,
            next_state_id: 0,
            next_wakeup_id: 0,
            running: strings.intern("Running"),
            runnable: strings.intern("R"),
            state_names: FastMap::default(),
            state_names_version: None,
            windows: None,
            counter_tracks: FastMap::default(),
            tracks: Vec::new(),
            bounds: None,
        }
    }

    pub fn rows(&self) -> u64 {
        self.sink.rows
    }

    fn cpu_state(&mut self, cpu: u32) -> &mut CpuState {
        let c = cpu as usize;
        if self.cpus.len() <= c {
            self.cpus.resize_with(c + 1, CpuState::default);
        }
        &mut self.cpus[c]
    }

    fn info(&mut self, utid: Utid) -> &mut ThreadInfo {
        let u = utid as usize;
        if self.threads.len() <= u {
            self.threads.resize_with(u + 1, ThreadInfo::default);
        }
        &mut self.threads[u]
    }

    fn goc(&mut self, tid: i32) -> Utid {
        self.procs.get_or_create_thread(i64::from(tid))
    }

    pub fn event(&mut self, ctx: &mut Ctx, ts: i64, ev: Ev) -> R {
        self.bounds = Some(
            self.bounds
                .map_or((ts, ts), |(a, b)| (a.min(ts), b.max(ts))),
        );
        let mut soft = false;
        if ev.ftrace_cpu().is_some() {
            let (hard_before, soft_before) = *self.windows.get_or_insert_with(|| {
                let hard = ctx.tracing_started.unwrap_or(0);
                (hard, ctx.latest_data_start.unwrap_or(0).max(hard))
            });
            if ts < hard_before {
                ctx.add_stat("ftrace_packet_before_tracing_start", None, 1);
                return Ok(());
            }
            soft = ts < soft_before;
            // Like trace_processor's trace_bounds: the span of the events,
            // not of process snapshots.
            self.bounds = Some(
                self.bounds
                    .map_or((ts, ts), |(a, b)| (a.min(ts), b.max(ts))),
            );
        }
        match ev {
            Ev::Switch {
                cpu,
                prev_pid,
                prev_prio,
                prev_state,
                prev_comm,
                next_pid,
                next_prio,
                next_comm,
            } => {
                if soft {
                    let args = json!({"prev_comm": ctx.strings.get(prev_comm), "prev_pid": prev_pid,
                        "prev_prio": prev_prio, "prev_state": prev_state, "next_comm": ctx.strings.get(next_comm),
                        "next_pid": next_pid, "next_prio": next_prio});
                    return self.raw(ctx, ts, "sched_switch", cpu, None, None, &args.to_string());
                }
                self.switch(
                    ctx, ts, cpu, prev_pid, prev_state, prev_comm, next_pid, next_prio, next_comm,
                )
            }
            Ev::CompactSwitch {
                cpu,
                prev_state,
                next_pid,
                next_prio,
                next_comm,
            } => self.compact_switch(
                ctx, ts, cpu, prev_state, next_pid, next_prio, next_comm, soft,
            ),
            Ev::Waking {
                cpu,
                waker,
                pid,
                prio,
                target_cpu,
                comm,
                common_flags,
            } => {
                let waker_utid = match waker {
                    Some(w) => {
                        let src = self.goc(w);
                        if soft {
                            return self
                                .raw_waking(ctx, ts, cpu, src, pid, prio, target_cpu, comm, None);
                        }
                        let wakee = self.goc(pid);
                        self.procs
                            .update_thread_name(wakee, comm, NamePriority::Ftrace);
                        self.waking(ctx, ts, cpu, wakee, Some(src), target_cpu, prio, None)?;
                        return Ok(());
                    }
                    None => self.cpu_state(cpu).last_utid,
                };
                let Some(curr) = waker_utid else {
                    ctx.add_stat("compact_sched_waking_skipped", None, 1);
                    return Ok(());
                };
                if soft {
                    return self.raw_waking(
                        ctx,
                        ts,
                        cpu,
                        curr,
                        pid,
                        prio,
                        target_cpu,
                        comm,
                        common_flags,
                    );
                }
                let wakee = self.goc(pid);
                self.waking(
                    ctx,
                    ts,
                    cpu,
                    wakee,
                    Some(curr),
                    target_cpu,
                    prio,
                    common_flags,
                )
            }
            Ev::NewTask {
                cpu,
                src,
                pid,
                comm,
                clone_flags,
            } => {
                let src_utid = self.goc(src);
                if soft || pid == 0 {
                    // pid 0: boot-time tracing sees init create the idle tasks.
                    return Ok(());
                }
                self.new_task(ctx, ts, cpu, src, src_utid, pid, comm, clone_flags)
            }
            Ev::Rename {
                cpu,
                src,
                pid,
                comm,
            } => {
                self.goc(src);
                if soft {
                    return Ok(());
                }
                let utid = self.goc(pid);
                self.procs
                    .update_thread_name_and_maybe_process(utid, comm, NamePriority::Ftrace);
                self.task_event(ctx, ts, "rename", utid, cpu, Some(comm), None)
            }
            Ev::Free { cpu, src, pid } => {
                self.goc(src);
                if soft {
                    return Ok(());
                }
                let pid_now = self
                    .procs
                    .get_thread(i64::from(pid))
                    .and_then(|u| self.process_pid(u));
                if let Some(utid) = self.procs.end_thread(ts, i64::from(pid)) {
                    let comm = self.procs.threads[utid as usize].name;
                    self.sink.task_event(&TaskEventRow {
                        ts,
                        kind: "free",
                        utid,
                        tid: i64::from(pid),
                        pid: pid_now,
                        comm: comm.map(|c| ctx.strings.get(c)),
                        cpu,
                        ..Default::default()
                    })?;
                }
                Ok(())
            }
            Ev::Exec {
                cpu,
                src,
                pid,
                filename,
                args,
            } => {
                let src_utid = self.goc(src);
                self.raw(
                    ctx,
                    ts,
                    "sched_process_exec",
                    cpu,
                    Some(src_utid),
                    None,
                    &args,
                )?;
                if soft {
                    return Ok(());
                }
                let utid = self.procs.get_thread(i64::from(pid)).unwrap_or(src_utid);
                let comm = self.procs.threads[utid as usize].name;
                self.task_event(ctx, ts, "exec", utid, cpu, comm, Some(filename))
            }
            Ev::Exit {
                cpu,
                src,
                pid,
                comm,
                args,
            } => {
                let src_utid = self.goc(src);
                self.raw(
                    ctx,
                    ts,
                    "sched_process_exit",
                    cpu,
                    Some(src_utid),
                    None,
                    &args,
                )?;
                if soft {
                    return Ok(());
                }
                let utid = self.procs.get_thread(i64::from(pid)).unwrap_or(src_utid);
                self.task_event(ctx, ts, "exit", utid, cpu, Some(comm), None)
            }
            Ev::BlockedReason {
                src,
                pid,
                io_wait,
                caller,
                ..
            } => {
                self.goc(src);
                if soft {
                    return Ok(());
                }
                let utid = self.goc(pid);
                self.blocked_reason(ctx, utid, io_wait, caller)
            }
            Ev::CpuFreq {
                src, state, cpu_id, ..
            } => {
                self.goc(src);
                if soft {
                    return Ok(());
                }
                let next_id = self.tracks.len() as i64;
                let track = *self.counter_tracks.entry(cpu_id).or_insert(next_id);
                if track == next_id {
                    self.tracks.push((track, cpu_id));
                }
                self.sink.counter(ts, track, f64::from(state))
            }
            Ev::Print { cpu, src, buf } => {
                let src_utid = self.goc(src);
                let args = json!({ "buf": &*buf }).to_string();
                self.raw(ctx, ts, "print", cpu, Some(src_utid), None, &args)?;
                if !soft {
                    self.atrace(src, &buf);
                }
                Ok(())
            }
            Ev::Raw {
                cpu,
                src,
                name,
                common_flags,
                args,
            } => {
                let utid = self.goc(src);
                let name = ctx.strings.get(name).to_string();
                self.raw(ctx, ts, &name, cpu, Some(utid), common_flags, &args)
            }
            Ev::ProcessTree(tree) => {
                self.process_tree(ctx, &tree);
                Ok(())
            }
            Ev::ProcessStats(procs) => {
                self.process_stats(&procs);
                Ok(())
            }
        }
    }

    fn process_pid(&self, utid: Utid) -> Option<i64> {
        let upid = self.procs.threads[utid as usize].upid?;
        Some(self.procs.processes[upid as usize].pid)
    }

    #[allow(clippy::too_many_arguments)]
    fn raw(
        &mut self,
        ctx: &mut Ctx,
        ts: i64,
        name: &str,
        cpu: u32,
        utid: Option<Utid>,
        flags: Option<u32>,
        args: &str,
    ) -> R {
        ctx.cpu(cpu);
        self.sink.ftrace_event(ts, name, cpu, utid, flags, args)
    }

    #[allow(clippy::too_many_arguments)]
    fn raw_waking(
        &mut self,
        ctx: &mut Ctx,
        ts: i64,
        cpu: u32,
        utid: Utid,
        pid: i32,
        prio: i32,
        target_cpu: i32,
        comm: Str,
        flags: Option<u32>,
    ) -> R {
        let args = json!({"comm": ctx.strings.get(comm), "pid": pid, "prio": prio, "target_cpu": target_cpu});
        self.raw(
            ctx,
            ts,
            "sched_waking",
            cpu,
            Some(utid),
            flags,
            &args.to_string(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn task_event(
        &mut self,
        ctx: &Ctx,
        ts: i64,
        kind: &str,
        utid: Utid,
        cpu: u32,
        comm: Option<Str>,
        filename: Option<Str>,
    ) -> R {
        let tid = self.procs.threads[utid as usize].tid;
        let pid = self.process_pid(utid);
        self.sink.task_event(&TaskEventRow {
            ts,
            kind,
            utid,
            tid,
            pid,
            comm: comm.map(|c| ctx.strings.get(c)),
            filename: filename.map(|c| ctx.strings.get(c)),
            cpu,
            ..Default::default()
        })
    }

    /// prev_state as text, decoded for the trace's kernel version.
    fn task_state(&mut self, ctx: &mut Ctx, raw: i64) -> Option<Str> {
        if self.state_names_version != ctx.kernel_version {
            self.state_names.clear();
            self.state_names_version = ctx.kernel_version;
        }
        let raw = raw as u16;
        if let Some(&s) = self.state_names.get(&raw) {
            return s;
        }
        let s = decode_task_state(raw, ctx.kernel_version.unwrap_or((4, 4)))
            .map(|t| ctx.strings.intern(&t));
        self.state_names.insert(raw, s);
        s
    }

    #[allow(clippy::too_many_arguments)]
    fn switch(
        &mut self,
        ctx: &mut Ctx,
        ts: i64,
        cpu: u32,
        prev_pid: i32,
        prev_state: i64,
        prev_comm: Str,
        next_pid: i32,
        next_prio: i32,
        next_comm: Str,
    ) -> R {
        let next_utid = self.goc(next_pid);
        self.procs
            .update_thread_name(next_utid, next_comm, NamePriority::Ftrace);
        let state = self.task_state(ctx, prev_state);
        if state.is_none() {
            ctx.add_stat("task_state_invalid", None, 1);
        }
        let pending = self.cpu_state(cpu);
        if let Some(open) = pending.slice.take() {
            let matched = i64::from(prev_pid) == pending.last_pid;
            if !matched {
                ctx.add_stat("mismatched_sched_switch_tids", None, 1);
            }
            let end_state = if matched { state } else { None };
            self.close_slice(ctx, open, ts, end_state)?;
        }
        let prev_utid = self.goc(prev_pid);
        self.procs
            .update_thread_name(prev_utid, prev_comm, NamePriority::Ftrace);
        self.open_slice(ts, cpu, next_utid, next_pid, next_prio);
        self.thread_state_switch(ctx, ts, cpu, prev_utid, state, next_utid)
    }

    #[allow(clippy::too_many_arguments)]
    fn compact_switch(
        &mut self,
        ctx: &mut Ctx,
        ts: i64,
        cpu: u32,
        prev_state: i64,
        next_pid: i32,
        next_prio: i32,
        next_comm: Str,
        soft: bool,
    ) -> R {
        let next_utid = self.goc(next_pid);
        self.procs
            .update_thread_name(next_utid, next_comm, NamePriority::Ftrace);
        let pending = self.cpu_state(cpu);
        let Some(prev_utid) = pending.last_utid else {
            // No prev_* for the first compact switch of a CPU: it only says
            // who runs from now on.
            pending.last_pid = i64::from(next_pid);
            pending.last_utid = Some(next_utid);
            pending.last_prio = next_prio;
            ctx.add_stat("compact_sched_switch_skipped", None, 1);
            return Ok(());
        };
        let (prev_pid, prev_prio) = (pending.last_pid, pending.last_prio);
        let open = pending.slice.take();
        let state = self.task_state(ctx, prev_state);
        if state.is_none() {
            ctx.add_stat("task_state_invalid", None, 1);
        }
        if let Some(open) = open {
            self.close_slice(ctx, open, ts, state)?;
        }
        let pending = self.cpu_state(cpu);
        pending.last_pid = i64::from(next_pid);
        pending.last_utid = Some(next_utid);
        pending.last_prio = next_prio;
        if soft {
            let prev_comm = self.procs.threads[prev_utid as usize]
                .name
                .map_or("", |c| ctx.strings.get(c));
            let args = json!({"prev_comm": prev_comm, "prev_pid": prev_pid, "prev_prio": prev_prio,
                "prev_state": prev_state, "next_comm": ctx.strings.get(next_comm), "next_pid": next_pid,
                "next_prio": next_prio});
            return self.raw(
                ctx,
                ts,
                "sched_switch",
                cpu,
                Some(prev_utid),
                None,
                &args.to_string(),
            );
        }
        self.open_slice(ts, cpu, next_utid, next_pid, next_prio);
        self.thread_state_switch(ctx, ts, cpu, prev_utid, state, next_utid)
    }

    fn open_slice(&mut self, ts: i64, cpu: u32, utid: Utid, pid: i32, priority: i32) {
        let id = self.next_slice_id;
        self.next_slice_id += 1;
        let pending = self.cpu_state(cpu);
        pending.slice = Some(OpenSlice {
            id,
            ts,
            cpu,
            utid,
            priority,
        });
        pending.last_pid = i64::from(pid);
        pending.last_utid = Some(utid);
        pending.last_prio = priority;
    }

    fn close_slice(&mut self, ctx: &Ctx, s: OpenSlice, end: i64, end_state: Option<Str>) -> R {
        self.sink.slice(
            SliceRow {
                id: s.id,
                ts: s.ts,
                dur: end - s.ts,
                cpu: s.cpu,
                utid: s.utid,
                end_state,
                priority: s.priority,
            },
            &ctx.strings,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn waking(
        &mut self,
        ctx: &mut Ctx,
        ts: i64,
        cpu: u32,
        wakee: Utid,
        waker: Option<Utid>,
        target_cpu: i32,
        prio: i32,
        flags: Option<u32>,
    ) -> R {
        if wakee == 0 {
            return Ok(());
        }
        let id = self.next_wakeup_id;
        self.next_wakeup_id += 1;
        let row = WakeupRow {
            id,
            ts,
            utid: wakee,
            waker_utid: waker,
            waking_cpu: cpu,
            target_cpu,
            run_ts: None,
            run_cpu: None,
            priority: prio,
        };
        let last_state = self.info(wakee).last.as_ref().map(|l| l.state);
        match last_state {
            Some(state) if !self.is_blocked(state) => {
                // Already runnable or running: nothing to wake (spurious).
                ctx.add_stat("spurious_sched_wakeup", None, 1);
                return self.sink.wakeup(row);
            }
            Some(_) => self.close_state(ctx, ts, wakee)?,
            None => {}
        }
        let runnable = self.runnable;
        self.open_state(ctx, ts, wakee, Some(runnable), None, waker, flags)?;
        if let Some(old) = self.info(wakee).wakeup.replace(row) {
            self.sink.wakeup(old)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn new_task(
        &mut self,
        ctx: &mut Ctx,
        ts: i64,
        cpu: u32,
        src: i32,
        src_utid: Utid,
        pid: i32,
        comm: Str,
        clone_flags: u64,
    ) -> R {
        let new_utid = if clone_flags & CLONE_THREAD == 0 {
            let upid = self
                .procs
                .start_new_process(ts, i64::from(pid), comm, NamePriority::Ftrace);
            let source = self.goc(src);
            let new_utid = self.goc(pid);
            self.procs
                .associate_created_process_to_parent_thread(upid, source);
            new_utid
        } else {
            let source = self.goc(src);
            let new_utid = self.procs.start_new_thread(Some(ts), i64::from(pid));
            self.procs
                .update_thread_name(new_utid, comm, NamePriority::Ftrace);
            self.procs.associate_threads(source, new_utid);
            new_utid
        };
        let runnable = self.runnable;
        self.open_state(
            ctx,
            ts,
            new_utid,
            Some(runnable),
            None,
            Some(src_utid),
            Some(0),
        )?;
        let row = TaskEventRow {
            ts,
            kind: "fork",
            utid: new_utid,
            tid: i64::from(pid),
            pid: self.process_pid(new_utid),
            parent_utid: Some(src_utid),
            parent_tid: Some(i64::from(src)),
            comm: Some(ctx.strings.get(comm)),
            filename: None,
            clone_flags: Some(clone_flags as i64),
            cpu,
        };
        self.sink.task_event(&row)
    }

    fn blocked_reason(&mut self, ctx: &Ctx, utid: Utid, io_wait: bool, caller: Option<Str>) -> R {
        let info = self.info(utid);
        let (Some(last), Some(blocked)) = (info.last.as_mut(), info.last_blocked) else {
            return Ok(());
        };
        if last.id == blocked {
            last.io_wait = Some(io_wait);
            if caller.is_some() {
                last.blocked_function = caller;
            }
            return Ok(());
        }
        self.sink
            .state_blocked(blocked, io_wait, caller, &ctx.strings)
    }

    /// One sched_switch's thread states: prev gets prev_state, next Running.
    fn thread_state_switch(
        &mut self,
        ctx: &mut Ctx,
        ts: i64,
        cpu: u32,
        prev: Utid,
        state: Option<Str>,
        next: Utid,
    ) -> R {
        let running = self.running;
        if let Some(l) = &self.info(prev).last
            && l.state != Some(running)
        {
            ctx.add_stat("thread_state_gap", None, 1);
        }
        self.close_state(ctx, ts, prev)?;
        self.open_state(ctx, ts, prev, state, None, None, None)?;
        self.close_state(ctx, ts, next)?;
        self.open_state(ctx, ts, next, Some(running), Some(cpu), None, None)?;
        if let Some(mut w) = self.info(next).wakeup.take() {
            w.run_ts = Some(ts);
            w.run_cpu = Some(cpu);
            self.sink.wakeup(w)?;
        }
        Ok(())
    }

    fn is_blocked(&self, state: Option<Str>) -> bool {
        state != Some(self.runnable) && state != Some(self.running)
    }

    fn close_state(&mut self, _ctx: &Ctx, ts: i64, utid: Utid) -> R {
        if let Some(l) = &mut self.info(utid).last {
            l.dur = Some(ts - l.ts);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn open_state(
        &mut self,
        ctx: &Ctx,
        ts: i64,
        utid: Utid,
        state: Option<Str>,
        cpu: Option<u32>,
        waker: Option<Utid>,
        flags: Option<u32>,
    ) -> R {
        if utid == 0 {
            return Ok(());
        }
        let running = self.running;
        let waker_id = waker.and_then(|w| {
            self.threads
                .get(w as usize)
                .and_then(|i| i.last.as_ref())
                .filter(|l| l.state == Some(running))
                .map(|l| l.id)
        });
        let id = self.next_state_id;
        self.next_state_id += 1;
        let row = OpenState {
            id,
            ts,
            dur: None,
            cpu,
            state,
            io_wait: None,
            blocked_function: None,
            waker_utid: waker,
            waker_id,
            irq_context: flags.map(|f| u32::from(f & (0x08 | 0x10) != 0)),
        };
        let blocked = self.is_blocked(state);
        let info = self.info(utid);
        let old = info.last.replace(row);
        if state == Some(running) {
            info.last_blocked = None;
        } else if blocked {
            info.last_blocked = Some(id);
        }
        if let Some(old) = old {
            self.write_state(ctx, utid, &old)?;
        }
        Ok(())
    }

    fn write_state(&mut self, ctx: &Ctx, utid: Utid, s: &OpenState) -> R {
        self.sink.state(
            StateRow {
                id: s.id,
                ts: s.ts,
                dur: s.dur.unwrap_or(-1),
                cpu: s.cpu,
                utid,
                state: s.state,
                io_wait: s.io_wait,
                blocked_function: s.blocked_function,
                waker_utid: s.waker_utid,
                waker_id: s.waker_id,
                irq_context: s.irq_context,
            },
            &ctx.strings,
        )
    }

    /// Atrace markers (`B|pid|name`, `E|pid`, `C|pid|...`, ...) tie the
    /// writing thread to its process.
    fn atrace(&mut self, tid: i32, buf: &str) {
        let mut parts = buf.trim_end_matches('\n').split('|');
        let kind = parts.next().unwrap_or("");
        if !matches!(kind, "B" | "E" | "C" | "S" | "F" | "I" | "N" | "G" | "H") {
            return;
        }
        match parts.next().and_then(|p| p.trim().parse::<i64>().ok()) {
            Some(tgid) if tgid > 0 => {
                self.procs.update_thread(i64::from(tid), tgid);
            }
            _ => {
                self.goc(tid);
            }
        }
    }

    fn process_tree(&mut self, ctx: &mut Ctx, tree: &ProcessTree) {
        let mut kthreads = Vec::new();
        for p in &tree.processes {
            let Some(first) = p.cmdline.first() else {
                continue;
            };
            let pid = i64::from(p.pid() as u32);
            let ppid = i64::from(p.ppid() as u32);
            let mut argv0: &str = first;
            let mut joined = None;
            if ppid == KTHREADD_PID {
                kthreads.push(pid);
                let t = truncate_kworker(argv0);
                if t.len() != argv0.len() {
                    argv0 = t;
                    joined = Some(t.to_string());
                }
            }
            if p.cmdline.len() == 1
                && let Some(i) = argv0.find(' ')
            {
                argv0 = &argv0[..i];
            }
            let joined = joined.unwrap_or_else(|| p.cmdline.join(" "));
            let parent = self.procs.get_or_create_process(ppid);
            let upid = self.procs.get_or_create_process(pid);
            self.procs.set_process_parent(upid, parent);
            let name = ctx.strings.intern(argv0);
            let cmdline = ctx.strings.intern(&joined);
            self.procs.set_process_metadata(upid, name, cmdline);
            if p.cmdline_is_comm() {
                let utid = self.procs.get_or_create_thread(pid);
                self.procs
                    .update_thread_name(utid, cmdline, NamePriority::ProcessTree);
            }
            let proc_ = &mut self.procs.processes[upid as usize];
            if let Some(uid) = p.uid {
                proc_.uid = Some(i64::from(uid as u32));
            }
            if p.is_kthread.is_some() {
                proc_.is_kthread = p.is_kthread;
            }
            if let Some(start) = p.process_start_from_boot {
                self.procs.set_start_ts_if_unset(upid, start as i64);
            }
        }
        for t in &tree.threads {
            let tid = i64::from(t.tid() as u32);
            let tgid = i64::from(t.tgid() as u32);
            self.procs.update_thread(tid, tgid);
            if let Some(name) = &t.name {
                let name = if tid == tgid && kthreads.contains(&tid) {
                    truncate_kworker(name)
                } else {
                    name
                };
                let name = ctx.strings.intern(name);
                let utid = self.procs.get_or_create_thread(tid);
                self.procs
                    .update_thread_name(utid, name, NamePriority::ProcessTree);
            }
        }
    }

    fn process_stats(&mut self, procs: &[StatsProcess]) {
        for p in procs {
            for &tid in &p.tids {
                self.procs.update_thread(tid, p.pid);
            }
            if p.has_counters {
                self.procs.get_or_create_process(p.pid);
            }
        }
    }

    /// Writes every row still held in memory (open slices and states have dur -1).
    pub fn finish(&mut self, ctx: &mut Ctx) -> R {
        for cpu in 0..self.cpus.len() {
            if let Some(s) = self.cpus[cpu].slice.take() {
                self.sink.slice(
                    SliceRow {
                        id: s.id,
                        ts: s.ts,
                        dur: -1,
                        cpu: s.cpu,
                        utid: s.utid,
                        end_state: None,
                        priority: s.priority,
                    },
                    &ctx.strings,
                )?;
            }
        }
        for utid in 0..self.threads.len() {
            let info = std::mem::take(&mut self.threads[utid]);
            if let Some(l) = info.last {
                self.write_state(ctx, utid as Utid, &l)?;
            }
            if let Some(w) = info.wakeup {
                self.sink.wakeup(w)?;
            }
        }
        self.sink.finish()?;
        if self.procs.errors > 0 {
            ctx.add_stat("process_tracker_errors", None, self.procs.errors as i64);
        }
        Ok(())
    }
}

/// kworker/N:M-queue -> kworker/N:M: the suffix names the last workqueue
/// served, which changes all the time.
fn truncate_kworker(comm: &str) -> &str {
    if let Some(rest) = comm.strip_prefix("kworker/")
        && let Some(i) = rest.find(['+', '-'])
    {
        return &comm[..8 + i];
    }
    comm
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
        assert_eq!(truncate_kworker("kworker/1:0-events"), "kworker/1:0");
        assert_eq!(truncate_kworker("kworker/u8:2+flush"), "kworker/u8:2");
    }
}
