//! What a table declaration is, and everything derived from the
//! declarations in [`tables`](crate::analyzer::tables): the CREATE
//! statements (schema/tables.sql is a copy of them, for people), the
//! documentation served to models, and the INSERT statements and writer of
//! the SQLite tables. The column file derives its layouts from the same
//! declarations (`columns::Layout`). The declaring macro is in
//! `schema/declare.rs`.

use crate::analyzer::tables;
use rusqlite::{Connection, Statement};

mod declare;
pub(crate) use declare::table;
pub use declare::{FieldType, not_null};
use std::fmt::Write as _;
use std::sync::OnceLock;

/// Version of the database layout (tables, columns and their meaning as the
/// importer fills them). Stamped in PRAGMA user_version and metadata; a cached
/// database of another version is rebuilt. Bump on any change to the
/// declarations or to what the importer writes.
pub const SCHEMA_VERSION: i64 = 17;

/// A table or a view of [`tables::SCHEMA`].
#[derive(Debug)]
pub enum Item {
    Table(&'static Table),
    View(&'static View),
}

/// One table, declared once with [`table!`].
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    /// The first line says what one row is; the others add detail.
    pub doc: &'static [&'static str],
    pub backend: Backend,
    pub columns: &'static [Column],
}

/// Where a table's rows live.
#[derive(Debug)]
pub enum Backend {
    /// An ordinary SQLite table.
    Sqlite,
    /// The memory-mapped column file, served as a virtual table: for tables
    /// with millions of rows (see `columns`).
    ColumnFile {
        /// Small-domain integer columns with a (key, id) index: equality
        /// lookups and ORDER BY key.
        keys: &'static [&'static str],
        /// A column with a descending-order index over its non-NULL values
        /// (worst-first queries).
        order: Option<&'static str>,
    },
}

#[derive(Debug)]
pub struct Column {
    pub name: &'static str,
    /// The SQL type and constraints, as in the CREATE statement
    /// (`INTEGER NOT NULL`, `TEXT`, `INTEGER PRIMARY KEY`).
    pub sql: &'static str,
    /// What the column means, in lines as written in the declaration.
    pub doc: &'static [&'static str],
    pub fill: Fill,
}

/// How a column gets its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// A field of the row struct. In the column file: an integer, or for
    /// TEXT an index into the file's strings.
    Field,
    /// The row id: the row's position in the column file (the row struct
    /// carries it, since rows are numbered when they open), or numbered from
    /// 0 by the SQLite writer.
    RowId,
    /// Another column's value (an alias, for Perfetto compatibility).
    SameAs(&'static str),
    /// One column minus another; NULL if either is NULL. Column file only.
    Difference(&'static str, &'static str),
    /// Never written: NULL in every row (Perfetto compatibility).
    Null,
}

/// A view over one table: all of its rows and columns, and some more; or,
/// with `from`, exactly its `columns` over that FROM clause.
#[derive(Debug)]
pub struct View {
    pub name: &'static str,
    pub doc: &'static [&'static str],
    pub base: &'static Table,
    pub columns: &'static [ViewColumn],
    /// The FROM clause (and WHERE) when the view is not `SELECT *` of `base`.
    pub from: Option<&'static str>,
}

#[derive(Debug)]
pub struct ViewColumn {
    pub name: &'static str,
    pub sql: &'static str,
    /// Its value, in SQL over the base table's columns.
    pub expr: &'static str,
    pub doc: &'static str,
}

impl Table {
    pub fn is_column_file(&self) -> bool {
        matches!(self.backend, Backend::ColumnFile { .. })
    }

    pub fn column(&self, name: &str) -> Option<&'static Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Position of field `name` among the row struct's fields that the
    /// column file stores (physical column order). Evaluated at compile
    /// time where it is used in a const, so a wrong name does not build.
    pub const fn stored_column(&self, name: &str) -> usize {
        let mut i = 0;
        let mut stored = 0;
        while i < self.columns.len() {
            let c = &self.columns[i];
            if matches!(c.fill, Fill::Field) {
                if str_eq(c.name, name) {
                    return stored;
                }
                stored += 1;
            }
            i += 1;
        }
        panic!("no such stored column")
    }

    fn summary(&self) -> &'static str {
        self.doc.first().map_or("", |l| l.trim())
    }

    fn detail(&self) -> String {
        doc_lines(self.doc.get(1..).unwrap_or_default())
    }
}

