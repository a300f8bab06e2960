//! The protobuf wire format by hand, for the hot paths where building prost
//! structs costs too much: reading (the importer's ftrace path, and the reader
//! looking at a packet's fields without decoding it) and writing (the
//! recorder's encoder puts CompactSched columns and full FtraceEvents straight
//! into byte buffers that survive across chunks, so steady state allocates
//! nothing). Field numbers come from [`crate::perfetto::proto::fields`].

/// Wire types (the low three bits of a tag).
pub(crate) const WIRE_VARINT: u32 = 0;
pub(crate) const WIRE_FIXED64: u32 = 1;
pub(crate) const WIRE_LEN: u32 = 2;
pub(crate) const WIRE_FIXED32: u32 = 5;

/// One field's value as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Value<'a> {
    /// The value as an integer (varint or fixed); 0 for length-delimited.
    pub fn as_u64(self) -> u64 {
        match self {
            Value::Varint(v) | Value::Fixed64(v) => v,
            Value::Fixed32(v) => u64::from(v),
            Value::Bytes(_) => 0,
        }
    }
    /// proto `int32` fields are sign-extended varints: truncating keeps the sign.
    pub fn as_i32(self) -> i32 {
        self.as_u64() as i32
    }
    pub fn as_i64(self) -> i64 {
        self.as_u64() as i64
    }
    pub fn as_bytes(self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

/// The message is not valid protobuf (bad varint, bad wire type, length past the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireError {
    /// Offset inside the message where decoding failed.
    pub at: usize,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid protobuf at byte {} of the message", self.at)
    }
}

impl std::error::Error for WireError {}

/// Decodes a varint at `*pos`, advancing it. None if truncated or longer than 10 bytes.
#[inline]
pub fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut result = 0u64;
    let mut shift = 0u32;
    while shift < 64 {
        let b = *buf.get(*pos)?;
        *pos += 1;
        result |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(result);
        }
        shift += 7;
    }
    None
}

/// Iterates the top-level fields of one message.
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> Fields<'a> {
    pub fn new(buf: &'a [u8]) -> Fields<'a> {
        Fields {
            buf,
            pos: 0,
            failed: false,
        }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let start = self.pos;
        let fail = |s: &mut Self| {
            s.failed = true;
            Some(Err(WireError { at: start }))
        };
        let Some(tag) = read_varint(self.buf, &mut self.pos) else {
            return fail(self);
        };
        let field = (tag >> 3) as u32;
        if field == 0 {
            return fail(self);
        }
        let value = match (tag & 7) as u32 {
            WIRE_VARINT => match read_varint(self.buf, &mut self.pos) {
                Some(v) => Value::Varint(v),
                None => return fail(self),
            },
            WIRE_FIXED64 => match self.buf.get(self.pos..self.pos + 8) {
                Some(b) => {
                    self.pos += 8;
                    Value::Fixed64(u64::from_le_bytes(b.try_into().unwrap_or_default()))
                }
                None => return fail(self),
            },
            WIRE_LEN => {
                let Some(len) = read_varint(self.buf, &mut self.pos) else {
                    return fail(self);
                };
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| self.pos.checked_add(l))
                    .filter(|&e| e <= self.buf.len());
                let Some(end) = end else {
                    return fail(self);
                };
                let b = &self.buf[self.pos..end];
                self.pos = end;
                Value::Bytes(b)
            }
            WIRE_FIXED32 => match self.buf.get(self.pos..self.pos + 4) {
                Some(b) => {
                    self.pos += 4;
                    Value::Fixed32(u32::from_le_bytes(b.try_into().unwrap_or_default()))
                }
                None => return fail(self),
            },
            _ => return fail(self),
        };
        Some(Ok((field, value)))
    }
}

/// Iterates a packed repeated varint field.
pub struct PackedVarints<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Set when the buffer ended inside a varint.
    pub error: bool,
}

impl<'a> PackedVarints<'a> {
    pub fn new(buf: &'a [u8]) -> PackedVarints<'a> {
        PackedVarints {
            buf,
            pos: 0,
            error: false,
        }
    }
}

impl Iterator for PackedVarints<'_> {
    type Item = u64;
    #[inline]
    fn next(&mut self) -> Option<u64> {
        if self.error || self.pos >= self.buf.len() {
            return None;
        }
        let v = read_varint(self.buf, &mut self.pos);
        if v.is_none() {
            self.error = true;
        }
        v
    }
}

// ---- writing ----

/// Number of bytes `v` takes as a varint.
#[inline]
pub(crate) fn varint_len(v: u64) -> usize {
    // 1 + floor(bits/7) with bits >= 1, written without a branch.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    (bits * 9 + 64) / 64
}

/// Appends `v` as a varint; returns the bytes written.
#[inline]
pub(crate) fn put_varint(buf: &mut Vec<u8>, mut v: u64) -> usize {
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
pub(crate) fn put_i32(buf: &mut Vec<u8>, v: i32) -> usize {
    put_varint(buf, v as i64 as u64)
}

#[inline]
pub(crate) fn put_tag(buf: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(buf, u64::from(field << 3 | wire));
}

#[inline]
pub(crate) fn tag_len(field: u32) -> usize {
    varint_len(u64::from(field << 3))
}

#[inline]
pub(crate) fn put_u64_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    put_tag(buf, field, WIRE_VARINT);
    put_varint(buf, v);
}

#[inline]
pub(crate) fn put_i32_field(buf: &mut Vec<u8>, field: u32, v: i32) {
    put_tag(buf, field, WIRE_VARINT);
    put_i32(buf, v);
}

#[inline]
pub(crate) fn put_bytes_field(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(buf, field, WIRE_LEN);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// A proto `string` field from kernel bytes. Comms and file names are not
/// guaranteed UTF-8, and strict readers (rust-protobuf) reject a string that
/// is not, so invalid sequences become U+FFFD.
#[inline]
pub(crate) fn put_str_field(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(_) => put_bytes_field(buf, field, bytes),
        Err(_) => put_bytes_field(buf, field, String::from_utf8_lossy(bytes).as_bytes()),
    }
}

/// Starts a length-delimited field whose length is not known yet: writes the
/// tag and a one-byte length placeholder, returns where the placeholder is.
#[inline]
pub(crate) fn begin_len(buf: &mut Vec<u8>, field: u32) -> usize {
    put_tag(buf, field, WIRE_LEN);
    buf.push(0);
    buf.len() - 1
}

/// Patches the length written by [`begin_len`]. Full events are almost always
/// under 128 bytes, so the body moves only in the rare long case.
#[inline]
pub(crate) fn end_len(buf: &mut Vec<u8>, at: usize) {
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
    fn walks_fields_and_rejects_garbage() {
        // field 1 varint 150, field 2 bytes "hi"
        let msg = [0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i'];
        let f: Vec<_> = Fields::new(&msg).collect::<Result<_, _>>().unwrap();
        assert_eq!(f, vec![(1, Value::Varint(150)), (2, Value::Bytes(b"hi"))]);
        let bad = [0x12, 0x05, b'h'];
        assert!(Fields::new(&bad).any(|r| r.is_err()));
        let packed: Vec<u64> = PackedVarints::new(&[0x01, 0x96, 0x01]).collect();
        assert_eq!(packed, vec![1, 150]);
    }

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
