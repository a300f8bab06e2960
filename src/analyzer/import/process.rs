//! Threads and processes with trace_processor's identity rules: a tid or pid
//! the kernel reused gets a new utid/upid once the old one ended (sched_process_free)
//! or a new process with that pid started; thread-name priorities; threads
//! joined to processes as soon as any event ties them, with pending
//! associations resolved transitively.
//!
//! One departure: a fork of a tid that only a snapshot has named, and that
//! has not run since, starts that thread (and its process) instead of a
//! second one. Snapshots stamped before the forks they list exist (older
//! recorders did so); trace_processor shows such a task twice.

use crate::analyzer::strings::{FastMap, Str};
use smallvec::SmallVec;

/// Utids of one tid or one process: nearly always one or a few, held inline
/// so that a trace of many short tasks costs no heap allocation per task.
type Utids = SmallVec<[Utid; 2]>;

/// Which source named a thread; a name only replaces one of lower or equal priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NamePriority {
    Other = 0,
    Ftrace = 1,
    ProcessTree = 2,
    /// Names the importer itself assigns ("swapper" for tid 0).
    Constant = 5,
}

pub type Utid = u32;
pub type Upid = u32;

#[derive(Debug, Clone)]
pub struct Thread {
    pub tid: i64,
    pub name: Option<Str>,
    pub start_ts: Option<i64>,
    pub end_ts: Option<i64>,
    pub upid: Option<Upid>,
    pub is_main_thread: Option<bool>,
    pub is_idle: bool,
    name_priority: NamePriority,
    /// Created by a snapshot (ProcessTree, ProcessStats), not by an event.
    from_snapshot: bool,
}

#[derive(Debug, Clone)]
pub struct Process {
    pub pid: i64,
    pub name: Option<Str>,
    pub start_ts: Option<i64>,
    pub end_ts: Option<i64>,
    pub parent_upid: Option<Upid>,
    pub uid: Option<i64>,
    pub cmdline: Option<Str>,
    pub is_kthread: Option<bool>,
}

#[derive(Default)]
pub struct ProcessTracker {
    pub threads: Vec<Thread>,
    pub processes: Vec<Process>,
    /// Every utid a tid has had that was not ended, oldest first.
    tids: FastMap<i64, Utids>,
    /// The utid a bare tid currently resolves to.
    live_tid: FastMap<i64, Utid>,
    pids: FastMap<i64, Upid>,
    process_threads: FastMap<Upid, Utids>,
    /// Threads known to share a process that is not known yet.
    pending_assocs: Vec<(Utid, Utid)>,
    /// (parent thread, child process) whose parent process is not known yet.
    pending_parent_assocs: Vec<(Utid, Upid)>,
    /// Times two threads of different processes were to be associated.
    pub errors: u64,
}

impl ProcessTracker {
    /// Starts with utid 0 / upid 0: the idle thread "swapper" and its process.
    pub fn new(swapper_name: Str) -> ProcessTracker {
        let mut t = ProcessTracker::default();
        t.processes.push(Process {
            pid: 0,
            name: None,
            start_ts: None,
            end_ts: None,
            parent_upid: None,
            uid: None,
            cmdline: None,
            is_kthread: None,
        });
        t.threads.push(Thread {
            tid: 0,
            name: Some(swapper_name),
            start_ts: None,
            end_ts: None,
            upid: Some(0),
            is_main_thread: Some(true),
            is_idle: true,
            name_priority: NamePriority::Constant,
            from_snapshot: false,
        });
        t.tids.insert(0, smallvec::smallvec![0]);
        t.live_tid.insert(0, 0);
        t.pids.insert(0, 0);
        t
    }

    pub fn start_new_thread(&mut self, ts: Option<i64>, tid: i64) -> Utid {
        let utid = self.threads.len() as Utid;
        self.threads.push(Thread {
            tid,
            name: None,
            start_ts: ts,
            end_ts: None,
            upid: None,
            is_main_thread: None,
            is_idle: false,
            name_priority: NamePriority::Other,
            from_snapshot: false,
        });
        self.tids.entry(tid).or_default().push(utid);
        self.live_tid.insert(tid, utid);
        utid
    }

    /// sched_process_free: the thread ends; a main thread ends its process.
    pub fn end_thread(&mut self, ts: i64, tid: i64) -> Option<Utid> {
        let utid = self.get_thread(tid)?;
        self.threads[utid as usize].end_ts = Some(ts);
        if let Some(v) = self.tids.get_mut(&tid) {
            v.retain(|u| *u != utid);
        }
        self.refresh_live_tid(tid);
        let upid = self.threads[utid as usize].upid?;
        if self.processes[upid as usize].pid != tid {
            return Some(utid);
        }
        self.processes[upid as usize].end_ts = Some(ts);
        self.pids.remove(&tid);
        self.invalidate_process_threads(upid);
        Some(utid)
    }

    /// The pid of the thread's process, if known.
    pub fn pid_of(&self, utid: Utid) -> Option<i64> {
        let upid = self.threads[utid as usize].upid?;
        Some(self.processes[upid as usize].pid)
    }

