//! The flight recorder: `schedlens trace --flight` run for real, its
//! snapshots loaded with `schedlens query`. Needs root; see `require_bpf`.

mod root;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_schedlens");

struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let dir =
            std::env::temp_dir().join(format!("schedlens-flight-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Tmp(dir)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `schedlens trace --flight WINDOW -o DIR/snaps EXTRA`, stderr to a file.
fn start_flight(dir: &Path, window: &str, extra: &[&str]) -> Child {
    let log = std::fs::File::create(dir.join("stderr")).unwrap();
    Command::new(BIN)
        .args(["trace", "--flight", window, "-o"])
        .arg(dir.join("snaps"))
        .args(extra)
        .stderr(log)
        .spawn()
        .unwrap()
}

fn stderr_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
}

/// Waits until the recorder has attached (it reports nothing before its
/// summary, so: until the snapshot directory exists and BPF had time to load).
fn wait_attached(dir: &Path, child: &mut Child) {
    let start = Instant::now();
    while !dir.join("snaps").exists() {
        assert!(child.try_wait().unwrap().is_none(), "{}", stderr_of(dir));
        assert!(start.elapsed() < Duration::from_secs(30), "no snapshot dir");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Loading and attaching the programs follows making the directory.
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "{}", stderr_of(dir));
}

/// Snapshots in DIR/snaps whose name contains `kind`.
fn snapshots(dir: &Path, kind: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("snaps"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy().into_owned();
                    name.ends_with(".pftrace") && !name.starts_with('.') && name.contains(kind)
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn wait_for_snapshot(dir: &Path, kind: &str, child: &mut Child) -> PathBuf {
    let start = Instant::now();
    loop {
        if let Some(p) = snapshots(dir, kind).pop() {
            return p;
        }
        assert!(child.try_wait().unwrap().is_none(), "{}", stderr_of(dir));
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no {kind} snapshot: {}",
            stderr_of(dir)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stop(child: &mut Child) {
    // SAFETY: kill with a pid we own.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// The rows of one `schedlens query` as CSV lines (header dropped).
fn query(dir: &Path, trace: &Path, sql: &str) -> Vec<String> {
    let out = Command::new(BIN)
        .args(["query", "--format=csv"])
        .arg(trace)
        .arg(sql)
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

fn query_i64(dir: &Path, trace: &Path, sql: &str) -> i64 {
    let rows = query(dir, trace, sql);
    rows.first()
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("{sql}: {rows:?}"))
}

#[test]
fn a_latency_trigger_snapshot_holds_the_triggering_wakeup() {
    if !root::require_bpf() {
        return;
    }
    let tmp = Tmp::new("trigger");
    let mut rec = start_flight(
        &tmp.0,
        "10s",
        &["--trigger", "latency>30ms", "--trigger-comm", "sl-victim"],
    );
    wait_attached(&tmp.0, &mut rec);
    let tid = root::latency::delayed_wakeup();
    let snap = wait_for_snapshot(&tmp.0, "trigger", &mut rec);
    stop(&mut rec);
    let log = stderr_of(&tmp.0);
    assert!(log.contains(&format!("trigger: pid {tid} waited")), "{log}");
    let mode = std::fs::metadata(&snap).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", snap.display());
    // The triggering wakeup is in the snapshot, with its latency.
    let latency = query_i64(
        &tmp.0,
        &snap,
        &format!(
            "SELECT max(w.latency) FROM wakeup w JOIN thread t USING (utid) \
             WHERE t.tid = {tid} AND t.name = 'sl-victim'"
        ),
    );
    assert!(latency > 30_000_000, "latency {latency} ns");
    // Debounced: one trigger snapshot for the window.
    assert_eq!(snapshots(&tmp.0, "trigger").len(), 1);
}

#[test]
fn a_sigusr1_snapshot_is_a_complete_trace_of_the_last_window() {
    if !root::require_bpf() {
        return;
    }
    let tmp = Tmp::new("usr1");
    // A named process alive throughout, and one short-lived task per 100 ms.
    let named = tmp.0.join("sl-flightnamed");
    // A link, not a copy: exec of a file just written races other tests'
    // forks that still hold it open (ETXTBSY); comm is the link's name.
    std::os::unix::fs::symlink("/bin/sleep", &named).unwrap();
    let mut sleeper = Command::new(&named).arg("60").spawn().unwrap();
    let mut rec = start_flight(&tmp.0, "3s", &[]);
    wait_attached(&tmp.0, &mut rec);
    let mut load = Command::new("sh")
        .args(["-c", "while :; do /bin/true; sleep 0.1; done"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Well past the window, so the ring has dropped its oldest chunks; the
    // snapshot's stats begin after `mark` (at most window + 4 s before it).
    std::thread::sleep(Duration::from_secs(3));
    let mark = root::boottime();
    std::thread::sleep(Duration::from_secs(9));
    // SAFETY: kill with a pid we own.
    unsafe { libc::kill(rec.id() as i32, libc::SIGUSR1) };
    let snap = wait_for_snapshot(&tmp.0, "snapshot", &mut rec);
    stop(&mut rec);
    let _ = load.kill();
    let _ = load.wait();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let log = stderr_of(&tmp.0);
    let mode = std::fs::metadata(&snap).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Process names: the sleeper, under its pid (argv[0], its path).
    let named = query_i64(
        &tmp.0,
        &snap,
        &format!(
            "SELECT count(*) FROM process WHERE pid = {} AND name LIKE '%/sl-flightnamed'",
            sleeper.id()
        ),
    );
    assert_eq!(named, 1, "{log}");
    // Topology: every CPU, with its LLC and shard.
    let cpus = std::thread::available_parallelism().unwrap().get() as i64;
    let n = query_i64(
        &tmp.0,
        &snap,
        "SELECT count(*) FROM cpu WHERE llc_id IS NOT NULL AND shard IS NOT NULL",
    );
    assert!(n >= cpus, "{n} CPUs with topology, {cpus} online");
    // The window: 3 s, plus at most about one chunk (flushed every second).
    let span = query_i64(&tmp.0, &snap, "SELECT max(ts) - min(ts) FROM sched_slice");
    assert!(span <= 5_000_000_000, "snapshot spans {span} ns");
    assert!(span >= 2_000_000_000, "snapshot spans only {span} ns");
    // The load's tasks are named in the events of the window.
    let forks = query_i64(
        &tmp.0,
        &snap,
        "SELECT count(*) FROM thread WHERE name = 'true'",
    );
    assert!(forks >= 5, "{forks} /bin/true runs in the window");
    assert!(log.contains("chunks dropped"), "{log}");
    assert!(!log.contains(" 0 chunks dropped"), "{log}");

    // It ends like a full recording, with the recorder's stats, counted
    // over its window: they cover its events and begin after the recording did.
    let meta = |name: &str| {
        query_i64(
            &tmp.0,
            &snap,
            &format!("SELECT int_value FROM metadata WHERE name = '{name}'"),
        )
    };
    let (start, end) = (meta("recorder_start_ts"), meta("recorder_end_ts"));
    let first = query_i64(&tmp.0, &snap, "SELECT min(ts) FROM sched_slice");
    let last = query_i64(&tmp.0, &snap, "SELECT max(ts) FROM sched_slice");
    assert!(
        start <= first && end >= last,
        "{start}..{end} vs {first}..{last}"
    );
    assert!(start > mark, "the window's stats, not the recording's");
    let switches = query_i64(&tmp.0, &snap, "SELECT count(*) FROM sched_slice");
    assert!(meta("recorder_events_sched_switch") >= switches);
    // Drops: a total for each CPU, covering the LostEvents of the window.
    let totals = query_i64(
        &tmp.0,
        &snap,
        "SELECT count(*) FROM stats WHERE name = 'recorder_lost_events_total'",
    );
    assert!(totals >= cpus, "{totals} per-CPU drop totals, {cpus} CPUs");
    let (lost, lost_total) = (
        query_i64(
            &tmp.0,
            &snap,
            "SELECT coalesce(sum(count), 0) FROM lost_events",
        ),
        query_i64(
            &tmp.0,
            &snap,
            "SELECT sum(value) FROM stats WHERE name = 'recorder_lost_events_total'",
        ),
    );
    assert!(lost_total >= lost, "{lost_total} counted, {lost} reported");
    let summary = Command::new(BIN)
        .arg("summary")
        .arg(&snap)
        .env("XDG_CACHE_HOME", tmp.0.join("cache"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&summary.stdout);
    assert!(
        summary.status.success(),
        "{}",
        String::from_utf8_lossy(&summary.stderr)
    );
    assert!(text.contains("recorded by schedlens"), "{text}");
}

/// `flight ring: ... held at most X of Y bytes` from the summary.
fn ring_accounting(log: &str) -> (u64, u64) {
    let line = log
        .lines()
        .find(|l| l.contains("flight ring:"))
        .unwrap_or_else(|| panic!("no ring summary: {log}"));
    let num = |after: &str| -> u64 {
        let rest = &line[line.find(after).unwrap_or_else(|| panic!("{line}")) + after.len()..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    (num("held at most "), num("bytes of "))
}

#[test]
fn the_ring_stays_within_its_budget_over_a_long_run() {
    if !root::require_bpf() {
        return;
    }
    let tmp = Tmp::new("bounded");
    const BUDGET: u64 = 64 << 10;
    let mut rec = start_flight(&tmp.0, "2s", &["--max-bytes", "64K"]);
    wait_attached(&tmp.0, &mut rec);
    let mut loads: Vec<Child> = (0..2)
        .map(|_| {
            Command::new("sh")
                .args(["-c", "while :; do /bin/true; done"])
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_secs(12));
    // SAFETY: kill with a pid we own.
    unsafe { libc::kill(rec.id() as i32, libc::SIGUSR1) };
    let snap = wait_for_snapshot(&tmp.0, "snapshot", &mut rec);
    stop(&mut rec);
    for l in &mut loads {
        let _ = l.kill();
        let _ = l.wait();
    }
    let log = stderr_of(&tmp.0);
    let (peak, appended) = ring_accounting(&log);
    // What the ring held never passed its budget (a chunk may cross it
    // until the next push drops the oldest: at most one chunk over).
    assert!(peak <= BUDGET + 512 * 1024, "{log}");
    // The run was far longer than the ring: most of it was dropped.
    assert!(
        appended >= 4 * BUDGET,
        "only {appended} bytes in all: {log}"
    );
    // The snapshot is the ring plus the machine and process packets.
    let size = std::fs::metadata(&snap).unwrap().len();
    assert!(size <= BUDGET + 2 * 512 * 1024, "{size}");
    assert!(query_i64(&tmp.0, &snap, "SELECT count(*) FROM sched_slice") > 0);
}

#[test]
fn flight_flags_are_checked() {
    for (args, message) in [
        (
            &["--trigger", "latency>5ms"][..],
            "--trigger needs --flight",
        ),
        (
            &["--flight", "5s", "--trigger-pid", "1"][..],
            "--trigger-pid needs --trigger",
        ),
        (
            &["--flight", "5s", "--trigger", "latency<5ms"][..],
            "the trigger is latency>DURATION",
        ),
        (
            &["--flight", "5s", "--compress", "gzip"][..],
            "--flight keeps zstd chunks",
        ),
    ] {
        let out = Command::new(BIN).arg("trace").args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.contains(message), "{args:?}: {stderr}");
    }
}
