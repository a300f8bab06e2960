//! How a tool call runs. Every tool but list_traces and compare (two traces)
//! reads one trace: it takes a `trace` argument (declared here, once), its
//! other arguments are parsed into the tool's own type, and its work runs on a
//! sandboxed connection to that trace's database, on a blocking thread so a
//! long query never stalls the stdio loop, stopped by the time limit or the
//! request's cancellation.
//! User mistakes come back as tool errors (isError) the model can read.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rmcp::RoleServer;
use rmcp::handler::server::tool::{schema_for_input, schema_for_output};
use rmcp::model::{JsonObject, ToolAnnotations};
use rmcp::service::RequestContext;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Semaphore;

use super::registry::Role;
use super::traces::{Resolved, Traces};
use crate::analyses;
use crate::analyzer::sandbox::{Budget, Limits, ReadOnlyDb};

/// What every call shares: the traces, the limits of their SQL and the slots
/// for running it.
pub(super) struct State {
    pub traces: Traces,
    pub limits: Limits,
    /// For the tools' own SQL.
    pub slots: Arc<Semaphore>,
    /// For a model's SQL, apart: slow queries never hold up the tools.
    pub worker_slots: Arc<Semaphore>,
    /// The recorder service's socket (`--recorder`), for the recording tools.
    pub recorder: Option<std::path::PathBuf>,
}

/// A tool that needs the SQL sandbox itself (limits and budget), not only a
/// connection: the catalogue and query.
pub struct SandboxTool<A, O> {
    pub name: &'static str,
    pub description: &'static str,
    pub answer: fn(&mut SandboxedDb, A) -> anyhow::Result<O>,
}

/// A trace's database opened in the sandbox for one call.
pub struct SandboxedDb<'a> {
    pub db: &'a mut ReadOnlyDb,
    pub limits: &'a Limits,
    pub budget: &'a Budget,
}

/// A tool that runs a model's SQL: in a worker process on the trace's
/// database (sandbox::run_isolated), which the time limit or a cancel kills
/// even inside one SQL function call.
pub struct WorkerTool<A, O> {
    pub name: &'static str,
    pub description: &'static str,
    pub answer: fn(&Path, A, &Limits, &AtomicBool) -> Result<O, String>,
}

/// A tool that answers from the list of traces, without opening one.
pub struct TraceListTool<O> {
    pub name: &'static str,
    pub description: &'static str,
    pub answer: fn(&Traces) -> O,
}

/// The answer of a call: structured output, or the message of a tool error.
type Answer = Result<Value, String>;
type Pending = Pin<Box<dyn Future<Output = Answer> + Send>>;
/// A tool's work on its trace, before its answer is encoded.
type Call<O> = Pin<Box<dyn Future<Output = Result<O, String>> + Send>>;
type Handler =
    Box<dyn Fn(Arc<State>, JsonObject, RequestContext<RoleServer>) -> Pending + Send + Sync>;

fn handler<F>(f: F) -> Handler
where
    F: Fn(Arc<State>, JsonObject, RequestContext<RoleServer>) -> Pending + Send + Sync + 'static,
{
    Box::new(f)
}

/// One tool: what tools/list shows of it and what a call runs.
pub(super) struct Entry {
    pub name: &'static str,
    pub role: Role,
    pub tool: rmcp::model::Tool,
    pub call: Handler,
}

/// The `trace` argument of every tool that reads a trace.
#[derive(serde::Deserialize, JsonSchema)]
struct TraceArg {
    /// Trace name; optional with one trace.
    trace: Option<String>,
}

impl Entry {
    /// An analysis, answered from its trace's connection.
    pub fn analysis<A, O>(role: Role, tool: analyses::Tool<A, O>) -> Entry
    where
        A: DeserializeOwned + JsonSchema + Send + 'static,
        O: Serialize + JsonSchema + Send + 'static,
    {
        let answer = tool.answer;
        Entry::in_sandbox(
            role,
            tool.name,
            tool.description,
            move |name, sandboxed, args| {
                let trace = analyses::TraceDb {
                    name,
                    conn: sandboxed.db.conn(),
                };
                analyses::require_scheduler_data(&trace)?;
                answer(&trace, args)
            },
        )
    }

    /// A tool that works in the SQL sandbox.
    pub fn sandboxed<A, O>(role: Role, tool: SandboxTool<A, O>) -> Entry
    where
        A: DeserializeOwned + JsonSchema + Send + 'static,
        O: Serialize + JsonSchema + Send + 'static,
    {
        let answer = tool.answer;
        Entry::in_sandbox(
            role,
            tool.name,
            tool.description,
            move |_, sandboxed, args| answer(sandboxed, args),
        )
    }

