//! `schedlens query TRACE SQL`: any read-only statement, with no row caps
//! (those are for models), on a connection that cannot write.

use crate::analyzer::db::{self, LoadOptions};
use crate::analyzer::{sandbox, stdlib};
use anyhow::Context;
use rusqlite::Connection;
use rusqlite::types::ValueRef;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Output formats of `schedlens query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// An aligned text table.
    #[default]
    Table,
    /// RFC 4180 CSV as Perfetto's diff tests write it: quoted header and
    /// strings, bare integers, doubles with six decimals, NULL as "[NULL]".
    Csv,
    /// A JSON array with one object per row.
    Json,
}

/// Arguments of `schedlens query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Perfetto trace file (plain, gzip or zstd).
    pub trace: PathBuf,
    /// One SQL statement over the tables of schema/tables.sql (sched, thread_state, thread, ...),
    /// after any `INCLUDE PERFETTO MODULE m;` statements (an unknown module's error lists the
    /// supported ones).
    pub sql: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Reload the trace even if a cached database is valid.
    #[arg(long)]
    pub rebuild: bool,
}

pub fn run(args: QueryArgs) -> anyhow::Result<()> {
    let loaded = db::load(&args.trace, &LoadOptions::interactive(args.rebuild))?;
    let (conn, sql) = open_for(&loaded.db_path, &args.sql)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    write_query(&conn, sql, args.format, &mut out)?;
    out.flush()?;
    Ok(())
}

/// Opens the database `db` for `sql`, which may start with
/// `INCLUDE PERFETTO MODULE m;` statements: the connection has those
/// modules' objects, and the statement to run is returned.
pub fn open_for<'s>(db: &Path, sql: &'s str) -> anyhow::Result<(Connection, &'s str)> {
    let (modules, rest) = stdlib::split_includes(sql).map_err(anyhow::Error::msg)?;
    let (conn, _) = sandbox::open_read_only_with(db, &modules).map_err(anyhow::Error::msg)?;
    Ok((conn, rest))
}

/// Runs `sql` and writes its result in `format`. SQL errors are one line.
pub fn write_query(
    conn: &Connection,
    sql: &str,
    format: Format,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut stmt = conn
        .prepare(sql)
        .map_err(|e| anyhow::anyhow!("SQL error: {}", one_line(&e)))?;
    // Checked before the first step: VACUUM INTO would create its file even
    // on a read-only connection before failing.
    if !stmt.readonly() {
        anyhow::bail!(
            "not allowed: schedlens query only reads; this statement would write (the trace's \
             database never changes)"
        );
    }
    let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
    let mut rows = stmt
        .query([])
        .map_err(|e| anyhow::anyhow!("SQL error: {}", one_line(&e)))?;
    let mut table = comfy_table::Table::new();
    if format == Format::Table {
        table
            .load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
            .set_header(&names);
    }
    match format {
        Format::Csv => {
            let header: Vec<String> = names.iter().map(|n| quote(n)).collect();
            writeln!(out, "{}", header.join(","))?;
        }
        Format::Json => write!(out, "[")?,
        Format::Table => {}
    }
    let mut first = true;
    loop {
        let row = match rows.next() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => anyhow::bail!("SQL error: {}", one_line(&e)),
        };
        match format {
            Format::Csv => {
                let mut cells = Vec::with_capacity(names.len());
                for i in 0..names.len() {
                    cells.push(csv_cell(row.get_ref(i)?));
                }
                writeln!(out, "{}", cells.join(","))?;
            }
            Format::Json => {
                let mut obj = String::from(if first { "\n  {" } else { ",\n  {" });
                for (i, name) in names.iter().enumerate() {
                    if i > 0 {
                        obj.push_str(", ");
                    }
                    obj.push_str(&serde_json::to_string(name)?);
                    obj.push_str(": ");
                    obj.push_str(&json_cell(row.get_ref(i)?)?);
                }
                obj.push('}');
                write!(out, "{obj}")?;
            }
            Format::Table => {
                let mut cells = Vec::with_capacity(names.len());
                for i in 0..names.len() {
                    cells.push(text_cell(row.get_ref(i)?));
                }
                table.add_row(cells);
            }
        }
        first = false;
    }
    match format {
        Format::Json => writeln!(out, "{}]", if first { "" } else { "\n" })?,
        Format::Table => writeln!(out, "{table}")?,
        Format::Csv => {}
    }
    Ok(())
}

fn one_line(e: &rusqlite::Error) -> String {
    let msg = e.to_string().replace('\n', " ");
    match stdlib::include_hint(&msg) {
        Some(hint) => format!("{msg} ({hint})"),
        None => msg,
    }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn csv_cell(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => quote("[NULL]"),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => format!("{f:.6}"),
        ValueRef::Text(t) => quote(&String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => quote(&hex(b)),
    }
}

fn json_cell(v: ValueRef<'_>) -> anyhow::Result<String> {
    Ok(match v {
        ValueRef::Null => "null".to_string(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => serde_json::to_string(&f)?,
        ValueRef::Text(t) => serde_json::to_string(&String::from_utf8_lossy(t))?,
        ValueRef::Blob(b) => serde_json::to_string(&hex(b))?,
    })
}

fn text_cell(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".to_string(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Blob(b) => hex(b),
    }
}

/// Runs `sql` and returns Perfetto-style CSV (for tests and tools).
pub fn query_csv(conn: &Connection, sql: &str) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    write_query(conn, sql, Format::Csv, &mut buf)?;
    String::from_utf8(buf).context("CSV output is not UTF-8")
}
