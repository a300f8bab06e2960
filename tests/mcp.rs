//! `schedlens analyze` end to end: the real binary, driven by rmcp's client over
//! stdio, answers checked against the synthetic workload's raw rows.

mod common;
mod output_schema;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, ReadResourceRequestParams};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};

use common::{START_TS, Workload};
use schedlens::analyses::{
    cpu_utilization, process_tree, scheduling_latency, search_events, task_timeline, top_tasks,
    trace_info,
};
use schedlens::analyzer::db::{self, LoadOptions};
use schedlens::mcp::{catalogue, query, traces};

type Client = RunningService<RoleClient, ()>;

struct Fixture {
    dir: tempfile::TempDir,
    trace: PathBuf,
    db: PathBuf,
    w: Workload,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let w = common::workload(4, 3, 2, 300);
    let (trace, db) = loaded_trace(dir.path(), "small.pftrace", &w);
    Fixture { dir, trace, db, w }
}

/// The workload written as a trace file `name` in `dir`, loaded the way
/// `schedlens analyze` loads it (the server then reuses that cache); returns
/// the trace and its database.
fn loaded_trace(dir: &Path, name: &str, w: &Workload) -> (PathBuf, PathBuf) {
    let trace = dir.join(name);
    common::write_trace(w, &trace);
    let loaded = db::load(&trace, &LoadOptions::default()).unwrap();
    (trace, loaded.db_path)
}

async fn start(args: &[&str]) -> Client {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_schedlens"));
    cmd.arg("analyze").args(args);
    let (transport, _) = TokioChildProcess::builder(cmd)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ().serve(transport).await.unwrap()
}

async fn serve(trace: &Path, extra: &[&str]) -> Client {
    let mut args = vec![trace.to_str().unwrap()];
    args.extend_from_slice(extra);
    start(&args).await
}

async fn call(c: &Client, tool: &str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    c.call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{tool}: protocol error {e}"))
}

fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

/// A successful result: the structured content, checked to equal the text and
/// to fit the tool's outputSchema.
async fn ok(c: &Client, tool: &str, args: Value) -> Value {
    let r = call(c, tool, args.clone()).await;
    assert_ne!(r.is_error, Some(true), "{tool} {args}: {}", text(&r));
    let structured = r.structured_content.clone().expect("structured content");
    let from_text: Value = serde_json::from_str(&text(&r)).expect("text is JSON");
    assert_eq!(
        structured, from_text,
        "{tool}: text and structured content differ"
    );
    output_schema::validate(c, tool, &structured).await;
    structured
}

/// A tool error (isError), returning its message.
async fn err(c: &Client, tool: &str, args: Value) -> String {
    let r = call(c, tool, args.clone()).await;
    assert_eq!(
        r.is_error,
        Some(true),
        "{tool} {args} should fail, got {}",
        text(&r)
    );
    text(&r)
}

fn ns(v: &Value) -> i64 {
    v["ns"].as_i64().unwrap_or_else(|| panic!("no ns in {v}"))
}

