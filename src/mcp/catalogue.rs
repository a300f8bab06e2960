//! What a trace's database holds, for a model finding its way: the
//! list_tables and describe_table tools and the schema resource.

use rmcp::ErrorData;
use rmcp::model::{ReadResourceResult, Resource, ResourceContents};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::call::SandboxTool;
use crate::analyses::metadata::{quote_ident, row_count};
use crate::analyzer::sandbox::{self, Cell};
use crate::analyzer::{schema, stdlib};

/// Tables and views of the database, excluding SQLite's own.
fn user_tables(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut st = conn.prepare(
        "SELECT name, type FROM sqlite_schema WHERE type IN ('table', 'view')
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )?;
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
}

// --------------------------------------------------------------- list_tables

/// Arguments of list_tables: none besides the trace.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListTablesArgs {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TableList {
    pub tables: Vec<TableEntry>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TableEntry {
    pub name: String,
    /// "view"; absent for a table (most are, and the list must stay short).
    #[serde(skip_serializing_if = "is_table")]
    pub kind: String,
    pub rows: i64,
    /// What one row is.
    pub summary: String,
}

fn is_table(kind: &str) -> bool {
    kind == "table"
}

pub const LIST_TABLES: SandboxTool<ListTablesArgs, TableList> = SandboxTool {
    name: "list_tables",
    description: "Tables and views with row counts and what a row is; describe_table gives \
                  columns.",
    answer: |sandboxed, ListTablesArgs {}| {
        let conn = sandboxed.db.conn();
        let docs = schema::table_docs();
        let mut tables = Vec::new();
        for (name, kind) in user_tables(conn)? {
            let rows = row_count(conn, &name)?;
            let summary = docs
                .iter()
                .find(|d| d.name == name)
                .map(|d| d.summary.clone())
                .unwrap_or_default();
            tables.push(TableEntry {
                name,
                kind,
                rows,
                summary,
            });
        }
        Ok(TableList { tables })
    },
};

