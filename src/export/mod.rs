//! `schedlens export`: the tables of loaded traces as Parquet files that
//! DuckDB, Spark and Trino read, hive-partitioned by host and trace
//! (`DIR/<table>/host=H/trace=T/part-0.parquet`).
//!
//! Columns come from the table declarations (`analyzer::tables`): the same
//! names, INTEGER as INT64, TEXT as UTF8, REAL as DOUBLE, BLOB as BINARY,
//! nullable unless declared NOT NULL, plus `host` and `trace` on every row
//! because ids (utid, upid, id) are only unique within one trace. The docs of
//! the table and its columns are in the file's key-value metadata.
//!
//! The big tables are read from the column file a block at a time, each
//! block's columns decoded straight into Arrow arrays (SQL's row-at-a-time
//! virtual table cost more than the Parquet encoding); the others come from
//! the database through SQL. Either way memory is bounded by a row group,
//! not the trace.
//!
//! Each file is written under a hidden temporary name, `.part-0.parquet.
//! <random>.tmp`, locked while written, and renamed when complete: engines
//! skip names starting with '.', and an interrupted export leaves no file
//! that looks finished. The next export of the partition removes the
//! temporaries whose lock nobody holds (those of killed exports).

use crate::analyzer::columns::{self, BLOCK_ROWS, NULL_I64, Phys, Source, Store};
use crate::analyzer::db::{self, LoadOptions, LoadedTrace};
use crate::analyzer::schema::{Column, Item, Table};
use crate::analyzer::tables::SCHEMA;
use anyhow::Context;
use arrow_array::builder::{BinaryBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, new_null_array};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use rusqlite::types::ValueRef;
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;

/// Rows per Parquet row group: large enough for scans to read long runs of
/// each column, small enough that a writer holds one in memory comfortably.
pub const ROW_GROUP_ROWS: usize = 1 << 20;
/// Rows per record batch handed to the writer (it gathers them into row
/// groups): one column-file block.
const BATCH_ROWS: usize = BLOCK_ROWS;
/// The file name inside each partition (one file per table and trace).
pub const PART_FILE: &str = "part-0.parquet";
/// Columns every exported row carries besides the table's own.
pub const HOST_COLUMN: &str = "host";
pub const TRACE_COLUMN: &str = "trace";

/// Output formats of `schedlens export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Apache Parquet, zstd-compressed.
    #[default]
    Parquet,
}

/// Arguments of `schedlens export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Perfetto trace files (plain, gzip or zstd), loaded as `schedlens query` loads them.
    #[arg(required = true)]
    pub traces: Vec<PathBuf>,
    /// Output directory (created if missing); each table goes to DIR/<table>/host=H/trace=T/.
    #[arg(short = 'o', long = "out", value_name = "DIR")]
    pub out: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Parquet)]
    pub format: Format,
    /// Tables to export, comma-separated (default: every table of schema/tables.sql).
    #[arg(long, value_delimiter = ',', value_name = "TABLE,...")]
    pub tables: Vec<String>,
    /// Host label for every trace given, instead of the host name the recorder wrote
    /// (needed for traces that carry none).
    #[arg(long)]
    pub host: Option<String>,
    /// Reload the traces even if cached databases are valid.
    #[arg(long)]
    pub rebuild: bool,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let tables = select_tables(&args.tables)?;
    let mut traces = Vec::with_capacity(args.traces.len());
    for path in &args.traces {
        let loaded = db::load(path, &LoadOptions::interactive(args.rebuild))
            .with_context(|| format!("cannot load {}", path.display()))?;
        traces.push(ExportTrace::new(loaded, args.host.as_deref())?);
    }
    let report = export(&traces, &tables, &args.out)?;
    eprintln!(
        "schedlens: exported {} rows of {} tables from {} traces to {} ({} bytes)",
        report.rows,
        tables.len(),
        traces.len(),
        args.out.display(),
        report.bytes
    );
    Ok(())
}

/// The tables named by `--tables`, or all of them.
pub fn select_tables(names: &[String]) -> anyhow::Result<Vec<&'static Table>> {
    let all: Vec<&'static Table> = SCHEMA
        .iter()
        .filter_map(|item| match item {
            Item::Table(t) => Some(*t),
            Item::View(_) => None,
        })
        .collect();
    if names.is_empty() {
        return Ok(all);
    }
    names
        .iter()
        .map(|name| {
            all.iter().copied().find(|t| t.name == name).ok_or_else(|| {
                let known: Vec<&str> = all.iter().map(|t| t.name).collect();
                anyhow::anyhow!("no table {name:?} to export (tables: {})", known.join(", "))
            })
        })
        .collect()
}

