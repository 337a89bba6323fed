//! Kafka request header v0-v2 and response header v0/v1.
//!
//! ```text
//! request header v0: api_key i16 | api_version i16 | correlation_id i32
//! request header v1: v0 | client_id nullable string (i16 length, -1 = null)
//! request header v2: v1 | tagged fields (uvarint count, then tag/size/bytes each)
//! response header v0: correlation_id i32
//! response header v1: v0 | tagged fields (we write none: one 0 byte)
//! ```
//!
//! Which header version a request uses depends on its API key and version
//! ("flexible" versions use v2). For API keys this crate does not know, the
//! header is read as v1, which is what every Kafka client sends for them, so
//! the broker can still answer with the right correlation id.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;

use crate::wire::{be_i16, be_i32, uvarint};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error(
        "request header truncated: needed {need} bytes at position {position}, frame has {have}"
    )]
    Truncated {
        position: usize,
        need: usize,
        have: usize,
    },
    #[error("request header client_id at position {position} is not valid UTF-8")]
    ClientIdNotUtf8 { position: usize },
    #[error("request header tagged field at position {position} is malformed")]
    BadTaggedField { position: usize },
}

/// A decoded request header. The body that follows is returned separately as a
/// slice of the same frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    /// The header version that was read (0, 1 or 2).
    pub header_version: i16,
}

impl RequestHeader {
    /// The known API this header names, if any.
    pub fn api(&self) -> Option<ApiKey> {
        ApiKey::try_from(self.api_key).ok()
    }

    /// The response header version that goes with this request.
    pub fn response_header_version(&self) -> i16 {
        match self.api() {
            Some(api) if knows_version(api, self.api_version) => {
                api.response_header_version(self.api_version)
            }
            // ApiVersions answers unsupported versions with a v0 response, header v0.
            _ => 0,
        }
    }
}

/// Request header version for an API key and version. Unknown keys and
/// versions outside what the key defines read as v1 (see module docs).
pub fn request_header_version(api_key: i16, api_version: i16) -> i16 {
    match ApiKey::try_from(api_key) {
        Ok(api) if knows_version(api, api_version) => api.request_header_version(api_version),
        // ApiVersions is special: clients send the newest version they know with
        // header v2, and a broker must still read it to answer "unsupported".
        Ok(ApiKey::ApiVersions) if api_version > 0 => 2,
        _ => 1,
    }
}

fn knows_version(api: ApiKey, version: i16) -> bool {
    let range = api.valid_versions();
    (range.min..=range.max).contains(&version)
}

/// Splits a request frame into its header and body. The body shares the
/// frame's allocation.
pub fn decode_request(frame: Bytes) -> Result<(RequestHeader, Bytes), HeaderError> {
    let (header, body_at) = parse_request_header(&frame)?;
    Ok((header, frame.slice(body_at..)))
}

/// As [`decode_request`] over a borrowed frame: the header and the position
/// where the body starts.
pub fn parse_request_header(frame: &[u8]) -> Result<(RequestHeader, usize), HeaderError> {
    let have = frame.len();
    let short = |position: usize, need: usize| HeaderError::Truncated {
        position,
        need,
        have,
    };
    let api_key = be_i16(frame, 0).ok_or(short(0, 2))?;
    let api_version = be_i16(frame, 2).ok_or(short(2, 2))?;
    let correlation_id = be_i32(frame, 4).ok_or(short(4, 4))?;
    let header_version = request_header_version(api_key, api_version);
    let mut pos = 8;
    let mut client_id = None;
    if header_version >= 1 {
        let len = be_i16(frame, pos).ok_or(short(pos, 2))?;
        pos += 2;
        if len >= 0 {
            let len = len as usize;
            let raw = frame.get(pos..pos + len).ok_or(short(pos, len))?;
            let s = std::str::from_utf8(raw)
                .map_err(|_| HeaderError::ClientIdNotUtf8 { position: pos })?;
            client_id = Some(s.to_owned());
            pos += len;
        }
    }
    if header_version >= 2 {
        pos = skip_tagged_fields(frame, pos)?;
    }
    let header = RequestHeader {
        api_key,
        api_version,
        correlation_id,
        client_id,
        header_version,
    };
    Ok((header, pos))
}

