//! The recorder service's wire protocol (documented for other clients in
//! schema/recorder-protocol.md).
//!
//! A frame is a 4-byte big-endian length and that many bytes of one UTF-8
//! JSON object. A connection carries one request; a `record` request is then
//! followed by `started`, `progress` frames and one `finished` frame, whose
//! ancillary data (SCM_RIGHTS) holds the trace opened read-only, and the client
//! may send one `cancel` frame meanwhile. Every frame names `version`.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::recorder::cli::{Fired, LatencyTrigger};

/// The protocol version this build speaks; a request naming another is refused.
pub const VERSION: u32 = 1;
/// Largest request frame the service reads (a request is a few hundred bytes).
pub const MAX_REQUEST_BYTES: u32 = 64 << 10;
/// Largest response frame a client reads.
pub const MAX_RESPONSE_BYTES: u32 = 1 << 20;
/// Values per pid, tgid or comm filter (the recorder's own bound).
pub const MAX_FILTER: usize = crate::recorder::MAX_FILTER;
/// Entries in a request's `events` or `stacks`, and bytes in one of them.
pub const MAX_NAMES: usize = 64;
pub const MAX_NAME_BYTES: usize = 64;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// What this recorder can record and the limits in force.
    Capabilities,
    /// The recordings running now and the limits in force.
    Status,
    /// A recording; the connection then carries its progress and its trace.
    Record(RecordRequest),
    /// Stops the recording of this connection, keeping what it has.
    Cancel,
    /// A snapshot of a flight recording's last window, as a new trace.
    Snapshot(SnapshotRequest),
}

/// Which flight recording to snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// The recording's id (from `started` or `status`); none: the caller's
    /// only flight recording running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
}

/// A recording's parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordRequest {
    /// How long to record, in milliseconds (more than 0, at most the service's max_duration).
    pub duration_ms: u64,
    #[serde(flatten)]
    pub what: Selection,
    /// Stop once the trace reaches this size (at most the service's max_bytes);
    /// for a flight recording, the most its ring and each snapshot hold.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// A flight recording: keep only the last this many milliseconds (at most
    /// the service's max_duration) for `snapshot` requests; `finished` then
    /// carries a snapshot taken at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flight_window_ms: Option<u64>,
    /// A flight recording's latency trigger: each time it fires, a snapshot
    /// comes as a `snapshot` frame on this connection.
    #[serde(flatten)]
    pub trigger: LatencyTrigger,
}

/// What a recording captures: the fields a `record` request shares with
/// the MCP `record` tool (crate::mcp::recorder).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Selection {
    /// Event groups (names from list_recordable_events); default: the default groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// Stack kinds (names from list_recordable_events); default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stacks: Vec<String>,
    /// Only these threads (tids) and the tasks they create.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<i32>,
    /// Only these processes, their threads and descendants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tgids: Vec<i32>,
    /// Only tasks with these names (as `ps -o comm` shows them) and their descendants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comms: Vec<String>,
}