/// A loaded trace and the partition values its rows are exported under.
#[derive(Debug, Clone)]
pub struct ExportTrace {
    pub loaded: LoadedTrace,
    pub host: String,
    pub trace: String,
}

impl ExportTrace {
    /// `host` overrides the host name in the trace's metadata (host_name).
    pub fn new(loaded: LoadedTrace, host: Option<&str>) -> anyhow::Result<ExportTrace> {
        let host = match host {
            Some(h) => h.to_string(),
            None => host_name(&loaded.db_path)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "{} does not name its host (not recorded by a schedlens that writes host \
                     names): label it with --host NAME",
                    loaded.trace_path.display()
                )
            })?,
        };
        let host = partition_value(&host)
            .with_context(|| format!("host name of {}", loaded.trace_path.display()))?;
        let trace = partition_value(&loaded.name)
            .with_context(|| format!("trace name of {}", loaded.trace_path.display()))?;
        Ok(ExportTrace {
            loaded,
            host,
            trace,
        })
    }
}

/// The recorder's host name of the trace loaded into `db_path`, if it wrote one.
pub fn host_name(db_path: &Path) -> anyhow::Result<Option<String>> {
    let conn = db::open_readonly(db_path)?;
    let host = conn
        .query_row(
            "SELECT str_value FROM metadata WHERE name = 'host_name'",
            [],
            |r| r.get::<_, Option<String>>(0),
        )
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    Ok(host)
}

/// A hive partition value: kept as it is when every engine reads it back
/// unchanged from the path, refused otherwise (no escaping to get wrong).
fn partition_value(v: &str) -> anyhow::Result<String> {
    let ok = !v.is_empty()
        && !v.starts_with('.')
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    anyhow::ensure!(
        ok,
        "{v:?} cannot name a partition: use letters, digits, '.', '-' and '_' (not first '.')"
    );
    Ok(v.to_string())
}

/// What an export wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExportReport {
    pub rows: u64,
    pub bytes: u64,
    pub files: u64,
}

/// The final path of `table`'s file for `trace` under `dir`.
pub fn part_path(dir: &Path, table: &Table, trace: &ExportTrace) -> PathBuf {
    dir.join(table.name)
        .join(format!("{HOST_COLUMN}={}", trace.host))
        .join(format!("{TRACE_COLUMN}={}", trace.trace))
        .join(PART_FILE)
}

/// Exports `tables` of every trace into `dir`. Refuses before writing
/// anything if a partition it would write exists already (or two traces
/// share a host and trace name); the tables are written in parallel.
pub fn export(
    traces: &[ExportTrace],
    tables: &[&'static Table],
    dir: &Path,
) -> anyhow::Result<ExportReport> {
    // Even when refusing below: a killed export's leftovers are garbage
    // whatever this one does.
    for trace in traces {
        for &table in tables {
            let path = part_path(dir, table, trace);
            remove_stale_temporaries(path.parent().expect("a partition path has a directory"));
        }
    }
    let mut jobs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for trace in traces {
        anyhow::ensure!(
            seen.insert((trace.host.as_str(), trace.trace.as_str())),
            "two traces would be exported as host={} trace={}: rename one or label it with --host",
            trace.host,
            trace.trace
        );
        for &table in tables {
            let path = part_path(dir, table, trace);
            anyhow::ensure!(
                !path.exists(),
                "{} exists already: remove it or export into another directory",
                path.display()
            );
            jobs.push((trace, table, path));
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Biggest tables first so that the last job to finish is a short one.
    jobs.sort_by_key(|(_, t, _)| !t.is_column_file());
    let jobs = Mutex::new(jobs.into_iter());
    let total = Mutex::new(ExportReport::default());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let Some((trace, table, path)) = jobs.lock().unwrap().next() else {
                            return Ok(());
                        };
                        let r = export_table(trace, table, &path)?;
                        let mut t = total.lock().unwrap();
                        t.rows += r.rows;
                        t.bytes += r.bytes;
                        t.files += 1;
                    }
                })
            })
            .collect();
        let mut first_err = None;
        for h in handles {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("an export thread panicked")));
            if let Err(e) = r {
                // The others stop after their current table: no more jobs.
                jobs.lock().unwrap().by_ref().for_each(drop);
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    })?;
    Ok(total.into_inner().unwrap())
}

