//! The flight recorder (`schedlens trace --flight 30s -o DIR`): the trace's
//! chunks go into a bounded in-memory ring ([`FlightRing`]) instead of a
//! file, and a snapshot of the last N seconds is written into DIR when asked:
//! SIGUSR1, a line on stdin under `--flight-control` (how the recorder
//! service asks), or a wakeup latency above `--trigger`.
//!
//! A snapshot is a complete trace: the machine packets (SystemInfo, clocks,
//! CPUs, topology) written fresh, the ring's chunks (each self-contained:
//! the encoder starts every chunk's bundles with their own CompactSched
//! intern tables), and a process tree read from /proc at the end.

use crate::model::event::{Event, Header, TaskId, comm_str};
use crate::perfetto::writer::{FlightRing, ShardEncoder, TraceWriter};
use crate::recorder::cli::{Fired, LatencyTrigger, TriggerSpec};
use crate::recorder::consumer::EventSink;
use crate::recorder::snapshot::RecordingStats;
use crate::recorder::topology::Topology;
use crate::recorder::{TraceArgs, snapshot};
use anyhow::{Context, bail};
use rustc_hash::FxHashSet;
use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The ring's byte budget without --max-bytes.
pub const DEFAULT_RING_BYTES: u64 = 64 << 20;
/// After a trigger, how long to wait before the snapshot: every shard flushes
/// its events at least every second (consumer::FLUSH_EVERY), so by then the
/// triggering wakeup's events are in the ring, with some of what followed.
const TRIGGER_SETTLE: Duration = Duration::from_secs(2);
/// How often the recording's totals are sampled: a snapshot's stats are
/// what was counted since the last sample before its oldest chunk.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// A chunk holds events decoded up to a flush period before it arrived
/// (consumer::FLUSH_EVERY, 1 s); a sample this long before the oldest
/// chunk counts nothing the snapshot holds.
const SAMPLE_MARGIN_NS: u64 = 3_000_000_000;

/// One task's last wakeup and last time on a CPU, shared by the shards: a
/// waking and the switch that ends it may be decoded by different
/// consumers, in either order. Lock-free: relaxed atomics, a slot per pid
/// hash; a collision or a torn read can at worst misjudge one wakeup.
#[derive(Default)]
struct Slot {
    pid: AtomicI32,
    waking_ns: AtomicU64,
    ran_ns: AtomicU64,
}

const SLOTS: usize = 1 << 16;

/// The latency trigger, detected in the consumers as events are decoded.
pub struct LatencyWatch {
    threshold_ns: u64,
    pid: Option<i32>,
    comm: Option<Vec<u8>>,
    slots: Box<[Slot]>,
    /// Triggers before this time are ignored (the debounce window).
    quiet_until_ns: AtomicU64,
    debounce_ns: u64,
    fired: Mutex<Option<Fired>>,
}

impl LatencyWatch {
    fn new(spec: TriggerSpec, trigger: &LatencyTrigger, debounce: Duration) -> Self {
        LatencyWatch {
            threshold_ns: spec.latency.as_nanos() as u64,
            pid: trigger.pid,
            comm: trigger.comm.as_ref().map(|c| c.as_bytes().to_vec()),
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            quiet_until_ns: AtomicU64::new(0),
            debounce_ns: debounce.as_nanos() as u64,
            fired: Mutex::new(None),
        }
    }

    fn slot(&self, pid: i32) -> &Slot {
        let slot = &self.slots[pid as u32 as usize & (SLOTS - 1)];
        if slot.pid.load(Ordering::Relaxed) != pid {
            slot.pid.store(pid, Ordering::Relaxed);
            slot.waking_ns.store(0, Ordering::Relaxed);
            slot.ran_ns.store(0, Ordering::Relaxed);
        }
        slot
    }

    fn waking(&self, pid: i32, ts: u64) {
        self.slot(pid).waking_ns.fetch_max(ts, Ordering::Relaxed);
    }

    /// A task left its CPU: a waking before this did not make it wait.
    fn switched_out(&self, pid: i32, ts: u64) {
        self.slot(pid).ran_ns.fetch_max(ts, Ordering::Relaxed);
    }

