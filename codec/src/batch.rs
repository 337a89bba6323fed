//! Kafka record batch v2: a zero-copy view over `Bytes`.
//!
//! ```text
//!  0 baseOffset i64          8 batchLength i32      12 partitionLeaderEpoch i32
//! 16 magic i8 (= 2)         17 crc u32 (CRC32C of bytes 21..end)
//! 21 attributes i16         23 lastOffsetDelta i32 27 baseTimestamp i64
//! 35 maxTimestamp i64       43 producerId i64      51 producerEpoch i16
//! 53 baseSequence i32       57 recordCount i32     61 records...
//! ```
//!
//! `batchLength` counts the bytes after itself, so a batch is `12 + batchLength`
//! bytes long. Only bytes 0..8 (baseOffset) are outside the CRC, which is why a
//! broker can assign offsets by rewriting them in place.

use bytes::Bytes;

use crate::wire::{be_i16, be_i32, be_i64, be_u32};

mod builder;

pub use builder::BatchBuilder;

/// Length of the fixed batch header.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before `batchLength`'s count starts (baseOffset + batchLength).
pub const BATCH_LOG_OVERHEAD: usize = 12;
/// Offset of the first byte the CRC covers.
pub(crate) const CRC_START: usize = 21;

/// Compression codec from the batch attributes (bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn from_attributes(attributes: i16) -> Result<Self, u8> {
        match (attributes & 0x07) as u8 {
            0 => Ok(Self::None),
            1 => Ok(Self::Gzip),
            2 => Ok(Self::Snappy),
            3 => Ok(Self::Lz4),
            4 => Ok(Self::Zstd),
            other => Err(other),
        }
    }

    pub fn attribute_bits(self) -> i16 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What is wrong with a batch. `position` is the batch's byte position inside
/// the buffer it was split from (0 for a batch parsed on its own).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error(
        "record batch at position {position} is truncated: needs {need} bytes, {have} available"
    )]
    Truncated {
        position: usize,
        need: usize,
        have: usize,
    },
    #[error("record batch at position {position} declares an invalid length {length}")]
    BadLength { position: usize, length: i32 },
    #[error(
        "record batch at position {position} has magic {magic}; only magic 2 (record batch v2) is supported"
    )]
    BadMagic { position: usize, magic: i8 },
    #[error(
        "record batch at position {position} fails its CRC32C check: header says {expected:#010x}, bytes give {actual:#010x}"
    )]
    BadCrc {
        position: usize,
        expected: u32,
        actual: u32,
    },
    #[error("record batch at position {position} has invalid record count {count}")]
    BadRecordCount { position: usize, count: i32 },
    #[error("record batch at position {position} has lastOffsetDelta {delta} but {count} records")]
    BadOffsetDelta {
        position: usize,
        delta: i32,
        count: i32,
    },
}

/// A record batch v2. Cloning is cheap (reference-counted bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct RecordBatch {
    bytes: Bytes,
}