/// The Arrow type of a declared column.
fn arrow_type(c: &Column) -> anyhow::Result<DataType> {
    Ok(match c.decl_type() {
        "INTEGER" => DataType::Int64,
        "TEXT" => DataType::Utf8,
        "REAL" => DataType::Float64,
        "BLOB" => DataType::Binary,
        other => anyhow::bail!(
            "column {} has SQL type {other}, which export has no type for",
            c.name
        ),
    })
}

/// The exported schema of `table`: its columns, then host and trace.
pub fn arrow_schema(table: &Table) -> anyhow::Result<SchemaRef> {
    let mut fields = Vec::with_capacity(table.columns.len() + 2);
    for c in table.columns {
        // INTEGER PRIMARY KEY is the rowid: never NULL.
        let not_null = c.not_null() || c.sql.contains("PRIMARY KEY") && c.decl_type() == "INTEGER";
        fields.push(Field::new(c.name, arrow_type(c)?, !not_null));
    }
    fields.push(Field::new(HOST_COLUMN, DataType::Utf8, false));
    fields.push(Field::new(TRACE_COLUMN, DataType::Utf8, false));
    Ok(Arc::new(Schema::new(fields)))
}

/// Documentation of the table and each column, as Parquet key-value metadata.
fn doc_metadata(table: &Table, trace: &ExportTrace) -> Vec<KeyValue> {
    let mut kv = vec![
        KeyValue::new("schedlens.table".into(), table.name.to_string()),
        KeyValue::new(
            "schedlens.table.doc".into(),
            table
                .doc
                .iter()
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        KeyValue::new("schedlens.host".into(), trace.host.clone()),
        KeyValue::new("schedlens.trace".into(), trace.trace.clone()),
        KeyValue::new(
            "schedlens.schema_version".into(),
            crate::analyzer::schema::SCHEMA_VERSION.to_string(),
        ),
    ];
    for c in table.columns {
        kv.push(KeyValue::new(
            format!("schedlens.column.{}.doc", c.name),
            c.doc(),
        ));
    }
    kv.push(KeyValue::new(
        format!("schedlens.column.{HOST_COLUMN}.doc"),
        "Host the trace was recorded on (metadata host_name, or the --host label).".to_string(),
    ));
    kv.push(KeyValue::new(
        format!("schedlens.column.{TRACE_COLUMN}.doc"),
        "Trace file name: ids (id, utid, upid) are unique only within one host and trace."
            .to_string(),
    ));
    kv
}

/// One column's values for the batch being built.
enum ColumnBuilder {
    Int(Int64Builder),
    Text(StringBuilder),
    Real(Float64Builder),
    Blob(BinaryBuilder),
}

impl ColumnBuilder {
    fn new(t: &DataType) -> ColumnBuilder {
        match t {
            DataType::Int64 => ColumnBuilder::Int(Int64Builder::with_capacity(BATCH_ROWS)),
            DataType::Utf8 => {
                ColumnBuilder::Text(StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 8))
            }
            DataType::Float64 => ColumnBuilder::Real(Float64Builder::with_capacity(BATCH_ROWS)),
            _ => ColumnBuilder::Blob(BinaryBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 8)),
        }
    }

    /// Appends one SQLite value; a value of another type than declared is an error.
    fn push(&mut self, v: ValueRef<'_>) -> Result<(), &'static str> {
        match (self, v) {
            (ColumnBuilder::Int(b), ValueRef::Integer(i)) => b.append_value(i),
            (ColumnBuilder::Int(b), ValueRef::Null) => b.append_null(),
            (ColumnBuilder::Text(b), ValueRef::Text(t)) => {
                b.append_value(std::str::from_utf8(t).map_err(|_| "text that is not UTF-8")?)
            }
            (ColumnBuilder::Text(b), ValueRef::Null) => b.append_null(),
            (ColumnBuilder::Real(b), ValueRef::Real(f)) => b.append_value(f),
            (ColumnBuilder::Real(b), ValueRef::Integer(i)) => b.append_value(i as f64),
            (ColumnBuilder::Real(b), ValueRef::Null) => b.append_null(),
            (ColumnBuilder::Blob(b), ValueRef::Blob(x)) => b.append_value(x),
            (ColumnBuilder::Blob(b), ValueRef::Null) => b.append_null(),
            _ => return Err("a value of another type than declared"),
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Int(b) => Arc::new(b.finish()),
            ColumnBuilder::Text(b) => Arc::new(b.finish()),
            ColumnBuilder::Real(b) => Arc::new(b.finish()),
            ColumnBuilder::Blob(b) => Arc::new(b.finish()),
        }
    }
}

