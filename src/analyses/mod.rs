//! The questions asked of a loaded trace, each answered once for `summary`,
//! the CLI and the MCP tools.
//!
//! One module per analysis: a plain function over a `rusqlite::Connection`
//! returning serializable, schema-described structs, and its [`Tool`]: its
//! arguments, description and the `answer` the MCP server calls. Times in
//! results are relative to the trace start; absolute trace-clock values
//! appear only as strings.
//!
//! Whole-trace and long-window totals come from the per-bucket aggregates
//! (analyzer/aggregate.rs): a window is the sum of the buckets it covers plus
//! exact work on its two partial end buckets, through the column store's
//! access paths (analyzer/columns/vtab.rs: by cpu or utid then ts, by ts,
//! wakeups by latency). No analysis scans a whole event table.
//!
//! A new analysis is a module here (its function, its arguments type and its
//! `TOOL`) and one `Entry::analysis` line in mcp/registry.rs, which places it
//! in tools/list and the server instructions; the README's tool table gets
//! its row (a test compares the two).

pub mod compare;
pub mod cpu_timeline;
pub mod cpu_utilization;
pub mod critical_path;
pub mod flamegraph;
pub mod interference;
pub mod process_activity;
pub mod process_tree;
pub mod scheduling_latency;
pub mod search_events;
pub mod stacks;
pub mod summary;
pub mod task_timeline;
pub mod top_tasks;
pub mod trace_info;

pub mod durations;
pub(crate) mod metadata;
pub mod percentiles;
pub mod tasks;
pub mod timespec;
pub mod tool;

pub use tool::{Tool, TraceDb, require_scheduler_data};
