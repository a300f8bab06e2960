//! `schedlens analyze`: the MCP server over stdio. (Issue 4; owner: mcp.)
//!
//! Every tool is read-only and closed-world: a model reaches only the traces
//! named on the command line or the files of the `--trace-dir` the user chose,
//! and its SQL runs in the [`sandbox`]. Tool work runs on blocking threads so a
//! long query never stalls the stdio loop; `notifications/cancelled` interrupts
//! it. User mistakes come back as tool errors (isError) the model can read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ContentBlock, Implementation, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Resource, ResourceContents, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{
    ErrorData, Json, RoleServer, ServerHandler, ServiceExt, tool, tool_handler, tool_router,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Semaphore};

use crate::analyses::timespec::{TraceBounds, WindowArg};
use crate::analyses::{self as report, GroupBy, TaskFilter, TaskOrder, TaskSel};
use crate::analyzer::db::{self, LoadOptions};
use crate::analyzer::sandbox::{self, Budget, Cell, Limits, QueryResult, ReadOnlyDb};
use crate::analyzer::schema;

/// Arguments of `schedlens analyze`.
#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    /// Perfetto traces to serve (each is loaded into its cached SQLite database first).
    pub traces: Vec<PathBuf>,
    /// Also offer the trace files in this directory; a model lists them with
    /// list_traces and opens them by file name.
    #[arg(long, value_name = "DIR")]
    pub trace_dir: Option<PathBuf>,
    /// Reload the traces even if a cached database exists.
    #[arg(long)]
    pub rebuild: bool,
    /// Serve an already loaded schedlens database as it is (no trace needed).
    #[arg(long = "db", value_name = "FILE", hide = true)]
    pub dbs: Vec<PathBuf>,
    /// Time limit of one tool call's SQL, e.g. "10s" or "500ms".
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub query_timeout: Duration,
}

pub fn run(args: AnalyzeArgs) -> anyhow::Result<()> {
    if args.traces.is_empty() && args.trace_dir.is_none() && args.dbs.is_empty() {
        anyhow::bail!("name at least one trace (or --trace-dir DIR) to serve");
    }
    let opts = LoadOptions {
        rebuild: args.rebuild,
        // stderr may be a client's log; a bar would only fill it.
        progress: false,
    };
    let mut served = BTreeMap::new();
    for path in &args.traces {
        eprintln!("schedlens: loading {}", path.display());
        let loaded =
            db::load(path, &opts).with_context(|| format!("loading {}", path.display()))?;
        add_unique(&mut served, loaded.name, loaded.db_path)?;
    }
    for path in &args.dbs {
        let name = file_name(path).context("--db needs a file path")?;
        add_unique(&mut served, name, path.clone())?;
    }
    if let Some(dir) = &args.trace_dir {
        std::fs::read_dir(dir).with_context(|| format!("--trace-dir {}", dir.display()))?;
    }
    let state = State {
        served: Mutex::new(served),
        trace_dir: args.trace_dir,
        load_opts: opts,
        limits: Limits {
            timeout: args.query_timeout,
            ..Limits::default()
        },
        // Two queries at once: the machine's cores are shared, and a model that
        // fires many slow queries should queue rather than starve the others.
        slots: Arc::new(Semaphore::new(2)),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        eprintln!("schedlens: serving MCP on stdio");
        let service = Server::new(state)
            .serve(rmcp::transport::stdio())
            .await
            .context("starting the MCP session")?;
        service.waiting().await.context("MCP session")?;
        anyhow::Ok(())
    })
}

fn file_name(path: &Path) -> Option<String> {
    Some(path.file_name()?.to_string_lossy().into_owned())
}

fn add_unique(
    served: &mut BTreeMap<String, PathBuf>,
    name: String,
    db: PathBuf,
) -> anyhow::Result<()> {
    if served.contains_key(&name) {
        anyhow::bail!("two traces are named {name:?}: rename one so a model can tell them apart");
    }
    served.insert(name, db);
    Ok(())
}

