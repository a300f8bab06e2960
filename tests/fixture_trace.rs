//! The analyzer on a real recording of this machine: fixtures/pipe-and-true.pftrace
//! was recorded with
//!   schedlens trace -o fixtures/pipe-and-true.pftrace -- \
//!     sh -c 'perf bench sched pipe -l 10000 >/dev/null; for i in 1 2 3 4 5; do /bin/true; done; sleep 0.2'
//! Expected answers come from the known workload and from decoding the file
//! with Perfetto's official definitions (tests/oracle), never from our own
//! importer.

mod oracle;
mod output_schema;

use perfetto_protos::ftrace_event::ftrace_event::Event as Fe;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::TokioChildProcess;
use schedlens::analyses::{
    compare, cpu_timeline, cpu_utilization, critical_path, interference, process_tree,
    scheduling_latency, search_events, stacks, task_timeline, top_tasks, trace_info,
};
use schedlens::mcp::{catalogue, query};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

const BIN: &str = env!("CARGO_BIN_EXE_schedlens");
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/pipe-and-true.pftrace"
);
const PIPE_LOOPS: usize = 10_000;

/// What the official decoding says about the workload.
struct Truth {
    kernel_release: String,
    /// Switch-ins per pid, over every CPU (compact and full switches).
    switched_in: HashMap<i32, usize>,
    /// The sh that ran the workload and the pids it exec'd /bin/true in.
    sh_pid: i32,
    true_pids: Vec<i32>,
    /// The two processes of `perf bench sched pipe` (renamed "sched-pipe").
    pipe_pids: Vec<i32>,
    switches: usize,
}

fn truth() -> Truth {
    let d = oracle::decode(Path::new(FIXTURE));
    assert!(d.complete, "the fixture ends on a packet boundary");
    let mut t = Truth {
        kernel_release: String::new(),
        switched_in: HashMap::new(),
        sh_pid: 0,
        true_pids: vec![],
        pipe_pids: vec![],
        switches: 0,
    };
    let mut parent_of = HashMap::new();
    for p in &d.packets {
        if p.has_system_info() {
            t.kernel_release = p.system_info().utsname.release().to_string();
        }
        if !p.has_ftrace_events() {
            continue;
        }
        let b = p.ftrace_events();
        for &pid in &b.compact_sched.switch_next_pid {
            *t.switched_in.entry(pid).or_default() += 1;
            t.switches += 1;
        }
        for e in &b.event {
            match &e.event {
                Some(Fe::SchedSwitch(s)) => {
                    *t.switched_in.entry(s.next_pid()).or_default() += 1;
                    t.switches += 1;
                }
                Some(Fe::SchedProcessFork(f)) => {
                    parent_of.insert(f.child_pid(), f.parent_pid());
                }
                Some(Fe::SchedProcessExec(x)) if x.filename() == "/usr/bin/sh" => {
                    t.sh_pid = x.pid();
                }
                Some(Fe::SchedProcessExec(x)) if x.filename() == "/bin/true" => {
                    t.true_pids.push(x.pid())
                }
                Some(Fe::TaskRename(r)) if r.newcomm() == "sched-pipe" => t.pipe_pids.push(r.pid()),
                _ => {}
            }
        }
    }
    // perf forks its partner after renaming itself: the child is a sched-pipe too.
    let renamed = t.pipe_pids.clone();
    for (child, parent) in &parent_of {
        if renamed.contains(parent) && !t.pipe_pids.contains(child) {
            t.pipe_pids.push(*child);
        }
    }
    t.pipe_pids.sort();
    assert_eq!(t.true_pids.len(), 5, "five /bin/true execs");
    assert!(
        t.true_pids
            .iter()
            .all(|p| parent_of.get(p) == Some(&t.sh_pid))
    );
    assert_eq!(
        t.pipe_pids.len(),
        2,
        "the sched-pipe pair: {:?}",
        t.pipe_pids
    );
    for pid in &t.pipe_pids {
        assert!(
            t.switched_in[pid] >= PIPE_LOOPS,
            "pid {pid} ran {} times",
            t.switched_in[pid]
        );
    }
    t
}

/// A copy of the fixture in a temp dir, so the cache lands there, not in the repo.
fn copy_fixture() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipe-and-true.pftrace");
    std::fs::copy(FIXTURE, &path).unwrap();
    (dir, path)
}

