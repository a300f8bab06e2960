//! The `schedlens trace` run: checks, load, record, stop, drain, summary.

use crate::model::event::{Event, Header};
use crate::perfetto::writer::{Compression, EncoderStats, ShardEncoder, TraceWriter};
use crate::recorder::abi::{self, N_TYPES};
use crate::recorder::bpf::{self, Recorder, SwitchVariant};
use crate::recorder::consumer::{self, ShardCounters};
use crate::recorder::topology::Topology;
use crate::recorder::{TraceArgs, cli, snapshot};
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::mem::MaybeUninit;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Recording length without -d and without a command.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// How often the main thread checks for the end (signal, command, duration).
const TICK: Duration = Duration::from_millis(20);
/// How often the live line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// After detaching, handlers already running may still submit records; wait
/// this long before the consumers' final drain so those are not lost.
const DETACH_GRACE: Duration = Duration::from_millis(20);

/// Why the recording ended.
enum End {
    Duration,
    Signal,
    Command(ExitStatus),
    /// A consumer thread stopped early (its error is reported after the drain).
    ConsumerFailed,
}

pub fn record(args: TraceArgs) -> anyhow::Result<()> {
    // A Ctrl-C from here on stops the recording cleanly instead of killing us.
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&interrupted))
            .context("installing the signal handlers")?;
    }
    cli::check_privileges()?;
    cli::check_btf()?;
    // Under sudo: the user who asked for the recording.
    let sudo_user = cli::sudo_ids()?;

    let output = args.output.clone().unwrap_or_else(cli::default_output);
    let writer = Arc::new(
        TraceWriter::create(&output, args.compress).with_context(|| {
            format!(
                "cannot create the trace file {}: choose a writable path with -o",
                output.display()
            )
        })?,
    );
    if let Some((uid, gid)) = sudo_user {
        // So that user can analyze the trace without root. Right after
        // creating it, so even a recording that dies early is theirs; the
        // mode stays 0600. Not fatal: the recording itself is still wanted.
        if let Err(e) = std::os::unix::fs::chown(&output, Some(uid), Some(gid)) {
            eprintln!(
                "warning: could not give {} to uid {uid} (SUDO_UID): {e}; it stays root's",
                output.display()
            );
        }
    }

    let topology = Topology::read().context("reading the CPU topology from /sys")?;
    let ncpus = libbpf_rs::num_possible_cpus().context("counting the possible CPUs")?;
    let (cpu_shard, nr_shards) = bpf::plan_shards(&topology.llc_groups(), ncpus, args.shards);
    let cfg = bpf::Config {
        cpu_shard,
        nr_shards,
        ring_size: args.ring_size,
        filter: bpf::Filter {
            pids: args.pids.clone(),
            tgids: args.tgids.clone(),
            comms: args.comms.clone(),
        },
        switch: if args.legacy_switch {
            SwitchVariant::Legacy
        } else {
            SwitchVariant::detect()?
        },
    };
    let mut object = MaybeUninit::uninit();
    let loaded = Recorder::load(&mut object, &cfg).and_then(|mut r| r.attach().map(|()| r));
    let mut recorder = match loaded {
        Ok(r) => r,
        Err(e) => {
            // Nothing was recorded: do not leave an empty trace behind.
            let _ = std::fs::remove_file(&output);
            return Err(e);
        }
    };
    let start_ts = snapshot::boottime_ns();
    let started = Instant::now();

    let mut shard_cpus = vec![Vec::new(); nr_shards];
    for (cpu, &shard) in cfg.cpu_shard.iter().enumerate() {
        shard_cpus[usize::from(shard)].push(cpu as u32);
    }
    writer.write_packets(&snapshot::machine_packets(&topology, &shard_cpus)?)?;
    let stop = Arc::new(AtomicBool::new(false));
    let counters: Vec<Arc<ShardCounters>> = (0..nr_shards).map(|_| Arc::default()).collect();
    let mut consumers = Vec::with_capacity(nr_shards);
    for (shard, ring) in recorder.take_rings().into_iter().enumerate() {
        let w = Arc::clone(&writer);
        consumers.push(consumer::spawn(
            shard,
            ring,
            move || ShardEncoder::new(w),
            Arc::clone(&stop),
            Arc::clone(&counters[shard]),
        )?);
    }
    // After attach, so every task is either in the tree or born in the trace.
    writer.write_packets(&[snapshot::process_tree_packet()?])?;

    let mut child = None;
    let mut spawn_error = None;
    if let Some((program, rest)) = args.command.split_first() {
        let mut cmd = Command::new(program);
        cmd.args(rest);
        if let Some((uid, gid)) = sudo_user {
            cmd.uid(uid).gid(gid);
        }
        match cmd.spawn() {
            Ok(c) => child = Some(c),
            Err(e) => {
                spawn_error = Some(anyhow::anyhow!(
                    "could not run {}: {e}",
                    program.to_string_lossy()
                ))
            }
        }
    }
    let limit = args
        .duration
        .or((child.is_none() && spawn_error.is_none()).then_some(DEFAULT_DURATION))
        .unwrap_or(Duration::ZERO);

    let progress = Progress::new();
    let end = if spawn_error.is_some() {
        End::Signal
    } else {
        wait_for_end(
            &interrupted,
            child.as_mut(),
            started,
            limit,
            &progress,
            &recorder,
            &counters,
            &consumers,
            &writer,
            ncpus,
        )?
    };

    recorder.detach();
    std::thread::sleep(DETACH_GRACE);
    let end_ts = snapshot::boottime_ns();
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Release);
    let mut consumer_error = None;
    let mut encoders = Vec::with_capacity(nr_shards);
    for c in consumers {
        match c.join() {
            Ok(Ok(encoder)) => encoders.push(Some(encoder)),
            Ok(Err(e)) => {
                consumer_error.get_or_insert(e);
                encoders.push(None);
            }
            Err(_) => {
                consumer_error.get_or_insert(anyhow::anyhow!("a consumer thread panicked"));
                encoders.push(None);
            }
        }
    }
    if let Some(e) = consumer_error {
        progress.finish();
        return Err(write_failed(e, &writer, &output, args.compress));
    }
    let lost = recorder.lost_per_cpu(ncpus);
    report_pending_lost(&mut encoders, &cfg.cpu_shard, &lost, end_ts)?;
    let mut written = EncoderStats::default();
    for encoder in encoders.iter().flatten() {
        written.merge(encoder.stats());
    }
    progress.finish();

    let mut by_type = [0u64; N_TYPES];
    let mut malformed = 0;
    let ring_fill: Vec<(u64, u64)> = counters
        .iter()
        .map(|c| {
            (
                c.ring_bytes.load(Ordering::Relaxed),
                c.ring_peak_bytes.load(Ordering::Relaxed),
            )
        })
        .collect();
    for c in &counters {
        for (sum, n) in by_type.iter_mut().zip(&c.by_type) {
            *sum += n.load(Ordering::Relaxed);
        }
        malformed += c.malformed.load(Ordering::Relaxed);
    }
    let stats = snapshot::RecordingStats {
        start_ts,
        end_ts,
        events: abi::RECORDS
            .iter()
            .filter_map(|r| Some((r.event?.to_string(), by_type[abi::type_index(r.ty)])))
            .collect(),
        lost_per_cpu: lost.clone(),
        bytes_written: writer.bytes_written(),
        argv: std::env::args().collect(),
        ring_fill,
    };
    writer.write_packets(&snapshot::epilogue_packets(&stats))?;
    let size = writer
        .finish()
        .with_context(|| format!("finishing {}", output.display()))?;
    print_summary(
        elapsed,
        &by_type,
        malformed,
        written.unknown_tasks,
        &stats,
        size,
        &output,
    );

    if let Some(e) = spawn_error {
        return Err(e);
    }
    match end {
        End::ConsumerFailed => bail!("a consumer thread stopped without an error"),
        End::Command(status) if !status.success() => bail!(
            "the command {} (the trace in {} is complete)",
            describe_status(status),
            output.display()
        ),
        _ => Ok(()),
    }
}