/// Writes `table` of `trace` to `path` through a temporary file beside it.
fn export_table(trace: &ExportTrace, table: &Table, path: &Path) -> anyhow::Result<ExportReport> {
    let part_dir = path.parent().expect("a partition path has a directory");
    fs::create_dir_all(part_dir)
        .with_context(|| format!("cannot create {}", part_dir.display()))?;
    // O_EXCL under an unpredictable name; mode as File::create (umask
    // decides); removed when dropped unless persisted.
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{PART_FILE}."))
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(0o666))
        .tempfile_in(part_dir)
        .with_context(|| format!("cannot create a file in {}", part_dir.display()))?;
    // Tells remove_stale_temporaries of other exports that this one is alive.
    db::lock(tmp.as_file());
    let rows = write_file(trace, table, tmp.as_file().try_clone()?)?;
    // No clobbering: another export may have finished the partition meanwhile.
    let file = tmp.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!("{} exists already", path.display())
        } else {
            anyhow::Error::new(e.error).context(format!("cannot rename into {}", path.display()))
        }
    })?;
    Ok(ExportReport {
        rows,
        bytes: file.metadata().map_or(0, |m| m.len()),
        files: 1,
    })
}

/// Removes from `part_dir` what killed exports left: our temporaries
/// (`.part-0.parquet.<random>.tmp`) whose lock nobody holds, this user's
/// regular files only.
fn remove_stale_temporaries(part_dir: &Path) {
    let prefix = format!(".{PART_FILE}.");
    let Ok(entries) = fs::read_dir(part_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        if rest.len() <= ".tmp".len() || !rest.ends_with(".tmp") {
            continue;
        }
        let path = entry.path();
        let mine = fs::symlink_metadata(&path)
            .is_ok_and(|m| m.file_type().is_file() && m.uid() == db::euid());
        // A live export holds an exclusive lock on its temporary.
        if mine && File::open(&path).is_ok_and(|f| db::lock(&f)) {
            eprintln!(
                "schedlens: removing {} (left by an export that was killed)",
                path.display()
            );
            let _ = fs::remove_file(&path);
        }
    }
}

fn write_file(trace: &ExportTrace, table: &Table, file: File) -> anyhow::Result<u64> {
    let schema = arrow_schema(table)?;
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_key_value_metadata(Some(doc_metadata(table, trace)));
    // Row ids and timestamps of the big tables rise row by row: nearly every
    // value is new, so a dictionary is built only to be dropped, while deltas
    // are small.
    if table.is_column_file() {
        for name in ["id", "ts"] {
            props = props
                .set_column_dictionary_enabled(ColumnPath::from(name), false)
                .set_column_encoding(ColumnPath::from(name), Encoding::DELTA_BINARY_PACKED);
        }
    }
    let props = props.build();
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
    let mut batch = Batch {
        trace,
        schema,
        writer: &mut writer,
        rows: 0,
    };
    if table.is_column_file() {
        write_column_file(&mut batch, table)?;
    } else {
        write_sql(&mut batch, table)?;
    }
    let rows = batch.rows;
    writer.close()?;
    Ok(rows)
}

/// Hands record batches of one table to its file's writer.
struct Batch<'a> {
    trace: &'a ExportTrace,
    schema: SchemaRef,
    writer: &'a mut ArrowWriter<File>,
    rows: u64,
}

impl Batch<'_> {
    /// Writes `n` rows: the table's columns, then host and trace.
    fn write(&mut self, mut cols: Vec<ArrayRef>, n: usize) -> anyhow::Result<()> {
        cols.push(Arc::new(StringArray::from_iter_values(
            std::iter::repeat_n(&self.trace.host, n),
        )));
        cols.push(Arc::new(StringArray::from_iter_values(
            std::iter::repeat_n(&self.trace.trace, n),
        )));
        self.writer
            .write(&RecordBatch::try_new(self.schema.clone(), cols)?)?;
        self.rows += n as u64;
        Ok(())
    }
}

