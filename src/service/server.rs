//! `schedlens recorder`: the root service that records on request.
//!
//! One thread per connection. A recording runs `schedlens trace` (this
//! binary) as a child with the request's duration, filters and size cap: the
//! BPF programs live and die with that process, a failure in it never takes
//! the service down, and stopping it early is its own SIGINT, which keeps the
//! trace complete. The child gets SIGTERM if the service dies, so it never
//! outlives a killed service by more than its drain.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, IoSlice, Read as _};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg, sockopt};
use nix::unistd::{Gid, Group, Pid, Uid, User};

use super::config::{Config, RecorderArgs};
use super::flight::FlightControl;
use super::protocol::{
    self, Capabilities, Ending, ErrorCode, ErrorReply, EventGroup, Finished, MAX_REQUEST_BYTES,
    RecordRequest, RecordingStatus, Request, Response, SnapshotRequest, StackKind, Status,
};
use crate::recorder::catalog;

/// Connections served at once; more are refused until one ends.
const MAX_CONNECTIONS: usize = 32;
/// How long a client may take to send its request, or to take a frame.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a recording's child is checked and its progress sent.
const TICK: Duration = Duration::from_millis(100);
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// A recorder still running this long past its duration (and its stop
/// signal) is killed: a stuck one must not hold the machine.
const OVERRUN: Duration = Duration::from_secs(30);

pub fn run(args: RecorderArgs) -> anyhow::Result<()> {
    if !Uid::effective().is_root() {
        bail!(
            "the recorder service runs as root (it loads BPF and owns the spool): \
             start it with sudo or as the systemd unit schedlens-recorder.service"
        );
    }
    crate::recorder::cli::check_btf()?;
    let config = Config::resolve(args)?;
    let service = Arc::new(Service::new(config)?);
    service.prepare_spool()?;
    let listener = service.listen()?;
    eprintln!(
        "schedlens recorder: listening on {} (group {}), spool {}",
        service.config.socket.display(),
        service.config.group,
        service.config.spool.display()
    );
    let connections = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("schedlens recorder: accept failed: {e}");
                std::thread::sleep(TICK);
                continue;
            }
        };
        let open = connections.fetch_add(1, Ordering::AcqRel) + 1;
        let (service, connections) = (service.clone(), connections.clone());
        let spawned = std::thread::Builder::new()
            .name("connection".into())
            .spawn(move || {
                if open > MAX_CONNECTIONS {
                    let _ = reply_error(
                        &stream,
                        ErrorCode::Limit,
                        Some("connections"),
                        format!("the recorder serves {MAX_CONNECTIONS} connections at once; retry"),
                    );
                } else {
                    service.serve(stream);
                }
                connections.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            eprintln!("schedlens recorder: cannot start a connection thread: {e}");
        }
    }
    Ok(())
}

struct Service {
    config: Config,
    /// The socket's and the traces' group.
    gid: Gid,
    allow_uids: Vec<Uid>,
    allow_gids: Vec<Gid>,
    /// This binary, run as `schedlens trace` for each recording.
    exe: PathBuf,
    book: Mutex<Book>,
    next_id: AtomicU64,
}

/// The recordings running, and when each caller last started one.
#[derive(Default)]
struct Book {
    active: Vec<Active>,
    last_start: HashMap<u32, Instant>,
}

struct Active {
    id: u64,
    name: String,
    uid: u32,
    path: PathBuf,
    started: Instant,
    duration: Duration,
    /// Bytes the spool keeps free for it.
    reserved: u64,
    /// A flight recording's snapshot requests, once its child runs.
    flight: Option<Arc<FlightControl>>,
}

/// Who is on the other end of a connection (SO_PEERCRED, SO_PEERGROUPS).
struct Peer {
    uid: Uid,
    pid: i32,
    gids: Vec<Gid>,
}

/// Why a recording is being stopped early (0: it is not).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Stop {
    No = 0,
    Cancelled = 1,
    Disconnected = 2,
}

impl Stop {
    fn load(flag: &AtomicU8) -> Stop {
        match flag.load(Ordering::Acquire) {
            1 => Stop::Cancelled,
            2 => Stop::Disconnected,
            _ => Stop::No,
        }
    }
}

