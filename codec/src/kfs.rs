//! The `.kfs` segment, version 1 (`shared/kfs-format.md`).
//!
//! ```text
//!  0 "KAFS" | 4 version u16 = 1 | 6 flags u16 = 0 | 8 base offset i64
//! 16 message count i32 | 20 created ms i64 | 28 reserved u32 = 0
//! 32 body: record batches v2, exactly as on the wire, concatenated
//! 32+n  CRC32C of the body u32 | 36+n last offset i64 | 44+n "END!"
//! ```
//!
//! [`SegmentWriter`] gathers batches, rewriting each batch's baseOffset:
//! small ones are copied into an arena, large runs stay in the produce
//! request's buffer (zero copies on their way to S3). It keeps the body CRC
//! and the `.index` up to date as it goes, so sealing is writing 48 bytes.
//! [`SegmentReader`] verifies everything a reader can.

use bytes::{BufMut, Bytes, BytesMut};

use crate::batch::{BatchError, Batches, CRC_START, RecordBatch, set_base_offset};
use crate::index::IndexWriter;
use crate::wire::{be_i32, be_i64, be_u16, be_u32};

pub const SEGMENT_MAGIC: &[u8; 4] = b"KAFS";
pub const FOOTER_MAGIC: &[u8; 4] = b"END!";
pub const SEGMENT_VERSION: u16 = 1;
pub const HEADER_LEN: usize = 32;
pub const FOOTER_LEN: usize = 16;

/// What is wrong with a segment. Positions are byte positions in the `.kfs`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("segment is {len} bytes, shorter than header + footer (48)")]
    TooShort { len: usize },
    #[error("segment magic at position 0 is {found:02x?}, expected \"KAFS\"")]
    BadMagic { found: [u8; 4] },
    #[error("segment version {version} at position 4 is not supported (only 1)")]
    UnsupportedVersion { version: u16 },
    #[error(
        "segment footer magic at position {position} is {found:02x?}, expected \"END!\" (truncated or not a segment?)"
    )]
    BadFooterMagic { position: usize, found: [u8; 4] },
    #[error(
        "segment body CRC32C mismatch: footer at position {position} says {expected:#010x}, body gives {actual:#010x}"
    )]
    BodyCrc {
        position: usize,
        expected: u32,
        actual: u32,
    },
    #[error("segment body: {0}")]
    Batch(#[from] BatchError),
    #[error(
        "segment header says base offset {header}, but the first batch (position 32) starts at {first}"
    )]
    BaseOffsetMismatch { header: i64, first: i64 },
    #[error(
        "batch at position {position} starts at offset {offset}, not after the previous batch's last offset {prev_last}"
    )]
    OffsetsNotAscending {
        position: usize,
        offset: i64,
        prev_last: i64,
    },
    #[error("segment header says {header} messages, batches hold {actual}")]
    MessageCountMismatch { header: i32, actual: i64 },
    #[error("segment footer says last offset {footer}, the last batch ends at {actual}")]
    LastOffsetMismatch { footer: i64, actual: i64 },
    #[error("segment has no batches")]
    Empty,
    #[error("segment would exceed {max} bytes (2 GiB positions are i32)")]
    TooLarge { max: usize },
    #[error("segment would hold more than {max} records (its header counts them in an i32)")]
    TooManyRecords { max: i32 },
}

/// The records `batches` declare, summed without overflow.
fn records_of<'a>(batches: impl IntoIterator<Item = &'a RecordBatch>) -> i64 {
    batches
        .into_iter()
        .map(|b| i64::from(b.record_count().max(0)))
        .sum()
}

/// The 32-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub version: u16,
    pub flags: u16,
    pub base_offset: i64,
    pub message_count: i32,
    pub created_ms: i64,
}

/// The 16-byte footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentFooter {
    pub body_crc: u32,
    pub last_offset: i64,
}

/// What a metadata store records about a sealed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub message_count: i32,
    /// Size of the `.kfs` object in bytes.
    pub size: u64,
    pub created_ms: i64,
    /// Smallest batch base timestamp (a lower bound on record timestamps).
    pub min_timestamp: i64,
    /// Largest batch max timestamp.
    pub max_timestamp: i64,
}

/// A segment's bytes as the pieces it was written in: the header, runs of
/// whole batches (copied into an arena, or a produce request's own buffer),
/// the footer. A batch never spans two pieces.
#[derive(Debug, Clone, Default)]
pub struct SegmentBytes {
    pieces: Vec<Bytes>,
    /// Byte position of each piece.
    starts: Vec<usize>,
    len: usize,
    /// Memory the pieces keep alive (a piece that is part of a larger
    /// buffer keeps all of it).
    held: usize,
}

impl SegmentBytes {
    fn push(&mut self, piece: Bytes) {
        let len = piece.len();
        self.push_holding(piece, len);
    }

