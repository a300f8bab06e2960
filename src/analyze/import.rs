//! Perfetto trace -> SQLite, following trace_processor's rules. (Issue 3; owner: analyze.)
