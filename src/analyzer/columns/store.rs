//! Reading a column file: mapped once, checked once, then read in place.

use super::layout::{Bulk, Directory, Layout, Packing, Phys, Source, Stored};
use super::writer::exception_key;
use super::{BLOCK_ROWS, MAGIC, NULL_I64, TRAILER_MAGIC};
use anyhow::{Context, bail, ensure};
use memmap2::Mmap;
use std::fs::File;
use std::path::Path;

/// A checked, mapped column file.
pub struct Store {
    map: Mmap,
    pub build_id: u64,
    tables: Vec<TableData>,
    strings: Vec<String>,
}

/// One table of a [`Store`].
pub struct TableData {
    pub layout: &'static Layout,
    pub rows: u64,
    /// Where each block's columns are and how they are packed: block b's
    /// physical column c is `cells[b * columns + c]`.
    cells: Vec<Cell>,
    /// The exception list: offset and entries.
    exceptions: (usize, usize),
    /// Whether ts never decreases with the row id.
    pub ts_sorted: bool,
    pub keys: Vec<KeyIndex>,
    pub order: Option<OrderIndex>,
}

/// One column of one block.
#[derive(Clone, Copy)]
struct Cell {
    /// File offset of the column's values.
    at: usize,
    packing: Packing,
}

/// See [`super::layout::KeyDir`].
pub struct KeyIndex {
    /// Physical column.
    pub column: usize,
    /// Distinct keys (0..keys).
    pub keys: u64,
    starts: usize,
    perm: usize,
    perm_len: u64,
}

/// See [`super::layout::OrderDir`].
pub struct OrderIndex {
    /// Declared column.
    pub column: usize,
    perm: usize,
    pub len: u64,
}

/// A value as SQL sees it.
pub enum Value<'a> {
    Null,
    Int(i64),
    Text(&'a str),
}