struct State {
    /// Trace name -> loaded database.
    served: Mutex<BTreeMap<String, PathBuf>>,
    trace_dir: Option<PathBuf>,
    load_opts: LoadOptions,
    limits: Limits,
    slots: Arc<Semaphore>,
}

/// File names in the trace directory that look like traces.
fn dir_traces(dir: &Path) -> Vec<String> {
    const EXTS: &[&str] = &[
        ".pftrace",
        ".perfetto-trace",
        ".perfetto",
        ".trace",
        ".pb",
        ".proto",
    ];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            let base = n
                .strip_suffix(".gz")
                .or_else(|| n.strip_suffix(".zst"))
                .unwrap_or(n);
            !n.starts_with('.') && EXTS.iter().any(|x| base.ends_with(x))
        })
        .collect();
    names.sort();
    names
}

impl State {
    /// The database of the trace a tool call names (or the only one).
    async fn resolve(&self, trace: Option<&str>) -> Result<PathBuf, String> {
        let served = self.served.lock().await;
        let available = || {
            let mut names: Vec<String> = served.keys().cloned().collect();
            if let Some(dir) = &self.trace_dir {
                for n in dir_traces(dir) {
                    if !names.contains(&n) {
                        names.push(n);
                    }
                }
            }
            names
        };
        let Some(name) = trace.map(str::trim).filter(|t| !t.is_empty()) else {
            let names = available();
            return match names.as_slice() {
                [only] => {
                    let only = only.clone();
                    drop(served);
                    Box::pin(self.resolve(Some(&only))).await
                }
                [] => Err("no trace is available: the server was started without traces".into()),
                _ => Err(format!(
                    "several traces are available: pass trace = one of {names:?}"
                )),
            };
        };
        if let Some(db) = served.get(name) {
            return Ok(db.clone());
        }
        let unknown = || {
            format!(
                "unknown trace {name:?}: pass trace = one of {:?}",
                available()
            )
        };
        let Some(dir) = &self.trace_dir else {
            return Err(unknown());
        };
        // Only a plain file name listed in the directory: no paths, no escapes.
        if name.contains(['/', '\\'])
            || name.contains("..")
            || !dir_traces(dir).iter().any(|n| n == name)
        {
            return Err(unknown());
        }
        drop(served);
        let path = dir.join(name);
        let opts = self.load_opts.clone();
        eprintln!("schedlens: loading {}", path.display());
        let loaded = tokio::task::spawn_blocking(move || db::load(&path, &opts))
            .await
            .map_err(|e| format!("loading {name} failed: {e}"))?
            .map_err(|e| format!("loading {name} failed: {e:#}"))?;
        let mut served = self.served.lock().await;
        served.insert(name.to_string(), loaded.db_path.clone());
        Ok(loaded.db_path)
    }

    /// Runs `work` on a sandboxed connection to the named trace, off the async
    /// runtime, interrupted by the time limit or the request's cancellation.
    async fn run<T, F>(
        &self,
        trace: Option<&str>,
        ctx: &RequestContext<RoleServer>,
        work: F,
    ) -> Result<Json<T>, String>
    where
        T: Send + 'static,
        F: FnOnce(&mut ReadOnlyDb, &Limits, &Budget) -> anyhow::Result<T> + Send + 'static,
    {
        let path = self.resolve(trace).await?;
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "the server is shutting down".to_string())?;
        let cancel = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (ct, cancel) = (ctx.ct.clone(), cancel.clone());
            tokio::spawn(async move {
                ct.cancelled().await;
                cancel.store(true, Ordering::Relaxed);
            })
        };
        let limits = self.limits.clone();
        let job = tokio::task::spawn_blocking(move || {
            // Held until the SQL has stopped, not just until the caller gave up.
            let _permit = permit;
            let mut db = ReadOnlyDb::open(&path)?;
            let budget = db.arm(limits.timeout, cancel);
            work(&mut db, &limits, &budget).map_err(|e| match e.downcast_ref::<rusqlite::Error>() {
                Some(sql) => db.explain(sql, &budget),
                None => format!("{e:#}"),
            })
        });
        let result = job.await;
        watcher.abort();
        match result {
            Ok(r) => r.map(Json),
            Err(e) => Err(format!("internal error: {e}")),
        }
    }
}

