//! Read-only SQL with limits, enforced by SQLite itself, for SQL from models.
//! (Issue 4; owner: mcp.)
