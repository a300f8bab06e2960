//! The column file as SQLite virtual tables (module `schedlens_columns`).
//!
//! schema/tables.sql declares `CREATE VIRTUAL TABLE sched_slice USING
//! schedlens_columns(<column definitions>)`; the table reads
//! `<database file>.cols`, opened on first use (a database being built has
//! no column file until its load ends).
//!
//! xBestIndex picks one access path and tells SQLite which ORDER BY it
//! yields:
//! - `id = ?`: one row.
//! - `key = ?` (utid; cpu for sched_slice): the key's run of row ids, in id
//!   (so ts) order, narrowed by binary search on ts and id bounds.
//! - rows in id order, narrowed by ts and id bounds; forwards or backwards
//!   (ORDER BY ts DESC, max(ts)).
//! - all rows in (key, id) order: ORDER BY / GROUP BY a key.
//! - the order index (wakeup.latency descending): worst-first queries.
//!
//! Every constraint is left for SQLite to check again (omit = false), so a
//! plan only has to yield a superset of the matching rows: values it cannot
//! use exactly (text, fractions) narrow less, never wrongly.

use super::layout::{Layout, Source};
use super::partition;
use super::store::{Store, Value};
use rusqlite::types::ValueRef;
use rusqlite::vtab::{
    Context, CreateVTab, DistinctMode, Filters, IndexConstraintOp, IndexFlags, IndexInfo, Module,
    VTab, VTabConfig, VTabConnection, VTabCursor, VTabKind, sqlite3_vtab, sqlite3_vtab_cursor,
};
use rusqlite::{Connection, Error, ffi};
use std::borrow::Cow;
use std::cell::OnceCell;
use std::ffi::{CStr, CString, c_int};
use std::path::PathBuf;
use std::sync::Arc;

pub const MODULE: &str = "schedlens_columns";

/// Registers the module on a connection; every connection that reads a
/// loaded database needs it.
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    const COLUMNS: Module<'static, ColumnsTab> = Module::read_only_module();
    conn.create_module(MODULE, &COLUMNS, None)
}

/// Access paths (idx_num bits 0-7).
const WALK_ROWS: c_int = 0;
const WALK_KEY_EQ: c_int = 1;
const WALK_KEY_ALL: c_int = 2;
const WALK_ORDER: c_int = 3;
const WALK_ID_EQ: c_int = 4;
/// idx_num bit: walk backwards.
const REVERSE: c_int = 1 << 16;

/// One constraint handed to xFilter, in idx_str as one character.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arg {
    IdEq,
    KeyEq,
    IdLo { strict: bool },
    IdHi { strict: bool },
    TsEq,
    TsLo { strict: bool },
    TsHi { strict: bool },
}

impl Arg {
    fn code(self) -> char {
        match self {
            Arg::IdEq => 'i',
            Arg::KeyEq => 'k',
            Arg::IdLo { strict: false } => 'a',
            Arg::IdLo { strict: true } => 'A',
            Arg::IdHi { strict: false } => 'b',
            Arg::IdHi { strict: true } => 'B',
            Arg::TsEq => 'e',
            Arg::TsLo { strict: false } => 't',
            Arg::TsLo { strict: true } => 'T',
            Arg::TsHi { strict: false } => 'u',
            Arg::TsHi { strict: true } => 'U',
        }
    }

    fn from_code(c: char) -> Option<Arg> {
        Some(match c {
            'i' => Arg::IdEq,
            'k' => Arg::KeyEq,
            'a' => Arg::IdLo { strict: false },
            'A' => Arg::IdLo { strict: true },
            'b' => Arg::IdHi { strict: false },
            'B' => Arg::IdHi { strict: true },
            'e' => Arg::TsEq,
            't' => Arg::TsLo { strict: false },
            'T' => Arg::TsLo { strict: true },
            'u' => Arg::TsHi { strict: false },
            'U' => Arg::TsHi { strict: true },
            _ => return None,
        })
    }
}

#[repr(C)]
pub struct ColumnsTab {
    /// Base class; must be first.
    base: sqlite3_vtab,
    layout: &'static Layout,
    /// The column file, None for a database that is not a file.
    path: Option<PathBuf>,
    store: OnceCell<Result<(Arc<Store>, usize), String>>,
}

