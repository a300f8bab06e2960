//! Writes schedlens traces: per-CPU FtraceEventBundles with CompactSched,
//! chunked compression, preamble and epilogue packets.
//!
//! The file is always a Perfetto protobuf stream of `Trace.packet` records.
//! With zstd each chunk of records becomes one TracePacket whose
//! `zstd_compressed_packets` holds one zstd frame, appended with a single
//! write, so a killed recorder loses at most the chunk being written.
//!
//! The output is created as a new file (exclusively, mode 0600, under an
//! unpredictable name in the target directory) and renamed to its name by
//! [`TraceWriter::publish`]: root writing a trace never follows a link
//! planted at the name, never truncates or chmods a file it did not create,
//! and never replaces anything but a regular file.

mod encoder;
mod ring;

pub use encoder::{EncoderStats, ShardEncoder};
pub use ring::{FlightRing, RingStats};

use crate::perfetto::proto::TracePacket;
use crate::perfetto::proto::fields::{trace, trace_packet};
use crate::perfetto::wire;
use anyhow::Context as _;
use prost::Message as _;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// How the trace file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Compression {
    /// Chunks of packets in TracePacket.zstd_compressed_packets (Perfetto v58+).
    #[default]
    Zstd,
    /// Whole-file gzip, for older Perfetto viewers.
    Gzip,
    /// Plain protobuf.
    None,
}

/// zstd level for chunks. Measured with tests/writer.rs `bench_switch_stream`
/// (5M events, 70% switches, random 0.2-3.2 us gaps, 2-core shared VM):
/// encode alone 38 ns/event at 7.7 B/event; level 1 +13 ns -> 5.0 B/event;
/// level 3 +33 ns -> 4.55 B/event; levels 5-9 +60..95 ns for 4.5 B/event.
/// Level 3 is the knee.
pub const ZSTD_LEVEL: i32 = 3;

/// The recorder's packet sequence ids, allotted here so that none is given
/// twice: shard n's ftrace bundles are on `SHARD_SEQUENCE_BASE + n` (their
/// interned kernel symbols), a stack kind's samples on
/// `STACK_SEQUENCE_BASE` plus the kind's bit; the other packets carry none.
pub const STACK_SEQUENCE_BASE: u32 = 0x5c00;
pub const SHARD_SEQUENCE_BASE: u32 = 0x5d00;

/// gzip is the fallback for old viewers; a low level keeps it cheap enough to
/// run under the file lock.
const GZIP_LEVEL: u32 = 3;

/// Upper bound for the uncompressed payload of one chunk: Perfetto's readers
/// expect compressed packets to expand to at most this.
pub const MAX_CHUNK_BYTES: usize = 512 * 1024;

/// The output file, shared by the consumer threads.
pub struct TraceWriter {
    path: PathBuf,
    /// Where the file is until it is published under `path`.
    unpublished: Mutex<Option<PathBuf>>,
    /// The file itself, for what must not go through its name (a cut,
    /// chown); none for a flight recorder's ring.
    handle: Option<File>,
    compression: Compression,
    zstd_level: i32,
    sink: Mutex<Sink>,
    bytes: AtomicU64,
}

enum Sink {
    Plain(File),
    Gzip(flate2::write::GzEncoder<CountingFile>),
    /// The flight recorder: chunks stay in memory, the oldest dropped.
    Ring(FlightRing),
    Closed,
}

/// gzip writes through this so `bytes_written` sees compressed bytes as they
/// reach the file.
struct CountingFile {
    file: File,
    written: u64,
}

impl Write for CountingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A shard's reusable compression state: the zstd context and output buffers
/// live as long as the shard so chunks allocate nothing.
#[derive(Default)]
pub(crate) struct ChunkScratch {
    zstd: Option<zstd::bulk::Compressor<'static>>,
    frame: Vec<u8>,
    out: Vec<u8>,
}

impl TraceWriter {
    /// Creates the trace that [`publish`](Self::publish) (or
    /// [`finish`](Self::finish)) puts at `path`, with mode 0600; fails before
    /// anything else if it cannot, or if `path` is something other than a
    /// regular file (a link, a device, a directory).
    pub fn create(path: &Path, compression: Compression) -> anyhow::Result<TraceWriter> {
        Self::create_with_level(path, compression, ZSTD_LEVEL)
    }

