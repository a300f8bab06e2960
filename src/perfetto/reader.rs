//! Reads any Perfetto trace file: sniffs plain / gzip / zstd, and yields
//! TracePackets, expanding compressed_packets (zlib) and zstd_compressed_packets.
//! (Owned by the analyze work; see issue 3.)
