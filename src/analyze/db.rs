//! The loaded database of a trace: load once, cache beside the trace (or in the
//! user cache dir), reuse while the trace is unchanged. (Issue 3; owner: analyze.)

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Reload even if a valid cached database exists.
    pub rebuild: bool,
    /// Show a progress bar on stderr when it is a TTY.
    pub progress: bool,
}

#[derive(Debug, Clone)]
pub struct LoadedTrace {
    /// Short name for the trace (file name without directories), unique among those loaded.
    pub name: String,
    pub trace_path: PathBuf,
    /// The SQLite file holding the tables of schema/tables.sql.
    pub db_path: PathBuf,
}

/// Loads `trace` into its SQLite database, or reuses the cached one.
pub fn load(_trace: &Path, _opts: &LoadOptions) -> anyhow::Result<LoadedTrace> {
    unimplemented!("issue 3: loader")
}

/// Opens a loaded database read-only (SQLITE_OPEN_READ_ONLY).
pub fn open_readonly(_db: &Path) -> anyhow::Result<rusqlite::Connection> {
    unimplemented!("issue 3: loader")
}
