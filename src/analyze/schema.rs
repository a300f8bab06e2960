//! schema/tables.sql and its documentation, parsed once. (Issue 3; owner: analyze.)

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

/// Every table and view, in the order of schema/tables.sql.
pub fn table_docs() -> &'static [TableDoc] {
    unimplemented!("issue 3: schema docs")
}
