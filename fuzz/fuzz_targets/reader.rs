//! Arbitrary bytes as a whole trace file (plain, gzip, zstd, with compressed
//! packet containers): the reader must end in packets, a truncation or an
//! error, never a panic, a hang or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schedlens::perfetto::reader::TraceReader;
use std::io::Cursor;

fuzz_target!(|data: &[u8]| {
    let input = Cursor::new(data.to_vec());
    let Ok(mut reader) = TraceReader::from_reader(input, data.len() as u64, "fuzz input") else {
        return;
    };
    while let Ok(Some(p)) = reader.next_packet() {
        // Touch the packet so the bytes the reader hands out are really read.
        std::hint::black_box(p.data.iter().fold(0u8, |a, b| a ^ b));
    }
});
