//! ApiVersions (v0-v3).

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafscale_codec::header::RequestHeader;

use super::{SUPPORTED, respond};
use crate::broker::conn::Reply;
use crate::broker::errors::ErrorCode;

fn response(error: ErrorCode) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = error.code();
    r.api_keys = SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = key as i16;
            v.min_version = min;
            v.max_version = max;
            v
        })
        .collect();
    r
}

pub fn handle(header: &RequestHeader, _body: Bytes) -> Result<Reply, String> {
    // The request body (client software name/version) needs no answer.
    respond(header, &response(ErrorCode::NONE))
}

/// A version we do not serve: answer with a v0 response carrying
/// UNSUPPORTED_VERSION and our ranges, so the client retries with one we do.
pub fn unsupported_version(header: &RequestHeader) -> Reply {
    let mut h = header.clone();
    h.api_version = 0;
    debug_assert_eq!(ApiKey::ApiVersions as i16, h.api_key);
    respond(&h, &response(ErrorCode::UNSUPPORTED_VERSION)).unwrap_or_else(Reply::Close)
}
