//! Minimal protobuf wire encoding for the hot path: the encoder writes the
//! packed CompactSched columns and the full FtraceEvents straight into byte
//! buffers that survive across chunks, so steady state allocates nothing.

pub(super) const WIRE_VARINT: u32 = 0;
pub(super) const WIRE_LEN: u32 = 2;

/// Number of bytes `v` takes as a varint.
#[inline]
pub(super) fn varint_len(v: u64) -> usize {
    // 1 + floor(bits/7) with bits >= 1, written without a branch.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    (bits * 9 + 64) / 64
}

/// Appends `v` as a varint; returns the bytes written.
#[inline]
pub(super) fn put_varint(buf: &mut Vec<u8>, mut v: u64) -> usize {
    let start = buf.len();
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
    buf.len() - start
}

/// int32 fields sign-extend negative values to 64 bits on the wire.
#[inline]
pub(super) fn put_i32(buf: &mut Vec<u8>, v: i32) -> usize {
    put_varint(buf, v as i64 as u64)
}

#[inline]
pub(super) fn put_tag(buf: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(buf, u64::from(field << 3 | wire));
}

#[inline]
pub(super) fn tag_len(field: u32) -> usize {
    varint_len(u64::from(field << 3))
}

#[inline]
pub(super) fn put_u64_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    put_tag(buf, field, WIRE_VARINT);
    put_varint(buf, v);
}

#[inline]
pub(super) fn put_i32_field(buf: &mut Vec<u8>, field: u32, v: i32) {
    put_tag(buf, field, WIRE_VARINT);
    put_i32(buf, v);
}

#[inline]
pub(super) fn put_bytes_field(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(buf, field, WIRE_LEN);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// A proto `string` field from kernel bytes. Comms and file names are not
/// guaranteed UTF-8, and strict readers (rust-protobuf) reject a string that
/// is not, so invalid sequences become U+FFFD.
#[inline]
pub(super) fn put_str_field(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(_) => put_bytes_field(buf, field, bytes),
        Err(_) => put_bytes_field(buf, field, String::from_utf8_lossy(bytes).as_bytes()),
    }
}

/// Starts a length-delimited field whose length is not known yet: writes the
/// tag and a one-byte length placeholder, returns where the placeholder is.
#[inline]
pub(super) fn begin_len(buf: &mut Vec<u8>, field: u32) -> usize {
    put_tag(buf, field, WIRE_LEN);
    buf.push(0);
    buf.len() - 1
}

/// Patches the length written by [`begin_len`]. Full events are almost always
/// under 128 bytes, so the body moves only in the rare long case.
#[inline]
pub(super) fn end_len(buf: &mut Vec<u8>, at: usize) {
    let body = buf.len() - at - 1;
    let n = varint_len(body as u64);
    if n > 1 {
        let old = buf.len();
        buf.resize(old + n - 1, 0);
        buf.copy_within(at + 1..old, at + n);
    }
    let mut v = body as u64;
    for i in 0..n {
        let more = if i + 1 < n { 0x80 } else { 0 };
        buf[at + i] = (v & 0x7f) as u8 | more;
        v >>= 7;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_len_matches_encoding() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            assert_eq!(put_varint(&mut b, v), varint_len(v));
            assert_eq!(b.len(), varint_len(v));
        }
    }

    #[test]
    fn end_len_moves_long_bodies() {
        for body in [0usize, 5, 127, 128, 300, 20000] {
            let mut b = vec![9u8];
            let at = begin_len(&mut b, 2);
            b.extend(std::iter::repeat_n(7u8, body));
            end_len(&mut b, at);
            let mut expect = vec![9u8, 0x12];
            put_varint(&mut expect, body as u64);
            expect.extend(std::iter::repeat_n(7u8, body));
            assert_eq!(b, expect);
        }
    }
}