/// A refusal: the reply's code, the limit it names and its message.
type Refusal = (ErrorCode, Option<&'static str>, String);

impl Service {
    fn new(config: Config) -> anyhow::Result<Service> {
        let gid = lookup_group(&config.group).with_context(|| {
            format!(
                "the recorder's group {:?} does not exist: create it (groupadd --system {}) \
                 or choose one with --group",
                config.group, config.group
            )
        })?;
        let allow_gids = config
            .allow_groups
            .iter()
            .map(|g| lookup_group(g).with_context(|| format!("allow_groups: no group {g:?}")))
            .collect::<anyhow::Result<_>>()?;
        let allow_uids = config
            .allow_users
            .iter()
            .map(|u| lookup_user(u).with_context(|| format!("allow_users: no user {u:?}")))
            .collect::<anyhow::Result<_>>()?;
        Ok(Service {
            gid,
            allow_uids,
            allow_gids,
            exe: std::env::current_exe().context("finding the schedlens binary")?,
            config,
            book: Mutex::default(),
            next_id: AtomicU64::new(1),
        })
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The socket systemd passed (socket activation), or a new one at
    /// --socket: mode 0660, root and the group. A socket left by a killed
    /// service is replaced; one a live service answers on is not.
    fn listen(&self) -> anyhow::Result<UnixListener> {
        if let Some(listener) = systemd_listener() {
            return Ok(listener);
        }
        let socket = &self.config.socket;
        if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
            }
        }
        match std::fs::symlink_metadata(socket) {
            Ok(m) if m.file_type().is_socket() => {
                if UnixStream::connect(socket).is_ok() {
                    bail!("another recorder already listens on {}", socket.display());
                }
                std::fs::remove_file(socket)
                    .with_context(|| format!("removing the stale socket {}", socket.display()))?;
            }
            Ok(_) => bail!(
                "{} exists and is not a socket: remove it or choose another --socket",
                socket.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!("{}: {e}", socket.display()),
        }
        let listener = UnixListener::bind(socket)
            .with_context(|| format!("cannot listen on {}", socket.display()))?;
        std::os::unix::fs::chown(socket, Some(0), Some(self.gid.as_raw()))?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
        Ok(listener)
    }

    /// The spool: root's, the group's to read (0750). What a killed service
    /// left is put right: temporaries of recordings that never began are
    /// removed, traces it left mid-recording (0600) become 0640 like the rest.
    fn prepare_spool(&self) -> anyhow::Result<()> {
        let spool = &self.config.spool;
        if std::fs::symlink_metadata(spool).is_ok_and(|m| !m.is_dir()) {
            bail!("the spool {} is not a directory", spool.display());
        }
        std::fs::create_dir_all(spool).with_context(|| format!("creating {}", spool.display()))?;
        std::os::unix::fs::chown(spool, Some(0), Some(self.gid.as_raw()))?;
        std::fs::set_permissions(spool, std::fs::Permissions::from_mode(0o750))?;
        for entry in std::fs::read_dir(spool)?.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            if name.starts_with('.') && name.ends_with(".partial") {
                let _ = std::fs::remove_file(&path);
            } else if is_trace_name(&name) {
                if let Ok(file) = open_trace(&path) {
                    let _ = self.share(&file);
                }
            }
        }
        Ok(())
    }

    /// Gives a trace to root and the group, 0640 (through the open file).
    fn share(&self, file: &File) -> std::io::Result<()> {
        std::os::unix::fs::fchown(file, Some(0), Some(self.gid.as_raw()))?;
        file.set_permissions(std::fs::Permissions::from_mode(0o640))
    }

    fn serve(&self, stream: UnixStream) {
        let peer = match peer_of(&stream) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("schedlens recorder: cannot read a caller's credentials: {e}");
                return;
            }
        };
        if !self.allowed(&peer) {
            eprintln!(
                "schedlens recorder: refused uid {} (pid {}): not on the allow list",
                peer.uid, peer.pid
            );
            let _ = reply_error(
                &stream,
                ErrorCode::NotAllowed,
                None,
                format!(
                    "uid {} may not use this recorder: it takes requests from root and members \
                     of {} (allow_users and allow_groups in recorder.toml)",
                    peer.uid,
                    self.config.allow_groups.join(", ")
                ),
            );
            return drain(stream);
        }
        let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
        // A client that stops reading is gone: its recording must not wait on it.
        let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
        let request = match protocol::read_frame(&mut &stream, MAX_REQUEST_BYTES) {
            Ok(Some(body)) => protocol::decode_request(&body).map_err(|e| e.0),
            Ok(None) => return,
            Err(e) => Err(format!("cannot read the request: {e}")),
        };
        let _ = stream.set_read_timeout(None);
        let reply = match request {
            Err(message) => {
                let _ = reply_error(&stream, ErrorCode::BadRequest, None, message);
                return drain(stream);
            }
            Ok(Request::Capabilities) => Response::Capabilities(self.capabilities()),
            Ok(Request::Status) => Response::Status(self.status()),
            Ok(Request::Cancel) => {
                let _ = reply_error(
                    &stream,
                    ErrorCode::BadRequest,
                    None,
                    "cancel stops the recording of its own connection; this one has none".into(),
                );
                return;
            }
            Ok(Request::Record(r)) => return self.record(stream, &peer, r),
            Ok(Request::Snapshot(r)) => return self.snapshot(stream, &peer, r),
        };
        let _ = protocol::write_frame(&mut &stream, &reply);
    }

    /// Root, a listed user, or a member (primary or supplementary) of a listed group.
    fn allowed(&self, peer: &Peer) -> bool {
        peer.uid.is_root()
            || self.allow_uids.contains(&peer.uid)
            || peer.gids.iter().any(|g| self.allow_gids.contains(g))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            groups: catalog::event_groups()
                .into_iter()
                .map(|g| EventGroup {
                    name: g.name.into(),
                    description: g.description.into(),
                    default: g.default,
                    events: g.events.into_iter().map(String::from).collect(),
                })
                .collect(),
            stacks: catalog::stack_kinds()
                .into_iter()
                .map(|s| StackKind {
                    name: s.name.into(),
                    description: s.description.into(),
                })
                .collect(),
            limits: self.config.limits(),
        }
    }

    fn status(&self) -> Status {
        let book = self.book();
        Status {
            recordings: book
                .active
                .iter()
                .map(|a| RecordingStatus {
                    id: a.id,
                    name: a.name.clone(),
                    uid: a.uid,
                    elapsed_ms: a.started.elapsed().as_millis() as u64,
                    duration_ms: a.duration.as_millis() as u64,
                    bytes: a
                        .flight
                        .as_ref()
                        .map_or_else(|| file_size(&a.path), |f| f.ring_bytes()),
                })
                .collect(),
            limits: self.config.limits(),
        }
    }

    /// The checks against what this recorder supports and its limits that
    /// need no bookkeeping; each refusal names its limit.
    fn check(&self, r: &RecordRequest) -> Result<u64, Refusal> {
        let config = &self.config;
        if Duration::from_millis(r.duration_ms) > config.max_duration {
            return Err((
                ErrorCode::Limit,
                Some("max_duration"),
                format!(
                    "a recording of {} is longer than this recorder's max_duration of {}",
                    humantime::format_duration(Duration::from_millis(r.duration_ms)),
                    humantime::format_duration(config.max_duration)
                ),
            ));
        }
        if let Some(window) = r.flight_window_ms.map(Duration::from_millis) {
            if window > config.max_duration {
                return Err((
                    ErrorCode::Limit,
                    Some("max_duration"),
                    format!(
                        "a flight window of {} is longer than this recorder's max_duration of {}",
                        humantime::format_duration(window),
                        humantime::format_duration(config.max_duration)
                    ),
                ));
            }
        }
        let cap = r.max_bytes.unwrap_or(config.max_bytes);
        if cap > config.max_bytes {
            return Err((
                ErrorCode::Limit,
                Some("max_bytes"),
                format!(
                    "max_bytes {cap} is over this recorder's max_bytes of {}",
                    config.max_bytes
                ),
            ));
        }
        let groups = catalog::event_groups();
        if let Some(unknown) = r
            .what
            .events
            .iter()
            .find(|e| !groups.iter().any(|g| g.name == *e))
        {
            let names: Vec<&str> = groups.iter().map(|g| g.name).collect();
            return Err((
                ErrorCode::BadRequest,
                None,
                format!(
                    "unknown event group {unknown:?}: this recorder records {}",
                    names.join(", ")
                ),
            ));
        }
        let stacks = catalog::stack_kinds();
        if let Some(unknown) = r
            .what
            .stacks
            .iter()
            .find(|s| !stacks.iter().any(|k| k.name == *s))
        {
            let names: Vec<&str> = stacks.iter().map(|k| k.name).collect();
            return Err((
                ErrorCode::BadRequest,
                None,
                format!(
                    "unknown stack kind {unknown:?}: this recorder supports {}",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            ));
        }
        Ok(cap)
    }

    /// Books a recording under the limits that depend on the others:
    /// concurrency, the caller's interval, room in the spool (made by
    /// deleting the oldest traces). Returns it with its trace's path.
    fn admit(
        &self,
        uid: u32,
        r: &RecordRequest,
        cap: u64,
    ) -> Result<(u64, String, PathBuf), Refusal> {
        let config = &self.config;
        let mut book = self.book();
        if book.active.len() >= config.max_concurrent as usize {
            return Err((
                ErrorCode::Limit,
                Some("max_concurrent"),
                format!(
                    "{} recording(s) already running, this recorder's max_concurrent; \
                     retry when recording_status shows none",
                    book.active.len()
                ),
            ));
        }
        if let Some(last) = book.last_start.get(&uid) {
            let since = last.elapsed();
            if since < config.min_interval {
                return Err((
                    ErrorCode::Limit,
                    Some("min_interval"),
                    format!(
                        "this recorder's min_interval is {} between one caller's recordings; \
                         retry in {:.1}s",
                        humantime::format_duration(config.min_interval),
                        (config.min_interval - since).as_secs_f64()
                    ),
                ));
            }
        }
        let reserved: u64 = book.active.iter().map(|a| a.reserved).sum();
        let busy: Vec<&Path> = book.active.iter().map(|a| a.path.as_path()).collect();
        if !self.make_room(reserved + cap, &busy) {
            return Err((
                ErrorCode::Limit,
                Some("spool_max_bytes"),
                format!(
                    "the spool cannot hold another trace of up to {cap} bytes within its \
                     spool_max_bytes of {} while the recordings running keep theirs",
                    config.spool_max_bytes
                ),
            ));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stamp: String = humantime::format_rfc3339_seconds(SystemTime::now())
            .to_string()
            .chars()
            .filter(|c| !matches!(c, '-' | ':'))
            .collect();
        let mut n = 0;
        let (name, path) = loop {
            let name = format!(
                "{stamp}-uid{uid}-{}{}.pftrace",
                id,
                if n == 0 {
                    String::new()
                } else {
                    format!(".{n}")
                }
            );
            let path = config.spool.join(&name);
            if std::fs::symlink_metadata(&path).is_err() {
                break (name, path);
            }
            n += 1;
        };
        book.last_start.insert(uid, Instant::now());
        book.active.push(Active {
            id,
            name: name.clone(),
            uid,
            path: path.clone(),
            started: Instant::now(),
            duration: Duration::from_millis(r.duration_ms),
            reserved: cap,
            flight: None,
        });
        Ok((id, name, path))
    }

    /// Deletes the oldest finished traces until `needed` more bytes fit in
    /// the spool; false if even an empty spool would not hold them. Only
    /// traces count and go: never a recording's temporary (`.NAME.partial`).
    fn make_room(&self, needed: u64, busy: &[&Path]) -> bool {
        let cap = self.config.spool_max_bytes;
        if needed > cap {
            return false;
        }
        let mut traces: Vec<(SystemTime, u64, PathBuf)> = std::fs::read_dir(&self.config.spool)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter(|e| is_trace_name(&e.file_name().to_string_lossy()))
            .filter(|e| !busy.contains(&e.path().as_path()))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        traces.sort();
        let mut total: u64 = traces.iter().map(|t| t.1).sum();
        for (_, len, path) in traces {
            if total + needed <= cap {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                eprintln!(
                    "schedlens recorder: deleted {} (spool_max_bytes)",
                    path.display()
                );
                total -= len;
            }
        }
        total + needed <= cap
    }

    fn finish(&self, id: u64) {
        self.book().active.retain(|a| a.id != id);
    }

    /// Runs one recording for the connection and hands it the trace.
    fn record(&self, stream: UnixStream, peer: &Peer, r: RecordRequest) {
        let refused = |(code, limit, message): Refusal| {
            eprintln!("schedlens recorder: uid {}: refused: {message}", peer.uid);
            let _ = reply_error(&stream, code, limit, message);
        };
        let cap = match self.check(&r) {
            Ok(cap) => cap,
            Err(refusal) => return refused(refusal),
        };
        let (id, name, path) = match self.admit(peer.uid.as_raw(), &r, cap) {
            Ok(booked) => booked,
            Err(refusal) => return refused(refusal),
        };
        let outcome = self.run_recording(&stream, &r, cap, id, &name, &path);
        self.finish(id);
        match outcome {
            Ok((finished, trace)) => {
                eprintln!(
                    "schedlens recorder: uid {}: {} ({:?}, {:.1}s, {} bytes)",
                    peer.uid,
                    finished.name,
                    finished.ended,
                    finished.elapsed_ms as f64 / 1e3,
                    finished.bytes
                );
                if finished.ended != Ending::Disconnected {
                    send_with_trace(&stream, &Response::Finished(finished), &trace);
                }
            }
            Err(message) => {
                eprintln!("schedlens recorder: uid {}: {name}: {message}", peer.uid);
                let _ = reply_error(&stream, ErrorCode::Failed, None, message);
            }
        }
        // Ends the thread waiting for a cancel.
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }

    fn run_recording(
        &self,
        stream: &UnixStream,
        r: &RecordRequest,
        cap: u64,
        id: u64,
        name: &str,
        path: &Path,
    ) -> Result<(Finished, File), String> {
        let mut child = self
            .spawn_recorder(r, cap, path)
            .map_err(|e| format!("cannot start the recorder: {e}"))?;
        let errors = collect_errors(&mut child);
        let flight = match (r.flight_window_ms, child.stdin.take(), child.stdout.take()) {
            (Some(_), Some(stdin), Some(stdout)) => {
                let control = Arc::new(FlightControl::new(stdin, stdout, cap));
                if let Some(a) = self.book().active.iter_mut().find(|a| a.id == id) {
                    a.flight = Some(Arc::clone(&control));
                }
                Some(control)
            }
            _ => None,
        };
        let stop = Arc::new(AtomicU8::new(Stop::No as u8));
        watch_for_cancel(stream, stop.clone());
        let duration = Duration::from_millis(r.duration_ms);
        let started = Instant::now();
        let _ = protocol::write_frame(
            &mut &*stream,
            &Response::Started {
                id,
                name: name.into(),
                duration_ms: r.duration_ms,
            },
        );
        let pid = Pid::from_raw(child.id() as i32);
        let mut stopping = false;
        let mut last_progress = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => return Err(format!("waiting for the recorder: {e}")),
            }
            // A flight recorder runs until the service stops it, after its
            // last snapshot (the trace `finished` hands over).
            let over = flight.is_some() && started.elapsed() >= duration;
            if let Some(control) = &flight {
                self.hand_over_triggered(stream, id, control, &stop);
            }
            if !stopping && (over || Stop::load(&stop) != Stop::No) {
                if let Some(control) = &flight {
                    self.final_snapshot(control, path);
                }
                let _ = kill(pid, Signal::SIGINT);
                stopping = true;
            }
            if started.elapsed() > duration + OVERRUN {
                let _ = kill(pid, Signal::SIGKILL);
            }
            if last_progress.elapsed() >= PROGRESS_EVERY && Stop::load(&stop) == Stop::No {
                let progress = Response::Progress {
                    elapsed_ms: started.elapsed().as_millis() as u64,
                    bytes: flight
                        .as_ref()
                        .map_or_else(|| file_size(path), |f| f.ring_bytes()),
                };
                if protocol::write_frame(&mut &*stream, &progress).is_err() {
                    stop.store(Stop::Disconnected as u8, Ordering::Release);
                }
                last_progress = Instant::now();
            }
            std::thread::sleep(TICK);
        };
        let error = errors.join().unwrap_or_default();
        let trace = match open_trace(path) {
            Ok(f) => f,
            Err(_) => {
                return Err(error.unwrap_or_else(|| {
                    format!("the recorder {status} before recording anything")
                }));
            }
        };
        if let Err(e) = self.share(&trace) {
            eprintln!("schedlens recorder: cannot share {}: {e}", path.display());
        }
        let bytes = trace.metadata().map_or(0, |m| m.len());
        let ended = match Stop::load(&stop) {
            Stop::Cancelled => Ending::Cancelled,
            Stop::Disconnected => Ending::Disconnected,
            Stop::No if !status.success() => Ending::Failed,
            Stop::No if flight.is_none() && bytes >= cap => Ending::MaxBytes,
            Stop::No => Ending::Duration,
        };
        let message = (ended == Ending::Failed)
            .then(|| error.unwrap_or_else(|| format!("the recorder {status}")));
        Ok((
            Finished {
                name: name.into(),
                ended,
                elapsed_ms: started.elapsed().as_millis() as u64,
                bytes,
                message,
            },
            trace,
        ))
    }

    /// Shares the snapshots the recording's trigger took and hands each to
    /// its client, making room for it in the spool like for any trace.
    fn hand_over_triggered(
        &self,
        stream: &UnixStream,
        id: u64,
        control: &FlightControl,
        stop: &AtomicU8,
    ) {
        while let Some(snap) = control.triggered(&self.config.spool) {
            let (path, fired) = match snap {
                Ok(snap) => snap,
                Err(e) => {
                    eprintln!("schedlens recorder: recording {id}: trigger snapshot: {e}");
                    continue;
                }
            };
            let file = match open_trace(&path) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("schedlens recorder: {}: {e}", path.display());
                    continue;
                }
            };
            if let Err(e) = self.share(&file) {
                eprintln!("schedlens recorder: cannot share {}: {e}", path.display());
            }
            let bytes = file.metadata().map_or(0, |m| m.len());
            let (reserved, mut busy) = {
                let book = self.book();
                let busy: Vec<PathBuf> = book.active.iter().map(|a| a.path.clone()).collect();
                (book.active.iter().map(|a| a.reserved).sum::<u64>(), busy)
            };
            busy.push(path.clone());
            let busy: Vec<&Path> = busy.iter().map(PathBuf::as_path).collect();
            if !self.make_room(reserved + bytes, &busy) {
                eprintln!(
                    "schedlens recorder: {}: the spool is over its spool_max_bytes",
                    path.display()
                );
            }
            let name = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            eprintln!(
                "schedlens recorder: recording {id}: trigger snapshot {name} \
                 (pid {} waited {:.3} ms, {bytes} bytes)",
                fired.pid,
                fired.latency_ns as f64 / 1e6
            );
            if Stop::load(stop) != Stop::Disconnected {
                let snapshot = Response::Snapshot {
                    id,
                    name,
                    bytes,
                    trigger: Some(fired),
                };
                send_with_trace(stream, &snapshot, &file);
            }
        }
    }

    /// A flight recording's last snapshot, put at the name `started` gave.
    fn final_snapshot(&self, control: &FlightControl, path: &Path) {
        let result = control
            .snapshot(&self.config.spool)
            .and_then(|snap| std::fs::rename(&snap, path).map_err(|e| e.to_string()));
        if let Err(e) = result {
            eprintln!(
                "schedlens recorder: {}: the last snapshot failed: {e}",
                path.display()
            );
        }
    }

    /// A snapshot of one of the caller's flight recordings (root: anyone's).
    fn snapshot(&self, stream: UnixStream, peer: &Peer, r: SnapshotRequest) {
        let refused = |(code, limit, message): Refusal| {
            eprintln!("schedlens recorder: uid {}: refused: {message}", peer.uid);
            let _ = reply_error(&stream, code, limit, message);
        };
        let (id, control, busy) = {
            let book = self.book();
            let mine: Vec<&Active> = book
                .active
                .iter()
                .filter(|a| a.flight.is_some())
                .filter(|a| peer.uid.is_root() || a.uid == peer.uid.as_raw())
                .filter(|a| r.id.is_none_or(|id| id == a.id))
                .collect();
            let chosen = match mine.as_slice() {
                [one] => *one,
                [] => {
                    return refused((
                        ErrorCode::BadRequest,
                        None,
                        match r.id {
                            Some(id) => format!("no flight recording {id} of yours is running"),
                            None => "no flight recording of yours is running: start one with \
                                     record and flight_window_ms"
                                .into(),
                        },
                    ));
                }
                several => {
                    let ids: Vec<String> = several.iter().map(|a| a.id.to_string()).collect();
                    return refused((
                        ErrorCode::BadRequest,
                        None,
                        format!(
                            "several flight recordings run ({}): name one by id",
                            ids.join(", ")
                        ),
                    ));
                }
            };
            let busy: Vec<PathBuf> = book.active.iter().map(|a| a.path.clone()).collect();
            (chosen.id, chosen.flight.clone(), busy)
        };
        let Some(control) = control else { return };
        let reserved: u64 = self.book().active.iter().map(|a| a.reserved).sum();
        let busy: Vec<&Path> = busy.iter().map(PathBuf::as_path).collect();
        if !self.make_room(reserved + control.cap, &busy) {
            return refused((
                ErrorCode::Limit,
                Some("spool_max_bytes"),
                format!(
                    "the spool cannot hold a snapshot of up to {} bytes within its                      spool_max_bytes of {}",
                    control.cap, self.config.spool_max_bytes
                ),
            ));
        }
        let trace = control.snapshot(&self.config.spool).and_then(|path| {
            let file = open_trace(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if let Err(e) = self.share(&file) {
                eprintln!("schedlens recorder: cannot share {}: {e}", path.display());
            }
            Ok((path, file))
        });
        match trace {
            Ok((path, file)) => {
                let name = path
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                let bytes = file.metadata().map_or(0, |m| m.len());
                eprintln!(
                    "schedlens recorder: uid {}: snapshot {name} of recording {id} ({bytes} bytes)",
                    peer.uid
                );
                let snapshot = Response::Snapshot {
                    id,
                    name,
                    bytes,
                    trigger: None,
                };
                send_with_trace(&stream, &snapshot, &file);
            }
            Err(message) => {
                eprintln!("schedlens recorder: uid {}: snapshot: {message}", peer.uid);
                let _ = reply_error(&stream, ErrorCode::Failed, None, message);
            }
        }
    }

    /// `schedlens trace` for the request, writing `path` (a flight
    /// recording: its snapshots into the spool, asked for on its stdin).
    fn spawn_recorder(&self, r: &RecordRequest, cap: u64, path: &Path) -> std::io::Result<Child> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("trace");
        match r.flight_window_ms {
            Some(window) => cmd
                .arg("--flight")
                .arg(format!("{window}ms"))
                .arg("--flight-control")
                .arg("--output")
                .arg(&self.config.spool),
            None => cmd
                .arg("--duration")
                .arg(format!("{}ms", r.duration_ms))
                .arg("--output")
                .arg(path),
        };
        cmd.arg("--max-bytes").arg(cap.to_string());
        let w = &r.what;
        for (flag, ids) in [("--pid", &w.pids), ("--tgid", &w.tgids)] {
            for id in ids {
                cmd.arg(flag).arg(id.to_string());
            }
        }
        for comm in &w.comms {
            cmd.arg("--comm").arg(comm);
        }
        // Checked against the catalog when the request was accepted.
        for (flag, names) in [("--events", &w.events), ("--stacks", &w.stacks)] {
            if !names.is_empty() {
                cmd.arg(flag).arg(names.join(","));
            }
        }
        // Checked by the protocol: only with --flight.
        let t = &r.trigger;
        if let Some(spec) = t.spec {
            cmd.arg("--trigger").arg(spec.to_string());
        }
        if let Some(pid) = t.pid {
            cmd.arg("--trigger-pid").arg(pid.to_string());
        }
        if let Some(comm) = &t.comm {
            cmd.arg("--trigger-comm").arg(comm);
        }
        // A service's environment has no sudo user; an inherited one must
        // not make the trace someone else's.
        for var in ["SUDO_UID", "SUDO_GID", "SUDO_USER"] {
            cmd.env_remove(var);
        }
        let control = || {
            if r.flight_window_ms.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            }
        };
        cmd.stdin(control())
            .stdout(control())
            .stderr(Stdio::piped());
        // SAFETY: between fork and exec only async-signal-safe calls: prctl
        // and getppid. If the service has died already, stop at once.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 || libc::getppid() == 1 {
                    return Err(std::io::Error::other("the service is gone"));
                }
                Ok(())
            });
        }
        cmd.spawn()
    }
}

