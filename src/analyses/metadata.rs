//! Reads of what the importer recorded about a trace: metadata values and
//! table row counts.

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension};

/// A metadata value as text (integers converted).
pub(crate) fn meta_str(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT coalesce(str_value, CAST(int_value AS TEXT)) FROM metadata WHERE name = ?1",
            [key],
            |r| r.get(0),
        )
        .optional()?
        .flatten())
}

/// An integer metadata value.
pub(crate) fn meta_int(conn: &Connection, key: &str) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT int_value FROM metadata WHERE name = ?1",
            [key],
            |r| r.get(0),
        )
        .optional()?
        .flatten())
}

/// Wall-clock time (RFC 3339, UTC) of trace timestamp `ts`, None without the
/// clock offset the importer records (realtime_offset_ns).
pub(crate) fn wall_clock(conn: &Connection, ts: i64) -> Result<Option<String>> {
    Ok(meta_int(conn, "realtime_offset_ns")?.and_then(|off| {
        let unix_ns = u64::try_from(ts.checked_add(off)?).ok()?;
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(unix_ns);
        Some(humantime::format_rfc3339_nanos(t).to_string())
    }))
}

/// Rows in a table or view: recorded for the column tables, counted for the
/// others.
pub(crate) fn row_count(conn: &Connection, table: &str) -> rusqlite::Result<i64> {
    if let Some(n) = crate::analyzer::columns::row_count(conn, table) {
        return Ok(n);
    }
    conn.query_row(
        &format!("SELECT count(*) FROM {}", quote_ident(table)),
        [],
        |r| r.get(0),
    )
}

/// `name` as an SQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
