//! `schedlens recorder` end to end, as root (CI runs as root; a non-root run
//! fails under CI=true and skips loudly elsewhere): the service started for
//! real, users and a group created for the test, `schedlens analyze
//! --recorder` driven as an unprivileged group member with rmcp's client,
//! and the protocol spoken directly for the limits, hostile requests and a
//! killed service.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientRequest,
    ProgressNotificationParam, ServerResult,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RoleClient, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, ServiceExt};
use serde_json::{Value, json};

use schedlens::recorder::cli::{LatencyTrigger, parse_trigger};
use schedlens::service::client::Connection;
use schedlens::service::protocol::{
    self, Ending, ErrorCode, RecordRequest, Request, Response, Selection,
};

mod root;

/// Generous bounds for waits that end on their own (never asserted as timings).
const PATIENCE: Duration = Duration::from_secs(60);

fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let msg = "the recorder service tests need root (groups, users, BPF)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg} (CI=true: not skipping)");
    }
    eprintln!("\n!!! SKIPPED {test}: {msg} !!!\n");
    false
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a system command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A group, a member of it and a user outside it, created for one test and
/// removed after; the binary and everything the users need in root-owned
/// 0755 directories (the repository's target/ may not be reachable).
struct Site {
    dir: tempfile::TempDir,
    bin: PathBuf,
    group: String,
    member: String,
    outsider: String,
    service: Option<Child>,
    socket: PathBuf,
    spool: PathBuf,
}

static SITES: AtomicU32 = AtomicU32::new(0);

impl Site {
    fn new() -> Site {
        let n = SITES.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let (group, member, outsider) = (
            format!("slg{tag}"),
            format!("slm{tag}"),
            format!("slo{tag}"),
        );
        run(Command::new("groupadd").arg(&group));
        run(Command::new("useradd").args(["-M", "-N", "-G", &group, &member]));
        run(Command::new("useradd").args(["-M", "-N", &outsider]));
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let bin = dir.path().join("schedlens");
        std::fs::copy(env!("CARGO_BIN_EXE_schedlens"), &bin).unwrap();
        chmod(&bin, 0o755);
        for user in [&member, &outsider] {
            let home = dir.path().join(user);
            std::fs::create_dir(&home).unwrap();
            run(Command::new("chown").arg(format!("{user}:")).arg(&home));
        }
        std::fs::write(dir.path().join("recorder.toml"), "").unwrap();
        Site {
            socket: dir.path().join("run").join("recorder.sock"),
            spool: dir.path().join("spool"),
            dir,
            bin,
            group,
            member,
            outsider,
            service: None,
        }
    }