/// The recorder child's last error line (`schedlens: ...`), read off its stderr.
fn collect_errors(child: &mut Child) -> std::thread::JoinHandle<Option<String>> {
    let stderr = child.stderr.take();
    std::thread::spawn(move || {
        let mut last = None;
        for line in BufReader::new(stderr?).lines().map_while(Result::ok) {
            if let Some(e) = line.strip_prefix("schedlens: ") {
                last = Some(e.chars().take(500).collect());
            }
        }
        last
    })
}

/// After `record`, the one frame a client may send is `cancel`; that,
/// anything else, or closing its end stops the recording.
fn watch_for_cancel(stream: &UnixStream, stop: Arc<AtomicU8>) {
    let Ok(mut reader) = stream.try_clone() else {
        return;
    };
    std::thread::spawn(move || {
        let why = match protocol::read_frame(&mut reader, MAX_REQUEST_BYTES) {
            Ok(Some(body)) if protocol::decode_request(&body) == Ok(Request::Cancel) => {
                Stop::Cancelled
            }
            Ok(Some(_)) => Stop::Cancelled,
            _ => Stop::Disconnected,
        };
        let _ = stop.compare_exchange(
            Stop::No as u8,
            why as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    });
}

fn reply_error(
    stream: &UnixStream,
    code: ErrorCode,
    limit: Option<&str>,
    message: String,
) -> std::io::Result<()> {
    protocol::write_frame(
        &mut &*stream,
        &Response::Error(ErrorReply {
            code,
            limit: limit.map(String::from),
            message,
        }),
    )
}

/// Reads (a little of) what a refused client still sends before closing: a
/// socket closed with unread data resets, and the client would lose the error.
fn drain(stream: UnixStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = std::io::copy(&mut (&stream).take(1 << 20), &mut std::io::sink());
}

/// A trace of the spool, opened without following a link or blocking.
fn open_trace(path: &Path) -> std::io::Result<File> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// Sends `response` with `trace`'s descriptor as its ancillary data.
fn send_with_trace(stream: &UnixStream, response: &Response, trace: &File) {
    let frame = protocol::encode_frame(response);
    let fds = [trace.as_raw_fd()];
    let _ = sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(&frame)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    );
}