/// Ends a recording whose events could not all be written (a full disk, an
/// I/O error): nothing more goes into the file, and a chunk the failed write
/// left half-written is cut off, so the file ends on its last complete chunk
/// and decodes up to there. Returns the one-line error to show.
fn write_failed(
    e: anyhow::Error,
    writer: &TraceWriter,
    output: &std::path::Path,
    compression: Compression,
) -> anyhow::Error {
    // Closing can fail the same way; the error that stopped us is the one to show.
    let _ = writer.finish();
    let kept = writer.bytes_written();
    // bytes_written counts only completed appends, which all precede the
    // failed one. A whole-file gzip stream cannot be cut at a chunk boundary;
    // gzip readers stop at its end anyway.
    if compression != Compression::Gzip {
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .open(output)
            .and_then(|f| f.set_len(kept));
    }
    let full = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::StorageFull)
    });
    let what = if full {
        "the disk is full; free space or record elsewhere with -o"
    } else {
        "writing events failed"
    };
    e.context(format!(
        "recording stopped, {} ends early at its last complete chunk ({:.2} MB): {what}",
        output.display(),
        kept as f64 / 1e6
    ))
}

/// Writes the drops no Lost record reported: BPF reports a CPU's failed
/// reservations only before that CPU's next record, so those after its last
/// record (or whose Lost record itself did not fit) are still pending when the
/// programs are detached. Without this the trace's LostEvents would add up to
/// less than the summary and the epilogue.
fn report_pending_lost(
    encoders: &mut [Option<ShardEncoder>],
    cpu_shard: &[u8],
    lost: &[u64],
    end_ts: u64,
) -> anyhow::Result<()> {
    for (cpu, (&total, &shard)) in lost.iter().zip(cpu_shard).enumerate() {
        let Some(encoder) = encoders
            .get_mut(usize::from(shard))
            .and_then(Option::as_mut)
        else {
            continue;
        };
        let reported = encoder.stats().lost_per_cpu.get(cpu).copied().unwrap_or(0);
        let pending = total.saturating_sub(reported);
        if pending > 0 {
            let h = Header {
                ts: end_ts,
                cpu: cpu as u32,
                pid: 0,
            };
            encoder.push(&h, &Event::Lost { count: pending })?;
        }
    }
    for encoder in encoders.iter_mut().flatten() {
        encoder.flush()?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn wait_for_end(
    interrupted: &AtomicBool,
    mut child: Option<&mut Child>,
    started: Instant,
    limit: Duration,
    progress: &Progress,
    recorder: &Recorder<'_>,
    counters: &[Arc<ShardCounters>],
    consumers: &[JoinHandle<anyhow::Result<ShardEncoder>>],
    writer: &TraceWriter,
    ncpus: usize,
) -> anyhow::Result<End> {
    let mut last_draw = Instant::now();
    let mut last_events = 0;
    loop {
        if interrupted.load(Ordering::Relaxed) {
            return Ok(End::Signal);
        }
        // A consumer only returns early on an error; its ring would fill up.
        if consumers.iter().any(|c| c.is_finished()) {
            return Ok(End::ConsumerFailed);
        }
        if let Some(c) = child.as_deref_mut() {
            if let Some(status) = c.try_wait().context("waiting for the command")? {
                return Ok(End::Command(status));
            }
        }
        let elapsed = started.elapsed();
        if !limit.is_zero() && elapsed >= limit {
            return Ok(End::Duration);
        }
        if progress.visible() && last_draw.elapsed() >= PROGRESS_EVERY {
            let events: u64 = counters.iter().map(|c| c.total()).sum();
            let lost: u64 = recorder.lost_per_cpu(ncpus).iter().sum();
            let rate = (events - last_events) as f64 / last_draw.elapsed().as_secs_f64();
            progress.draw(elapsed, rate, lost, writer.bytes_written());
            last_events = events;
            last_draw = Instant::now();
        }
        let sleep = if limit.is_zero() {
            TICK
        } else {
            TICK.min(limit.saturating_sub(elapsed))
        };
        std::thread::sleep(sleep);
    }
}

fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "failed".into(),
    }
}

