//! What each columnar table stores (physical columns), what SQL sees
//! (declared columns, in schema/tables.sql order), and the file's directory.

use super::NULL_I64 as NULL;
use serde::{Deserialize, Serialize};

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
}

/// One columnar table.
#[derive(Debug)]
pub struct Layout {
    pub name: &'static str,
    /// Stored columns, in block order.
    pub phys: &'static [(&'static str, Phys)],
    /// SQL columns, in the order schema/tables.sql declares them.
    pub columns: &'static [(&'static str, Source)],
    /// The physical ts column (rows are opened in ts order).
    pub ts: usize,
    /// Small-domain integer columns with a (key, id) index: equality
    /// lookups and ORDER BY key.
    pub keys: &'static [usize],
    /// A declared column with a descending-order index over its non-NULL
    /// values (worst-first queries).
    pub order: Option<usize>,
}

impl Layout {
    pub fn by_name(name: &str) -> Option<&'static Layout> {
        [&SCHED_SLICE, &THREAD_STATE, &WAKEUP]
            .into_iter()
            .find(|l| l.name == name)
    }
}

pub static SCHED_SLICE: Layout = Layout {
    name: "sched_slice",
    phys: &[
        ("ts", Phys::Int),
        ("dur", Phys::Int),
        ("cpu", Phys::Int),
        ("utid", Phys::Int),
        ("end_state", Phys::Str),
        ("priority", Phys::Int),
    ],
    columns: &[
        ("id", Source::Id),
        ("ts", Source::Col(0)),
        ("dur", Source::Col(1)),
        ("cpu", Source::Col(2)),
        ("utid", Source::Col(3)),
        ("end_state", Source::Col(4)),
        ("priority", Source::Col(5)),
        ("ucpu", Source::Col(2)),
    ],
    ts: 0,
    keys: &[3, 2],
    order: None,
};

pub static THREAD_STATE: Layout = Layout {
    name: "thread_state",
    phys: &[
        ("ts", Phys::Int),
        ("dur", Phys::Int),
        ("cpu", Phys::Int),
        ("utid", Phys::Int),
        ("state", Phys::Str),
        ("io_wait", Phys::Int),
        ("blocked_function", Phys::Str),
        ("waker_utid", Phys::Int),
        ("waker_id", Phys::Int),
        ("irq_context", Phys::Int),
    ],
    columns: &[
        ("id", Source::Id),
        ("ts", Source::Col(0)),
        ("dur", Source::Col(1)),
        ("cpu", Source::Col(2)),
        ("utid", Source::Col(3)),
        ("state", Source::Col(4)),
        ("io_wait", Source::Col(5)),
        ("blocked_function", Source::Col(6)),
        ("waker_utid", Source::Col(7)),
        ("waker_id", Source::Col(8)),
        ("irq_context", Source::Col(9)),
        ("ucpu", Source::Col(2)),
    ],
    ts: 0,
    keys: &[3],
    order: None,
};

pub static WAKEUP: Layout = Layout {
    name: "wakeup",
    phys: &[
        ("ts", Phys::Int),
        ("utid", Phys::Int),
        ("waker_utid", Phys::Int),
        ("waking_cpu", Phys::Int),
        ("target_cpu", Phys::Int),
        ("run_ts", Phys::Int),
        ("run_cpu", Phys::Int),
        ("priority", Phys::Int),
    ],
    columns: &[
        ("id", Source::Id),
        ("ts", Source::Col(0)),
        ("utid", Source::Col(1)),
        ("waker_utid", Source::Col(2)),
        ("waking_cpu", Source::Col(3)),
        ("target_cpu", Source::Col(4)),
        ("run_ts", Source::Col(5)),
        ("run_cpu", Source::Col(6)),
        ("latency", Source::Diff(5, 0)),
        ("priority", Source::Col(7)),
    ],
    ts: 0,
    keys: &[1],
    // latency: the scheduling_latency tool's worst wakeups.
    order: Some(8),
};

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
