//! The service's side of a flight recording: its `schedlens trace --flight
//! --flight-control` child takes one line on stdin per snapshot and answers
//! with one JSON line on stdout (src/recorder/flight.rs); the snapshots its
//! latency trigger takes come as lines of their own, tagged `trigger`, and
//! the ring's size every second as `ring_bytes`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};

use crate::recorder::cli::Fired;

/// How to ask one running flight recorder for snapshots; one at a time.
pub struct FlightControl {
    /// The child's stdin, and the replies to what was asked on it.
    asks: Mutex<(ChildStdin, Receiver<Line>)>,
    /// The snapshots its trigger took, as they come.
    triggered: Mutex<Receiver<Line>>,
    /// What a snapshot would hold now, as the child last said.
    ring_bytes: Arc<AtomicU64>,
    /// The most a snapshot holds (the ring's budget).
    pub cap: u64,
}

/// One line of the child's stdout, decoded.
type Line = Result<(PathBuf, Option<Fired>), String>;

impl FlightControl {
    /// Reads the child's stdout on a thread of its own, sorting the lines
    /// into replies and trigger snapshots.
    pub fn new(stdin: ChildStdin, stdout: ChildStdout, cap: u64) -> FlightControl {
        let (reply_tx, replies) = mpsc::channel();
        let (trigger_tx, triggered) = mpsc::channel();
        let ring_bytes = Arc::new(AtomicU64::new(0));
        let held = Arc::clone(&ring_bytes);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let reply: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if let Some(n) = reply.get("ring_bytes").and_then(|n| n.as_u64()) {
                    held.store(n, Ordering::Relaxed);
                    continue;
                }
                let (line, fired) = decode(&line);
                let tx = if fired { &trigger_tx } else { &reply_tx };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        FlightControl {
            asks: Mutex::new((stdin, replies)),
            triggered: Mutex::new(triggered),
            ring_bytes,
            cap,
        }
    }

    pub fn ring_bytes(&self) -> u64 {
        self.ring_bytes.load(Ordering::Relaxed)
    }

    /// Asks for a snapshot; returns its path, which must be a trace in
    /// `spool` (the child is ours, but its answer is still checked).
    pub fn snapshot(&self, spool: &Path) -> Result<PathBuf, String> {
        let asks = self.asks.lock().unwrap_or_else(|e| e.into_inner());
        let (mut stdin, replies) = (&asks.0, &asks.1);
        let gone = |e: std::io::Error| format!("the flight recorder is not answering: {e}");
        stdin
            .write_all(b"snapshot\n")
            .and_then(|()| stdin.flush())
            .map_err(gone)?;
        let (path, _) = replies
            .recv()
            .map_err(|_| "the flight recorder has stopped".to_string())??;
        in_spool(path, spool)
    }

    /// The next snapshot the trigger took, if one is waiting: its path (in
    /// `spool`) and what fired it, or why it failed.
    pub fn triggered(&self, spool: &Path) -> Option<Result<(PathBuf, Fired), String>> {
        let line = self
            .triggered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_recv()
            .ok()?;
        Some(line.and_then(|(path, fired)| {
            let fired = fired.ok_or("a trigger snapshot without its trigger")?;
            Ok((in_spool(path, spool)?, fired))
        }))
    }
}

/// A reply line: the snapshot's path and trigger, or its error; and whether
/// the trigger took it.
fn decode(line: &str) -> (Line, bool) {
    let reply: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return (Err(format!("the flight recorder said {e}")), false),
    };
    let fired = reply
        .get("trigger")
        .and_then(|t| serde_json::from_value::<Fired>(t.clone()).ok());
    let by_trigger = reply.get("trigger").is_some();
    if let Some(e) = reply.get("error").and_then(|e| e.as_str()) {
        return (Err(format!("the snapshot failed: {e}")), by_trigger);
    }
    let line = reply
        .get("snapshot")
        .and_then(|p| p.as_str())
        .map(|p| (PathBuf::from(p), fired))
        .ok_or_else(|| "the flight recorder named no snapshot".to_string());
    (line, by_trigger)
}

fn in_spool(path: PathBuf, spool: &Path) -> Result<PathBuf, String> {
    let in_spool = path.parent() == Some(spool)
        && path
            .file_name()
            .is_some_and(|n| super::server::is_trace_name(&n.to_string_lossy()));
    if !in_spool {
        return Err(format!(
            "the snapshot {} is not in the spool",
            path.display()
        ));
    }
    Ok(path)
}
