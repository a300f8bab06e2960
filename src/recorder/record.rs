//! The `schedlens trace` run: checks, load, record, stop, drain, summary.

use crate::model::event::{Event, Header};
use crate::model::ksyms::{KernelSymbols, SchedText};
use crate::perfetto::writer::{Compression, EncoderStats, ShardEncoder, TraceWriter};
use crate::recorder::abi::{self, N_TYPES};
use crate::recorder::bpf::{self, Recorder, SwitchVariant};
use crate::recorder::consumer::{self, ShardCounters};
use crate::recorder::flight::{self, Flight, Watched};
use crate::recorder::spool::{Spool, Spooled};
use crate::recorder::stacks::{UserStacks, WithUserStacks};
use crate::recorder::topology::Topology;
use crate::recorder::{TraceArgs, catalog, cli, snapshot, stacks};
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::ffi::OsString;
use std::io::IsTerminal;
use std::mem::MaybeUninit;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Distinct stacks the BPF stack map holds with --stacks (each 127 frames of
/// 8 bytes: 16 MiB). More distinct stacks are counted as lost.
const STACK_MAP_ENTRIES: u32 = 16 * 1024;
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
    /// The trace reached --max-bytes.
    MaxBytes,
    /// A consumer thread stopped early (its error is reported after the drain).
    ConsumerFailed,
}

