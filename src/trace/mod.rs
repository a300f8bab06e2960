//! `schedlens trace`: the recorder. (Issue 2.)

pub mod event;
pub mod snapshot;
pub mod topology;

/// Arguments of `schedlens trace` (owner: recorder).
#[derive(Debug, clap::Args)]
pub struct TraceArgs {}

/// Runs `schedlens trace`.
pub fn run(_args: TraceArgs) -> anyhow::Result<()> {
    unimplemented!("issue 2: recorder")
}