impl ColumnsTab {
    fn store(&self) -> rusqlite::Result<(&Arc<Store>, usize)> {
        let opened = self.store.get_or_init(|| {
            let path = self.path.as_ref().ok_or_else(|| {
                format!(
                    "{} needs a database file (its columns are in <database>.cols)",
                    self.layout.name
                )
            })?;
            let store = Store::open(path).map_err(|e| format!("{e:#}"))?;
            let t = store
                .table(self.layout.name)
                .ok_or_else(|| format!("{} has no table {}", path.display(), self.layout.name))?;
            Ok((Arc::new(store), t))
        });
        match opened {
            Ok((s, t)) => Ok((s, *t)),
            Err(e) => Err(Error::ModuleError(e.clone())),
        }
    }

    /// The declared column holding physical column `phys` (the first, for
    /// aliases such as ucpu).
    fn declared(&self, phys: usize) -> Option<usize> {
        self.layout
            .columns
            .iter()
            .position(|c| matches!(c.1, Source::Col(p) if p == phys))
    }
}

// SAFETY: ColumnsTab is repr(C) with sqlite3_vtab first.
unsafe impl<'vtab> VTab<'vtab> for ColumnsTab {
    type Aux = ();
    type Cursor = ColumnsCursor;

    fn connect(
        db: &mut VTabConnection,
        _aux: Option<&()>,
        _module: &[u8],
        database: &[u8],
        table: &[u8],
        args: &[&[u8]],
    ) -> rusqlite::Result<(Cow<'static, CStr>, Self)> {
        let name = String::from_utf8_lossy(table);
        let layout = Layout::by_name(&name)
            .ok_or_else(|| Error::ModuleError(format!("{MODULE} has no table named {name}")))?;
        // The schema's column list must be the one this build stores.
        let defs: Vec<String> = args
            .iter()
            .map(|a| String::from_utf8_lossy(a).trim().to_string())
            .collect();
        let names: Vec<&str> = defs
            .iter()
            .map(|d| d.split_whitespace().next().unwrap_or(""))
            .collect();
        let expected: Vec<&str> = layout.columns.iter().map(|c| c.0).collect();
        if names != expected {
            return Err(Error::ModuleError(format!(
                "{name}: declared columns {names:?} differ from the stored ones {expected:?}"
            )));
        }
        let decl = defs
            .iter()
            .map(|d| d.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = CString::new(format!("CREATE TABLE x({decl})"))
            .map_err(|_| Error::ModuleError("NUL in a column definition".into()))?;
        // Reading is all it does: safe inside views and triggers of the schema.
        db.config(VTabConfig::Innocuous)?;
        let database = CString::new(database)
            .map_err(|_| Error::ModuleError("NUL in a database name".into()))?;
        // SAFETY: the handle is the live connection calling us; the name is
        // NUL-terminated and the returned string is copied at once.
        let file = unsafe {
            let p = ffi::sqlite3_db_filename(db.handle(), database.as_ptr());
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        };
        let path = file
            .filter(|f| !f.is_empty())
            .map(|f| super::path_for(std::path::Path::new(&f)));
        Ok((
            Cow::Owned(sql),
            ColumnsTab {
                base: sqlite3_vtab::default(),
                layout,
                path,
                store: OnceCell::new(),
            },
        ))
    }

    fn best_index(&self, info: &mut IndexInfo) -> rusqlite::Result<bool> {
        let (store, t) = self.store()?;
        let data = store.data(t);
        let rows = data.rows.max(1) as f64;
        let ts_col = self.declared(self.layout.ts);
        let keys: Vec<Option<usize>> = data.keys.iter().map(|k| self.declared(k.column)).collect();

        // What the usable constraints offer.
        let mut id_eq = None;
        let mut key_eq: Option<(usize, usize)> = None; // (key index, constraint)
        let mut bounds: Vec<(usize, Arg)> = Vec::new();
        let mut not_null_order = false;
        for (i, c) in info.constraints().enumerate() {
            if !c.is_usable() {
                continue;
            }
            let col = c.column();
            let Ok(col) = usize::try_from(col) else {
                continue;
            };
            let is_id = matches!(self.layout.columns.get(col), Some((_, Source::Id)));
            let is_ts = ts_col == Some(col);
            let op = c.operator();
            if data.order.as_ref().is_some_and(|o| o.column == col)
                && matches!(
                    op,
                    IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_ISNOTNULL
                        | IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_GT
                        | IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_GE
                        | IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_LT
                        | IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_LE
                )
            {
                not_null_order = true;
            }
            let strict = matches!(
                op,
                IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_GT
                    | IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_LT
            );
            match op {
                IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_EQ => {
                    if is_id {
                        id_eq = Some(i);
                    } else if let Some(k) = keys.iter().position(|&d| d == Some(col)) {
                        // Prefer the key with the shortest runs.
                        let better =
                            key_eq.is_none_or(|(old, _)| data.keys[k].keys > data.keys[old].keys);
                        if better {
                            key_eq = Some((k, i));
                        }
                    } else if is_ts {
                        bounds.push((i, Arg::TsEq));
                    }
                }
                IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_GT
                | IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_GE => {
                    if is_id {
                        bounds.push((i, Arg::IdLo { strict }));
                    } else if is_ts && data.ts_sorted {
                        bounds.push((i, Arg::TsLo { strict }));
                    }
                }
                IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_LT
                | IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_LE => {
                    if is_id {
                        bounds.push((i, Arg::IdHi { strict }));
                    } else if is_ts && data.ts_sorted {
                        bounds.push((i, Arg::TsHi { strict }));
                    }
                }
                _ => {}
            }
        }
        // A ts equality is a bound only where ts is sorted.
        if !data.ts_sorted {
            bounds.retain(|(_, a)| !matches!(a, Arg::TsEq | Arg::TsLo { .. } | Arg::TsHi { .. }));
        }
        // For a GROUP BY (or DISTINCT) the rows only need to come in groups,
        // so the direction SQLite passes is arbitrary: read every term as
        // ascending, or an outer ORDER BY would hide the key walk.
        let grouping = matches!(
            info.distinct(),
            DistinctMode::Grouped | DistinctMode::Distinct
        );
        let order: Vec<(usize, bool)> = info
            .order_bys()
            .filter_map(|o| {
                usize::try_from(o.column())
                    .ok()
                    .map(|c| (c, o.is_order_by_desc() && !grouping))
            })
            .collect();

        // The restricting paths: one row, a key's run, or a row range.
        let mut args: Vec<(usize, Arg)> = Vec::new();
        let (mut walk, mut est) = if let Some(i) = id_eq {
            args.push((i, Arg::IdEq));
            (WALK_ID_EQ, 1.0)
        } else if let Some((k, i)) = key_eq {
            args.push((i, Arg::KeyEq));
            (
                WALK_KEY_EQ | ((k as c_int) << 8),
                rows / data.keys[k].keys.max(1) as f64,
            )
        } else {
            (WALK_ROWS, rows)
        };
        if walk != WALK_ID_EQ {
            let narrowed = bounds.len().min(2);
            est /= [1.0, 4.0, 40.0][narrowed];
            args.extend(bounds.iter().copied());
        }
        // Its output is in id order (ts order too when sorted): which
        // ORDER BY does that satisfy, forwards or backwards?
        let eq_key = key_eq.and_then(|(k, _)| keys[k]);
        let in_id_order = |desc: bool| {
            let terms: Vec<&(usize, bool)> = order
                .iter()
                .skip_while(|(c, _)| Some(*c) == eq_key)
                .collect();
            terms.iter().all(|(c, d)| {
                *d == desc
                    && (matches!(self.layout.columns.get(*c), Some((_, Source::Id)))
                        || (Some(*c) == ts_col && data.ts_sorted))
            })
        };
        let mut consumed = order.is_empty() || walk == WALK_ID_EQ;
        if !consumed && in_id_order(false) {
            consumed = true;
        } else if !consumed && in_id_order(true) {
            consumed = true;
            walk |= REVERSE;
        }
        let sort_cost = |n: f64| n * (1.0 + n.max(2.0).log2() / 4.0);
        let mut cost = if consumed { est } else { sort_cost(est) };

        // Without a restriction that beats them, two paths that yield an
        // ORDER BY the row order cannot: all rows by key, or by the order index.
        if !consumed {
            let (first, first_desc) = order[0];
            let rest_in_id_order = |rest: &[(usize, bool)]| {
                rest.iter().all(|(c, d)| {
                    !*d && (matches!(self.layout.columns.get(*c), Some((_, Source::Id)))
                        || (Some(*c) == ts_col && data.ts_sorted))
                })
            };
            if let Some(k) = keys.iter().position(|&d| d == Some(first))
                && !first_desc
                && data.keys[k].keys > 0
                && store.key_all(&data.keys[k]).1 == data.rows
                && rest_in_id_order(&order[1..])
                && rows * 1.1 < cost
            {
                walk = WALK_KEY_ALL | ((k as c_int) << 8);
                args.clear();
                cost = rows * 1.1;
                consumed = true;
            } else if let Some(o) = &data.order
                && o.column == first
                && first_desc
                && not_null_order
                && order[1..].iter().all(|(c, d)| {
                    !*d && matches!(self.layout.columns.get(*c), Some((_, Source::Id)))
                })
                && (o.len as f64) < cost
            {
                walk = WALK_ORDER;
                args.clear();
                cost = o.len as f64;
                consumed = true;
            }
        }

        let mut codes = String::new();
        for (n, (i, arg)) in args.iter().enumerate() {
            let mut u = info.constraint_usage(*i);
            u.set_argv_index(n as c_int + 1);
            u.set_omit(false);
            codes.push(arg.code());
        }
        info.set_idx_num(walk);
        info.set_idx_str(&codes);
        info.set_order_by_consumed(consumed);
        info.set_estimated_cost(cost.max(1.0));
        info.set_estimated_rows(est.max(1.0) as i64);
        if walk == WALK_ID_EQ {
            info.set_idx_flags(IndexFlags::SQLITE_INDEX_SCAN_UNIQUE);
        }
        Ok(true)
    }

    fn open(&'vtab mut self) -> rusqlite::Result<ColumnsCursor> {
        let (store, table) = self.store()?;
        Ok(ColumnsCursor {
            base: sqlite3_vtab_cursor::default(),
            store: Arc::clone(store),
            table,
            walk: WALK_ROWS,
            key: 0,
            lo: 0,
            n: 0,
            i: 0,
            reverse: false,
            row: 0,
        })
    }
}

impl CreateVTab<'_> for ColumnsTab {
    const KIND: VTabKind = VTabKind::Default;
}

