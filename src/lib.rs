//! schedlens: record what the Linux scheduler did with BPF into Perfetto traces
//! (`trace`), and analyze those traces offline with SQL and MCP (`analyze`).
//!
//! The trace file is the contract between the two halves:
//! - [`trace`]: the recorder. BPF programs (bpf/) feed sharded ring buffers; one
//!   consumer thread per shard encodes Perfetto packets with [`perfetto::writer`].
//! - [`perfetto`]: the file format: protobuf types generated from schema/perfetto,
//!   the writer, and the reader that sniffs and decompresses any Perfetto trace.
//! - [`analyze`]: the importer that turns a trace into SQLite tables matching
//!   Perfetto's trace_processor (schema/tables.sql), the `query`/`summary`
//!   commands, and the MCP server.

pub mod analyze;
pub mod perfetto;
pub mod trace;
