//! `schedlens analyze`: the MCP server over stdio.
//!
//! Every tool is closed-world: a model reaches only the traces named on the
//! command line, the files of the `--trace-dir` the user chose and the traces
//! the recorder service hands over (with `--recorder`),
//! and its SQL runs in the sandbox (analyzer/sandbox.rs).
//!
//! - [`command`]: the command and its arguments: load the traces, serve.
//! - [`traces`]: the traces served and how a call's `trace` resolves.
//! - [`registry`]: every tool once, in tools/list order; the instructions.
//! - [`call`]: how a tool call runs: arguments, sandbox, limits, errors.
//! - [`catalogue`]: list_tables, describe_table and the schema resource.
//! - [`prompts`]: the prompts, the common investigations as plans over the tools.
//! - [`query`]: the query tool.
//! - [`recorder`]: record, recording_status and list_recordable_events, which
//!   ask the recorder service (`--recorder`); the only tools that do more than read.
//! - [`schema`]: compact tool schemas, and each call's arguments checked
//!   against its tool's (unknown names, integers sent as strings).
//! - [`server`]: rmcp's handler over the registry.
//! - [`stdio`]: the transport, answering lines rmcp would leave unanswered.
//!
//! The analysis tools are declared in their analyses (crate::analyses): a
//! new one needs only its line in the registry.

pub mod call;
pub mod catalogue;
mod command;
pub mod fleet;
mod prompts;
pub mod query;
pub mod recorder;
pub mod registry;
pub mod schema;
mod server;
mod stdio;
pub mod traces;

pub use command::{AnalyzeArgs, run};
pub use registry::{recording_tool_names, tool_names};
