//! Decoding trace files with Perfetto's OFFICIAL definitions (the
//! perfetto_protos crate), independent of schedlens's own reader: the oracle
//! the recording, writer and fixture tests check schedlens's files against.
#![allow(dead_code)] // each test crate uses a different part

use perfetto_protos::trace::Trace;
use perfetto_protos::trace_packet::TracePacket;
use protobuf::Message as _;
use protobuf::UnknownValueRef;
use std::io::Read as _;
use std::path::Path;

/// TracePacket.zstd_compressed_packets: newer than these protos, so it
/// arrives as an unknown field.
pub const ZSTD_COMPRESSED_PACKETS: u32 = 133;
/// schedlens's own packet (schema/perfetto/schedlens.proto).
pub const SCHEDLENS_PACKET: u32 = 9900;

/// Splits `Trace.packet` records; stops at an incomplete one (a cut file).
/// Also returns whether the whole buffer was consumed.
pub fn records(mut buf: &[u8]) -> (Vec<&[u8]>, bool) {
    let mut out = Vec::new();
    while !buf.is_empty() {
        if buf[0] != 0x0a {
            return (out, false);
        }
        let mut len = 0usize;
        let mut i = 1;
        loop {
            let Some(&b) = buf.get(i) else {
                return (out, false);
            };
            len |= usize::from(b & 0x7f) << (7 * (i - 1));
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let Some(body) = buf.get(i..i + len) else {
            return (out, false);
        };
        out.push(body);
        buf = &buf[i + len..];
    }
    (out, true)
}

/// A decoded file.
pub struct Decoded {
    /// Every packet, zstd chunks expanded in place.
    pub packets: Vec<TracePacket>,
    /// The uncompressed size of each zstd chunk.
    pub chunk_sizes: Vec<usize>,
    /// Whether the file ended on a packet boundary.
    pub complete: bool,
}

/// Decodes a plain, whole-file gzip (as far as a possibly cut stream goes) or
/// zstd-chunked trace file.
pub fn decode(path: &Path) -> Decoded {
    let raw = std::fs::read(path).unwrap();
    let data = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut gz = flate2::read::GzDecoder::new(&raw[..]);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match gz.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        out
    } else {
        raw
    };
    let (recs, complete) = records(&data);
    let mut packets = Vec::new();
    let mut chunk_sizes = Vec::new();
    for rec in recs {
        let p = TracePacket::parse_from_bytes(rec).expect("packet parses");
        match p
            .special_fields
            .unknown_fields()
            .get(ZSTD_COMPRESSED_PACKETS)
        {
            Some(UnknownValueRef::LengthDelimited(frame)) => {
                let inner = zstd::decode_all(frame).expect("zstd chunk");
                chunk_sizes.push(inner.len());
                packets.extend(
                    Trace::parse_from_bytes(&inner)
                        .expect("chunk parses")
                        .packet,
                );
            }
            _ => packets.push(p),
        }
    }
    Decoded {
        packets,
        chunk_sizes,
        complete,
    }
}

/// TracePacket.sequence_flags: SEQ_INCREMENTAL_STATE_CLEARED.
const SEQ_INCREMENTAL_STATE_CLEARED: u32 = 1;

/// Calls `f` with each packet and its sequence's interned kernel symbols
/// (iid -> name) as trace_processor sees them at that packet: a sequence's
/// interned data counts only after a packet cleared its state, and a
/// packet's own interned data counts for it.
pub fn with_kernel_symbols(
    packets: &[TracePacket],
    mut f: impl FnMut(&TracePacket, &std::collections::HashMap<u64, String>),
) {
    use std::collections::HashMap;
    let mut seqs: HashMap<u32, Option<HashMap<u64, String>>> = HashMap::new();
    let none = HashMap::new();
    for p in packets {
        let seq = p.trusted_packet_sequence_id();
        let state = seqs.entry(seq).or_default();
        if p.has_trusted_packet_sequence_id()
            && p.sequence_flags() & SEQ_INCREMENTAL_STATE_CLEARED != 0
        {
            *state = Some(HashMap::new());
        }
        if let Some(symbols) = state.as_mut() {
            for s in &p.interned_data.kernel_symbols {
                symbols.insert(s.iid(), String::from_utf8_lossy(s.str()).into_owned());
            }
        }
        f(p, state.as_ref().unwrap_or(&none));
    }
}
