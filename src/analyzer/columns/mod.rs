//! Columnar storage for the event tables that get millions of rows (those
//! declared `in column_file` in [`tables`](crate::analyzer::tables)),
//! served to SQLite as virtual tables.
//!
//! Why: inserting rows into SQLite B-trees and sorting them into indexes
//! took ~90% of a load (about 0.5 us per row). Here a load appends
//! fixed-width values to column blocks (a few ns per value) and builds its
//! indexes with a counting sort, O(rows). This is trace_processor's own
//! answer: columns in memory exposed through SQLite's virtual-table API.
//! Ours are in a file beside the database, memory-mapped, so a loaded trace
//! opens instantly and the page cache, not our heap, holds it.
//!
//! # File format (`<database>.cols`, little-endian)
//! - 16-byte header: [`MAGIC`], then the build id (u64), which the database's
//!   metadata also records, so a database never pairs with another build's
//!   columns.
//! - Blocks of [`BLOCK_ROWS`] rows, one table per block, each column a
//!   contiguous array packed by frame of reference ([`Packing`]): offsets
//!   from the block's minimum in 0, 1, 2 or 4 bytes, or plain i64. Packing
//!   halves the file against fixed widths, and the file's size is what a
//!   load waits for once it outgrows the page cache's dirty limit. The last
//!   block of a table is padded to full size.
//! - The exception list of each table: values written into a finished
//!   block (late rows) that its packing cannot hold, sorted by (row, column).
//! - Index arrays (u32): per key column, the row ids sorted by (key, id) and
//!   the start of each key's run; per order column, the ids of its non-NULL
//!   rows sorted by (value descending, id).
//! - A JSON directory (tables, their columns, block offsets, indexes, the
//!   strings that string columns refer to), then a 16-byte trailer: the
//!   directory's offset (u64) and [`TRAILER_MAGIC`].
//!
//! Row ids are dense (0..rows) and, because the importer opens rows in
//! timestamp order, ts never decreases with the id; the directory records
//! whether that held (`ts_sorted`), and range scans on ts rely on it only
//! when it did.

mod layout;
mod store;
mod vtab;
mod writer;

pub use layout::{Layout, Phys, Source};
pub use store::Store;
pub use vtab::{MODULE, register};
pub use writer::{Cell, ColumnFile, ColumnRow, Finish, Put, StrMap, TableWriter, TextCell, row_id};

use std::path::{Path, PathBuf};

#[cfg(not(target_endian = "little"))]
compile_error!("the column file is little-endian and memory-mapped as is");

/// Rows per block.
pub const BLOCK_ROWS: usize = 1 << 16;
pub const MAGIC: &[u8; 8] = b"SLCOLS\x00\x02";
pub const TRAILER_MAGIC: &[u8; 8] = b"SLCOLEND";
/// NULL, as the store reads it.
pub const NULL_I64: i64 = i64::MIN;

/// The column file of the database at `db`.
pub fn path_for(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".cols");
    PathBuf::from(s)
}

/// The metadata key holding a columnar table's row count: SQLite cannot
/// push count(*) down to a virtual table, and counting 10^7 rows one by one
/// takes most of a second.
pub fn row_count_key(table: &str) -> String {
    format!("rows_{table}")
}

/// The row count of columnar table `table` (or of a view, which has all
/// the rows of its base table) as recorded at load, None for other tables
/// (or a database without it).
pub fn row_count(conn: &rusqlite::Connection, table: &str) -> Option<i64> {
    use crate::analyzer::schema::Item;
    let table = crate::analyzer::tables::SCHEMA
        .iter()
        .find_map(|item| match item {
            Item::View(v) if v.name == table => Some(v.base.name),
            _ => None,
        })
        .unwrap_or(table);
    Layout::by_name(table)?;
    conn.query_row(
        "SELECT int_value FROM metadata WHERE name = ?1",
        [row_count_key(table)],
        |r| r.get(0),
    )
    .ok()
    .flatten()
}

/// The first position in lo..hi where `before` turns false (it must be true
/// then false along the range).
pub(crate) fn partition(mut lo: u64, mut hi: u64, before: impl Fn(u64) -> bool) -> u64 {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if before(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}
