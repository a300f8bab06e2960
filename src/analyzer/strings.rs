//! Interned strings (comms, names, states) and the fast map type of the
//! importer's hot maps.

/// Index into [`Strings`].
pub type Str = u32;

/// Keys are tids, pids and names from the trace: SipHash's resistance to
/// chosen keys buys nothing against a file that can only slow its own load.
pub type FastMap<K, V> = rustc_hash::FxHashMap<K, V>;

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
