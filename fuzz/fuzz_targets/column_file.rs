//! Arbitrary bytes as the JSON directory of a cache's column file (where
//! every size and offset of the `.db.cols` is), behind the honest file's
//! data and beside its honest database: opening and every read of the
//! virtual tables must end in rows or an error, never a panic (which aborts
//! inside SQLite) or a read out of bounds.
#![no_main]

mod cache;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|directory: &[u8]| {
    let h = &*cache::HONEST;
    let mut cols = h.cols[..h.directory_offset].to_vec();
    cols.extend_from_slice(directory);
    cols.extend_from_slice(&(h.directory_offset as u64).to_le_bytes());
    cols.extend_from_slice(schedlens::analyzer::columns::TRAILER_MAGIC);
    cache::read_cache(&h.db_bytes, &cols);
});