#[test]
fn query_counts_match_the_official_decoding() {
    let t = truth();
    let (_dir, trace) = copy_fixture();
    let out = std::process::Command::new(BIN)
        .args(["query", "--format", "csv"])
        .arg(&trace)
        .arg("SELECT tid, count(*) FROM sched JOIN thread USING (utid) GROUP BY tid ORDER BY tid")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    let mut slices = HashMap::new();
    for line in csv.lines().skip(1) {
        let (tid, n) = line.split_once(',').unwrap();
        slices.insert(tid.parse::<i32>().unwrap(), n.parse::<usize>().unwrap());
    }
    // Every switch-in opens a slice: the first switch of each CPU is written in
    // full, so none is only a seed.
    for pid in t.pipe_pids.iter().chain(&t.true_pids) {
        assert_eq!(
            slices.get(pid),
            t.switched_in.get(pid),
            "slices of pid {pid}"
        );
    }
}

type Client = RunningService<RoleClient, ()>;

async fn serve(trace: &Path) -> Client {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("analyze").arg(trace);
    let (transport, _) = TokioChildProcess::builder(cmd)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ().serve(transport).await.unwrap()
}

async fn ok(c: &Client, tool: &str, args: Value) -> Value {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    let r: CallToolResult = c
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{tool}: protocol error {e}"));
    assert_ne!(r.is_error, Some(true), "{tool} failed: {:?}", r.content);
    let answer = r
        .structured_content
        .unwrap_or_else(|| panic!("{tool}: no structured content"));
    output_schema::validate(c, tool, &answer).await;
    answer
}

fn int(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_str()?.parse().ok())
        .unwrap_or_else(|| panic!("not an integer: {v}"))
}

