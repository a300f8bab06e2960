//! `schedlens summary TRACE`. (Issue 3; owner: analyze, on top of report.rs.)

/// Arguments of `schedlens summary`.
#[derive(Debug, clap::Args)]
pub struct SummaryArgs {}

pub fn run(_args: SummaryArgs) -> anyhow::Result<()> {
    unimplemented!("issue 3: summary")
}
