//! Inputs the fuzzers (fuzz/, see DEVELOPERS.md) found crashing, hanging or
//! blowing up memory, kept in fixtures/fuzz-regressions/ after the fix. Each
//! goes through the reader, the importer and the real `schedlens query`:
//! loading or a one-line error are both fine; a panic is the bug coming back.

use rusqlite::Connection;
use schedlens::analyzer::import;
use schedlens::analyzer::schema::create_sql;
use schedlens::perfetto::reader::TraceReader;
use std::io::Cursor;
use std::path::PathBuf;
use std::process::Command;

fn inputs() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/fuzz-regressions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    files
}

/// One line: a multi-line error would garble the CLI's `schedlens: error`.
fn check_error(what: &str, e: &anyhow::Error) {
    let msg = format!("{e:#}");
    assert!(!msg.contains('\n'), "{what}: multi-line error: {msg}");
}

#[test]
fn regressions_read_and_import_without_panic() {
    for path in inputs() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let size = bytes.len() as u64;

        match TraceReader::from_reader(Cursor::new(bytes.clone()), size, &name) {
            Ok(mut reader) => loop {
                match reader.next_packet() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        check_error(&name, &e);
                        break;
                    }
                }
            },
            Err(e) => check_error(&name, &e),
        }

        let conn = Connection::open_in_memory().unwrap();
        schedlens::analyzer::columns::register(&conn).unwrap();
        conn.execute_batch(create_sql()).unwrap();
        conn.execute_batch("BEGIN").unwrap();
        let outcome = TraceReader::from_reader(Cursor::new(bytes), size, &name)
            .and_then(|r| import::import_from(r, &conn, false));
        match outcome {
            Ok(report) => eprintln!("{name}: loaded, {} packets", report.packets),
            Err(e) => {
                check_error(&name, &e);
                eprintln!("{name}: error: {e:#}");
            }
        }
    }
}

#[test]
fn regressions_through_the_cli_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    for path in inputs() {
        // A copy, so the cache is written in the temporary directory.
        let trace = dir.path().join(path.file_name().unwrap());
        std::fs::copy(&path, &trace).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_schedlens"))
            .args([
                "query",
                trace.to_str().unwrap(),
                "SELECT COUNT(*) FROM sched",
            ])
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && matches!(out.status.code(), Some(0 | 1)),
            "{}: {:?}\n{stderr}",
            path.display(),
            out.status
        );
    }
}
