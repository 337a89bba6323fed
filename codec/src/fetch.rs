//! Fetch response encoding (versions 4-16) that leaves record bytes where
//! they are: the response is a list of chunks, small encoded pieces
//! interleaved with the stored batches' own `Bytes`, for a vectored write.
//! (`kafka-protocol`'s encoder would copy every record into one buffer.)

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire_out::{put_compact_len, put_uvarint_bytes};

/// Lowest and highest Fetch versions this encoder writes.
pub const MIN_VERSION: i16 = 4;
pub const MAX_VERSION: i16 = 16;

#[derive(Debug, Clone, Default)]
pub struct FetchPartition {
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Aborted transactions in the answer's range, (producer id, first
    /// offset), for read_committed fetches.
    pub aborted: Vec<(i64, i64)>,
    /// Whole record batches, sent as they are.
    pub records: Vec<Bytes>,
}

#[derive(Debug, Clone, Default)]
pub struct FetchTopic {
    pub name: String,
    pub topic_id: [u8; 16],
    pub partitions: Vec<FetchPartition>,
}

/// Encodes a whole response frame (length prefix, header, body) as chunks.
pub fn encode_fetch_response(
    correlation_id: i32,
    version: i16,
    error_code: i16,
    session_id: i32,
    topics: &[FetchTopic],
) -> Vec<Bytes> {
    let flexible = version >= 12;
    let mut chunks =
        Vec::with_capacity(2 + topics.iter().map(|t| t.partitions.len() * 2).sum::<usize>());
    chunks.push(Bytes::new()); // length prefix, filled in last
    let mut head = BytesMut::with_capacity(256);
    head.put_i32(correlation_id);
    if flexible {
        head.put_u8(0); // response header tagged fields
    }
    head.put_i32(0); // throttle_time_ms
    if version >= 7 {
        head.put_i16(error_code);
        head.put_i32(session_id);
    }
    put_array_len(&mut head, flexible, topics.len());
    for t in topics {
        if version >= 13 {
            head.put_slice(&t.topic_id);
        } else if flexible {
            put_compact_len(&mut head, t.name.len());
            head.put_slice(t.name.as_bytes());
        } else {
            head.put_i16(t.name.len() as i16);
            head.put_slice(t.name.as_bytes());
        }
        put_array_len(&mut head, flexible, t.partitions.len());
        for p in &t.partitions {
            head.put_i32(p.partition);
            head.put_i16(p.error_code);
            head.put_i64(p.high_watermark);
            head.put_i64(p.last_stable_offset);
            if version >= 5 {
                head.put_i64(p.log_start_offset);
            }
            put_array_len(&mut head, flexible, p.aborted.len());
            for &(producer_id, first_offset) in &p.aborted {
                head.put_i64(producer_id);
                head.put_i64(first_offset);
                if flexible {
                    head.put_u8(0); // aborted transaction tagged fields
                }
            }
            if version >= 11 {
                head.put_i32(-1); // preferred_read_replica
            }
            let len: usize = p.records.iter().map(Bytes::len).sum();
            if flexible {
                put_uvarint_bytes(&mut head, len as u64 + 1);
            } else {
                head.put_i32(len as i32);
            }
            if len > 0 {
                chunks.push(head.split().freeze());
                chunks.extend(p.records.iter().cloned());
            }
            if flexible {
                head.put_u8(0); // partition tagged fields
            }
        }
        if flexible {
            head.put_u8(0); // topic tagged fields
        }
    }
    if flexible {
        head.put_u8(0); // top-level tagged fields
    }
    chunks.push(head.freeze());
    let total: usize = chunks.iter().map(Bytes::len).sum();
    chunks[0] = Bytes::copy_from_slice(&(total as i32).to_be_bytes());
    chunks.retain(|c| !c.is_empty());
    chunks
}

fn put_array_len(out: &mut BytesMut, flexible: bool, n: usize) {
    if flexible {
        put_compact_len(out, n);
    } else {
        out.put_i32(n as i32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::Decodable;

    fn decode(version: i16, chunks: &[Bytes]) -> FetchResponse {
        let mut all = BytesMut::new();
        for c in chunks {
            all.extend_from_slice(c);
        }
        let mut all = all.freeze();
        let len = i32::from_be_bytes([all[0], all[1], all[2], all[3]]) as usize;
        assert_eq!(len, all.len() - 4);
        let header_len = if version >= 12 { 5 } else { 4 };
        let mut body = all.split_off(4 + header_len);
        FetchResponse::decode(&mut body, version).unwrap()
    }

    #[test]
    fn every_version_decodes_with_kafka_protocol() {
        let batch = crate::batch::BatchBuilder::new(7, 1000);
        let mut batch = batch;
        batch.push(None, Some(b"hello"), &[]);
        let batch = batch.finish();
        let topics = vec![FetchTopic {
            name: "orders".into(),
            topic_id: [9; 16],
            partitions: vec![
                FetchPartition {
                    partition: 3,
                    high_watermark: 8,
                    last_stable_offset: 8,
                    log_start_offset: 0,
                    aborted: vec![(1000, 2), (1001, 5)],
                    records: vec![batch.clone(), batch.clone()],
                    ..Default::default()
                },
                FetchPartition {
                    partition: 4,
                    error_code: 1,
                    high_watermark: -1,
                    last_stable_offset: -1,
                    log_start_offset: -1,
                    aborted: vec![],
                    records: vec![],
                },
            ],
        }];
        for version in MIN_VERSION..=MAX_VERSION {
            let chunks = encode_fetch_response(42, version, 0, 0, &topics);
            // Record bytes are the stored Bytes themselves, not copies.
            assert!(
                chunks.iter().any(|c| c.as_ptr() == batch.as_ptr()),
                "v{version}: records were copied"
            );
            let r = decode(version, &chunks);
            let t = &r.responses[0];
            if version >= 13 {
                assert_eq!(t.topic_id.as_bytes(), &[9; 16]);
            } else {
                assert_eq!(t.topic.0.as_str(), "orders");
            }
            assert_eq!(t.partitions.len(), 2);
            let p = &t.partitions[0];
            assert_eq!((p.partition_index, p.high_watermark), (3, 8));
            let aborted: Vec<(i64, i64)> = p
                .aborted_transactions
                .iter()
                .flatten()
                .map(|a| (a.producer_id.0, a.first_offset))
                .collect();
            assert_eq!(aborted, [(1000, 2), (1001, 5)], "v{version}");
            assert_eq!(
                p.records.as_ref().map(|r| r.len()),
                Some(batch.len() * 2),
                "v{version}"
            );
            assert_eq!(t.partitions[1].error_code, 1);
        }
    }
}