#[repr(C)]
pub struct ColumnsCursor {
    /// Base class; must be first.
    base: sqlite3_vtab_cursor,
    store: Arc<Store>,
    table: usize,
    walk: c_int,
    /// Key index used by the key walks.
    key: usize,
    /// Positions lo .. lo + n of the walk (row ids, or positions in an
    /// index), visited forwards or backwards.
    lo: u64,
    n: u64,
    /// Positions visited so far.
    i: u64,
    reverse: bool,
    /// The current row id.
    row: u64,
}

/// What a constraint value allows: an exact integer, nothing at all (NULL,
/// or an equality no integer meets), or no narrowing (text, blobs).
enum Bound {
    Int(i64),
    Empty,
    Any,
}

fn bound(v: ValueRef<'_>, eq: bool, upper: bool) -> Bound {
    match v {
        ValueRef::Integer(i) => Bound::Int(i),
        ValueRef::Real(f) if f.is_nan() => Bound::Empty,
        ValueRef::Real(f) => {
            if eq && f.fract() != 0.0 {
                Bound::Empty
            } else if upper {
                Bound::Int(f.ceil() as i64) // saturating
            } else {
                Bound::Int(f.floor() as i64)
            }
        }
        ValueRef::Null => Bound::Empty,
        ValueRef::Text(_) | ValueRef::Blob(_) => Bound::Any,
    }
}

