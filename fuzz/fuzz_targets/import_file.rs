//! Arbitrary bytes as a whole trace file through the full importer.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| common::import_bytes(data.to_vec()));
