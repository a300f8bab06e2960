//! What each columnar table stores (physical columns), what SQL sees
//! (declared columns, in schema/tables.sql order), and the file's directory.

use super::{NULL_I32, NULL_I64, NULL_U32};
use serde::{Deserialize, Serialize};

/// A physical column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phys {
    I64,
    I32,
    U32,
    /// Index into the directory's strings (u32).
    Str,
}

impl Phys {
    pub const fn width(self) -> usize {
        match self {
            Phys::I64 => 8,
            Phys::I32 | Phys::U32 | Phys::Str => 4,
        }
    }

    /// The stored bytes of NULL.
    pub const fn null_bytes(self) -> &'static [u8] {
        const I64: [u8; 8] = NULL_I64.to_le_bytes();
        const I32: [u8; 4] = NULL_I32.to_le_bytes();
        const U32: [u8; 4] = NULL_U32.to_le_bytes();
        match self {
            Phys::I64 => &I64,
            Phys::I32 => &I32,
            Phys::U32 | Phys::Str => &U32,
        }
    }

    /// The value stored at `buf[at..]`, as i64 (NULL as its sentinel).
    #[inline]
    pub fn read(self, buf: &[u8], at: usize) -> i64 {
        match self {
            Phys::I64 => i64::from_le_bytes(buf[at..at + 8].try_into().unwrap_or_default()),
            Phys::I32 => i32::from_le_bytes(buf[at..at + 4].try_into().unwrap_or_default()).into(),
            Phys::U32 | Phys::Str => {
                u32::from_le_bytes(buf[at..at + 4].try_into().unwrap_or_default()).into()
            }
        }
    }

    /// Whether a value as [`Phys::read`] returns it is NULL.
    #[inline]
    pub fn is_null(self, v: i64) -> bool {
        match self {
            Phys::I64 => v == NULL_I64,
            Phys::I32 => v == i64::from(NULL_I32),
            Phys::U32 | Phys::Str => v == i64::from(NULL_U32),
        }
    }
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
    /// Bytes of one full block.
    pub fn block_bytes(&self) -> usize {
        self.phys.iter().map(|p| p.1.width()).sum::<usize>() * super::BLOCK_ROWS
    }

    /// Offset of physical column `c` within a block.
    pub fn column_offset(&self, c: usize) -> usize {
        self.phys[..c].iter().map(|p| p.1.width()).sum::<usize>() * super::BLOCK_ROWS
    }

    pub fn by_name(name: &str) -> Option<&'static Layout> {
        [&SCHED_SLICE, &THREAD_STATE, &WAKEUP]
            .into_iter()
            .find(|l| l.name == name)
    }
}

pub static SCHED_SLICE: Layout = Layout {
    name: "sched_slice",
    phys: &[
        ("ts", Phys::I64),
        ("dur", Phys::I64),
        ("cpu", Phys::U32),
        ("utid", Phys::U32),
        ("end_state", Phys::Str),
        ("priority", Phys::I32),
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
        ("ts", Phys::I64),
        ("dur", Phys::I64),
        ("cpu", Phys::U32),
        ("utid", Phys::U32),
        ("state", Phys::Str),
        ("io_wait", Phys::U32),
        ("blocked_function", Phys::Str),
        ("waker_utid", Phys::U32),
        ("waker_id", Phys::I64),
        ("irq_context", Phys::U32),
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
        ("ts", Phys::I64),
        ("utid", Phys::U32),
        ("waker_utid", Phys::U32),
        ("waking_cpu", Phys::U32),
        ("target_cpu", Phys::I32),
        ("run_ts", Phys::I64),
        ("run_cpu", Phys::U32),
        ("priority", Phys::I32),
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
    /// File offset of each block.
    pub blocks: Vec<u64>,
    /// Whether ts never decreases with the row id.
    pub ts_sorted: bool,
    pub keys: Vec<KeyDir>,
    pub order: Option<OrderDir>,
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