#[tokio::test]
async fn mcp_tools_answer_what_the_workload_did() {
    let t = truth();
    let (_dir, trace) = copy_fixture();
    let c = serve(&trace).await;

    let info = ok(&c, trace_info::TOOL.name, json!({})).await;
    assert_eq!(info["system"]["kernel_release"], t.kernel_release.as_str());
    assert_eq!(
        int(&info["system"]["num_cpus"]),
        2,
        "recorded on this 2-CPU machine"
    );
    let switches = info["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "sched_switch")
        .map(|e| int(&e["count"]))
        .expect("sched_switch counted");
    assert_eq!(switches as usize, t.switches);
    assert_eq!(int(&info["drops"]["lost_events"]), 0);

    // The ping-pong pair switches far more than anything else on the machine.
    let top = ok(
        &c,
        top_tasks::TOOL.name,
        json!({"order_by": "switches", "limit": 2}),
    )
    .await;
    let mut top_tids: Vec<i32> = top["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| int(&x["tid"]) as i32)
        .collect();
    top_tids.sort();
    assert_eq!(top_tids, t.pipe_pids);
    for x in top["tasks"].as_array().unwrap() {
        let tid = int(&x["tid"]) as i32;
        assert_eq!(
            int(&x["switches"]) as usize,
            t.switched_in[&tid],
            "switches of {tid}"
        );
        assert_eq!(x["thread_name"], "sched-pipe");
    }

    let found = ok(&c, search_events::TOOL.name, json!({"text": "true"})).await;
    let mut true_tids: Vec<i32> = found["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["thread_name"] == "true")
        .map(|x| int(&x["tid"]) as i32)
        .collect();
    true_tids.sort();
    let mut expected = t.true_pids.clone();
    expected.sort();
    assert_eq!(true_tids, expected);

    let found = ok(&c, search_events::TOOL.name, json!({"text": "sched-pipe"})).await;
    for x in found["tasks"].as_array().unwrap() {
        let tid = int(&x["tid"]) as i32;
        let expected = t.switched_in.get(&tid).copied().unwrap_or(0);
        assert_eq!(int(&x["slices"]) as usize, expected, "slices of {tid}");
    }

    let tree = ok(&c, process_tree::TOOL.name, json!({"pid": t.sh_pid})).await;
    let procs = tree["processes"].as_array().unwrap();
    assert_eq!(
        int(&procs[0]["pid"]) as i32,
        t.sh_pid,
        "the tree starts at sh"
    );
    for pid in &t.true_pids {
        let node = procs
            .iter()
            .find(|p| int(&p["pid"]) as i32 == *pid)
            .expect("true child");
        assert_eq!(int(&node["parent_pid"]) as i32, t.sh_pid);
        assert_eq!(int(&node["depth"]), 1);
    }

    let lat = ok(
        &c,
        scheduling_latency::TOOL.name,
        json!({"tid": t.pipe_pids[0]}),
    )
    .await;
    let n = int(&lat["count"]);
    // Each round trip wakes each side at most once.
    assert!(n > 0 && n as usize <= PIPE_LOOPS + 1, "{n} wakeups");

    let util = ok(&c, cpu_utilization::TOOL.name, json!({"group_by": "llc"})).await;
    let cpus: usize = util["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["cpus"].as_array().unwrap().len())
        .sum();
    assert_eq!(cpus, 2, "both CPUs are in an LLC group");

    // A /bin/true process ran and then died.
    let tl = ok(&c, task_timeline::TOOL.name, json!({"tid": t.true_pids[0]})).await;
    let intervals = tl["threads"][0]["intervals"].as_array().unwrap();
    assert!(
        intervals.iter().any(|i| i["state"] == "Running"),
        "{intervals:?}"
    );
    let last = intervals.last().unwrap()["state"].as_str().unwrap();
    assert!(
        ["Z", "X"].contains(&last),
        "a dead task ends dead, not {last}"
    );

    c.cancel().await.unwrap();
}

/// Most bytes tools/list may take: about 3,000 tokens of a model's context.
const TOOLS_LIST_BUDGET: usize = 12 * 1024;
/// Most bytes of a tool's answer with its default arguments.
const DEFAULT_ANSWER_BUDGET: usize = 4 * 1024;

/// What a model pays for the tools: tools/list, and each tool's answer with
/// only the arguments it cannot do without, on this real recording (the
/// busiest thread's timeline, the widest table's rows).
#[tokio::test]
async fn tools_list_and_default_answers_fit_their_budgets() {
    let t = truth();
    let (_dir, trace) = copy_fixture();
    let c = serve(&trace).await;
    let tools = c.list_all_tools().await.unwrap();
    let list = serde_json::to_string(&json!({ "tools": tools })).unwrap();
    eprintln!("tools/list: {} bytes, {} tools", list.len(), tools.len());
    assert!(
        list.len() <= TOOLS_LIST_BUDGET,
        "tools/list takes {} bytes, more than {TOOLS_LIST_BUDGET}",
        list.len()
    );
    for name in schedlens::mcp::tool_names() {
        if name == stacks::TOOL.name {
            // Recorded without --stacks; tests/record_stacks.rs measures this
            // tool's default answers on a recording with stacks.
            let r = c.call_tool(CallToolRequestParams::new(name)).await.unwrap();
            assert_eq!(r.is_error, Some(true), "{name} without stacks: {r:?}");
            continue;
        }
        // A tool added later that needs an argument gets its line here.
        let args = match name {
            n if n == catalogue::DESCRIBE_TABLE.name => json!({"table": "thread_state"}),
            n if n == task_timeline::TOOL.name => json!({"pid": t.pipe_pids[0]}),
            n if n == search_events::TOOL.name => json!({"text": "s"}),
            n if n == cpu_timeline::TOOL.name => json!({"cpu": 0}),
            n if n == critical_path::TOOL.name => json!({"tid": t.pipe_pids[0]}),
            n if n == interference::TOOL.name => json!({"pid": t.pipe_pids[0]}),
            n if n == compare::TOOL.name => {
                json!({"before": "pipe-and-true.pftrace", "after": "pipe-and-true.pftrace"})
            }
            n if n == query::QUERY.name => json!({"sql": "SELECT * FROM thread_state"}),
            _ => json!({}),
        };
        let answer = ok(&c, name, args).await;
        let bytes = answer.to_string().len();
        eprintln!("{name}: {bytes} bytes by default");
        assert!(
            bytes <= DEFAULT_ANSWER_BUDGET,
            "{name}'s default answer takes {bytes} bytes, more than {DEFAULT_ANSWER_BUDGET}"
        );
    }
    c.cancel().await.unwrap();
}