    /// Starts the service with `extra` flags and waits until it answers.
    fn start(&mut self, extra: &[&str]) {
        let mut extra = extra.to_vec();
        if !extra.contains(&"--min-interval") {
            extra.extend(["--min-interval", "0s"]);
        }
        let log = std::fs::File::create(self.dir.path().join("service.log")).unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("recorder")
            .arg("--config")
            .arg(self.dir.path().join("recorder.toml"))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--spool")
            .arg(&self.spool)
            .args(["--group", &self.group])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log);
        // Another test's fork may still hold the copy of the binary open for
        // writing for an instant (ETXTBSY): try again.
        let child = loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                spawned => break spawned.unwrap(),
            }
        };
        self.service = Some(child);
        let deadline = Instant::now() + PATIENCE;
        while UnixStream::connect(&self.socket).is_err() {
            if let Some(status) = self.service.as_mut().unwrap().try_wait().unwrap() {
                panic!("the service exited ({status}): {}", self.log());
            }
            assert!(Instant::now() < deadline, "the service never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("service.log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.service.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `schedlens analyze --recorder` as `user` (with their groups), served to rmcp's client.
    async fn analyze_as(&self, user: &str, handler: Progress) -> Client {
        let home = self.dir.path().join(user);
        let mut cmd = tokio::process::Command::new("setpriv");
        cmd.arg(format!("--reuid={user}"))
            .arg(format!("--regid={}", primary_gid(user)))
            .args(["--init-groups", "--"])
            .arg(&self.bin)
            .arg("analyze")
            .arg(format!("--recorder={}", self.socket.display()))
            .env("HOME", &home)
            .env("XDG_CACHE_HOME", home.join("cache"));
        let (transport, _) = TokioChildProcess::builder(cmd)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        handler.serve(transport).await.unwrap()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.stop();
        for user in [&self.member, &self.outsider] {
            let _ = Command::new("userdel").arg(user).output();
        }
        let _ = Command::new("groupdel").arg(&self.group).output();
    }
}

fn primary_gid(user: &str) -> u32 {
    nix::unistd::User::from_name(user)
        .unwrap()
        .unwrap()
        .gid
        .as_raw()
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A client that passes the server's progress messages to the test.
#[derive(Clone)]
struct Progress(tokio::sync::mpsc::UnboundedSender<String>);

impl ClientHandler for Progress {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.0.send(params.message.unwrap_or_default());
    }
}

type Client = RunningService<RoleClient, Progress>;

fn progress() -> (Progress, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (Progress(tx), rx)
}

async fn call(c: &Client, tool: &str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    c.call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{tool}: protocol error {e}"))
}

async fn ok(c: &Client, tool: &str, args: Value) -> Value {
    let r = call(c, tool, args).await;
    assert_ne!(r.is_error, Some(true), "{tool} failed: {:?}", r.content);
    r.structured_content.expect("structured content")
}

async fn err(c: &Client, tool: &str, args: Value) -> String {
    let r = call(c, tool, args).await;
    assert_eq!(r.is_error, Some(true), "{tool} should fail: {r:?}");
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

/// One number from a query.
async fn count(c: &Client, trace: &str, sql: &str) -> i64 {
    let out = ok(c, "query", json!({ "trace": trace, "sql": sql })).await;
    out["rows"][0][0]
        .as_i64()
        .unwrap_or_else(|| panic!("{sql}: {out}"))
}

/// How many `true` processes the shell `sh` started, in `trace`.
async fn true_children(c: &Client, trace: &str, sh: u32) -> i64 {
    let sql = format!(
        "SELECT COUNT(*) FROM process WHERE parent_upid = \
         (SELECT upid FROM process WHERE pid = {sh}) AND name = 'true'"
    );
    count(c, trace, &sql).await
}

/// Waits for the progress message that says the recorder has attached.
async fn until_recording(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) {
    tokio::time::timeout(PATIENCE, async {
        while let Some(m) = rx.recv().await {
            if m.starts_with("recording") {
                return;
            }
        }
        panic!("progress stopped before the recording began");
    })
    .await
    .expect("the recording never began");
}

/// A shell that runs `true` `n` times, started now; returns its pid once it has exited.
fn workload(n: usize) -> u32 {
    let mut sh = Command::new("sh")
        .arg("-c")
        .arg(format!("for i in $(seq {n}); do /bin/true; done"))
        .spawn()
        .unwrap();
    let pid = sh.id();
    assert!(sh.wait().unwrap().success());
    pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_records_a_workload_and_queries_it() {
    if !require_root("a_group_member_records_a_workload_and_queries_it") {
        return;
    }
    let mut site = Site::new();
    site.start(&[]);
    let (handler, mut rx) = progress();
    let c = site.analyze_as(&site.member.clone(), handler).await;

    let tools: Vec<String> = c
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    for name in ["record", "recording_status", "list_recordable_events"] {
        assert!(
            tools.contains(&name.to_string()),
            "{name} missing: {tools:?}"
        );
    }
    let events = ok(&c, "list_recordable_events", json!({})).await;
    assert_eq!(events["groups"][0]["name"], "sched", "{events}");
    assert!(
        events["groups"][0].get("events").is_none(),
        "short by default: {events}"
    );
    let found = ok(&c, "list_recordable_events", json!({ "text": "wakeup" })).await;
    assert_eq!(
        found["groups"][0]["events"],
        json!(["sched_wakeup_new"]),
        "{found}"
    );

    let request = ClientRequest::CallToolRequest(CallToolRequest::new(
        CallToolRequestParams::new("record")
            .with_arguments(json!({ "duration": "2s" }).as_object().unwrap().clone()),
    ));
    let handle = c
        .peer()
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await
        .unwrap();
    until_recording(&mut rx).await;
    let status = ok(&c, "recording_status", json!({})).await;
    assert_eq!(
        status["recordings"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    let sh = workload(20);
    let ServerResult::CallToolResult(result) = handle.await_response().await.unwrap() else {
        panic!("record answered something else than a tool result")
    };
    assert_ne!(
        result.is_error,
        Some(true),
        "record failed: {:?}",
        result.content
    );
    let recorded = result.structured_content.unwrap();
    assert_eq!(recorded["ended"], "duration", "{recorded}");
    let trace = recorded["trace"].as_str().unwrap().to_string();

    // The workload, as the trace saw it: its shell and the 20 `true`s it forked.
    let sh_upid = format!("(SELECT upid FROM process WHERE pid = {sh})");
    assert_eq!(
        count(
            &c,
            &trace,
            &format!("SELECT COUNT(*) FROM process WHERE upid = {sh_upid}")
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &c,
            &trace,
            &format!(
                "SELECT COUNT(*) FROM process WHERE parent_upid = {sh_upid} AND name = 'true'"
            )
        )
        .await,
        20
    );
    assert!(
        count(
            &c,
            &trace,
            &format!(
                "SELECT COUNT(*) FROM sched JOIN thread USING (utid) WHERE thread.upid = {sh_upid}"
            )
        )
        .await
            > 0,
        "the shell ran in the trace"
    );
    // Every other tool sees it by name too.
    let info = ok(&c, "trace_info", json!({ "trace": trace })).await;
    assert!(info.to_string().contains("sched_switch"), "{info}");

    // Root's, the group's to read, nobody else's.
    let meta = std::fs::metadata(site.spool.join(&trace)).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o640);
    assert_eq!(meta.uid(), 0);
    let gid = nix::unistd::Group::from_name(&site.group)
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    assert_eq!(meta.gid(), gid);
    c.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_outside_the_allow_list_are_refused() {
    if !require_root("callers_outside_the_allow_list_are_refused") {
        return;
    }
    let mut site = Site::new();
    site.start(&[]);
    // Not in the socket's group: the kernel refuses the connection.
    let (handler, _rx) = progress();
    let c = site.analyze_as(&site.outsider.clone(), handler).await;
    let e = err(&c, "record", json!({ "duration": "1s" })).await;
    assert!(
        e.contains("permission denied") && e.contains("usermod"),
        "{e}"
    );
    c.cancel().await.unwrap();
    site.stop();

    // In the socket's group but not on the allow list: the service refuses
    // after reading the caller's credentials.
    site.start(&["--allow-group", "root"]);
    let (handler, _rx) = progress();
    let c = site.analyze_as(&site.member.clone(), handler).await;
    let e = err(&c, "record", json!({ "duration": "1s" })).await;
    assert!(e.contains("may not use this recorder"), "{e}");
    let e = err(&c, "recording_status", json!({})).await;
    assert!(e.contains("may not use this recorder"), "{e}");
    c.cancel().await.unwrap();
    assert!(
        site.log().contains("not on the allow list"),
        "{}",
        site.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_record_keeps_a_valid_partial_trace() {
    if !require_root("a_cancelled_record_keeps_a_valid_partial_trace") {
        return;
    }
    let mut site = Site::new();
    site.start(&[]);
    let (handler, mut rx) = progress();
    let c = site.analyze_as(&site.member.clone(), handler).await;
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(
        CallToolRequestParams::new("record")
            .with_arguments(json!({ "duration": "60s" }).as_object().unwrap().clone()),
    ));
    let handle = c
        .peer()
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await
        .unwrap();
    until_recording(&mut rx).await;
    let sh = workload(5);
    handle.cancel(Some("enough".into())).await.unwrap();
    // The cancelled call has no answer; its trace is served all the same.
    let deadline = Instant::now() + PATIENCE;
    let trace = loop {
        let list = ok(&c, "list_traces", json!({})).await;
        if let Some(name) = list["traces"][0]["name"].as_str() {
            break name.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the cancelled trace never appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(true_children(&c, &trace, sh).await, 5);
    let status = ok(&c, "recording_status", json!({})).await;
    assert_eq!(
        status["recordings"],
        json!([]),
        "stopped, not left running: {status}"
    );
    c.cancel().await.unwrap();
    assert!(site.log().contains("Cancelled"), "{}", site.log());
}

// ------------------------------------------------------------ the protocol

/// Sends `request` and returns the frames up to the last.
fn converse(socket: &Path, request: &Request) -> Vec<(Response, bool)> {
    let mut conn = Connection::connect(socket).unwrap();
    conn.send(request).unwrap();
    let mut frames = Vec::new();
    loop {
        let (r, fd) = conn.recv().unwrap();
        let last = !matches!(r, Response::Started { .. } | Response::Progress { .. });
        frames.push((r, fd.is_some()));
        if last {
            return frames;
        }
    }
}

fn refusal(frames: &[(Response, bool)]) -> (ErrorCode, Option<String>, String) {
    match frames.last() {
        Some((Response::Error(e), _)) => (e.code, e.limit.clone(), e.message.clone()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn record(duration_ms: u64) -> Request {
    Request::Record(RecordRequest {
        duration_ms,
        ..Default::default()
    })
}

#[test]
fn each_limit_is_enforced_and_named() {
    if !require_root("each_limit_is_enforced_and_named") {
        return;
    }
    let mut site = Site::new();
    site.start(&[
        "--max-duration",
        "40s",
        "--max-bytes",
        "256K",
        "--max-concurrent",
        "1",
        "--spool-max-bytes",
        "1M",
    ]);
    let socket = site.socket.clone();

    let (code, limit, message) = refusal(&converse(&socket, &record(41_000)));
    assert_eq!(
        (code, limit.as_deref()),
        (ErrorCode::Limit, Some("max_duration")),
        "{message}"
    );
    assert!(message.contains("40s"), "{message}");
    let big = Request::Record(RecordRequest {
        duration_ms: 1000,
        max_bytes: Some(1 << 20),
        ..Default::default()
    });
    let (_, limit, _) = refusal(&converse(&socket, &big));
    assert_eq!(limit.as_deref(), Some("max_bytes"));
    let stacks = Request::Record(RecordRequest {
        duration_ms: 1000,
        what: Selection {
            stacks: vec!["kernel".into()],
            ..Default::default()
        },
        ..Default::default()
    });
    let (code, _, message) = refusal(&converse(&socket, &stacks));
    assert_eq!(code, ErrorCode::BadRequest, "{message}");
    assert!(message.contains("unknown stack kind"), "{message}");

    // One at a time: a second recording while one runs is refused.
    // Long enough that max_bytes, not the duration, ends it however slow the machine is.
    let mut first = Connection::connect(&socket).unwrap();
    first.send(&record(40_000)).unwrap();
    assert!(matches!(first.recv().unwrap().0, Response::Started { .. }));
    let (_, limit, _) = refusal(&converse(&socket, &record(1000)));
    assert_eq!(limit.as_deref(), Some("max_concurrent"));
    // max_bytes stops the recording, keeping the trace (a busy workload fills 256K).
    let busy = spin_workload();
    let finished = loop {
        match first.recv().unwrap() {
            (Response::Finished(f), fd) => {
                assert!(fd.is_some(), "the trace comes with the answer");
                break f;
            }
            (Response::Progress { .. }, _) => {}
            other => panic!("{other:?}"),
        }
    };
    drop(busy);
    assert_eq!(finished.ended, Ending::MaxBytes, "{finished:?}");
    assert!(finished.bytes >= 256 << 10, "{finished:?}");
    check_loads(&site, &site.spool.join(&finished.name));

    // The spool keeps at most 1M: old traces go, oldest first.
    for (i, age) in [(1, 3000), (2, 2000), (3, 1000)] {
        let old = site.spool.join(format!("old{i}.pftrace"));
        std::fs::write(&old, vec![0u8; 300 << 10]).unwrap();
        let t = std::time::SystemTime::now() - Duration::from_secs(age);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
    let frames = converse(&socket, &record(200));
    assert!(
        matches!(frames.last(), Some((Response::Finished(_), true))),
        "{frames:?}"
    );
    assert!(
        !site.spool.join("old1.pftrace").exists(),
        "the oldest went first"
    );
    // Traces only: root's `schedlens query` above cached its database beside one.
    let total: u64 = std::fs::read_dir(&site.spool)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pftrace"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(total <= 1 << 20, "spool holds {total} bytes");
    site.stop();

    // Room in the spool is kept for the recordings running: a second one
    // that could not fit beside the first is refused.
    site.start(&[
        "--max-concurrent",
        "2",
        "--max-bytes",
        "512K",
        "--spool-max-bytes",
        "768K",
    ]);
    let mut first = Connection::connect(&site.socket).unwrap();
    first.send(&record(3000)).unwrap();
    assert!(matches!(first.recv().unwrap().0, Response::Started { .. }));
    let (_, limit, message) = refusal(&converse(&site.socket, &record(1000)));
    assert_eq!(limit.as_deref(), Some("spool_max_bytes"), "{message}");
    drop(first);
    site.stop();

    // Between one caller's recordings.
    site.start(&["--min-interval", "1h"]);
    let frames = converse(&site.socket, &record(200));
    assert!(
        matches!(frames.last(), Some((Response::Finished(_), true))),
        "{frames:?}"
    );
    let (_, limit, message) = refusal(&converse(&site.socket, &record(200)));
    assert_eq!(limit.as_deref(), Some("min_interval"), "{message}");
    // Not silently shortened: the spool's cap below max_bytes is refused at start.
    site.stop();
    let out = Command::new(&site.bin)
        .args(["recorder", "--config"])
        .arg(site.dir.path().join("recorder.toml"))
        .args(["--socket"])
        .arg(&site.socket)
        .args([
            "--group",
            &site.group,
            "--max-bytes",
            "2M",
            "--spool-max-bytes",
            "1M",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("spool_max_bytes"));
}

/// The trace's answer to one `schedlens query` counting something.
fn query_count(site: &Site, trace: &Path, sql: &str) -> i64 {
    let out = Command::new(&site.bin)
        .args(["query", "--format=csv"])
        .arg(trace)
        .arg(sql)
        .env("XDG_CACHE_HOME", site.dir.path().join("root-cache"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("{sql}: {stdout}"))
}

#[test]
fn a_request_s_filters_reach_the_recording() {
    if !require_root("a_request_s_filters_reach_the_recording") {
        return;
    }
    let mut site = Site::new();
    site.start(&[]);
    // Waits for its recording to begin (a file it is told about), then forks.
    let go = site.dir.path().join("go");
    let mut sh = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while [ ! -e {} ]; do sleep 0.05; done; for i in $(seq 10); do /bin/true; done",
            go.display()
        ))
        .spawn()
        .unwrap();
    let busy = spin_workload();
    let mut conn = Connection::connect(&site.socket).unwrap();
    conn.send(&Request::Record(RecordRequest {
        duration_ms: 2000,
        what: Selection {
            tgids: vec![sh.id() as i32],
            events: vec!["sched".into(), "irq".into()],
            ..Default::default()
        },
        ..Default::default()
    }))
    .unwrap();
    let finished = loop {
        match conn.recv().unwrap() {
            (Response::Progress { bytes, .. }, _) if bytes > 0 => {
                let _ = std::fs::write(&go, b"");
            }
            (Response::Finished(f), _) => break f,
            (Response::Started { .. } | Response::Progress { .. }, _) => {}
            other => panic!("{other:?}"),
        }
    };
    drop(busy);
    assert!(sh.wait().unwrap().success());
    let trace = site.spool.join(&finished.name);
    let sh_upid = format!("(SELECT upid FROM process WHERE pid = {})", sh.id());
    assert_eq!(
        query_count(
            &site,
            &trace,
            &format!(
                "SELECT COUNT(*) FROM process WHERE parent_upid = {sh_upid} AND name = 'true'"
            )
        ),
        10
    );
    // The event groups asked for are the ones recorded.
    assert_eq!(
        query_count(
            &site,
            &trace,
            "SELECT COUNT(*) FROM metadata WHERE name = 'recorder_argv' \
             AND str_value LIKE '% --events sched,irq%'"
        ),
        1
    );
    // The busy shells outside the filter fork hundreds of `true`s meanwhile:
    // none of them is in the trace.
    assert_eq!(
        query_count(
            &site,
            &trace,
            &format!(
                "SELECT COUNT(*) FROM process WHERE name = 'true' AND parent_upid IS NOT {sh_upid}"
            )
        ),
        0
    );
}

/// Busy threads that switch constantly, until dropped.
struct Spin(Vec<Child>);

impl Drop for Spin {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spin_workload() -> Spin {
    Spin(
        (0..2)
            .map(|_| {
                Command::new("sh")
                    .arg("-c")
                    .arg("while :; do /bin/true; done")
                    .spawn()
                    .unwrap()
            })
            .collect(),
    )
}

/// The trace loads (`schedlens query`) and has switches.
fn check_loads(site: &Site, trace: &Path) {
    let out = Command::new(&site.bin)
        .args(["query", "--format=csv"])
        .arg(trace)
        .arg("SELECT COUNT(*) FROM sched")
        .env("XDG_CACHE_HOME", site.dir.path().join("root-cache"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}: {}",
        trace.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let n: i64 = stdout
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    assert!(n > 0, "{}: {stdout}", trace.display());
}

#[test]
fn a_client_that_goes_away_stops_its_recording() {
    if !require_root("a_client_that_goes_away_stops_its_recording") {
        return;
    }
    let mut site = Site::new();
    site.start(&[]);
    let mut conn = Connection::connect(&site.socket).unwrap();
    conn.send(&record(300_000)).unwrap();
    let name = match conn.recv().unwrap().0 {
        Response::Started { name, .. } => name,
        other => panic!("{other:?}"),
    };
    while !matches!(conn.recv().unwrap().0, Response::Progress { bytes, .. } if bytes > 0) {}
    drop(conn);
    // Long before its 5 minutes, nothing runs and the trace is whole in the spool.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let frames = converse(&site.socket, &Request::Status);
        match &frames[0].0 {
            Response::Status(s) if s.recordings.is_empty() => break,
            Response::Status(_) => {}
            other => panic!("{other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "the recording outlived its client"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    check_loads(&site, &site.spool.join(&name));
    assert!(site.log().contains("Disconnected"), "{}", site.log());
}

#[test]
fn malformed_and_oversized_requests_get_errors() {
    if !require_root("malformed_and_oversized_requests_get_errors") {
        return;
    }
    let mut site = Site::new();
    site.start(&[]);
    let raw = |bytes: &[u8]| -> String {
        let mut s = UnixStream::connect(&site.socket).unwrap();
        s.write_all(bytes).unwrap();
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        match protocol::read_frame(&mut out.as_slice(), protocol::MAX_RESPONSE_BYTES) {
            Ok(Some(body)) => match protocol::decode_response(&body).unwrap() {
                Response::Error(e) => {
                    assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
                    e.message
                }
                other => panic!("{other:?}"),
            },
            other => panic!("no error frame: {other:?}"),
        }
    };
    let framed = |body: &[u8]| {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            vec![0xff, 0xff, 0xff, 0xff, b'x'],
            "over the 65536-byte limit",
        ),
        (framed(b"not json"), "not one JSON object"),
        (framed(b"{\"op\":\"status\"}"), "no \"version\""),
        (framed(b"{\"version\":9,\"op\":\"status\"}"), "version 9"),
        (
            framed(b"{\"version\":1,\"op\":\"format_disk\"}"),
            "unknown variant",
        ),
        (
            framed(b"{\"version\":1,\"op\":\"record\",\"duration_ms\":1000,\"comms\":[\"\"]}"),
            "not a task name",
        ),
        (framed(b"{\"version\":1,\"op\":\"cancel\"}"), "has none"),
        (vec![0, 0, 0, 40, b'{'], "cannot read the request"),
    ];
    for (bytes, want) in cases {
        let message = raw(&bytes);
        assert!(message.contains(want), "{want}: {message}");
    }
    // Still serving.
    let frames = converse(&site.socket, &Request::Status);
    assert!(matches!(frames[0].0, Response::Status(_)), "{frames:?}");
}

#[test]
fn a_service_killed_mid_recording_leaves_a_loadable_trace_and_restarts() {
    if !require_root("a_service_killed_mid_recording_leaves_a_loadable_trace_and_restarts") {
        return;
    }
    let mut site = Site::new();
    site.start(&[]);
    let mut conn = Connection::connect(&site.socket).unwrap();
    conn.send(&record(30_000)).unwrap();
    let name = match conn.recv().unwrap().0 {
        Response::Started { name, .. } => name,
        other => panic!("{other:?}"),
    };
    let _busy = spin_workload();
    // Until the trace has chunks beyond its preamble.
    loop {
        match conn.recv().unwrap().0 {
            Response::Progress { bytes, .. } if bytes > 64 << 10 => break,
            Response::Progress { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    // The whole service dies at once, its recorder too (as an OOM kill of its cgroup would).
    let service = site.service.as_ref().unwrap().id();
    let mut all_children = String::new();
    for task in std::fs::read_dir(format!("/proc/{service}/task")).unwrap() {
        let task = task.unwrap().file_name();
        all_children += &std::fs::read_to_string(format!(
            "/proc/{service}/task/{}/children",
            task.to_string_lossy()
        ))
        .unwrap_or_default();
    }
    let recorders: Vec<i32> = all_children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert!(
        !recorders.is_empty(),
        "the recording runs in a child of the service"
    );
    for pid in recorders {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    site.stop();
    assert!(conn.recv().is_err(), "the connection ends with the service");
    let trace = site.spool.join(&name);
    check_loads(&site, &trace);

    // A restart replaces the stale socket, shares the killed recording's trace
    // like the others, and records again.
    site.start(&[]);
    let meta = std::fs::metadata(&trace).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o640);
    let frames = converse(&site.socket, &record(300));
    match frames.last() {
        Some((Response::Finished(f), true)) => check_loads(&site, &site.spool.join(&f.name)),
        other => panic!("{other:?}"),
    }
}

/// How long a trace's scheduling spans, from `schedlens query`.
fn sched_span_ns(site: &Site, trace: &Path) -> i64 {
    query_count(site, trace, "SELECT max(ts) - min(ts) FROM sched_slice")
}

#[test]
fn a_flight_recording_serves_snapshots_on_request() {
    if !require_root("a_flight_recording_serves_snapshots_on_request") {
        return;
    }
    let mut site = Site::new();
    site.start(&[]);
    let busy = spin_workload();
    let mut conn = Connection::connect(&site.socket).unwrap();
    conn.send(&Request::Record(RecordRequest {
        duration_ms: 30_000,
        flight_window_ms: Some(2000),
        ..Default::default()
    }))
    .unwrap();
    let (id, name) = match conn.recv().unwrap() {
        (Response::Started { id, name, .. }, _) => (id, name),
        other => panic!("{other:?}"),
    };
    // Well past the window.
    loop {
        match conn.recv().unwrap() {
            (Response::Progress { elapsed_ms, .. }, _) if elapsed_ms >= 5000 => break,
            (Response::Progress { .. }, _) => {}
            other => panic!("{other:?}"),
        }
    }
    // A recording that is not running cannot be snapshot.
    let (code, _, message) = refusal(&converse(
        &site.socket,
        &Request::Snapshot(protocol::SnapshotRequest { id: Some(id + 100) }),
    ));
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("no flight recording"), "{message}");

    let mut snap_conn = Connection::connect(&site.socket).unwrap();
    snap_conn
        .send(&Request::Snapshot(protocol::SnapshotRequest {
            id: Some(id),
        }))
        .unwrap();
    let (snap_name, bytes, fd) = match snap_conn.recv().unwrap() {
        (
            Response::Snapshot {
                id: got,
                name,
                bytes,
                trigger: None,
            },
            Some(fd),
        ) => {
            assert_eq!(got, id);
            (name, bytes, fd)
        }
        other => panic!("{other:?}: {}", site.log()),
    };
    let snap = site.spool.join(&snap_name);
    let meta = std::fs::metadata(&snap).unwrap();
    assert_eq!(meta.len(), bytes);
    assert_eq!(meta.mode() & 0o777, 0o640);
    assert_eq!(
        meta.gid(),
        nix::unistd::Group::from_name(&site.group)
            .unwrap()
            .unwrap()
            .gid
            .as_raw()
    );
    // The descriptor is that file.
    let mut handed = Vec::new();
    std::fs::File::from(fd).read_to_end(&mut handed).unwrap();
    assert_eq!(handed, std::fs::read(&snap).unwrap());
    check_loads(&site, &snap);
    let span = sched_span_ns(&site, &snap);
    assert!((1_000_000_000..=4_000_000_000).contains(&span), "{span}");

    // The command line asks the same way.
    let copy = site.dir.path().join("copy.pftrace");
    let out = Command::new(&site.bin)
        .args(["recorder", "snapshot", "--socket"])
        .arg(&site.socket)
        .arg("-o")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("snapshot flight-"));
    check_loads(&site, &copy);

    // At its end the recording hands over a last snapshot under its name.
    let finished = loop {
        match conn.recv().unwrap() {
            (Response::Progress { .. }, _) => {}
            (Response::Finished(f), fd) => {
                assert!(fd.is_some());
                break f;
            }
            other => panic!("{other:?}"),
        }
    };
    drop(busy);
    assert_eq!(finished.name, name);
    assert_eq!(finished.ended, Ending::Duration, "{:?}", finished.message);
    let last = site.spool.join(&name);
    check_loads(&site, &last);
    assert!(sched_span_ns(&site, &last) <= 4_000_000_000);
    // None runs now.
    let (code, _, _) = refusal(&converse(
        &site.socket,
        &Request::Snapshot(protocol::SnapshotRequest::default()),
    ));
    assert_eq!(code, ErrorCode::BadRequest);
}

#[test]
fn a_flight_recording_s_trigger_hands_over_the_triggering_wakeup() {
    if !root::require_bpf() {
        return;
    }
    let mut site = Site::new();
    site.start(&[]);
    let mut conn = Connection::connect(&site.socket).unwrap();
    conn.send(&Request::Record(RecordRequest {
        duration_ms: 120_000,
        flight_window_ms: Some(10_000),
        trigger: LatencyTrigger {
            spec: Some(parse_trigger("latency>30ms").unwrap()),
            comm: Some("sl-victim".into()),
            pid: None,
        },
        ..Default::default()
    }))
    .unwrap();
    let id = match conn.recv().unwrap() {
        (Response::Started { id, .. }, _) => id,
        other => panic!("{other:?}: {}", site.log()),
    };
    // Attached once the ring holds chunks.
    while !matches!(conn.recv().unwrap().0, Response::Progress { bytes, .. } if bytes > 0) {}
    let tid = root::latency::delayed_wakeup();
    let (name, bytes, fired, fd) = loop {
        match conn.recv().unwrap() {
            (Response::Progress { .. }, _) => {}
            (
                Response::Snapshot {
                    id: got,
                    name,
                    bytes,
                    trigger: Some(fired),
                },
                Some(fd),
            ) => {
                assert_eq!(got, id);
                break (name, bytes, fired, fd);
            }
            other => panic!("{other:?}: {}", site.log()),
        }
    };
    assert_eq!(fired.pid, tid, "{fired:?}");
    assert!(fired.latency_ns > 30_000_000, "{fired:?}");
    // In the spool, shared like every trace, and the descriptor is that file.
    let snap = site.spool.join(&name);
    let meta = std::fs::metadata(&snap).unwrap();
    assert_eq!((meta.len(), meta.mode() & 0o777), (bytes, 0o640));
    let mut handed = Vec::new();
    std::fs::File::from(fd).read_to_end(&mut handed).unwrap();
    assert_eq!(handed, std::fs::read(&snap).unwrap());
    // The triggering wakeup is in it, with the latency that fired.
    let latency = query_count(
        &site,
        &snap,
        &format!(
            "SELECT max(w.latency) FROM wakeup w JOIN thread t USING (utid) \
             WHERE t.tid = {tid} AND t.name = 'sl-victim'"
        ),
    );
    assert!(latency > 30_000_000, "latency {latency} ns");
    // It carries the recorder's stats, as a full recording does.
    assert!(
        query_count(
            &site,
            &snap,
            "SELECT count(*) FROM stats WHERE name = 'recorder_lost_events_total'"
        ) >= 1
    );

    let mut cancel = conn.try_clone_stream().unwrap();
    protocol::write_frame(&mut cancel, &Request::Cancel).unwrap();
    loop {
        match conn.recv().unwrap() {
            (Response::Finished(f), Some(_)) => {
                assert_eq!(f.ended, Ending::Cancelled, "{f:?}");
                break;
            }
            (Response::Progress { .. } | Response::Snapshot { .. }, _) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(site.log().contains("trigger snapshot"), "{}", site.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_client_snapshots_a_running_flight_recording_and_queries_it() {
    if !root::require_bpf() {
        return;
    }
    let mut site = Site::new();
    site.start(&[]);
    let (handler, mut rx) = progress();
    let c = site.analyze_as(&site.member.clone(), handler).await;
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(
        CallToolRequestParams::new("record").with_arguments(
            json!({ "duration": "2m", "flight_window": "5s" })
                .as_object()
                .unwrap()
                .clone(),
        ),
    ));
    let handle = c
        .peer()
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await
        .unwrap();
    until_recording(&mut rx).await;
    // Only the snapshot's window sees this shell and its forks.
    let sh = workload(10);
    // Its events reach the ring within a flush (a second) or two.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let snap = ok(&c, "snapshot", json!({})).await;
    let trace = snap["trace"].as_str().unwrap().to_string();
    assert!(trace.starts_with("flight-"), "{snap}");
    let status = ok(&c, "recording_status", json!({})).await;
    assert_eq!(snap["id"], status["recordings"][0]["id"], "{snap} {status}");
    assert_eq!(true_children(&c, &trace, sh).await, 10);
    let info = ok(&c, "trace_info", json!({ "trace": trace })).await;
    assert!(info["system"]["recorder_version"].is_string(), "{info}");
    // The recording goes on until cancelled, and then ends.
    handle.cancel(Some("enough".into())).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = ok(&c, "recording_status", json!({})).await;
        if status["recordings"] == json!([]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the recording outlived its cancel"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.cancel().await.unwrap();
}
