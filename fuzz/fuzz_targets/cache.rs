//! Shared by the cache targets: one honest cache (a `.db` and its `.cols`,
//! loaded once per process from a small synthetic trace) in a private
//! temporary directory, and the reads the tools and `schedlens query` do.

use rusqlite::Connection;
use schedlens::analyses::cpu_utilization::{GroupBy, cpu_utilization};
use schedlens::analyses::process_tree::process_tree;
use schedlens::analyses::scheduling_latency::scheduling_latency;
use schedlens::analyses::search_events::search_events;
use schedlens::analyses::task_timeline::{TaskSel, task_timeline};
use schedlens::analyses::tasks::TaskFilter;
use schedlens::analyses::timespec::trace_bounds;
use schedlens::analyses::top_tasks::{TaskOrder, top_tasks};
use schedlens::analyses::{summary, trace_info::trace_info};
use schedlens::analyzer::{columns, db};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

#[allow(dead_code)] // each target reads the fields it feeds honestly
pub struct Honest {
    _dir: tempfile::TempDir,
    pub cols: Vec<u8>,
    /// Where the column file's JSON directory starts.
    pub directory_offset: usize,
    pub db_bytes: Vec<u8>,
    /// Where the targets write their inputs.
    pub scratch: PathBuf,
}

pub static HONEST: LazyLock<Honest> = LazyLock::new(|| {
    // In memory where there is a tmpfs: every input is written as files.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("temporary directory");
    let trace = dir.path().join("t.pftrace");
    std::fs::write(
        &trace,
        include_bytes!("../../fixtures/pipe-and-true.pftrace"),
    )
    .expect("write trace");
    let db = dir.path().join("t.db");
    db::build_into(&trace, &db).expect("load the fixture");
    let cols = std::fs::read(columns::path_for(&db)).expect("read cols");
    let at = cols.len() - 16;
    let directory_offset =
        u64::from_le_bytes(cols[at..at + 8].try_into().expect("8 bytes")) as usize;
    Honest {
        cols,
        directory_offset,
        db_bytes: std::fs::read(&db).expect("read db"),
        scratch: dir.path().join("x.db"),
        _dir: dir,
    }
});

/// Writes `db` and `cols` as the scratch cache and reads it every way the
/// program does. Errors are fine; only a panic (which aborts inside SQLite's
/// callbacks), a hang or a blow-up is a bug.
pub fn read_cache(db_bytes: &[u8], cols: &[u8]) {
    let h = &*HONEST;
    // New files each time: a mapping of the previous input must not see this one.
    let _ = std::fs::remove_file(&h.scratch);
    let _ = std::fs::remove_file(columns::path_for(&h.scratch));
    std::fs::write(&h.scratch, db_bytes).expect("write db");
    std::fs::write(columns::path_for(&h.scratch), cols).expect("write cols");
    let _ = columns::Store::open(&columns::path_for(&h.scratch));
    if let Ok(conn) = db::open_readonly(&h.scratch) {
        queries(&conn);
        analyses(&conn);
    }
}

/// Every access path of the virtual tables, each bounded by LIMIT (a forged
/// directory may claim billions of rows; scanning them is slow, not wrong).
fn queries(conn: &Connection) {
    for sql in [
        "SELECT * FROM sched_slice LIMIT 300",
        "SELECT * FROM sched_slice WHERE utid = 3 LIMIT 300",
        "SELECT * FROM sched_slice WHERE cpu = 1 AND ts > 4192800000000 LIMIT 300",
        "SELECT * FROM sched_slice WHERE id = 7",
        "SELECT * FROM sched_slice WHERE ts BETWEEN 4192800000000 AND 4192900000000 LIMIT 300",
        "SELECT utid, ts FROM sched_slice ORDER BY utid LIMIT 300",
        "SELECT * FROM sched_slice ORDER BY ts DESC LIMIT 300",
        "SELECT * FROM thread_state WHERE utid = 2 ORDER BY ts LIMIT 300",
        "SELECT * FROM thread_state LIMIT 300",
        "SELECT * FROM wakeup ORDER BY latency DESC LIMIT 100",
        "SELECT * FROM wakeup WHERE latency > 1000 ORDER BY latency DESC LIMIT 100",
        "SELECT * FROM wakeup WHERE utid = 4 LIMIT 300",
        "SELECT * FROM process",
        "SELECT * FROM thread",
        "SELECT * FROM metadata",
    ] {
        if let Ok(mut st) = conn.prepare(sql)
            && let Ok(mut rows) = st.query([])
        {
            while let Ok(Some(row)) = rows.next() {
                for i in 0..row.as_ref().column_count() {
                    std::hint::black_box(row.get_ref(i).ok());
                }
            }
        }
    }
}

/// What the MCP tools and `schedlens summary` ask of a database.
fn analyses(conn: &Connection) {
    let _ = trace_info(conn);
    let _ = summary::render(conn, "fuzz");
    let Ok(b) = trace_bounds(conn) else {
        return;
    };
    let Ok(w) = b.window(None) else { return };
    let _ = cpu_utilization(conn, w, GroupBy::Cpu);
    let _ = cpu_utilization(conn, w, GroupBy::Llc);
    let _ = top_tasks(conn, w, TaskOrder::CpuTime, 10);
    let _ = top_tasks(conn, w, TaskOrder::Latency, 10);
    let _ = scheduling_latency(conn, &TaskFilter::default(), w, 5);
    let _ = task_timeline(conn, TaskSel::Tid(4693), w, 50);
    let _ = process_tree(conn, None, 50, Some(4096));
    let _ = search_events(conn, "sched", 10, Some(4096));
}