/// What the service answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Error(ErrorReply),
    Capabilities(Capabilities),
    Status(Status),
    /// The recording runs; `name` is its trace's file name in the spool.
    Started {
        id: u64,
        name: String,
        duration_ms: u64,
    },
    /// `bytes`: as in [`RecordingStatus`].
    Progress {
        elapsed_ms: u64,
        bytes: u64,
    },
    /// The recording ended; the trace comes as the frame's file descriptor.
    Finished(Finished),
    /// A flight recording's snapshot, written into the spool as `name`; the
    /// trace comes as the frame's file descriptor. On a `record`
    /// connection: a snapshot its latency trigger took, and what fired it.
    Snapshot {
        id: u64,
        name: String,
        bytes: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trigger: Option<Fired>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub code: ErrorCode,
    /// The limit a refused request went beyond (its name in recorder.toml).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The caller is not on the allow list.
    NotAllowed,
    /// The request goes beyond a limit (named in `limit`).
    Limit,
    /// The request could not be decoded or names something unknown.
    BadRequest,
    UnsupportedVersion,
    /// The recording could not start or failed.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub groups: Vec<EventGroup>,
    pub stacks: Vec<StackKind>,
    pub limits: Limits,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventGroup {
    pub name: String,
    pub description: String,
    /// Recorded without being asked for.
    pub default: bool,
    /// The kernel tracepoints (and recorder records) the group captures.
    pub events: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackKind {
    pub name: String,
    pub description: String,
}

/// The limits a service enforces, as recorder.toml names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Limits {
    pub max_duration_ms: u64,
    pub max_bytes: u64,
    pub max_concurrent: u32,
    pub min_interval_ms: u64,
    pub spool_max_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Status {
    pub recordings: Vec<RecordingStatus>,
    pub limits: Limits,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RecordingStatus {
    pub id: u64,
    /// Its trace's file name in the spool.
    pub name: String,
    /// Who asked for it.
    pub uid: u32,
    pub elapsed_ms: u64,
    pub duration_ms: u64,
    /// The trace's size so far (a flight recording: what its ring holds).
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    pub name: String,
    pub ended: Ending,
    pub elapsed_ms: u64,
    pub bytes: u64,
    /// What went wrong, when `ended` is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Why a recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    Duration,
    Cancelled,
    /// The trace reached the request's (or the service's) max_bytes.
    MaxBytes,
    /// The client went away; the trace is kept in the spool.
    Disconnected,
    /// The recorder failed; the trace holds what it had.
    Failed,
}

/// A frame's or request's defect, as one line for the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFrame(pub String);

impl std::fmt::Display for BadFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads one frame of at most `max` bytes. Ok(None): the peer closed the
/// connection before a frame began. An oversized length is refused before
/// its body is read.
pub fn read_frame(r: &mut impl Read, max: u32) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes(len);
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes is over the {max}-byte limit"),
        ));
    }
    let mut body = vec![0; len as usize];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