    /// Like [`TraceWriter::create`] with an explicit zstd level (ignored for
    /// the other compressions).
    pub fn create_with_level(
        path: &Path,
        compression: Compression,
        zstd_level: i32,
    ) -> anyhow::Result<TraceWriter> {
        use std::os::unix::fs::PermissionsExt as _;
        refuse_non_regular(path)?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .with_context(|| format!("{} names no file", path.display()))?
            .to_string_lossy();
        let (file, temporary) = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)
            .and_then(|t| t.keep().map_err(|e| e.error))
            .with_context(|| format!("cannot create trace file {}", path.display()))?;
        let handle = file
            .try_clone()
            .with_context(|| format!("cannot create trace file {}", path.display()))?;
        let sink = match compression {
            Compression::Gzip => Sink::Gzip(flate2::write::GzEncoder::new(
                CountingFile { file, written: 0 },
                flate2::Compression::new(GZIP_LEVEL),
            )),
            Compression::Zstd | Compression::None => Sink::Plain(file),
        };
        Ok(TraceWriter {
            path: path.to_path_buf(),
            unpublished: Mutex::new(Some(temporary)),
            handle: Some(handle),
            compression,
            zstd_level,
            sink: Mutex::new(sink),
            bytes: AtomicU64::new(0),
        })
    }

    /// A writer whose zstd chunks go into `ring` instead of a file (the
    /// flight recorder); `dir` is where its snapshots go, for messages.
    pub fn flight(dir: &Path, ring: FlightRing) -> TraceWriter {
        TraceWriter {
            path: dir.to_path_buf(),
            unpublished: Mutex::new(None),
            handle: None,
            compression: Compression::Zstd,
            zstd_level: ZSTD_LEVEL,
            sink: Mutex::new(Sink::Ring(ring)),
            bytes: AtomicU64::new(0),
        }
    }

    /// The ring's chunks now, oldest first, after dropping those older than
    /// the window, and its accounting; None unless this is a flight writer.
    pub fn ring_chunks(&self) -> Option<(Vec<std::sync::Arc<[u8]>>, RingStats)> {
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *sink {
            Sink::Ring(ring) => {
                ring.evict(crate::recorder::snapshot::boottime_ns());
                Some((ring.chunks(), ring.stats()))
            }
            _ => None,
        }
    }

    /// The ring's accounting; None unless this is a flight writer.
    pub fn ring_stats(&self) -> Option<RingStats> {
        match &*self.sink.lock().unwrap_or_else(|e| e.into_inner()) {
            Sink::Ring(ring) => Some(ring.stats()),
            _ => None,
        }
    }

    /// Puts the file at its name (replacing a regular file there): from now
    /// on a killed writer leaves it there, readable up to its last chunk.
    /// Until then whatever was at the name stays as it was.
    pub fn publish(&self) -> anyhow::Result<()> {
        let mut unpublished = self.unpublished.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(temporary) = unpublished.as_ref() {
            refuse_non_regular(&self.path)?;
            std::fs::rename(temporary, &self.path)
                .with_context(|| format!("cannot create trace file {}", self.path.display()))?;
            *unpublished = None;
        }
        Ok(())
    }

    /// Gives the file to `uid`/`gid` (through the open file, not its name).
    pub fn chown(&self, uid: u32, gid: u32) -> std::io::Result<()> {
        match &self.handle {
            Some(f) => std::os::unix::fs::fchown(f, Some(uid), Some(gid)),
            None => Ok(()),
        }
    }

    /// Cuts the file to its first `len` bytes (through the open file).
    pub fn truncate(&self, len: u64) -> std::io::Result<()> {
        match &self.handle {
            Some(f) => f.set_len(len),
            None => Ok(()),
        }
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends complete packets (preamble, epilogue); callable from any thread.
    pub fn write_packets(&self, packets: &[TracePacket]) -> anyhow::Result<()> {
        let mut payload = Vec::new();
        for p in packets {
            wire::put_tag(&mut payload, trace::PACKET, wire::WIRE_LEN);
            p.encode_length_delimited(&mut payload)
                .context("encoding a trace packet")?;
        }
        // Chunks keep the documented size bound for readers, also here.
        let mut scratch = ChunkScratch::default();
        let mut start = 0;
        let mut chunk_end = 0;
        let mut rest = payload.as_slice();
        while !rest.is_empty() {
            let len = record_len(rest).context("re-reading an encoded packet")?;
            if chunk_end - start + len > MAX_CHUNK_BYTES && chunk_end > start {
                self.append_chunk(&payload[start..chunk_end], &mut scratch)?;
                start = chunk_end;
            }
            chunk_end += len;
            rest = &rest[len..];
        }
        if chunk_end > start {
            self.append_chunk(&payload[start..chunk_end], &mut scratch)?;
        }
        Ok(())
    }

    /// Appends `payload`, a sequence of complete `Trace.packet` records, as
    /// one chunk. zstd compresses here, outside the lock; only the append is
    /// serialized. Returns the bytes this chunk added to the file.
    pub(crate) fn append_chunk(
        &self,
        payload: &[u8],
        scratch: &mut ChunkScratch,
    ) -> anyhow::Result<u64> {
        if payload.is_empty() {
            return Ok(0);
        }
        let data: &[u8] = if self.compression == Compression::Zstd {
            self.zstd_chunk(payload, scratch)?;
            &scratch.out
        } else {
            payload
        };
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        let added = match &mut *sink {
            Sink::Plain(f) => {
                f.write_all(data)
                    .with_context(|| format!("writing {}", self.path.display()))?;
                data.len() as u64
            }
            Sink::Gzip(gz) => {
                let before = gz.get_ref().written;
                gz.write_all(data)
                    .and_then(|()| gz.flush())
                    .with_context(|| format!("writing {}", self.path.display()))?;
                gz.get_ref().written - before
            }
            Sink::Ring(ring) => {
                ring.push(data, crate::recorder::snapshot::boottime_ns());
                data.len() as u64
            }
            Sink::Closed => anyhow::bail!("trace file {} is already finished", self.path.display()),
        };
        self.bytes.fetch_add(added, Ordering::Relaxed);
        Ok(added)
    }

    fn zstd_chunk(&self, payload: &[u8], scratch: &mut ChunkScratch) -> anyhow::Result<()> {
        let z = match &mut scratch.zstd {
            Some(z) => z,
            slot @ None => slot.insert(
                zstd::bulk::Compressor::new(self.zstd_level).context("creating a zstd context")?,
            ),
        };
        scratch.frame.clear();
        scratch
            .frame
            .reserve(zstd::zstd_safe::compress_bound(payload.len()));
        z.compress_to_buffer(payload, &mut scratch.frame)
            .context("zstd compression of a chunk")?;
        let frame_len = scratch.frame.len() as u64;
        let field = trace_packet::ZSTD_COMPRESSED_PACKETS;
        let packet_len = wire::tag_len(field) + wire::varint_len(frame_len) + scratch.frame.len();
        let out = &mut scratch.out;
        out.clear();
        wire::put_tag(out, trace::PACKET, wire::WIRE_LEN);
        wire::put_varint(out, packet_len as u64);
        wire::put_tag(out, field, wire::WIRE_LEN);
        wire::put_varint(out, frame_len);
        out.extend_from_slice(&scratch.frame);
        Ok(())
    }

    /// Bytes written to the file so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Flushes and closes the file; returns its size. Later writes fail.
    pub fn finish(&self) -> anyhow::Result<u64> {
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        // A ring stays for its snapshots and accounting; nothing is written.
        if matches!(*sink, Sink::Ring(_)) {
            return Ok(self.bytes_written());
        }
        let file = match std::mem::replace(&mut *sink, Sink::Closed) {
            Sink::Plain(f) => f,
            Sink::Gzip(gz) => {
                let before = gz.get_ref().written;
                let counting = gz
                    .finish()
                    .with_context(|| format!("finishing gzip stream of {}", self.path.display()))?;
                self.bytes
                    .fetch_add(counting.written - before, Ordering::Relaxed);
                counting.file
            }
            Sink::Ring(_) | Sink::Closed => return Ok(self.bytes_written()),
        };
        file.sync_all()
            .with_context(|| format!("syncing {}", self.path.display()))?;
        self.publish()?;
        Ok(self.bytes_written())
    }
}