fn nearest_rank(sorted: &[i64], p: f64) -> i64 {
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test]
async fn discovery_and_tool_schemas() {
    let f = fixture();
    let c = serve(&f.trace, &[]).await;
    let info = c.peer_info().unwrap();
    let server = info.server_info.as_ref().unwrap();
    assert_eq!(server.name, "schedlens");
    assert_eq!(server.version, env!("CARGO_PKG_VERSION"));
    let instructions = info.instructions.as_deref().unwrap();

    // tools/list is the registry, in its order; the instructions name every tool.
    let tools = c.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, schedlens::mcp::tool_names());
    assert_eq!(names.first(), Some(&trace_info::TOOL.name));
    assert_eq!(names.last(), Some(&query::QUERY.name));
    for name in &names {
        assert!(instructions.contains(name), "instructions lack {name}");
    }
    for shared in [
        "pass trace = its name",
        "windows like \"1s..2s\" or {start, end}",
    ] {
        assert!(instructions.contains(shared), "instructions lack {shared}");
    }
    let again = c.list_all_tools().await.unwrap();
    assert_eq!(
        again.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        names
    );
    for t in &tools {
        assert!(
            t.name.len() <= 128
                && t.name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch)),
            "bad name {}",
            t.name
        );
        let a = t.annotations.as_ref().expect("annotations");
        assert_eq!(a.read_only_hint, Some(true), "{}", t.name);
        assert_eq!(a.open_world_hint, Some(false), "{}", t.name);
        assert!(t.description.as_ref().is_some_and(|d| d.len() > 20));
        assert_eq!(
            t.input_schema.get("type"),
            Some(&json!("object")),
            "{}",
            t.name
        );
        if let Some(Value::Object(props)) = t.input_schema.get("properties") {
            for (p, s) in props {
                // The shared arguments are explained once, in the instructions.
                assert!(
                    s.get("description").is_some() || ["trace", "window"].contains(&p.as_str()),
                    "{}.{p} has no description",
                    t.name
                );
            }
            // Its forms are in the instructions; the fields of its object
            // form are still checked (bad_arguments_are_readable_tool_errors).
            if let Some(window) = props.get("window") {
                assert_eq!(window, &json!({"type": ["string", "object"]}));
            }
        }
        let out = t
            .output_schema
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no output schema", t.name));
        assert_eq!(out.get("type"), Some(&json!("object")), "{}", t.name);
    }
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn analyses_match_the_workload() {
    let f = fixture();
    let w = &f.w;
    let c = serve(&f.trace, &[]).await;

    // trace_info
    let info = ok(&c, trace_info::TOOL.name, json!({})).await;
    assert_eq!(info["trace"], "small.pftrace");
    assert_eq!(info["cpus"]["count"], 4);
    assert_eq!(
        info["cpus"]["llc_groups"],
        json!([{"id": 0, "cpus": [0, 1]}, {"id": 1, "cpus": [2, 3]}])
    );
    // CPUs 0 and 1 share core 0, 2 and 3 have one each (the workload's topology).
    assert_eq!(info["cpus"]["cores"], 3);
    assert_eq!(info["cpus"]["threads_per_core"], 2);
    assert_eq!(info["cpus"]["smt_siblings"], json!([[0, 1]]));
    assert_eq!(ns(&info["time"]["duration"]), w.end_ts - START_TS);
    assert_eq!(info["time"]["start_ts"], START_TS.to_string());
    assert_eq!(info["system"]["kernel_release"], "6.8.0-test");
    assert_eq!(info["drops"]["lost_events"], 42);
    let events = info["events"].as_array().unwrap();
    let count_of = |e: &str| {
        events
            .iter()
            .find(|x| x["event"] == e)
            .map(|x| x["count"].as_i64().unwrap())
    };
    assert_eq!(count_of("sched_switch"), Some(w.slices.len() as i64));
    assert_eq!(count_of("sched_waking"), Some(w.wakeups.len() as i64));
    assert_eq!(count_of("task_exec"), Some(3));

    // cpu_utilization: whole trace and a window cutting slices at both ends
    let u = ok(&c, cpu_utilization::TOOL.name, json!({})).await;
    for g in u["groups"].as_array().unwrap() {
        let cpu = g["id"].as_i64().unwrap();
        assert_eq!(
            ns(&g["busy"]),
            w.busy_in(cpu, START_TS, w.end_ts),
            "cpu {cpu}"
        );
    }
    let u = ok(
        &c,
        cpu_utilization::TOOL.name,
        json!({"window": "1.234567ms..7ms", "group_by": "llc"}),
    )
    .await;
    let (lo, hi) = (START_TS + 1_234_567, START_TS + 7_000_000);
    let groups = u["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    for g in groups {
        let id = g["id"].as_i64().unwrap();
        let expect = w.busy_in(id * 2, lo, hi) + w.busy_in(id * 2 + 1, lo, hi);
        assert_eq!(ns(&g["busy"]), expect, "llc {id}");
        assert_eq!(ns(&g["capacity"]), 2 * (hi - lo));
    }
    let u2 = ok(
        &c,
        cpu_utilization::TOOL.name,
        json!({"window": {"start": 1_234_567, "end": "7ms"}, "group_by": "llc"}),
    )
    .await;
    assert_eq!(u["groups"], u2["groups"]);

    // top_tasks by cpu_time
    let t = ok(&c, top_tasks::TOOL.name, json!({"limit": 3})).await;
    let tasks = t["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3);
    let mut by_cpu: Vec<(i64, i64)> = (1..w.threads.len() as i64)
        .map(|u| (w.cpu_time(u), u))
        .collect();
    by_cpu.sort_by_key(|x| std::cmp::Reverse(x.0));
    for (got, want) in tasks.iter().zip(&by_cpu) {
        assert_eq!(got["utid"], want.1);
        assert_eq!(ns(&got["cpu_time"]), want.0);
        let th = &w.threads[want.1 as usize];
        assert_eq!(got["tid"], th.tid);
        assert_eq!(got["thread_name"], th.name);
        let switches = w.slices.iter().filter(|s| s.utid == want.1).count();
        assert_eq!(got["switches"], switches as i64);
    }
    let t = ok(
        &c,
        top_tasks::TOOL.name,
        json!({"order_by": "latency", "limit": 1}),
    )
    .await;
    let worst = w
        .wakeups
        .iter()
        .max_by_key(|x| (x.latency, std::cmp::Reverse(x.utid)))
        .unwrap();
    assert_eq!(t["tasks"][0]["utid"], worst.utid);
    assert_eq!(ns(&t["tasks"][0]["latency_max"]), worst.latency);
    let t = ok(
        &c,
        top_tasks::TOOL.name,
        json!({"order_by": "runnable_time", "limit": 1}),
    )
    .await;
    let wait = |u: i64| -> i64 {
        w.states
            .iter()
            .filter(|s| s.utid == u && (s.state == "R" || s.state == "R+"))
            .map(|s| if s.dur < 0 { w.end_ts - s.ts } else { s.dur })
            .sum()
    };
    let best = (1..w.threads.len() as i64)
        .max_by_key(|&u| (wait(u), -u))
        .unwrap();
    assert_eq!(t["tasks"][0]["utid"], best);
    assert_eq!(ns(&t["tasks"][0]["runnable_time"]), wait(best));

    // scheduling_latency: all, and one process's threads
    let l = ok(&c, scheduling_latency::TOOL.name, json!({"worst": 5})).await;
    let all = w.latencies(&[]);
    assert_eq!(l["count"], all.len());
    assert_eq!(ns(&l["p50"]), nearest_rank(&all, 50.0));
    assert_eq!(ns(&l["p99"]), nearest_rank(&all, 99.0));
    assert_eq!(ns(&l["p99_9"]), nearest_rank(&all, 99.9));
    assert_eq!(ns(&l["max"]), *all.last().unwrap());
    let cases = l["worst"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    assert_eq!(ns(&cases[0]["latency"]), *all.last().unwrap());
    let top = w
        .wakeups
        .iter()
        .find(|x| x.id == cases[0]["id"].as_i64().unwrap())
        .unwrap();
    assert_eq!(ns(&cases[0]["at"]), top.ts - START_TS);
    assert_eq!(cases[0]["waking_cpu"], top.cpu);
    let pid2: Vec<i64> = w
        .threads
        .iter()
        .filter(|t| t.upid == 2)
        .map(|t| t.utid)
        .collect();
    let l = ok(&c, scheduling_latency::TOOL.name, json!({"pid": 1020})).await;
    assert_eq!(l["matched_threads"], pid2.len());
    assert_eq!(l["count"], w.latencies(&pid2).len());
    let l = ok(
        &c,
        scheduling_latency::TOOL.name,
        json!({"name": "WORKER2"}),
    )
    .await;
    assert_eq!(l["matched_threads"], 1);

    // task_timeline: totals equal the raw states; intervals are ordered and disjoint
    let th = &w.threads[3];
    let tl = ok(
        &c,
        task_timeline::TOOL.name,
        json!({"tid": th.tid, "limit": 2000}),
    )
    .await;
    let thread = &tl["threads"][0];
    let totals = thread["totals"].as_array().unwrap();
    let running = totals.iter().find(|t| t["state"] == "Running").unwrap();
    assert_eq!(ns(&running["time"]), w.cpu_time(th.utid));
    let ivs = thread["intervals"].as_array().unwrap();
    for pair in ivs.windows(2) {
        assert!(ns(&pair[0]["start"]) + ns(&pair[0]["dur"]) <= ns(&pair[1]["start"]));
        assert!(pair[0]["state"] != pair[1]["state"] || pair[0]["cpu"] != pair[1]["cpu"]);
    }
    let tl = ok(
        &c,
        task_timeline::TOOL.name,
        json!({"pid": 1010, "limit": 5, "window": "2ms..50ms"}),
    )
    .await;
    assert_eq!(tl["truncated"], true);
    assert_eq!(tl["threads"].as_array().unwrap().len(), 2);

    // process_tree
    let pt = ok(&c, process_tree::TOOL.name, json!({})).await;
    let procs = pt["processes"].as_array().unwrap();
    assert_eq!(procs.len(), w.processes.len() - 1);
    assert_eq!(procs[0]["pid"], 1010);
    assert_eq!(procs[0]["depth"], 0);
    assert_eq!(procs[1]["parent_pid"], 1010);
    assert_eq!(procs[1]["depth"], 1);
    assert_eq!(procs[0]["threads"], 2);
    // proc3 is proc2's child in the workload.
    let pt = ok(&c, process_tree::TOOL.name, json!({"pid": 1020})).await;
    let sub = pt["processes"].as_array().unwrap();
    assert_eq!(sub.len(), 2);
    assert_eq!(
        (&sub[0]["pid"], &sub[0]["depth"]),
        (&json!(1020), &json!(0))
    );
    assert_eq!(
        (&sub[1]["pid"], &sub[1]["depth"]),
        (&json!(1030), &json!(1))
    );
    assert_eq!(sub[1]["parent_pid"], 1020);

    // search_events
    let s = ok(&c, search_events::TOOL.name, json!({"text": "worker"})).await;
    let found = s["tasks"].as_array().unwrap();
    assert_eq!(
        found.len(),
        w.threads
            .iter()
            .filter(|t| t.name.contains("worker"))
            .count()
    );
    for t in found {
        let utid = t["utid"].as_i64().unwrap();
        assert_eq!(
            t["slices"],
            w.slices.iter().filter(|s| s.utid == utid).count()
        );
    }
    let s = ok(&c, search_events::TOOL.name, json!({"text": "exec"})).await;
    let types: Vec<(String, i64)> = s["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(types.contains(&("task_exec".into(), 3)), "{types:?}");
    assert!(
        types.contains(&("sched_process_exec".into(), 3)),
        "{types:?}"
    );
    let s = ok(&c, search_events::TOOL.name, json!({"text": "cpu2"})).await;
    assert_eq!(s["cpus"].as_array().unwrap().len(), 1);
    assert_eq!(
        s["cpus"][0]["slices"],
        w.slices.iter().filter(|x| x.cpu == 2).count()
    );
    let s = ok(
        &c,
        search_events::TOOL.name,
        json!({"text": "--mode=test3"}),
    )
    .await;
    assert_eq!(s["tasks"].as_array().unwrap().len(), 2);

    // query
    let q = ok(
        &c,
        query::QUERY.name,
        json!({"sql": "SELECT count(*) AS n, max(ts) FROM sched_slice"}),
    )
    .await;
    assert_eq!(q["columns"], json!(["n", "max(ts)"]));
    assert_eq!(q["rows"][0][0], w.slices.len());
    let q = ok(
        &c,
        query::QUERY.name,
        json!({"sql": "SELECT 9007199254740993, 1.5, x'0102', NULL, 'a'"}),
    )
    .await;
    assert_eq!(
        q["rows"][0],
        json!(["9007199254740993", 1.5, {"blob_bytes": 2, "hex_prefix": "0102"}, null, "a"])
    );
    let q = ok(
        &c,
        query::QUERY.name,
        json!({"sql": "SELECT utid FROM thread ORDER BY utid", "limit": 2, "offset": 1}),
    )
    .await;
    assert_eq!(q["rows"], json!([[1], [2]]));
    assert_eq!(q["truncated"], true);
    let q = ok(
        &c,
        query::QUERY.name,
        json!({"sql": "SELECT * FROM sched_slice", "limit": 2000}),
    )
    .await;
    assert_eq!(q["limit"], 2000);
    assert_eq!(q["truncated"], true);
    assert!(q["hint"].as_str().unwrap().contains("offset="));
    c.cancel().await.unwrap();
}

/// Windows that cut the aggregate buckets anywhere (or lie inside one) give
/// the same totals as the raw rows.
#[tokio::test]
async fn windows_match_the_workload() {
    let f = fixture();
    let w = &f.w;
    let c = serve(&f.trace, &[]).await;
    let dur = w.end_ts - START_TS;
    let clip = |ts: i64, d: i64, lo: i64, hi: i64| {
        let end = if d < 0 { w.end_ts } else { ts + d };
        (end.min(hi) - ts.max(lo)).max(0)
    };
    for (a, b) in [
        (0, dur),
        (1, dur - 1),
        (123_457, 2_345_679),
        (dur / 3, dur / 3 + 1_000),
        (5_000_000, 5_000_001),
        (0, 999_999),
        (1_048_575, 3_145_729),
        (dur / 2, dur),
    ] {
        let (lo, hi) = (START_TS + a, START_TS + b);
        let win = json!({"start": a, "end": b});
        let u = ok(&c, cpu_utilization::TOOL.name, json!({ "window": win })).await;
        for g in u["groups"].as_array().unwrap() {
            let cpu = g["id"].as_i64().unwrap();
            assert_eq!(ns(&g["busy"]), w.busy_in(cpu, lo, hi), "{win} cpu {cpu}");
        }
        let t = ok(
            &c,
            top_tasks::TOOL.name,
            json!({"window": win, "limit": 100}),
        )
        .await;
        let tasks = t["tasks"].as_array().unwrap();
        let ran = (1..w.threads.len() as i64)
            .filter(|&u| {
                w.slices
                    .iter()
                    .any(|s| s.utid == u && s.ts < hi && s.ts + s.dur > lo)
            })
            .count();
        assert_eq!(tasks.len(), ran, "{win}");
        for task in tasks {
            let u = task["utid"].as_i64().unwrap();
            let slices = w.slices.iter().filter(|s| s.utid == u);
            let cpu: i64 = slices.clone().map(|s| clip(s.ts, s.dur, lo, hi)).sum();
            let switches = slices.filter(|s| s.ts >= lo && s.ts < hi).count();
            let wait: i64 = w
                .states
                .iter()
                .filter(|s| s.utid == u && (s.state == "R" || s.state == "R+"))
                .map(|s| clip(s.ts, s.dur, lo, hi))
                .sum();
            let wakes: Vec<i64> = w
                .wakeups
                .iter()
                .filter(|x| x.utid == u && x.ts >= lo && x.ts < hi)
                .map(|x| x.latency)
                .collect();
            assert_eq!(ns(&task["cpu_time"]), cpu, "{win} utid {u}");
            assert_eq!(task["switches"], switches, "{win} utid {u}");
            assert_eq!(ns(&task["runnable_time"]), wait, "{win} utid {u}");
            assert_eq!(task["wakeups"], wakes.len(), "{win} utid {u}");
            assert_eq!(
                task["latency_max"].get("ns").and_then(Value::as_i64),
                wakes.iter().max().copied(),
                "{win} utid {u}"
            );
        }
        let l = ok(&c, scheduling_latency::TOOL.name, json!({"window": win})).await;
        let mut all: Vec<i64> = w
            .wakeups
            .iter()
            .filter(|x| x.ts >= lo && x.ts < hi)
            .map(|x| x.latency)
            .collect();
        all.sort_unstable();
        assert_eq!(l["count"], all.len(), "{win}");
        assert_eq!(l["percentile_method"], "exact");
        if !all.is_empty() {
            assert_eq!(ns(&l["p90"]), nearest_rank(&all, 90.0), "{win}");
            assert_eq!(ns(&l["max"]), *all.last().unwrap(), "{win}");
        }
    }
    c.cancel().await.unwrap();
}

/// Above 100000 wakeups, percentiles come from the histograms (within the
/// error they state); count, max and the worst cases stay exact.
#[tokio::test]
async fn many_wakeups_use_a_histogram() {
    let dir = tempfile::tempdir().unwrap();
    let w = common::workload(2, 1, 2, 70_000);
    let (trace, _) = loaded_trace(dir.path(), "many.pftrace", &w);
    let c = serve(&trace, &[]).await;
    for (win, lo) in [
        (json!({}), START_TS),
        (json!({"start": "0.5s"}), START_TS + 500_000_000),
    ] {
        let l = ok(
            &c,
            scheduling_latency::TOOL.name,
            json!({"window": win, "worst": 5}),
        )
        .await;
        let mut rows: Vec<&common::Wakeup> = w.wakeups.iter().filter(|x| x.ts >= lo).collect();
        assert!(rows.len() > 100_000, "{}", rows.len());
        let mut all: Vec<i64> = rows.iter().map(|x| x.latency).collect();
        all.sort_unstable();
        assert_eq!(l["percentile_method"], "histogram");
        assert_eq!(l["count"], all.len());
        assert_eq!(ns(&l["max"]), *all.last().unwrap());
        let err = l["percentile_error_pct"].as_f64().unwrap() / 100.0;
        assert!(err > 0.0 && err < 0.02);
        for (k, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9)] {
            let exact = nearest_rank(&all, p);
            let got = ns(&l[k]);
            assert!(
                (got - exact).abs() as f64 <= exact as f64 * err + 1.0,
                "{win} {k}: {got} vs {exact}"
            );
        }
        rows.sort_by_key(|x| (std::cmp::Reverse(x.latency), x.id));
        let worst: Vec<i64> = l["worst"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_i64().unwrap())
            .collect();
        let expect: Vec<i64> = rows.iter().take(5).map(|x| x.id).collect();
        assert_eq!(worst, expect, "{win}");
    }
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn attacks_fail_and_leave_the_database_unchanged() {
    let f = fixture();
    let before = std::fs::read(&f.db).unwrap();
    let c = serve(&f.trace, &["--query-timeout", "1s"]).await;
    let evil = f.dir.path().join("evil.db");
    let evil = evil.to_str().unwrap();
    let attacks = [
        "INSERT INTO thread (utid, tid) VALUES (999, 999)".to_string(),
        "UPDATE thread SET name = 'pwned'".into(),
        "DELETE FROM sched_slice".into(),
        "DROP TABLE thread".into(),
        "CREATE TABLE x (a)".into(),
        "CREATE INDEX x ON thread(name)".into(),
        "CREATE VIEW v AS SELECT 1".into(),
        "ALTER TABLE thread ADD COLUMN x".into(),
        "SELECT 1; DROP TABLE thread".into(),
        "SELECT 1; SELECT 2".into(),
        "/* harmless */ DELETE FROM thread".into(),
        "-- x\nDROP TABLE thread".into(),
        "SELECT 1 /* ; */ ; DELETE FROM thread".into(),
        format!("ATTACH DATABASE '{evil}' AS evil"),
        "DETACH DATABASE main".into(),
        "PRAGMA writable_schema=1".into(),
        "PRAGMA journal_mode=WAL".into(),
        "PRAGMA query_only=0".into(),
        "PRAGMA user_version=7".into(),
        "PRAGMA foreign_keys".into(),
        "SELECT * FROM pragma_journal_mode".into(),
        "SELECT load_extension('x')".into(),
        "SELECT load_extension('/tmp/libevil.so', 'init')".into(),
        "SELECT fts3_tokenizer('simple')".into(),
        "SELECT sqlite_compileoption_used('x')".into(),
        "SELECT zeroblob(2000000000)".into(),
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c".into(),
        "SELECT count(*) FROM sched_slice a, sched_slice b, sched_slice c".into(),
        "WITH RECURSIVE c(x) AS (SELECT 'a' UNION ALL SELECT x || x FROM c) SELECT length(x) FROM c".into(),
        format!("VACUUM INTO '{evil}'"),
        "VACUUM".into(),
        "REPLACE INTO thread (utid, tid) VALUES (1, 1)".into(),
        "INSERT OR REPLACE INTO metadata VALUES ('x', 'single', 1, NULL)".into(),
        "CREATE TEMP TABLE t AS SELECT * FROM thread".into(),
        "CREATE TEMP VIEW v AS SELECT 1".into(),
        "CREATE TEMP TRIGGER t AFTER INSERT ON thread BEGIN DELETE FROM thread; END".into(),
        "CREATE VIRTUAL TABLE f USING fts5(x)".into(),
        "BEGIN IMMEDIATE".into(),
        "COMMIT".into(),
        "SAVEPOINT s".into(),
        "ANALYZE".into(),
        "REINDEX".into(),
        "SELECT * FROM dbstat".into(),
        "SELECT * FROM temp.sqlite_master".into(),
        "WITH d AS (DELETE FROM thread RETURNING *) SELECT * FROM d".into(),
        "DELETE FROM thread RETURNING *".into(),
        "".into(),
        "   ".into(),
        "-- only a comment".into(),
        // One value past the model's value limit (1 MiB): refused as it is built.
        "SELECT instr(printf('%.*c', 16000000, 'a'), printf('%.*c', 8000000, 'a') || 'b')".into(),
        "SELECT replace(printf('%.*c', 16000000, 'a'), printf('%.*c', 8000000, 'a') || 'b', 'c')".into(),
        // Values within it, but one instr call compares for half a minute: only
        // the worker's kill at the time limit stops it.
        "SELECT instr(printf('%.*c', 1000000, 'a'), printf('%.*c', 500000, 'a') || 'b')".into(),
        "SELECT length(replace(printf('%.*c', 1000000, 'a'), printf('%.*c', 500000, 'a') || 'b', 'c'))".into(),
        // Memory: one row of 300 huge values, 2000 values of 1 MiB (2 GiB, past
        // the 1 GiB memory limit), aggregates that grow with every row.
        format!(
            "SELECT {}",
            (0..300)
                .map(|i| format!("printf('%.*c', {}, 'x')", 16_000_000 - i))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        format!(
            "SELECT {}",
            (0..2000)
                .map(|i| format!("printf('%.*c', 1000000, '{}')", i % 10))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        format!(
            "SELECT {} FROM thread_state",
            (0..10)
                .map(|i| format!("json_group_array(printf('%.*c', 1000000 - {i}, 'x'))"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ];
    // The same through includes: an include is parsed off the text and never
    // runs as SQL, so what follows it is still the one statement checked.
    let inc = "INCLUDE PERFETTO MODULE sched.runnable;";
    let mut attacks = attacks.to_vec();
    for sql in [
        "DELETE FROM thread".to_string(),
        "SELECT 1; DROP TABLE thread".into(),
        format!("ATTACH DATABASE '{evil}' AS evil"),
        format!("ATTACH '{evil}' AS evil; SELECT 1"),
        format!("VACUUM INTO '{evil}'"),
        "PRAGMA query_only=0".into(),
        "CREATE TEMP VIEW v AS SELECT 1".into(),
        "DROP VIEW sched_previous_runnable_on_thread".into(),
        "DROP VIEW temp.sched_previous_runnable_on_thread".into(),
        "CREATE TEMP VIEW sched_previous_runnable_on_thread AS SELECT 1".into(),
        "SELECT * FROM temp.sqlite_master".into(),
        "SELECT load_extension('x') FROM sched_previous_runnable_on_thread".into(),
        "".into(),
    ] {
        attacks.push(format!("{inc} {sql}"));
        attacks.push(format!("{inc}\n-- x\n{inc} /* ; */ {sql}"));
    }
    attacks.extend([
        // Not includes: the text must be exactly INCLUDE PERFETTO MODULE name;
        format!("INCLUDE PERFETTO MODULE sched.runnable ATTACH DATABASE '{evil}' AS evil;"),
        format!("INCLUDE PERFETTO MODULE '{evil}'; SELECT 1"),
        format!("INCLUDE PERFETTO MODULE sched.runnable, '{evil}'; SELECT 1"),
        "INCLUDE PERFETTO MODULE nope; SELECT 1".into(),
        "SELECT 1; INCLUDE PERFETTO MODULE sched.runnable;".into(),
        "INCLUDE PERFETTO MODULE sched.runnable;".into(),
        // The modules' functions do not open up other functions or tables.
        "INCLUDE PERFETTO MODULE sched.states; \
         SELECT sched_state_to_human_readable_string(load_extension('x'))"
            .into(),
        "INCLUDE PERFETTO MODULE linux.cpu.utilization.system; \
         SELECT * FROM cpu_utilization_per_period((SELECT sqlite_version()))"
            .into(),
        "INCLUDE PERFETTO MODULE linux.cpu.utilization.system; SELECT * FROM cpu_utilization_per_period".into(),
        "INCLUDE PERFETTO MODULE linux.cpu.utilization.system; \
         SELECT count(*) FROM cpu_utilization_per_period(1) a, cpu_utilization_per_period(1) b, \
         cpu_utilization_per_period(1) c"
            .into(),
        "INCLUDE PERFETTO MODULE linux.cpu.utilization.system; \
         INSERT INTO cpu_utilization_per_period VALUES (1, 1, 1)"
            .into(),
    ]);
    for sql in &attacks {
        let started = Instant::now();
        let msg = err(&c, query::QUERY.name, json!({ "sql": sql })).await;
        assert!(!msg.is_empty(), "{sql:?}: empty error");
        eprintln!("{:.100?} -> {msg:.200}", sql);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{sql:?} took too long"
        );
    }
    // The server still works, and nothing was written anywhere.
    let q = ok(
        &c,
        query::QUERY.name,
        json!({"sql": "SELECT count(*) FROM thread"}),
    )
    .await;
    assert_eq!(q["rows"][0][0], f.w.threads.len());
    c.cancel().await.unwrap();
    assert_eq!(before, std::fs::read(&f.db).unwrap(), "database changed");
    assert!(!Path::new(evil).exists());
    for suffix in ["-wal", "-journal", "-shm"] {
        let mut p = f.db.clone().into_os_string();
        p.push(suffix);
        assert!(!Path::new(&p).exists(), "{suffix} file appeared");
    }
}

/// What the attacks above get: the value limit, the time limit (even inside
/// one function call) and the memory limit, each named in its error.
#[tokio::test]
async fn resource_attacks_get_the_limit_they_hit() {
    let f = fixture();
    // A time limit long enough that the value and memory limits come first
    // on a busy machine; the time limit is checked on a second server.
    let c = serve(&f.trace, &["--query-timeout", "120s"]).await;
    let quick = serve(&f.trace, &["--query-timeout", "2s"]).await;
    let cases = [
        (
            "SELECT instr(printf('%.*c', 16000000, 'a'), printf('%.*c', 8000000, 'a') || 'b')"
                .to_string(),
            "past the limit of 1048576 bytes",
        ),
        (
            "SELECT instr(printf('%.*c', 1000000, 'a'), printf('%.*c', 500000, 'a') || 'b')".into(),
            "time limit of 2s",
        ),
        (
            format!(
                "SELECT {}",
                (0..2000)
                    .map(|i| format!("printf('%.*c', 1000000, '{}')", i % 10))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "memory limit of 1024 MiB",
        ),
    ];
    for (sql, needle) in &cases {
        let server = if needle.contains("time limit") {
            &quick
        } else {
            &c
        };
        let msg = err(server, "query", json!({ "sql": sql })).await;
        assert!(msg.contains(needle), "{}: {msg}", &sql[..60]);
    }
    c.cancel().await.unwrap();
    quick.cancel().await.unwrap();
}

/// The byte budget holds for the first row too: a 2000-column row of 2 KB
/// cells (4 MB) comes back with its cells cut to share the budget.
#[tokio::test]
async fn the_byte_budget_cuts_the_first_row() {
    let f = fixture();
    let c = serve(&f.trace, &[]).await;
    let sql = format!(
        "SELECT {}",
        (0..2000)
            .map(|i| format!("printf('%.*c', 2000, 'x') AS c{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let r = call(&c, "query", json!({ "sql": sql })).await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let body = text(&r);
    assert!(body.len() <= 256 * 1024 + 4096, "{} bytes", body.len());
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["rows"][0].as_array().unwrap().len(), 2000);
    assert_eq!(v["cells_cut"], true);
    c.cancel().await.unwrap();
}

/// Two model queries that run until their (long) time limit hold both query
/// slots; the analysis tools and schema discovery still answer meanwhile.
#[tokio::test]
async fn stuck_queries_do_not_block_the_other_tools() {
    let f = fixture();
    let c = serve(&f.trace, &["--query-timeout", "120s"]).await;
    let endless =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    let stuck: Vec<_> = (0..2)
        .map(|_| {
            let peer = c.peer().clone();
            tokio::spawn(async move {
                let args = json!({ "sql": endless });
                let Value::Object(args) = args else {
                    unreachable!()
                };
                peer.call_tool(CallToolRequestParams::new("query").with_arguments(args))
                    .await
            })
        })
        .collect();
    // Let both reach their worker.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (tool, args) in [
        ("trace_info", json!({})),
        ("list_tables", json!({})),
        ("describe_table", json!({"table": "thread"})),
        ("top_tasks", json!({})),
    ] {
        let answered = tokio::time::timeout(Duration::from_secs(60), ok(&c, tool, args)).await;
        assert!(answered.is_ok(), "{tool} waited for the stuck queries");
    }
    assert!(
        stuck.iter().all(|q| !q.is_finished()),
        "the endless queries ended early: the test proves nothing"
    );
    for q in stuck {
        q.abort();
    }
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn bad_arguments_are_readable_tool_errors() {
    let f = fixture();
    let c = serve(&f.trace, &[]).await;
    let cases = [
        (
            catalogue::DESCRIBE_TABLE.name,
            json!({"table": "no_such_table"}),
            "unknown table",
        ),
        (
            query::QUERY.name,
            json!({"sql": "SELECT nope FROM thread"}),
            catalogue::DESCRIBE_TABLE.name,
        ),
        (
            query::QUERY.name,
            json!({"sql": "SELECT * FROM nope"}),
            catalogue::LIST_TABLES.name,
        ),
        (
            query::QUERY.name,
            json!({"sql": "SELECT 1", "limit": -1}),
            "limit",
        ),
        (
            query::QUERY.name,
            json!({"sql": "SELECT 1", "offset": -5}),
            "offset",
        ),
        (
            query::QUERY.name,
            json!({"sql": "SELECT 1", "limit": "many"}),
            "expected i64",
        ),
        (query::QUERY.name, json!({}), "sql"),
        (
            cpu_utilization::TOOL.name,
            json!({"window": "1 fortnight..2s"}),
            "bad time",
        ),
        (
            cpu_utilization::TOOL.name,
            json!({"window": "200ms..100ms"}),
            "after its end",
        ),
        (
            cpu_utilization::TOOL.name,
            json!({"window": "1000s.."}),
            "trace lasts only",
        ),
        (
            cpu_utilization::TOOL.name,
            json!({"window": {"start": -5}}),
            "negative",
        ),
        (
            cpu_utilization::TOOL.name,
            json!({"group_by": "socket"}),
            "expected one of `cpu`, `llc`, `numa`",
        ),
        (
            top_tasks::TOOL.name,
            json!({"tid": 1}),
            "unknown argument \"tid\" for top_tasks: valid ones: ",
        ),
        (
            cpu_utilization::TOOL.name,
            json!({"window": {"begin": 1}}),
            "unknown field \"begin\" in window of cpu_utilization: valid ones: end, start",
        ),
        (top_tasks::TOOL.name, json!({"limit": -3}), "limit"),
        (top_tasks::TOOL.name, json!({"limit": 0}), "limit"),
        (
            top_tasks::TOOL.name,
            json!({"order_by": "fun"}),
            "unknown variant `fun`",
        ),
        (
            scheduling_latency::TOOL.name,
            json!({"name": "no-such-task"}),
            search_events::TOOL.name,
        ),
        (task_timeline::TOOL.name, json!({}), "tid or pid"),
        (
            task_timeline::TOOL.name,
            json!({"tid": 1, "pid": 2}),
            "tid or pid",
        ),
        (
            task_timeline::TOOL.name,
            json!({"tid": 424242}),
            "no thread",
        ),
        (
            process_tree::TOOL.name,
            json!({"pid": 424242}),
            "no process",
        ),
        (search_events::TOOL.name, json!({"text": "  "}), "empty"),
        (
            trace_info::TOOL.name,
            json!({"trace": "other.pftrace"}),
            "unknown trace",
        ),
        (
            query::QUERY.name,
            json!({"sql": "SELECT 1", "trace": "../small.db"}),
            "unknown trace",
        ),
    ];
    for (tool, args, needle) in cases {
        let msg = err(&c, tool, args.clone()).await;
        // Argument type errors say which tool's schema to read.
        if msg.starts_with("bad arguments") {
            assert!(
                msg.starts_with(&format!("bad arguments for {tool}: ")),
                "{msg}"
            );
        }
        assert!(
            msg.contains(needle),
            "{tool} {args}: {msg:?} lacks {needle:?}"
        );
    }
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn cancellation_interrupts_running_queries() {
    let f = fixture();
    // A long time limit: only cancellation can free the two query slots in time.
    let c = serve(&f.trace, &["--query-timeout", "60s"]).await;
    let endless =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    for _ in 0..2 {
        let call = call(&c, query::QUERY.name, json!({ "sql": endless }));
        // Dropping the call makes the client send notifications/cancelled.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), call)
                .await
                .is_err()
        );
    }
    let started = Instant::now();
    let q = ok(&c, query::QUERY.name, json!({"sql": "SELECT 42"})).await;
    assert_eq!(q["rows"][0][0], 42);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cancelled queries kept running"
    );
    c.cancel().await.unwrap();
}

/// A trace cut before its scheduler events: every analysis says so, in
/// one line, instead of answering with zeros; raw SQL still reads it.
#[tokio::test]
async fn a_trace_without_scheduler_data_says_so() {
    let f = fixture();
    let cut = f.dir.path().join("cut.pftrace");
    std::fs::write(&cut, &std::fs::read(&f.trace).unwrap()[..100]).unwrap();
    let c = serve(&cut, &[]).await;
    for (tool, args) in [
        (trace_info::TOOL.name, json!({})),
        (search_events::TOOL.name, json!({"text": "worker"})),
        (cpu_utilization::TOOL.name, json!({})),
        (top_tasks::TOOL.name, json!({})),
        (scheduling_latency::TOOL.name, json!({})),
        (task_timeline::TOOL.name, json!({"tid": 1})),
        (process_tree::TOOL.name, json!({})),
    ] {
        let msg = err(&c, tool, args).await;
        assert!(
            msg.starts_with("cut.pftrace has no scheduler data") && !msg.contains('\n'),
            "{tool}: {msg}"
        );
    }
    let rows = ok(
        &c,
        query::QUERY.name,
        json!({"sql": "SELECT count(*) AS n FROM sched"}),
    )
    .await;
    assert_eq!(rows["rows"][0][0], 0, "{rows}");
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn several_traces_need_a_name() {
    let f = fixture();
    let (other, _) = loaded_trace(
        f.dir.path(),
        "other.pftrace",
        &common::workload(2, 1, 1, 10),
    );
    let c = start(&[f.trace.to_str().unwrap(), other.to_str().unwrap()]).await;
    let msg = err(&c, trace_info::TOOL.name, json!({})).await;
    assert!(
        msg.contains("small.pftrace") && msg.contains("other.pftrace"),
        "{msg}"
    );
    let msg = err(&c, cpu_utilization::TOOL.name, json!({})).await;
    assert!(msg.contains("several traces"), "{msg}");
    let a = ok(&c, trace_info::TOOL.name, json!({"trace": "other.pftrace"})).await;
    assert_eq!(a["cpus"]["count"], 2);
    let b = ok(&c, trace_info::TOOL.name, json!({"trace": "small.pftrace"})).await;
    assert_eq!(b["cpus"]["count"], 4);
    let list = ok(&c, traces::LIST_TRACES.name, json!({})).await;
    assert_eq!(list["traces"].as_array().unwrap().len(), 2);
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn trace_dir_offers_only_its_files_by_name() {
    let f = fixture();
    let dir = f.dir.path().join("traces");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.pftrace"), b"").unwrap();
    std::fs::write(dir.join("b.perfetto-trace.zst"), b"").unwrap();
    std::fs::write(dir.join("notes.txt"), b"").unwrap();
    let c = start(&["--trace-dir", dir.to_str().unwrap()]).await;
    let list = ok(&c, traces::LIST_TRACES.name, json!({})).await;
    assert_eq!(
        list["traces"],
        json!([
            {"name": "a.pftrace", "loaded": false, "host": null, "start_wall_clock": null},
            {"name": "b.perfetto-trace.zst", "loaded": false, "host": null, "start_wall_clock": null}
        ])
    );
    for bad in [
        "notes.txt",
        "../small.db",
        "/etc/passwd",
        "traces/a.pftrace",
        "..",
    ] {
        let msg = err(&c, trace_info::TOOL.name, json!({ "trace": bad })).await;
        assert!(msg.contains("unknown trace"), "{bad}: {msg}");
    }
    let msg = err(&c, trace_info::TOOL.name, json!({})).await;
    assert!(msg.contains("several traces"), "{msg}");
    c.cancel().await.unwrap();
}

/// Every row of a query through the query tool, paging by offset.
async fn all_rows(c: &Client, sql: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    loop {
        let q = ok(
            c,
            query::QUERY.name,
            json!({"sql": sql, "limit": 2000, "offset": rows.len()}),
        )
        .await;
        rows.extend(q["rows"].as_array().unwrap().iter().cloned());
        if q["truncated"] != true {
            return rows;
        }
    }
}

/// (ts, count) at each change of how many of `intervals` (ts, dur; -1 never
/// ends) are open: the meaning of Perfetto's thread-level parallelism tables.
fn open_counts(intervals: impl Iterator<Item = (i64, i64)>) -> Vec<Value> {
    let mut delta = std::collections::BTreeMap::<i64, i64>::new();
    for (ts, dur) in intervals {
        *delta.entry(ts).or_default() += 1;
        if dur != -1 {
            *delta.entry(ts + dur).or_default() -= 1;
        }
    }
    let mut open = 0;
    delta
        .into_iter()
        .map(|(ts, d)| {
            open += d;
            json!([ts, open])
        })
        .collect()
}

#[tokio::test]
async fn perfetto_modules_through_the_query_tool() {
    let f = fixture();
    let c = serve(&f.trace, &[]).await;
    let runnable = all_rows(
        &c,
        "INCLUDE PERFETTO MODULE sched.thread_level_parallelism;\n\
         SELECT ts, runnable_thread_count FROM sched_runnable_thread_count",
    )
    .await;
    let want = open_counts(
        f.w.states
            .iter()
            .filter(|s| s.state == "R")
            .map(|s| (s.ts, s.dur)),
    );
    assert!(want.len() > 100, "{}", want.len());
    assert_eq!(runnable, want);
    let active = all_rows(
        &c,
        "-- Perfetto's example\nINCLUDE PERFETTO MODULE sched.thread_level_parallelism; \
         SELECT * FROM sched_active_cpu_count;",
    )
    .await;
    let want = open_counts(
        f.w.slices
            .iter()
            .filter(|s| s.utid != common::IDLE)
            .map(|s| (s.ts, s.dur)),
    );
    assert_eq!(active, want);
    // Without the include the module's tables do not exist; an unknown
    // module's error names the supported ones.
    let e = err(
        &c,
        query::QUERY.name,
        json!({"sql": "SELECT * FROM sched_runnable_thread_count"}),
    )
    .await;
    assert!(
        e.contains("no such table")
            && e.contains("INCLUDE PERFETTO MODULE sched.thread_level_parallelism;"),
        "{e}"
    );
    let e = err(
        &c,
        query::QUERY.name,
        json!({"sql": "INCLUDE PERFETTO MODULE android.startup; SELECT 1"}),
    )
    .await;
    assert!(
        e.contains("android.startup") && e.contains("sched.latency"),
        "{e}"
    );
    let q = ok(
        &c,
        query::QUERY.name,
        json!({"sql": "SELECT TRACE_START() = start_ts, TRACE_END() = end_ts, TRACE_DUR() FROM trace_bounds"}),
    )
    .await;
    assert_eq!(q["rows"][0][0], 1);
    assert_eq!(q["rows"][0][1], 1);
    assert!(q["rows"][0][2].as_i64().unwrap() > 0);
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn schema_discovery_and_resource() {
    let f = fixture();
    let c = serve(&f.trace, &[]).await;
    let t = ok(&c, catalogue::LIST_TABLES.name, json!({})).await;
    let tables = t["tables"].as_array().unwrap();
    let slice = tables.iter().find(|x| x["name"] == "sched_slice").unwrap();
    assert_eq!(slice["rows"], f.w.slices.len());
    assert!(!slice["summary"].as_str().unwrap().is_empty());
    assert!(
        slice.get("kind").is_none(),
        "a table's kind is left out: {slice}"
    );
    let sched = tables.iter().find(|x| x["name"] == "sched").unwrap();
    assert_eq!(
        (&sched["kind"], &sched["rows"]),
        (&json!("view"), &json!(f.w.slices.len()))
    );
    let d = ok(
        &c,
        catalogue::DESCRIBE_TABLE.name,
        json!({"table": "wakeup"}),
    )
    .await;
    let cols = d["columns"].as_array().unwrap();
    let latency = cols.iter().find(|c| c["name"] == "latency").unwrap();
    assert_eq!(latency["type"], "INTEGER");
    assert!(latency["doc"].as_str().unwrap().contains("run_ts"));
    assert_eq!(d["sample_rows"].as_array().unwrap().len(), 3);
    let resources = c.list_all_resources().await.unwrap();
    assert_eq!(resources.len(), 1);
    let r = c
        .read_resource(ReadResourceRequestParams::new(resources[0].uri.clone()))
        .await
        .unwrap();
    let body = serde_json::to_string(&r.contents).unwrap();
    assert!(body.contains("sched_slice") && body.contains("latency"));
    // The Perfetto modules are documented there and by describe_table.
    assert!(
        body.contains("module sched.latency") && body.contains("cpu_utilization_per_period"),
        "{body:.300}"
    );
    let d = ok(
        &c,
        catalogue::DESCRIBE_TABLE.name,
        json!({"table": "sched_latency_for_running_interval"}),
    )
    .await;
    assert_eq!(d["kind"], "view");
    assert!(
        d["detail"]
            .as_str()
            .unwrap()
            .contains("INCLUDE PERFETTO MODULE sched.latency;"),
        "{d}"
    );
    let cols: Vec<&str> = d["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        cols,
        [
            "thread_state_id",
            "sched_id",
            "utid",
            "runnable_latency_id",
            "latency_dur"
        ]
    );
    let d = ok(
        &c,
        catalogue::DESCRIBE_TABLE.name,
        json!({"table": "cpu_thread_utilization_per_period"}),
    )
    .await;
    assert_eq!(d["kind"], "table function");
    assert!(
        d["detail"].as_str().unwrap().contains("Argument interval"),
        "{d}"
    );
    c.cancel().await.unwrap();
}

/// Latency of every analysis tool on a synthetic trace of about 10 million
/// events (6.7M sched_slice, 10M thread_state, 3.3M wakeup rows). Slow to
/// build: run with `cargo test --release --no-default-features --test mcp -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "builds a ~2 GB database; run by hand with --release"]
async fn analysis_latency_on_a_large_trace() {
    let tmp = tempfile::tempdir().unwrap();
    // SCHEDLENS_LARGE_DIR keeps the trace and its database there and reuses
    // them on later runs.
    let keep = std::env::var_os("SCHEDLENS_LARGE_DIR")
        .map_or_else(|| tmp.path().to_path_buf(), PathBuf::from);
    let dir = keep.join("large");
    if !dir.exists() {
        let started = Instant::now();
        let w = common::workload(8, 40, 4, 416_000);
        // Built aside and renamed whole, so an interrupted build is not reused.
        let building = keep.join("large.building");
        let _ = std::fs::remove_dir_all(&building);
        std::fs::create_dir_all(&building).unwrap();
        loaded_trace(&building, "large.pftrace", &w);
        std::fs::rename(&building, &dir).unwrap();
        let events = w.slices.len() + w.wakeups.len();
        eprintln!(
            "built {} slices, {} states, {} wakeups ({events} switch+waking events) in {:?}",
            w.slices.len(),
            w.states.len(),
            w.wakeups.len(),
            started.elapsed()
        );
    }
    let c = serve(&dir.join("large.pftrace"), &["--query-timeout", "60s"]).await;
    let calls = [
        (trace_info::TOOL.name, json!({})),
        (cpu_utilization::TOOL.name, json!({})),
        (
            cpu_utilization::TOOL.name,
            json!({"window": "10s..10.1s", "group_by": "llc"}),
        ),
        (top_tasks::TOOL.name, json!({})),
        (top_tasks::TOOL.name, json!({"order_by": "switches"})),
        (top_tasks::TOOL.name, json!({"order_by": "runnable_time"})),
        (top_tasks::TOOL.name, json!({"order_by": "latency"})),
        (
            top_tasks::TOOL.name,
            json!({"window": "10s..10.1s", "order_by": "runnable_time"}),
        ),
        (scheduling_latency::TOOL.name, json!({})),
        (scheduling_latency::TOOL.name, json!({"pid": 1050})),
        (
            scheduling_latency::TOOL.name,
            json!({"window": "10s..10.1s"}),
        ),
        (task_timeline::TOOL.name, json!({"tid": 1050})),
        (
            task_timeline::TOOL.name,
            json!({"tid": 1050, "window": "10s..10.1s"}),
        ),
        (process_tree::TOOL.name, json!({})),
        (search_events::TOOL.name, json!({"text": "worker1"})),
        (catalogue::LIST_TABLES.name, json!({})),
    ];
    // The machines are shared and noisy: the median of five calls.
    for (tool, args) in calls {
        let mut ms = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            ok(&c, tool, args.clone()).await;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        eprintln!(
            "{:>8.1} ms median ({:.1}..{:.1})  {tool} {args}",
            ms[2], ms[0], ms[4]
        );
    }
    c.cancel().await.unwrap();
}

/// An argument a tool does not take is an error naming it and the ones it
/// does take, never an answer that silently ignores it.
#[tokio::test]
async fn unknown_arguments_are_named() {
    let f = fixture();
    let c = serve(&f.trace, &[]).await;
    let cases = [
        (
            top_tasks::TOOL.name,
            json!({"tid": 1}),
            "\"tid\"",
            "order_by",
        ),
        (
            cpu_utilization::TOOL.name,
            json!({"cpu": 0}),
            "\"cpu\"",
            "group_by",
        ),
        (
            traces::LIST_TRACES.name,
            json!({"all": true}),
            "\"all\"",
            "takes none",
        ),
        (
            query::QUERY.name,
            json!({"sql": "SELECT 1", "rows": 5}),
            "\"rows\"",
            "limit",
        ),
        (
            cpu_utilization::TOOL.name,
            json!({"window": {"start": 0, "stop": 5}}),
            "\"stop\" in window",
            "end",
        ),
    ];
    for (tool, args, unknown, valid) in cases {
        let msg = err(&c, tool, args.clone()).await;
        assert!(
            msg.contains(unknown) && msg.contains(valid) && msg.contains(tool),
            "{tool} {args}: {msg:?}"
        );
    }
    c.cancel().await.unwrap();
}

/// Integers as clients send them: JSON strings and integral floats.
#[tokio::test]
async fn integers_may_come_as_strings_or_floats() {
    let f = fixture();
    let c = serve(&f.trace, &[]).await;
    for limit in [json!(3), json!("3"), json!(3.0), json!(" 3 ")] {
        let top = ok(&c, top_tasks::TOOL.name, json!({"limit": limit})).await;
        assert_eq!(top["tasks"].as_array().unwrap().len(), 3, "limit {limit}");
    }
    let pid = f.w.processes[1].pid;
    let tree = ok(&c, process_tree::TOOL.name, json!({"pid": pid.to_string()})).await;
    assert_eq!(tree["processes"][0]["pid"], pid);
    let q = ok(
        &c,
        query::QUERY.name,
        json!({"sql": "SELECT 1", "limit": "1"}),
    )
    .await;
    assert_eq!(q["limit"], 1);
    let w = ok(
        &c,
        cpu_utilization::TOOL.name,
        json!({"window": {"end": 1e6}}),
    )
    .await;
    assert_eq!(ns(&w["window"]["end"]), 1_000_000);
    for bad in [json!(2.5), json!("2.5"), json!("three")] {
        let msg = err(&c, top_tasks::TOOL.name, json!({"limit": bad})).await;
        assert!(
            msg.starts_with("bad arguments for top_tasks"),
            "{bad}: {msg}"
        );
    }
    c.cancel().await.unwrap();
}

/// `query`'s row limit: 40 rows by default, an error above the maximum.
#[tokio::test]
async fn query_limits_say_what_they_are() {
    let f = fixture();
    let c = serve(&f.trace, &[]).await;
    let q = ok(
        &c,
        query::QUERY.name,
        json!({"sql": "SELECT utid FROM thread_state"}),
    )
    .await;
    assert_eq!(
        (q["row_count"].as_i64(), q["limit"].as_i64()),
        (Some(40), Some(40))
    );
    assert_eq!(q["truncated_by"], "limit");
    let msg = err(
        &c,
        query::QUERY.name,
        json!({"sql": "SELECT 1", "limit": 5000}),
    )
    .await;
    assert!(msg.contains("maximum of 2000"), "{msg}");
    c.cancel().await.unwrap();
}

/// The JSON-RPC errors a client needs to stop waiting: -32700 for a line that
/// is not JSON, -32602 (with the request's id) for tools/call without a name;
/// the session goes on after both. Raw lines on the server's stdio.
#[tokio::test]
async fn malformed_requests_get_json_rpc_errors() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let f = fixture();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_schedlens"))
        .arg("analyze")
        .arg(&f.trace)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("an answer")
            .unwrap()
            .expect("a line");
        serde_json::from_str(&line).unwrap()
    };
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}}});
    let send = [
        init.to_string(),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
        "{\"jsonrpc\": \"2.0\", \"id\": 2, \"method\": ".to_string(),
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"arguments": {}}})
            .to_string(),
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list"}).to_string(),
    ];
    stdin
        .write_all((send.join("\n") + "\n").as_bytes())
        .await
        .unwrap();
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(next().await);
    }
    let by_id = |id: Value| {
        answers
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("no answer with id {id}: {answers:?}"))
    };
    assert!(by_id(json!(1))["result"]["serverInfo"].is_object());
    assert_eq!(by_id(Value::Null)["error"]["code"], -32700);
    let no_name = by_id(json!(3));
    assert_eq!(no_name["error"]["code"], -32602, "{no_name}");
    assert!(
        no_name["error"]["message"]
            .as_str()
            .unwrap()
            .contains("name"),
        "{no_name}"
    );
    assert!(by_id(json!(4))["result"]["tools"].is_array());
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
    assert!(
        status
            .expect("exits at the end of its input")
            .unwrap()
            .success()
    );
}

/// cpu_timeline, process_activity and critical_path through the real server:
/// their default answers fit 4 KB, and they agree with the workload's rows.
#[tokio::test]
async fn timeline_activity_and_critical_path_over_mcp() {
    let f = fixture();
    let w = &f.w;
    let c = serve(&f.trace, &[]).await;
    let size = |v: &Value| serde_json::to_string(v).unwrap().len();

    let t = ok(&c, "cpu_timeline", json!({"cpu": 1})).await;
    assert!(
        size(&t) <= 4096,
        "cpu_timeline default answer {} B",
        size(&t)
    );
    assert_eq!(t["runs"].as_array().unwrap().len(), 20, "the default limit");
    assert!(t["listed_until"].is_object());
    let full = ok(
        &c,
        "cpu_timeline",
        json!({"cpu": 1, "window": "40ms..90ms", "limit": 2000}),
    )
    .await;
    let ran: i64 = full["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["tid"] != 0)
        .map(|r| ns(&r["dur"]))
        .sum();
    let busy = w.busy_in(1, START_TS + 40_000_000, START_TS + 90_000_000);
    assert_eq!((ran, ns(&full["busy"])), (busy, busy));
    let e = err(&c, "cpu_timeline", json!({"cpu": 7})).await;
    assert!(e.contains("no CPU 7"), "{e}");

    let a = ok(&c, "process_activity", json!({})).await;
    assert!(
        size(&a) <= 4096,
        "process_activity default answer {} B",
        size(&a)
    );
    assert_eq!(a["execs"], w.execs.len() as i64);

    // A worker's path: every thread of the workload fits in by_thread, so
    // their times add up to the time covered.
    let tid = w.threads[1].tid;
    let p = ok(&c, "critical_path", json!({"tid": tid})).await;
    assert!(
        size(&p) <= 4096,
        "critical_path default answer {} B",
        size(&p)
    );
    assert_eq!(p["task"]["tid"], tid);
    let on_path: i64 = p["by_thread"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["ns"].as_i64().unwrap())
        .sum();
    assert!(on_path > 0);
    assert_eq!(on_path, ns(&p["covered"]));
    assert!(
        p["by_thread"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["tid"] != tid),
        "its wakers are on its path"
    );
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn prompts_plan_the_common_investigations() {
    use rmcp::model::GetPromptRequestParams;
    let f = fixture();
    let c = serve(&f.trace, &[]).await;
    let prompts = c.list_all_prompts().await.unwrap();
    let names: Vec<&str> = prompts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "investigate_task_latency",
            "compare_before_after",
            "what_is_this_machine_doing"
        ]
    );
    let mut args = serde_json::Map::new();
    args.insert("task".into(), json!("worker1"));
    let got = c
        .get_prompt(GetPromptRequestParams::new("investigate_task_latency").with_arguments(args))
        .await
        .unwrap();
    let text: String = got
        .messages
        .iter()
        .filter_map(|m| m.content.as_text().map(|t| t.text.clone()))
        .collect();
    for needle in [
        "\"worker1\"",
        scheduling_latency::TOOL.name,
        task_timeline::TOOL.name,
        "critical_path",
        "cpu_timeline",
        "interference",
    ] {
        assert!(text.contains(needle), "the prompt lacks {needle}: {text}");
    }
    let missing = c
        .get_prompt(GetPromptRequestParams::new("compare_before_after"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("needs the argument \"before\""),
        "{missing}"
    );
    let unknown = c
        .get_prompt(GetPromptRequestParams::new("nope"))
        .await
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("unknown prompt"), "{unknown}");
    c.cancel().await.unwrap();
}

/// fleet_summary loads every trace of the directory and answers each from
/// its own database; a file that fails to load gets its error in its row.
#[tokio::test]
async fn fleet_summary_covers_every_trace_of_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let small = common::workload(4, 3, 2, 300);
    let big = common::workload(2, 2, 3, 700);
    common::write_trace(&small, &dir.path().join("a.pftrace"));
    common::write_trace(&big, &dir.path().join("b.pftrace"));
    std::fs::write(dir.path().join("c.pftrace"), [0xffu8; 64]).unwrap();
    let c = start(&["--trace-dir", dir.path().to_str().unwrap()]).await;
    let fleet = ok(&c, "fleet_summary", json!({})).await;
    let rows = fleet["traces"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["trace"].as_str().unwrap()).collect();
    assert_eq!(names, ["a.pftrace", "b.pftrace", "c.pftrace"]);
    for (row, w) in rows.iter().zip([&small, &big]) {
        assert!(row.get("error").is_none(), "{row}");
        assert_eq!(row["cpus"], json!(w.cpus), "{row}");
        let mut lat: Vec<i64> = w.wakeups.iter().map(|x| x.latency).collect();
        lat.sort_unstable();
        assert_eq!(row["wakeups"], json!(lat.len()), "{row}");
        assert_eq!(ns(&row["latency_max"]), *lat.last().unwrap(), "{row}");
        assert_eq!(ns(&row["latency_p99"]), nearest_rank(&lat, 99.0), "{row}");
        let busy: i64 = w
            .slices
            .iter()
            .filter(|s| s.utid != 0 && s.dur > 0)
            .map(|s| s.dur)
            .sum();
        let span = ns(&row["duration"]) as f64 * w.cpus as f64;
        let pct = row["busy_pct"].as_f64().unwrap();
        assert!(
            (pct - busy as f64 * 100.0 / span).abs() <= 0.06,
            "{row}: busy {busy} of {span}"
        );
        assert!(
            row["start_wall_clock"]
                .as_str()
                .unwrap()
                .starts_with("2023-11-14T"),
            "{row}"
        );
    }
    assert!(
        rows[2]["error"].as_str().unwrap().contains("c.pftrace"),
        "{}",
        rows[2]
    );
    // Every trace is loaded now, and listed with its host and start.
    let list = ok(&c, traces::LIST_TRACES.name, json!({})).await;
    let listed = list["traces"].as_array().unwrap();
    for (t, row) in listed[..2].iter().zip(rows) {
        assert_eq!(t["loaded"], json!(true), "{list}");
        assert_eq!(t["host"], row["host"], "{list}");
        assert_eq!(t["start_wall_clock"], row["start_wall_clock"], "{list}");
        assert!(t["start_wall_clock"].is_string(), "{list}");
    }
    assert_eq!(listed[2]["start_wall_clock"], json!(null), "{list}");
    c.cancel().await.unwrap();
}

