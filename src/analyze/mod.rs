//! Loading Perfetto traces into SQLite and the commands on top: `query`,
//! `summary` and the MCP server of `analyze`. (Issues 3 and 4.)

pub mod aggregate;
pub mod columns;
pub mod db;
pub mod import;
pub mod mcp;
pub mod query;
pub mod report;
pub mod sandbox;
pub mod schema;
pub mod summary;
pub mod timespec;
