//! The scheduling modules of Perfetto's standard library, for
//! `INCLUDE PERFETTO MODULE m;` before a query: the same table, view and
//! function names and columns as Perfetto's, with our own SQL written from
//! their documented meaning.
//!
//! An include is not SQL that SQLite sees: [`split_includes`] takes the
//! leading `INCLUDE PERFETTO MODULE name;` statements off the text (names
//! only, checked against [`MODULES`]), and [`install`] creates the modules'
//! objects on the connection before it is made read-only: TEMP views, and
//! table-valued and scalar functions. What remains of the text is the one
//! statement every query path already checks, so an include cannot carry a
//! second statement, a write or an ATTACH.

mod linux_cpu;
mod sched;
mod table_function;

use rusqlite::Connection;
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::Value;

/// One module: what `INCLUDE PERFETTO MODULE name` brings.
#[derive(Debug)]
pub struct Module {
    pub name: &'static str,
    /// Modules whose objects this one's use (included first).
    pub includes: &'static [&'static str],
    pub objects: &'static [Object],
}

/// A table, view or function of a module.
#[derive(Debug)]
pub struct Object {
    pub name: &'static str,
    /// What a row is (or what the function returns).
    pub doc: &'static str,
    /// Output columns of a view or table function.
    pub columns: &'static [Col],
    pub body: Body,
}

/// A column, or an argument of a function.
#[derive(Debug, Clone, Copy)]
pub struct Col {
    pub name: &'static str,
    /// INTEGER, REAL or TEXT.
    pub ty: &'static str,
    pub doc: &'static str,
}

#[derive(Debug)]
pub enum Body {
    /// A view: SQL over the trace's tables and the modules' objects.
    View(&'static str),
    /// A table-valued function, `name(arg, ...)` in FROM: SQL that reads
    /// each argument as `:name`.
    TableFunction {
        args: &'static [Col],
        sql: &'static str,
    },
    /// A scalar function of `args.len()` arguments.
    Scalar {
        args: &'static [Col],
        returns: &'static str,
        func: fn(&Context<'_>) -> rusqlite::Result<Value>,
    },
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self.body {
            Body::View(_) => "view",
            Body::TableFunction { .. } => "table function",
            Body::Scalar { .. } => "function",
        }
    }

    /// How it is called: `name`, or `name(arg, ...)` for functions.
    pub fn signature(&self) -> String {
        match &self.body {
            Body::View(_) => self.name.to_string(),
            Body::TableFunction { args, .. } | Body::Scalar { args, .. } => {
                let names: Vec<&str> = args.iter().map(|a| a.name).collect();
                format!("{}({})", self.name, names.join(", "))
            }
        }
    }
}

/// Every supported module, the most used first.
pub static MODULES: &[&Module] = &[
    &sched::RUNNABLE,
    &sched::STATES,
    &sched::LATENCY,
    &linux_cpu::UTILIZATION_GENERAL,
    &linux_cpu::UTILIZATION_SYSTEM,
    &linux_cpu::UTILIZATION_PROCESS,
    &linux_cpu::UTILIZATION_THREAD,
    &linux_cpu::UTILIZATION_THREAD_CPU,
    &sched::TIME_IN_STATE,
    &sched::THREAD_LEVEL_PARALLELISM,
    &TIME_CONVERSION,
];

pub fn module(name: &str) -> Option<&'static Module> {
    MODULES.iter().copied().find(|m| m.name == name)
}

/// The module and object named `name` (a table, view or function).
pub fn object(name: &str) -> Option<(&'static Module, &'static Object)> {
    MODULES.iter().find_map(|m| {
        m.objects
            .iter()
            .find(|o| o.name.eq_ignore_ascii_case(name))
            .map(|o| (*m, o))
    })
}

/// For SQLite's "no such table: X" or "no such function: X" about an object
/// of a module: which include brings it.
pub fn include_hint(sqlite_message: &str) -> Option<String> {
    let name = ["no such table: ", "no such function: "]
        .iter()
        .find_map(|p| sqlite_message.split(p).nth(1))?
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .next()?;
    let (m, o) = object(name)?;
    Some(format!(
        "{} is in the Perfetto module {}: start the query with INCLUDE PERFETTO MODULE {};",
        o.name, m.name, m.name
    ))
}