/// Records; the exit code is the command's when one was run.
pub fn record(args: TraceArgs) -> anyhow::Result<ExitCode> {
    if args.list_events {
        print!("{}", catalog::list_events()?);
        return Ok(ExitCode::SUCCESS);
    }
    let interrupted = catch_stop_signals()?;
    cli::check_privileges()?;
    cli::check_btf()?;
    if !args.wait_for_task {
        cli::check_filter_matches(
            Path::new("/proc"),
            &args.pids,
            &args.tgids,
            &args.comms,
            !args.command.is_empty(),
        )?;
    }
    // Under sudo: the user who asked for the recording.
    let sudo_user = cli::sudo_ids()?;
    let mut flight = match args.flight {
        Some(window) => Some(Flight::new(&args, window, sudo_user)?),
        None => None,
    };
    let (output, writer) = match &flight {
        Some(f) => (
            args.output.clone().unwrap_or_default(),
            Arc::clone(f.writer()),
        ),
        None => create_output(&args, sudo_user)?,
    };

    let topology = Topology::read().context("reading the CPU topology from /sys")?;
    let ncpus = libbpf_rs::num_possible_cpus().context("counting the possible CPUs")?;
    let mut cfg = bpf_config(&args, &topology, ncpus)?;
    catalog::check_supported(&cfg.groups)?;
    let ksyms = kernel_symbols(&cfg.groups)?;
    if let Some(table) = &ksyms {
        cfg.sched_text = table.sched_text();
    }
    if let Some(f) = &mut flight {
        f.set_machine(topology.clone(), shard_cpus(&cfg));
    }
    let mut object = MaybeUninit::uninit();
    let loaded = Recorder::load(&mut object, &cfg).and_then(|mut r| r.attach().map(|()| r));
    // On failure nothing was recorded: the unpublished trace goes with the
    // writer, and whatever was at the output path stays as it was.
    let mut recorder = loaded?;
    let start_ts = snapshot::boottime_ns();
    let started = Instant::now();
    let watch = flight.as_ref().and_then(Flight::watch);
    // With stacks, each shard spools its samples beside the trace.
    let spool_dir = (!cfg.stacks.is_empty()).then(|| spool_dir(&output, flight.is_some()));
    let spool = spool_dir.as_deref().map(|dir| (dir, args.stack_spool_run));
    let mut consumers =
        start_consumers(&mut recorder, &writer, &topology, &cfg, watch, ksyms, spool)?;

    let mut child = match spawn_command(&args.command, sudo_user) {
        Ok(child) => child,
        Err(e) => {
            // Nothing the user asked for ran: no trace to mistake for it.
            recorder.detach();
            let _ = consumers.join();
            let _ = writer.finish();
            let _ = std::fs::remove_file(&output);
            return Err(e);
        }
    };
    let limit = args
        .duration
        .or((child.is_none() && flight.is_none()).then_some(DEFAULT_DURATION))
        .unwrap_or(Duration::ZERO);
    let mut progress = Progress::new();
    // A flight recorder's bytes are its ring's; --max-bytes bounds that.
    let size_capped = flight.is_none();
    let end = wait_for_end(
        &interrupted,
        child.as_mut(),
        &consumers,
        started,
        limit,
        || {
            size_capped
                && args
                    .max_bytes
                    .is_some_and(|cap| writer.bytes_written() >= cap)
        },
        |elapsed| {
            if let Some(f) = &mut flight {
                f.tick(&mut || {
                    let now = snapshot::boottime_ns();
                    totals(&recorder, &consumers, ncpus, start_ts, now)
                });
            }
            progress.update(elapsed, || {
                let lost = recorder.lost_per_cpu(ncpus).iter().sum();
                (consumers.events(), lost, writer.bytes_written())
            })
        },
    )?;

    recorder.detach();
    std::thread::sleep(DETACH_GRACE);
    let end_ts = snapshot::boottime_ns();
    let elapsed = started.elapsed();
    let (mut encoders, user_stacks) = match consumers.join() {
        Ok(shards) => shards,
        Err(e) => {
            progress.finish();
            return Err(write_failed(e, &writer, &output, args.compress));
        }
    };
    let mut stats = totals(&recorder, &consumers, ncpus, start_ts, end_ts)?;
    let written = finish_encoders(&mut encoders, &cfg.cpu_shard, &stats.lost_per_cpu, end_ts)?;
    progress.finish();
    let stacks = if cfg.stacks.is_empty() {
        None
    } else {
        let spooled = encoders
            .iter_mut()
            .filter_map(ShardEncoder::take_stack_spool)
            .map(Spool::finish)
            .collect::<anyhow::Result<Vec<_>>>()
            .map(Spooled::join);
        let written = spooled.and_then(|spooled| {
            stacks::write(
                &writer,
                || spooled.samples(),
                recorder.stack_counters(ncpus),
                user_stacks,
                |id| recorder.stack_frames(id),
            )
        });
        match written {
            Ok(summary) => Some(summary),
            // The spool is read whole before any sample is written: the
            // trace keeps its events, just no stacks.
            Err(e) => {
                stats.bytes_written = writer.bytes_written();
                writer.write_packets(&snapshot::epilogue_packets(&stats))?;
                writer.finish()?;
                return Err(e.context(format!(
                    "{} is complete but without its stacks",
                    output.display()
                )));
            }
        }
    };

    let counts = consumers.counts();
    stats.stacks = stacks.as_ref().map(stacks::StackSummary::to_proto);
    stats.bytes_written = writer.bytes_written();
    writer.write_packets(&snapshot::epilogue_packets(&stats))?;
    let size = writer
        .finish()
        .with_context(|| format!("finishing {}", output.display()))?;
    let filtered = !(args.pids.is_empty() && args.tgids.is_empty() && args.comms.is_empty());
    print_summary(
        elapsed,
        &counts,
        written.unknown_tasks,
        &stats,
        flight.is_none().then_some((size, &output)),
        filtered,
    );
    if let Some(f) = &flight {
        f.print_summary();
    }
    if let Some(summary) = &stacks {
        print_stacks(summary);
    }

    outcome(end, &output)
}

/// The recording's totals from its start to `end_ts`: the epilogue's, and
/// (less an earlier sample) a flight snapshot's.
fn totals(
    recorder: &Recorder<'_>,
    consumers: &Consumers,
    ncpus: usize,
    start_ts: u64,
    end_ts: u64,
) -> anyhow::Result<snapshot::RecordingStats> {
    let counts = consumers.counts();
    Ok(snapshot::RecordingStats {
        start_ts,
        end_ts,
        events: abi::RECORDS
            .iter()
            .filter_map(|r| Some((r.event?.to_string(), counts.of(r.ty))))
            .collect(),
        lost_per_cpu: recorder.lost_per_cpu(ncpus),
        bytes_written: 0,
        argv: std::env::args().collect(),
        ring_fill: counts.ring_fill,
        recursion_misses: recorder.recursion_misses()?,
        stacks: None,
    })
}

/// From here on a Ctrl-C (or SIGTERM) stops the recording cleanly instead
/// of killing us: the returned flag is set.
fn catch_stop_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&interrupted))
            .context("installing the signal handlers")?;
    }
    Ok(interrupted)
}

