//! The layout of a Produce request body (v3-v11), read in place.
//!
//! ```text
//! transactional_id  nullable string        (v9+: compact)
//! acks i16 | timeout_ms i32
//! topic_data        array                  (v9+: compact)
//!   name            string                 (v9+: compact)
//!   partition_data  array                  (v9+: compact)
//!     index i32
//!     records       nullable bytes         (v9+: compact)
//!     [tagged fields v9+]
//!   [tagged fields v9+]
//! [tagged fields v9+]
//! ```
//!
//! [`parse_produce`] reads this from a borrowed buffer and gives each
//! partition's records as a byte range of that buffer. The broker then splits
//! its frame buffer at those ranges into separately owned pieces (one
//! allocation, no copy), writes the assigned offsets into them and keeps the
//! large ones as segment chunks.

use std::ops::Range;

use crate::wire::{be_i16, be_i32, uvarint};

/// Produce versions this reader knows: those the broker serves.
pub const VERSIONS: std::ops::RangeInclusive<i16> = 3..=11;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceLayout {
    pub transactional_id: Option<String>,
    pub acks: i16,
    pub timeout_ms: i32,
    pub topics: Vec<TopicLayout>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicLayout {
    pub name: String,
    pub partitions: Vec<PartitionLayout>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLayout {
    pub index: i32,
    /// Where the records are in the parsed buffer; `None` for null records.
    pub records: Option<Range<usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProduceError {
    #[error("produce v{version} is not read in place (only v3-v11)")]
    UnsupportedVersion { version: i16 },
    #[error("produce request truncated at position {position}: {what}")]
    Truncated { position: usize, what: &'static str },
    #[error("produce request: {what} at position {position} has invalid length {len}")]
    BadLength {
        position: usize,
        what: &'static str,
        len: i64,
    },
    #[error("produce request: {what} at position {position} is not valid UTF-8")]
    NotUtf8 { position: usize, what: &'static str },
}

/// Reads the layout of a Produce body of `version`. Record ranges are
/// positions in `body`, in ascending order and not overlapping.
pub fn parse_produce(body: &[u8], version: i16) -> Result<ProduceLayout, ProduceError> {
    if !VERSIONS.contains(&version) {
        return Err(ProduceError::UnsupportedVersion { version });
    }
    let mut r = Reader {
        buf: body,
        pos: 0,
        flexible: version >= 9,
    };
    let transactional_id = r.string("transactional_id")?;
    let acks = r.i16("acks")?;
    let timeout_ms = r.i32("timeout_ms")?;
    let topic_count = r.array_len("topic_data")?;
    let mut topics = Vec::with_capacity(topic_count.min(1024));
    for _ in 0..topic_count {
        let name = r.string("topic name")?.ok_or(ProduceError::BadLength {
            position: r.pos,
            what: "topic name",
            len: -1,
        })?;
        let partition_count = r.array_len("partition_data")?;
        let mut partitions = Vec::with_capacity(partition_count.min(1024));
        for _ in 0..partition_count {
            let index = r.i32("partition index")?;
            let records = r.bytes("records")?;
            r.tagged_fields()?;
            partitions.push(PartitionLayout { index, records });
        }
        r.tagged_fields()?;
        topics.push(TopicLayout { name, partitions });
    }
    r.tagged_fields()?;
    Ok(ProduceLayout {
        transactional_id,
        acks,
        timeout_ms,
        topics,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    flexible: bool,
}

impl Reader<'_> {
    fn truncated(&self, what: &'static str) -> ProduceError {
        ProduceError::Truncated {
            position: self.pos,
            what,
        }
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, ProduceError> {
        let v = be_i16(self.buf, self.pos).ok_or_else(|| self.truncated(what))?;
        self.pos += 2;
        Ok(v)
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, ProduceError> {
        let v = be_i32(self.buf, self.pos).ok_or_else(|| self.truncated(what))?;
        self.pos += 4;
        Ok(v)
    }

    fn uvarint(&mut self, what: &'static str) -> Result<u32, ProduceError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let (v, n) = uvarint(rest).ok_or_else(|| self.truncated(what))?;
        self.pos += n;
        Ok(v)
    }

    /// A length that may be -1 (null): i32 (or i16 for classic strings), or
    /// uvarint minus one in flexible versions.
    fn length(&mut self, what: &'static str, short: bool) -> Result<i64, ProduceError> {
        Ok(match (self.flexible, short) {
            (true, _) => i64::from(self.uvarint(what)?) - 1,
            (false, true) => i64::from(self.i16(what)?),
            (false, false) => i64::from(self.i32(what)?),
        })
    }

    /// `len` bytes from here, or null for -1.
    fn take(&mut self, what: &'static str, len: i64) -> Result<Option<Range<usize>>, ProduceError> {
        let position = self.pos;
        if len == -1 {
            return Ok(None);
        }
        let bad = ProduceError::BadLength {
            position,
            what,
            len,
        };
        let len = usize::try_from(len).map_err(|_| bad.clone())?;
        let end = position
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or(bad)?;
        self.pos = end;
        Ok(Some(position..end))
    }

    fn string(&mut self, what: &'static str) -> Result<Option<String>, ProduceError> {
        let len = self.length(what, true)?;
        let Some(range) = self.take(what, len)? else {
            return Ok(None);
        };
        let position = range.start;
        std::str::from_utf8(&self.buf[range])
            .map(|s| Some(s.to_owned()))
            .map_err(|_| ProduceError::NotUtf8 { position, what })
    }

    fn bytes(&mut self, what: &'static str) -> Result<Option<Range<usize>>, ProduceError> {
        let len = self.length(what, false)?;
        self.take(what, len)
    }

    fn array_len(&mut self, what: &'static str) -> Result<usize, ProduceError> {
        let position = self.pos;
        let len = self.length(what, false)?;
        // Each element takes at least one byte: a longer count is a lie.
        usize::try_from(len)
            .ok()
            .filter(|&n| n <= self.buf.len() - self.pos.min(self.buf.len()))
            .ok_or(ProduceError::BadLength {
                position,
                what,
                len,
            })
    }

    fn tagged_fields(&mut self) -> Result<(), ProduceError> {
        if !self.flexible {
            return Ok(());
        }
        let count = self.uvarint("tagged fields")?;
        for _ in 0..count {
            self.uvarint("tag")?;
            let size = self.uvarint("tagged field size")?;
            self.take("tagged field", i64::from(size))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName, TransactionalId};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    use super::*;

    fn request(txn: Option<&str>) -> ProduceRequest {
        let part = |index, records: Option<&'static [u8]>| {
            let mut p = PartitionProduceData::default();
            p.index = index;
            p.records = records.map(Bytes::from_static);
            p
        };
        let topic = |name: &'static str, parts| {
            let mut t = TopicProduceData::default();
            t.name = TopicName(StrBytes::from_static_str(name));
            t.partition_data = parts;
            t
        };
        let mut r = ProduceRequest::default();
        r.transactional_id = txn.map(|t| TransactionalId(StrBytes::from_string(t.into())));
        r.acks = -1;
        r.timeout_ms = 30_000;
        r.topic_data = vec![
            topic(
                "orders",
                vec![part(0, Some(b"first records")), part(3, None)],
            ),
            topic("ünïcode", vec![part(7, Some(b"")), part(1, Some(b"x"))]),
        ];
        r
    }

    fn encode(r: &ProduceRequest, version: i16) -> Vec<u8> {
        let mut out = BytesMut::new();
        r.encode(&mut out, version).unwrap();
        out.to_vec()
    }

    #[test]
    fn agrees_with_kafka_protocol_on_every_version() {
        for version in 3..=11 {
            for txn in [None, Some("t-1")] {
                let r = request(txn);
                let body = encode(&r, version);
                let layout = parse_produce(&body, version).unwrap();
                assert_eq!(layout.acks, -1);
                assert_eq!(layout.timeout_ms, 30_000);
                assert_eq!(layout.transactional_id.as_deref(), txn, "v{version}");
                let names: Vec<_> = layout.topics.iter().map(|t| t.name.as_str()).collect();
                assert_eq!(names, ["orders", "ünïcode"]);
                let got: Vec<(i32, Option<&[u8]>)> = layout
                    .topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .map(|p| (p.index, p.records.clone().map(|r| &body[r])))
                    .collect();
                let want: Vec<(i32, Option<&[u8]>)> = vec![
                    (0, Some(b"first records")),
                    (3, None),
                    (7, Some(b"")),
                    (1, Some(b"x")),
                ];
                assert_eq!(got, want, "v{version}");
            }
        }
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        for version in [3, 8, 9, 11] {
            let body = encode(&request(Some("t")), version);
            for cut in 0..body.len() {
                assert!(
                    parse_produce(&body[..cut], version).is_err(),
                    "v{version} cut at {cut} parsed"
                );
            }
        }
    }

    #[test]
    fn lying_lengths_are_named() {
        let mut body = encode(&request(None), 3);
        // v3: txn id (2) + acks (2) + timeout (4), then the topic count.
        body[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(
            parse_produce(&body, 3),
            Err(ProduceError::BadLength {
                position: 8,
                what: "topic_data",
                len: i64::from(i32::MAX)
            })
        );
        assert_eq!(
            parse_produce(&body, 12),
            Err(ProduceError::UnsupportedVersion { version: 12 })
        );
    }
}