// ------------------------------------------------------------ describe_table

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DescribeTableArgs {
    /// Table or view, e.g. "sched_slice".
    pub table: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TableDescription {
    pub name: String,
    /// "table" or "view"; for a Perfetto module's object "view", "table function" or "function".
    pub kind: String,
    /// What one row is.
    pub summary: String,
    /// More detail on the table, if any.
    pub detail: String,
    pub columns: Vec<ColumnEntry>,
    /// Up to 3 rows, cells in column order.
    pub sample_rows: Vec<Vec<Cell>>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ColumnEntry {
    pub name: String,
    /// Declared type: INTEGER, TEXT, REAL.
    #[serde(rename = "type")]
    pub decl_type: String,
    pub doc: String,
}

pub const DESCRIBE_TABLE: SandboxTool<DescribeTableArgs, TableDescription> = SandboxTool {
    name: "describe_table",
    description: "Columns (type, meaning) and 3 sample rows of a table, view, or Perfetto module \
                  view/function.",
    answer: |sandboxed, a| {
        let table = a.table.trim();
        let tables = user_tables(sandboxed.db.conn())?;
        let Some((name, kind)) = tables
            .iter()
            .find(|t| t.0.eq_ignore_ascii_case(table))
            .cloned()
        else {
            if let Some((module, object)) = stdlib::object(table) {
                return Ok(module_object(module, object));
            }
            let names: Vec<&str> = tables.iter().map(|t| t.0.as_str()).collect();
            anyhow::bail!(
                "unknown table {table:?}: the tables and views are {names:?}; the Perfetto \
                 modules' views and functions are in the schema resource"
            );
        };
        let doc = schema::table_docs().iter().find(|d| d.name == name);
        let mut st = sandboxed
            .db
            .conn()
            .prepare(&format!("PRAGMA table_info({})", quote_ident(&name)))?;
        let columns = st
            .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
            .map(|c| {
                c.map(|(cname, decl)| {
                    let cdoc = doc.and_then(|d| d.columns.iter().find(|c| c.name == cname));
                    ColumnEntry {
                        decl_type: cdoc.map(|c| c.decl_type.clone()).unwrap_or(decl),
                        doc: cdoc.map(|c| c.doc.clone()).unwrap_or_default(),
                        name: cname,
                    }
                })
            })
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(st);
        let sample = sandbox::run_query(
            sandboxed.db,
            &format!("SELECT * FROM {} LIMIT 3", quote_ident(&name)),
            Some(3),
            None,
            sandboxed.limits,
            sandboxed.budget,
        )
        .map_err(anyhow::Error::msg)?;
        Ok(TableDescription {
            summary: doc.map(|d| d.summary.clone()).unwrap_or_default(),
            detail: doc.map(|d| d.detail.clone()).unwrap_or_default(),
            name,
            kind,
            columns,
            sample_rows: sample.rows,
        })
    },
};

/// A module's view or function, described from its declaration: no sample
/// rows, as it exists only in a query that includes its module.
fn module_object(module: &stdlib::Module, o: &stdlib::Object) -> TableDescription {
    let mut detail = format!(
        "From the Perfetto module {m}: start the query with INCLUDE PERFETTO MODULE {m}; then use \
         {}.",
        o.signature(),
        m = module.name
    );
    if let stdlib::Body::TableFunction { args, .. } | stdlib::Body::Scalar { args, .. } = &o.body {
        for a in *args {
            detail.push_str(&format!("\nArgument {} ({}): {}", a.name, a.ty, a.doc));
        }
    }
    TableDescription {
        name: o.name.to_string(),
        kind: o.kind().to_string(),
        summary: o.doc.to_string(),
        detail,
        columns: o
            .columns
            .iter()
            .map(|c| ColumnEntry {
                name: c.name.to_string(),
                decl_type: c.ty.to_string(),
                doc: c.doc.to_string(),
            })
            .collect(),
        sample_rows: Vec::new(),
    }
}

// --------------------------------------------------------- schema resource

pub(super) const SCHEMA_URI: &str = "schedlens://schema";

/// The resources the server lists: the table documentation.
pub(super) fn resources() -> Vec<Resource> {
    vec![
        Resource::new(SCHEMA_URI, "schema")
            .with_title("schedlens table documentation")
            .with_description("Every table and view with what a row is and what each column means.")
            .with_mime_type("text/markdown"),
    ]
}

/// The resource at `uri`.
pub(super) fn read_resource(uri: &str) -> Result<ReadResourceResult, ErrorData> {
    if uri != SCHEMA_URI {
        return Err(ErrorData::resource_not_found(
            format!("unknown resource {uri}: the only one is {SCHEMA_URI}"),
            None,
        ));
    }
    let contents = ResourceContents::TextResourceContents {
        uri: SCHEMA_URI.into(),
        mime_type: Some("text/markdown".into()),
        text: schema_markdown(),
        meta: None,
    };
    Ok(ReadResourceResult::new(vec![contents]))
}

/// The table documentation as markdown, for the schema resource.
fn schema_markdown() -> String {
    let mut md = String::from(
        "# schedlens tables\n\nTimestamps (ts, *_ts) are ns on the trace clock; durations are ns. \
         utid/upid are row ids of thread/process; utid 0 is idle (swapper).\n",
    );
    for t in schema::table_docs() {
        md.push_str(&format!(
            "\n## {} ({})\n\n{}\n",
            t.name,
            if t.is_view { "view" } else { "table" },
            t.summary
        ));
        if !t.detail.is_empty() {
            md.push_str(&format!("\n{}\n", t.detail));
        }
        md.push_str("\n| column | type | meaning |\n|---|---|---|\n");
        for c in &t.columns {
            md.push_str(&format!(
                "| {} | {} | {} |\n",
                c.name,
                c.decl_type,
                c.doc.replace('|', "\\|")
            ));
        }
    }
    md.push_str(&stdlib::reference_markdown());
    md
}
