//! Reads any Perfetto trace file: sniffs plain / gzip / zstd, and yields
//! TracePackets, expanding compressed_packets (zlib) and zstd_compressed_packets.
//!
//! Memory stays bounded: the file is streamed through a buffered decompressor
//! and only one packet (or one decompressed container of packets) is held at a
//! time. A cut-off file yields every complete packet and then reports where it
//! stopped ([`TraceReader::truncation`]); framing that is not protobuf is an
//! error naming the packet index and byte offset.
//!
//! Work stays bounded by the file's size: compressed data may expand at most
//! [`MAX_EXPANSION`] times (past a small allowance), so a few megabytes of
//! zstd or gzip cannot stand for hours of decompression. Real traces expand
//! about 6 times (sched data, measured on our recordings with zstd -19 and
//! gzip -9 alike).

use crate::perfetto::wire::{self, Fields, Value};
use anyhow::{Context, bail};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Largest TracePacket accepted. Perfetto's own writers keep packets far below
/// this (chunks are at most a few hundred KB); anything larger is corruption.
pub const MAX_PACKET_SIZE: usize = 64 << 20;
/// Largest decompressed compressed_packets / zstd_compressed_packets container.
/// Perfetto's writers keep them under 512 KB.
pub const MAX_CONTAINER_SIZE: usize = 64 << 20;
/// Most times compressed data may expand, past [`EXPANSION_ALLOWANCE`]:
/// far above real traces (about 6), far below a decompression bomb (zstd
/// turns 32 KB into 1 GiB of zeros; gzip expands up to 1032 times).
pub const MAX_EXPANSION: u64 = 100;
/// Decompressed bytes always allowed, whatever the ratio: a whole file's and
/// a container's.
const EXPANSION_ALLOWANCE: u64 = 64 << 20;
const CONTAINER_EXPANSION_ALLOWANCE: u64 = 1 << 20;

/// TracePacket fields that hold further packets.
const COMPRESSED_PACKETS: u32 = 50;
const ZSTD_COMPRESSED_PACKETS: u32 = 133;

/// How the file as a whole is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileCompression {
    Plain,
    Gzip,
    Zstd,
}

/// Where and why reading stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// Offset (in the decompressed stream) of the first incomplete packet.
    pub offset: u64,
    pub reason: String,
}

/// One packet as read from the file.
#[derive(Debug, Clone, Copy)]
pub struct PacketRef<'a> {
    /// Index of the top-level packet in the file (a compressed container's
    /// packets share their container's index).
    pub index: u64,
    /// Byte offset of that top-level packet in the decompressed stream.
    pub offset: u64,
    /// The TracePacket's encoded bytes.
    pub data: &'a [u8],
}

/// Counters about the file's framing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Top-level Trace.packet records read.
    pub top_level_packets: u64,
    /// Containers expanded (compressed_packets + zstd_compressed_packets).
    pub containers: u64,
    /// Packets yielded, including those inside containers.
    pub packets: u64,
    /// Top-level Trace fields other than `packet`, skipped.
    pub skipped_fields: u64,
}

struct Container {
    data: Vec<u8>,
    pos: usize,
    index: u64,
    offset: u64,
}

/// Streams the packets of one trace file.
pub struct TraceReader {
    input: Box<dyn BufRead + Send>,
    compression: FileCompression,
    file_size: u64,
    file_bytes: Arc<AtomicU64>,
    /// Offset in the decompressed stream.
    offset: u64,
    buf: Vec<u8>,
    container: Option<Container>,
    truncation: Option<Truncation>,
    done: bool,
    stats: ReaderStats,
    /// Set from another thread to stop reading (an MCP client's cancel).
    cancel: Option<Arc<AtomicBool>>,
    name: String,
}

/// Counts the bytes pulled from the input, for progress reporting.
struct CountingReader<R> {
    input: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.input.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

const BUF_SIZE: usize = 1 << 20;

impl TraceReader {
    /// Opens `path` and checks that it looks like a Perfetto trace. Errors are
    /// one line: empty file, not a Perfetto trace, unreadable.
    pub fn open(path: &Path) -> anyhow::Result<TraceReader> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let file_size = file.metadata().map(|m| m.len()).unwrap_or(0);
        TraceReader::from_reader(file, file_size, &path.display().to_string())
    }