impl Column {
    /// The declared type alone (`INTEGER`), without constraints.
    pub fn decl_type(&self) -> &'static str {
        self.sql.split_whitespace().next().unwrap_or("")
    }

    pub fn not_null(&self) -> bool {
        not_null(self.sql)
    }

    /// The documentation as one line.
    pub fn doc(&self) -> String {
        let mut out = String::new();
        for line in self.doc {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(line.trim());
        }
        out
    }
}

impl View {
    fn select(&self) -> String {
        let mut exprs: Vec<String> = Vec::new();
        if self.from.is_none() {
            exprs.push("*".into());
        }
        exprs.extend(
            self.columns
                .iter()
                .map(|c| format!("{} AS {}", c.expr, c.name)),
        );
        format!(
            "SELECT {} FROM {}",
            exprs.join(", "),
            self.from.unwrap_or(self.base.name)
        )
    }

    /// The base table's columns that the view repeats.
    fn base_columns(&self) -> &'static [Column] {
        if self.from.is_some() {
            &[]
        } else {
            self.base.columns
        }
    }
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

fn doc_lines(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The CREATE statements of every table and view, with their
/// documentation as SQL comments: what schema/tables.sql holds.
pub fn create_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let mut out = String::new();
        for line in tables::HEADER {
            out.push_str("--");
            if !line.is_empty() {
                out.push(' ');
                out.push_str(line);
            }
            out.push('\n');
        }
        column_file_note(&mut out);
        for item in tables::SCHEMA {
            out.push('\n');
            match item {
                Item::Table(t) => create_table(&mut out, t),
                Item::View(v) => create_view(&mut out, v),
            }
        }
        out
    })
}

/// Which tables the column file holds and what their indexes make fast.
fn column_file_note(out: &mut String) {
    out.push_str(
        "-- These tables are virtual tables over the column file beside the database\n\
         -- (src/analyzer/columns): fast on id and ts (ranges and ORDER BY), on their keys (equality,\n\
         -- ORDER BY, GROUP BY) and on ORDER BY <order> DESC; other conditions scan.\n",
    );
    for item in tables::SCHEMA {
        if let Item::Table(t) = item
            && let Backend::ColumnFile { keys, order } = t.backend
        {
            let _ = write!(out, "--   {}: keys {}", t.name, keys.join(", "));
            if let Some(o) = order {
                let _ = write!(out, "; order {o}");
            }
            out.push('\n');
        }
    }
}

fn comment_lines(out: &mut String, name: &str, doc: &[&str]) {
    let mut lines = doc.iter().map(|l| l.trim());
    let _ = writeln!(out, "-- @table {name}: {}", lines.next().unwrap_or(""));
    for line in lines {
        let _ = writeln!(out, "-- {line}");
    }
}

fn create_table(out: &mut String, t: &Table) {
    comment_lines(out, t.name, t.doc);
    match t.backend {
        Backend::Sqlite => {
            let _ = writeln!(out, "CREATE TABLE {} (", t.name);
        }
        Backend::ColumnFile { .. } => {
            let _ = writeln!(
                out,
                "CREATE VIRTUAL TABLE {} USING {}(",
                t.name,
                crate::analyzer::columns::MODULE
            );
        }
    }
    for (i, c) in t.columns.iter().enumerate() {
        let comma = if i + 1 < t.columns.len() { "," } else { "" };
        let _ = writeln!(out, "  {} {}{comma} -- {}", c.name, c.sql, c.doc());
    }
    out.push_str(");\n");
}

fn create_view(out: &mut String, v: &View) {
    comment_lines(out, v.name, v.doc);
    for c in v.columns {
        let _ = writeln!(out, "-- @column {} {}: {}", c.name, c.sql, c.doc);
    }
    let _ = writeln!(out, "CREATE VIEW {} AS {};", v.name, v.select());
}

/// One column's documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDoc {
    pub name: String,
    /// Declared SQLite type (INTEGER, TEXT, REAL, BLOB).
    pub decl_type: String,
    pub doc: String,
}

/// One table's or view's documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDoc {
    pub name: String,
    /// What one row is.
    pub summary: String,
    /// More about it, in lines.
    pub detail: String,
    pub is_view: bool,
    pub columns: Vec<ColumnDoc>,
}

/// Every table and view, in schema order.
pub fn table_docs() -> &'static [TableDoc] {
    static DOCS: OnceLock<Vec<TableDoc>> = OnceLock::new();
    DOCS.get_or_init(|| tables::SCHEMA.iter().map(item_doc).collect())
}

/// One table's documentation by name.
pub fn table_doc(name: &str) -> Option<&'static TableDoc> {
    table_docs().iter().find(|t| t.name == name)
}

