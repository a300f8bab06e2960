//! What each columnar table stores (physical columns) and what SQL sees
//! (declared columns), derived from the table declarations; how values are
//! packed; and the file's directory.

use super::NULL_I64 as NULL;
use crate::analyzer::schema::{Backend, Fill, Item, Table};
use crate::analyzer::tables;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// A physical column's type. Every stored value is an integer (NULL is
/// [`NULL`]); a Str column's integers index the directory's strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phys {
    Int,
    Str,
}

/// How one column of one block is stored: frame of reference. Values are
/// offsets from `base` in the narrowest width that holds the block's range
/// (a timestamp column of a busy block needs 4 bytes, a CPU column 1), or
/// plain i64 when nothing narrower does. In widths 1 to 4 the two highest
/// codes mean NULL and "exception": a value written after the block (a late
/// row) that does not fit, kept in the table's sorted exception list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packing {
    /// Bytes per value: 0 (every value NULL), 1, 2, 4, or 8 (plain i64).
    pub width: u8,
    /// The value of code 0.
    pub base: i64,
    /// Whether some value here is in the exception list (the only way a
    /// 0-width column holds a non-NULL value).
    pub exceptions: bool,
}

/// A stored value: the value (or [`NULL`]), or "look in the exceptions".
pub enum Stored {
    Value(i64),
    Exception,
}

impl Packing {
    /// The narrowest packing of values in `min..=max`; None: all NULL.
    pub fn fit(range: Option<(i64, i64)>) -> Packing {
        let (width, base) = match range {
            None => (0, 0),
            Some((min, max)) => {
                let span = (i128::from(max) - i128::from(min)) as u128;
                match [1u8, 2, 4]
                    .into_iter()
                    .find(|&w| span < u128::from(null_code(w) - 1))
                {
                    Some(w) => (w, min),
                    None => (8, 0),
                }
            }
        };
        Packing {
            width,
            base,
            exceptions: false,
        }
    }

    /// Bytes of this column in a block.
    pub fn bytes(self) -> usize {
        usize::from(self.width) * super::BLOCK_ROWS
    }

    /// The code of `v` ([`NULL`] for NULL); None if it does not fit.
    #[inline]
    pub fn encode(self, v: i64) -> Option<u64> {
        match self.width {
            0 => (v == NULL).then_some(0),
            8 => Some(v as u64),
            w if v == NULL => Some(null_code(w)),
            w => {
                let off = i128::from(v) - i128::from(self.base);
                (0..i128::from(null_code(w) - 1))
                    .contains(&off)
                    .then_some(off as u64)
            }
        }
    }

    /// Stores code `code` at `slot` of the column's bytes `buf`.
    #[inline]
    pub fn write(self, buf: &mut [u8], slot: usize, code: u64) {
        let w = usize::from(self.width);
        buf[slot * w..slot * w + w].copy_from_slice(&code.to_le_bytes()[..w]);
    }

    /// The code that marks an exception (widths 1 to 4).
    pub fn exception_code(self) -> u64 {
        null_code(self.width) - 1
    }

    /// The value at `slot` of the column's bytes `buf`.
    #[inline(always)]
    pub fn read(self, buf: &[u8], slot: usize) -> Stored {
        let code = match self.width {
            0 if self.exceptions => return Stored::Exception,
            0 => return Stored::Value(NULL),
            1 => u64::from(buf[slot]),
            2 => u64::from(u16::from_le_bytes(le(buf, slot * 2))),
            4 => u64::from(u32::from_le_bytes(le(buf, slot * 4))),
            _ => return Stored::Value(i64::from_le_bytes(le(buf, slot * 8))),
        };
        let null = null_code(self.width);
        if code == null {
            Stored::Value(NULL)
        } else if code == null - 1 {
            Stored::Exception
        } else {
            Stored::Value(self.base.wrapping_add(code as i64))
        }
    }
}

/// Codes of width `W` (1, 2, 4 or 8 bytes) and values, in bulk: the loops
/// a block's write and an index build spend their time in.
pub struct Bulk<const W: usize>;

impl<const W: usize> Bulk<W> {
    /// Packs `values` (which `p` holds, NULLs aside) into `out`.
    pub fn pack(p: Packing, values: &[i64], out: &mut [u8]) {
        for (o, &v) in out.chunks_exact_mut(W).zip(values) {
            let code = if W == 8 {
                v as u64
            } else if v == NULL {
                u64::MAX
            } else {
                v.wrapping_sub(p.base) as u64
            };
            o.copy_from_slice(&code.to_le_bytes()[..W]);
        }
    }

    /// Unpacks the codes in `buf` (no exception among them) into `out`.
    pub fn unpack(p: Packing, buf: &[u8], out: &mut Vec<i64>) {
        let null = null_code(W as u8);
        out.extend(buf.chunks_exact(W).map(|c| {
            let mut b = [0u8; 8];
            b[..W].copy_from_slice(c);
            let code = u64::from_le_bytes(b);
            if W == 8 {
                code as i64
            } else if code == null {
                NULL
            } else {
                p.base.wrapping_add(code as i64)
            }
        }));
    }
}

