use clap::{Parser, Subcommand};
use schedlens::{analyses, analyzer, export, mcp, recorder, service};
use std::process::ExitCode;

/// See what the Linux scheduler did: record with BPF, analyze offline.
#[derive(Parser)]
#[command(name = "schedlens", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Record the scheduler into a compressed Perfetto trace (root or CAP_BPF+CAP_PERFMON).
    Trace(recorder::TraceArgs),
    /// Serve recordings on request to the members of a group, over a Unix socket (root).
    Recorder(service::RecorderArgs),
    /// Print an overview of a trace: machine, CPU use, top tasks, latencies.
    Summary(analyses::summary::SummaryArgs),
    /// Write a flame graph (SVG, or folded stacks) of a trace recorded with `--stacks`.
    Flamegraph(analyses::flamegraph::FlamegraphArgs),
    /// Run SQL against a trace's tables.
    Query(analyzer::query::QueryArgs),
    /// Write the tables of traces as Parquet for DuckDB, Spark or Trino, partitioned by host and trace.
    Export(export::ExportArgs),
    /// Serve MCP over stdio so an AI assistant can query traces offline.
    Analyze(mcp::AnalyzeArgs),
    /// Runs one model query for `analyze`, in a process of its own.
    #[command(name = analyzer::sandbox::WORKER_COMMAND, hide = true)]
    SqlWorker,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Trace(args) => recorder::run(args),
        Command::Recorder(args) => service::run(args).map(|()| ExitCode::SUCCESS),
        Command::Summary(args) => analyses::summary::run(args).map(|()| ExitCode::SUCCESS),
        Command::Flamegraph(args) => analyses::flamegraph::run(args).map(|()| ExitCode::SUCCESS),
        Command::Query(args) => analyzer::query::run(args).map(|()| ExitCode::SUCCESS),
        Command::Export(args) => export::run(args).map(|()| ExitCode::SUCCESS),
        Command::Analyze(args) => mcp::run(args).map(|()| ExitCode::SUCCESS),
        Command::SqlWorker => analyzer::sandbox::worker_main().map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("schedlens: {e:#}");
            ExitCode::FAILURE
        }
    }
}
