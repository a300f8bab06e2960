//! The query tool: one read-only SQL statement, run in the sandbox of a
//! worker process.

use schemars::JsonSchema;
use serde::Deserialize;

use super::call::WorkerTool;
use crate::analyzer::sandbox::{self, QueryResult};

#[derive(Debug, Deserialize, JsonSchema)]
pub struct QueryArgs {
    /// SELECT or WITH ... SELECT. ts values are absolute trace-clock ns; subtract
    /// (SELECT start_ts FROM trace_bounds) for time from the trace start.
    pub sql: String,
    /// Most rows: default 40, at most 2000.
    pub limit: Option<i64>,
    /// Rows to skip (default 0).
    pub offset: Option<i64>,
}

pub const QUERY: WorkerTool<QueryArgs, QueryResult> = WorkerTool {
    name: "query",
    description: "One read-only SQLite statement (see list_tables, describe_table); integers above \
                  2^53 as strings.",
    answer: |db, a, limits, cancel| {
        sandbox::run_isolated(db, &a.sql, a.limit, a.offset, limits, cancel)
    },
};
