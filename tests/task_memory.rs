//! What a load holds per task: a hostile trace of many distinct tasks (each
//! its own pid and name, each left asleep to the end) costs memory in
//! proportion to its tasks, under a kilobyte each. Measured in-process by
//! a counting allocator (the Rust heap's peak; SQLite's page cache is
//! bounded on its own and allocates outside it), as the growth between two
//! trace sizes, so that fixed costs (buffers, the sorter's window) cancel.
//!
//! A 10 M-task trace (tracegen::write_distinct_tasks) once took 5.9 GB and
//! over 150 s in `schedlens query`; since the per-thread state was packed,
//! 3.0 GB and 64 s (5.8 GB and 79 s just before, same trace, same machine;
//! see DEVELOPERS.md "Fuzzing").

mod tracegen;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

const CPUS: u32 = 8;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(l.size(), Relaxed) + l.size();
        PEAK.fetch_max(live, Relaxed);
        // SAFETY: the caller's layout, as GlobalAlloc requires.
        unsafe { System.alloc(l) }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Relaxed);
        // SAFETY: p came from alloc with this layout.
        unsafe { System.dealloc(p, l) }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // Old and new blocks both exist while the data is copied.
        let live = LIVE.fetch_add(new, Relaxed) + new;
        PEAK.fetch_max(live, Relaxed);
        // SAFETY: as for alloc and dealloc.
        let q = unsafe { System.realloc(p, l, new) };
        LIVE.fetch_sub(l.size(), Relaxed);
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak heap bytes of loading a trace of `tasks` distinct tasks.
fn peak_heap(dir: &std::path::Path, tasks: u64) -> usize {
    let trace = dir.join(format!("tasks-{tasks}.pftrace"));
    let db = dir.join(format!("tasks-{tasks}.db"));
    tracegen::write_distinct_tasks(&trace, tasks, CPUS);
    PEAK.store(LIVE.load(Relaxed), Relaxed);
    let report = schedlens::analyzer::db::build_into(&trace, &db).expect("load");
    let peak = PEAK.load(Relaxed);
    assert_eq!(report.events, 2 * tasks, "a waking and a switch per task");
    let conn = schedlens::analyzer::db::open_readonly(&db).expect("open the cache");
    let threads: i64 = conn
        .query_row("SELECT COUNT(*) FROM thread WHERE tid > 0", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(threads as u64, tasks, "every task is a thread");
    let names: i64 = conn
        .query_row("SELECT COUNT(DISTINCT name) FROM thread", [], |r| r.get(0))
        .unwrap();
    assert_eq!(names as u64, tasks + 1, "every task's name, and swapper");
    // Each task's last state (asleep, to the end) was written late, past
    // the reorder window; at this size through the file in batches.
    let asleep: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM thread_state WHERE state = 'S' AND dur = -1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        asleep as u64,
        tasks - u64::from(CPUS),
        "every task asleep at the end but the last on each CPU"
    );
    let placeholders: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM thread_state WHERE ts IS NULL OR utid IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(placeholders, 0, "no late row left out");
    peak
}

#[test]
fn memory_per_task_is_a_few_hundred_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (small, large) = (40_000u64, 160_000u64);
    let (a, b) = (peak_heap(dir.path(), small), peak_heap(dir.path(), large));
    let per_task = b.saturating_sub(a) as u64 / (large - small);
    eprintln!(
        "task memory: peak heap {a} B at {small} tasks, {b} B at {large}: {per_task} B a task"
    );
    assert!(
        per_task <= BUDGET_PER_TASK,
        "a load holds {per_task} bytes a task, over {BUDGET_PER_TASK}"
    );
}

/// Bytes a task may cost while loading, counted as the allocator sees them
/// (a Vec's unused capacity included). Measured: 575-581 between 40 K and
/// 160 K tasks (785 before the thread-state tracker's row was packed into 40
/// bytes and the aggregator's bucket into 88), of which ~100-200
/// (estimated) are the sorter's window (two events a task, ~48 bytes each, all held below 2 M
/// events: a fixed cost past that); the rest are the per-thread state of
/// the process and thread-state trackers and the aggregator, and the
/// names.
const BUDGET_PER_TASK: u64 = 640;

/// The 10 M-task trace through the real `schedlens query`, its peak RSS
/// (wait4's ru_maxrss) against the same budget per task plus the fixed
/// costs (SQLite's page cache, the sorter's window). Set
/// SCHEDLENS_TASKS_TRACE to a path to keep the trace there (to time it with
/// /usr/bin/time -v, as DEVELOPERS.md says).
#[test]
#[ignore = "writes a 10 M-task trace (~250 MB) and loads it; run in release with --ignored"]
fn ten_million_tasks_through_schedlens_query() {
    const TASKS: u64 = 10_000_000;
    const FIXED_BYTES: u64 = 512 << 20;
    let dir = tempfile::tempdir().unwrap();
    let trace = std::env::var_os("SCHEDLENS_TASKS_TRACE")
        .map_or_else(|| dir.path().join("tasks.pftrace"), Into::into);
    tracegen::write_distinct_tasks(&trace, TASKS, CPUS);
    let peak = peak_rss_bytes(&trace, &dir.path().join("cache"));
    eprintln!(
        "task memory: schedlens query on {TASKS} tasks: peak RSS {} MB",
        peak >> 20
    );
    assert!(
        peak <= FIXED_BYTES + TASKS * BUDGET_PER_TASK,
        "{TASKS} tasks peaked at {peak} bytes"
    );
}

/// Peak RSS in bytes of `schedlens query --rebuild` loading `trace`.
#[expect(
    clippy::zombie_processes,
    reason = "reaped by wait4, which std's wait cannot replace: it returns the rusage"
)]
fn peak_rss_bytes(trace: &std::path::Path, cache: &std::path::Path) -> u64 {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_schedlens"))
        .args(["query", "--rebuild"])
        .arg(trace)
        .arg("SELECT COUNT(*) FROM thread")
        .env("XDG_CACHE_HOME", cache)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run schedlens query");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our unwaited child; status and usage are ours to write.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "schedlens query failed on {}: status {status:#x}",
        trace.display()
    );
    usage.ru_maxrss as u64 * 1024
}
