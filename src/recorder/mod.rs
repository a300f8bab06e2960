//! `schedlens trace`: the recorder.
//!
//! BPF programs (bpf/schedlens.bpf.c) on the scheduler tracepoints write
//! records into one ring buffer per shard of CPUs ([`bpf`]); one consumer
//! thread per shard decodes them ([`abi`]) and encodes them into the trace
//! ([`consumer`], [`crate::perfetto::writer`]); [`record`] runs the whole.

#[cfg(feature = "record")]
pub mod abi;
#[cfg(feature = "record")]
pub mod bpf;
#[cfg(feature = "record")]
pub mod catalog;
pub mod cli;
#[cfg(feature = "record")]
pub mod consumer;
#[cfg(feature = "record")]
pub mod flight;
#[cfg(feature = "record")]
mod record;
#[cfg(feature = "record")]
mod stacks;
#[cfg(feature = "record")]
mod skel {
    //! The libbpf-rs skeleton of bpf/schedlens.bpf.c: the loader ([`super::bpf`])
    //! and, in `types`, the Rust twins of bpf/events.h ([`super::abi`]).
    include!(concat!(env!("OUT_DIR"), "/schedlens.skel.rs"));
}
pub mod snapshot;
pub mod spool;
pub mod topology;

/// Ring buffer shards the BPF side can address (SL_MAX_SHARDS: a u64 bitmask
/// in task storage). Here for the flag checks, which run without the recorder too.
pub const MAX_SHARDS: usize = 64;
/// Values per --pid, --tgid or --comm flag (SL_MAX_FILTER).
pub const MAX_FILTER: usize = 16;

use crate::perfetto::writer::Compression;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `schedlens trace`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    sudo schedlens trace -d 30s\n  \
    sudo schedlens trace -o build.pftrace -- make -j8\n  \
    sudo schedlens trace --tgid 1234 -d 1m\n  \
    sudo schedlens trace --flight 30s -o snapshots/ --trigger latency>5ms")]
pub struct TraceArgs {
    /// How long to record [default: 10s, or until CMD exits when one is given]
    #[arg(short, long, value_parser = cli::parse_duration)]
    pub duration: Option<Duration>,
    /// Trace file to write [default: schedlens-<hostname>-<UTC time>.pftrace]
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Compression of the trace file
    #[arg(long, value_enum, default_value_t = Compression::Zstd)]
    pub compress: Compression,
    /// Record only this thread and the tasks it creates (repeatable)
    #[arg(long = "pid", value_name = "PID", value_parser = cli::parse_id)]
    pub pids: Vec<i32>,
    /// Record only this process, its threads and descendants (repeatable)
    #[arg(long = "tgid", value_name = "TGID", value_parser = cli::parse_id)]
    pub tgids: Vec<i32>,
    /// Record only tasks with this name (at start, exec or rename) and their descendants (repeatable)
    #[arg(long = "comm", value_name = "NAME", value_parser = cli::parse_comm)]
    pub comms: Vec<String>,
    /// Start even if a --pid, --tgid or --comm matches no task running now, and record
    /// it once it appears (without this flag that is an error; a --comm may also name a
    /// task CMD will start)
    #[arg(long)]
    pub wait_for_task: bool,
    /// Stop once the trace file reaches this size (e.g. 512M, 2G), keeping it; with
    /// --flight: the most the ring holds (the oldest chunks go first) [default: 64M]
    #[arg(long, value_name = "SIZE", value_parser = cli::parse_size)]
    pub max_bytes: Option<u64>,
    /// Number of ring buffers [default: one per group of CPUs sharing a last-level cache]
    #[arg(long, value_parser = cli::parse_shards)]
    pub shards: Option<usize>,
    /// Size of each ring buffer (power of two, 64K to 1G)
    #[arg(long, default_value = "16M", value_parser = cli::parse_ring_size)]
    pub ring_size: u32,
    /// Event groups to record, separated by commas (sched is always recorded)
    /// [default: the groups `--list-events` marks default]
    #[arg(long, value_name = "GROUPS")]
    pub events: Option<String>,
    /// Print the event groups, what each records and whether this kernel has it, and exit
    #[arg(long)]
    pub list_events: bool,
    /// Call stacks to record, comma-separated: off-cpu (kernel and user stack of a task
    /// when it blocks, weighted by how long it stays off the CPU; a stack walk per
    /// blocking switch, except the blocks --stack-reuse lets reuse the last one), cpu (stacks sampled on every CPU at --sample-hz; a stack walk per
    /// sample), waker (the waker's stack at each wakeup; a stack walk per wakeup), or all.
    /// Frames are named at the end of the recording, on this machine
    #[arg(long, value_name = "KINDS", value_parser = cli::parse_stacks)]
    pub stacks: Option<cli::StackKinds>,
    /// Samples per second and CPU of --stacks cpu
    #[arg(long, value_name = "HZ", default_value_t = crate::model::stack::DEFAULT_SAMPLE_HZ,
          value_parser = cli::parse_sample_hz)]
    pub sample_hz: u64,
    /// With --stacks off-cpu: how many blocks in a row of one task may reuse the stacks
    /// walked at its previous block when its user registers at kernel entry and its
    /// kernel stack depth are the same (an approximation, re-checked by the walk that
    /// follows and reported in the summary); 0 walks both stacks at every block, exactly
    #[arg(long, value_name = "N", default_value_t = crate::model::stack::DEFAULT_STACK_REUSE)]
    pub stack_reuse: u8,
    /// With --stacks: samples each shard sorts in memory before spooling them to disk as
    /// one run (tests set it small to merge many runs)
    #[arg(long, hide = true, value_name = "N", default_value_t = spool::DEFAULT_RUN,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub stack_spool_run: usize,
    /// Load the sched_switch program for kernels before 5.18 (tests it on newer ones)
    #[arg(long, hide = true)]
    pub legacy_switch: bool,
    /// Flight recorder: keep only the last DURATION in a bounded in-memory ring and write
    /// a snapshot of it into the directory -o (default: .) on SIGUSR1 or --trigger; runs
    /// until Ctrl-C, -d or CMD's exit
    #[arg(long, value_name = "DURATION", value_parser = cli::parse_duration)]
    pub flight: Option<Duration>,
    #[command(flatten)]
    pub trigger: cli::LatencyTrigger,
    /// Least time between two trigger snapshots [default: the --flight window]
    #[arg(long, value_name = "DURATION", value_parser = cli::parse_duration)]
    pub trigger_debounce: Option<Duration>,
    /// With --flight: each line on stdin asks for a snapshot, answered by one JSON line
    /// on stdout (how the recorder service asks)
    #[arg(long, hide = true)]
    pub flight_control: bool,
    /// Command to run (as the sudo user under sudo); recording stops when it exits, and
    /// schedlens exits with its status
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Runs `schedlens trace`; the exit code is the command's when one was run.
pub fn run(args: TraceArgs) -> anyhow::Result<ExitCode> {
    for (flag, n) in [
        ("--pid", args.pids.len()),
        ("--tgid", args.tgids.len()),
        ("--comm", args.comms.len()),
    ] {
        if n > MAX_FILTER {
            anyhow::bail!("at most {MAX_FILTER} {flag} values are supported, got {n}");
        }
    }
    #[cfg(feature = "record")]
    {
        flight::check_args(&args)?;
        record::record(args)
    }
    #[cfg(not(feature = "record"))]
    anyhow::bail!(
        "this build has no recorder (built without the `record` feature); \
         rebuild with default features to use `schedlens trace`"
    )
}