    /// A tool answered on a sandboxed connection to its trace: `answer` gets
    /// the trace's name, the connection and the other arguments.
    fn in_sandbox<A, O, F>(
        role: Role,
        name: &'static str,
        description: &'static str,
        answer: F,
    ) -> Entry
    where
        A: DeserializeOwned + JsonSchema + Send + 'static,
        O: Serialize + JsonSchema + Send + 'static,
        F: Fn(&str, &mut SandboxedDb, A) -> anyhow::Result<O> + Copy + Send + Sync + 'static,
    {
        Entry::on_trace(role, name, description, move |state, trace, args, ctx| {
            Box::pin(async move {
                state
                    .run(trace.as_deref(), &ctx, move |name, sandboxed| {
                        answer(name, sandboxed, args)
                    })
                    .await
            })
        })
    }

    /// A tool that runs a model's SQL in a worker process.
    pub fn in_worker<A, O>(role: Role, tool: WorkerTool<A, O>) -> Entry
    where
        A: DeserializeOwned + JsonSchema + Send + 'static,
        O: Serialize + JsonSchema + Send + 'static,
    {
        let answer = tool.answer;
        Entry::on_trace(
            role,
            tool.name,
            tool.description,
            move |state, trace, args, ctx| {
                Box::pin(async move {
                    let slots = state.worker_slots.clone();
                    state
                        .run_blocking(
                            &slots,
                            trace.as_deref(),
                            &ctx,
                            move |trace, limits, cancel| answer(&trace.db, args, limits, &cancel),
                        )
                        .await
                })
            },
        )
    }

    /// `fleet_summary`: its summary of each trace the server offers, in turn,
    /// each on that trace's sandboxed connection (loading it if need be); a
    /// trace that fails gets its error in its row, not the call's.
    pub fn fleet(role: Role) -> Entry {
        use super::fleet::{self, FleetSummary, FleetTrace};
        let input = rmcp::handler::server::common::schema_for_empty_input();
        Entry {
            name: fleet::NAME,
            role,
            tool: describe::<FleetSummary>(fleet::NAME, fleet::DESCRIPTION, input),
            call: handler(move |state, _args, ctx| {
                Box::pin(async move {
                    let mut traces = Vec::new();
                    for name in state.traces.names() {
                        if ctx.ct.is_cancelled() {
                            return Err("cancelled".to_string());
                        }
                        let r = state
                            .run(Some(&name), &ctx, |_, db| fleet::summarize(db))
                            .await;
                        let (summary, error) = match r {
                            Ok(s) => (Some(s), None),
                            Err(e) => (None, Some(e)),
                        };
                        traces.push(FleetTrace {
                            trace: name,
                            error,
                            summary,
                        });
                    }
                    to_output(FleetSummary { traces })
                })
            }),
        }
    }

    /// compare: the two traces its `before` and `after` arguments name, each
    /// opened in the sandbox under the call's time limit.
    pub fn on_two_traces(role: Role, tool: analyses::compare::CompareTool) -> Entry {
        use analyses::compare::{CompareArgs, Comparison, answer};
        let name = tool.name;
        Entry {
            name,
            role,
            tool: describe::<Comparison>(name, tool.description, input_schema::<CompareArgs>()),
            call: handler(move |state, args, ctx| {
                Box::pin(async move {
                    let args: CompareArgs = serde_json::from_value(Value::Object(args))
                        .map_err(|e| format!("bad arguments for {name}: {e}"))?;
                    let after = state.traces.resolve(Some(&args.after), None).await?;
                    let before = args.before.clone();
                    let cancel = Arc::new(AtomicBool::new(false));
                    let out = state
                        .run(Some(&before), &ctx, move |before_name, sandboxed| {
                            let mut other =
                                ReadOnlyDb::open(&after.db).map_err(anyhow::Error::msg)?;
                            let _budget = other.arm(sandboxed.limits.timeout, cancel);
                            for trace in [
                                analyses::TraceDb {
                                    name: before_name,
                                    conn: sandboxed.db.conn(),
                                },
                                analyses::TraceDb {
                                    name: &after.name,
                                    conn: other.conn(),
                                },
                            ] {
                                analyses::require_scheduler_data(&trace)?;
                            }
                            answer(sandboxed.db.conn(), other.conn(), &args)
                        })
                        .await?;
                    to_output(out)
                })
            }),
        }
    }

    /// A tool over the list of traces; it takes no arguments.
    pub fn on_trace_list<O>(role: Role, tool: TraceListTool<O>) -> Entry
    where
        O: Serialize + JsonSchema + 'static,
    {
        let answer = tool.answer;
        let input = rmcp::handler::server::common::schema_for_empty_input();
        Entry {
            name: tool.name,
            role,
            tool: describe::<O>(tool.name, tool.description, input),
            call: handler(move |state, _args, _ctx| {
                Box::pin(std::future::ready(to_output(answer(&state.traces))))
            }),
        }
    }