    fn push_holding(&mut self, piece: Bytes, held: usize) {
        if piece.is_empty() {
            return;
        }
        self.starts.push(self.len);
        self.len += piece.len();
        self.held += held.max(piece.len());
        self.pieces.push(piece);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Memory these bytes keep alive, for caches that bound memory: the
    /// length, plus the rest of any buffer a piece was kept in.
    pub fn held(&self) -> usize {
        self.held
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pieces in order, e.g. to send them with one vectored write.
    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// Hands the pieces over (to give their buffers back to a pool).
    pub fn into_pieces(self) -> Vec<Bytes> {
        self.pieces
    }

    /// The whole segment in one buffer (a copy unless it is one piece).
    pub fn to_bytes(&self) -> Bytes {
        match self.pieces.as_slice() {
            [one] => one.clone(),
            pieces => {
                let mut out = BytesMut::with_capacity(self.len);
                for p in pieces {
                    out.extend_from_slice(p);
                }
                out.freeze()
            }
        }
    }

    /// The parts of `range` (in segment positions), each with its position.
    /// Cut at piece boundaries, so a range of whole batches gives whole batches.
    pub fn slices(
        &self,
        range: std::ops::Range<usize>,
    ) -> impl Iterator<Item = (usize, Bytes)> + '_ {
        let first = self
            .starts
            .partition_point(|&s| s <= range.start)
            .saturating_sub(1);
        self.pieces
            .iter()
            .zip(&self.starts)
            .skip(first)
            .take_while(move |(_, start)| **start < range.end)
            .filter_map(move |(piece, &start)| {
                let from = range.start.max(start) - start;
                let to = range.end.min(start + piece.len()) - start;
                (from < to).then(|| (start + from, piece.slice(from..to)))
            })
    }
}

/// A sealed segment and its index, ready to upload.
#[derive(Debug, Clone)]
pub struct SealedSegment {
    pub segment: SegmentBytes,
    pub index: Bytes,
    pub info: SegmentInfo,
}

/// The writer's state before a multi-batch append, to undo it.
#[derive(Debug, Clone, Copy)]
struct Checkpoint {
    arena_len: usize,
    body_len: usize,
    next_offset: i64,
    body_crc: u32,
    message_count: i64,
    min_timestamp: i64,
    max_timestamp: i64,
    index: crate::index::IndexCheckpoint,
}

/// Builds a segment body from appended batches and seals a `.kfs` + `.index`.
///
/// Batches are either copied into an arena ([`SegmentWriter::append`],
/// [`SegmentWriter::append_verifying`]) or, when a produce request brings a
/// large run of them, kept where they are: [`SegmentWriter::append_stamped`]
/// takes the request's buffer as a piece of the segment. Either way the body
/// CRC and the index are kept up to date, so sealing writes 48 bytes.
#[derive(Debug)]
pub struct SegmentWriter {
    base_offset: i64,
    next_offset: i64,
    /// Body pieces before the arena's current contents.
    done: SegmentBytes,
    arena: BytesMut,
    body_len: usize,
    body_crc: u32,
    message_count: i64,
    min_timestamp: i64,
    max_timestamp: i64,
    index: IndexWriter,
}

impl SegmentWriter {
    pub fn new(base_offset: i64) -> Self {
        Self::with_capacity(base_offset, 64 * 1024)
    }

    /// `capacity` is the expected body size; the arena is allocated once for it.
    pub fn with_capacity(base_offset: i64, capacity: usize) -> Self {
        Self::with_buffer(base_offset, BytesMut::with_capacity(capacity))
    }

    /// Copies into `arena` (cleared first), e.g. a buffer reused from a pool.
    /// An empty `BytesMut::new()` allocates nothing until a copy needs it.
    pub fn with_buffer(base_offset: i64, arena: BytesMut) -> Self {
        let mut w = Self {
            base_offset,
            next_offset: base_offset,
            done: SegmentBytes::default(),
            arena: BytesMut::new(),
            body_len: 0,
            body_crc: 0,
            message_count: 0,
            min_timestamp: i64::MAX,
            max_timestamp: i64::MIN,
            index: IndexWriter::default(),
        };
        w.done.push(Bytes::from_static(&[0; HEADER_LEN]));
        w.give_arena(arena);
        w
    }

    /// Room left in the arena before a copy would have to grow it.
    pub fn arena_spare(&self) -> usize {
        self.arena.capacity() - self.arena.len()
    }

    /// Copies from now on go into `arena` (what the old arena holds stays in
    /// the segment).
    pub fn give_arena(&mut self, mut arena: BytesMut) {
        self.close_arena();
        arena.clear();
        self.arena = arena;
    }

    /// Moves what the arena holds into the finished pieces; the arena keeps
    /// its spare capacity for later copies.
    fn close_arena(&mut self) {
        if !self.arena.is_empty() {
            self.done.push(self.arena.split().freeze());
        }
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// The offset the next appended batch will get.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn body_len(&self) -> usize {
        self.body_len
    }

    pub fn is_empty(&self) -> bool {
        self.body_len == 0
    }

    /// Position in the `.kfs` where the next batch goes.
    fn position(&self) -> usize {
        HEADER_LEN + self.body_len
    }

    /// Appends a batch, assigning it the next offsets. Returns its new base offset.
    ///
    /// The caller has validated the batch (length, magic, CRC): the body CRC is
    /// extended from the batch's own CRC (which covers bytes 21..end) with
    /// [`crate::crc::crc32c_combine`], so the batch bytes are read once, by the copy.
    pub fn append(&mut self, batch: &RecordBatch) -> Result<i64, SegmentError> {
        self.room_for(batch.len(), records_of([batch]))?;
        debug_assert!(
            batch.validate().is_ok(),
            "SegmentWriter::append needs a validated batch"
        );
        let at = self.arena.len();
        self.arena.extend_from_slice(batch.as_bytes());
        Ok(self.note_copied(batch, at))
    }

    /// Checks that `len` more bytes and `records` more records fit:
    /// positions are i32 in the index, so a segment stops short of 2 GiB,
    /// and the header's message count is an i32 (a segment whose batches
    /// held more would not open).
    fn room_for(&self, len: usize, records: i64) -> Result<(), SegmentError> {
        let max = i32::MAX as usize - FOOTER_LEN;
        if self.position() + len > max {
            return Err(SegmentError::TooLarge { max });
        }
        if self.message_count + records > i64::from(i32::MAX) {
            return Err(SegmentError::TooManyRecords { max: i32::MAX });
        }
        Ok(())
    }