/// compare through the server: two traces of the synthetic workload, the
/// second shorter; CPU time per thread name as the rows say.
#[tokio::test]
async fn compare_matches_threads_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let before = common::workload(4, 3, 2, 300);
    let after = common::workload(4, 3, 2, 200);
    let (ta, _) = loaded_trace(dir.path(), "before.pftrace", &before);
    let (tb, _) = loaded_trace(dir.path(), "after.pftrace", &after);
    let c = serve(&ta, &[tb.to_str().unwrap()]).await;
    let cmp = ok(
        &c,
        "compare",
        json!({"before": "before.pftrace", "after": "after.pftrace"}),
    )
    .await;
    let size = serde_json::to_string(&cmp).unwrap().len();
    assert!(size <= 4096, "compare default answer {size} B");
    let tasks = cmp["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 6, "every worker thread by name");
    for t in tasks {
        let name = t["thread"].as_str().unwrap();
        let cpu = |w: &Workload| {
            let th = w.threads.iter().find(|x| x.name == name).unwrap();
            w.cpu_time(th.utid)
        };
        assert_eq!(t["cpu_ns"]["before"], cpu(&before), "{name}");
        assert_eq!(t["cpu_ns"]["after"], cpu(&after), "{name}");
    }
    assert_eq!(cmp["cpus"].as_array().unwrap().len(), 4);
    let e = err(
        &c,
        "compare",
        json!({"before": "before.pftrace", "after": "nope"}),
    )
    .await;
    assert!(e.contains("nope"), "{e}");
    c.cancel().await.unwrap();
}