/// A trace's name in the spool (not a temporary, which starts with a dot).
pub(super) fn is_trace_name(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(".pftrace")
}

fn file_size(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).map_or(0, |m| m.len())
}

/// The caller's uid, pid and groups as the kernel recorded them at connect.
fn peer_of(stream: &UnixStream) -> std::io::Result<Peer> {
    let cred = nix::sys::socket::getsockopt(stream, sockopt::PeerCredentials)?;
    let mut gids = peer_groups(stream.as_fd())?;
    gids.push(Gid::from_raw(cred.gid()));
    Ok(Peer {
        uid: Uid::from_raw(cred.uid()),
        pid: cred.pid(),
        gids,
    })
}

/// SO_PEERGROUPS: the caller's supplementary groups (nix has no wrapper).
fn peer_groups(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<Vec<Gid>> {
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut len = (groups.len() * size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the buffer holds `len` bytes and outlives the call.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return Ok(groups.into_iter().map(Gid::from_raw).collect());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && n > groups.len() {
            groups.resize(n, 0);
            continue;
        }
        return Err(e);
    }
}

/// The listening socket systemd passed (LISTEN_FDS=1 for this pid), if any.
fn systemd_listener() -> Option<UnixListener> {
    let ours = std::env::var("LISTEN_PID").ok()?.parse::<u32>().ok()? == std::process::id();
    if !ours || std::env::var("LISTEN_FDS").ok()? != "1" {
        return None;
    }
    // SAFETY: systemd passes the listening socket as fd 3 (SD_LISTEN_FDS_START)
    // and nothing else in this process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(3) };
    Some(UnixListener::from(fd))
}

fn lookup_group(name: &str) -> anyhow::Result<Gid> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(Gid::from_raw(gid));
    }
    Group::from_name(name)?
        .map(|g| g.gid)
        .context("no such group")
}

fn lookup_user(name: &str) -> anyhow::Result<Uid> {
    if let Ok(uid) = name.parse::<u32>() {
        return Ok(Uid::from_raw(uid));
    }
    User::from_name(name)?
        .map(|u| u.uid)
        .context("no such user")
}
