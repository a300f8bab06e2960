use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// See what the Linux scheduler did: record with BPF, analyze offline.
#[derive(Parser)]
#[command(name = "schedlens", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    ExitCode::SUCCESS
}
