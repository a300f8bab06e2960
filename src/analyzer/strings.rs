//! Interned strings (comms, names, states) and the fast map type of the
//! importer's hot maps.

use hashbrown::HashTable;
use std::hash::BuildHasher;

/// Index into [`Strings`].
pub type Str = u32;

/// Keys are tids, pids and names from the trace: SipHash's resistance to
/// chosen keys buys nothing against a file that can only slow its own load.
pub type FastMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// Every distinct string of the trace once, its bytes back to back in one
/// buffer: a trace of millions of distinct names costs their bytes plus
/// about 16 bytes each, not an allocation (or two) per name.
#[derive(Default)]
pub struct Strings {
    bytes: String,
    /// Where each string ends in `bytes`; it starts where the previous ends.
    ends: Vec<usize>,
    /// Ids, found by the hash of their string.
    table: HashTable<Str>,
    hasher: rustc_hash::FxBuildHasher,
}

impl Strings {
    pub fn intern(&mut self, s: &str) -> Str {
        let hash = self.hasher.hash_one(s);
        let (bytes, ends, hasher) = (&self.bytes, &self.ends, &self.hasher);
        let text = |id: Str| span(bytes, ends, id);
        if let Some(&id) = self.table.find(hash, |&id| text(id) == s) {
            return id;
        }
        let id = self.ends.len() as Str;
        self.table
            .insert_unique(hash, id, |&id| hasher.hash_one(text(id)));
        self.bytes.push_str(s);
        self.ends.push(self.bytes.len());
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
        span(&self.bytes, &self.ends, id)
    }
}

/// String `id` of `bytes` cut at `ends`; "" for an id never interned.
fn span<'a>(bytes: &'a str, ends: &[usize], id: Str) -> &'a str {
    let id = id as usize;
    let Some(&end) = ends.get(id) else {
        return "";
    };
    let start = if id == 0 { 0 } else { ends[id - 1] };
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_each_string_once_and_gives_it_back() {
        let mut s = Strings::default();
        let names: Vec<String> = (0..10_000).map(|i| format!("task-{i}")).collect();
        let ids: Vec<Str> = names.iter().map(|n| s.intern(n)).collect();
        assert_eq!(s.intern(""), 10_000);
        for (n, &id) in names.iter().zip(&ids) {
            assert_eq!(s.intern(n), id);
            assert_eq!(s.get(id), n);
        }
        assert_eq!(s.get(10_000), "");
        assert_eq!(s.get(10_001), "");
        assert_eq!(s.intern_bytes(b"a\xffb"), s.intern("a\u{fffd}b"));
    }
}