impl std::fmt::Debug for RecordBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBatch")
            .field("base_offset", &self.base_offset())
            .field("records", &self.record_count())
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl RecordBatch {
    /// Takes `bytes` as exactly one batch. Checks the length fields and the magic
    /// byte; the CRC is checked by [`RecordBatch::validate`].
    pub fn parse(bytes: Bytes) -> Result<Self, BatchError> {
        Self::parse_at(bytes, 0)
    }

    fn parse_at(bytes: Bytes, position: usize) -> Result<Self, BatchError> {
        let len = batch_len_at(&bytes, position)?;
        if len != bytes.len() {
            return Err(BatchError::BadLength {
                position,
                length: (bytes.len() - BATCH_LOG_OVERHEAD) as i32,
            });
        }
        let batch = Self { bytes };
        let magic = batch.magic();
        if magic != 2 {
            return Err(BatchError::BadMagic { position, magic });
        }
        let count = batch.record_count();
        let delta = batch.last_offset_delta();
        if count < 0 {
            return Err(BatchError::BadRecordCount { position, count });
        }
        if delta < 0 || (count > 0 && delta < count - 1) {
            return Err(BatchError::BadOffsetDelta {
                position,
                delta,
                count,
            });
        }
        Ok(batch)
    }

    /// Checks the CRC32C over bytes 21..end.
    pub fn validate(&self) -> Result<(), BatchError> {
        self.validate_at(0)
    }

    fn validate_at(&self, position: usize) -> Result<(), BatchError> {
        let expected = self.crc();
        let actual = crc32c::crc32c(&self.bytes[CRC_START..]);
        if expected != actual {
            return Err(BatchError::BadCrc {
                position,
                expected,
                actual,
            });
        }
        Ok(())
    }

    // Field accessors. `parse` guaranteed at least BATCH_HEADER_LEN bytes, so the
    // fixed-position reads cannot fail; `unwrap_or` keeps them panic-free anyway.
    pub fn base_offset(&self) -> i64 {
        be_i64(&self.bytes, 0).unwrap_or(-1)
    }
    pub fn batch_length(&self) -> i32 {
        be_i32(&self.bytes, 8).unwrap_or(-1)
    }
    pub fn partition_leader_epoch(&self) -> i32 {
        be_i32(&self.bytes, 12).unwrap_or(-1)
    }
    pub fn magic(&self) -> i8 {
        self.bytes.get(16).map_or(-1, |&b| b as i8)
    }
    pub fn crc(&self) -> u32 {
        be_u32(&self.bytes, 17).unwrap_or(0)
    }
    pub fn attributes(&self) -> i16 {
        be_i16(&self.bytes, 21).unwrap_or(0)
    }
    /// The codec; `Err(bits)` for the reserved values 5-7.
    pub fn compression(&self) -> Result<Compression, u8> {
        Compression::from_attributes(self.attributes())
    }
    /// Attribute bit 3: timestamps are log-append time.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes() & 0x08 != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & 0x10 != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & 0x20 != 0
    }
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(&self.bytes, 23).unwrap_or(0)
    }
    pub fn base_timestamp(&self) -> i64 {
        be_i64(&self.bytes, 27).unwrap_or(-1)
    }
    pub fn max_timestamp(&self) -> i64 {
        be_i64(&self.bytes, 35).unwrap_or(-1)
    }
    pub fn producer_id(&self) -> i64 {
        be_i64(&self.bytes, 43).unwrap_or(-1)
    }
    pub fn producer_epoch(&self) -> i16 {
        be_i16(&self.bytes, 51).unwrap_or(-1)
    }
    pub fn base_sequence(&self) -> i32 {
        be_i32(&self.bytes, 53).unwrap_or(-1)
    }
    pub fn record_count(&self) -> i32 {
        be_i32(&self.bytes, 57).unwrap_or(0)
    }
    /// `base_offset + last_offset_delta`.
    /// Saturating: a batch from another cluster near `i64::MAX` must not
    /// overflow (callers refuse such offsets).
    pub fn last_offset(&self) -> i64 {
        self.base_offset()
            .saturating_add(i64::from(self.last_offset_delta()))
    }
    /// Number of offsets the batch occupies (`last_offset_delta + 1`).
    pub fn offset_span(&self) -> i64 {
        i64::from(self.last_offset_delta()) + 1
    }
    /// The whole batch, as on the wire.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    /// The records section after the 61-byte header (compressed if the batch is).
    pub fn records_section(&self) -> Bytes {
        self.bytes.slice(BATCH_HEADER_LEN..)
    }
}

/// Length of the batch starting at `buf[0]`, checked to fit in `buf`.
fn batch_len_at(buf: &[u8], position: usize) -> Result<usize, BatchError> {
    let have = buf.len();
    if have < BATCH_LOG_OVERHEAD {
        return Err(BatchError::Truncated {
            position,
            need: BATCH_LOG_OVERHEAD,
            have,
        });
    }
    // Message sets v0/v1 (Kafka before 0.11) keep their magic at the same
    // byte: name it before their (shorter) length is taken for a broken
    // v2 header.
    if let Some(&magic) = buf.get(16)
        && magic != 2
    {
        return Err(BatchError::BadMagic {
            position,
            magic: magic as i8,
        });
    }
    let length = be_i32(buf, 8).unwrap_or(-1);
    let Some(len) = usize::try_from(length)
        .ok()
        .and_then(|l| l.checked_add(BATCH_LOG_OVERHEAD))
    else {
        return Err(BatchError::BadLength { position, length });
    };
    if len < BATCH_HEADER_LEN {
        return Err(BatchError::BadLength { position, length });
    }
    if len > have {
        return Err(BatchError::Truncated {
            position,
            need: len,
            have,
        });
    }
    Ok(len)
}

/// Rewrites a batch's baseOffset in place. The CRC does not cover it.
/// Does nothing if `batch` is shorter than 8 bytes.
pub fn set_base_offset(batch: &mut [u8], offset: i64) {
    if let Some(slot) = batch.get_mut(0..8) {
        slot.copy_from_slice(&offset.to_be_bytes());
    }
}