impl ColumnsCursor {
    fn position_row(&self, pos: u64) -> rusqlite::Result<u64> {
        let data = self.store.data(self.table);
        let row = match self.walk {
            WALK_KEY_EQ | WALK_KEY_ALL => self.store.key_row(&data.keys[self.key], pos),
            WALK_ORDER => data
                .order
                .as_ref()
                .map_or(u64::MAX, |o| self.store.order_row(o, pos)),
            _ => pos,
        };
        if row >= data.rows {
            return Err(Error::ModuleError(format!(
                "{}: corrupt index in the column file (row {row} of {})",
                data.layout.name, data.rows
            )));
        }
        Ok(row)
    }

    /// Loads the row at the current position, if any.
    fn settle(&mut self) -> rusqlite::Result<()> {
        if self.i < self.n {
            let pos = if self.reverse {
                self.lo + self.n - 1 - self.i
            } else {
                self.lo + self.i
            };
            self.row = self.position_row(pos)?;
        }
        Ok(())
    }
}

// SAFETY: ColumnsCursor is repr(C) with sqlite3_vtab_cursor first.
unsafe impl VTabCursor for ColumnsCursor {
    fn filter(
        &mut self,
        idx_num: c_int,
        idx_str: Option<&str>,
        args: &Filters<'_>,
    ) -> rusqlite::Result<()> {
        let store = Arc::clone(&self.store);
        let data = store.data(self.table);
        self.walk = idx_num & 0xff;
        self.key = ((idx_num >> 8) & 0xff) as usize;
        self.reverse = idx_num & REVERSE != 0;
        self.i = 0;
        self.n = 0;
        if matches!(self.walk, WALK_KEY_EQ | WALK_KEY_ALL) && self.key >= data.keys.len() {
            return Err(Error::ModuleError("stale plan: no such key index".into()));
        }

        // Bounds as inclusive ranges.
        let (mut id_lo, mut id_hi) = (0i64, data.rows as i64 - 1);
        let (mut ts_lo, mut ts_hi) = (i64::MIN, i64::MAX);
        let mut key: Option<i64> = None;
        let mut key_unusable = false;
        for (n, c) in idx_str.unwrap_or("").chars().enumerate() {
            let Some(arg) = Arg::from_code(c) else {
                continue;
            };
            if n >= args.len() {
                break;
            }
            let v = args[n].get_raw();
            let upper = matches!(arg, Arg::IdHi { .. } | Arg::TsHi { .. });
            let eq = matches!(arg, Arg::IdEq | Arg::KeyEq | Arg::TsEq);
            let b = match bound(v, eq, upper) {
                Bound::Empty => return Ok(()),
                Bound::Any => {
                    key_unusable |= arg == Arg::KeyEq || arg == Arg::IdEq;
                    continue;
                }
                Bound::Int(b) => b,
            };
            match arg {
                Arg::IdEq => (id_lo, id_hi) = (id_lo.max(b), id_hi.min(b)),
                Arg::KeyEq => key = Some(b),
                Arg::TsEq => (ts_lo, ts_hi) = (ts_lo.max(b), ts_hi.min(b)),
                Arg::IdLo { strict } => {
                    id_lo = id_lo.max(if strict { b.saturating_add(1) } else { b })
                }
                Arg::IdHi { strict } => {
                    id_hi = id_hi.min(if strict { b.saturating_sub(1) } else { b })
                }
                Arg::TsLo { strict } => {
                    ts_lo = ts_lo.max(if strict { b.saturating_add(1) } else { b })
                }
                Arg::TsHi { strict } => {
                    ts_hi = ts_hi.min(if strict { b.saturating_sub(1) } else { b })
                }
            }
        }
        if key_unusable {
            // An equality on text: walk every row and let SQLite compare.
            self.walk = WALK_ROWS;
            (id_lo, id_hi) = (0, data.rows as i64 - 1);
            key = None;
        }
        if id_lo > id_hi || ts_lo > ts_hi {
            return Ok(());
        }
        let (id_lo, id_end) = (id_lo as u64, id_hi as u64 + 1);
        let sorted = data.ts_sorted;
        let ts_at = |row: u64| store.ts(data, row);
        match self.walk {
            WALK_ROWS | WALK_ID_EQ => {
                let (mut lo, mut hi) = (id_lo, id_end);
                if sorted {
                    lo = partition(lo, hi, |r| ts_at(r) < ts_lo);
                    hi = partition(lo, hi, |r| ts_at(r) <= ts_hi);
                }
                self.walk = WALK_ROWS;
                (self.lo, self.n) = (lo, hi.saturating_sub(lo));
            }
            WALK_KEY_EQ => {
                let k = &data.keys[self.key];
                let Some(key) = key else { return Ok(()) };
                let (mut lo, mut hi) = store.key_run(k, key);
                let row = |p: u64| store.key_row(k, p);
                lo = partition(lo, hi, |p| row(p) < id_lo);
                hi = partition(lo, hi, |p| row(p) < id_end);
                if sorted {
                    lo = partition(lo, hi, |p| ts_at(row(p).min(data.rows - 1)) < ts_lo);
                    hi = partition(lo, hi, |p| ts_at(row(p).min(data.rows - 1)) <= ts_hi);
                }
                (self.lo, self.n) = (lo, hi - lo);
            }
            WALK_KEY_ALL => {
                let (lo, hi) = store.key_all(&data.keys[self.key]);
                (self.lo, self.n) = (lo, hi - lo);
            }
            WALK_ORDER => {
                (self.lo, self.n) = (0, data.order.as_ref().map_or(0, |o| o.len));
            }
            _ => return Err(Error::ModuleError("stale plan: unknown access path".into())),
        }
        self.settle()
    }

    fn next(&mut self) -> rusqlite::Result<()> {
        self.i += 1;
        self.settle()
    }

    fn eof(&self) -> bool {
        self.i >= self.n
    }

    fn column(&self, ctx: &mut Context, col: c_int) -> rusqlite::Result<()> {
        let data = self.store.data(self.table);
        let Ok(col) = usize::try_from(col) else {
            return ctx.set_result(self.row as i64);
        };
        if col >= data.layout.columns.len() {
            return ctx.set_result(rusqlite::types::Null);
        }
        match self.store.value(data, col, self.row) {
            Value::Null => ctx.set_result(rusqlite::types::Null),
            Value::Int(v) => ctx.set_result(v),
            Value::Text(s) => ctx.set_result(s),
        }
    }

    fn rowid(&self) -> rusqlite::Result<i64> {
        Ok(self.row as i64)
    }
}