fn supported() -> String {
    MODULES
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Takes the leading `INCLUDE PERFETTO MODULE name;` statements off `sql`:
/// the modules they name (`prefix.*` names every module under prefix) and
/// the rest of the text. Anything else that starts with INCLUDE is an error.
pub fn split_includes(sql: &str) -> Result<(Vec<&'static Module>, &str), String> {
    let mut modules: Vec<&'static Module> = Vec::new();
    let mut rest = sql;
    loop {
        let mut lex = Lexer(rest);
        lex.skip_space();
        if !lex.keyword("include") {
            return Ok((modules, rest));
        }
        let form = "an include reads INCLUDE PERFETTO MODULE name;";
        lex.skip_space();
        if !lex.keyword("perfetto") {
            return Err(format!("{form} (PERFETTO is missing)"));
        }
        lex.skip_space();
        if !lex.keyword("module") {
            return Err(format!("{form} (MODULE is missing)"));
        }
        lex.skip_space();
        let name = lex.module_name();
        if name.is_empty() {
            return Err(format!("{form} (the module name is missing)"));
        }
        lex.skip_space();
        if !lex.0.starts_with(';') {
            return Err(format!("{form} (';' must follow the module name {name})"));
        }
        rest = &lex.0[1..];
        let found: Vec<&'static Module> = match name.strip_suffix(".*") {
            Some(prefix) => MODULES
                .iter()
                .copied()
                .filter(|m| {
                    m.name
                        .strip_prefix(prefix)
                        .is_some_and(|t| t.starts_with('.'))
                })
                .collect(),
            None => module(name).into_iter().collect(),
        };
        if found.is_empty() {
            return Err(format!(
                "unknown module {name}: schedlens provides these Perfetto standard library \
                 modules: {}",
                supported()
            ));
        }
        for m in found {
            if !modules.iter().any(|k| std::ptr::eq(*k, m)) {
                modules.push(m);
            }
        }
    }
}

/// A cursor over SQL text that knows SQLite's whitespace and comments.
struct Lexer<'a>(&'a str);

impl<'a> Lexer<'a> {
    fn skip_space(&mut self) {
        loop {
            let s = self.0.trim_start();
            if let Some(c) = s.strip_prefix("--") {
                self.0 = c.find('\n').map_or("", |i| &c[i + 1..]);
            } else if let Some(c) = s.strip_prefix("/*") {
                self.0 = c.find("*/").map_or("", |i| &c[i + 2..]);
            } else {
                self.0 = s;
                return;
            }
        }
    }

    /// Consumes `word` (any case) if the text starts with it as a whole word.
    fn keyword(&mut self, word: &str) -> bool {
        let n = word.len();
        let whole = self
            .0
            .get(..n)
            .is_some_and(|w| w.eq_ignore_ascii_case(word))
            && !self.0[n..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if whole {
            self.0 = &self.0[n..];
        }
        whole
    }

    fn module_name(&mut self) -> &'a str {
        let end = self
            .0
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '*'))
            .unwrap_or(self.0.len());
        let (name, rest) = self.0.split_at(end);
        self.0 = rest;
        name
    }
}