fn skip_tagged_fields(buf: &[u8], mut pos: usize) -> Result<usize, HeaderError> {
    let bad = |position| HeaderError::BadTaggedField { position };
    let (count, n) = uvarint(buf.get(pos..).ok_or(bad(pos))?).ok_or(bad(pos))?;
    pos += n;
    for _ in 0..count {
        let (_tag, n) = uvarint(buf.get(pos..).ok_or(bad(pos))?).ok_or(bad(pos))?;
        pos += n;
        let (size, n) = uvarint(buf.get(pos..).ok_or(bad(pos))?).ok_or(bad(pos))?;
        pos += n;
        let end = pos
            .checked_add(size as usize)
            .filter(|&e| e <= buf.len())
            .ok_or(bad(pos))?;
        pos = end;
    }
    Ok(pos)
}

/// Writes a response header of the given version.
pub fn encode_response_header(out: &mut BytesMut, correlation_id: i32, header_version: i16) {
    out.put_i32(correlation_id);
    if header_version >= 1 {
        out.put_u8(0); // no tagged fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(
        api_key: i16,
        version: i16,
        corr: i32,
        client: Option<&str>,
        tagged: bool,
    ) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i16(api_key);
        b.put_i16(version);
        b.put_i32(corr);
        match client {
            Some(c) => {
                b.put_i16(c.len() as i16);
                b.put_slice(c.as_bytes());
            }
            None => b.put_i16(-1),
        }
        if tagged {
            // one tagged field: tag 3, 2 bytes
            b.put_slice(&[1, 3, 2, 0xaa, 0xbb]);
        }
        b
    }

    #[test]
    fn reads_v1_and_v2_headers() {
        // Produce v3 is not flexible: header v1.
        let mut f = header(0, 3, 7, Some("rdkafka"), false);
        f.put_slice(b"body");
        let (h, body) = decode_request(f.freeze()).unwrap();
        assert_eq!((h.api_key, h.api_version, h.correlation_id), (0, 3, 7));
        assert_eq!(h.client_id.as_deref(), Some("rdkafka"));
        assert_eq!(h.header_version, 1);
        assert_eq!(&body[..], b"body");

        // Fetch v12 is flexible: header v2 with tagged fields.
        let mut f = header(1, 12, 9, None, true);
        f.put_slice(b"rest");
        let (h, body) = decode_request(f.freeze()).unwrap();
        assert_eq!(h.header_version, 2);
        assert_eq!(h.client_id, None);
        assert_eq!(&body[..], b"rest");
        assert_eq!(h.response_header_version(), 1);
    }

    #[test]
    fn unknown_keys_read_as_v1() {
        let f = header(999, 0, 5, Some("x"), false);
        let (h, _) = decode_request(f.freeze()).unwrap();
        assert_eq!(
            (
                h.correlation_id,
                h.header_version,
                h.response_header_version()
            ),
            (5, 1, 0)
        );
    }

    #[test]
    fn truncated_headers_name_the_position() {
        let f = Bytes::from_static(&[0, 0, 0, 3, 0, 0]);
        assert_eq!(
            decode_request(f),
            Err(HeaderError::Truncated {
                position: 4,
                need: 4,
                have: 6
            })
        );
        let mut f = header(0, 3, 1, None, false);
        f.truncate(9);
        assert!(matches!(
            decode_request(f.freeze()),
            Err(HeaderError::Truncated { position: 8, .. })
        ));
        let mut f = header(1, 12, 9, Some("c"), false);
        f.put_slice(&[2, 1, 9]); // two tagged fields promised, second missing
        assert!(matches!(
            decode_request(f.freeze()),
            Err(HeaderError::BadTaggedField { .. })
        ));
    }
}