/// Encodes `value` as one frame (with `version` added to the object).
pub fn encode_frame(value: &impl Serialize) -> Vec<u8> {
    let mut json = serde_json::to_value(value).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut json {
        map.insert("version".into(), VERSION.into());
    }
    let body = json.to_string().into_bytes();
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

pub fn write_frame(w: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    w.write_all(&encode_frame(value))
}

/// Decodes a frame's body as a request of this version, checking every
/// bound a request can go beyond before the service's limits are applied.
pub fn decode_request(body: &[u8]) -> Result<Request, BadFrame> {
    let request: Request = decode_versioned(body)?;
    if let Request::Record(r) = &request {
        check_record(r)?;
    }
    Ok(request)
}

/// Decodes a frame's body as a response of this version.
pub fn decode_response(body: &[u8]) -> Result<Response, BadFrame> {
    decode_versioned(body)
}

fn decode_versioned<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, BadFrame> {
    let bad = |what: String| BadFrame(what);
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the frame is not one JSON object: {e}")))?;
    let Value::Object(map) = &mut value else {
        return Err(bad("the frame is not a JSON object".into()));
    };
    match map.remove("version").map(|v| v.as_u64()) {
        Some(Some(v)) if v == u64::from(VERSION) => {}
        Some(Some(v)) => {
            return Err(bad(format!(
                "protocol version {v} is not spoken here; this side speaks version {VERSION}"
            )));
        }
        _ => return Err(bad(format!("the frame has no \"version\": {VERSION}"))),
    }
    serde_json::from_value(value).map_err(|e| bad(format!("bad frame: {e}")))
}

fn check_record(r: &RecordRequest) -> Result<(), BadFrame> {
    let bad = |what: String| Err(BadFrame(what));
    if r.duration_ms == 0 {
        return bad("duration_ms must be more than 0".into());
    }
    let w = &r.what;
    for (field, n) in [
        ("pids", w.pids.len()),
        ("tgids", w.tgids.len()),
        ("comms", w.comms.len()),
    ] {
        if n > MAX_FILTER {
            return bad(format!(
                "at most {MAX_FILTER} {field} are supported, got {n}"
            ));
        }
    }
    let trigger_pid = r.trigger.pid.as_slice();
    if let Some(id) = w
        .pids
        .iter()
        .chain(&w.tgids)
        .chain(trigger_pid)
        .find(|&&id| id <= 0)
    {
        return bad(format!("{id} is not a process id (a number above 0)"));
    }
    if let Some(c) = w
        .comms
        .iter()
        .chain(&r.trigger.comm)
        .find(|c| crate::recorder::cli::parse_comm(c).is_err())
    {
        return bad(format!(
            "comm {:?} is not a task name (1 to 15 bytes, no NUL)",
            c.chars().take(32).collect::<String>()
        ));
    }
    for (field, names) in [("events", &w.events), ("stacks", &w.stacks)] {
        if names.len() > MAX_NAMES {
            return bad(format!("at most {MAX_NAMES} {field} are supported"));
        }
        if names
            .iter()
            .any(|n| n.is_empty() || n.len() > MAX_NAME_BYTES)
        {
            return bad(format!("{field} names have 1 to {MAX_NAME_BYTES} bytes"));
        }
    }
    if r.max_bytes == Some(0) {
        return bad("max_bytes must be more than 0".into());
    }
    if r.flight_window_ms == Some(0) {
        return bad("flight_window_ms must be more than 0".into());
    }
    if let Some((_, field)) = r.trigger.orphan_filter() {
        return bad(format!("{field} needs trigger"));
    }
    if r.trigger.spec.is_some() && r.flight_window_ms.is_none() {
        return bad("trigger needs flight_window_ms (a flight recording)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_body(value: &impl Serialize) -> Vec<u8> {
        encode_frame(value)[4..].to_vec()
    }

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Capabilities,
            Request::Status,
            Request::Cancel,
            Request::Record(RecordRequest {
                duration_ms: 2000,
                what: Selection {
                    comms: vec!["make".into()],
                    pids: vec![7],
                    ..Default::default()
                },
                ..Default::default()
            }),
            Request::Record(RecordRequest {
                duration_ms: 9000,
                flight_window_ms: Some(3000),
                trigger: LatencyTrigger {
                    spec: crate::recorder::cli::parse_trigger("latency>5ms").ok(),
                    comm: Some("victim".into()),
                    pid: None,
                },
                ..Default::default()
            }),
        ] {
            assert_eq!(decode_request(&frame_body(&r)), Ok(r));
        }
    }

    #[test]
    fn bad_requests_are_named() {
        let cases: [(&[u8], &str); 12] = [
            (b"", "not one JSON object"),
            (b"[1]", "not a JSON object"),
            (br#"{"op":"status"}"#, "no \"version\""),
            (br#"{"version":2,"op":"status"}"#, "version 2"),
            (br#"{"version":1,"op":"reboot"}"#, "unknown variant"),
            (
                br#"{"version":1,"op":"record","duration_ms":0}"#,
                "more than 0",
            ),
            (
                br#"{"version":1,"op":"record","duration_ms":5,"pids":[-1]}"#,
                "not a process id",
            ),
            (
                br#"{"version":1,"op":"record","duration_ms":5,"colour":1}"#,
                "unknown field",
            ),
            (
                br#"{"version":1,"op":"record","duration_ms":5,"flight_window_ms":5,"trigger":"latency<5ms"}"#,
                "the trigger is latency>DURATION",
            ),
            (
                br#"{"version":1,"op":"record","duration_ms":5,"trigger":"latency>5ms"}"#,
                "trigger needs flight_window_ms",
            ),
            (
                br#"{"version":1,"op":"record","duration_ms":5,"trigger_comm":"x"}"#,
                "trigger_comm needs trigger",
            ),
            (
                br#"{"version":1,"op":"record","duration_ms":5,"pids":"7"}"#,
                "invalid type",
            ),
        ];
        for (body, want) in cases {
            let e = decode_request(body).unwrap_err();
            assert!(
                e.0.contains(want),
                "{:?}: {e}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn oversized_frames_are_refused_unread() {
        let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let e = read_frame(&mut input, MAX_REQUEST_BYTES).unwrap_err();
        assert!(e.to_string().contains("over the 65536-byte limit"), "{e}");
        assert_eq!(input, [1, 2, 3], "the body was not read");
        let mut empty: &[u8] = &[];
        assert!(read_frame(&mut empty, 10).unwrap().is_none());
        let mut cut: &[u8] = &[0, 0];
        assert!(read_frame(&mut cut, 10).is_err());
    }
}