    /// The live thread with this tid, if any.
    #[inline]
    pub fn get_thread(&self, tid: i64) -> Option<Utid> {
        self.live_tid.get(&tid).copied()
    }

    #[inline]
    pub fn get_or_create_thread(&mut self, tid: i64) -> Utid {
        match self.get_thread(tid) {
            Some(u) => u,
            None => self.start_new_thread(None, tid),
        }
    }

    /// The live thread with this tid in process `pid` (or in no known process).
    fn get_thread_in(&self, tid: i64, pid: i64) -> Option<Utid> {
        let v = self.tids.get(&tid)?;
        for &utid in v.iter().rev() {
            if !self.is_thread_alive(utid) {
                continue;
            }
            match self.threads[utid as usize].upid {
                None => return Some(utid),
                Some(upid) if self.processes[upid as usize].pid == pid => return Some(utid),
                Some(_) => {}
            }
        }
        None
    }

    fn is_thread_alive(&self, utid: Utid) -> bool {
        let t = &self.threads[utid as usize];
        if t.end_ts.is_some() {
            return false;
        }
        let Some(upid) = t.upid else { return true };
        let p = &self.processes[upid as usize];
        if p.end_ts.is_some() {
            return false;
        }
        self.pids.get(&p.pid).is_none_or(|&u| u == upid)
    }

    fn refresh_live_tid(&mut self, tid: i64) {
        if let Some(v) = self.tids.get(&tid) {
            for &utid in v.iter().rev() {
                if self.is_thread_alive(utid) {
                    self.live_tid.insert(tid, utid);
                    return;
                }
            }
        }
        self.live_tid.remove(&tid);
    }

    fn invalidate_process_threads(&mut self, upid: Upid) {
        let Some(threads) = self.process_threads.get(&upid).cloned() else {
            return;
        };
        for utid in threads {
            let tid = self.threads[utid as usize].tid;
            self.refresh_live_tid(tid);
        }
    }

    pub fn update_thread_name(&mut self, utid: Utid, name: Str, priority: NamePriority) {
        let t = &mut self.threads[utid as usize];
        if priority >= t.name_priority {
            t.name = Some(name);
            t.name_priority = priority;
        }
    }

    /// task_rename: renames the thread, and its process if it is the main thread.
    pub fn update_thread_name_and_maybe_process(
        &mut self,
        utid: Utid,
        name: Str,
        priority: NamePriority,
    ) {
        self.update_thread_name(utid, name, priority);
        let t = &self.threads[utid as usize];
        if let Some(upid) = t.upid
            && self.processes[upid as usize].pid == t.tid
        {
            self.processes[upid as usize].name = Some(name);
        }
    }

    /// Ties tid to process pid (ProcessTree threads, atrace markers).
    pub fn update_thread(&mut self, tid: i64, pid: i64) -> Utid {
        let upid = self.get_or_create_process(pid);
        self.get_or_create_thread_with_parent(tid, upid, tid == pid)
    }

    fn get_or_create_thread_with_parent(&mut self, tid: i64, upid: Upid, is_main: bool) -> Utid {
        let pid = self.processes[upid as usize].pid;
        let found = self.get_thread_in(tid, pid);
        let utid = match found {
            Some(u) => {
                self.live_tid.insert(tid, u);
                if let Some(v) = self.tids.get_mut(&tid)
                    && v.last() != Some(&u)
                {
                    v.retain(|x| *x != u);
                    v.push(u);
                }
                u
            }
            None => self.start_new_thread(None, tid),
        };
        if self.threads[utid as usize].upid.is_none() {
            self.associate_thread_to_process(utid, upid, is_main);
        }
        let upid = self.threads[utid as usize].upid.unwrap_or(upid);
        self.resolve_pending_associations(utid, upid);
        utid
    }

    pub fn get_or_create_process(&mut self, pid: i64) -> Upid {
        if let Some(&u) = self.pids.get(&pid) {
            return u;
        }
        let upid = self.processes.len() as Upid;
        self.processes.push(Process {
            pid,
            name: None,
            start_ts: None,
            end_ts: None,
            parent_upid: None,
            uid: None,
            cmdline: None,
            is_kthread: None,
        });
        self.pids.insert(pid, upid);
        self.update_thread(pid, pid);
        upid
    }

    /// A fork (task_newtask without CLONE_THREAD): a new process with a new main thread.
    pub fn start_new_process(
        &mut self,
        ts: i64,
        pid: i64,
        name: Str,
        priority: NamePriority,
    ) -> Upid {
        let recycled = self.pids.remove(&pid);
        self.tids.remove(&pid);
        self.live_tid.remove(&pid);
        let utid = self.start_new_thread(Some(ts), pid);
        self.update_thread_name(utid, name, priority);
        let upid = self.get_or_create_process(pid);
        let p = &mut self.processes[upid as usize];
        p.start_ts = Some(ts);
        p.name = Some(name);
        if let Some(old) = recycled {
            self.invalidate_process_threads(old);
        }
        upid
    }