/// Writes the machine description, starts the consumers, then snapshots
/// the processes (after attach, so every task is either in the tree or
/// born in the trace).
fn start_consumers(
    recorder: &mut Recorder<'_>,
    writer: &Arc<TraceWriter>,
    topology: &Topology,
    cfg: &bpf::Config,
    watch: Option<Arc<flight::LatencyWatch>>,
    ksyms: Option<Arc<KernelSymbols>>,
    spool: Option<(&Path, usize)>,
) -> anyhow::Result<Consumers> {
    // A flight recorder writes them at the start of each snapshot instead.
    if writer.ring_stats().is_none() {
        writer.write_packets(&snapshot::machine_packets(topology, &shard_cpus(cfg))?)?;
    }
    // Recording has begun: from here a killed recorder leaves the trace at its name.
    writer.publish()?;
    let consumers = Consumers::start(recorder, writer, watch, ksyms, spool)?;
    writer.write_packets(&[snapshot::process_tree_packet()?])?;
    Ok(consumers)
}

/// Where the stack spools go: the trace's directory (a flight recorder's
/// output is its directory), so they are on its filesystem.
fn spool_dir(output: &Path, flight: bool) -> PathBuf {
    let dir = if flight {
        Some(output)
    } else {
        output.parent()
    };
    match dir {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The kernel's symbols, if `groups` write kernel addresses the trace names.
fn kernel_symbols(groups: &[&str]) -> anyhow::Result<Option<Arc<KernelSymbols>>> {
    if !catalog::needs_kernel_symbols(groups) {
        return Ok(None);
    }
    let table = KernelSymbols::load().context("reading the kernel's symbols (/proc/kallsyms)")?;
    if table.is_empty() {
        eprintln!(
            "schedlens: /proc/kallsyms shows no addresses (kernel.kptr_restrict): kernel \
             functions in the trace stay unnamed"
        );
    }
    Ok(Some(Arc::new(table)))
}

/// The CPUs of each shard: `[shard] -> cpus`.
fn shard_cpus(cfg: &bpf::Config) -> Vec<Vec<u32>> {
    let mut shard_cpus = vec![Vec::new(); cfg.nr_shards];
    for (cpu, &shard) in cfg.cpu_shard.iter().enumerate() {
        shard_cpus[usize::from(shard)].push(cpu as u32);
    }
    shard_cpus
}

/// The exit status of `schedlens trace` for a recording that completed:
/// the command's, when it ended the recording, so scripts can still test it.
fn outcome(end: End, output: &Path) -> anyhow::Result<ExitCode> {
    match end {
        End::ConsumerFailed => bail!("a consumer thread stopped without an error"),
        End::MaxBytes => {
            eprintln!("  stopped early: the trace reached --max-bytes");
            Ok(ExitCode::SUCCESS)
        }
        End::Command(status) if !status.success() => {
            eprintln!(
                "the command {} (the trace in {} is complete)",
                describe_status(status),
                output.display()
            );
            Ok(ExitCode::from(exit_code(status)))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// A child's status as a shell reports it: its exit code, or 128 + the
/// signal that killed it.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => 128u8.saturating_add(sig as u8),
        _ => 1,
    }
}

/// Creates the trace file (before anything is loaded, so a bad -o fails
/// first) and, under sudo, gives it to the user who asked.
fn create_output(
    args: &TraceArgs,
    sudo_user: Option<(u32, u32)>,
) -> anyhow::Result<(PathBuf, Arc<TraceWriter>)> {
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
        if let Err(e) = writer.chown(uid, gid) {
            eprintln!(
                "warning: could not give {} to uid {uid} (SUDO_UID): {e}; it stays root's",
                output.display()
            );
        }
    }
    Ok((output, writer))
}

/// What the BPF programs are loaded with: shards, ring size, filter, and
/// the sched_switch program this kernel needs.
fn bpf_config(args: &TraceArgs, topology: &Topology, ncpus: usize) -> anyhow::Result<bpf::Config> {
    let (cpu_shard, nr_shards) = bpf::plan_shards(&topology.llc_groups(), ncpus, args.shards);
    let groups = match &args.events {
        Some(list) => catalog::parse_groups(list).map_err(|e| anyhow::anyhow!("--events: {e}"))?,
        None => catalog::default_groups(),
    };
    Ok(bpf::Config {
        cpu_shard,
        nr_shards,
        groups,
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
        stacks: args.stacks.clone().unwrap_or_default().0,
        sample_hz: args.sample_hz,
        stack_reuse: args.stack_reuse,
        stack_map_entries: STACK_MAP_ENTRIES,
        online_cpus: topology
            .cpus
            .iter()
            .filter(|c| c.online)
            .map(|c| c.cpu)
            .collect(),
        // From the kernel's symbols, once read.
        sched_text: SchedText::default(),
    })
}

/// Starts the command to record (as the sudo user under sudo); None without one.
fn spawn_command(
    command: &[OsString],
    sudo_user: Option<(u32, u32)>,
) -> anyhow::Result<Option<Child>> {
    let Some((program, rest)) = command.split_first() else {
        return Ok(None);
    };
    let mut cmd = Command::new(program);
    cmd.args(rest);
    if let Some((uid, gid)) = sudo_user {
        cmd.uid(uid).gid(gid);
    }
    match cmd.spawn() {
        Ok(c) => Ok(Some(c)),
        Err(e) => bail!("could not run {}: {e}", program.to_string_lossy()),
    }
}

/// The consumer threads, one per shard ring, and the counters they publish.
struct Consumers {
    threads: Vec<JoinHandle<anyhow::Result<WithUserStacks<Watched>>>>,
    counters: Vec<Arc<ShardCounters>>,
    stop: Arc<AtomicBool>,
}

/// What the consumers counted, summed over the shards.
struct Counts {
    /// Records by type (indexed by [`abi::type_index`]).
    by_type: [u64; N_TYPES],
    malformed: u64,
    /// Each ring's (size, peak fill) in bytes.
    ring_fill: Vec<(u64, u64)>,
}

impl Counts {
    fn of(&self, ty: abi::RecordType) -> u64 {
        self.by_type[abi::type_index(ty)]
    }
}

impl Consumers {
    /// One thread per ring, each encoding into its own shard of the trace
    /// (naming kernel addresses from `ksyms`, if given, and with `spool`,
    /// a directory and run size, spooling stack samples and normalizing
    /// their user stacks). `watch`, the flight recorder's trigger, sees
    /// every event.
    fn start(
        recorder: &mut Recorder<'_>,
        writer: &Arc<TraceWriter>,
        watch: Option<Arc<flight::LatencyWatch>>,
        ksyms: Option<Arc<KernelSymbols>>,
        spool: Option<(&Path, usize)>,
    ) -> anyhow::Result<Consumers> {
        let rings = recorder.take_rings();
        let stop = Arc::new(AtomicBool::new(false));
        let counters: Vec<Arc<ShardCounters>> = rings.iter().map(|_| Arc::default()).collect();
        let mut threads = Vec::with_capacity(rings.len());
        for (shard, ring) in rings.into_iter().enumerate() {
            let w = Arc::clone(writer);
            let watch = watch.clone();
            let ksyms = ksyms.clone();
            // With stacks, each shard normalizes the user stacks it sees.
            let user_stacks = spool
                .map(|_| recorder.stack_map())
                .transpose()?
                .map(UserStacks::new)
                .transpose()?;
            let spool = spool
                .map(|(dir, run)| Spool::create(dir, shard, run))
                .transpose()?;
            let encoder = move || {
                let e = ShardEncoder::new(w);
                let e = match ksyms {
                    Some(table) => e.with_kernel_symbols(shard, table),
                    None => e,
                };
                let e = match spool {
                    Some(spool) => e.with_stack_spool(spool),
                    None => e,
                };
                WithUserStacks {
                    inner: Watched::new(e, watch),
                    user_stacks,
                }
            };
            threads.push(consumer::spawn(
                shard,
                ring,
                encoder,
                Arc::clone(&stop),
                Arc::clone(&counters[shard]),
            )?);
        }
        Ok(Consumers {
            threads,
            counters,
            stop,
        })
    }

    /// A consumer only returns early on an error; its ring would fill up.
    fn any_stopped(&self) -> bool {
        self.threads.iter().any(|c| c.is_finished())
    }

    /// Records decoded so far.
    fn events(&self) -> u64 {
        self.counters.iter().map(|c| c.total()).sum()
    }

    /// Lets the threads drain their rings and stop (only once the programs
    /// are detached, so nothing arrives after); returns each shard's
    /// encoder, in shard order, and the user stacks the shards normalized,
    /// or the first error.
    fn join(&mut self) -> anyhow::Result<(Vec<ShardEncoder>, Vec<UserStacks>)> {
        self.stop.store(true, Ordering::Release);
        let mut first_error = None;
        let mut encoders = Vec::with_capacity(self.threads.len());
        let mut user_stacks = Vec::new();
        for c in self.threads.drain(..) {
            match c.join() {
                Ok(Ok(shard)) => {
                    encoders.push(shard.inner.into_inner());
                    user_stacks.extend(shard.user_stacks);
                }
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(anyhow::anyhow!("a consumer thread panicked"));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok((encoders, user_stacks)),
        }
    }

    fn counts(&self) -> Counts {
        let mut counts = Counts {
            by_type: [0; N_TYPES],
            malformed: 0,
            ring_fill: Vec::with_capacity(self.counters.len()),
        };
        for c in &self.counters {
            for (sum, n) in counts.by_type.iter_mut().zip(&c.by_type) {
                *sum += n.load(Ordering::Relaxed);
            }
            counts.malformed += c.malformed.load(Ordering::Relaxed);
            counts.ring_fill.push((
                c.ring_bytes.load(Ordering::Relaxed),
                c.ring_peak_bytes.load(Ordering::Relaxed),
            ));
        }
        counts
    }
}

/// Ends a recording whose events could not all be written (a full disk, an
/// I/O error): nothing more goes into the file, and a chunk the failed write
/// left half-written is cut off, so the file ends on its last complete chunk
/// and decodes up to there. Returns the one-line error to show.
fn write_failed(
    e: anyhow::Error,
    writer: &TraceWriter,
    output: &Path,
    compression: Compression,
) -> anyhow::Error {
    // Closing can fail the same way; the error that stopped us is the one to show.
    let _ = writer.finish();
    let kept = writer.bytes_written();
    // bytes_written counts only completed appends, which all precede the
    // failed one. A whole-file gzip stream cannot be cut at a chunk boundary;
    // gzip readers stop at its end anyway.
    if compression != Compression::Gzip {
        let _ = writer.truncate(kept);
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

/// Writes the drops no Lost record reported, flushes every shard and returns
/// their counters. BPF reports a CPU's failed reservations only before that
/// CPU's next record, so those after its last record (or whose Lost record
/// itself did not fit) are still pending when the programs are detached.
/// Without this the trace's LostEvents would add up to less than the summary
/// and the epilogue.
fn finish_encoders(
    encoders: &mut [ShardEncoder],
    cpu_shard: &[u8],
    lost: &[u64],
    end_ts: u64,
) -> anyhow::Result<EncoderStats> {
    for (cpu, (&total, &shard)) in lost.iter().zip(cpu_shard).enumerate() {
        let Some(encoder) = encoders.get_mut(usize::from(shard)) else {
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
    let mut stats = EncoderStats::default();
    for encoder in encoders {
        encoder.flush()?;
        stats.merge(encoder.stats());
    }
    Ok(stats)
}

/// Waits until the recording should end: a signal, the command's exit, the
/// duration, a `full` trace, or a consumer that stopped. `tick` runs on every turn.
fn wait_for_end(
    interrupted: &AtomicBool,
    mut child: Option<&mut Child>,
    consumers: &Consumers,
    started: Instant,
    limit: Duration,
    full: impl Fn() -> bool,
    mut tick: impl FnMut(Duration),
) -> anyhow::Result<End> {
    loop {
        if interrupted.load(Ordering::Relaxed) {
            return Ok(End::Signal);
        }
        if consumers.any_stopped() {
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
        if full() {
            return Ok(End::MaxBytes);
        }
        tick(elapsed);
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
struct Progress {
    bar: Option<ProgressBar>,
    last_draw: Instant,
    /// Events at the last draw, for the rate.
    last_events: u64,
}

impl Progress {
    fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        });
        Progress {
            bar,
            last_draw: Instant::now(),
            last_events: 0,
        }
    }

    /// Redraws at most every PROGRESS_EVERY; `sample` gives (events so far,
    /// events dropped, bytes written) and runs only then.
    fn update(&mut self, elapsed: Duration, sample: impl FnOnce() -> (u64, u64, u64)) {
        let Some(bar) = &self.bar else { return };
        if self.last_draw.elapsed() < PROGRESS_EVERY {
            return;
        }
        let (events, lost, bytes) = sample();
        let rate = (events - self.last_events) as f64 / self.last_draw.elapsed().as_secs_f64();
        bar.set_message(format!(
            "recording {:.1}s  {:.0} events/s  {lost} dropped  {:.1} MB written  (Ctrl-C stops)",
            elapsed.as_secs_f64(),
            rate,
            bytes as f64 / 1e6
        ));
        bar.tick();
        self.last_events = events;
        self.last_draw = Instant::now();
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
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
    counts: &Counts,
    unknown_tasks: u64,
    stats: &snapshot::RecordingStats,
    written: Option<(u64, &Path)>,
    filtered: bool,
) {
    let total: u64 = counts.by_type.iter().sum();
    eprintln!(
        "recorded {:.1}s: {total} events ({:.0}/s)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    let parts: Vec<String> = abi::RECORDS
        .iter()
        .map(|r| (r.label, counts.of(r.ty)))
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
    let skipped: u64 = stats.recursion_misses.iter().map(|(_, n)| n).sum();
    if skipped == 0 {
        eprintln!("  skipped by the kernel: 0 handler runs");
    } else {
        let per_prog: Vec<String> = stats
            .recursion_misses
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        eprintln!(
            "  skipped by the kernel: {skipped} handler runs ({}), their events are missing: \
             another BPF program was running on that CPU",
            per_prog.join(", ")
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
    if counts.malformed > 0 {
        eprintln!("  malformed records skipped: {}", counts.malformed);
    }
    if unknown_tasks > 0 {
        eprintln!(
            "  events naming a task never announced (written without a name): {unknown_tasks}"
        );
    }
    // Every event of a traced task follows its announcement; without one the
    // records are bookkeeping (forgetting tasks never seen), and a size per
    // event would mean nothing.
    if filtered && counts.of(abi::TASK_INFO) == 0 {
        eprintln!("  no task matched the filter (--pid, --tgid, --comm)");
    }
    // A flight recorder wrote no trace of the whole run.
    let Some((size, output)) = written else {
        return;
    };
    if filtered && counts.of(abi::TASK_INFO) == 0 {
        eprintln!(
            "  wrote {:.2} MB (no events) to {}",
            size as f64 / 1e6,
            output.display()
        );
        return;
    }
    eprintln!(
        "  wrote {:.2} MB ({:.1} bytes/event) to {}",
        size as f64 / 1e6,
        size as f64 / total.max(1) as f64,
        output.display()
    );
}

fn print_stacks(s: &stacks::StackSummary) {
    let parts: Vec<String> = crate::model::stack::StackKind::ALL
        .iter()
        .zip(s.samples)
        .filter(|&(_, n)| n > 0)
        .map(|(k, n)| format!("{n} {}", k.name()))
        .collect();
    let named_pct = s.frames_named as f64 * 100.0 / s.frames.max(1) as f64;
    eprintln!(
        "  stacks: {} ({} distinct); {} of {} frames named ({named_pct:.0}%) in {:.2}s",
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        },
        s.callstacks,
        s.frames_named,
        s.frames,
        s.symbolize_time.as_secs_f64()
    );
    eprintln!(
        "  user stacks: {} distinct, normalized while recording in {:.2}s{}{}",
        s.user_stacks,
        s.normalize_time.as_secs_f64(),
        if s.user_stacks_gone > 0 {
            format!(
                "; {} unnamed, their process gone when first seen",
                s.user_stacks_gone
            )
        } else {
            String::new()
        },
        if s.user_stacks_late > 0 {
            format!("; {} only at the end (too many)", s.user_stacks_late)
        } else {
            String::new()
        }
    );
    let c = &s.counters;
    if s.lost() > 0 {
        eprintln!(
            "  stacks lost: {} (stack map full {}, hash collisions {}, user stack without frames \
             {}, ring full {}, unreadable at the end {})",
            s.lost(),
            c.map_full,
            c.collided,
            c.no_user,
            c.dropped,
            s.unreadable
        );
    }
    if c.reused + c.checked > 0 {
        eprintln!(
            "  off-cpu stacks reused: {} of {} from the task's previous block (--stack-reuse); \
             {} of {} re-walks of such a block found other stacks",
            c.reused, s.samples[0], c.stale, c.checked
        );
    }
}