    /// Gives the batch just copied to arena position `at` the next offsets
    /// (its stored baseOffset rewritten) and accounts for it.
    fn note_copied(&mut self, batch: &RecordBatch, at: usize) -> i64 {
        let assigned = self.next_offset;
        set_base_offset(&mut self.arena[at..], assigned);
        self.note_appended(batch, assigned);
        assigned
    }

    /// Accounts for a batch just placed at the end of the body with base
    /// offset `assigned`: extends the body CRC (from its first 21 bytes and
    /// the batch's own CRC, which covers the rest), indexes it.
    fn note_appended(&mut self, batch: &RecordBatch, assigned: i64) {
        let mut head = [0u8; CRC_START];
        head.copy_from_slice(&batch.as_bytes()[..CRC_START]);
        set_base_offset(&mut head, assigned);
        self.body_crc = crc32c::crc32c_append(self.body_crc, &head);
        self.body_crc =
            crate::crc::crc32c_combine(self.body_crc, batch.crc(), batch.len() - CRC_START);
        self.index
            .on_batch(assigned, self.position() as i32, batch.record_count());
        self.body_len += batch.len();
        self.next_offset = assigned + batch.offset_span();
        self.message_count += i64::from(batch.record_count());
        self.min_timestamp = self.min_timestamp.min(batch.base_timestamp());
        self.max_timestamp = self.max_timestamp.max(batch.max_timestamp());
    }

    /// Appends batches whose CRC32C has not been checked yet, checking each
    /// while copying it: the copy goes in 24 KiB blocks and the CRC is taken
    /// over each block the copy has just read (24 KiB = the crc32c crate's
    /// long-stride size). Measured end to end, this costs the same as
    /// checking first and copying after (BENCHMARKS.md); what it adds is
    /// that an append is all or nothing: on a bad CRC
    /// (`SegmentError::Batch(BadCrc)`, position = the batch's byte position
    /// among `batches`) or on `SegmentError::TooLarge`, the writer is left as
    /// it was. Returns the first assigned offset.
    pub fn append_verifying(&mut self, batches: &[RecordBatch]) -> Result<i64, SegmentError> {
        let checkpoint = self.checkpoint();
        let first = self.next_offset;
        let mut position = 0;
        for batch in batches {
            if let Err(e) = self.append_one_verifying(batch, position) {
                self.rollback(checkpoint);
                return Err(e);
            }
            position += batch.len();
        }
        Ok(first)
    }

    fn append_one_verifying(
        &mut self,
        batch: &RecordBatch,
        batch_position: usize,
    ) -> Result<(), SegmentError> {
        const BLOCK: usize = 24 * 1024;
        self.room_for(batch.len(), records_of([batch]))?;
        let src = batch.as_bytes();
        let at = self.arena.len();
        self.arena.reserve(src.len());
        self.arena.extend_from_slice(&src[..CRC_START]);
        let mut crc = 0;
        for block in src[CRC_START..].chunks(BLOCK) {
            self.arena.extend_from_slice(block);
            crc = crc32c::crc32c_append(crc, block);
        }
        check_crc(batch, crc, batch_position)?;
        self.note_copied(batch, at);
        Ok(())
    }

    /// Appends `records` (the concatenated `batches`) without copying them:
    /// the buffer becomes a piece of the segment. The caller has already
    /// written the offsets this writer assigns next into it
    /// ([`crate::batch::stamp_base_offsets`] from [`SegmentWriter::next_offset`]);
    /// each batch's CRC32C is checked here. All or nothing, as
    /// [`SegmentWriter::append_verifying`]. `held` is the size of the buffer
    /// `records` is part of (see [`SegmentBytes::held`]). Returns the first
    /// assigned offset.
    pub fn append_stamped(
        &mut self,
        records: Bytes,
        held: usize,
        batches: &[RecordBatch],
    ) -> Result<i64, SegmentError> {
        self.room_for(records.len(), records_of(batches))?;
        let first = self.next_offset;
        let mut expected = first;
        let mut position = 0;
        for batch in batches {
            check_crc(
                batch,
                crc32c::crc32c(&batch.as_bytes()[CRC_START..]),
                position,
            )?;
            assert_eq!(
                batch.base_offset(),
                expected,
                "append_stamped: batches not stamped from next_offset"
            );
            expected += batch.offset_span();
            position += batch.len();
        }
        assert_eq!(
            position,
            records.len(),
            "append_stamped: records are not the batches"
        );
        self.close_arena();
        for batch in batches {
            self.note_appended(batch, batch.base_offset());
        }
        self.done.push_holding(records, held);
        Ok(first)
    }

