//! PerfettoSQL's built-in functions that scheduler queries use, registered on
//! every connection that reads a loaded trace (`schedlens query`, the MCP
//! tools and their query worker): TRACE_START(), TRACE_END(), TRACE_DUR()
//! and EXTRACT_ARG(arg_set_id, key).

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _};
use std::sync::Mutex;

/// Names of the functions registered here, for the sandbox's allow-list.
pub const NAMES: &[&str] = &["trace_start", "trace_end", "trace_dur", "extract_arg"];

/// The lookup behind EXTRACT_ARG: one event's row, then its fields.
const ARG_SQL: &str = "SELECT coalesce(int_value, string_value, real_value) FROM args \
                       WHERE arg_set_id = ?1 AND key = ?2";

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
    register_extract_arg(conn, flags)
}

/// EXTRACT_ARG runs its lookup on a connection of its own to the same file,
/// opened on first use: a statement prepared once there serves every call,
/// and no SQL but [`ARG_SQL`] ever runs on it.
fn register_extract_arg(conn: &Connection, flags: FunctionFlags) -> rusqlite::Result<()> {
    let Some(path) = conn.path().filter(|p| !p.is_empty()).map(String::from) else {
        return Ok(());
    };
    let reader: Mutex<Option<Connection>> = Mutex::default();
    conn.create_scalar_function("extract_arg", 2, flags, move |ctx: &mut Context<'_>| {
        let (ValueRef::Integer(set), ValueRef::Text(key)) = (ctx.get_raw(0), ctx.get_raw(1)) else {
            return Ok(Value::Null);
        };
        // Bound as text: bytes would bind a BLOB, which equals no key.
        let Ok(key) = std::str::from_utf8(key) else {
            return Ok(Value::Null);
        };
        let mut reader = reader
            .lock()
            .map_err(|_| rusqlite::Error::UserFunctionError("extract_arg: poisoned".into()))?;
        let reader = match &mut *reader {
            Some(c) => c,
            None => reader.insert(open_reader(&path)?),
        };
        let mut st = reader.prepare_cached(ARG_SQL)?;
        let value = st
            .query_row(rusqlite::params![set, key], |r| r.get::<_, Value>(0))
            .optional()?;
        Ok(value.unwrap_or(Value::Null))
    })
}

fn open_reader(path: &str) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let c = Connection::open_with_flags(path, flags)?;
    c.pragma_update(None, "query_only", true)?;
    Ok(c)
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
    fn extract_arg_finds_one_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE trace_bounds (start_ts INTEGER NOT NULL, end_ts INTEGER NOT NULL);
             CREATE TABLE args (arg_set_id INTEGER, key TEXT, int_value INTEGER,
                                string_value TEXT, real_value REAL);
             INSERT INTO args VALUES (1, 'pid', 12, NULL, NULL), (1, 'comm', NULL, 'bash', NULL),
                                     (2, 'pid', 13, NULL, NULL), (2, 'load', NULL, NULL, 0.5);",
        )
        .unwrap();
        register(&conn).unwrap();
        let one: Value = conn
            .query_row("SELECT extract_arg(1, 'pid')", [], |r| r.get(0))
            .unwrap();
        assert_eq!(one, Value::Integer(12));
        let got: Vec<(Value, Value, Value)> = conn
            .prepare(
                "SELECT EXTRACT_ARG(s, 'pid'), extract_arg(s, 'comm'), extract_arg(s, 'load') \
                 FROM (SELECT 1 AS s UNION ALL SELECT 2 UNION ALL SELECT NULL) ORDER BY s IS NULL, s",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        use Value::*;
        assert_eq!(
            got,
            [
                (Integer(12), Text("bash".into()), Null),
                (Integer(13), Null, Real(0.5)),
                (Null, Null, Null),
            ]
        );
    }

    #[test]
    fn no_bounds_table_no_functions() {
        let conn = Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        assert!(conn.prepare("SELECT trace_start()").is_err());
    }
}