    /// A task got a CPU; true when its wait fired the trigger.
    fn switched_in(&self, pid: i32, ts: u64, matches: bool) -> bool {
        let slot = self.slot(pid);
        let waking = slot.waking_ns.load(Ordering::Relaxed);
        let ran = slot.ran_ns.fetch_max(ts, Ordering::Relaxed);
        // A waking not after its last run was for a task already running,
        // or is older than a switch another shard decoded first.
        if !matches || waking == 0 || waking <= ran || waking > ts {
            return false;
        }
        let latency_ns = ts - waking;
        if latency_ns <= self.threshold_ns {
            return false;
        }
        let quiet = self.quiet_until_ns.load(Ordering::Relaxed);
        if ts < quiet
            || self
                .quiet_until_ns
                .compare_exchange(
                    quiet,
                    ts + self.debounce_ns,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return false;
        }
        *self.fired.lock().unwrap_or_else(|e| e.into_inner()) = Some(Fired {
            pid,
            latency_ns,
            ts,
        });
        true
    }

    fn take_fired(&self) -> Option<Fired> {
        self.fired.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A shard's encoder with the latency trigger watching its events.
pub struct Watched {
    encoder: ShardEncoder,
    watch: Option<Arc<LatencyWatch>>,
    /// With a --trigger-comm: the tasks of this shard that have that name.
    named: FxHashSet<TaskId>,
}

impl Watched {
    pub fn new(encoder: ShardEncoder, watch: Option<Arc<LatencyWatch>>) -> Watched {
        Watched {
            encoder,
            watch,
            named: FxHashSet::default(),
        }
    }

    pub fn into_inner(self) -> ShardEncoder {
        self.encoder
    }
}

impl EventSink for Watched {
    fn push(&mut self, h: &Header, ev: &Event<'_>) -> anyhow::Result<()> {
        self.encoder.push(h, ev)?;
        let Watched {
            encoder,
            watch,
            named,
        } = self;
        let Some(watch) = watch.as_deref() else {
            return Ok(());
        };
        let fired = match *ev {
            Event::Waking { pid, .. } => {
                watch.waking(pid, h.ts);
                false
            }
            Event::Switch {
                prev_pid,
                next,
                next_pid,
                ..
            } => {
                watch.switched_out(prev_pid, h.ts);
                let matches = next_pid != 0
                    && watch.pid.is_none_or(|p| p == next_pid)
                    && (watch.comm.is_none() || named.contains(&next));
                watch.switched_in(next_pid, h.ts, matches)
            }
            Event::TaskInfo { task, comm, .. }
            | Event::Exec { task, comm, .. }
            | Event::Rename {
                task,
                newcomm: comm,
                ..
            } => {
                if let Some(wanted) = &watch.comm {
                    // Keeps `named` up to date with the task's name.
                    // The kernel's comm may hold garbage after its NUL.
                    if comm_str(comm) == wanted.as_slice() {
                        named.insert(task);
                    } else {
                        named.remove(&task);
                    }
                }
                false
            }
            Event::Free { task, .. } | Event::Forget { task } => {
                named.remove(&task);
                false
            }
            _ => false,
        };
        if fired {
            // Into the ring now: the snapshot must hold this switch.
            encoder.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.encoder.flush()
    }
}

/// Why a snapshot is written.
enum Reason {
    Signal,
    Control,
    Trigger(Fired),
}

/// The flight recorder of one `schedlens trace --flight` run.
pub struct Flight {
    dir: PathBuf,
    writer: Arc<TraceWriter>,
    window: Duration,
    watch: Option<Arc<LatencyWatch>>,
    usr1: Arc<AtomicBool>,
    /// Requests from stdin (--flight-control), answered on stdout.
    control: Option<Receiver<()>>,
    /// A trigger fired; its snapshot is due at this instant.
    pending: Option<(Instant, Fired)>,
    machine: Option<(Topology, Vec<Vec<u32>>)>,
    /// Owner for snapshots under sudo.
    owner: Option<(u32, u32)>,
    written: u64,
    /// The recording's totals, every SAMPLE_EVERY, back to the last one
    /// before the window: the base a snapshot's own counts start from.
    samples: VecDeque<RecordingStats>,
}

/// The recording's totals now (events, drops, ring fill), from the recorder.
pub type Totals<'a> = &'a mut dyn FnMut() -> anyhow::Result<RecordingStats>;

impl Flight {
    /// Checks the flags, makes DIR (mode 0700 when new) and sets up the ring,
    /// the signal and the trigger.
    pub fn new(
        args: &TraceArgs,
        window: Duration,
        owner: Option<(u32, u32)>,
    ) -> anyhow::Result<Flight> {
        use std::os::unix::fs::DirBuilderExt as _;
        let dir = args.output.clone().unwrap_or_else(|| PathBuf::from("."));
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!(
                "--flight writes its snapshots into a directory: {} is not one",
                dir.display()
            ),
            Err(_) => std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .with_context(|| {
                    format!("cannot create the snapshot directory {}", dir.display())
                })?,
        }
        let ring_bytes = args.max_bytes.unwrap_or(DEFAULT_RING_BYTES);
        let ring = FlightRing::new(window.as_nanos() as u64, ring_bytes);
        let writer = Arc::new(TraceWriter::flight(&dir, ring));
        let usr1 = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&usr1))
            .context("installing the SIGUSR1 handler")?;
        let watch = args.trigger.spec.map(|spec| {
            Arc::new(LatencyWatch::new(
                spec,
                &args.trigger,
                args.trigger_debounce.unwrap_or(window),
            ))
        });
        let control = args.flight_control.then(read_control_requests);
        Ok(Flight {
            dir,
            writer,
            window,
            watch,
            usr1,
            control,
            pending: None,
            machine: None,
            owner,
            written: 0,
            samples: VecDeque::new(),
        })
    }

