//! The tools of `analyze --recorder`: recording through the recorder service
//! (crate::service), which loads the BPF programs so this server never does.
//! A recorded trace comes back as an open file descriptor, is loaded like any
//! other and then served to every tool by name.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rmcp::RoleServer;
use rmcp::model::{JsonObject, ProgressNotificationParam, ToolAnnotations};
use rmcp::service::RequestContext;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use rmcp::handler::server::tool::{schema_for_input, schema_for_output};

use super::call::{Entry, State};
use super::registry::Role;
use crate::analyzer::db;
use crate::recorder::cli::LatencyTrigger;
use crate::service::client::Connection;
use crate::service::protocol::{
    Capabilities, Ending, Finished, RecordRequest, Request, Response, Selection, SnapshotRequest,
    Status,
};

/// Arguments of `record`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordArgs {
    /// How long to record, e.g. "2s", "500ms", "1m" (at most the recorder's max_duration,
    /// which list_recordable_events shows).
    pub duration: String,
    #[serde(flatten)]
    pub what: Selection,
    /// A flight recording: keep only this last stretch (e.g. "30s") for `snapshot` calls
    /// while it runs; the trace returned at the end is a snapshot of its last window.
    #[serde(default)]
    pub flight_window: Option<String>,
    #[serde(flatten)]
    pub trigger: LatencyTrigger,
}

