//! Paths as an attacker prepares them: `trace -o` at a planted link or a
//! device, `--trace-dir` with links out of it, files that are not traces and
//! FIFOs; and an MCP client's cancel stopping a load it started.

mod tracegen;

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_schedlens");

/// `schedlens trace` needs root; its refusals come before BPF is loaded.
fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but not running as root: these tests must run, not skip");
    }
    eprintln!("\n!!! SKIPPED: `schedlens trace` path tests need root !!!\n");
    false
}

fn trace_to(output: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["trace", "-d", "1s", "-o"])
        .arg(output)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `-o` at a link to a root-owned file used to overwrite it and chmod it 0600.
#[test]
fn trace_output_at_a_link_leaves_its_target_alone() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"root's data\n").unwrap();
    let link = dir.path().join("t.pftrace");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let mode = std::fs::metadata(&victim).unwrap().mode();
    let (ok, stderr) = trace_to(&link);
    assert!(!ok);
    assert!(
        stderr.contains("not a regular file (a symbolic link)"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"root's data\n");
    assert_eq!(std::fs::metadata(&victim).unwrap().mode(), mode);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "files left"
    );
}

/// `-o /dev/null` used to fail and leave /dev/null at mode 0600; a FIFO is
/// refused the same way.
#[test]
fn trace_output_at_a_device_or_fifo_is_refused_untouched() {
    if !require_root() {
        return;
    }
    let null = std::fs::metadata("/dev/null").unwrap();
    let (ok, stderr) = trace_to(Path::new("/dev/null"));
    assert!(!ok);
    assert!(stderr.contains("not a regular file (a device"), "{stderr}");
    let after = std::fs::metadata("/dev/null").unwrap();
    assert!(after.file_type().is_char_device());
    assert_eq!((after.mode(), after.uid()), (null.mode(), null.uid()));

    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("t.pftrace");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let (ok, stderr) = trace_to(&fifo);
    assert!(!ok && stderr.contains("not a regular file"), "{stderr}");
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

type Client = RunningService<RoleClient, ()>;

async fn serve_dir(dir: &Path) -> Client {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("analyze").arg("--trace-dir").arg(dir);
    cmd.env("XDG_CACHE_HOME", dir.join("cache"));
    let (transport, _) = TokioChildProcess::builder(cmd)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ().serve(transport).await.unwrap()
}

async fn call(c: &Client, tool: &str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    c.call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .unwrap()
}

fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

/// Links (out of the directory, to /etc/passwd) and FIFOs are neither listed
/// nor opened; a file that is not a trace is an error that quotes nothing of it.
#[tokio::test]
async fn trace_dir_serves_only_its_regular_files_and_echoes_nothing() {
    let top = tempfile::tempdir().unwrap();
    let dir = top.path().join("traces");
    std::fs::create_dir(&dir).unwrap();
    let outside = top.path().join("outside.pftrace");
    tracegen::write_synthetic(&outside, 2_000, 2, 4, 100);
    tracegen::write_synthetic(&dir.join("a.pftrace"), 2_000, 2, 4, 100);
    std::os::unix::fs::symlink(&outside, dir.join("link.pftrace")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd.pftrace")).unwrap();
    let c = std::ffi::CString::new(dir.join("fifo.pftrace").to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    std::fs::write(dir.join("secret.pftrace"), b"password=hunter2\n").unwrap();

    let c = serve_dir(&dir).await;
    let list = call(&c, "list_traces", json!({})).await;
    let names: Vec<String> = list.structured_content.unwrap()["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["a.pftrace", "secret.pftrace"]);
    for bad in ["link.pftrace", "passwd.pftrace", "fifo.pftrace"] {
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            call(&c, "trace_info", json!({ "trace": bad })),
        )
        .await
        .unwrap_or_else(|_| panic!("{bad} blocked"));
        assert_eq!(r.is_error, Some(true));
        let msg = text(&r);
        assert!(msg.contains("unknown trace"), "{bad}: {msg}");
        assert!(
            !msg.contains("root:") && !msg.contains("/etc"),
            "{bad}: {msg}"
        );
    }
    let r = call(&c, "trace_info", json!({"trace": "secret.pftrace"})).await;
    let msg = text(&r);
    assert_eq!(r.is_error, Some(true), "{msg}");
    assert!(msg.contains("not a Perfetto trace"), "{msg}");
    for leaked in ["hunter2", "password", "70 61", "7061"] {
        assert!(!msg.contains(leaked), "{msg}");
    }
    let r = call(&c, "trace_info", json!({"trace": "a.pftrace"})).await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    c.cancel().await.unwrap();
    // Nothing was loaded through the link: no cache beside the outside trace.
    assert!(!top.path().join("outside.pftrace.db").exists());
}

/// A client that gives up on a call loading a trace stops the load: its
/// temporary files go and no database is made.
#[tokio::test]
async fn cancelling_a_call_stops_the_load_it_started() {
    let dir = tempfile::tempdir().unwrap();
    tracegen::write_synthetic(&dir.path().join("big.pftrace"), 4_000_000, 4, 64, 4_000);
    let c = serve_dir(dir.path()).await;
    let temporaries = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".big.pftrace.db.")
            })
            .count()
    };
    let mut call = Box::pin(call(&c, "trace_info", json!({"trace": "big.pftrace"})));
    // Until the load has begun (its temporary database exists).
    let mut started = false;
    for _ in 0..600 {
        if tokio::time::timeout(Duration::from_millis(100), &mut call)
            .await
            .is_ok()
        {
            panic!("the load finished before it could be cancelled: use a bigger trace");
        }
        if temporaries() > 0 {
            started = true;
            break;
        }
    }
    assert!(started, "the load never started");
    // Dropping the call makes the client send notifications/cancelled.
    drop(call);
    let mut gone = false;
    for _ in 0..1200 {
        if temporaries() == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the load's temporary files stayed");
    assert!(
        !dir.path().join("big.pftrace.db").exists(),
        "the load ran to the end despite the cancel"
    );
    c.cancel().await.unwrap();
}
