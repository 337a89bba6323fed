//! Builds record batch v2 bytes: for tests, benchmarks, the load generator and
//! restore. The broker itself never re-encodes batches.

use bytes::Bytes;

use super::{BATCH_HEADER_LEN, Compression};
use crate::records::compress;
use crate::wire::{put_varint, put_varlong};

/// Accumulates records and encodes them as one record batch v2.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    base_offset: i64,
    base_timestamp: i64,
    max_timestamp: i64,
    compression: Compression,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    /// Transactional (0x10) and control (0x20) attribute bits.
    flags: i16,
    count: i32,
    records: Vec<u8>,
    scratch: Vec<u8>,
}

impl BatchBuilder {
    pub fn new(base_offset: i64, base_timestamp: i64) -> Self {
        Self {
            base_offset,
            base_timestamp,
            max_timestamp: base_timestamp,
            compression: Compression::None,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            flags: 0,
            count: 0,
            records: Vec::new(),
            scratch: Vec::new(),
        }
    }

    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Marks the batch as written by an idempotent producer.
    pub fn idempotent(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Marks the batch as part of its producer's transaction (set the
    /// producer with [`BatchBuilder::idempotent`]).
    pub fn transactional(mut self) -> Self {
        self.flags |= 0x10;
        self
    }

    /// A transaction marker of the producer set with
    /// [`BatchBuilder::idempotent`]: a control batch whose one record says
    /// commit or abort (no other record may be pushed).
    pub fn marker(mut self, commit: bool) -> Self {
        self.flags |= 0x30;
        let key = [0, 0, 0, u8::from(commit)]; // version 0, type
        let value = [0, 0, 0, 0, 0, 0]; // version 0, coordinator epoch 0
        self.push(Some(&key), Some(&value), &[]);
        self
    }

    pub fn record_count(&self) -> i32 {
        self.count
    }

    /// Uncompressed size of the records so far.
    pub fn records_len(&self) -> usize {
        self.records.len()
    }

    /// Adds a record stamped with the batch's base timestamp.
    pub fn push(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) {
        self.push_at(self.base_timestamp, key, value, headers);
    }

    /// Adds a record with its own timestamp (at or after the base timestamp).
    pub fn push_at(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) {
        let body = &mut self.scratch;
        body.clear();
        body.push(0); // record attributes
        put_varlong(body, timestamp - self.base_timestamp);
        put_varint(body, self.count);
        put_bytes(body, key);
        put_bytes(body, value);
        put_varint(body, headers.len() as i32);
        for (k, v) in headers {
            put_bytes(body, Some(k.as_bytes()));
            put_bytes(body, *v);
        }
        put_varint(&mut self.records, body.len() as i32);
        self.records.extend_from_slice(body);
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp);
    }

    /// Encodes the batch: header, (compressed) records, CRC32C.
    pub fn finish(self) -> Bytes {
        let records = match self.compression {
            Compression::None => self.records,
            codec => compress(codec, &self.records),
        };
        let mut out = Vec::with_capacity(BATCH_HEADER_LEN + records.len());
        out.extend_from_slice(&self.base_offset.to_be_bytes());
        let batch_length = (BATCH_HEADER_LEN - 12 + records.len()) as i32;
        out.extend_from_slice(&batch_length.to_be_bytes());
        out.extend_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
        out.push(2); // magic
        out.extend_from_slice(&[0; 4]); // crc, filled below
        out.extend_from_slice(&(self.compression.attribute_bits() | self.flags).to_be_bytes());
        out.extend_from_slice(&(self.count - 1).max(0).to_be_bytes());
        out.extend_from_slice(&self.base_timestamp.to_be_bytes());
        out.extend_from_slice(&self.max_timestamp.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.producer_epoch.to_be_bytes());
        out.extend_from_slice(&self.base_sequence.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&records);
        let crc = crc32c::crc32c(&out[21..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(out)
    }
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
        None => put_varint(out, -1),
    }
}
