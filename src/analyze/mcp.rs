//! `schedlens analyze`: the MCP server over stdio. (Issue 4; owner: mcp.)

/// Arguments of `schedlens analyze`.
#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {}

pub fn run(_args: AnalyzeArgs) -> anyhow::Result<()> {
    unimplemented!("issue 4: mcp")
}