    /// Marks the threads from `first` on as created by a snapshot packet.
    pub fn mark_from_snapshot(&mut self, first: Utid) {
        for t in &mut self.threads[first as usize..] {
            t.from_snapshot = true;
        }
    }

    /// The live thread `tid` if only a snapshot created it. A snapshot is
    /// read over time but stamped once, so it can list a task before the
    /// fork that creates it: that fork is this thread's birth.
    pub fn snapshot_thread(&self, tid: i64) -> Option<Utid> {
        self.get_thread(tid)
            .filter(|&u| self.threads[u as usize].from_snapshot)
    }

    /// A fork (task_newtask with CLONE_THREAD) of `utid`, a thread a
    /// snapshot listed first: it starts now, named by the events from here.
    pub fn adopt_forked_thread(&mut self, utid: Utid, ts: i64, name: Str) {
        let t = &mut self.threads[utid as usize];
        t.start_ts = Some(ts);
        t.from_snapshot = false;
        t.name = Some(name);
        t.name_priority = NamePriority::Ftrace;
    }

    /// A fork of a new process whose main thread `utid` a snapshot listed
    /// first: that process starts now (keeping what the snapshot said of
    /// it). None if the snapshot put the thread in another process.
    pub fn adopt_forked_process(&mut self, utid: Utid, ts: i64, name: Str) -> Option<Upid> {
        let t = &self.threads[utid as usize];
        let upid = t.upid?;
        let p = &mut self.processes[upid as usize];
        if p.pid != t.tid {
            return None;
        }
        p.start_ts = Some(ts);
        p.name.get_or_insert(name);
        self.adopt_forked_thread(utid, ts, name);
        Some(upid)
    }

    /// The new process's parent is the creating thread's process, now or once known.
    pub fn associate_created_process_to_parent_thread(&mut self, upid: Upid, parent: Utid) {
        match self.threads[parent as usize].upid {
            Some(p) => self.processes[upid as usize].parent_upid = Some(p),
            None => self.pending_parent_assocs.push((parent, upid)),
        }
    }

    /// Keeps the first parent seen: later snapshots do not reparent.
    pub fn set_process_parent(&mut self, upid: Upid, parent: Upid) {
        let p = &mut self.processes[upid as usize];
        if p.parent_upid.is_none() {
            p.parent_upid = Some(parent);
        }
    }

    /// Threads created with CLONE_THREAD share a process.
    pub fn associate_threads(&mut self, a: Utid, b: Utid) {
        let (ua, ub) = (self.threads[a as usize].upid, self.threads[b as usize].upid);
        match (ua, ub) {
            (Some(p), None) => {
                let is_main = self.threads[b as usize].tid == self.processes[p as usize].pid;
                self.associate_thread_to_process(b, p, is_main);
                self.resolve_pending_associations(b, p);
            }
            (None, Some(p)) => {
                let is_main = self.threads[a as usize].tid == self.processes[p as usize].pid;
                self.associate_thread_to_process(a, p, is_main);
                self.resolve_pending_associations(a, p);
            }
            (Some(x), Some(y)) if x != y => self.errors += 1,
            (Some(_), Some(_)) => {}
            (None, None) => self.pending_assocs.push((a, b)),
        }
    }

    fn associate_thread_to_process(&mut self, utid: Utid, upid: Upid, is_main: bool) {
        let t = &mut self.threads[utid as usize];
        t.upid = Some(upid);
        t.is_main_thread = Some(is_main);
        self.process_threads.entry(upid).or_default().push(utid);
    }

    fn resolve_pending_associations(&mut self, utid: Utid, upid: Upid) {
        let mut resolved = vec![utid];
        while let Some(utid) = resolved.pop() {
            let mut i = 0;
            while i < self.pending_parent_assocs.len() {
                let (parent, child) = self.pending_parent_assocs[i];
                if parent == utid {
                    self.processes[child as usize].parent_upid = Some(upid);
                    self.pending_parent_assocs.swap_remove(i);
                } else {
                    i += 1;
                }
            }
            let mut i = 0;
            while i < self.pending_assocs.len() {
                let (a, b) = self.pending_assocs[i];
                let other = if a == utid {
                    b
                } else if b == utid {
                    a
                } else {
                    i += 1;
                    continue;
                };
                let is_main = self.threads[other as usize].tid == self.processes[upid as usize].pid;
                self.associate_thread_to_process(other, upid, is_main);
                self.pending_assocs.swap_remove(i);
                resolved.push(other);
            }
        }
    }

    pub fn set_process_metadata(&mut self, upid: Upid, name: Str, cmdline: Str) {
        let p = &mut self.processes[upid as usize];
        p.name = Some(name);
        p.cmdline = Some(cmdline);
    }

    pub fn set_start_ts_if_unset(&mut self, upid: Upid, ts: i64) {
        let p = &mut self.processes[upid as usize];
        if p.start_ts.is_none() {
            p.start_ts = Some(ts);
        }
    }
}
