//! `schedlens query TRACE SQL`. (Issue 3; owner: analyze.)

/// Arguments of `schedlens query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {}

pub fn run(_args: QueryArgs) -> anyhow::Result<()> {
    unimplemented!("issue 3: query")
}