fn column_docs(columns: &'static [Column]) -> impl Iterator<Item = ColumnDoc> {
    columns.iter().map(|c| ColumnDoc {
        name: c.name.to_string(),
        decl_type: c.decl_type().to_string(),
        doc: c.doc(),
    })
}

fn item_doc(item: &Item) -> TableDoc {
    match item {
        Item::Table(t) => TableDoc {
            name: t.name.to_string(),
            summary: t.summary().to_string(),
            detail: t.detail(),
            is_view: false,
            columns: column_docs(t.columns).collect(),
        },
        Item::View(v) => TableDoc {
            name: v.name.to_string(),
            summary: v.doc.first().map_or("", |l| l.trim()).to_string(),
            detail: doc_lines(v.doc.get(1..).unwrap_or_default()),
            is_view: true,
            columns: column_docs(v.base_columns())
                .chain(v.columns.iter().map(|c| ColumnDoc {
                    name: c.name.to_string(),
                    decl_type: c.sql.to_string(),
                    doc: c.doc.to_string(),
                }))
                .collect(),
        },
    }
}

/// A row of an SQLite table: a struct [`table!`] declares.
pub trait SqlRow {
    const TABLE: &'static Table;
    /// Binds the row's fields, in declaration order, from parameter `first`.
    fn bind(&self, st: &mut Statement<'_>, first: usize) -> rusqlite::Result<()>;
}

/// Inserts rows into one SQLite table, through the statement its
/// declaration derives. Numbers the rows when the table's id is
/// [`Fill::RowId`].
pub struct SqlWriter<'c> {
    table: &'static Table,
    st: Statement<'c>,
    next_id: Option<i64>,
}

impl<'c> SqlWriter<'c> {
    pub fn new(conn: &'c Connection, table: &'static Table) -> rusqlite::Result<SqlWriter<'c>> {
        Ok(SqlWriter {
            table,
            st: conn.prepare(&insert_sql(table))?,
            next_id: table
                .columns
                .iter()
                .any(|c| c.fill == Fill::RowId)
                .then_some(0),
        })
    }

    pub fn insert<R: SqlRow>(&mut self, row: &R) -> rusqlite::Result<()> {
        debug_assert!(std::ptr::eq(R::TABLE, self.table), "{}", self.table.name);
        let first = match &mut self.next_id {
            Some(id) => {
                self.st.raw_bind_parameter(1, *id)?;
                *id += 1;
                2
            }
            None => 1,
        };
        row.bind(&mut self.st, first)?;
        self.st.raw_execute().map(drop)
    }
}