    /// Appends batches at the offsets they carry, as a mirror copies another
    /// cluster's log: without copying them (`records`, the concatenated
    /// `batches`, becomes a piece of the segment, as in
    /// [`SegmentWriter::append_stamped`]). Offsets must ascend and the first
    /// may lie beyond [`SegmentWriter::next_offset`] (a gap, as a compacted
    /// source or a log start above 0 leaves); an empty writer then starts
    /// its segment there. Every CRC32C is checked. All or nothing: a bad CRC,
    /// an offset behind the log's end or out of order leaves the writer as it
    /// was. Returns the first batch's offset.
    pub fn append_at_offsets(
        &mut self,
        records: Bytes,
        held: usize,
        batches: &[RecordBatch],
    ) -> Result<i64, SegmentError> {
        self.room_for(records.len(), records_of(batches))?;
        let Some(first) = batches.first() else {
            return Ok(self.next_offset);
        };
        let mut next = self.next_offset;
        let mut position = 0;
        for batch in batches {
            check_crc(
                batch,
                crc32c::crc32c(&batch.as_bytes()[CRC_START..]),
                position,
            )?;
            // Also refuses offsets so large the next one would not exist.
            if batch.base_offset() < next || batch.last_offset() == i64::MAX {
                return Err(SegmentError::OffsetsNotAscending {
                    position,
                    offset: batch.base_offset(),
                    prev_last: next - 1,
                });
            }
            next = batch.last_offset() + 1;
            position += batch.len();
        }
        if position != records.len() {
            return Err(SegmentError::Batch(BatchError::BadLength {
                position,
                length: records.len() as i32,
            }));
        }
        if self.body_len == 0 {
            self.base_offset = first.base_offset();
        }
        self.close_arena();
        for batch in batches {
            self.note_appended(batch, batch.base_offset());
        }
        self.done.push_holding(records, held);
        Ok(first.base_offset())
    }

    /// As [`SegmentWriter::append_at_offsets`], copying the batches into the
    /// arena (for batches that are a small part of a large buffer), their
    /// CRCs checked while they are copied.
    pub fn append_copy_at_offsets(&mut self, batches: &[RecordBatch]) -> Result<i64, SegmentError> {
        let Some(first) = batches.first() else {
            return Ok(self.next_offset);
        };
        let checkpoint = self.checkpoint();
        let base = (self.base_offset, self.body_len == 0);
        let mut position = 0;
        for batch in batches {
            let result =
                if batch.base_offset() < self.next_offset || batch.last_offset() == i64::MAX {
                    Err(SegmentError::OffsetsNotAscending {
                        position,
                        offset: batch.base_offset(),
                        prev_last: self.next_offset - 1,
                    })
                } else {
                    if self.body_len == 0 {
                        self.base_offset = batch.base_offset();
                    }
                    self.next_offset = batch.base_offset();
                    self.append_one_verifying(batch, position)
                };
            if let Err(e) = result {
                self.rollback(checkpoint);
                if base.1 {
                    self.base_offset = base.0;
                }
                return Err(e);
            }
            position += batch.len();
        }
        Ok(first.base_offset())
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            arena_len: self.arena.len(),
            body_len: self.body_len,
            next_offset: self.next_offset,
            body_crc: self.body_crc,
            message_count: self.message_count,
            min_timestamp: self.min_timestamp,
            max_timestamp: self.max_timestamp,
            index: self.index.checkpoint(),
        }
    }

    fn rollback(&mut self, c: Checkpoint) {
        self.arena.truncate(c.arena_len);
        self.body_len = c.body_len;
        self.next_offset = c.next_offset;
        self.body_crc = c.body_crc;
        self.message_count = c.message_count;
        self.min_timestamp = c.min_timestamp;
        self.max_timestamp = c.max_timestamp;
        self.index.rollback(c.index);
    }

    /// Writes header and footer and hands out the segment and its index.
    pub fn seal(mut self, created_ms: i64) -> Result<SealedSegment, SegmentError> {
        if self.is_empty() {
            return Err(SegmentError::Empty);
        }
        let last_offset = self.next_offset - 1;
        // room_for keeps it in range.
        let message_count = i32::try_from(self.message_count).unwrap_or(i32::MAX);
        let mut header = BytesMut::with_capacity(HEADER_LEN);
        header.put_slice(SEGMENT_MAGIC);
        header.put_u16(SEGMENT_VERSION);
        header.put_u16(0);
        header.put_i64(self.base_offset);
        header.put_i32(message_count);
        header.put_i64(created_ms);
        header.put_u32(0);
        self.close_arena();
        let mut footer = BytesMut::with_capacity(FOOTER_LEN);
        footer.put_u32(self.body_crc);
        footer.put_i64(last_offset);
        footer.put_slice(FOOTER_MAGIC);
        // The placeholder that opened the body is replaced (same length).
        let mut segment = self.done;
        segment.pieces[0] = header.freeze();
        segment.push(footer.freeze());
        let info = SegmentInfo {
            base_offset: self.base_offset,
            last_offset,
            message_count,
            size: segment.len() as u64,
            created_ms,
            min_timestamp: self.min_timestamp,
            max_timestamp: self.max_timestamp,
        };
        Ok(SealedSegment {
            segment,
            index: self.index.finish(),
            info,
        })
    }
}

fn check_crc(batch: &RecordBatch, actual: u32, position: usize) -> Result<(), SegmentError> {
    if actual != batch.crc() {
        return Err(BatchError::BadCrc {
            position,
            expected: batch.crc(),
            actual,
        }
        .into());
    }
    Ok(())
}

/// Reads the 32-byte header (checks magic and version only).
pub fn parse_header(buf: &[u8]) -> Result<SegmentHeader, SegmentError> {
    if buf.len() < HEADER_LEN {
        return Err(SegmentError::TooShort { len: buf.len() });
    }
    let found = [buf[0], buf[1], buf[2], buf[3]];
    if &found != SEGMENT_MAGIC {
        return Err(SegmentError::BadMagic { found });
    }
    let version = be_u16(buf, 4).unwrap_or(0);
    if version != SEGMENT_VERSION {
        return Err(SegmentError::UnsupportedVersion { version });
    }
    Ok(SegmentHeader {
        version,
        flags: be_u16(buf, 6).unwrap_or(0),
        base_offset: be_i64(buf, 8).unwrap_or(0),
        message_count: be_i32(buf, 16).unwrap_or(0),
        created_ms: be_i64(buf, 20).unwrap_or(0),
    })
}

