//! Interned strings (comms, names, states) and a fast hasher for the integer
//! and short-string keys of the importer's hot maps.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Index into [`Strings`].
pub type Str = u32;

/// Multiply-rotate hashing (the FxHash scheme): far cheaper than SipHash for
/// tids and comms, and the keys come from one trace, not from an attacker who
/// could aim for collisions that matter.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(K);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_i64(&mut self, i: i64) {
        self.write_u64(i as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Every distinct string of the trace once.
#[derive(Default)]
pub struct Strings {
    list: Vec<Box<str>>,
    map: FastMap<Box<str>, Str>,
}

impl Strings {
    pub fn intern(&mut self, s: &str) -> Str {
        if let Some(&id) = self.map.get(s) {
            return id;
        }
        let id = self.list.len() as Str;
        self.list.push(s.into());
        self.map.insert(s.into(), id);
        id
    }

    /// Interns bytes from the trace; invalid UTF-8 is replaced, not rejected.
    pub fn intern_bytes(&mut self, b: &[u8]) -> Str {
        match std::str::from_utf8(b) {
            Ok(s) => self.intern(s),
            Err(_) => self.intern(&String::from_utf8_lossy(b)),
        }
    }

    pub fn get(&self, id: Str) -> &str {
        self.list.get(id as usize).map_or("", |s| s)
    }
}