    pub fn writer(&self) -> &Arc<TraceWriter> {
        &self.writer
    }

    pub fn watch(&self) -> Option<Arc<LatencyWatch>> {
        self.watch.clone()
    }

    /// What each snapshot starts with: the machine and its shards.
    pub fn set_machine(&mut self, topology: Topology, shard_cpus: Vec<Vec<u32>>) {
        self.machine = Some((topology, shard_cpus));
    }

    /// Runs on every turn of the main loop: samples the totals and writes
    /// the snapshots asked for. A failed snapshot is reported and the
    /// recording goes on.
    pub fn tick(&mut self, totals: Totals<'_>) {
        self.sample(&mut *totals);
        if self.usr1.swap(false, Ordering::Relaxed) {
            self.snapshot(Reason::Signal, &mut *totals);
        }
        if let Some(fired) = self.watch.as_ref().and_then(|w| w.take_fired()) {
            eprintln!(
                "trigger: pid {} waited {:.3} ms to run; snapshot in {}s",
                fired.pid,
                fired.latency_ns as f64 / 1e6,
                TRIGGER_SETTLE.as_secs()
            );
            self.pending
                .get_or_insert((Instant::now() + TRIGGER_SETTLE, fired));
        }
        if let Some((due, fired)) = self.pending {
            if Instant::now() >= due {
                self.pending = None;
                self.snapshot(Reason::Trigger(fired), &mut *totals);
            }
        }
        let asked = self
            .control
            .as_ref()
            .is_some_and(|rx| rx.try_recv().is_ok());
        if asked {
            self.snapshot(Reason::Control, totals);
        }
    }

    fn sample(&mut self, totals: Totals<'_>) {
        let now = snapshot::boottime_ns();
        let due = self
            .samples
            .back()
            .is_none_or(|s| now >= s.end_ts + SAMPLE_EVERY.as_nanos() as u64);
        if !due {
            return;
        }
        match totals() {
            Ok(s) => self.samples.push_back(s),
            Err(e) => eprintln!("flight recorder: cannot read the recorder's totals: {e:#}"),
        }
        // The service's progress: what a snapshot would hold now.
        if self.control.is_some() {
            let held = self.writer.ring_stats().unwrap_or_default().bytes;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", serde_json::json!({ "ring_bytes": held }))
                .and_then(|()| out.flush());
        }
        // Keeps one sample older than any window a snapshot can start at.
        let oldest = now.saturating_sub(self.window.as_nanos() as u64 + SAMPLE_MARGIN_NS);
        while self.samples.get(1).is_some_and(|s| s.end_ts <= oldest) {
            self.samples.pop_front();
        }
    }

