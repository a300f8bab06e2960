//! Arbitrary bytes as what a client sends the recorder service: frames read
//! with the service's bound, each decoded as a request (and, as a client
//! would, as a response). Every outcome is a request, a frame error or a
//! decode error, never a panic or an allocation past the frame bound; a
//! request that decodes encodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schedlens::service::protocol::{self, MAX_REQUEST_BYTES};

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    while let Ok(Some(body)) = protocol::read_frame(&mut input, MAX_REQUEST_BYTES) {
        if let Ok(request) = protocol::decode_request(&body) {
            let again = protocol::encode_frame(&request);
            assert_eq!(protocol::decode_request(&again[4..]), Ok(request));
        }
        let _ = protocol::decode_response(&body);
    }
});