/// The live line on stderr (only on a terminal).
struct Progress(Option<ProgressBar>);

impl Progress {
    fn new() -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        Progress(Some(bar))
    }

    fn visible(&self) -> bool {
        self.0.is_some()
    }

    fn draw(&self, elapsed: Duration, rate: f64, lost: u64, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.set_message(format!(
                "recording {:.1}s  {:.0} events/s  {lost} dropped  {:.1} MB written  (Ctrl-C stops)",
                elapsed.as_secs_f64(),
                rate,
                bytes as f64 / 1e6
            ));
            bar.tick();
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// A ring's peak fill (size, peak bytes) in percent.
fn fill_pct((size, peak): (u64, u64)) -> f64 {
    peak as f64 * 100.0 / size.max(1) as f64
}

fn print_summary(
    elapsed: Duration,
    by_type: &[u64; N_TYPES],
    malformed: u64,
    unknown_tasks: u64,
    stats: &snapshot::RecordingStats,
    size: u64,
    output: &std::path::Path,
) {
    let total: u64 = by_type.iter().sum();
    eprintln!(
        "recorded {:.1}s: {total} events ({:.0}/s)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    let parts: Vec<String> = abi::RECORDS
        .iter()
        .map(|r| (r.label, by_type[abi::type_index(r.ty)]))
        .filter(|&(_, n)| n > 0)
        .map(|(label, n)| format!("{label} {n}"))
        .collect();
    eprintln!("  events: {}", parts.join(", "));
    let (lost, ring_fill) = (&stats.lost_per_cpu, &stats.ring_fill);
    let dropped: u64 = lost.iter().sum();
    if dropped == 0 {
        eprintln!("  drops: 0 dropped");
    } else {
        let per_cpu: Vec<String> = lost
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(cpu, n)| format!("cpu{cpu} {n}"))
            .collect();
        eprintln!(
            "  drops: {dropped} dropped ({}); a larger --ring-size or more --shards helps",
            per_cpu.join(", ")
        );
    }
    if let Some(&(size, peak)) = ring_fill
        .iter()
        .max_by(|a, b| fill_pct(**a).total_cmp(&fill_pct(**b)))
    {
        eprintln!(
            "  ring buffers: peak fill {:.0}% of {} MiB (events drop at 100%)",
            fill_pct((size, peak)),
            size >> 20
        );
    }
    if malformed > 0 {
        eprintln!("  malformed records skipped: {malformed}");
    }
    if unknown_tasks > 0 {
        eprintln!(
            "  events naming a task never announced (written without a name): {unknown_tasks}"
        );
    }
    eprintln!(
        "  wrote {:.2} MB ({:.1} bytes/event) to {}",
        size as f64 / 1e6,
        size as f64 / total.max(1) as f64,
        output.display()
    );
}