/// A column-file table, one block per record batch: each physical column
/// decoded once, in bulk, and the declared columns built from them.
fn write_column_file(batch: &mut Batch<'_>, table: &Table) -> anyhow::Result<()> {
    let db = &batch.trace.loaded.db_path;
    let store = Store::open(&columns::path_for(db))?;
    let t = store.table(table.name).with_context(|| {
        format!(
            "{} has no table {}",
            columns::path_for(db).display(),
            table.name
        )
    })?;
    let data = store.data(t);
    let layout = data.layout;
    let mut phys: Vec<Vec<i64>> = vec![Vec::with_capacity(BLOCK_ROWS); layout.phys.len()];
    for b in 0..store.blocks(data) {
        for (c, values) in phys.iter_mut().enumerate() {
            store.block_column(data, b, c, values);
        }
        let first = (b * BLOCK_ROWS) as i64;
        let n = phys.first().map_or(0, Vec::len);
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(layout.columns.len() + 2);
        for ((name, source), field) in layout.columns.iter().zip(batch.schema.fields()) {
            let col: ArrayRef = match (*source, field.data_type()) {
                (Source::Id, DataType::Int64) => {
                    Arc::new(Int64Array::from_iter_values(first..first + n as i64))
                }
                (Source::Col(c), DataType::Int64) if layout.phys[c].1 == Phys::Int => {
                    int_array(phys[c].clone())
                }
                (Source::Col(c), DataType::Utf8) if layout.phys[c].1 == Phys::Str => {
                    Arc::new(StringArray::from_iter(
                        phys[c]
                            .iter()
                            .map(|&i| (i != NULL_I64).then(|| store.string(i)).flatten()),
                    ))
                }
                (Source::Diff(x, y), DataType::Int64) => int_array(
                    phys[x]
                        .iter()
                        .zip(&phys[y])
                        .map(|(&a, &b)| {
                            if a == NULL_I64 || b == NULL_I64 {
                                NULL_I64
                            } else {
                                a.wrapping_sub(b)
                            }
                        })
                        .collect(),
                ),
                (Source::Null, t) => new_null_array(t, n),
                (_, t) => anyhow::bail!(
                    "{}.{name}: the column file stores no {t} for it",
                    table.name
                ),
            };
            cols.push(col);
        }
        batch
            .write(cols, n)
            .with_context(|| format!("{} of {}", table.name, batch.trace.loaded.name))?;
    }
    if batch.rows == 0 {
        let empty = batch.schema.fields()[..layout.columns.len()]
            .iter()
            .map(|f| new_null_array(f.data_type(), 0))
            .collect();
        batch.write(empty, 0)?;
    }
    Ok(())
}

/// Integers with [`NULL_I64`] as NULL, as an Arrow array.
fn int_array(values: Vec<i64>) -> ArrayRef {
    let nulls = values
        .contains(&NULL_I64)
        .then(|| NullBuffer::from_iter(values.iter().map(|&v| v != NULL_I64)));
    Arc::new(Int64Array::new(values.into(), nulls))
}

/// A table of the database, through SQL in rowid order.
fn write_sql(batch: &mut Batch<'_>, table: &Table) -> anyhow::Result<()> {
    let trace = batch.trace;
    let conn = db::open_readonly(&trace.loaded.db_path)?;
    let names: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
    let sql = format!(
        "SELECT {} FROM {} ORDER BY rowid",
        names.join(", "),
        table.name
    );
    let mut stmt = conn
        .prepare(&sql)
        .with_context(|| format!("cannot read {} of {}", table.name, trace.loaded.name))?;
    let mut rows = stmt.query([])?;
    let mut builders: Vec<ColumnBuilder> = batch.schema.fields()[..names.len()]
        .iter()
        .map(|f| ColumnBuilder::new(f.data_type()))
        .collect();
    let mut in_batch = 0usize;
    while let Some(row) = rows.next()? {
        for (i, b) in builders.iter_mut().enumerate() {
            b.push(row.get_ref(i)?).map_err(|what| {
                anyhow::anyhow!(
                    "{}.{} of {} holds {what}",
                    table.name,
                    names[i],
                    trace.loaded.name
                )
            })?;
        }
        in_batch += 1;
        if in_batch == BATCH_ROWS {
            batch.write(
                builders.iter_mut().map(ColumnBuilder::finish).collect(),
                in_batch,
            )?;
            in_batch = 0;
        }
    }
    if in_batch > 0 || batch.rows == 0 {
        batch.write(
            builders.iter_mut().map(ColumnBuilder::finish).collect(),
            in_batch,
        )?;
    }
    Ok(())
}