    /// A tool that reads the trace its `trace` argument names: `answer` gets
    /// the shared state, the `trace` argument, the other arguments parsed and
    /// the request.
    fn on_trace<A, O, F>(
        role: Role,
        name: &'static str,
        description: &'static str,
        answer: F,
    ) -> Entry
    where
        A: DeserializeOwned + JsonSchema + Send + 'static,
        O: Serialize + JsonSchema + Send + 'static,
        F: Fn(Arc<State>, Option<String>, A, RequestContext<RoleServer>) -> Call<O>
            + Copy
            + Send
            + Sync
            + 'static,
    {
        let input = with_trace_arg(input_schema::<A>());
        Entry {
            name,
            role,
            tool: describe::<O>(name, description, input),
            call: handler(move |state, mut args, ctx| {
                Box::pin(async move {
                    let bad = |e: serde_json::Error| {
                        format!(
                            "bad arguments for {name}: {e}. The tool's input schema (tools/list) \
                             lists each argument with its type and meaning."
                        )
                    };
                    let trace = JsonObject::from_iter(args.remove_entry("trace"));
                    let TraceArg { trace } =
                        serde_json::from_value(Value::Object(trace)).map_err(bad)?;
                    let args: A = serde_json::from_value(Value::Object(args)).map_err(bad)?;
                    to_output(answer(state, trace, args, ctx).await?)
                })
            }),
        }
    }
}

/// What tools/list shows of a tool: every tool only reads, in a closed world.
fn describe<O: JsonSchema + 'static>(
    name: &'static str,
    description: &'static str,
    input: Arc<JsonObject>,
) -> rmcp::model::Tool {
    rmcp::model::Tool::new_with_raw(name, Some(description.into()), input)
        .with_raw_output_schema(schema_for_output::<O>())
        .with_annotations(ToolAnnotations::from_raw(
            None,
            Some(true),
            None,
            None,
            Some(false),
        ))
}

fn input_schema<A: JsonSchema + 'static>() -> Arc<JsonObject> {
    schema_for_input::<A>().unwrap_or_else(|e| {
        panic!(
            "the arguments of a tool must be an object ({}): {e}",
            std::any::type_name::<A>()
        )
    })
}

/// A tool's input schema with the `trace` argument added.
fn with_trace_arg(schema: Arc<JsonObject>) -> Arc<JsonObject> {
    let trace = input_schema::<TraceArg>()["properties"]["trace"].clone();
    let mut schema = (*schema).clone();
    if let Value::Object(props) = schema
        .entry("properties")
        .or_insert_with(|| Value::Object(JsonObject::new()))
    {
        props.insert("trace".into(), trace);
    }
    Arc::new(schema)
}

fn to_output<O: Serialize>(out: O) -> Answer {
    serde_json::to_value(out).map_err(|e| format!("internal error: cannot encode the answer: {e}"))
}

impl State {
    /// Runs `work` on a sandboxed connection to the named trace, off the async
    /// runtime, interrupted by the time limit or the request's cancellation.
    async fn run<T, F>(
        &self,
        trace: Option<&str>,
        ctx: &RequestContext<RoleServer>,
        work: F,
    ) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&str, &mut SandboxedDb) -> anyhow::Result<T> + Send + 'static,
    {
        self.run_blocking(&self.slots, trace, ctx, move |trace, limits, cancel| {
            let mut db = ReadOnlyDb::open(&trace.db)?;
            let budget = db.arm(limits.timeout, cancel);
            let mut sandboxed = SandboxedDb {
                db: &mut db,
                limits,
                budget: &budget,
            };
            let result = work(&trace.name, &mut sandboxed);
            result.map_err(|e| match e.downcast_ref::<rusqlite::Error>() {
                Some(sql) => db.explain(sql, &budget),
                None => format!("{e:#}"),
            })
        })
        .await
    }

    /// Runs `work` for the named trace on a blocking thread once one of
    /// `slots` is free, with a flag the request's cancellation sets.
    async fn run_blocking<T, F>(
        &self,
        slots: &Arc<Semaphore>,
        trace: Option<&str>,
        ctx: &RequestContext<RoleServer>,
        work: F,
    ) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(Resolved, &Limits, Arc<AtomicBool>) -> Result<T, String> + Send + 'static,
    {
        let cancel = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (ct, cancel) = (ctx.ct.clone(), cancel.clone());
            tokio::spawn(async move {
                ct.cancelled().await;
                cancel.store(true, Ordering::Relaxed);
            })
        };
        // A trace of the directory loads on first use: the cancel stops that too.
        let ready = async {
            let trace = self.traces.resolve(trace, Some(cancel.clone())).await?;
            let permit = slots
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| "the server is shutting down".to_string())?;
            Ok::<_, String>((trace, permit))
        };
        let (trace, permit) = match ready.await {
            Ok(ready) => ready,
            Err(e) => {
                watcher.abort();
                return Err(e);
            }
        };
        let limits = self.limits.clone();
        let job = tokio::task::spawn_blocking(move || {
            // Held until the work has stopped, not just until the caller gave up.
            let _permit = permit;
            work(trace, &limits, cancel)
        });
        let result = job.await;
        watcher.abort();
        match result {
            Ok(r) => r,
            Err(e) => Err(format!("internal error: {e}")),
        }
    }
}
