//! The service's side of a flight recording: its `schedlens trace --flight
//! --flight-control` child takes one line on stdin per snapshot and answers
//! with one JSON line on stdout (src/recorder/flight.rs).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout};
use std::sync::Mutex;

/// How to ask one running flight recorder for snapshots; one at a time.
pub struct FlightControl {
    pipes: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
    /// The most a snapshot holds (the ring's budget).
    pub cap: u64,
}

impl FlightControl {
    pub fn new(stdin: ChildStdin, stdout: ChildStdout, cap: u64) -> FlightControl {
        FlightControl {
            pipes: Mutex::new((stdin, BufReader::new(stdout))),
            cap,
        }
    }

    /// Asks for a snapshot; returns its path, which must be a trace in
    /// `spool` (the child is ours, but its answer is still checked).
    pub fn snapshot(&self, spool: &Path) -> Result<PathBuf, String> {
        let mut pipes = self.pipes.lock().unwrap_or_else(|e| e.into_inner());
        let (stdin, stdout) = &mut *pipes;
        let gone = |e: std::io::Error| format!("the flight recorder is not answering: {e}");
        stdin
            .write_all(b"snapshot\n")
            .and_then(|()| stdin.flush())
            .map_err(gone)?;
        let mut line = String::new();
        let n = stdout.read_line(&mut line).map_err(gone)?;
        if n == 0 {
            return Err("the flight recorder has stopped".into());
        }
        let reply: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("the flight recorder said {e}"))?;
        if let Some(e) = reply.get("error").and_then(|e| e.as_str()) {
            return Err(format!("the snapshot failed: {e}"));
        }
        let path = reply
            .get("snapshot")
            .and_then(|p| p.as_str())
            .map(PathBuf::from)
            .ok_or("the flight recorder named no snapshot")?;
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
}