    /// The stats of a snapshot whose oldest chunk arrived at `oldest_ns`:
    /// what the recorder counted since the last sample before that chunk
    /// (since the start when there is none), up to now.
    fn window_stats(&self, now: RecordingStats, oldest_ns: u64) -> RecordingStats {
        let base = self
            .samples
            .iter()
            .rev()
            .find(|s| s.end_ts + SAMPLE_MARGIN_NS <= oldest_ns);
        match base {
            Some(base) => now.since(base),
            None => now,
        }
    }

    fn snapshot(&mut self, reason: Reason, totals: Totals<'_>) {
        let result = self.write_snapshot(&reason, totals);
        let reply = match &result {
            Ok((path, bytes)) => {
                let why = match &reason {
                    Reason::Signal => "SIGUSR1".to_string(),
                    Reason::Control => "requested".to_string(),
                    Reason::Trigger(f) => format!(
                        "trigger: pid {} waited {:.3} ms",
                        f.pid,
                        f.latency_ns as f64 / 1e6
                    ),
                };
                eprintln!(
                    "snapshot ({why}): {} ({:.2} MB)",
                    path.display(),
                    *bytes as f64 / 1e6
                );
                serde_json::json!({ "snapshot": path, "bytes": bytes })
            }
            Err(e) => {
                eprintln!("snapshot failed: {e:#}");
                serde_json::json!({ "error": format!("{e:#}") })
            }
        };
        // Under --flight-control the service hears of every snapshot it did
        // not ask for too (to share it and hand it over), tagged "trigger".
        let line = match (&reason, reply) {
            (Reason::Control, reply) => Some(reply),
            (Reason::Trigger(fired), serde_json::Value::Object(mut reply))
                if self.control.is_some() =>
            {
                reply.insert("trigger".into(), serde_json::json!(fired));
                Some(serde_json::Value::Object(reply))
            }
            _ => None,
        };
        if let Some(line) = line {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        }
    }

    /// Writes the ring as a new trace in DIR; returns its path and size.
    fn write_snapshot(
        &mut self,
        reason: &Reason,
        totals: Totals<'_>,
    ) -> anyhow::Result<(PathBuf, u64)> {
        use std::os::unix::fs::PermissionsExt as _;
        let (topology, shards) = self
            .machine
            .as_ref()
            .context("the recording has not started")?;
        let (chunks, ring) = self.writer.ring_chunks().context("not a flight recorder")?;
        let mut head = Vec::new();
        encode(&mut head, &snapshot::machine_packets(topology, shards)?)?;
        let mut tail = Vec::new();
        encode(&mut tail, &[snapshot::process_tree_packet()?])?;
        // Ends like a full recording: per-CPU drops and the recorder's
        // counts, here those of the snapshot's window.
        let mut stats = self.window_stats(totals()?, ring.oldest_ns);
        stats.bytes_written = (head.len() + tail.len()) as u64 + ring.bytes;
        encode(&mut tail, &snapshot::epilogue_packets(&stats))?;
        self.written += 1;
        let kind = if matches!(reason, Reason::Trigger(_)) {
            "trigger"
        } else {
            "snapshot"
        };
        let name = format!("flight-{}-{kind}-{}.pftrace", utc_stamp(), self.written);
        let path = self.dir.join(name);
        let mut file = tempfile::Builder::new()
            .prefix(".flight-")
            .suffix(".partial")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(&self.dir)
            .with_context(|| format!("cannot create a snapshot in {}", self.dir.display()))?;
        let mut size = 0u64;
        for part in std::iter::once(&head[..])
            .chain(chunks.iter().map(|c| &c[..]))
            .chain(std::iter::once(&tail[..]))
        {
            file.write_all(part)
                .with_context(|| format!("writing a snapshot in {}", self.dir.display()))?;
            size += part.len() as u64;
        }
        file.as_file()
            .sync_all()
            .with_context(|| format!("syncing a snapshot in {}", self.dir.display()))?;
        if let Some((uid, gid)) = self.owner {
            let _ = std::os::unix::fs::fchown(file.as_file(), Some(uid), Some(gid));
        }
        // Never replaces a file at that name (nor follows a link planted there).
        file.persist_noclobber(&path)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot create the snapshot {}", path.display()))?;
        Ok((path, size))
    }

