//! Load rate on a synthetic compact-sched trace. Ignored by default (it is a
//! measurement, and only meaningful in release builds):
//!   cargo test --release --no-default-features --test import_speed -- --ignored --nocapture
//! SCHEDLENS_SPEED_EVENTS sets the number of events (default 5,000,000).

mod tracegen;

use std::time::Instant;

/// CPU seconds used by this process and its peak RSS in MB: the machine is
/// shared, so wall time says little about the loader's own cost.
fn cpu_and_rss() -> (f64, f64) {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (t(u.ru_utime) + t(u.ru_stime), u.ru_maxrss as f64 / 1024.0)
}

#[test]
#[ignore]
fn load_rate() {
    let events: u64 = std::env::var("SCHEDLENS_SPEED_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000);
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("synthetic.pftrace");
    tracegen::write_synthetic(&trace, events, 2, 64, 2000);
    let size = std::fs::metadata(&trace).unwrap().len();
    let (cpu0, rss0) = cpu_and_rss();
    let started = Instant::now();
    let report =
        schedlens::analyzer::db::build_into(&trace, &dir.path().join("synthetic.db")).unwrap();
    let secs = started.elapsed().as_secs_f64();
    let (cpu1, rss1) = cpu_and_rss();
    let cpu = cpu1 - cpu0;
    eprintln!(
        "{} events ({} MB trace) -> {} rows: {cpu:.2} CPU s ({secs:.2} s wall, import without indexes {:.2} s wall): \
         {:.2} M events per CPU second; peak RSS {rss1:.0} MB (after generating the trace: {rss0:.0} MB)",
        report.events,
        size >> 20,
        report.rows,
        report.seconds,
        report.events as f64 / cpu / 1e6
    );
}
