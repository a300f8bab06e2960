//! `schedlens flamegraph TRACE`: a stack profile of a trace as an interactive
//! SVG flame graph (inferno draws it) or as folded-stack text.

use crate::analyses::stacks::{folded_stacks, parse_kind, weight_unit};
use crate::analyses::tasks::TaskFilter;
use crate::analyses::timespec::{WindowArg, trace_bounds};
use crate::analyzer::db::{self, LoadOptions};
use anyhow::{Context, Result, bail};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

/// Arguments of `schedlens flamegraph`.
#[derive(Debug, clap::Args)]
pub struct FlamegraphArgs {
    /// Perfetto trace file recorded with `--stacks` (plain, gzip or zstd).
    pub trace: PathBuf,
    /// Which stacks: off-cpu (weighted by ns off the CPU), cpu or waker (weighted by sample count).
    #[arg(long, default_value = "off-cpu")]
    pub kind: String,
    /// Only this thread id.
    #[arg(long)]
    pub tid: Option<i64>,
    /// Only the threads of this process id.
    #[arg(long)]
    pub pid: Option<i64>,
    /// Only threads whose thread or process name contains this (case-insensitive).
    #[arg(long)]
    pub comm: Option<String>,
    /// Time window from the trace start: "1s..2.5s", "..500ms", "2s..".
    #[arg(long)]
    pub window: Option<String>,
    /// Write folded stacks (`root;child;leaf weight` lines) instead of an SVG.
    #[arg(long)]
    pub folded: bool,
    /// Output file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Reload the trace even if a cached database is valid.
    #[arg(long)]
    pub rebuild: bool,
}

pub fn run(args: FlamegraphArgs) -> Result<()> {
    // Parsed here rather than by clap, so a typo is one line.
    let kind = parse_kind(&args.kind)?;
    let loaded = db::load(&args.trace, &LoadOptions::interactive(args.rebuild))?;
    let conn = db::open_readonly(&loaded.db_path)?;
    let bounds = trace_bounds(&conn)?;
    let window = bounds
        .window(args.window.map(WindowArg::Range).as_ref())
        .map_err(anyhow::Error::msg)?;
    let filter = TaskFilter {
        tid: args.tid,
        pid: args.pid,
        name: args.comm,
    };
    let stacks = folded_stacks(&conn, &bounds, kind, &filter, window)?;
    if stacks.is_empty() {
        bail!("no {} stacks match the filters and window", kind.name());
    }
    let lines: Vec<String> = stacks.iter().map(|s| s.line()).collect();
    let file = std::fs::File::create(&args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let mut out = BufWriter::new(file);
    if args.folded {
        for line in &lines {
            writeln!(out, "{line}")?;
        }
    } else {
        let mut opts = inferno::flamegraph::Options::default();
        opts.title = format!("{} stacks: {}", kind.name(), loaded.name);
        opts.count_name = weight_unit(kind).to_string();
        inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), &mut out)
            .context("drawing the flame graph")?;
    }
    out.flush()
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    Ok(())
}