/// Checks an optional count argument against its default and maximum.
fn count_arg(name: &str, value: Option<i64>, default: usize, max: usize) -> Result<usize, String> {
    match value {
        None => Ok(default),
        Some(v) if v < 1 || v as u64 > max as u64 => {
            Err(format!("{name} must be between 1 and {max} (got {v})"))
        }
        Some(v) => Ok(v as usize),
    }
}

fn window(
    b: &TraceBounds,
    arg: Option<&WindowArg>,
) -> anyhow::Result<crate::analyses::timespec::Window> {
    b.window(arg).map_err(anyhow::Error::msg)
}

// ------------------------------------------------------------ tool arguments

/// Only the trace to use.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct TraceOnly {
    /// Trace name (from list_traces); may be omitted when only one trace is served.
    pub trace: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DescribeTableArgs {
    /// Table or view name, as list_tables gives it (e.g. "sched_slice").
    pub table: String,
    /// Trace name (from list_traces); may be omitted when only one trace is served.
    pub trace: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct QueryArgs {
    /// One read-only SQLite statement (SELECT / WITH ... SELECT). Timestamps (ts) are absolute
    /// trace-clock ns; subtract (SELECT start_ts FROM trace_bounds) for time from the trace start.
    pub sql: String,
    /// Rows to return: default 100, at most 2000.
    pub limit: Option<i64>,
    /// Rows to skip first, to page through a long result (default 0).
    pub offset: Option<i64>,
    /// Trace name (from list_traces); may be omitted when only one trace is served.
    pub trace: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CpuUtilizationArgs {
    /// Time window from the trace start: "1s..2.5s", "..500ms", "2s..", or {start, end} with
    /// ns integers or strings like "1.5s". Default: the whole trace.
    pub window: Option<WindowArg>,
    /// Group CPUs by "cpu" (default), "llc" (shared last-level cache) or "numa" (node).
    pub group_by: Option<GroupBy>,
    /// Trace name (from list_traces); may be omitted when only one trace is served.
    pub trace: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct TopTasksArgs {
    /// Rank by "cpu_time" (default), "switches", "wait_time" (runnable but not running) or
    /// "latency" (worst wakeup-to-running latency).
    pub order_by: Option<TaskOrder>,
    /// Time window from the trace start: "1s..2.5s", "..500ms", "2s..", or {start, end}.
    /// Default: the whole trace.
    pub window: Option<WindowArg>,
    /// Tasks to return: default 10, at most 100.
    pub limit: Option<i64>,
    /// Trace name (from list_traces); may be omitted when only one trace is served.
    pub trace: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SchedulingLatencyArgs {
    /// Only this thread id.
    pub tid: Option<i64>,
    /// Only the threads of this process id.
    pub pid: Option<i64>,
    /// Only threads whose thread or process name contains this text (case-insensitive).
    pub name: Option<String>,
    /// Time window from the trace start (wakeups that happened in it): "1s..2.5s", "..500ms",
    /// "2s..", or {start, end}. Default: the whole trace.
    pub window: Option<WindowArg>,
    /// Worst cases to list: default 10, at most 100.
    pub worst: Option<i64>,
    /// Trace name (from list_traces); may be omitted when only one trace is served.
    pub trace: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct TaskTimelineArgs {
    /// Thread id (give tid or pid).
    pub tid: Option<i64>,
    /// Process id: a timeline for each of its threads (give tid or pid).
    pub pid: Option<i64>,
    /// Time window from the trace start: "1s..2.5s", "..500ms", "2s..", or {start, end}.
    /// Default: the whole trace.
    pub window: Option<WindowArg>,
    /// Most intervals to return over all threads: default 200, at most 2000.
    pub limit: Option<i64>,
    /// Trace name (from list_traces); may be omitted when only one trace is served.
    pub trace: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ProcessTreeArgs {
    /// Only this process and its descendants; default: all processes.
    pub pid: Option<i64>,
    /// Most processes to return: default 500, at most 5000.
    pub limit: Option<i64>,
    /// Trace name (from list_traces); may be omitted when only one trace is served.
    pub trace: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchEventsArgs {
    /// Text to look for (case-insensitive substring): a thread or process name, a command
    /// line, a tid or pid, an event name (e.g. "exec", "wakeup"), or a CPU ("cpu3").
    pub text: String,
    /// Most tasks and CPUs to return: default 50, at most 500.
    pub limit: Option<i64>,
    /// Trace name (from list_traces); may be omitted when only one trace is served.
    pub trace: Option<String>,
}

// --------------------------------------------------------------- tool output

#[derive(Debug, Serialize, JsonSchema)]
pub struct TraceInfoOut {
    /// The trace's name, as other tools take it.
    pub trace: String,
    #[serde(flatten)]
    pub info: report::TraceInfo,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TraceList {
    /// Traces by name.
    pub traces: Vec<TraceEntry>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TraceEntry {
    /// Name to pass as `trace` to the other tools.
    pub name: String,
    /// True if already loaded (otherwise the first call that names it loads it).
    pub loaded: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TableList {
    pub tables: Vec<TableEntry>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TableEntry {
    pub name: String,
    /// "table" or "view".
    pub kind: String,
    pub rows: i64,
    /// What one row is.
    pub summary: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TableDescription {
    pub name: String,
    /// "table" or "view".
    pub kind: String,
    /// What one row is.
    pub summary: String,
    /// More detail on the table, if any.
    pub detail: String,
    pub columns: Vec<ColumnEntry>,
    /// Up to 3 rows, cells in column order.
    pub sample_rows: Vec<Vec<Cell>>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ColumnEntry {
    pub name: String,
    /// Declared type: INTEGER, TEXT, REAL.
    #[serde(rename = "type")]
    pub decl_type: String,
    pub doc: String,
}

// -------------------------------------------------------------------- server

const INSTRUCTIONS: &str = "schedlens serves recordings of the Linux scheduler (Perfetto traces \
loaded into SQLite tables named as in Perfetto's trace_processor). Start with trace_info (machine, \
CPUs and topology, time range, event counts, drops). Then search_events to find tasks, event types \
or CPUs by name, and list_tables / describe_table for the schema (also the resource \
schedlens://schema). For common questions use the analysis tools: cpu_utilization, top_tasks, \
scheduling_latency, task_timeline, process_tree. Use query (one read-only SQL statement) for the \
rest. Times you pass are from the trace start: nanoseconds or strings like \"1.5s\", windows like \
\"1s..2s\"; results give times from the trace start. With several traces, pass trace = its name \
(list_traces).";

/// Tool order in tools/list: discovery first, then analyses, then raw SQL.
const TOOL_ORDER: &[&str] = &[
    "trace_info",
    "list_traces",
    "search_events",
    "list_tables",
    "describe_table",
    "cpu_utilization",
    "top_tasks",
    "scheduling_latency",
    "task_timeline",
    "process_tree",
    "query",
];

const SCHEMA_URI: &str = "schedlens://schema";

#[derive(Clone)]
pub struct Server {
    state: Arc<State>,
    tool_router: ToolRouter<Server>,
}

#[tool_router]
impl Server {
    fn new(state: State) -> Server {
        Server {
            state: Arc::new(state),
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Overview of a trace: kernel and machine, CPUs with LLC/NUMA topology, time \
                       range (relative and absolute), event counts by type, lost events. Call first.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn trace_info(
        &self,
        Parameters(a): Parameters<TraceOnly>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<TraceInfoOut>, String> {
        let name = self.name_of(a.trace.as_deref()).await?;
        self.state
            .run(Some(&name.clone()), &ctx, move |db, _, _| {
                Ok(TraceInfoOut {
                    trace: name,
                    info: report::trace_info(db.conn())?,
                })
            })
            .await
    }

    #[tool(
        description = "The traces this server can open, by name (those given on its command line \
                       and the trace files of its --trace-dir).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_traces(&self) -> Result<Json<TraceList>, String> {
        let served = self.state.served.lock().await;
        let mut traces: Vec<TraceEntry> = served
            .keys()
            .map(|n| TraceEntry {
                name: n.clone(),
                loaded: true,
            })
            .collect();
        if let Some(dir) = &self.state.trace_dir {
            for n in dir_traces(dir) {
                if !served.contains_key(&n) {
                    traces.push(TraceEntry {
                        name: n,
                        loaded: false,
                    });
                }
            }
        }
        Ok(Json(TraceList { traces }))
    }

    #[tool(
        description = "Tables and views of a trace's database with row counts and what a row is. \
                       Then describe_table for columns.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_tables(
        &self,
        Parameters(a): Parameters<TraceOnly>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<TableList>, String> {
        self.state
            .run(a.trace.as_deref(), &ctx, |db, _, _| {
                let docs = schema::table_docs();
                let mut tables = Vec::new();
                for (name, kind) in user_tables(db.conn())? {
                    let rows = match crate::analyzer::columns::row_count(db.conn(), &name) {
                        Some(n) => n,
                        None => db.conn().query_row(
                            &format!("SELECT count(*) FROM {}", quote_ident(&name)),
                            [],
                            |r| r.get(0),
                        )?,
                    };
                    let summary = docs
                        .iter()
                        .find(|d| d.name == name)
                        .map(|d| d.summary.clone())
                        .unwrap_or_default();
                    tables.push(TableEntry {
                        name,
                        kind,
                        rows,
                        summary,
                    });
                }
                Ok(TableList { tables })
            })
            .await
    }

    #[tool(
        description = "Columns of one table or view (type and meaning) and 3 sample rows.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn describe_table(
        &self,
        Parameters(a): Parameters<DescribeTableArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<TableDescription>, String> {
        let table = a.table.trim().to_string();
        self.state
            .run(a.trace.as_deref(), &ctx, move |db, limits, budget| {
                let tables = user_tables(db.conn())?;
                let Some((name, kind)) = tables
                    .iter()
                    .find(|t| t.0.eq_ignore_ascii_case(&table))
                    .cloned()
                else {
                    let names: Vec<&str> = tables.iter().map(|t| t.0.as_str()).collect();
                    anyhow::bail!("unknown table {table:?}: the tables and views are {names:?}");
                };
                let doc = schema::table_docs().iter().find(|d| d.name == name);
                let mut st = db
                    .conn()
                    .prepare(&format!("PRAGMA table_info({})", quote_ident(&name)))?;
                let columns = st
                    .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
                    .map(|c| {
                        c.map(|(cname, decl)| {
                            let cdoc = doc.and_then(|d| d.columns.iter().find(|c| c.name == cname));
                            ColumnEntry {
                                decl_type: cdoc.map(|c| c.decl_type.clone()).unwrap_or(decl),
                                doc: cdoc.map(|c| c.doc.clone()).unwrap_or_default(),
                                name: cname,
                            }
                        })
                    })
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                drop(st);
                let sample = sandbox::run_query(
                    db,
                    &format!("SELECT * FROM {} LIMIT 3", quote_ident(&name)),
                    Some(3),
                    None,
                    limits,
                    budget,
                )
                .map_err(anyhow::Error::msg)?;
                Ok(TableDescription {
                    summary: doc.map(|d| d.summary.clone()).unwrap_or_default(),
                    detail: doc.map(|d| d.detail.clone()).unwrap_or_default(),
                    name,
                    kind,
                    columns,
                    sample_rows: sample.rows,
                })
            })
            .await
    }

    #[tool(
        description = "Run one read-only SQL statement (SQLite) on a trace's tables; see \
                       list_tables/describe_table. Rows come back as typed cells; `truncated` says \
                       when the row limit or size budget cut the result. ts values are absolute \
                       trace-clock ns: subtract trace_bounds.start_ts for time from the start. \
                       Large integers (> 2^53) come back as strings.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn query(
        &self,
        Parameters(a): Parameters<QueryArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<QueryResult>, String> {
        self.state
            .run(a.trace.as_deref(), &ctx, move |db, limits, budget| {
                sandbox::run_query(db, &a.sql, a.limit, a.offset, limits, budget)
                    .map_err(anyhow::Error::msg)
            })
            .await
    }

    #[tool(
        description = "CPU utilization (time non-idle threads ran) in a window, per CPU, per LLC \
                       group or per NUMA node, with the total.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn cpu_utilization(
        &self,
        Parameters(a): Parameters<CpuUtilizationArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<report::CpuUtilization>, String> {
        self.state
            .run(a.trace.as_deref(), &ctx, move |db, _, _| {
                let b = report::trace_bounds(db.conn())?;
                let w = window(&b, a.window.as_ref())?;
                report::cpu_utilization(db.conn(), w, a.group_by.unwrap_or_default())
            })
            .await
    }

    #[tool(
        description = "Threads ranked by CPU time, switches, wait time (runnable, not running) or \
                       worst wakeup latency in a window, with tid, pid, names and all four metrics.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn top_tasks(
        &self,
        Parameters(a): Parameters<TopTasksArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<report::TopTasks>, String> {
        let limit = count_arg("limit", a.limit, 10, 100)?;
        self.state
            .run(a.trace.as_deref(), &ctx, move |db, _, _| {
                let b = report::trace_bounds(db.conn())?;
                let w = window(&b, a.window.as_ref())?;
                report::top_tasks(db.conn(), w, a.order_by.unwrap_or_default(), limit)
            })
            .await
    }

    #[tool(
        description = "Scheduling latency (sched_waking to running) percentiles p50/p90/p99/p99.9/max \
                       and the worst cases with when, where and who woke them; optionally for one \
                       tid, pid or name.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn scheduling_latency(
        &self,
        Parameters(a): Parameters<SchedulingLatencyArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<report::SchedulingLatency>, String> {
        let worst = count_arg("worst", a.worst, 10, 100)?;
        self.state
            .run(a.trace.as_deref(), &ctx, move |db, _, _| {
                let b = report::trace_bounds(db.conn())?;
                let w = window(&b, a.window.as_ref())?;
                let filter = TaskFilter {
                    tid: a.tid,
                    pid: a.pid,
                    name: a.name,
                };
                report::scheduling_latency(db.conn(), &filter, w, worst)
            })
            .await
    }

    #[tool(
        description = "What a thread (tid) or each thread of a process (pid) did over time: merged \
                       intervals of Running (with CPU), R/R+ (runnable), S, D, ... and totals per state.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn task_timeline(
        &self,
        Parameters(a): Parameters<TaskTimelineArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<report::TaskTimeline>, String> {
        let limit = count_arg("limit", a.limit, 200, 2000)?;
        let sel = match (a.tid, a.pid) {
            (Some(t), None) => TaskSel::Tid(t),
            (None, Some(p)) => TaskSel::Pid(p),
            _ => return Err("give exactly one of tid or pid".into()),
        };
        self.state
            .run(a.trace.as_deref(), &ctx, move |db, _, _| {
                let b = report::trace_bounds(db.conn())?;
                let w = window(&b, a.window.as_ref())?;
                report::task_timeline(db.conn(), sel, w, limit)
            })
            .await
    }

    #[tool(
        description = "Processes as a tree (depth-first list with depth and parent pid): pid, name, \
                       command line, thread count, start/end; optionally one process's subtree.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn process_tree(
        &self,
        Parameters(a): Parameters<ProcessTreeArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<report::ProcessTree>, String> {
        let limit = count_arg("limit", a.limit, 500, 5000)?;
        self.state
            .run(a.trace.as_deref(), &ctx, move |db, _, _| {
                report::process_tree(db.conn(), a.pid, limit)
            })
            .await
    }

    #[tool(
        description = "Find what is in a trace without dumping tables: tasks (thread/process names, \
                       command lines, tids, pids), event types and CPUs containing a text, with counts.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn search_events(
        &self,
        Parameters(a): Parameters<SearchEventsArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<report::SearchResults>, String> {
        let limit = count_arg("limit", a.limit, 50, 500)?;
        self.state
            .run(a.trace.as_deref(), &ctx, move |db, _, _| {
                report::search_events(db.conn(), &a.text, limit)
            })
            .await
    }
}

impl Server {
    /// The name of the trace a call means, for tools that report it.
    async fn name_of(&self, trace: Option<&str>) -> Result<String, String> {
        if let Some(t) = trace {
            return Ok(t.trim().to_string());
        }
        self.state.resolve(None).await?;
        let served = self.state.served.lock().await;
        match served.keys().next() {
            Some(n) if served.len() == 1 => Ok(n.clone()),
            _ => Err("several traces are available: pass trace (see list_traces)".into()),
        }
    }
}

/// Tables and views of the database, excluding SQLite's own.
fn user_tables(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut st = conn.prepare(
        "SELECT name, type FROM sqlite_schema WHERE type IN ('table', 'view')
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )?;
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The table documentation as markdown, for the schema resource.
fn schema_markdown() -> String {
    let mut md = String::from(
        "# schedlens tables\n\nTimestamps (ts, *_ts) are ns on the trace clock; durations are ns. \
         utid/upid are row ids of thread/process; utid 0 is idle (swapper).\n",
    );
    for t in schema::table_docs() {
        md.push_str(&format!(
            "\n## {} ({})\n\n{}\n",
            t.name,
            if t.is_view { "view" } else { "table" },
            t.summary
        ));
        if !t.detail.is_empty() {
            md.push_str(&format!("\n{}\n", t.detail));
        }
        md.push_str("\n| column | type | meaning |\n|---|---|---|\n");
        for c in &t.columns {
            md.push_str(&format!(
                "| {} | {} | {} |\n",
                c.name,
                c.decl_type,
                c.doc.replace('|', "\\|")
            ));
        }
    }
    md
}

#[tool_handler]
impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("schedlens", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let tool = request.name.clone();
        let mut response = self
            .tool_router
            .call(ToolCallContext::new(self, request, context))
            .await?;
        // serde's message names the bad value but not the tool; say where to look.
        if let CallToolResponse::Complete(result) = &mut response
            && result.is_error == Some(true)
            && let Some(message) = result
                .content
                .first()
                .and_then(|c| c.as_text())
                .and_then(|t| t.text.strip_prefix("failed to deserialize parameters: "))
        {
            let message = format!(
                "bad arguments for {tool}: {message}. The tool's input schema (tools/list) lists \
                 each argument with its type and meaning."
            );
            result.content = vec![ContentBlock::text(message)];
        }
        Ok(response)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut tools = self.tool_router.list_all();
        tools.sort_by_key(|t| {
            TOOL_ORDER
                .iter()
                .position(|n| *n == t.name)
                .unwrap_or(usize::MAX)
        });
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let schema = Resource::new(SCHEMA_URI, "schema")
            .with_title("schedlens table documentation")
            .with_description("Every table and view with what a row is and what each column means.")
            .with_mime_type("text/markdown");
        Ok(ListResourcesResult::with_all_items(vec![schema]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if request.uri != SCHEMA_URI {
            return Err(ErrorData::resource_not_found(
                format!(
                    "unknown resource {}: the only one is {SCHEMA_URI}",
                    request.uri
                ),
                None,
            ));
        }
        let contents = ResourceContents::TextResourceContents {
            uri: SCHEMA_URI.into(),
            mime_type: Some("text/markdown".into()),
            text: schema_markdown(),
            meta: None,
        };
        Ok(ReadResourceResult::new(vec![contents]).into())
    }
}
