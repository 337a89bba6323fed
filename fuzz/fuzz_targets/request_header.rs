//! What a connection reads before it has authenticated, of any bytes: the
//! length prefix, the request header, and the bodies served then
//! (ApiVersions, SaslHandshake, SaslAuthenticate) at the header's version,
//! decoded as the broker decodes them. A value or an error, never a panic;
//! a decoded header's body is a slice of the frame.
#![no_main]

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::Decodable;
use kafscale_codec::frame::FrameDecoder;
use kafscale_codec::header::decode_request;
use libfuzzer_sys::fuzz_target;

/// The broker's cap on a frame before authentication.
const MAX_UNAUTHENTICATED_FRAME: usize = 512 * 1024;

fn body<T: Decodable>(mut body: Bytes, version: i16) {
    if let Ok(_req) = T::decode(&mut body, version) {
        // Whatever is left is the broker's "trailing bytes" error.
        let _ = body.remaining();
    }
}

fuzz_target!(|data: &[u8]| {
    let decoder = FrameDecoder::new(MAX_UNAUTHENTICATED_FRAME);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        assert!(frame.len() <= MAX_UNAUTHENTICATED_FRAME);
        let Ok((header, rest)) = decode_request(frame.clone()) else {
            continue;
        };
        assert!(rest.len() <= frame.len());
        let v = header.api_version;
        match ApiKey::try_from(header.api_key) {
            Ok(ApiKey::ApiVersions) if (0..=3).contains(&v) => body::<ApiVersionsRequest>(rest, v),
            Ok(ApiKey::SaslHandshake) if (0..=1).contains(&v) => {
                body::<SaslHandshakeRequest>(rest, v)
            }
            Ok(ApiKey::SaslAuthenticate) if (0..=2).contains(&v) => {
                body::<SaslAuthenticateRequest>(rest, v)
            }
            _ => {}
        }
    }
});