/// `INSERT INTO t (...) VALUES (...)`: the row id (if numbered) is ?1, the
/// fields follow in declaration order, an alias repeats its column's
/// parameter, and columns that are never written are left out.
fn insert_sql(t: &Table) -> String {
    let numbered = t.columns.iter().any(|c| c.fill == Fill::RowId);
    let mut fields = Vec::new();
    for c in t.columns {
        if c.fill == Fill::Field {
            fields.push(c.name);
        }
    }
    let field_param = |name: &str| {
        let at = fields.iter().position(|f| *f == name);
        at.map(|i| i + 1 + usize::from(numbered))
    };
    let (mut names, mut params) = (Vec::new(), Vec::new());
    for c in t.columns {
        let param = match c.fill {
            Fill::RowId => Some(1),
            Fill::Field => field_param(c.name),
            Fill::SameAs(other) if t.column(other).is_some_and(|c| c.fill == Fill::RowId) => {
                Some(1)
            }
            Fill::SameAs(other) => field_param(other),
            Fill::Difference(..) | Fill::Null => None,
        };
        if let Some(p) = param {
            names.push(c.name);
            params.push(format!("?{p}"));
        }
    }
    format!(
        "INSERT INTO {} ({}) VALUES ({})",
        t.name,
        names.join(", "),
        params.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyzer::tables::SCHEMA;

    /// schema/tables.sql is the declarations' CREATE statements, for people
    /// to read; SCHEDLENS_WRITE_SCHEMA=1 rewrites it.
    #[test]
    fn schema_file_matches_the_declarations() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/tables.sql");
        if std::env::var_os("SCHEDLENS_WRITE_SCHEMA").is_some() {
            std::fs::write(path, create_sql()).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == create_sql(),
            "schema/tables.sql differs from the table declarations in src/analyzer/tables.rs; \
             regenerate it with: SCHEDLENS_WRITE_SCHEMA=1 cargo test --lib schema_file"
        );
    }

    #[test]
    fn declarations_are_consistent() {
        let mut names = std::collections::HashSet::new();
        for item in SCHEMA {
            let (name, columns) = match item {
                Item::Table(t) => (t.name, t.columns),
                Item::View(v) => {
                    assert!(
                        SCHEMA
                            .iter()
                            .any(|i| matches!(i, Item::Table(t) if std::ptr::eq(*t, v.base))),
                        "{}: its base table is not in the schema",
                        v.name
                    );
                    (v.name, v.base_columns())
                }
            };
            assert!(names.insert(name), "{name} declared twice");
            assert!(!item_doc(item).summary.is_empty(), "{name}: no summary");
            let mut cols = std::collections::HashSet::new();
            for c in columns {
                assert!(cols.insert(c.name), "{name}.{} declared twice", c.name);
                assert!(!c.doc().is_empty(), "{name}.{}: no doc", c.name);
                assert!(
                    ["INTEGER", "TEXT", "REAL", "BLOB"].contains(&c.decl_type()),
                    "{name}.{}: {}",
                    c.name,
                    c.sql
                );
            }
            let Item::Table(t) = item else { continue };
            let field = |n: &str| t.column(n).is_some_and(|c| c.fill == Fill::Field);
            for c in t.columns {
                match c.fill {
                    Fill::SameAs(o) => {
                        // The SQLite writer numbers rows itself, so it can
                        // repeat the id; the column file repeats fields only.
                        let row_id = !t.is_column_file()
                            && t.column(o).is_some_and(|c| c.fill == Fill::RowId);
                        assert!(field(o) || row_id, "{name}.{}: no field {o}", c.name)
                    }
                    Fill::Difference(a, b) => {
                        assert!(
                            t.is_column_file(),
                            "{name}.{}: difference in SQLite",
                            c.name
                        );
                        assert!(field(a) && field(b), "{name}.{}", c.name);
                    }
                    Fill::Null => assert!(!c.not_null(), "{name}.{}: NULL in a NOT NULL", c.name),
                    Fill::Field | Fill::RowId => {}
                }
                if t.is_column_file() && c.fill == Fill::Field {
                    assert!(
                        ["INTEGER", "TEXT"].contains(&c.decl_type()),
                        "{name}.{}: the column file stores integers and strings",
                        c.name
                    );
                }
            }
            if let Backend::ColumnFile { keys, order } = t.backend {
                assert_eq!(t.columns[0].fill, Fill::RowId, "{name}: id first");
                assert!(field("ts"), "{name}: rows are opened in ts order");
                for k in keys {
                    assert!(field(k), "{name}: key {k}");
                }
                if let Some(o) = order {
                    assert!(t.column(o).is_some(), "{name}: order {o}");
                }
            }
        }
        assert!(names.contains("sched") && names.contains("sched_slice"));
    }

    #[test]
    fn sqlite_creates_exactly_the_declared_tables() {
        let conn = Connection::open_in_memory().unwrap();
        crate::analyzer::columns::register(&conn).unwrap();
        conn.execute_batch(create_sql()).unwrap();
        for doc in table_docs() {
            let mut st = conn
                .prepare(&format!("PRAGMA table_info({})", doc.name))
                .unwrap();
            let cols: Vec<(String, String)> = st
                .query_map([], |r| Ok((r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            // A view's computed columns have no declared type.
            let want: Vec<(String, String)> = doc
                .columns
                .iter()
                .zip(&cols)
                .map(|(c, got)| {
                    let typed = !doc.is_view || !got.1.is_empty();
                    (
                        c.name.clone(),
                        if typed {
                            c.decl_type.clone()
                        } else {
                            String::new()
                        },
                    )
                })
                .collect();
            assert_eq!(cols, want, "{}", doc.name);
        }
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type IN ('table', 'view')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n as usize, table_docs().len());
        // Every SQLite table's INSERT prepares against it.
        for item in SCHEMA {
            if let Item::Table(t) = item
                && !t.is_column_file()
            {
                SqlWriter::new(&conn, t).unwrap_or_else(|e| panic!("{}: {e}", t.name));
            }
        }
    }

    #[test]
    fn inserts_number_rows_and_repeat_aliases() {
        assert_eq!(
            insert_sql(&tables::FTRACE_EVENT),
            "INSERT INTO ftrace_event (id, ts, name, cpu, utid, arg_set_id, common_flags, ucpu, \
             args) VALUES (?1, ?2, ?3, ?4, ?5, ?1, ?6, ?4, ?7)"
        );
        assert_eq!(
            insert_sql(&tables::CPU),
            "INSERT INTO cpu (id, cpu, cluster_id, processor, capacity, package_id, core_id, \
             llc_id, numa_node, max_freq_khz, shard) VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        );
        assert_eq!(tables::THREAD_STATE.stored_column("io_wait"), 5);
    }
}