/// Arguments of `snapshot`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotArgs {
    /// The flight recording's id (recording_status lists them); default: your only one.
    #[serde(default)]
    pub id: Option<u64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Snapshotted {
    /// The snapshot's trace name: pass it as `trace` to the other tools.
    pub trace: String,
    /// The flight recording it was taken from.
    pub id: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Recorded {
    /// The new trace's name: pass it as `trace` to the other tools.
    pub trace: String,
    /// Why the recording ended: duration, cancelled, max_bytes (the recorder's size cap) or failed.
    pub ended: String,
    /// Seconds recorded.
    pub seconds: f64,
    pub bytes: u64,
    /// The snapshots the trigger took meanwhile, served by these names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
}

/// recording_status takes no arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsArgs {
    /// Words to look for in the names and descriptions of event groups,
    /// tracepoints and stack kinds; empty: a short overview.
    #[serde(default)]
    pub text: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Recordable {
    /// Event groups: name, whether recorded by default, what it captures.
    pub groups: Vec<GroupEntry>,
    /// Stack kinds that can be captured.
    pub stacks: Vec<String>,
    /// The recorder's limits: max_duration, max_bytes, max_concurrent, min_interval, spool_max_bytes.
    pub limits: Value,
    /// How to see more.
    pub note: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct GroupEntry {
    pub name: String,
    pub default: bool,
    pub description: String,
    /// Its tracepoints (only those matching `text`, when given).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// How many tracepoints it has.
    pub event_count: usize,
}

/// The recorder tools, in tools/list order.
pub(super) fn tools() -> Vec<Entry> {
    vec![
        entry::<RecordArgs, Recorded>(
            "record",
            "Record the Linux scheduler for a while through the recorder service (it needs no \
             privileges here): duration, event groups, stack kinds and pid/tgid/comm filters. \
             Waits until the recording ends, with progress; cancelling stops it and keeps what \
             it has. The new trace is then available to every tool by the name it returns.",
            false,
            |state, args, ctx| Box::pin(record(state, args, ctx)),
        ),
        entry::<SnapshotArgs, Snapshotted>(
            "snapshot",
            "Snapshot the last window of a flight recording (a record call with flight_window, \
             still running) as a new trace, available to every tool by the name it returns.",
            false,
            |state, args, _ctx| Box::pin(snapshot(state, args)),
        ),
        entry::<NoArgs, Status>(
            "recording_status",
            "The recordings the recorder service is running now and its limits.",
            true,
            |state, _args, _ctx| Box::pin(async move { ask(&state, Request::Status).await }),
        ),
        entry::<EventsArgs, Recordable>(
            "list_recordable_events",
            "What the recorder on this machine can capture: event groups, their tracepoints, \
             stack kinds and the limits in force. Short by default; pass text to search.",
            true,
            |state, args, _ctx| {
                Box::pin(async move {
                    let caps: Capabilities = ask(&state, Request::Capabilities).await?;
                    Ok(recordable(caps, &args.text))
                })
            },
        ),
    ]
}

type Call<O> = std::pin::Pin<Box<dyn Future<Output = Result<O, String>> + Send>>;

fn entry<A, O>(
    name: &'static str,
    description: &'static str,
    read_only: bool,
    answer: fn(Arc<State>, A, RequestContext<RoleServer>) -> Call<O>,
) -> Entry
where
    A: serde::de::DeserializeOwned + JsonSchema + Send + 'static,
    O: Serialize + JsonSchema + Send + 'static,
{
    let input = schema_for_input::<A>()
        .unwrap_or_else(|e| panic!("the arguments of {name} must be an object: {e}"));
    let tool = rmcp::model::Tool::new_with_raw(name, Some(description.into()), input)
        .with_raw_output_schema(schema_for_output::<O>())
        .with_annotations(ToolAnnotations::from_raw(
            None,
            Some(read_only),
            Some(false),
            None,
            Some(false),
        ));
    Entry {
        name,
        role: Role::Record,
        tool,
        call: Box::new(move |state, args: JsonObject, ctx| {
            Box::pin(async move {
                let args: A = serde_json::from_value(Value::Object(args)).map_err(|e| {
                    format!(
                        "bad arguments for {name}: {e}. The tool's input schema (tools/list) \
                         lists each argument with its type and meaning."
                    )
                })?;
                let out = answer(state, args, ctx).await?;
                serde_json::to_value(out)
                    .map_err(|e| format!("internal error: cannot encode the answer: {e}"))
            })
        }),
    }
}

fn socket(state: &State) -> Result<PathBuf, String> {
    state
        .recorder
        .clone()
        .ok_or_else(|| "this server was started without --recorder".to_string())
}

/// One request whose answer is one frame of type `T`.
async fn ask<T: FromResponse + Send + 'static>(
    state: &State,
    request: Request,
) -> Result<T, String> {
    let socket = socket(state)?;
    tokio::task::spawn_blocking(move || {
        let mut conn = Connection::connect(&socket).map_err(|e| format!("{e:#}"))?;
        conn.send(&request).map_err(|e| format!("{e:#}"))?;
        let (response, _) = conn.recv().map_err(|e| format!("{e:#}"))?;
        T::from_response(response)
    })
    .await
    .map_err(|e| format!("internal error: {e}"))?
}

trait FromResponse: Sized {
    fn from_response(r: Response) -> Result<Self, String>;
}

fn refused(r: Response) -> String {
    match r {
        Response::Error(e) => format!("the recorder refused: {}", e.message),
        other => format!("unexpected answer from the recorder: {other:?}"),
    }
}

impl FromResponse for Status {
    fn from_response(r: Response) -> Result<Self, String> {
        match r {
            Response::Status(s) => Ok(s),
            other => Err(refused(other)),
        }
    }
}

impl FromResponse for Capabilities {
    fn from_response(r: Response) -> Result<Self, String> {
        match r {
            Response::Capabilities(c) => Ok(c),
            other => Err(refused(other)),
        }
    }
}

/// The capabilities cut to what `text` asks about (a short overview without it).
fn recordable(caps: Capabilities, text: &str) -> Recordable {
    let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
    let matches = |s: &str| {
        let s = s.to_lowercase();
        words.iter().any(|w| s.contains(w.as_str()))
    };
    let groups = caps
        .groups
        .into_iter()
        .filter_map(|g| {
            let event_count = g.events.len();
            let events: Vec<String> = if words.is_empty() {
                Vec::new()
            } else {
                g.events.into_iter().filter(|e| matches(e)).collect()
            };
            let shown = words.is_empty()
                || !events.is_empty()
                || matches(&g.name)
                || matches(&g.description);
            shown.then_some(GroupEntry {
                name: g.name,
                default: g.default,
                description: g.description,
                events,
                event_count,
            })
        })
        .collect();
    let stacks = caps
        .stacks
        .into_iter()
        .filter(|s| words.is_empty() || matches(&s.name) || matches(&s.description))
        .map(|s| format!("{}: {}", s.name, s.description))
        .collect();
    let l = caps.limits;
    Recordable {
        groups,
        stacks,
        limits: serde_json::json!({
            "max_duration": humantime::format_duration(Duration::from_millis(l.max_duration_ms)).to_string(),
            "max_bytes": l.max_bytes,
            "max_concurrent": l.max_concurrent,
            "min_interval": humantime::format_duration(Duration::from_millis(l.min_interval_ms)).to_string(),
            "spool_max_bytes": l.spool_max_bytes,
        }),
        note: if words.is_empty() {
            "pass text (e.g. \"wakeup\") to list the matching tracepoints of each group".into()
        } else {
            format!("entries matching {text:?}")
        },
    }
}

/// Loads a trace the service handed over as `fd` and serves it as `name`.
async fn load_handed_trace(state: &State, name: &str, fd: OwnedFd) -> Result<(), String> {
    let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .unwrap_or_else(|_| Path::new(name).to_path_buf());
    let opts = state.traces.load_options();
    let shown = name.to_string();
    let loaded =
        tokio::task::spawn_blocking(move || db::load_file(&path, std::fs::File::from(fd), &opts))
            .await
            .map_err(|e| format!("internal error: {e}"))?
            .map_err(|e| format!("loading the recorded trace {shown}: {e:#}"))?;
    state.traces.insert(name.to_string(), loaded.db_path)
}

async fn snapshot(state: Arc<State>, args: SnapshotArgs) -> Result<Snapshotted, String> {
    let socket = socket(&state)?;
    let (id, name, bytes, fd) = tokio::task::spawn_blocking(move || {
        let mut conn = Connection::connect(&socket).map_err(|e| format!("{e:#}"))?;
        conn.send(&Request::Snapshot(SnapshotRequest { id: args.id }))
            .map_err(|e| format!("{e:#}"))?;
        match conn.recv().map_err(|e| format!("{e:#}"))? {
            (
                Response::Snapshot {
                    id, name, bytes, ..
                },
                Some(fd),
            ) => Ok((id, name, bytes, fd)),
            (Response::Snapshot { .. }, None) => {
                Err("the recorder sent no trace with its answer".to_string())
            }
            (other, _) => Err(refused(other)),
        }
    })
    .await
    .map_err(|e| format!("internal error: {e}"))??;
    load_handed_trace(&state, &name, fd).await?;
    Ok(Snapshotted {
        trace: name,
        id,
        bytes,
    })
}

/// What the blocking side of a recording reports to the async side.
enum Update {
    Progress { elapsed_ms: u64, bytes: u64 },
    Triggered(String, OwnedFd),
    Done(Box<Finished>, OwnedFd),
}

async fn record(
    state: Arc<State>,
    args: RecordArgs,
    ctx: RequestContext<RoleServer>,
) -> Result<Recorded, String> {
    let socket = socket(&state)?;
    let duration = humantime::parse_duration(args.duration.trim()).map_err(|e| {
        format!(
            "duration {:?}: {e} (examples: 2s, 500ms, 1m)",
            args.duration
        )
    })?;
    let flight_window_ms = match args.flight_window.as_deref().map(str::trim) {
        Some(w) => Some(
            humantime::parse_duration(w)
                .map_err(|e| format!("flight_window {w:?}: {e} (examples: 30s, 1m)"))?
                .as_millis()
                .min(u128::from(u64::MAX)) as u64,
        ),
        None => None,
    };
    let request = RecordRequest {
        flight_window_ms,
        duration_ms: duration.as_millis().min(u128::from(u64::MAX)) as u64,
        what: args.what,
        max_bytes: None,
        trigger: args.trigger,
    };
    let (mut conn, canceller) = {
        let socket = socket.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = Connection::connect(&socket)?;
            conn.send(&Request::Record(request))?;
            let canceller = conn.try_clone_stream()?;
            anyhow::Ok((conn, canceller))
        })
        .await
        .map_err(|e| format!("internal error: {e}"))?
        .map_err(|e| format!("{e:#}"))?
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::task::spawn_blocking(move || -> Result<(), String> {
        loop {
            let (response, fd) = conn.recv().map_err(|e| format!("{e:#}"))?;
            match response {
                Response::Started { .. } => {}
                Response::Progress { elapsed_ms, bytes } => {
                    let _ = tx.send(Update::Progress { elapsed_ms, bytes });
                }
                Response::Snapshot {
                    name,
                    trigger: Some(_),
                    ..
                } => {
                    let fd = fd.ok_or("the recorder sent no trace with a trigger snapshot")?;
                    let _ = tx.send(Update::Triggered(name, fd));
                }
                Response::Finished(f) => {
                    let fd = fd.ok_or("the recorder sent no trace with its answer")?;
                    let _ = tx.send(Update::Done(Box::new(f), fd));
                    return Ok(());
                }
                other => return Err(refused(other)),
            }
        }
    });
    let token = ctx.meta.get_progress_token();
    let total = duration.as_secs_f64();
    let mut cancel_sent = false;
    let mut snapshots = Vec::new();
    let done = loop {
        tokio::select! {
            update = rx.recv() => match update {
                Some(Update::Progress { elapsed_ms, bytes }) => {
                    if let Some(token) = &token {
                        let seconds = elapsed_ms as f64 / 1e3;
                        let message = if bytes == 0 {
                            "starting the recorder".to_string()
                        } else {
                            format!("recording {seconds:.1}s of {total:.1}s ({:.1} MB)", bytes as f64 / 1e6)
                        };
                        let param = ProgressNotificationParam::new(token.clone(), seconds.min(total))
                            .with_total(total)
                            .with_message(message);
                        let _ = ctx.peer.notify_progress(param).await;
                    }
                }
                // Served at once, so the client can look while it records.
                Some(Update::Triggered(name, fd)) => {
                    load_handed_trace(&state, &name, fd).await?;
                    snapshots.push(name);
                }
                Some(Update::Done(f, fd)) => break (f, fd),
                None => {
                    return Err(match reader.await {
                        Ok(Err(e)) => e,
                        _ => "the recorder ended the recording without a trace".into(),
                    });
                }
            },
            _ = ctx.ct.cancelled(), if !cancel_sent => {
                // Stops the recording; its trace still comes back.
                cancel_sent = true;
                let mut stream = &canceller;
                let _ = crate::service::protocol::write_frame(&mut stream, &Request::Cancel);
            }
        }
    };
    let (finished, fd) = done;
    let name = finished.name.clone();
    load_handed_trace(&state, &name, fd).await?;
    if finished.ended == Ending::Failed {
        return Err(format!(
            "the recording failed ({}); what it had is served as trace {name}",
            finished.message.as_deref().unwrap_or("no message")
        ));
    }
    Ok(Recorded {
        trace: name,
        ended: serde_json::to_value(finished.ended)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        seconds: finished.elapsed_ms as f64 / 1e3,
        bytes: finished.bytes,
        snapshots,
    })
}
