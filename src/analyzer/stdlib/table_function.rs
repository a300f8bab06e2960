//! A module's table-valued function (`name(arg, ...)` in FROM) as an
//! eponymous virtual table: the arguments are hidden columns that SQLite
//! passes as equality constraints, and each scan runs the function's SQL on
//! the same connection (so under the same authorizer and time limit), with
//! the arguments bound, collecting its rows. These functions answer for one
//! interval or thread at a time: their results are small.

use std::borrow::Cow;
use std::ffi::{CStr, CString, c_int};

use rusqlite::types::Value;
use rusqlite::vtab::{
    Context, Filters, IndexConstraintOp, IndexInfo, Module, VTab, VTabConfig, VTabConnection,
    VTabCursor, sqlite3_vtab, sqlite3_vtab_cursor,
};
use rusqlite::{Connection, Error, ffi};

use super::{Body, Object};

/// Registers `o` (a [`Body::TableFunction`]) on `conn` under its name.
pub fn register(conn: &Connection, o: &'static Object) -> rusqlite::Result<()> {
    const MODULE: Module<'static, FunctionTab> = Module::eponymous_only_module();
    conn.create_module(o.name, &MODULE, Some(o))
}

/// The function's SQL and argument names.
fn parts(o: &Object) -> (&'static [super::Col], &'static str) {
    match o.body {
        Body::TableFunction { args, sql } => (args, sql),
        _ => (&[], ""),
    }
}

#[repr(C)]
struct FunctionTab {
    /// Base class; must be first.
    base: sqlite3_vtab,
    object: &'static Object,
    /// The connection this table belongs to, for running the SQL.
    db: *mut ffi::sqlite3,
}

// SAFETY: FunctionTab is repr(C) with sqlite3_vtab first.
unsafe impl<'vtab> VTab<'vtab> for FunctionTab {
    type Aux = &'static Object;
    type Cursor = FunctionCursor;

    fn connect(
        db: &mut VTabConnection,
        aux: Option<&&'static Object>,
        _module: &[u8],
        _database: &[u8],
        _table: &[u8],
        _args: &[&[u8]],
    ) -> rusqlite::Result<(Cow<'static, CStr>, Self)> {
        let object = *aux.ok_or_else(|| Error::ModuleError("table function without SQL".into()))?;
        let (args, _) = parts(object);
        let mut cols: Vec<String> = object
            .columns
            .iter()
            .map(|c| format!("{} {}", c.name, c.ty))
            .collect();
        // Prefixed: an argument may share a name with an output column.
        cols.extend(args.iter().map(|a| format!("arg_{} HIDDEN", a.name)));
        let sql = CString::new(format!("CREATE TABLE x({})", cols.join(", ")))
            .map_err(|_| Error::ModuleError("NUL in a column name".into()))?;
        db.config(VTabConfig::Innocuous)?;
        // SAFETY: the live connection calling us; kept only while it lives
        // (SQLite disconnects its virtual tables before it closes).
        let handle = unsafe { db.handle() };
        Ok((
            Cow::Owned(sql),
            FunctionTab {
                base: sqlite3_vtab::default(),
                object,
                db: handle,
            },
        ))
    }

    fn best_index(&self, info: &mut IndexInfo) -> rusqlite::Result<bool> {
        let (args, _) = parts(self.object);
        let first_arg = self.object.columns.len() as c_int;
        let mut given: Vec<Option<usize>> = vec![None; args.len()];
        let mut unusable = false;
        for (i, c) in info.constraints().enumerate() {
            let Some(arg) = c.column().checked_sub(first_arg) else {
                continue;
            };
            let Some(slot) = given.get_mut(arg as usize) else {
                continue;
            };
            if !c.is_usable() {
                unusable = true;
            } else if c.operator() == IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_EQ {
                *slot = Some(i);
            }
        }
        let mut mask = 0;
        for (arg, constraint) in given.iter().enumerate() {
            if let Some(i) = *constraint {
                let mut usage = info.constraint_usage(i);
                usage.set_argv_index(arg as c_int + 1);
                usage.set_omit(true);
                mask |= 1 << arg;
            }
        }
        let all = (1 << args.len()) - 1;
        if unusable && mask != all {
            // A plan where the arguments are not known yet: let SQLite pick another.
            return Ok(false);
        }
        info.set_idx_num(mask);
        info.set_estimated_cost(if mask == all { 1_000.0 } else { 1e12 });
        Ok(true)
    }

    fn open(&'vtab mut self) -> rusqlite::Result<FunctionCursor> {
        Ok(FunctionCursor {
            base: sqlite3_vtab_cursor::default(),
            object: self.object,
            db: self.db,
            args: Vec::new(),
            rows: Vec::new(),
            at: 0,
        })
    }
}

#[repr(C)]
struct FunctionCursor {
    /// Base class; must be first.
    base: sqlite3_vtab_cursor,
    object: &'static Object,
    db: *mut ffi::sqlite3,
    args: Vec<Value>,
    rows: Vec<Vec<Value>>,
    at: usize,
}

// SAFETY: FunctionCursor is repr(C) with sqlite3_vtab_cursor first.
unsafe impl VTabCursor for FunctionCursor {
    fn filter(
        &mut self,
        mask: c_int,
        _: Option<&str>,
        values: &Filters<'_>,
    ) -> rusqlite::Result<()> {
        let (args, sql) = parts(self.object);
        let all = (1 << args.len()) - 1;
        if mask != all {
            let names: Vec<&str> = args.iter().map(|a| a.name).collect();
            return Err(Error::ModuleError(format!(
                "{} takes {} argument(s): call it as {}({}) in FROM",
                self.object.name,
                args.len(),
                self.object.name,
                names.join(", ")
            )));
        }
        self.args = (0..args.len())
            .map(|i| values.get::<Value>(i))
            .collect::<rusqlite::Result<_>>()?;
        // SAFETY: the handle of the connection running this scan, which
        // outlives it; the Connection made from it does not close it.
        let conn = unsafe { Connection::from_handle(self.db) }?;
        let mut st = conn.prepare(sql)?;
        for (a, v) in args.iter().zip(&self.args) {
            let name = format!(":{}", a.name);
            if let Some(i) = st.parameter_index(&name)? {
                st.raw_bind_parameter(i, v)?;
            }
        }
        let ncol = self.object.columns.len();
        self.rows.clear();
        self.at = 0;
        let mut rows = st.raw_query();
        while let Some(r) = rows.next()? {
            self.rows.push(
                (0..ncol)
                    .map(|i| r.get::<_, Value>(i))
                    .collect::<Result<_, _>>()?,
            );
        }
        Ok(())
    }

    fn next(&mut self) -> rusqlite::Result<()> {
        self.at += 1;
        Ok(())
    }

    fn eof(&self) -> bool {
        self.at >= self.rows.len()
    }

    fn column(&self, ctx: &mut Context, col: c_int) -> rusqlite::Result<()> {
        let col = col as usize;
        let ncol = self.object.columns.len();
        let v = if col < ncol {
            self.rows.get(self.at).and_then(|r| r.get(col))
        } else {
            self.args.get(col - ncol)
        };
        ctx.set_result(v.unwrap_or(&Value::Null))
    }

    fn rowid(&self) -> rusqlite::Result<i64> {
        Ok(self.at as i64)
    }
}
