//! The client side of the protocol: what `schedlens analyze --recorder` uses.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

use super::protocol::{self, MAX_RESPONSE_BYTES, Request, Response};

/// One connection to the service: one request, then its responses.
pub struct Connection {
    stream: UnixStream,
    socket: PathBuf,
    /// Bytes received and not yet taken as a frame.
    pending: Vec<u8>,
    /// Descriptors that came with them (the trace of a `finished` frame).
    fds: Vec<OwnedFd>,
}

impl Connection {
    /// Connects to the service at `socket`, with errors that say what to do.
    pub fn connect(socket: &Path) -> anyhow::Result<Connection> {
        let stream = UnixStream::connect(socket).map_err(|e| {
            let shown = socket.display();
            match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => anyhow::anyhow!(
                    "no recorder service listens on {shown}: start it with \
                     `sudo schedlens recorder` or `systemctl start schedlens-recorder.socket`"
                ),
                io::ErrorKind::PermissionDenied => anyhow::anyhow!(
                    "permission denied on {shown}: the recorder takes requests from members of \
                     its group (schedlens by default); ask an administrator to add you \
                     (usermod -aG schedlens USER), then log in again"
                ),
                _ => anyhow::anyhow!("cannot connect to the recorder at {shown}: {e}"),
            }
        })?;
        Ok(Connection {
            stream,
            socket: socket.to_path_buf(),
            pending: Vec::new(),
            fds: Vec::new(),
        })
    }

    /// Sends the request. A service that refused the caller before reading
    /// it may have closed its end already: its refusal is the error then.
    pub fn send(&mut self, request: &Request) -> anyhow::Result<()> {
        let Err(e) = protocol::write_frame(&mut self.stream, request) else {
            return Ok(());
        };
        if let Ok((Response::Error(refusal), _)) = self.recv() {
            anyhow::bail!("the recorder refused: {}", refusal.message);
        }
        anyhow::bail!("the recorder at {} went away: {e}", self.socket.display())
    }

    /// A second handle on the connection, to send `cancel` while another
    /// thread waits in [`Connection::recv`].
    pub fn try_clone_stream(&self) -> io::Result<UnixStream> {
        self.stream.try_clone()
    }

    /// The next response, and the descriptor that came with it (a trace).
    pub fn recv(&mut self) -> anyhow::Result<(Response, Option<OwnedFd>)> {
        let socket = self.socket.clone();
        let gone = |what: &str| {
            anyhow::anyhow!(
                "the recorder at {} {what} (see its log: journalctl -u schedlens-recorder)",
                socket.display()
            )
        };
        self.fill(4).map_err(|_| gone("closed the connection"))?;
        let len = u32::from_be_bytes(self.pending[..4].try_into().unwrap_or_default());
        if len > MAX_RESPONSE_BYTES {
            return Err(gone("sent an oversized frame"));
        }
        let end = 4 + len as usize;
        self.fill(end)
            .map_err(|_| gone("closed the connection mid-frame"))?;
        let response = protocol::decode_response(&self.pending[4..end])
            .map_err(|e| anyhow::anyhow!("bad frame from the recorder: {e}"))?;
        self.pending.drain(..end);
        // Only these frames carry a descriptor. One read may hold frames
        // before it too (progress the client had not read yet): the
        // descriptor is theirs only by arrival, not by meaning.
        let carries_fd = matches!(response, Response::Finished(_) | Response::Snapshot { .. });
        let fd = (carries_fd && !self.fds.is_empty()).then(|| self.fds.remove(0));
        Ok((response, fd))
    }

    /// Receives until `n` bytes are pending, keeping the descriptors that arrive.
    fn fill(&mut self, n: usize) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        while self.pending.len() < n {
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<()>(
                self.stream.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(io::Error::from)?;
            let got = msg.bytes;
            for cmsg in msg.cmsgs().map_err(io::Error::from)? {
                if let ControlMessageOwned::ScmRights(fds) = cmsg {
                    // SAFETY: the kernel just installed these descriptors in
                    // this process for us; nothing else owns them.
                    self.fds.extend(
                        fds.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            if got == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.pending.extend_from_slice(&buf[..got]);
        }
        Ok(())
    }
}

/// `schedlens recorder snapshot`: asks the service for a snapshot of a
/// flight recording and reports (and with -o copies) the trace it hands over.
pub fn snapshot(args: super::config::SnapshotArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut conn = Connection::connect(&args.socket)?;
    conn.send(&Request::Snapshot(protocol::SnapshotRequest {
        id: args.id,
    }))?;
    let (id, name, bytes, fd) = match conn.recv()? {
        (
            Response::Snapshot {
                id, name, bytes, ..
            },
            Some(fd),
        ) => (id, name, bytes, fd),
        (Response::Error(e), _) => anyhow::bail!("the recorder refused: {}", e.message),
        (other, _) => anyhow::bail!("the recorder answered {other:?}, not a snapshot"),
    };
    eprintln!("snapshot {name} of flight recording {id} ({bytes} bytes) in the spool");
    if let Some(out) = &args.output {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        let mut trace = std::fs::File::from(fd);
        io::copy(&mut trace, &mut file).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("copied to {}", out.display());
    }
    Ok(())
}
