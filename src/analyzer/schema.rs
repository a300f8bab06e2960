//! schema/tables.sql and its documentation, parsed once. (Issue 3; owner: analyze.)

use std::sync::OnceLock;

/// One column's documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDoc {
    pub name: String,
    /// Declared SQLite type (INTEGER, TEXT, REAL).
    pub decl_type: String,
    pub doc: String,
}

/// One table's or view's documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDoc {
    pub name: String,
    /// The `@table` line: what one row is.
    pub summary: String,
    /// The further `--` lines.
    pub detail: String,
    pub is_view: bool,
    pub columns: Vec<ColumnDoc>,
}

/// The schema text, as created in every database.
pub const TABLES_SQL: &str = include_str!("../../schema/tables.sql");

/// Version of the database layout (tables, columns and their meaning as the
/// importer fills them). Stamped in PRAGMA user_version and metadata; a cached
/// database of another version is rebuilt. Bump on any change to tables.sql or
/// to what the importer writes.
pub const SCHEMA_VERSION: i64 = 4;

/// Every table and view, in the order of schema/tables.sql.
pub fn table_docs() -> &'static [TableDoc] {
    static DOCS: OnceLock<Vec<TableDoc>> = OnceLock::new();
    DOCS.get_or_init(|| parse(TABLES_SQL))
}

/// One table's documentation by name.
pub fn table_doc(name: &str) -> Option<&'static TableDoc> {
    table_docs().iter().find(|t| t.name == name)
}

fn parse(sql: &str) -> Vec<TableDoc> {
    let mut out: Vec<TableDoc> = Vec::new();
    let mut current: Option<TableDoc> = None;
    let mut in_body = false;
    for line in sql.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("-- @table ") {
            if let Some(done) = current.take() {
                out.push(done);
            }
            let (name, summary) = rest.split_once(':').unwrap_or((rest, ""));
            current = Some(TableDoc {
                name: name.trim().to_string(),
                summary: summary.trim().to_string(),
                detail: String::new(),
                is_view: false,
                columns: Vec::new(),
            });
            in_body = false;
            continue;
        }
        let Some(doc) = current.as_mut() else {
            continue;
        };
        if let Some(rest) = t.strip_prefix("-- @column ") {
            let (head, text) = rest.split_once(':').unwrap_or((rest, ""));
            let mut words = head.split_whitespace();
            doc.columns.push(ColumnDoc {
                name: words.next().unwrap_or("").to_string(),
                decl_type: words.next().unwrap_or("").to_string(),
                doc: text.trim().to_string(),
            });
        } else if let Some(rest) = t.strip_prefix("-- ").or(t.strip_prefix("--")) {
            if !in_body {
                if !doc.detail.is_empty() {
                    doc.detail.push('\n');
                }
                doc.detail.push_str(rest.trim());
            }
        } else if t.starts_with("CREATE TABLE") || t.starts_with("CREATE VIRTUAL TABLE") {
            in_body = true;
        } else if t.starts_with("CREATE VIEW") {
            doc.is_view = true;
            // `SELECT *, ... FROM base`: the view has the base table's columns first.
            if t.contains("SELECT *")
                && let Some(base) = t.split(" FROM ").nth(1)
            {
                let base = base.trim_end_matches(';').trim();
                if let Some(b) = out.iter().find(|d| d.name == base) {
                    let mut cols = b.columns.clone();
                    cols.append(&mut doc.columns);
                    doc.columns = cols;
                }
            }
        } else if t.starts_with(");") {
            in_body = false;
        } else if in_body && !t.is_empty() {
            let (def, text) = t.split_once("--").unwrap_or((t, ""));
            let mut words = def.split_whitespace();
            doc.columns.push(ColumnDoc {
                name: words.next().unwrap_or("").to_string(),
                decl_type: words.next().unwrap_or("").trim_end_matches(',').to_string(),
                doc: text.trim().to_string(),
            });
        }
    }
    if let Some(done) = current {
        out.push(done);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_and_column_is_documented() {
        let docs = table_docs();
        for name in [
            "sched_slice",
            "sched",
            "thread_state",
            "thread",
            "process",
            "cpu",
            "ftrace_event",
            "wakeup",
            "task_event",
            "lost_events",
            "metadata",
            "stats",
        ] {
            let t = table_doc(name).unwrap_or_else(|| panic!("{name} undocumented"));
            assert!(!t.summary.is_empty(), "{name}");
            assert!(!t.columns.is_empty(), "{name}");
            for c in &t.columns {
                assert!(!c.doc.is_empty(), "{name}.{}", c.name);
                assert!(
                    ["INTEGER", "TEXT", "REAL"].contains(&c.decl_type.as_str()),
                    "{name}.{} {}",
                    c.name,
                    c.decl_type
                );
            }
        }
        let sched = table_doc("sched").unwrap();
        assert!(sched.is_view);
        assert_eq!(sched.columns.last().unwrap().name, "ts_end");
        assert_eq!(sched.columns[0].name, "id");
        // The parsed tables are exactly those SQLite creates.
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        crate::analyzer::columns::register(&conn).unwrap();
        conn.execute_batch(TABLES_SQL).unwrap();
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type IN ('table', 'view')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n as usize, docs.len());
    }
}