    /// Reads a trace from any byte stream (a file, or bytes in memory for
    /// fuzzing and tests). `size` is only for progress reporting; `name` is
    /// what errors call the input.
    pub fn from_reader(
        input: impl Read + Send + 'static,
        size: u64,
        name: &str,
    ) -> anyhow::Result<TraceReader> {
        let file_bytes = Arc::new(AtomicU64::new(0));
        let mut raw = BufReader::with_capacity(
            BUF_SIZE,
            CountingReader {
                input,
                count: file_bytes.clone(),
            },
        );
        let head = raw
            .fill_buf()
            .with_context(|| format!("cannot read {name}"))?
            .to_vec();
        if head.is_empty() {
            bail!("{name} is empty, not a Perfetto trace");
        }
        let (compression, input): (FileCompression, Box<dyn BufRead + Send>) =
            if head.starts_with(&[0x1f, 0x8b]) {
                let d = flate2::read::MultiGzDecoder::new(raw);
                (
                    FileCompression::Gzip,
                    Box::new(BufReader::with_capacity(BUF_SIZE, d)),
                )
            } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                let d = zstd::stream::read::Decoder::with_buffer(raw)
                    .with_context(|| format!("cannot start zstd decoding of {name}"))?;
                (
                    FileCompression::Zstd,
                    Box::new(BufReader::with_capacity(BUF_SIZE, d)),
                )
            } else if head[0] == 0x0a {
                (FileCompression::Plain, Box::new(raw))
            } else {
                // The bytes themselves are not shown: the file may be anything.
                bail!("{name} is not a Perfetto trace (neither protobuf, gzip nor zstd)");
            };
        let mut reader = TraceReader {
            input,
            compression,
            file_size: size,
            file_bytes,
            offset: 0,
            buf: Vec::new(),
            container: None,
            truncation: None,
            done: false,
            stats: ReaderStats::default(),
            cancel: None,
            name: name.to_string(),
        };
        if compression != FileCompression::Plain {
            // The decompressed stream must itself start like a trace.
            match reader.input.fill_buf() {
                Ok([]) => bail!("{name} is an empty {compression:?} stream, not a Perfetto trace"),
                Ok(b) if b[0] != 0x0a => {
                    bail!("{name} is {compression:?}-compressed but not a Perfetto trace inside")
                }
                Ok(_) => {}
                Err(e) => bail!("{name} is not a readable {compression:?} file: {e}"),
            }
        }
        Ok(reader)
    }

    pub fn compression(&self) -> FileCompression {
        self.compression
    }

    /// Size of the file on disk.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Bytes read from the file so far (compressed bytes for compressed
    /// files); shared so a progress bar can poll it.
    pub fn file_bytes_read(&self) -> Arc<AtomicU64> {
        self.file_bytes.clone()
    }

    /// Set once the reader hit an incomplete packet at the end of the file.
    pub fn truncation(&self) -> Option<&Truncation> {
        self.truncation.as_ref()
    }

    pub fn stats(&self) -> &ReaderStats {
        &self.stats
    }

    /// Makes reading fail ("load cancelled") once `cancel` is set.
    pub fn set_cancel(&mut self, cancel: Arc<AtomicBool>) {
        self.cancel = Some(cancel);
    }

    /// The next packet, or None at the end of the file (or at a cut). Errors
    /// name the packet index and byte offset; reading stops after one.
    pub fn next_packet(&mut self) -> anyhow::Result<Option<PacketRef<'_>>> {
        loop {
            if let Some(c) = &mut self.container {
                if c.pos < c.data.len() {
                    let (index, offset) = (c.index, c.offset);
                    let range = next_inner_packet(&c.data, &mut c.pos).with_context(|| {
                        format!(
                            "corrupt trace: packet #{index} at byte offset {offset}: \
                             compressed packets do not decode as TracePackets"
                        )
                    });
                    let range = match range {
                        Ok(r) => r,
                        Err(e) => {
                            self.done = true;
                            self.container = None;
                            return Err(e);
                        }
                    };
                    let Some(range) = range else { continue };
                    self.stats.packets += 1;
                    let c = self.container.as_ref().expect("container checked above");
                    return Ok(Some(PacketRef {
                        index,
                        offset,
                        data: &c.data[range],
                    }));
                }
                self.container = None;
            }
            if self.done {
                return Ok(None);
            }
            if self
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                self.done = true;
                bail!("loading {} was cancelled", self.name);
            }
            let start = self.offset;
            let index = self.stats.top_level_packets;
            match self.read_top_level() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return Ok(None);
                }
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
            }
            self.stats.top_level_packets += 1;
            match find_container(&self.buf) {
                Ok(None) => {
                    self.stats.packets += 1;
                    return Ok(Some(PacketRef {
                        index,
                        offset: start,
                        data: &self.buf,
                    }));
                }
                Ok(Some((field, payload))) => {
                    let data = decompress(field, payload).map_err(|e| {
                        self.done = true;
                        anyhow::anyhow!(
                            "corrupt trace: packet #{index} at byte offset {start}: {e}"
                        )
                    })?;
                    self.stats.containers += 1;
                    self.container = Some(Container {
                        data,
                        pos: 0,
                        index,
                        offset: start,
                    });
                }
                // Not decodable as a packet at all: let the importer report it
                // with the packet's position.
                Err(_) => {
                    self.stats.packets += 1;
                    return Ok(Some(PacketRef {
                        index,
                        offset: start,
                        data: &self.buf,
                    }));
                }
            }
        }
    }

    /// Reads the next top-level `Trace.packet` into `self.buf`. Ok(false) at
    /// the end of the stream or at a cut (recorded in `truncation`).
    fn read_top_level(&mut self) -> anyhow::Result<bool> {
        loop {
            let start = self.offset;
            let index = self.stats.top_level_packets;
            let tag = match self.read_varint() {
                Ok(Some(t)) => t,
                Ok(None) => return Ok(false),
                Err(e) => return self.cut(start, e),
            };
            let corrupt = |what: String| -> anyhow::Result<bool> {
                bail!("corrupt trace: packet #{index} at byte offset {start}: {what}")
            };
            if self.compression != FileCompression::Plain {
                let limit = EXPANSION_ALLOWANCE.saturating_add(
                    MAX_EXPANSION.saturating_mul(self.file_bytes.load(Ordering::Relaxed)),
                );
                if self.offset > limit {
                    bail!(
                        "{} expands more than {MAX_EXPANSION} times when decompressed (past {} MB \
                         from {} MB read): not a trace, a decompression bomb",
                        self.name,
                        self.offset >> 20,
                        self.file_bytes.load(Ordering::Relaxed) >> 20
                    );
                }
            }
            // Field 0 does not exist in protobuf: runs of zero bytes (which
            // compress to almost nothing) would otherwise be skipped forever.
            if tag >> 3 == 0 {
                return corrupt(format!("invalid protobuf tag 0x{tag:x} (field number 0)"));
            }
            let wire_type = tag & 7;
            if tag >> 3 == 1 && wire_type == 2 {
                let len = match self.read_varint() {
                    Ok(Some(l)) => l,
                    Ok(None) => return self.cut(start, eof()),
                    Err(e) => return self.cut(start, e),
                };
                if len > MAX_PACKET_SIZE as u64 {
                    return corrupt(format!(
                        "packet length {len} exceeds the maximum of {MAX_PACKET_SIZE} bytes"
                    ));
                }
                // Grow with the bytes that really arrive rather than trusting the
                // declared length: a few bytes of a cut or hostile file must not
                // cost a MAX_PACKET_SIZE allocation.
                self.buf.clear();
                match (&mut self.input).take(len).read_to_end(&mut self.buf) {
                    Ok(n) if n as u64 == len => {}
                    Ok(_) => return self.cut(start, eof()),
                    Err(e) => return self.cut(start, e),
                }
                self.offset += len;
                return Ok(true);
            }
            // Some other field of `Trace`: skip it by its wire type.
            self.stats.skipped_fields += 1;
            let skip = match wire_type {
                0 => match self.read_varint() {
                    Ok(Some(_)) => 0,
                    Ok(None) => return self.cut(start, eof()),
                    Err(e) => return self.cut(start, e),
                },
                1 => 8,
                5 => 4,
                2 => match self.read_varint() {
                    Ok(Some(l)) if l <= MAX_PACKET_SIZE as u64 => l,
                    Ok(Some(l)) => {
                        return corrupt(format!("field length {l} exceeds the maximum"));
                    }
                    Ok(None) => return self.cut(start, eof()),
                    Err(e) => return self.cut(start, e),
                },
                _ => return corrupt(format!("invalid protobuf tag 0x{tag:x}")),
            };
            let copied = io::copy(&mut (&mut self.input).take(skip), &mut io::sink());
            match copied {
                Ok(n) if n == skip => self.offset += skip,
                Ok(_) => return self.cut(start, eof()),
                Err(e) => return self.cut(start, e),
            }
        }
    }

    fn cut(&mut self, offset: u64, e: io::Error) -> anyhow::Result<bool> {
        let reason = if e.kind() == io::ErrorKind::UnexpectedEof {
            "the file ends inside a packet".to_string()
        } else {
            format!("read error: {e}")
        };
        self.truncation = Some(Truncation { offset, reason });
        Ok(false)
    }

    /// A varint from the stream; Ok(None) at a clean end of stream.
    fn read_varint(&mut self) -> io::Result<Option<u64>> {
        let mut result = 0u64;
        for i in 0..10 {
            let mut b = [0u8];
            if let Err(e) = self.input.read_exact(&mut b) {
                if i == 0 && e.kind() == io::ErrorKind::UnexpectedEof {
                    return Ok(None);
                }
                return Err(e);
            }
            self.offset += 1;
            result |= u64::from(b[0] & 0x7f) << (7 * i);
            if b[0] < 0x80 {
                return Ok(Some(result));
            }
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "varint longer than 10 bytes",
        ))
    }
}

