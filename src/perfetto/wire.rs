//! Minimal protobuf wire-format walking, for the places where building prost
//! structs costs too much (the ftrace hot path of the importer) or where the
//! reader must look at a packet's fields without decoding it.

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
        let value = match tag & 7 {
            0 => match read_varint(self.buf, &mut self.pos) {
                Some(v) => Value::Varint(v),
                None => return fail(self),
            },
            1 => match self.buf.get(self.pos..self.pos + 8) {
                Some(b) => {
                    self.pos += 8;
                    Value::Fixed64(u64::from_le_bytes(b.try_into().unwrap_or_default()))
                }
                None => return fail(self),
            },
            2 => {
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
            5 => match self.buf.get(self.pos..self.pos + 4) {
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
}