/// The all-ones code of a width (NULL).
const fn null_code(width: u8) -> u64 {
    match width {
        0 => 0,
        1 | 2 | 4 => (1 << (8 * width as u32)) - 1,
        _ => u64::MAX,
    }
}

#[inline]
fn le<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    buf[at..at + N].try_into().unwrap_or([0; N])
}

/// Where a declared (SQL) column's value comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// The row id.
    Id,
    /// Physical column `i`.
    Col(usize),
    /// Column a minus column b; NULL if either is NULL.
    Diff(usize, usize),
    /// Always NULL.
    Null,
}

/// One columnar table as the file stores it, derived from its declaration
/// in [`tables`](crate::analyzer::tables).
#[derive(Debug)]
pub struct Layout {
    pub name: &'static str,
    /// Stored columns (the row struct's fields but the id), in block order.
    pub phys: Vec<(&'static str, Phys)>,
    /// SQL columns, in declaration order.
    pub columns: Vec<(&'static str, Source)>,
    /// The physical ts column (rows are opened in ts order).
    pub ts: usize,
    /// Small-domain integer columns with a (key, id) index: equality
    /// lookups and ORDER BY key.
    pub keys: Vec<usize>,
    /// A declared column with a descending-order index over its non-NULL
    /// values (worst-first queries).
    pub order: Option<usize>,
}

impl Layout {
    /// The layout of column-file table `name` of the schema.
    pub fn by_name(name: &str) -> Option<&'static Layout> {
        static ALL: OnceLock<Vec<Layout>> = OnceLock::new();
        ALL.get_or_init(|| {
            tables::SCHEMA
                .iter()
                .filter_map(|item| match item {
                    Item::Table(t) => Layout::derive(t),
                    Item::View(_) => None,
                })
                .collect()
        })
        .iter()
        .find(|l| l.name == name)
    }

    /// The layout of `table`, which must be a column-file table of the
    /// schema (the declarations' test checks that every one derives).
    pub fn of(table: &'static Table) -> &'static Layout {
        Layout::by_name(table.name)
            .unwrap_or_else(|| panic!("{} is not a column-file table of the schema", table.name))
    }

    /// None for SQLite tables. Panics on a declaration that names a column
    /// it does not have (a mistake the tests catch, not bad input).
    fn derive(t: &'static Table) -> Option<Layout> {
        let Backend::ColumnFile { keys, order } = t.backend else {
            return None;
        };
        let phys: Vec<(&'static str, Phys)> = t
            .columns
            .iter()
            .filter(|c| c.fill == Fill::Field)
            .map(|c| {
                let p = if c.decl_type() == "TEXT" {
                    Phys::Str
                } else {
                    Phys::Int
                };
                (c.name, p)
            })
            .collect();
        let stored = |name: &str| {
            phys.iter()
                .position(|p| p.0 == name)
                .unwrap_or_else(|| panic!("{}: no stored column {name}", t.name))
        };
        let columns = t
            .columns
            .iter()
            .map(|c| {
                let source = match c.fill {
                    Fill::RowId => Source::Id,
                    Fill::Field => Source::Col(stored(c.name)),
                    Fill::SameAs(other) => Source::Col(stored(other)),
                    Fill::Difference(a, b) => Source::Diff(stored(a), stored(b)),
                    Fill::Null => Source::Null,
                };
                (c.name, source)
            })
            .collect();
        let order = order.map(|o| {
            t.columns
                .iter()
                .position(|c| c.name == o)
                .unwrap_or_else(|| panic!("{}: no column {o}", t.name))
        });
        Some(Layout {
            name: t.name,
            ts: stored("ts"),
            keys: keys.iter().map(|k| stored(k)).collect(),
            order,
            phys,
            columns,
        })
    }
}

/// The JSON directory at the end of the file.
#[derive(Debug, Serialize, Deserialize)]
pub struct Directory {
    pub build_id: u64,
    pub tables: Vec<TableDir>,
    /// Values of Str columns, by index.
    pub strings: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TableDir {
    pub name: String,
    pub rows: u64,
    /// Physical columns, to check against the layout this build expects.
    pub phys: Vec<(String, Phys)>,
    pub blocks: Vec<BlockDir>,
    /// The exception list: `exceptions.1` entries of (row << 8 | physical
    /// column: u64, value: i64), sorted, at offset `exceptions.0`.
    pub exceptions: (u64, u64),
    /// Whether ts never decreases with the row id.
    pub ts_sorted: bool,
    pub keys: Vec<KeyDir>,
    pub order: Option<OrderDir>,
}

/// One block: where it is and how each physical column is packed (the
/// columns follow each other, [`Packing::bytes`] each).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockDir {
    pub offset: u64,
    pub columns: Vec<Packing>,
}

impl BlockDir {
    /// Offset of physical column `c` from the block's start (`c` = the
    /// column count: the block's size).
    pub fn column_offset(&self, c: usize) -> usize {
        self.columns[..c].iter().map(|p| p.bytes()).sum()
    }
}

/// A (key, id) index: `perm[starts[k]..starts[k + 1]]` are the ids of the
/// rows whose key is k, ascending. Rows with a NULL key are in no run.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyDir {
    /// Physical column.
    pub column: usize,
    /// Offset of `starts`: keys + 1 u32s.
    pub starts: u64,
    pub keys: u64,
    /// Offset of `perm`: starts[keys] u32s.
    pub perm: u64,
}

/// Ids of the rows whose declared column `column` is not NULL, sorted by
/// (value descending, id).
#[derive(Debug, Serialize, Deserialize)]
pub struct OrderDir {
    /// Declared column.
    pub column: usize,
    pub perm: u64,
    pub len: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(p: Packing, values: &[i64]) -> Vec<i64> {
        let mut buf = vec![0; usize::from(p.width) * values.len()];
        for (slot, &v) in values.iter().enumerate() {
            let code = p.encode(v).expect("fits");
            if p.width > 0 {
                p.write(&mut buf, slot, code);
            }
        }
        (0..values.len())
            .map(|slot| match p.read(&buf, slot) {
                Stored::Value(v) => v,
                Stored::Exception => panic!("no exception written"),
            })
            .collect()
    }

    #[test]
    fn packing_takes_the_narrowest_width_that_leaves_two_codes_free() {
        let width = |lo, hi| Packing::fit(Some((lo, hi))).width;
        assert_eq!(Packing::fit(None).width, 0);
        assert_eq!(width(7, 7), 1);
        assert_eq!(width(-3, 250), 1); // span 253: codes 0..=253
        assert_eq!(width(-3, 251), 2); // 254 would be the exception code
        assert_eq!(width(0, 65533), 2);
        assert_eq!(width(0, 65534), 4);
        assert_eq!(width(1 << 40, (1 << 40) + 4_294_967_293), 4);
        assert_eq!(width(0, 4_294_967_294), 8);
        assert_eq!(width(i64::MIN + 1, i64::MAX), 8);
    }

    #[test]
    fn values_and_nulls_read_back_in_every_width() {
        for (lo, hi) in [
            (7, 7),
            (-3, 250),
            (-40_000, 20_000),
            (1 << 40, (1 << 40) + 4_000_000_000),
            (i64::MIN + 1, i64::MAX),
        ] {
            let p = Packing::fit(Some((lo, hi)));
            let values = [lo, hi, NULL, lo + (hi / 2 - lo / 2), NULL];
            assert_eq!(roundtrip(p, &values), values, "{p:?}");
            let mut packed = vec![0; p.bytes()];
            let mut column = values.to_vec();
            column.resize(super::super::BLOCK_ROWS, NULL);
            match p.width {
                1 => Bulk::<1>::pack(p, &column, &mut packed),
                2 => Bulk::<2>::pack(p, &column, &mut packed),
                4 => Bulk::<4>::pack(p, &column, &mut packed),
                _ => Bulk::<8>::pack(p, &column, &mut packed),
            }
            let mut out = Vec::new();
            match p.width {
                1 => Bulk::<1>::unpack(p, &packed, &mut out),
                2 => Bulk::<2>::unpack(p, &packed, &mut out),
                4 => Bulk::<4>::unpack(p, &packed, &mut out),
                _ => Bulk::<8>::unpack(p, &packed, &mut out),
            }
            assert_eq!(out, column, "{p:?}");
        }
    }

    #[test]
    fn layouts_follow_the_declarations() {
        let w = Layout::of(&tables::WAKEUP);
        let names: Vec<&str> = w.phys.iter().map(|p| p.0).collect();
        assert_eq!(
            names,
            [
                "ts",
                "utid",
                "waker_utid",
                "waking_cpu",
                "target_cpu",
                "run_ts",
                "run_cpu",
                "priority",
                "irq_context"
            ]
        );
        assert!(matches!(w.columns[0].1, Source::Id));
        assert!(matches!(w.columns[8], ("latency", Source::Diff(5, 0))));
        assert_eq!((w.ts, w.keys.as_slice(), w.order), (0, &[1][..], Some(8)));
        let s = Layout::of(&tables::SCHED_SLICE);
        assert_eq!(s.phys[4], ("end_state", Phys::Str));
        assert!(matches!(s.columns[7], ("ucpu", Source::Col(2))));
        assert_eq!(s.keys, [3, 2]);
        assert!(Layout::by_name("thread").is_none());
    }

    #[test]
    fn a_value_that_does_not_fit_is_an_exception() {
        let p = Packing::fit(Some((100, 200)));
        assert_eq!(p.encode(99), None);
        assert_eq!(p.encode(100 + 253), Some(253));
        assert_eq!(p.encode(100 + 254), None);
        let mut buf = [0u8; 4];
        p.write(&mut buf, 2, p.exception_code());
        assert!(matches!(p.read(&buf, 2), Stored::Exception));
        let mut none = Packing::fit(None);
        assert_eq!(none.encode(NULL), Some(0));
        assert_eq!(none.encode(5), None);
        assert!(matches!(none.read(&[], 9), Stored::Value(NULL)));
        none.exceptions = true;
        assert!(matches!(none.read(&[], 9), Stored::Exception));
    }
}