/// `modules` and the modules they include, each once, dependencies first.
pub fn resolve(modules: &[&'static Module]) -> Vec<&'static Module> {
    fn visit(m: &'static Module, out: &mut Vec<&'static Module>) {
        if out.iter().any(|k| std::ptr::eq(*k, m)) {
            return;
        }
        for dep in m.includes {
            // A name missing from MODULES fails the declarations test.
            if let Some(d) = module(dep) {
                visit(d, out);
            }
        }
        out.push(m);
    }
    let mut out = Vec::new();
    for m in modules {
        visit(m, &mut out);
    }
    out
}

/// Creates the objects of `modules` (and of the modules they include) on
/// `conn`, which must still accept TEMP objects (before `query_only`).
/// Returns the names a query may then read and call.
pub fn install(conn: &Connection, modules: &[&'static Module]) -> rusqlite::Result<Installed> {
    let mut installed = Installed::default();
    for m in resolve(modules) {
        for o in m.objects {
            match &o.body {
                Body::View(sql) => {
                    let cols: Vec<&str> = o.columns.iter().map(|c| c.name).collect();
                    conn.execute_batch(&format!(
                        "CREATE TEMP VIEW {}({}) AS {sql}",
                        o.name,
                        cols.join(", ")
                    ))?;
                    installed.tables.push(o.name);
                }
                Body::TableFunction { .. } => {
                    table_function::register(conn, o)?;
                    installed.tables.push(o.name);
                }
                Body::Scalar { args, func, .. } => {
                    let flags = FunctionFlags::SQLITE_UTF8
                        | FunctionFlags::SQLITE_DETERMINISTIC
                        | FunctionFlags::SQLITE_INNOCUOUS;
                    let func = *func;
                    conn.create_scalar_function(o.name, args.len() as i32, flags, move |ctx| {
                        func(ctx)
                    })?;
                    installed.functions.push(o.name);
                }
            }
        }
    }
    Ok(installed)
}

/// What [`install`] made available.
#[derive(Debug, Default, Clone)]
pub struct Installed {
    /// Views and table functions.
    pub tables: Vec<&'static str>,
    /// Scalar functions.
    pub functions: Vec<&'static str>,
}

/// The documentation of PerfettoSQL's functions and of every module, as
/// markdown for the schema resource: each object's signature, meaning and
/// columns.
pub fn reference_markdown() -> String {
    use std::fmt::Write as _;
    let mut md = String::from(
        "\n# PerfettoSQL\n\nFunctions: TRACE_START(), TRACE_END(), TRACE_DUR() (the trace's \
         bounds, ns) and EXTRACT_ARG(arg_set_id, key) (one field of an ftrace_event/raw row; all of \
         them are rows of args).\n\nPerfetto standard library modules: start the query with \
         `INCLUDE PERFETTO MODULE name;` (several may come before the one SELECT; `prefix.*` \
         includes every module under prefix) to use a module's views and functions, named and \
         with columns as in Perfetto. Table functions are called in FROM: \
         `SELECT * FROM cpu_utilization_per_period(100000000)`.\n",
    );
    for m in MODULES {
        let _ = writeln!(md, "\n## module {}\n", m.name);
        for o in m.objects.iter().filter(|o| !o.name.starts_with('_')) {
            let _ = writeln!(md, "- `{}` ({}): {}", o.signature(), o.kind(), o.doc);
            if let Body::TableFunction { args, .. } | Body::Scalar { args, .. } = &o.body {
                for a in *args {
                    let _ = writeln!(md, "  - argument `{}` {}: {}", a.name, a.ty, a.doc);
                }
            }
            if let Body::Scalar { returns, .. } = &o.body {
                let _ = writeln!(md, "  - returns {returns}");
            }
            for c in o.columns {
                let _ = writeln!(md, "  - `{}` {}: {}", c.name, c.ty, c.doc);
            }
        }
    }
    md
}

/// A time conversion: multiplies (FROM a unit to ns) or divides (TO a unit,
/// rounding toward zero as integer division does) by the unit in ns.
macro_rules! time_fn {
    ($name:literal, $arg:literal, $unit:expr, FROM) => {
        time_fn!(@ $name, $arg, "A duration in nanoseconds.", |v: i64| v.checked_mul($unit))
    };
    ($name:literal, $arg:literal, $unit:expr, TO) => {
        time_fn!(@ $name, $arg, "A duration in the unit of the name.", |v: i64| Some(v / $unit))
    };
    (@ $name:literal, $arg:literal, $doc:literal, $op:expr) => {
        Object {
            name: $name,
            doc: $doc,
            columns: &[],
            body: Body::Scalar {
                args: &[Col {
                    name: $arg,
                    ty: "INTEGER",
                    doc: "The duration to convert.",
                }],
                returns: "INTEGER",
                func: |ctx| {
                    Ok(match ctx.get::<Option<i64>>(0)? {
                        Some(v) => ($op)(v).map_or(Value::Null, Value::Integer),
                        None => Value::Null,
                    })
                },
            },
        }
    };
}

/// time.conversion: nanoseconds from and to other units.
static TIME_CONVERSION: Module = Module {
    name: "time.conversion",
    includes: &[],
    objects: &[
        time_fn!("time_from_ns", "nanos", 1, FROM),
        time_fn!("time_from_us", "micros", 1_000, FROM),
        time_fn!("time_from_ms", "millis", 1_000_000, FROM),
        time_fn!("time_from_s", "seconds", 1_000_000_000, FROM),
        time_fn!("time_from_min", "minutes", 60_000_000_000, FROM),
        time_fn!("time_from_hours", "hours", 3_600_000_000_000, FROM),
        time_fn!("time_from_days", "days", 86_400_000_000_000, FROM),
        time_fn!("time_to_ns", "nanos", 1, TO),
        time_fn!("time_to_us", "nanos", 1_000, TO),
        time_fn!("time_to_ms", "nanos", 1_000_000, TO),
        time_fn!("time_to_s", "nanos", 1_000_000_000, TO),
        time_fn!("time_to_min", "nanos", 60_000_000_000, TO),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_are_taken_off_the_front() {
        let (m, rest) = split_includes(
            " -- a comment\n include perfetto module sched.runnable ; /* c */\n\
             INCLUDE PERFETTO MODULE sched.latency;SELECT 1; -- x",
        )
        .unwrap();
        let names: Vec<&str> = m.iter().map(|m| m.name).collect();
        assert_eq!(names, ["sched.runnable", "sched.latency"]);
        assert_eq!(rest, "SELECT 1; -- x");
        let (m, rest) = split_includes("SELECT 'INCLUDE PERFETTO MODULE x;'").unwrap();
        assert!(m.is_empty() && rest.starts_with("SELECT"));
        let (m, _) = split_includes("INCLUDE PERFETTO MODULE linux.cpu.utilization.*;").unwrap();
        assert_eq!(m.len(), 5);
        for bad in [
            "INCLUDE PERFETTO MODULE nope.nope; SELECT 1",
            "INCLUDE PERFETTO MODULE sched.runnable SELECT 1",
            "INCLUDE MODULE sched.runnable; SELECT 1",
            "INCLUDE PERFETTO MODULE ; SELECT 1",
            "INCLUDE PERFETTO MODULE sched.runnable, x; SELECT 1",
            "INCLUDEX PERFETTO MODULE sched.runnable; SELECT 1",
        ] {
            let r = split_includes(bad);
            // The last one is not an include at all: SQLite rejects it.
            if bad.starts_with("INCLUDEX") {
                assert!(r.unwrap().0.is_empty());
            } else {
                assert!(r.is_err(), "{bad}");
            }
        }
        assert_eq!(
            include_hint("no such table: sched_runnable_thread_count").as_deref(),
            Some(
                "sched_runnable_thread_count is in the Perfetto module \
                 sched.thread_level_parallelism: start the query with INCLUDE PERFETTO MODULE \
                 sched.thread_level_parallelism;"
            )
        );
        assert_eq!(include_hint("no such table: thread_x"), None);
        let e = split_includes("INCLUDE PERFETTO MODULE android.startup; SELECT 1").unwrap_err();
        assert!(
            e.contains("sched.runnable") && e.contains("android.startup"),
            "{e}"
        );
    }

    #[test]
    fn declarations_are_consistent() {
        let mut names = std::collections::HashSet::new();
        for m in MODULES {
            for dep in m.includes {
                assert!(module(dep).is_some(), "{}: includes unknown {dep}", m.name);
            }
            for o in m.objects {
                assert!(names.insert(o.name), "{} declared twice", o.name);
                assert!(!o.doc.is_empty(), "{}: no doc", o.name);
                let scalar = matches!(o.body, Body::Scalar { .. });
                assert_eq!(o.columns.is_empty(), scalar, "{}: columns", o.name);
                for c in o.columns {
                    assert!(
                        ["INTEGER", "REAL", "TEXT"].contains(&c.ty),
                        "{}.{}",
                        o.name,
                        c.name
                    );
                }
            }
        }
    }

    /// Every module installs on a database with the trace's schema, and
    /// every view and table function prepares there.
    #[test]
    fn every_module_installs_and_prepares() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let trace = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/pipe-and-true.pftrace"
        );
        crate::analyzer::db::build_into(std::path::Path::new(trace), &path).unwrap();
        let conn = Connection::open(&path).unwrap();
        crate::analyzer::columns::register(&conn).unwrap();
        crate::analyzer::functions::register(&conn).unwrap();
        let installed = install(&conn, MODULES).unwrap();
        for m in MODULES {
            for o in m.objects {
                let sql = match &o.body {
                    Body::View(_) => format!("SELECT * FROM {}", o.name),
                    Body::TableFunction { args, .. } => {
                        let zeros = vec!["1"; args.len()];
                        format!("SELECT * FROM {}({})", o.name, zeros.join(", "))
                    }
                    Body::Scalar { args, .. } => {
                        format!("SELECT {}({})", o.name, vec!["1"; args.len()].join(", "))
                    }
                };
                let mut st = conn.prepare(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let n = st.column_count();
                if !matches!(o.body, Body::Scalar { .. }) {
                    assert_eq!(n, o.columns.len(), "{sql}");
                }
                st.query([])
                    .and_then(|mut r| r.next().map(|_| ()))
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        }
        assert!(
            installed
                .tables
                .contains(&"sched_previous_runnable_on_thread")
        );
    }
}
