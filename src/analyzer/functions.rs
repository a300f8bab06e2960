//! PerfettoSQL's built-in functions that scheduler queries use, registered on
//! every connection that reads a loaded trace (`schedlens query`, the MCP
//! tools and their query worker): TRACE_START(), TRACE_END(), TRACE_DUR().

use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;

/// Names of the functions registered here, for the sandbox's allow-list.
pub const NAMES: &[&str] = &["trace_start", "trace_end", "trace_dur"];

/// Registers the functions on `conn`. The trace's bounds never change once
/// it is loaded, so they are read once here; a database without
/// `trace_bounds` (not a loaded trace) gets no functions.
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    let bounds = conn.query_row("SELECT start_ts, end_ts FROM trace_bounds", [], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    });
    let (start, end) = match bounds {
        Ok(b) => b,
        // An empty trace: Perfetto's bounds are then 0 and 0.
        Err(rusqlite::Error::QueryReturnedNoRows) => (0, 0),
        Err(_) => return Ok(()),
    };
    let flags = FunctionFlags::SQLITE_UTF8
        | FunctionFlags::SQLITE_DETERMINISTIC
        | FunctionFlags::SQLITE_INNOCUOUS;
    for (name, value) in [
        ("trace_start", start),
        ("trace_end", end),
        ("trace_dur", end - start),
    ] {
        conn.create_scalar_function(name, 0, flags, move |_| Ok(value))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_come_from_trace_bounds() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE trace_bounds (start_ts INTEGER NOT NULL, end_ts INTEGER NOT NULL);
             INSERT INTO trace_bounds VALUES (1000, 4500);",
        )
        .unwrap();
        register(&conn).unwrap();
        let got: (i64, i64, i64) = conn
            .query_row("SELECT TRACE_START(), trace_end(), Trace_Dur()", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(got, (1000, 4500, 3500));
    }

    #[test]
    fn no_bounds_table_no_functions() {
        let conn = Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        assert!(conn.prepare("SELECT trace_start()").is_err());
    }
}