/// Reads the 16-byte footer at the end of a whole segment (checks its magic).
pub fn parse_footer(segment: &[u8]) -> Result<SegmentFooter, SegmentError> {
    let len = segment.len();
    if len < HEADER_LEN + FOOTER_LEN {
        return Err(SegmentError::TooShort { len });
    }
    let at = len - FOOTER_LEN;
    let found = [
        segment[len - 4],
        segment[len - 3],
        segment[len - 2],
        segment[len - 1],
    ];
    if &found != FOOTER_MAGIC {
        return Err(SegmentError::BadFooterMagic {
            position: len - 4,
            found,
        });
    }
    Ok(SegmentFooter {
        body_crc: be_u32(segment, at).unwrap_or(0),
        last_offset: be_i64(segment, at + 4).unwrap_or(0),
    })
}

/// A fully verified segment.
#[derive(Debug, Clone)]
pub struct SegmentReader {
    data: Bytes,
    header: SegmentHeader,
    footer: SegmentFooter,
    batch_count: usize,
}

impl SegmentReader {
    /// Verifies magic, version, footer, body CRC32C, every batch (length, magic,
    /// CRC), offset order, message count and last offset.
    pub fn open(data: Bytes) -> Result<Self, SegmentError> {
        let header = parse_header(&data)?;
        let footer = parse_footer(&data)?;
        let body_end = data.len() - FOOTER_LEN;
        let actual = crc32c::crc32c(&data[HEADER_LEN..body_end]);
        if actual != footer.body_crc {
            return Err(SegmentError::BodyCrc {
                position: body_end,
                expected: footer.body_crc,
                actual,
            });
        }
        let mut count: i64 = 0;
        let mut prev_last: Option<i64> = None;
        let mut batch_count = 0;
        let mut batches =
            Batches::starting_at(data.slice(HEADER_LEN..body_end), HEADER_LEN).validated();
        loop {
            let position = batches.position();
            let Some(batch) = batches.next() else { break };
            let batch = batch?;
            match prev_last {
                None if batch.base_offset() != header.base_offset => {
                    return Err(SegmentError::BaseOffsetMismatch {
                        header: header.base_offset,
                        first: batch.base_offset(),
                    });
                }
                Some(prev_last) if batch.base_offset() <= prev_last => {
                    return Err(SegmentError::OffsetsNotAscending {
                        position,
                        offset: batch.base_offset(),
                        prev_last,
                    });
                }
                _ => {}
            }
            prev_last = Some(batch.last_offset());
            count += i64::from(batch.record_count());
            batch_count += 1;
        }
        let Some(actual_last) = prev_last else {
            return Err(SegmentError::Empty);
        };
        if count != i64::from(header.message_count) {
            return Err(SegmentError::MessageCountMismatch {
                header: header.message_count,
                actual: count,
            });
        }
        if actual_last != footer.last_offset {
            return Err(SegmentError::LastOffsetMismatch {
                footer: footer.last_offset,
                actual: actual_last,
            });
        }
        Ok(Self {
            data,
            header,
            footer,
            batch_count,
        })
    }

    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }
    pub fn footer(&self) -> &SegmentFooter {
        &self.footer
    }
    pub fn base_offset(&self) -> i64 {
        self.header.base_offset
    }
    pub fn last_offset(&self) -> i64 {
        self.footer.last_offset
    }
    pub fn batch_count(&self) -> usize {
        self.batch_count
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The batches, in order (already verified by `open`).
    pub fn batches(&self) -> impl Iterator<Item = RecordBatch> + '_ {
        Batches::starting_at(
            self.data.slice(HEADER_LEN..self.data.len() - FOOTER_LEN),
            HEADER_LEN,
        )
        .map_while(Result::ok)
    }

    /// The body's positions: `(position, batch)` for every batch.
    pub fn positioned_batches(&self) -> Vec<(usize, RecordBatch)> {
        let mut pos = HEADER_LEN;
        self.batches()
            .map(|b| {
                let at = pos;
                pos += b.len();
                (at, b)
            })
            .collect()
    }
}

