//! Process snapshots and other events that tie threads to processes:
//! ProcessTree packets (processes with their command lines, threads with
//! their names), ProcessStats packets, and atrace markers.

use super::events::StatsProcess;
use super::process::{NamePriority, ProcessTracker, Utid};
use crate::analyzer::strings::Strings;
use crate::perfetto::proto::ProcessTree;

const KTHREADD_PID: i64 = 2;

/// A ProcessTree packet, as trace_processor reads it.
pub fn process_tree(procs: &mut ProcessTracker, strings: &mut Strings, tree: &ProcessTree) {
    let first_new = procs.threads.len() as Utid;
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
        let parent = procs.get_or_create_process(ppid);
        let upid = procs.get_or_create_process(pid);
        procs.set_process_parent(upid, parent);
        let name = strings.intern(argv0);
        let cmdline = strings.intern(&joined);
        procs.set_process_metadata(upid, name, cmdline);
        if p.cmdline_is_comm() {
            let utid = procs.get_or_create_thread(pid);
            procs.update_thread_name(utid, cmdline, NamePriority::ProcessTree);
        }
        let process = &mut procs.processes[upid as usize];
        if let Some(uid) = p.uid {
            process.uid = Some(i64::from(uid as u32));
        }
        if p.is_kthread.is_some() {
            process.is_kthread = p.is_kthread;
        }
        if let Some(start) = p.process_start_from_boot {
            procs.set_start_ts_if_unset(upid, start as i64);
        }
    }
    for t in &tree.threads {
        let tid = i64::from(t.tid() as u32);
        let tgid = i64::from(t.tgid() as u32);
        procs.update_thread(tid, tgid);
        if let Some(name) = &t.name {
            let name = if tid == tgid && kthreads.contains(&tid) {
                truncate_kworker(name)
            } else {
                name
            };
            let name = strings.intern(name);
            let utid = procs.get_or_create_thread(tid);
            procs.update_thread_name(utid, name, NamePriority::ProcessTree);
        }
    }
    procs.mark_from_snapshot(first_new);
}

/// A ProcessStats packet: its thread lists tie threads to processes.
pub fn process_stats(procs: &mut ProcessTracker, stats: &[StatsProcess]) {
    let first_new = procs.threads.len() as Utid;
    for p in stats {
        for &tid in &p.tids {
            procs.update_thread(tid, p.pid);
        }
        if p.has_counters {
            procs.get_or_create_process(p.pid);
        }
    }
    procs.mark_from_snapshot(first_new);
}

/// Atrace markers (`B|pid|name`, `E|pid`, `C|pid|...`, ...) tie the
/// writing thread to its process.
pub fn atrace(procs: &mut ProcessTracker, tid: i32, buf: &str) {
    let mut parts = buf.trim_end_matches('\n').split('|');
    let kind = parts.next().unwrap_or("");
    if !matches!(kind, "B" | "E" | "C" | "S" | "F" | "I" | "N" | "G" | "H") {
        return;
    }
    match parts.next().and_then(|p| p.trim().parse::<i64>().ok()) {
        Some(tgid) if tgid > 0 => {
            procs.update_thread(i64::from(tid), tgid);
        }
        _ => {
            procs.get_or_create_thread(i64::from(tid));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kworker_names_lose_their_queue() {
        assert_eq!(truncate_kworker("kworker/1:0-events"), "kworker/1:0");
        assert_eq!(truncate_kworker("kworker/u8:2+flush"), "kworker/u8:2");
        assert_eq!(truncate_kworker("bash"), "bash");
    }
}
