//! Writes schedlens traces: per-CPU FtraceEventBundles with CompactSched,
//! chunked compression, preamble and epilogue packets. (Issue 2; owner: writer.)

use crate::perfetto::proto::TracePacket;
use crate::trace::event::{Event, Header};
use std::path::Path;
use std::sync::Arc;

/// How the trace file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// Chunks of packets in TracePacket.zstd_compressed_packets (Perfetto v58+).
    Zstd,
    /// Whole-file gzip, for older Perfetto viewers.
    Gzip,
    /// Plain protobuf.
    None,
}

/// The output file, shared by the consumer threads.
pub struct TraceWriter {}

impl TraceWriter {
    /// Creates `path` with mode 0600; fails before anything else if it cannot.
    pub fn create(_path: &Path, _compression: Compression) -> anyhow::Result<TraceWriter> {
        unimplemented!("issue 2: writer")
    }
    /// Appends complete packets (preamble, epilogue); callable from any thread.
    pub fn write_packets(&self, _packets: &[TracePacket]) -> anyhow::Result<()> {
        unimplemented!("issue 2: writer")
    }
    /// Bytes written to the file so far.
    pub fn bytes_written(&self) -> u64 {
        unimplemented!("issue 2: writer")
    }
    /// Flushes and closes the file; returns its size.
    pub fn finish(&self) -> anyhow::Result<u64> {
        unimplemented!("issue 2: writer")
    }
}

/// Encodes the events of one ring-buffer shard (one consumer thread).
pub struct ShardEncoder {}

impl ShardEncoder {
    pub fn new(_writer: Arc<TraceWriter>) -> ShardEncoder {
        unimplemented!("issue 2: writer")
    }
    /// Hot path: appends one event to its CPU's bundle.
    pub fn push(&mut self, _h: &Header, _ev: &Event<'_>) -> anyhow::Result<()> {
        unimplemented!("issue 2: writer")
    }
    /// Writes everything buffered as one chunk.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        unimplemented!("issue 2: writer")
    }
}