impl Drop for TraceWriter {
    /// A trace never published (its recording never started) is removed.
    fn drop(&mut self) {
        let unpublished = self
            .unpublished
            .get_mut()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(temporary) = unpublished.take() {
            let _ = std::fs::remove_file(temporary);
        }
    }
}

/// Fails if `path` exists as anything but a regular file: a trace replaces
/// an old trace, never a link (nor what it points to), a device or a directory.
fn refuse_non_regular(path: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => anyhow::bail!(
            "cannot create trace file {}: it exists and is not a regular file ({}); choose \
             another path",
            path.display(),
            if m.file_type().is_symlink() {
                "a symbolic link"
            } else if m.is_dir() {
                "a directory"
            } else {
                "a device, FIFO or socket"
            }
        ),
        _ => Ok(()),
    }
}

/// Length of the `Trace.packet` record at the start of `buf` (tag, length, body).
fn record_len(buf: &[u8]) -> Option<usize> {
    let mut len = 0u64;
    for (i, &b) in buf.iter().enumerate().skip(1).take(10) {
        len |= u64::from(b & 0x7f) << (7 * (i - 1));
        if b & 0x80 == 0 {
            let total = i + 1 + usize::try_from(len).ok()?;
            return (total <= buf.len()).then_some(total);
        }
    }
    None
}
