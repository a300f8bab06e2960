//! A Perfetto trace -> SQLite, with trace_processor's tables: the importer,
//! the column store for the big event tables, the database cache beside the
//! trace, the SQL sandbox, and `schedlens query`.

pub mod aggregate;
pub mod columns;
pub mod db;
pub mod functions;
pub mod import;
pub mod query;
pub mod sandbox;
pub mod schema;
pub mod stats;
pub mod stdlib;
pub mod strings;
pub mod tables;