/// Batches read by a ranged GET from an index position up to the footer
/// (`position..size-16`). Each batch's CRC is checked as it is read; error
/// positions are absolute within the `.kfs`.
pub fn batches_in_range(range: Bytes, position: usize) -> Batches {
    Batches::starting_at(range, position).validated()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BatchBuilder;
    use crate::index::Index;

    #[test]
    fn a_segment_never_counts_more_records_than_its_header_can_say() {
        // A mirrored batch claiming i32::MAX records (its header is all a
        // writer counts), then one more record: refused, and what was
        // written still seals and opens.
        let mut v = batch(1, 1_000).as_bytes().to_vec();
        v[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        v[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&v[CRC_START..]);
        v[17..21].copy_from_slice(&crc.to_be_bytes());
        let big = RecordBatch::parse(Bytes::from(v)).unwrap();
        let mut w = SegmentWriter::new(0);
        w.append_copy_at_offsets(&[big]).unwrap();
        let mut one = batch(1, 2_000).as_bytes().to_vec();
        one[..8].copy_from_slice(&i64::from(i32::MAX).to_be_bytes());
        let one = RecordBatch::parse(Bytes::from(one)).unwrap();
        assert!(matches!(
            w.append_copy_at_offsets(std::slice::from_ref(&one)),
            Err(SegmentError::TooManyRecords { max: i32::MAX })
        ));
        let sealed = w.seal(3_000).unwrap();
        let data: Vec<u8> = sealed
            .segment
            .pieces()
            .iter()
            .flat_map(|p| p.iter().copied())
            .collect();
        let r = SegmentReader::open(Bytes::from(data)).unwrap();
        assert_eq!(r.header().message_count, i32::MAX);
    }

    fn batch(n: usize, ts: i64) -> RecordBatch {
        let mut b = BatchBuilder::new(0, ts);
        for i in 0..n {
            b.push(None, Some(format!("value-{i}").as_bytes()), &[]);
        }
        RecordBatch::parse(b.finish()).unwrap()
    }

    fn sealed() -> SealedSegment {
        let mut w = SegmentWriter::new(1000);
        assert_eq!(w.append(&batch(3, 50)).unwrap(), 1000);
        assert_eq!(w.append(&batch(150, 40)).unwrap(), 1003);
        assert_eq!(w.append(&batch(1, 60)).unwrap(), 1153);
        w.seal(777).unwrap()
    }

    /// A batch of `n` records at `base` (its own offsets, as a source gave them).
    fn batch_at(base: i64, n: usize, ts: i64) -> RecordBatch {
        let mut b = BatchBuilder::new(base, ts);
        for i in 0..n {
            b.push(Some(b"k"), Some(format!("v{i}").as_bytes()), &[]);
        }
        RecordBatch::parse(b.finish()).unwrap()
    }

    fn blob(batches: &[RecordBatch]) -> (Bytes, Vec<RecordBatch>) {
        let mut all = Vec::new();
        for b in batches {
            all.extend_from_slice(b.as_bytes());
        }
        let all = Bytes::from(all);
        let parsed = Batches::new(all.clone())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        (all, parsed)
    }

    #[test]
    fn offsets_kept_with_gaps_in_both_append_paths() {
        for copy in [false, true] {
            // A partition whose log starts at 1000 at the source, then skips
            // 1005..1009 (compacted away).
            let mut w = SegmentWriter::new(0);
            let (records, batches) = blob(&[batch_at(1000, 5, 10), batch_at(1010, 3, 11)]);
            let first = if copy {
                w.append_copy_at_offsets(&batches).unwrap()
            } else {
                w.append_at_offsets(records.clone(), records.len(), &batches)
                    .unwrap()
            };
            assert_eq!(first, 1000);
            assert_eq!((w.base_offset(), w.next_offset()), (1000, 1013));
            let (more, more_batches) = blob(&[batch_at(1020, 2, 12)]);
            if copy {
                w.append_copy_at_offsets(&more_batches).unwrap();
            } else {
                w.append_at_offsets(more.clone(), more.len(), &more_batches)
                    .unwrap();
            }
            let sealed = w.seal(99).unwrap();
            assert_eq!(
                (
                    sealed.info.base_offset,
                    sealed.info.last_offset,
                    sealed.info.message_count
                ),
                (1000, 1021, 10)
            );
            let r = SegmentReader::open(sealed.segment.to_bytes()).unwrap();
            let offsets: Vec<(i64, i64)> = r
                .batches()
                .map(|b| (b.base_offset(), b.last_offset()))
                .collect();
            assert_eq!(offsets, [(1000, 1004), (1010, 1012), (1020, 1021)]);
            // An offset inside the gap: the index leads to a batch at or
            // before it, and the reader continues with the next batch.
            let idx = Index::parse(&sealed.index).unwrap();
            let entry = idx.lookup(1007).unwrap();
            assert!(entry.offset <= 1007);
            let next = r.batches().find(|b| b.last_offset() >= 1007).unwrap();
            assert_eq!(next.base_offset(), 1010);
            if !copy {
                assert!(
                    sealed
                        .segment
                        .pieces()
                        .iter()
                        .any(|p| p.as_ptr() == records.as_ptr()),
                    "the fetched records are a piece of the segment: no copy"
                );
            }
        }
    }

    #[test]
    fn offsets_behind_the_log_or_bad_crcs_change_nothing() {
        for copy in [false, true] {
            let mut w = SegmentWriter::new(0);
            let (records, batches) = blob(&[batch_at(100, 4, 10)]);
            w.append_at_offsets(records.clone(), records.len(), &batches)
                .unwrap();
            let append = |w: &mut SegmentWriter, list: &[RecordBatch]| {
                let (records, batches) = blob(list);
                if copy {
                    w.append_copy_at_offsets(&batches)
                } else {
                    w.append_at_offsets(records.clone(), records.len(), &batches)
                }
            };
            // Overlaps the log's end (103), or out of order within the call.
            let e = append(&mut w, &[batch_at(103, 1, 10)]).unwrap_err();
            assert!(
                matches!(
                    e,
                    SegmentError::OffsetsNotAscending {
                        offset: 103,
                        prev_last: 103,
                        ..
                    }
                ),
                "{e}"
            );
            let e = append(&mut w, &[batch_at(110, 5, 10), batch_at(112, 1, 10)]).unwrap_err();
            assert!(
                matches!(e, SegmentError::OffsetsNotAscending { offset: 112, .. }),
                "{e}"
            );
            let mut bad = batch_at(200, 2, 10).as_bytes().to_vec();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            let bad = RecordBatch::parse(Bytes::from(bad)).unwrap();
            let e = append(&mut w, &[batch_at(150, 1, 10), bad]).unwrap_err();
            assert!(
                matches!(e, SegmentError::Batch(BatchError::BadCrc { .. })),
                "{e}"
            );
            assert_eq!(
                (w.base_offset(), w.next_offset()),
                (100, 104),
                "copy={copy}"
            );
            let sealed = w.seal(1).unwrap();
            assert_eq!(sealed.info.message_count, 4);
            SegmentReader::open(sealed.segment.to_bytes()).unwrap();
        }
    }

    #[test]
    fn offsets_at_the_end_of_i64_are_refused_not_overflowed() {
        let (records, batches) = blob(&[batch_at(i64::MAX - 1, 2, 10)]);
        let mut w = SegmentWriter::new(0);
        assert!(
            w.append_at_offsets(records.clone(), records.len(), &batches)
                .is_err()
        );
        assert!(w.append_copy_at_offsets(&batches).is_err());
        assert_eq!((w.base_offset(), w.next_offset()), (0, 0));
    }

    #[test]
    fn a_failed_first_append_keeps_the_base_offset() {
        let mut w = SegmentWriter::new(7);
        let mut bad = batch_at(500, 2, 10).as_bytes().to_vec();
        bad[70] ^= 1;
        let bad = RecordBatch::parse(Bytes::from(bad)).unwrap();
        assert!(w.append_copy_at_offsets(&[bad]).is_err());
        assert_eq!((w.base_offset(), w.next_offset()), (7, 7));
    }

    /// A batch large enough to cross several copy blocks.
    fn big_batch(n: usize) -> RecordBatch {
        let mut b = BatchBuilder::new(0, 70);
        let value = vec![b'x'; 1000];
        for _ in 0..n {
            b.push(None, Some(&value), &[]);
        }
        RecordBatch::parse(b.finish()).unwrap()
    }

    #[test]
    fn verifying_append_matches_validate_then_append() {
        let batches = [batch(3, 50), big_batch(100), batch(1, 60)];
        let mut plain = SegmentWriter::new(1000);
        for b in &batches {
            b.validate().unwrap();
            plain.append(b).unwrap();
        }
        let mut verifying = SegmentWriter::new(1000);
        assert_eq!(verifying.append_verifying(&batches[..2]).unwrap(), 1000);
        assert_eq!(verifying.append_verifying(&batches[2..]).unwrap(), 1103);
        let (a, b) = (plain.seal(5).unwrap(), verifying.seal(5).unwrap());
        assert_eq!(a.segment.to_bytes(), b.segment.to_bytes());
        assert_eq!(a.index, b.index);
        assert_eq!(a.info, b.info);
        SegmentReader::open(b.segment.to_bytes()).expect("body CRC and framing check out");
    }

    #[test]
    fn verifying_append_of_a_corrupt_batch_changes_nothing() {
        let good = big_batch(50);
        let mut raw = big_batch(60).as_bytes().to_vec();
        let last = raw.len() - 1;
        raw[last] ^= 0x01; // a record byte: covered by the CRC
        let bad = RecordBatch::parse(Bytes::from(raw)).unwrap();

        let mut w = SegmentWriter::new(0);
        w.append_verifying(std::slice::from_ref(&good)).unwrap();
        let err = w.append_verifying(&[good.clone(), bad]).unwrap_err();
        match err {
            SegmentError::Batch(BatchError::BadCrc { position, .. }) => {
                assert_eq!(
                    position,
                    good.len(),
                    "position of the bad batch in the request"
                )
            }
            other => panic!("expected BadCrc, got {other}"),
        }
        // The good batch before the bad one was rolled back too.
        assert_eq!(w.next_offset(), 50);
        w.append_verifying(std::slice::from_ref(&good)).unwrap();
        let mut expected = SegmentWriter::new(0);
        expected.append(&good).unwrap();
        expected.append(&good).unwrap();
        let (a, b) = (expected.seal(1).unwrap(), w.seal(1).unwrap());
        assert_eq!(a.segment.to_bytes(), b.segment.to_bytes());
        assert_eq!(a.index, b.index);
        assert_eq!(a.info, b.info);
    }

    /// `batches` concatenated, stamped from `first` as a produce request's
    /// buffer would be.
    fn stamped(batches: &[&RecordBatch], first: i64) -> (Bytes, Vec<RecordBatch>) {
        let mut buf = BytesMut::new();
        for b in batches {
            buf.extend_from_slice(b.as_bytes());
        }
        crate::batch::stamp_base_offsets(&mut buf, first);
        let records = buf.freeze();
        let parsed = Batches::new(records.clone())
            .collect::<Result<_, _>>()
            .unwrap();
        (records, parsed)
    }

    #[test]
    fn referenced_runs_and_copies_make_the_same_segment() {
        let (a, b, c, d) = (batch(3, 50), big_batch(100), big_batch(20), batch(1, 60));
        let mut copied = SegmentWriter::new(1000);
        for x in [&a, &b, &c, &d] {
            copied.append(x).unwrap();
        }
        // A copy, a referenced run of two, a copy (into a new arena).
        let mut mixed = SegmentWriter::with_buffer(1000, BytesMut::new());
        assert_eq!(
            mixed.append_verifying(std::slice::from_ref(&a)).unwrap(),
            1000
        );
        let (run, parsed) = stamped(&[&b, &c], mixed.next_offset());
        assert_eq!(
            mixed.append_stamped(run.clone(), 1 << 20, &parsed).unwrap(),
            1003
        );
        mixed.give_arena(BytesMut::with_capacity(4096));
        assert_eq!(
            mixed.append_verifying(std::slice::from_ref(&d)).unwrap(),
            1123
        );
        let (x, y) = (copied.seal(9).unwrap(), mixed.seal(9).unwrap());
        assert_eq!(x.segment.to_bytes(), y.segment.to_bytes());
        assert_eq!((x.index, x.info), (y.index, y.info));
        // header, copy, run, copy, footer; the run was not copied.
        let pieces = y.segment.pieces();
        assert_eq!(pieces.len(), 5);
        // The run's whole 1 MiB buffer counts as held; the rest at length.
        assert_eq!(y.segment.held(), y.segment.len() - run.len() + (1 << 20));
        assert_eq!(pieces[2].as_ptr(), run.as_ptr());
        // Slices across pieces give back whole batches at their positions.
        let body = HEADER_LEN..y.segment.len() - FOOTER_LEN;
        let mut offsets = Vec::new();
        for (at, part) in y.segment.slices(body.clone()) {
            for batch in Batches::starting_at(part, at).validated() {
                offsets.push(batch.unwrap().base_offset());
            }
        }
        assert_eq!(offsets, [1000, 1003, 1103, 1123]);
        let from_run: Vec<usize> = y
            .segment
            .slices(HEADER_LEN + a.len() + 10..body.end)
            .map(|(at, part)| at + part.len())
            .collect();
        assert_eq!(
            from_run,
            [HEADER_LEN + a.len() + b.len() + c.len(), body.end]
        );
    }

    #[test]
    fn a_corrupt_referenced_run_changes_nothing() {
        let good = big_batch(50);
        let mut w = SegmentWriter::new(0);
        w.append_verifying(std::slice::from_ref(&good)).unwrap();
        let (run, _) = stamped(&[&good, &good], w.next_offset());
        let mut raw = run.to_vec();
        let last = raw.len() - 1;
        raw[last] ^= 0x01;
        let bad = Bytes::from(raw);
        let parsed: Vec<RecordBatch> = Batches::new(bad.clone()).collect::<Result<_, _>>().unwrap();
        match w.append_stamped(bad, 0, &parsed).unwrap_err() {
            SegmentError::Batch(BatchError::BadCrc { position, .. }) => {
                assert_eq!(position, good.len(), "the second batch of the run")
            }
            other => panic!("expected BadCrc, got {other}"),
        }
        assert_eq!((w.next_offset(), w.body_len()), (50, good.len()));
        let sealed = w.seal(1).unwrap();
        SegmentReader::open(sealed.segment.to_bytes()).unwrap();
        assert_eq!(sealed.info.last_offset, 49);
    }

    #[test]
    fn writer_and_reader_agree() {
        let s = sealed();
        assert_eq!(s.info.last_offset, 1153);
        assert_eq!(s.info.message_count, 154);
        assert_eq!((s.info.min_timestamp, s.info.max_timestamp), (40, 60));
        let r = SegmentReader::open(s.segment.to_bytes()).unwrap();
        assert_eq!(r.header().created_ms, 777);
        assert_eq!(r.batch_count(), 3);
        let offsets: Vec<_> = r.batches().map(|b| b.base_offset()).collect();
        assert_eq!(offsets, vec![1000, 1003, 1153]);

        // The index finds the batch to start a ranged read from.
        let idx = Index::parse(&s.index).unwrap();
        let e = idx.lookup(1153).unwrap();
        assert_eq!(
            e.offset, 1153,
            "150 records since the first entry -> entry at 1153"
        );
        let range = s
            .segment
            .to_bytes()
            .slice(e.position as usize..s.segment.len() - FOOTER_LEN);
        let got: Vec<_> = batches_in_range(range, e.position as usize)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].base_offset(), 1153);
    }

    #[test]
    fn every_kind_of_corruption_is_named() {
        let s = sealed().segment.to_bytes().to_vec();
        let open = |v: Vec<u8>| SegmentReader::open(Bytes::from(v));
        assert_eq!(
            open(s[..40].to_vec()).unwrap_err(),
            SegmentError::TooShort { len: 40 }
        );
        let mut v = s.clone();
        v[0] = b'X';
        assert!(matches!(
            open(v).unwrap_err(),
            SegmentError::BadMagic { .. }
        ));
        let mut v = s.clone();
        v[5] = 2;
        assert_eq!(
            open(v).unwrap_err(),
            SegmentError::UnsupportedVersion { version: 2 }
        );
        assert!(matches!(
            open(s[..s.len() - 1].to_vec()).unwrap_err(),
            SegmentError::BadFooterMagic { .. }
        ));
        let mut v = s.clone();
        v[100] ^= 1;
        assert!(matches!(open(v).unwrap_err(), SegmentError::BodyCrc { .. }));
        let mut v = s.clone();
        v[17] ^= 1; // message count
        assert!(matches!(
            open(v).unwrap_err(),
            SegmentError::MessageCountMismatch { .. }
        ));
        let mut v = s.clone();
        let n = v.len();
        v[n - 5] ^= 1; // last offset
        assert!(matches!(
            open(v).unwrap_err(),
            SegmentError::LastOffsetMismatch { .. }
        ));

        // A batch whose own CRC is broken, with the body CRC recomputed to match:
        // only the per-batch check catches it.
        let mut v = s.clone();
        v[HEADER_LEN + 70] ^= 1;
        let body_end = v.len() - FOOTER_LEN;
        let crc = crc32c::crc32c(&v[HEADER_LEN..body_end]);
        v[body_end..body_end + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            open(v).unwrap_err(),
            SegmentError::Batch(BatchError::BadCrc {
                position: HEADER_LEN,
                ..
            })
        ));
    }

    #[test]
    fn empty_writer_does_not_seal() {
        assert_eq!(
            SegmentWriter::new(0).seal(0).unwrap_err(),
            SegmentError::Empty
        );
    }
}
