//! Framing and request headers on arbitrary bytes: never panic; frames never
//! exceed the maximum; decoded bodies are slices of the input.
#![no_main]

use bytes::BytesMut;
use kafscale_codec::frame::FrameDecoder;
use kafscale_codec::header::decode_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoder = FrameDecoder::new(64 * 1024);
    let mut buf = BytesMut::new();
    // Feed in two pieces to exercise "need more".
    let (a, b) = data.split_at(data.len() / 2);
    for piece in [a, b] {
        buf.extend_from_slice(piece);
        while let Ok(Some(frame)) = decoder.decode(&mut buf) {
            assert!(frame.len() <= decoder.max_frame());
            if let Ok((_, body)) = decode_request(frame.clone()) {
                assert!(body.len() <= frame.len());
            }
        }
    }
});
