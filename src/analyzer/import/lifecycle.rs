//! The task lifecycle -> task_event, and what it does to the thread and
//! process tables: fork (task_newtask), rename, exec, exit, free; and
//! migrations between CPUs (the migration table).
//!
//! Every event first makes sure the task it fired on (`src`) is a known
//! thread, in the order trace_processor does, which decides the utids.
//! Before the tracing window (`soft`) only that, and the ftrace_event row
//! of exec and exit, happen.

use super::Storage;
use super::events::{Exec, Exit, Free, Migrate, NewTask, Rename};
use super::process::{NamePriority, Utid};
use crate::analyzer::strings::Str;
use crate::analyzer::tables::{MigrationRow, TaskEventRow};
use serde_json::json;

/// The kernel's flag (bpf/events.h SL_CLONE_THREAD is tied to the same value).
const CLONE_THREAD: u64 = libc::CLONE_THREAD as u64;

/// task_newtask: a new thread, or with a new process when not
/// CLONE_THREAD; or the thread `listed` (a snapshot listed the task before
/// its fork, see [`ProcessTracker::snapshot_thread`]) starts here. Returns
/// (new thread, its creator) for the thread-state tracker, None when
/// nothing was created.
///
/// [`ProcessTracker::snapshot_thread`]: super::process::ProcessTracker::snapshot_thread
pub fn new_task(
    st: &mut Storage<'_>,
    ts: i64,
    e: &NewTask,
    soft: bool,
    listed: Option<Utid>,
) -> anyhow::Result<Option<(Utid, Utid)>> {
    let parent = st.procs.get_or_create_thread(e.src.into());
    if soft || e.pid == 0 {
        // pid 0: boot-time tracing sees init create the idle tasks.
        return Ok(None);
    }
    let (pid, src) = (i64::from(e.pid), i64::from(e.src));
    let procs = &mut st.procs;
    let utid = if e.clone_flags & CLONE_THREAD == 0 {
        let upid = match listed.and_then(|u| procs.adopt_forked_process(u, ts, e.comm)) {
            Some(upid) => upid,
            None => procs.start_new_process(ts, pid, e.comm, NamePriority::Ftrace),
        };
        // Looked up again: the new process may have replaced src's.
        let source = procs.get_or_create_thread(src);
        let utid = procs.get_or_create_thread(pid);
        procs.associate_created_process_to_parent_thread(upid, source);
        utid
    } else {
        let source = procs.get_or_create_thread(src);
        let utid = match listed {
            Some(utid) => {
                procs.adopt_forked_thread(utid, ts, e.comm);
                utid
            }
            None => {
                let utid = procs.start_new_thread(Some(ts), pid);
                procs.update_thread_name(utid, e.comm, NamePriority::Ftrace);
                utid
            }
        };
        procs.associate_threads(source, utid);
        utid
    };
    let row = TaskEventRow {
        ts,
        kind: "fork",
        utid,
        tid: pid,
        pid: st.procs.pid_of(utid),
        parent_utid: Some(parent),
        parent_tid: Some(src),
        comm: Some(st.strings.get(e.comm)),
        filename: None,
        clone_flags: Some(e.clone_flags as i64),
        cpu: e.cpu,
    };
    st.sink.task_event(&row)?;
    Ok(Some((utid, parent)))
}

/// task_rename: renames the thread (and its process, for a main thread).
pub fn rename(st: &mut Storage<'_>, ts: i64, e: &Rename, soft: bool) -> anyhow::Result<()> {
    st.procs.get_or_create_thread(e.src.into());
    if soft {
        return Ok(());
    }
    let utid = st.procs.get_or_create_thread(e.pid.into());
    st.procs
        .update_thread_name_and_maybe_process(utid, e.comm, NamePriority::Ftrace);
    task_event(st, ts, "rename", utid, e.cpu, Some(e.comm), None)
}

/// sched_process_free: the thread ends (a main thread ends its process).
pub fn free(st: &mut Storage<'_>, ts: i64, e: &Free, soft: bool) -> anyhow::Result<()> {
    st.procs.get_or_create_thread(e.src.into());
    if soft {
        return Ok(());
    }
    let tid = i64::from(e.pid);
    // The pid before the thread (maybe its process) ends.
    let pid = st.procs.get_thread(tid).and_then(|u| st.procs.pid_of(u));
    let Some(utid) = st.procs.end_thread(ts, tid) else {
        return Ok(());
    };
    let comm = st.procs.threads[utid as usize].name;
    st.sink.task_event(&TaskEventRow {
        ts,
        kind: "free",
        utid,
        tid,
        pid,
        comm: comm.map(|c| st.strings.get(c)),
        cpu: e.cpu,
        ..Default::default()
    })
}

/// sched_process_exec: an ftrace_event row, and a task_event with the file.
pub fn exec(st: &mut Storage<'_>, ts: i64, e: &Exec, soft: bool) -> anyhow::Result<()> {
    let src = st.procs.get_or_create_thread(e.src.into());
    st.ftrace_event(ts, "sched_process_exec", e.cpu, Some(src), None, &e.args)?;
    if soft {
        return Ok(());
    }
    let utid = st.procs.get_thread(e.pid.into()).unwrap_or(src);
    let comm = st.procs.threads[utid as usize].name;
    task_event(st, ts, "exec", utid, e.cpu, comm, Some(e.filename))
}

/// sched_process_exit: an ftrace_event row and a task_event.
pub fn exit(st: &mut Storage<'_>, ts: i64, e: &Exit, soft: bool) -> anyhow::Result<()> {
    let src = st.procs.get_or_create_thread(e.src.into());
    st.ftrace_event(ts, "sched_process_exit", e.cpu, Some(src), None, &e.args)?;
    if soft {
        return Ok(());
    }
    let utid = st.procs.get_thread(e.pid.into()).unwrap_or(src);
    task_event(st, ts, "exit", utid, e.cpu, Some(e.comm), None)
}

/// sched_migrate_task: an ftrace_event row and a migration row.
pub fn migrate(st: &mut Storage<'_>, ts: i64, e: &Migrate, soft: bool) -> anyhow::Result<()> {
    let src = st.procs.get_or_create_thread(e.src.into());
    let mut args = json!({"comm": st.strings.get(e.comm), "pid": e.pid, "prio": e.prio,
        "orig_cpu": e.orig_cpu, "dest_cpu": e.dest_cpu});
    if let Some(running) = e.running {
        args["running"] = json!(i32::from(running));
    }
    st.ftrace_event(
        ts,
        "sched_migrate_task",
        e.cpu,
        Some(src),
        None,
        &args.to_string(),
    )?;
    if soft {
        return Ok(());
    }
    let utid = st.procs.get_or_create_thread(e.pid.into());
    st.sink.migration(&MigrationRow {
        ts,
        utid,
        from_cpu: e.orig_cpu,
        to_cpu: e.dest_cpu,
        running: e.running.map(u32::from),
    })
}

fn task_event(
    st: &mut Storage<'_>,
    ts: i64,
    kind: &str,
    utid: Utid,
    cpu: u32,
    comm: Option<Str>,
    filename: Option<Str>,
) -> anyhow::Result<()> {
    let s = &st.strings;
    st.sink.task_event(&TaskEventRow {
        ts,
        kind,
        utid,
        tid: st.procs.threads[utid as usize].tid,
        pid: st.procs.pid_of(utid),
        comm: comm.map(|c| s.get(c)),
        filename: filename.map(|c| s.get(c)),
        cpu,
        ..Default::default()
    })
}
