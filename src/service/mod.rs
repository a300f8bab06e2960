//! `schedlens recorder`: a root service that records on request, so that an
//! unprivileged MCP server (`schedlens analyze --recorder`) can ask for a
//! recording without ever loading BPF itself.
//!
//! - [`protocol`]: the versioned wire protocol (schema/recorder-protocol.md).
//! - [`config`]: recorder.toml and the flags, the limits in force.
//! - [`client`]: the client side, used by `analyze --recorder`.
//! - `server`: the service: credentials, limits, spool, one recorder child per
//!   recording.

pub mod client;
pub mod config;
#[cfg(feature = "record")]
mod flight;
pub mod protocol;
#[cfg(feature = "record")]
mod server;

pub use config::RecorderArgs;

/// Runs `schedlens recorder`.
pub fn run(args: RecorderArgs) -> anyhow::Result<()> {
    if let Some(config::RecorderAction::Snapshot(snapshot)) = args.action {
        return client::snapshot(snapshot);
    }
    #[cfg(feature = "record")]
    return server::run(args);
    #[cfg(not(feature = "record"))]
    {
        let _ = args;
        anyhow::bail!(
            "this build has no recorder (built without the `record` feature); \
             rebuild with default features to use `schedlens recorder`"
        )
    }
}
