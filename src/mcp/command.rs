//! `schedlens analyze` and its arguments: load the traces named, then serve
//! them on stdio.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rmcp::ServiceExt;
use tokio::sync::Semaphore;

use super::call::State;
use super::server::Server;
use super::stdio;
use super::traces::Traces;
use crate::analyzer::db::{self, LoadOptions};
use crate::analyzer::sandbox::Limits;

/// Arguments of `schedlens analyze`.
#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    /// Perfetto traces to serve (each is loaded into its cached SQLite database first).
    pub traces: Vec<PathBuf>,
    /// Also offer the trace files in this directory; a model lists them with
    /// list_traces and opens them by file name.
    #[arg(long, value_name = "DIR")]
    pub trace_dir: Option<PathBuf>,
    /// Reload the traces even if a cached database exists.
    #[arg(long)]
    pub rebuild: bool,
    /// Offer recording through the recorder service at SOCKET (`schedlens recorder`):
    /// adds the record, recording_status and list_recordable_events tools. This
    /// server loads no BPF; it reads the traces the service hands it.
    #[arg(long, value_name = "SOCKET", num_args = 0..=1, require_equals = false,
          default_missing_value = crate::service::config::DEFAULT_SOCKET)]
    pub recorder: Option<PathBuf>,
    /// Time limit of one tool call's SQL, e.g. "10s" or "500ms".
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub query_timeout: Duration,
}

pub fn run(args: AnalyzeArgs) -> anyhow::Result<()> {
    if args.traces.is_empty() && args.trace_dir.is_none() && args.recorder.is_none() {
        anyhow::bail!("name at least one trace (or --trace-dir DIR, or --recorder) to serve");
    }
    let opts = LoadOptions {
        rebuild: args.rebuild,
        // stderr may be a client's log; a bar would only fill it.
        progress: false,
        cancel: None,
    };
    let mut traces = Traces::new(opts.clone());
    for path in &args.traces {
        eprintln!("schedlens: loading {}", path.display());
        let loaded =
            db::load(path, &opts).with_context(|| format!("loading {}", path.display()))?;
        traces.add(loaded.name, loaded.db_path)?;
    }
    if let Some(dir) = args.trace_dir {
        traces.offer_dir(dir)?;
    }
    let state = State {
        traces,
        limits: Limits {
            timeout: args.query_timeout,
            ..Limits::default()
        },
        // Two calls at once of each kind: the machine's cores are shared, and a
        // model that fires many slow queries should queue rather than starve
        // the others; its own SQL queues apart, so it never holds up the tools.
        slots: Arc::new(Semaphore::new(2)),
        worker_slots: Arc::new(Semaphore::new(2)),
        recorder: args.recorder,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        eprintln!("schedlens: serving MCP on stdio");
        let (transport, writer) = stdio::transport(tokio::io::stdin(), tokio::io::stdout());
        let service = Server::new(state)
            .serve(transport)
            .await
            .context("starting the MCP session")?;
        service.waiting().await.context("MCP session")?;
        // rmcp's last answers are still on their way to stdout.
        writer.await.context("writing to stdout")?;
        anyhow::Ok(())
    })
}
