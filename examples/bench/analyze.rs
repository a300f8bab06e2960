//! Figure 5: how fast `schedlens analyze` loads a big recording and how
//! long each MCP tool takes on it, through a real MCP client.

use crate::export::{ExportFigure, export};
use crate::measure::{Stat, run_measured};
use crate::opts::Opts;
use crate::table::analyze_rows;
use anyhow::{Context, Result, bail};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use serde::Serialize;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct AnalyzeFigure {
    pub trace_events: u64,
    pub trace_bytes: u64,
    pub load_wall_s: f64,
    pub load_events_per_sec: f64,
    pub load_max_rss_mib: f64,
    /// Tool name -> median latency in ms over a few calls.
    pub tool_latency_ms: Vec<(String, f64)>,
    pub export: ExportFigure,
}

/// Figure 5: load speed and memory, then each MCP tool's latency.
pub fn analyze(o: &Opts, trace: &Path, events: u64) -> Result<AnalyzeFigure> {
    let (_, cost) = run_measured(
        Command::new(&o.schedlens)
            .args(["query", "--rebuild", "--format", "csv"])
            .arg(trace)
            .arg("SELECT count(*) FROM sched_slice"),
    )?;
    let tool_latency_ms = tokio::runtime::Runtime::new()?.block_on(tool_latencies(o, trace))?;
    let export = export(o, trace)?;
    Ok(AnalyzeFigure {
        trace_events: events,
        trace_bytes: std::fs::metadata(trace)?.len(),
        load_wall_s: cost.wall_s,
        load_events_per_sec: events as f64 / cost.wall_s,
        load_max_rss_mib: cost.max_rss_kib as f64 / 1024.0,
        tool_latency_ms,
        export,
    })
}

pub async fn tool_latencies(o: &Opts, trace: &Path) -> Result<Vec<(String, f64)>> {
    use schedlens::analyses::{
        cpu_timeline, cpu_utilization, critical_path, interference, process_activity, process_tree,
        scheduling_latency, search_events, task_timeline, top_tasks, trace_info,
    };
    use schedlens::mcp::{catalogue, query};
    let mut cmd = tokio::process::Command::new(&o.schedlens);
    cmd.arg("analyze").arg(trace).stderr(Stdio::null());
    let client = ().serve(TokioChildProcess::new(cmd)?).await?;
    // A busy thread's tid for the per-task tools.
    let top = client
        .call_tool(tool_call(
            top_tasks::TOOL.name,
            serde_json::json!({"limit": 1}),
        ))
        .await?;
    let tid = top
        .structured_content
        .as_ref()
        .and_then(|v| v.pointer("/tasks/0/tid"))
        .and_then(|v| v.as_i64())
        .unwrap_or(1);
    let calls = [
        (trace_info::TOOL.name, serde_json::json!({})),
        (catalogue::LIST_TABLES.name, serde_json::json!({})),
        (
            catalogue::DESCRIBE_TABLE.name,
            serde_json::json!({"table": "sched_slice"}),
        ),
        (
            cpu_utilization::TOOL.name,
            serde_json::json!({"group_by": "cpu"}),
        ),
        (
            top_tasks::TOOL.name,
            serde_json::json!({"order_by": "cpu_time", "limit": 10}),
        ),
        (
            top_tasks::TOOL.name,
            serde_json::json!({"order_by": "latency", "limit": 10}),
        ),
        (scheduling_latency::TOOL.name, serde_json::json!({})),
        (task_timeline::TOOL.name, serde_json::json!({"tid": tid})),
        (critical_path::TOOL.name, serde_json::json!({"tid": tid})),
        (interference::TOOL.name, serde_json::json!({"tid": tid})),
        (cpu_timeline::TOOL.name, serde_json::json!({"cpu": 0})),
        (process_tree::TOOL.name, serde_json::json!({})),
        (process_activity::TOOL.name, serde_json::json!({})),
        (
            search_events::TOOL.name,
            serde_json::json!({"text": "bench"}),
        ),
        (
            query::QUERY.name,
            serde_json::json!({"sql": "SELECT cpu, count(*) FROM sched_slice GROUP BY cpu"}),
        ),
    ];
    let mut out = vec![];
    for (name, args) in calls {
        let mut times = vec![];
        for _ in 0..3 {
            let t = Instant::now();
            let r = client.call_tool(tool_call(name, args.clone())).await?;
            if r.is_error == Some(true) {
                bail!("tool {name} failed: {:?}", r.content);
            }
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let label = if name == top_tasks::TOOL.name {
            format!("{name}({})", args["order_by"].as_str().unwrap_or(""))
        } else {
            name.to_string()
        };
        out.push((label, Stat::of(&times).median));
    }
    client.cancel().await?;
    Ok(out)
}

pub fn tool_call(name: &'static str, args: serde_json::Value) -> CallToolRequestParams {
    let args = match args {
        serde_json::Value::Object(m) => Some(m),
        _ => None,
    };
    let mut p = CallToolRequestParams::new(name);
    p.arguments = args;
    p
}

/// `bench --analyze TRACE`: figure 5 alone, on a recording of the user's.
pub fn analyze_only(o: &Opts, trace: &Path) -> Result<()> {
    let mut a = analyze(o, trace, 0)?;
    let out = Command::new(&o.schedlens)
        .args(["query", "--format", "csv"])
        .arg(trace)
        .arg("SELECT int_value FROM metadata WHERE name = 'loaded_events'")
        .stderr(Stdio::null())
        .output()?;
    let events: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .context("the loaded trace records no event count")?;
    a.trace_events = events;
    a.load_events_per_sec = events as f64 / a.load_wall_s;
    let mut t = comfy_table::Table::new();
    t.set_header(["figure", "schedlens", "", "target", ""]);
    analyze_rows(&mut t, &a);
    println!("{t}");
    Ok(())
}