    /// The closing line of the summary.
    pub fn print_summary(&self) {
        let s = self.writer.ring_stats().unwrap_or_default();
        eprintln!(
            "  flight ring: last {}s, held at most {} bytes of {} bytes appended, {} chunks \
             dropped; {} snapshots in {}",
            self.window.as_secs_f64(),
            s.peak_bytes,
            s.appended_bytes,
            s.evicted_chunks,
            self.written,
            self.dir.display()
        );
    }
}

fn encode(
    out: &mut Vec<u8>,
    packets: &[crate::perfetto::proto::TracePacket],
) -> anyhow::Result<()> {
    use crate::perfetto::proto::fields::trace;
    use prost::Message as _;
    for p in packets {
        crate::perfetto::wire::put_tag(out, trace::PACKET, crate::perfetto::wire::WIRE_LEN);
        p.encode_length_delimited(out)
            .context("encoding a trace packet")?;
    }
    Ok(())
}

/// 20261105T143012Z: sorts and is a valid file name.
fn utc_stamp() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect()
}

/// `--flight-control`: each line on stdin asks for a snapshot; the reply is
/// one JSON line on stdout, among the lines of trigger snapshots and, every
/// second, the ring's size. EOF ends the requests, not the recording.
fn read_control_requests() -> Receiver<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if line.is_err() || tx.send(()).is_err() {
                break;
            }
        }
    });
    rx
}

/// Checks the flight flags that need no recorder.
pub fn check_args(args: &TraceArgs) -> anyhow::Result<()> {
    let flight = args.flight.is_some();
    if flight && args.compress != crate::perfetto::writer::Compression::Zstd {
        bail!("--flight keeps zstd chunks: drop --compress");
    }
    for (given, flag) in [
        (args.trigger.spec.is_some(), "--trigger"),
        (args.flight_control, "--flight-control"),
    ] {
        if given && !flight {
            bail!("{flag} needs --flight");
        }
    }
    if let Some((flag, _)) = args.trigger.orphan_filter() {
        bail!("{flag} needs --trigger");
    }
    if args.trigger_debounce.is_some() && args.trigger.spec.is_none() {
        bail!("--trigger-debounce needs --trigger");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(threshold_ms: u64) -> LatencyWatch {
        LatencyWatch::new(
            TriggerSpec {
                latency: Duration::from_millis(threshold_ms),
            },
            &LatencyTrigger::default(),
            Duration::from_secs(10),
        )
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn fires_on_a_long_wakeup_once_per_window() {
        let w = watch(5);
        w.waking(42, 100 * MS);
        assert!(!w.switched_in(42, 103 * MS, true), "3 ms is under 5 ms");
        w.switched_out(42, 104 * MS);
        w.waking(42, 110 * MS);
        assert!(w.switched_in(42, 120 * MS, true));
        assert_eq!(
            w.take_fired(),
            Some(Fired {
                pid: 42,
                latency_ns: 10 * MS,
                ts: 120 * MS
            })
        );
        // Inside the debounce window: no second trigger.
        w.switched_out(42, 121 * MS);
        w.waking(42, 130 * MS);
        assert!(!w.switched_in(42, 140 * MS, true));
        // After it, again.
        w.switched_out(42, 141 * MS);
        w.waking(42, 20_000 * MS);
        assert!(w.switched_in(42, 20_010 * MS, true));
    }

    #[test]
    fn ignores_what_is_not_a_wait() {
        let w = watch(5);
        // Preempted, back 50 ms later: no waking since it last ran.
        w.waking(7, 100 * MS);
        w.switched_in(7, 101 * MS, true);
        w.switched_out(7, 102 * MS);
        assert!(!w.switched_in(7, 152 * MS, true));
        // Woken while running (a waking before its switch out).
        w.waking(7, 160 * MS);
        w.switched_out(7, 161 * MS);
        assert!(!w.switched_in(7, 200 * MS, true));
        // A waking another shard decoded after this switch.
        assert!(!w.switched_in(8, 300 * MS, true));
        w.waking(8, 250 * MS);
        assert!(!w.switched_in(8, 400 * MS, true));
        // Filtered out.
        w.waking(9, 500 * MS);
        assert!(!w.switched_in(9, 600 * MS, false));
    }
}
