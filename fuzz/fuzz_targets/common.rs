//! Shared by the importer targets: one in-memory database per fuzzing
//! process, each input loaded in a transaction that is rolled back, so the
//! schema is created once and not per input.

use rusqlite::Connection;
use schedlens::analyzer::import;
use schedlens::analyzer::schema::create_sql;
use schedlens::perfetto::reader::TraceReader;
use std::cell::RefCell;
use std::io::Cursor;

thread_local! {
    static DB: RefCell<Connection> = RefCell::new({
        let conn = Connection::open_in_memory().expect("in-memory database");
        schedlens::analyzer::columns::register(&conn).expect("column module");
        conn.execute_batch(create_sql()).expect("schema");
        conn
    });
}

/// Runs the whole importer on `file` (the bytes of a trace file). Errors are
/// fine (bad input must give one); only a panic, hang or blow-up is a bug.
pub fn import_bytes(file: Vec<u8>) {
    DB.with_borrow_mut(|conn| {
        conn.execute_batch("BEGIN").expect("begin");
        let size = file.len() as u64;
        if let Ok(reader) = TraceReader::from_reader(Cursor::new(file), size, "fuzz input") {
            let _ = import::import_from(reader, conn, false);
        }
        conn.execute_batch("ROLLBACK").expect("rollback");
    });
}