fn eof() -> io::Error {
    io::Error::from(io::ErrorKind::UnexpectedEof)
}

/// The compressed payload of a container packet, if it is one.
fn find_container(packet: &[u8]) -> Result<Option<(u32, &[u8])>, wire::WireError> {
    for f in Fields::new(packet) {
        if let (field @ (COMPRESSED_PACKETS | ZSTD_COMPRESSED_PACKETS), Value::Bytes(b)) = f? {
            return Ok(Some((field, b)));
        }
    }
    Ok(None)
}

fn decompress(field: u32, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let by_ratio = CONTAINER_EXPANSION_ALLOWANCE
        .saturating_add(MAX_EXPANSION.saturating_mul(payload.len() as u64));
    let cap = by_ratio.min(MAX_CONTAINER_SIZE as u64);
    let limit = cap + 1;
    if field == COMPRESSED_PACKETS {
        flate2::read::ZlibDecoder::new(payload)
            .take(limit)
            .read_to_end(&mut out)
            .context("compressed_packets is not valid zlib data")?;
    } else {
        zstd::stream::read::Decoder::new(payload)
            .context("zstd_compressed_packets: cannot start zstd")?
            .take(limit)
            .read_to_end(&mut out)
            .context("zstd_compressed_packets is not valid zstd data")?;
    }
    if out.len() as u64 > cap {
        bail!(
            "{} compressed bytes of packets expand beyond {cap} bytes (at most {MAX_EXPANSION} \
             times, and {MAX_CONTAINER_SIZE} bytes in all)",
            payload.len()
        );
    }
    Ok(out)
}

/// The byte range of the next `Trace.packet` inside a decompressed container.
/// Other fields are skipped; Ok(None) when only skipped fields remained.
fn next_inner_packet(
    data: &[u8],
    pos: &mut usize,
) -> Result<Option<std::ops::Range<usize>>, wire::WireError> {
    let mut fields = Fields::new(&data[*pos..]);
    let base = *pos;
    // Fields does not expose its position; recompute it from the slice bounds.
    for f in fields.by_ref() {
        let (field, value) = f.map_err(|e| wire::WireError { at: base + e.at })?;
        if field == 1
            && let Value::Bytes(b) = value
        {
            let start = b.as_ptr() as usize - data.as_ptr() as usize;
            *pos = start + b.len();
            return Ok(Some(start..start + b.len()));
        }
    }
    *pos = data.len();
    Ok(None)
}