impl Store {
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: the file is a finished cache file that schedlens never
        // modifies after renaming it into place (a rebuild writes a new file
        // and renames over it; this mapping keeps the old one).
        let map = unsafe { Mmap::map(&file) }
            .with_context(|| format!("cannot map {}", path.display()))?;
        Store::check(map).with_context(|| format!("{} is not a valid column file", path.display()))
    }

    fn check(map: Mmap) -> anyhow::Result<Store> {
        let len = map.len();
        ensure!(len >= 32 && &map[..8] == MAGIC, "bad header");
        ensure!(&map[len - 8..] == TRAILER_MAGIC, "incomplete (no trailer)");
        let build_id = u64_at(&map, 8);
        let dir_off = usize::try_from(u64_at(&map, len - 16))?;
        ensure!((16..=len - 16).contains(&dir_off), "bad directory offset");
        let dir: Directory =
            serde_json::from_slice(&map[dir_off..len - 16]).context("bad directory")?;
        ensure!(dir.build_id == build_id, "directory of another build");
        // Every size and offset below comes from the file: each product and
        // sum is checked, so a hostile count cannot wrap into a small one.
        let in_data = |off: u64, bytes: Option<u64>| -> anyhow::Result<usize> {
            let end = bytes
                .and_then(|b| off.checked_add(b))
                .context("section size overflows")?;
            ensure!(
                end <= dir_off as u64 && off % 4 == 0,
                "section out of bounds"
            );
            Ok(usize::try_from(off)?)
        };
        let mut tables = Vec::new();
        for t in dir.tables {
            let Some(layout) = Layout::by_name(&t.name) else {
                bail!("unknown table {}", t.name)
            };
            ensure!(
                t.phys.len() == layout.phys.len()
                    && t.phys
                        .iter()
                        .zip(&layout.phys)
                        .all(|(a, b)| a.0 == b.0 && a.1 == b.1),
                "{} has columns of another version",
                t.name
            );
            ensure!(
                t.blocks.len() as u64 == t.rows.div_ceil(BLOCK_ROWS as u64)
                    && t.rows < u32::MAX.into(),
                "{}: row count and blocks disagree",
                t.name
            );
            let mut cells = Vec::with_capacity(t.blocks.len().saturating_mul(layout.phys.len()));
            for b in &t.blocks {
                ensure!(
                    b.columns.len() == layout.phys.len()
                        && b.columns
                            .iter()
                            .all(|p| matches!(p.width, 0 | 1 | 2 | 4 | 8)),
                    "{}: bad block packing",
                    t.name
                );
                let bytes = b
                    .columns
                    .iter()
                    .try_fold(0u64, |sum, p| sum.checked_add(p.bytes() as u64));
                let mut at = in_data(b.offset, bytes)?;
                for &packing in &b.columns {
                    cells.push(Cell { at, packing });
                    at += packing.bytes();
                }
            }
            let exceptions = (
                in_data(t.exceptions.0, t.exceptions.1.checked_mul(16))?,
                usize::try_from(t.exceptions.1)?,
            );
            let mut keys = Vec::new();
            for k in t.keys {
                ensure!(k.column < layout.phys.len(), "bad key column");
                let starts_bytes = k.keys.checked_add(1).and_then(|n| n.checked_mul(4));
                let starts = in_data(k.starts, starts_bytes)?;
                // In bounds: starts_bytes = (keys + 1) * 4 fits in the data.
                let perm_len = u64::from(u32_at(&map, starts + k.keys as usize * 4));
                ensure!(perm_len <= t.rows, "bad key index");
                keys.push(KeyIndex {
                    column: k.column,
                    keys: k.keys,
                    starts,
                    perm: in_data(k.perm, perm_len.checked_mul(4))?,
                    perm_len,
                });
            }
            let order = match t.order {
                Some(o) => {
                    ensure!(
                        o.column < layout.columns.len() && o.len <= t.rows,
                        "bad order index"
                    );
                    Some(OrderIndex {
                        column: o.column,
                        perm: in_data(o.perm, o.len.checked_mul(4))?,
                        len: o.len,
                    })
                }
                None => None,
            };
            tables.push(TableData {
                layout,
                rows: t.rows,
                cells,
                exceptions,
                ts_sorted: t.ts_sorted,
                keys,
                order,
            });
        }
        Ok(Store {
            map,
            build_id,
            tables,
            strings: dir.strings,
        })
    }

    pub fn table(&self, name: &str) -> Option<usize> {
        self.tables.iter().position(|t| t.layout.name == name)
    }

    pub fn data(&self, table: usize) -> &TableData {
        &self.tables[table]
    }

    /// Physical column `col` of `row` as i64, NULL as [`NULL_I64`]. Inlined
    /// into the virtual table's xColumn, which runs once per row and column.
    #[inline(always)]
    pub fn raw(&self, t: &TableData, col: usize, row: u64) -> i64 {
        let (b, slot) = ((row as usize) / BLOCK_ROWS, (row as usize) % BLOCK_ROWS);
        let cell = t.cells[b * t.layout.phys.len() + col];
        match cell.packing.read(&self.map[cell.at..], slot) {
            Stored::Value(v) => v,
            Stored::Exception => self.exception(t, row, col),
        }
    }

    /// Blocks of table `t`.
    pub fn blocks(&self, t: &TableData) -> usize {
        t.rows.div_ceil(BLOCK_ROWS as u64) as usize
    }

    /// Physical column `col` of every row of block `b`, NULL as
    /// [`NULL_I64`], into `out` (cleared): a whole column a block at a time,
    /// for readers of every row (export) that a per-value [`Store::raw`]
    /// would slow down.
    pub fn block_column(&self, t: &TableData, b: usize, col: usize, out: &mut Vec<i64>) {
        let first = (b * BLOCK_ROWS) as u64;
        let n = t.rows.saturating_sub(first).min(BLOCK_ROWS as u64) as usize;
        let cell = t.cells[b * t.layout.phys.len() + col];
        let p = cell.packing;
        // In bounds: open checked that every block lies in the data.
        let bytes = &self.map[cell.at..cell.at + n * usize::from(p.width)];
        out.clear();
        match p.width {
            _ if p.exceptions => out.extend((0..n).map(|slot| match p.read(bytes, slot) {
                Stored::Value(v) => v,
                Stored::Exception => self.exception(t, first + slot as u64, col),
            })),
            0 => out.resize(n, NULL_I64),
            1 => Bulk::<1>::unpack(p, bytes, out),
            2 => Bulk::<2>::unpack(p, bytes, out),
            4 => Bulk::<4>::unpack(p, bytes, out),
            _ => Bulk::<8>::unpack(p, bytes, out),
        }
    }

    /// The string a Str column's value `i` refers to.
    pub fn string(&self, i: i64) -> Option<&str> {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.strings.get(i))
            .map(String::as_str)
    }

    /// The exception of (row, col); NULL if there is none.
    #[cold]
    fn exception(&self, t: &TableData, row: u64, col: usize) -> i64 {
        let key = exception_key(row, col);
        let entry = |i: usize| {
            let at = t.exceptions.0 + i * 16;
            (u64_at(&self.map, at), u64_at(&self.map, at + 8) as i64)
        };
        let i = super::partition(0, t.exceptions.1 as u64, |i| entry(i as usize).0 < key) as usize;
        match (i < t.exceptions.1).then(|| entry(i)) {
            Some((k, v)) if k == key => v,
            _ => NULL_I64,
        }
    }

    /// Physical column `col` of `row`, None if NULL.
    #[inline]
    pub fn int(&self, t: &TableData, col: usize, row: u64) -> Option<i64> {
        let v = self.raw(t, col, row);
        (v != NULL_I64).then_some(v)
    }

    /// Declared (SQL) column `col` of `row`.
    #[inline]
    pub fn value(&self, t: &TableData, col: usize, row: u64) -> Value<'_> {
        match t.layout.columns[col].1 {
            Source::Id => Value::Int(row as i64),
            Source::Col(c) => match (self.int(t, c, row), t.layout.phys[c].1) {
                (None, _) => Value::Null,
                (Some(s), Phys::Str) => self.string(s).map_or(Value::Null, Value::Text),
                (Some(v), _) => Value::Int(v),
            },
            Source::Diff(a, b) => match (self.int(t, a, row), self.int(t, b, row)) {
                (Some(x), Some(y)) => Value::Int(x.wrapping_sub(y)),
                _ => Value::Null,
            },
            Source::Null => Value::Null,
        }
    }

    /// The ts of `row` (ordering by it is only meaningful if `ts_sorted`).
    #[inline]
    pub fn ts(&self, t: &TableData, row: u64) -> i64 {
        self.raw(t, t.layout.ts, row)
    }

    /// Positions in the key index's perm of the rows whose key is `key`.
    pub fn key_run(&self, k: &KeyIndex, key: i64) -> (u64, u64) {
        if key < 0 || key as u64 >= k.keys {
            return (0, 0);
        }
        let at = k.starts + key as usize * 4;
        let (lo, hi) = (u32_at(&self.map, at), u32_at(&self.map, at + 4));
        let hi = u64::from(hi).min(k.perm_len);
        (u64::from(lo).min(hi), hi)
    }

    /// Every position of the key index's perm (all runs in key order).
    pub fn key_all(&self, k: &KeyIndex) -> (u64, u64) {
        (0, k.perm_len)
    }

    /// The row id at position `i` of a key index.
    #[inline]
    pub fn key_row(&self, k: &KeyIndex, i: u64) -> u64 {
        u32_at(&self.map, k.perm + i as usize * 4).into()
    }

    /// The row id at position `i` of the order index.
    #[inline]
    pub fn order_row(&self, o: &OrderIndex, i: u64) -> u64 {
        u32_at(&self.map, o.perm + i as usize * 4).into()
    }
}

/// The u64 at `at`; 0 past the end (offsets are checked at open, this only
/// keeps a mistake from panicking inside SQLite's callbacks, which aborts).
#[inline]
fn u64_at(map: &[u8], at: usize) -> u64 {
    map.get(at..at.wrapping_add(8))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// The u32 at `at`; 0 past the end, as [`u64_at`].
#[inline]
fn u32_at(map: &[u8], at: usize) -> u32 {
    map.get(at..at.wrapping_add(4))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}
