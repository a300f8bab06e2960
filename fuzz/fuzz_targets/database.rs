//! Arbitrary bytes as a cache's SQLite database (`.db`), beside an honest
//! column file: the queries and analyses must end in answers or errors,
//! never a panic, whatever the tables hold (NULLs, wrong types, odd values).
#![no_main]

mod cache;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cache::read_cache(data, &cache::HONEST.cols));