/// Gives the batches of a records blob consecutive offsets from `first`, in
/// place (each baseOffset; CRCs do not cover it). Returns the offset after
/// the last batch. Stops at the first batch whose length is malformed: the
/// blob is about to be parsed, which names that error.
pub fn stamp_base_offsets(records: &mut [u8], first: i64) -> i64 {
    let mut next = first;
    let mut position = 0;
    while position < records.len() {
        let Ok(len) = batch_len_at(&records[position..], position) else {
            break;
        };
        let batch = &mut records[position..position + len];
        set_base_offset(batch, next);
        next += i64::from(be_i32(batch, 23).unwrap_or(0)) + 1;
        position += len;
    }
    next
}

/// Writes an idempotent producer's id, epoch and sequence numbers into every
/// batch of a records blob, in place, and recomputes each batch's CRC32C
/// (which covers those fields). The first batch gets `first_sequence`, each
/// next one the sequence after the previous batch's records (wrapping at
/// `i32::MAX` as Kafka does). Returns the sequence after the last batch.
/// The whole blob is checked first, so on error nothing was changed.
pub fn stamp_producer(
    records: &mut [u8],
    producer_id: i64,
    producer_epoch: i16,
    first_sequence: i32,
) -> Result<i32, BatchError> {
    let mut spans = Vec::new();
    let mut position = 0;
    while position < records.len() {
        let len = batch_len_at(&records[position..], position)?;
        let magic = records[position + 16] as i8;
        if magic != 2 {
            return Err(BatchError::BadMagic { position, magic });
        }
        spans.push(position..position + len);
        position += len;
    }
    let mut sequence = first_sequence;
    for span in spans {
        let batch = &mut records[span];
        let count = be_i32(batch, 57).unwrap_or(0);
        batch[43..51].copy_from_slice(&producer_id.to_be_bytes());
        batch[51..53].copy_from_slice(&producer_epoch.to_be_bytes());
        batch[53..57].copy_from_slice(&sequence.to_be_bytes());
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        sequence = next_sequence(sequence, count);
    }
    Ok(sequence)
}

/// The sequence number `count` records after `sequence`, wrapping to 0
/// past `i32::MAX` as Kafka's producers do.
pub fn next_sequence(sequence: i32, count: i32) -> i32 {
    let next = i64::from(sequence) + i64::from(count.max(0));
    (next % (i64::from(i32::MAX) + 1)) as i32
}

/// Splits a records blob holding several concatenated batches, without copying.
/// Each item is a parsed batch (length and magic checked); call
/// [`Batches::validated`] to also check every CRC. A truncated tail is an error,
/// except when built with [`Batches::allow_partial_tail`] (fetch responses may
/// end in a partial batch, which is then dropped).
#[derive(Debug, Clone)]
pub struct Batches {
    rest: Bytes,
    position: usize,
    validate: bool,
    allow_partial_tail: bool,
    failed: bool,
}

impl Batches {
    pub fn new(records: Bytes) -> Self {
        Self::starting_at(records, 0)
    }

    /// As [`Batches::new`], with positions in errors counted from `position`
    /// (for blobs that are a slice of a larger object).
    pub fn starting_at(records: Bytes, position: usize) -> Self {
        Self {
            rest: records,
            position,
            validate: false,
            allow_partial_tail: false,
            failed: false,
        }
    }

    pub fn validated(mut self) -> Self {
        self.validate = true;
        self
    }

    pub fn allow_partial_tail(mut self) -> Self {
        self.allow_partial_tail = true;
        self
    }

    /// Byte position (in the caller's numbering) of the next batch.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl Iterator for Batches {
    type Item = Result<RecordBatch, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        let position = self.position;
        let len = match batch_len_at(&self.rest, position) {
            Ok(len) => len,
            Err(BatchError::Truncated { .. }) if self.allow_partial_tail => {
                self.rest.clear();
                return None;
            }
            Err(e) => {
                self.failed = true;
                return Some(Err(e));
            }
        };
        let bytes = self.rest.split_to(len);
        self.position += len;
        let result = RecordBatch::parse_at(bytes, position).and_then(|b| {
            if self.validate {
                b.validate_at(position)?;
            }
            Ok(b)
        });
        if result.is_err() {
            self.failed = true;
        }
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(base: i64, n: usize) -> Bytes {
        let mut b = BatchBuilder::new(base, 1_000);
        for i in 0..n {
            b.push(Some(format!("k{i}").as_bytes()), Some(b"value"), &[]);
        }
        b.finish()
    }

