//! schedlens: record what the Linux scheduler did with BPF into Perfetto traces
//! (`trace`), and analyze those traces offline with SQL and MCP (`analyze`).
//!
//! The trace file is the contract between the two halves. The modules, from
//! the bottom up:
//! - [`model`]: the event model both halves share (what a recorder event is).
//! - [`perfetto`]: the file format: protobuf types generated from
//!   schema/perfetto, the writer, and the reader that sniffs and decompresses
//!   any Perfetto trace.
//! - [`recorder`]: `schedlens trace`. BPF programs (bpf/) feed sharded ring
//!   buffers; one consumer thread per shard encodes Perfetto packets.
//! - [`analyzer`]: a trace -> SQLite tables matching Perfetto's
//!   trace_processor (the importer, the column store, the database cache, the
//!   SQL sandbox and `schedlens query`).
//! - [`analyses`]: the questions asked of a loaded trace, each answered once
//!   for `summary`, the CLI and MCP.
//! - [`export`]: `schedlens export`, loaded traces as Parquet for DuckDB,
//!   Spark and Trino.
//! - [`mcp`]: `schedlens analyze`, the MCP server.
//! - [`service`]: `schedlens recorder`, the root service `analyze --recorder`
//!   asks for recordings.

pub mod analyses;
pub mod analyzer;
pub mod export;
pub mod mcp;
pub mod model;
pub mod perfetto;
pub mod recorder;
pub mod service;