    #[test]
    fn an_old_message_set_is_named_by_its_magic() {
        // A v1 message as Kafka 0.10 wrote it: offset, size 20, crc, magic 1,
        // attributes, timestamp, null key, 1-byte value.
        let mut v1 = 0i64.to_be_bytes().to_vec();
        v1.extend_from_slice(&20i32.to_be_bytes());
        v1.extend_from_slice(&[0, 0, 0, 0, 1, 0]);
        v1.extend_from_slice(&0i64.to_be_bytes());
        v1.extend_from_slice(&(-1i32).to_be_bytes());
        v1.extend_from_slice(&1i32.to_be_bytes());
        v1.push(b'v');
        let e = Batches::new(Bytes::from(v1)).next().unwrap().unwrap_err();
        assert_eq!(
            e,
            BatchError::BadMagic {
                position: 0,
                magic: 1
            }
        );
        assert!(e.to_string().contains("has magic 1"), "{e}");
    }

    #[test]
    fn stamp_producer_sets_fields_and_a_valid_crc_in_every_batch() {
        let mut blob = sample(0, 3).to_vec();
        blob.extend_from_slice(&sample(3, 2));
        let next = stamp_producer(&mut blob, 77, 3, i32::MAX - 1).unwrap();
        assert_eq!(next, 3, "wraps past i32::MAX");
        let batches: Vec<_> = Batches::new(Bytes::from(blob))
            .validated()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(batches[0].producer_id(), 77);
        assert_eq!(batches[0].producer_epoch(), 3);
        assert_eq!(batches[0].base_sequence(), i32::MAX - 1);
        assert_eq!(batches[1].base_sequence(), 1);
        let mut bad = sample(0, 1).to_vec();
        bad.truncate(bad.len() - 1);
        let before = bad.clone();
        assert!(stamp_producer(&mut bad, 1, 0, 0).is_err());
        assert_eq!(bad, before, "nothing changed on error");
    }

    #[test]
    fn header_fields_are_read_in_place() {
        let raw = sample(5, 3);
        let batch = RecordBatch::parse(raw.clone()).unwrap();
        batch.validate().unwrap();
        assert_eq!(batch.base_offset(), 5);
        assert_eq!(batch.record_count(), 3);
        assert_eq!(batch.last_offset(), 7);
        assert_eq!(batch.magic(), 2);
        assert_eq!(batch.compression(), Ok(Compression::None));
        assert_eq!(batch.producer_id(), -1);
        assert_eq!(batch.as_bytes().as_ptr(), raw.as_ptr(), "no copy");
    }

    #[test]
    fn concatenated_batches_split_without_copy() {
        let mut blob = Vec::new();
        blob.extend_from_slice(&sample(0, 2));
        blob.extend_from_slice(&sample(2, 4));
        let blob = Bytes::from(blob);
        let batches: Vec<_> = Batches::new(blob.clone())
            .validated()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1].base_offset(), 2);
        assert_eq!(
            batches[1].as_bytes().as_ptr(),
            blob[batches[0].len()..].as_ptr()
        );
    }

    #[test]
    fn rewriting_base_offset_keeps_crc_valid() {
        let mut raw = sample(0, 2).to_vec();
        set_base_offset(&mut raw, 1234);
        let batch = RecordBatch::parse(Bytes::from(raw)).unwrap();
        assert_eq!(batch.base_offset(), 1234);
        batch.validate().unwrap();
    }

    #[test]
    fn corruption_is_typed_with_position() {
        let good = sample(0, 2);
        let mut blob = good.to_vec();
        let mut bad = good.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        blob.extend_from_slice(&bad);
        let errs: Vec<_> = Batches::new(Bytes::from(blob)).validated().collect();
        assert!(errs[0].is_ok());
        assert!(
            matches!(errs[1], Err(BatchError::BadCrc { position, .. }) if position == good.len()),
            "{errs:?}"
        );

        let mut magic1 = good.to_vec();
        magic1[16] = 1;
        assert_eq!(
            RecordBatch::parse(Bytes::from(magic1)),
            Err(BatchError::BadMagic {
                position: 0,
                magic: 1
            })
        );

        let truncated = good.slice(..good.len() - 3);
        assert!(matches!(
            Batches::new(truncated.clone()).next(),
            Some(Err(BatchError::Truncated { position: 0, .. }))
        ));
        assert!(
            Batches::new(truncated)
                .allow_partial_tail()
                .next()
                .is_none()
        );

        let mut neg = good.to_vec();
        neg[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(
            RecordBatch::parse(Bytes::from(neg)),
            Err(BatchError::BadLength {
                position: 0,
                length: -5
            })
        );
    }
}
