//! One partition's log on its owner shard: appends into an open segment,
//! hands sealed segments to the flusher, serves reads.
//!
//! Offsets are assigned at append time, continuing from the last assigned
//! offset; they become visible (the high watermark moves) only when the
//! segment holding them is in the object store and committed in metadata.
//! If a flush fails, every record appended after the last commit is refused
//! with a retriable error and assignment restarts at the committed offset, so
//! the log never has gaps or records that were acknowledged but lost.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::channel::oneshot;
use kafscale_codec::batch::{Batches, RecordBatch, stamp_base_offsets};
use kafscale_codec::index::Index;
use kafscale_codec::kfs::{
    FOOTER_LEN, HEADER_LEN, SealedSegment, SegmentError, SegmentWriter, batches_in_range,
};
use kafscale_codec::records::RecordError;
use kafscale_s3::ObjectStore;

use super::cluster::Claim;
use super::errors::ErrorCode;
use super::pool::BufferPool;
use super::shard::{CachedSegment, Shard};
use crate::meta::{AbortedTxn, PartitionState, SegmentRecord, keys};

/// Records of one produce partition at least this large are kept in the
/// segment where they arrived instead of being copied into its arena
/// (when they are also most of their buffer; see [`ProducedRecords`]).
const REFERENCE_MIN: usize = 64 * 1024;

/// One produce partition's records, as a piece of the request's buffer.
pub struct ProducedRecords {
    bytes: BytesMut,
    /// The size of the buffer they are part of, when they may stay in it:
    /// at least [`REFERENCE_MIN`] bytes and at least half of that buffer,
    /// since a segment keeping them keeps all of it alive (and the fetch
    /// cache counts all of it), so a small piece never pins a large frame.
    in_place: Option<usize>,
    /// What checking their records may decompress: their share of their
    /// request's budget ([`ProducedRecords::share_of`]).
    decompress_budget: usize,
}

impl ProducedRecords {
    /// `bytes`, part of a buffer of `allocation` bytes.
    pub fn new(bytes: BytesMut, allocation: usize) -> Self {
        let len = bytes.len();
        let in_place = (len >= REFERENCE_MIN && len.saturating_mul(2) >= allocation)
            .then_some(allocation.max(len));
        Self {
            bytes,
            in_place,
            decompress_budget: kafscale_codec::records::decompression_budget(len),
        }
    }

    /// Takes this partition's share of what its whole request (`total`
    /// bytes of records) may decompress to be checked: 64 times what it
    /// sent, at least 16 MiB for the request, shared by size, so a request
    /// of many partitions gets no more than one of their sum.
    pub fn share_of(&mut self, total: usize) {
        use kafscale_codec::records::{MAX_DECOMPRESSED, MIN_DECOMPRESSION_BUDGET};
        let len = self.bytes.len();
        let floor =
            (MIN_DECOMPRESSION_BUDGET as u128 * len as u128 / total.max(1) as u128) as usize;
        self.decompress_budget = len
            .saturating_mul(64)
            .saturating_add(floor)
            .min(MAX_DECOMPRESSED);
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl OpenSegment {
    /// The segment appends go into, opened at `next` (the log's end) if
    /// none is. (Over the field, so the log's other fields stay borrowable.)
    fn get_or_open(open: &mut Option<Self>, next: i64) -> &mut Self {
        open.get_or_insert_with(|| OpenSegment {
            writer: SegmentWriter::with_buffer(next, BytesMut::new()),
            opened: Instant::now(),
            acks: Vec::new(),
            producer_batches: Vec::new(),
            aborted: Vec::new(),
        })
    }
}

impl OpenSegment {
    /// Before copying `len` bytes: an arena with room for the rest of the
    /// segment, so copies never regrow it.
    fn make_room(&mut self, len: usize, segment_bytes: usize, pool: &BufferPool) {
        if self.writer.arena_spare() < len {
            let rest = (segment_bytes + segment_bytes / 8).saturating_sub(self.writer.body_len());
            self.writer
                .give_arena(pool.take(rest.max(len).max(64 * 1024)));
        }
    }
}

/// Answer to an appending producer once its records are durable (or not).
pub type Durable = oneshot::Receiver<Result<(), ErrorCode>>;

pub struct PartitionLog {
    pub topic: String,
    pub partition: u32,
    /// This broker's ownership (clusters only); see [`super::cluster`].
    pub claim: Option<Claim>,
    /// When it was loaded, so a fresh owner is not asked to hand over at once.
    pub loaded: Instant,
    state: RefCell<LogState>,
    /// Written by a mirror (append_at_offsets): see [`PartitionLog::is_mirrored`].
    mirrored: std::cell::Cell<bool>,
    /// Fetches waiting for the high watermark to move.
    watchers: RefCell<Vec<oneshot::Sender<()>>>,
}

struct LogState {
    committed: PartitionState,
    segments: Vec<SegmentRecord>,
    open: Option<OpenSegment>,
    next_offset: i64,
    producers: HashMap<i64, Producer>,
    txns: Txns,
    /// A mirror's source log start, for a log still empty (see
    /// [`SegmentCommit::log_start`](crate::meta::SegmentCommit)).
    start_hint: Option<i64>,
}

/// Transactions in the log (a mirror copies its source's as they are):
/// what read_committed fetches need, kept from the segment records.
#[derive(Debug, Default)]
pub(crate) struct Txns {
    /// Open after everything appended, durable or not: producer id -> the
    /// offset of its transaction's first batch.
    open: HashMap<i64, i64>,
    /// Open as of the committed end.
    committed_open: HashMap<i64, i64>,
    /// Every committed aborted transaction, in abort marker order.
    aborted: Vec<AbortedTxn>,
}

impl Txns {
    fn from_segments(segments: &[SegmentRecord]) -> Self {
        let committed_open: HashMap<i64, i64> = segments
            .last()
            .map(|s| s.open_txns.iter().copied().collect())
            .unwrap_or_default();
        Self {
            open: committed_open.clone(),
            committed_open,
            aborted: segments
                .iter()
                .flat_map(|s| s.aborted.iter().copied())
                .collect(),
        }
    }

    /// Transactions open before `open` (producer id, first offset) and
    /// nothing else: to follow a segment's batches from its predecessor's end.
    pub(crate) fn following(open: &[(i64, i64)]) -> Self {
        let open: HashMap<i64, i64> = open.iter().copied().collect();
        Self {
            committed_open: open.clone(),
            open,
            aborted: Vec::new(),
        }
    }

    /// Open transactions, (producer id, first offset), by first offset.
    pub(crate) fn open_now(&self) -> Vec<(i64, i64)> {
        let mut v: Vec<(i64, i64)> = self.open.iter().map(|(p, f)| (*p, *f)).collect();
        v.sort_by_key(|&(pid, first)| (first, pid));
        v
    }

    /// Follows appended batches: a transactional batch opens its producer's
    /// transaction, a control batch closes it; returns the aborted ones.
    pub(crate) fn follow(&mut self, batches: &[RecordBatch]) -> Vec<AbortedTxn> {
        let mut aborted = Vec::new();
        for b in batches {
            let pid = b.producer_id();
            if b.is_control() {
                let Some(first_offset) = self.open.remove(&pid) else {
                    continue; // its data came before the copy began
                };
                if control_type(b) == Some(CONTROL_ABORT) {
                    aborted.push(AbortedTxn {
                        producer_id: pid,
                        first_offset,
                        last_offset: b.base_offset(),
                    });
                }
            } else if b.is_transactional() {
                self.open.entry(pid).or_insert(b.base_offset());
            }
        }
        aborted
    }
}

/// Kafka's control record types (the key of a control batch's record).
const CONTROL_ABORT: i16 = 0;

/// The type of a control batch's marker: its record's key is
/// (version: i16, type: i16).
fn control_type(b: &RecordBatch) -> Option<i16> {
    let records = b.records().ok()?;
    let key = records.first()?.key.as_ref()?;
    Some(i16::from_be_bytes([*key.get(2)?, *key.get(3)?]))
}

struct OpenSegment {
    writer: SegmentWriter,
    opened: Instant,
    acks: Vec<oneshot::Sender<Result<(), ErrorCode>>>,
    producer_batches: Vec<(i64, ProducerBatch)>,
    /// Transactions aborted by markers in this segment.
    aborted: Vec<AbortedTxn>,
}

/// Idempotent producer state (per producer id) of one partition.
#[derive(Debug, Clone, Default)]
struct Producer {
    epoch: i16,
    /// Last sequence appended (may not be durable yet).
    last_seq: Option<i32>,
    /// Recent durable batches, for answering retries with their offsets.
    recent: VecDeque<ProducerBatch>,
}

#[derive(Debug, Clone, Copy)]
struct ProducerBatch {
    epoch: i16,
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
}

/// A segment the flusher has taken from a log.
pub struct Flushing {
    pub sealed: SealedSegment,
    pub expected: PartitionState,
    acks: Vec<oneshot::Sender<Result<(), ErrorCode>>>,
    producer_batches: Vec<(i64, ProducerBatch)>,
    aborted: Vec<AbortedTxn>,
    open_txns: Vec<(i64, i64)>,
    /// Where the log starts, when this is its first segment (a mirror).
    pub log_start: Option<i64>,
    /// What the upload's objects are, in a versioned bucket.
    pub versions: Option<crate::meta::ObjectVersions>,
}

impl Flushing {
    /// The segment's record in the metadata store.
    pub fn record(&self) -> SegmentRecord {
        SegmentRecord {
            aborted: self.aborted.clone(),
            open_txns: self.open_txns.clone(),
            versions: self.versions.clone(),
            ..SegmentRecord::from(self.sealed.info)
        }
    }
}

/// Outcome of an append for one partition of a produce request.
pub enum Appended {
    /// Appended at this base offset; wait for durability.
    Pending { base_offset: i64, durable: Durable },
    /// A retry of batches already durable: their original base offset.
    Duplicate { base_offset: i64 },
}

/// Records read for a fetch.
#[derive(Debug, Default)]
pub struct ReadResult {
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// read_committed: transactions aborted within the range read,
    /// (producer id, first offset).
    pub aborted: Vec<(i64, i64)>,
    pub chunks: Vec<Bytes>,
    pub bytes: usize,
}

impl PartitionLog {
    pub fn new(
        topic: String,
        partition: u32,
        committed: PartitionState,
        segments: Vec<SegmentRecord>,
        claim: Option<Claim>,
    ) -> Self {
        let txns = Txns::from_segments(&segments);
        Self {
            topic,
            partition,
            claim,
            loaded: Instant::now(),
            state: RefCell::new(LogState {
                committed,
                segments,
                open: None,
                next_offset: committed.next_offset,
                producers: HashMap::new(),
                txns,
                start_hint: None,
            }),
            mirrored: std::cell::Cell::new(false),
            watchers: RefCell::default(),
        }
    }

    /// Rebuilds idempotent-producer state from the newest committed batches,
    /// so a retry of a batch whose acknowledgement was lost in a crash is
    /// recognised as a duplicate after restart.
    pub fn restore_producers(&self, batches: &[RecordBatch]) {
        let mut st = self.state.borrow_mut();
        for b in batches.iter().filter(|b| b.producer_id() >= 0) {
            let p = st.producers.entry(b.producer_id()).or_default();
            let first_seq = b.base_sequence();
            let last_seq = first_seq.wrapping_add(b.record_count() - 1);
            if b.producer_epoch() > p.epoch {
                p.recent.clear();
            }
            p.epoch = b.producer_epoch();
            p.last_seq = Some(last_seq);
            p.recent.push_back(ProducerBatch {
                epoch: p.epoch,
                first_seq,
                last_seq,
                base_offset: b.base_offset(),
            });
            while p.recent.len() > 5 {
                p.recent.pop_front();
            }
        }
    }

    pub fn high_watermark(&self) -> i64 {
        self.state.borrow().committed.next_offset
    }

    pub fn log_start_offset(&self) -> i64 {
        self.state.borrow().committed.log_start_offset
    }

    /// Logs why a produce batch is refused; the client gets CORRUPT_MESSAGE.
    fn refuse_corrupt(&self, e: &dyn std::fmt::Display) -> ErrorCode {
        tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "refusing corrupt produce batch");
        ErrorCode::CORRUPT_MESSAGE
    }

    /// Validates and appends the batches of one produce partition. Records
    /// that may stay in place (see [`ProducedRecords`]) become a piece of
    /// the segment as they are, their offsets written into them; others are
    /// copied into the segment's arena, so a few small batches never keep a
    /// large request buffer alive.
    pub fn append(
        &self,
        records: ProducedRecords,
        segment_bytes: usize,
        pool: &BufferPool,
    ) -> Result<Appended, ErrorCode> {
        let ProducedRecords {
            bytes: mut records,
            in_place,
            decompress_budget,
        } = records;
        if in_place.is_some() {
            // The offsets the writer assigns next. Only kept if appended.
            stamp_base_offsets(&mut records, self.state.borrow().next_offset);
        }
        let records = records.freeze();
        // Framing, magic and record counts now; each CRC32C is checked during
        // the append (while copying, for copies: one pass over the bytes).
        let batches: Vec<RecordBatch> = Batches::new(records.clone())
            .collect::<Result<_, _>>()
            .map_err(|e| self.refuse_corrupt(&e))?;
        if batches.is_empty() {
            return Err(ErrorCode::CORRUPT_MESSAGE);
        }
        if batches.iter().any(|b| b.compression().is_err()) {
            return Err(ErrorCode::CORRUPT_MESSAGE);
        }
        // As Kafka checks a client's batches: at least one record, and as
        // many offsets as records (a one-record batch claiming 2^31 offsets
        // would move the log's end by that much).
        if let Some(b) = batches
            .iter()
            .find(|b| b.record_count() <= 0 || i64::from(b.record_count()) != b.offset_span())
        {
            tracing::warn!(topic = %self.topic, partition = self.partition, records = b.record_count(), last_offset_delta = b.last_offset_delta(), "refusing a produce batch whose record count and offset range disagree");
            return Err(ErrorCode::INVALID_RECORD);
        }
        // And as many records as it declares, each well framed (Kafka's log
        // validator walks them too; compressed ones are decompressed in a
        // stream, not kept).
        let mut budget = decompress_budget;
        for b in &batches {
            if let Err(e) = b.check_records_within(&mut budget) {
                // A damaged batch is corrupt first (its CRC is otherwise
                // checked while it is appended).
                if let Err(crc) = b.validate() {
                    return Err(self.refuse_corrupt(&crc));
                }
                tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "refusing a produce batch whose records are not what its header says");
                // The CRC is right: what is wrong is what the client
                // built, and sending it again gives the same answer.
                return Err(match e {
                    RecordError::UnknownCodec { .. } => ErrorCode::CORRUPT_MESSAGE,
                    RecordError::TooLarge { .. } => ErrorCode::MESSAGE_TOO_LARGE,
                    RecordError::Decompress { .. }
                    | RecordError::Malformed { .. }
                    | RecordError::CountMismatch { .. } => ErrorCode::INVALID_RECORD,
                });
            }
        }
        let mut state = self.state.borrow_mut();
        let st = &mut *state;
        // Idempotence: all batches of a request come from one producer. The
        // producer's state changes only once the batches are appended.
        let first = &batches[0];
        let pid = first.producer_id();
        let mut accepted_seq = None;
        if pid >= 0 {
            let epoch = first.producer_epoch();
            let first_seq = first.base_sequence();
            let count: i64 = batches.iter().map(|b| i64::from(b.record_count())).sum();
            let Ok(count) = i32::try_from(count) else {
                return Err(ErrorCode::INVALID_RECORD);
            };
            let last_seq = first_seq.wrapping_add(count - 1);
            let known = st.producers.get(&pid);
            if let Some(dup) = known.and_then(|p| {
                p.recent.iter().find(|b| {
                    b.epoch == epoch && b.first_seq == first_seq && b.last_seq == last_seq
                })
            }) {
                // A retry of durable batches: answered as before, if intact.
                if let Some(e) = batches.iter().find_map(|b| b.validate().err()) {
                    return Err(self.refuse_corrupt(&e));
                }
                return Ok(Appended::Duplicate {
                    base_offset: dup.base_offset,
                });
            }
            let (known_epoch, known_last) = known.map_or((0, None), |p| (p.epoch, p.last_seq));
            if epoch < known_epoch {
                return Err(ErrorCode::INVALID_PRODUCER_EPOCH);
            }
            let in_order = match (epoch > known_epoch, known_last) {
                (true, _) => first_seq == 0,
                // Unknown producer (new, or state lost in a restart): accept.
                (false, None) => true,
                (false, Some(last)) => {
                    first_seq == last.wrapping_add(1) || (last == i32::MAX && first_seq == 0)
                }
            };
            if !in_order {
                return Err(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER);
            }
            accepted_seq = Some((pid, epoch, first_seq, last_seq));
        }
        let open = OpenSegment::get_or_open(&mut st.open, st.next_offset);
        let appended = if let Some(held) = in_place {
            open.writer.append_stamped(records, held, &batches)
        } else {
            open.make_room(records.len(), segment_bytes, pool);
            open.writer.append_verifying(&batches)
        };
        // All or nothing: a bad CRC anywhere appends none of the batches.
        let base_offset = appended.map_err(|e| match e {
            SegmentError::TooLarge { .. } => ErrorCode::MESSAGE_TOO_LARGE,
            // Until the open segment is flushed (within the flush
            // interval): retriable, and a producer retries.
            SegmentError::TooManyRecords { .. } => ErrorCode::KAFKA_STORAGE_ERROR,
            e => self.refuse_corrupt(&e),
        })?;
        if let Some((pid, epoch, first_seq, last_seq)) = accepted_seq {
            let p = st.producers.entry(pid).or_default();
            if epoch > p.epoch {
                p.recent.clear();
            }
            p.epoch = epoch;
            p.last_seq = Some(last_seq);
            open.producer_batches.push((
                pid,
                ProducerBatch {
                    epoch,
                    first_seq,
                    last_seq,
                    base_offset,
                },
            ));
        }
        let (tx, rx) = oneshot::channel();
        open.acks.push(tx);
        st.next_offset = open.writer.next_offset();
        Ok(Appended::Pending {
            base_offset,
            durable: rx,
        })
    }

    /// Appends batches at the offsets they carry (a mirror copying another
    /// cluster's log byte for byte), gaps allowed, never behind the log's
    /// end. The batches (e.g. slices of a fetch response from the source)
    /// are copied into the segment's arena, each CRC32C checked while
    /// copying, so the response frame is freed at once; all or nothing. No
    /// producer state is kept: the source's producer fields are copied as
    /// they are.
    /// `source_log_start`: the source's log start, kept as this log's
    /// start while the log is empty (it may be inside the first batch).
    pub fn append_at_offsets(
        &self,
        batches: &[RecordBatch],
        source_log_start: Option<i64>,
        segment_bytes: usize,
        pool: &BufferPool,
    ) -> Result<Appended, ErrorCode> {
        if batches.is_empty() || batches.iter().any(|b| b.compression().is_err()) {
            return Err(ErrorCode::CORRUPT_MESSAGE);
        }
        let len = batches.iter().map(|b| b.len()).sum();
        self.mirrored.set(true);
        let mut state = self.state.borrow_mut();
        let st = &mut *state;
        let open = OpenSegment::get_or_open(&mut st.open, st.next_offset);
        open.make_room(len, segment_bytes, pool);
        let base_offset = open
            .writer
            .append_copy_at_offsets(batches)
            .map_err(|e| match e {
                SegmentError::TooLarge { .. } => ErrorCode::MESSAGE_TOO_LARGE,
                // Until the open segment is flushed (within the flush
                // interval): retriable, and a producer retries.
                SegmentError::TooManyRecords { .. } => ErrorCode::KAFKA_STORAGE_ERROR,
                e => self.refuse_corrupt(&e),
            })?;
        open.aborted.extend(st.txns.follow(batches));
        if st.segments.is_empty() && st.committed.next_offset == st.committed.log_start_offset {
            st.start_hint = st.start_hint.or(source_log_start);
        }
        let (tx, rx) = oneshot::channel();
        open.acks.push(tx);
        st.next_offset = open.writer.next_offset();
        Ok(Appended::Pending {
            base_offset,
            durable: rx,
        })
    }

    /// Whether a mirror writes this log. Its sealed segments skip the
    /// fetch cache: a copy is a backup first, read (replayed) from S3, so
    /// its arenas go back to the shard's pool as soon as they are durable
    /// instead of filling the cache that live consumers of produced topics
    /// read from.
    pub fn is_mirrored(&self) -> bool {
        self.mirrored.get()
    }

    /// The offset the next append gets: after everything appended, durable
    /// or not (the committed next offset again after a failed flush).
    pub fn next_offset(&self) -> i64 {
        self.state.borrow().next_offset
    }

    /// Whether the open segment should be flushed now, and when it will be due.
    pub fn flush_due(
        &self,
        now: Instant,
        segment_bytes: usize,
        interval: std::time::Duration,
    ) -> (bool, Option<Instant>) {
        let st = self.state.borrow();
        match &st.open {
            None => (false, None),
            Some(o) => {
                let deadline = o.opened + interval;
                (
                    o.writer.body_len() >= segment_bytes || deadline <= now,
                    Some(deadline),
                )
            }
        }
    }

    /// Seals the open segment for upload.
    pub fn take_for_flush(&self, now_ms: i64) -> Option<Flushing> {
        let mut st = self.state.borrow_mut();
        let open = st.open.take()?;
        let expected = st.committed;
        match open.writer.seal(now_ms) {
            Ok(sealed) => {
                // Everything appended is in this segment: what is open now
                // is what is open at its end.
                let mut open_txns: Vec<(i64, i64)> =
                    st.txns.open.iter().map(|(p, f)| (*p, *f)).collect();
                open_txns.sort_unstable();
                Some(Flushing {
                    sealed,
                    expected,
                    acks: open.acks,
                    producer_batches: open.producer_batches,
                    aborted: open.aborted,
                    open_txns,
                    log_start: st.start_hint,
                    versions: None,
                })
            }
            Err(_) => None,
        }
    }

    /// The flushed segment is durable and committed.
    pub fn committed(&self, f: Flushing, state: PartitionState) -> SegmentRecord {
        let record = f.record();
        {
            let mut st = self.state.borrow_mut();
            st.committed = state;
            st.start_hint = None;
            st.txns.aborted.extend(f.aborted.iter().copied());
            st.txns.committed_open = f.open_txns.iter().copied().collect();
            st.segments.push(record.clone());
            for (pid, batch) in f.producer_batches {
                let p = st.producers.entry(pid).or_default();
                p.recent.push_back(batch);
                while p.recent.len() > 5 {
                    p.recent.pop_front();
                }
            }
        }
        for ack in f.acks {
            let _ignored = ack.send(Ok(()));
        }
        for w in self.watchers.borrow_mut().drain(..) {
            let _ignored = w.send(());
        }
        record
    }

    /// The flush failed: refuse everything not yet durable and restart offset
    /// assignment at the committed offset.
    pub fn flush_failed(&self, f: Flushing, code: ErrorCode, new_state: Option<PartitionState>) {
        for ack in f.acks {
            let _ignored = ack.send(Err(code));
        }
        let mut st = self.state.borrow_mut();
        if let Some(s) = new_state {
            st.committed = s;
        }
        self.reset_locked(&mut st, code);
    }

    /// Refuses every pending append (topic deleted, ownership lost).
    pub fn fail_pending(&self, code: ErrorCode) {
        let mut st = self.state.borrow_mut();
        self.reset_locked(&mut st, code);
    }

    fn reset_locked(&self, st: &mut LogState, code: ErrorCode) {
        if let Some(open) = st.open.take() {
            for ack in open.acks {
                let _ignored = ack.send(Err(code));
            }
        }
        st.next_offset = st.committed.next_offset;
        st.txns.open = st.txns.committed_open.clone();
        // Sequences appended but not durable are forgotten.
        for p in st.producers.values_mut() {
            p.last_seq = p.recent.back().map(|b| b.last_seq);
        }
    }

    /// A receiver that fires when the high watermark next moves.
    pub fn watch(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut w = self.watchers.borrow_mut();
        w.retain(|s| !s.is_canceled());
        w.push(tx);
        rx
    }

    /// Committed segment containing `offset`.
    fn segment_for(&self, offset: i64) -> Option<SegmentRecord> {
        let st = self.state.borrow();
        let i = st.segments.partition_point(|s| s.base_offset <= offset);
        i.checked_sub(1)
            .map(|i| st.segments[i].clone())
            .filter(|s| s.last_offset >= offset)
    }

    pub fn segments(&self) -> Vec<SegmentRecord> {
        self.state.borrow().segments.clone()
    }

    /// Reads whole batches from `offset` on, up to `max_bytes`, across
    /// segment boundaries. With `min_one` the first batch comes even when
    /// it is larger (Kafka's rule for a fetch answer's first batch);
    /// without, a batch larger than what is left stays for a later read.
    /// What a read holds beyond the bytes it returns is at most
    /// [`READ_SLACK`] (the unused end of a ranged GET).
    pub async fn read(
        &self,
        shard: &Shard,
        mut offset: i64,
        max_bytes: usize,
        min_one: bool,
        read_committed: bool,
    ) -> Result<ReadResult, ErrorCode> {
        let (hw, start) = {
            let st = self.state.borrow();
            (st.committed.next_offset, st.committed.log_start_offset)
        };
        let lso = self.last_stable_offset();
        let mut out = ReadResult {
            high_watermark: hw,
            last_stable_offset: lso,
            log_start_offset: start,
            ..ReadResult::default()
        };
        if offset > hw || offset < start {
            return Err(ErrorCode::OFFSET_OUT_OF_RANGE);
        }
        // read_committed sees nothing of a transaction still open.
        let end = if read_committed { lso } else { hw };
        let first = offset;
        // The largest batch read so far.
        let mut largest = 0;
        'segments: while offset < end && (out.bytes < max_bytes || min_one && out.chunks.is_empty())
        {
            let Some(seg) = self.segment_for(offset) else {
                // Offsets below the first segment's base (a log that starts late).
                let next = self
                    .state
                    .borrow()
                    .segments
                    .iter()
                    .find(|s| s.base_offset > offset)
                    .map(|s| s.base_offset);
                match next {
                    Some(n) => {
                        offset = n;
                        continue;
                    }
                    None => break,
                }
            };
            let want = max_bytes.saturating_sub(out.bytes);
            if want < largest {
                // The next batch very likely does not fit: a ranged GET of
                // the rest would be read for nothing.
                break;
            }
            let whole_first = min_one && out.chunks.is_empty();
            let batches = self
                .read_segment(shard, &seg, offset, want, whole_first)
                .await?;
            if batches.is_empty() {
                break;
            }
            for b in batches {
                if b.base_offset() >= end {
                    break 'segments;
                }
                offset = b.last_offset() + 1;
                largest = largest.max(b.len());
                out.bytes += b.len();
                out.chunks.push(b.into_bytes());
            }
        }
        if read_committed && !out.chunks.is_empty() {
            let last = offset - 1;
            out.aborted = self
                .state
                .borrow()
                .txns
                .aborted
                .iter()
                .filter(|a| a.first_offset <= last && a.last_offset >= first)
                .map(|a| (a.producer_id, a.first_offset))
                .collect();
        }
        Ok(out)
    }

    /// The first offset of the oldest transaction still open at the
    /// committed end, else the high watermark.
    pub fn last_stable_offset(&self) -> i64 {
        let st = self.state.borrow();
        let hw = st.committed.next_offset;
        st.txns
            .committed_open
            .values()
            .min()
            .map_or(hw, |&first| first.min(hw))
    }

    async fn read_segment(
        &self,
        shard: &Shard,
        seg: &SegmentRecord,
        offset: i64,
        want: usize,
        whole_first: bool,
    ) -> Result<Vec<RecordBatch>, ErrorCode> {
        let cached = shard
            .cache
            .borrow()
            .get(&self.topic, self.partition, seg.base_offset);
        if let Some(c) = cached {
            let pos = c
                .index
                .lookup(offset)
                .map_or(HEADER_LEN, |e| e.position as usize);
            let end = c.data.len() - FOOTER_LEN;
            // Pieces hold whole batches; a fetch may take several pieces.
            let mut taken = Taken::default();
            for (at, piece) in c.data.slices(pos.min(end)..end) {
                if !taken.add(Batches::starting_at(piece, at), offset, want, whole_first)? {
                    break;
                }
            }
            return Ok(taken.batches);
        }
        let (kfs_key, index_key) = keys::segment_object(
            shard.store_namespace(),
            &self.topic,
            self.partition,
            seg.base_offset,
        );
        let index = shard
            .cache
            .borrow()
            .index(&self.topic, self.partition, seg.base_offset);
        let index = match index {
            Some(i) => i,
            None => {
                let raw = shard
                    .store
                    .get_version(&index_key, seg.index_version())
                    .await
                    .map_err(|e| storage_error(&index_key, &e))?;
                let idx = Rc::new(Index::parse(&raw.body).map_err(|e| {
                    tracing::error!(key = %index_key, error = %e, "corrupt segment index");
                    ErrorCode::KAFKA_STORAGE_ERROR
                })?);
                shard.cache.borrow_mut().insert_index(
                    &self.topic,
                    self.partition,
                    seg.base_offset,
                    idx.clone(),
                );
                idx
            }
        };
        let pos = index
            .lookup(offset)
            .map_or(HEADER_LEN as u64, |e| e.position as u64);
        let body_end = seg.size.saturating_sub(FOOTER_LEN as u64);
        let span = (want as u64).saturating_add(READ_SLACK as u64);
        let end = body_end.min(pos.saturating_add(span));
        let data = shard
            .store
            .get_range_version(&kfs_key, seg.kfs_version(), pos..end)
            .await
            .map_err(|e| storage_error(&kfs_key, &e))?;
        shard.metrics.add_store_read(data.len());
        let mut batches = take_batches(
            Batches::starting_at(data.clone(), pos as usize)
                .validated()
                .allow_partial_tail(),
            offset,
            want,
            whole_first,
        )?;
        if batches.is_empty() && whole_first && end < body_end {
            // The first wanted batch is longer than the range read: read exactly it.
            let mut at = pos;
            for b in Batches::starting_at(data, pos as usize)
                .allow_partial_tail()
                .map_while(Result::ok)
            {
                at += b.len() as u64;
            }
            let head = shard
                .store
                .get_range_version(&kfs_key, seg.kfs_version(), at..(at + 12).min(body_end))
                .await
                .map_err(|e| storage_error(&kfs_key, &e))?;
            let len = head.get(8..12).map_or(0, |l| {
                i32::from_be_bytes([l[0], l[1], l[2], l[3]]).max(0) as u64
            }) + 12;
            let whole = shard
                .store
                .get_range_version(&kfs_key, seg.kfs_version(), at..(at + len).min(body_end))
                .await
                .map_err(|e| storage_error(&kfs_key, &e))?;
            batches = take_batches(
                batches_in_range(whole, at as usize),
                offset,
                usize::MAX,
                true,
            )?;
        }
        Ok(batches)
    }

    /// Offset for ListOffsets: -1 latest, -2 earliest, -3 max timestamp, else
    /// the first offset whose record timestamp is >= `timestamp`.
    pub async fn offset_for(&self, shard: &Shard, timestamp: i64) -> Result<(i64, i64), ErrorCode> {
        let (hw, start) = (self.high_watermark(), self.log_start_offset());
        match timestamp {
            -1 => return Ok((-1, hw)),
            -2 => return Ok((-1, start)),
            _ => {}
        }
        let segments = self.segments();
        let candidates: Vec<SegmentRecord> = if timestamp == -3 {
            let max = segments.iter().map(|s| s.max_timestamp).max();
            segments
                .iter()
                .filter(|s| Some(s.max_timestamp) == max)
                .take(1)
                .cloned()
                .collect()
        } else {
            segments
                .iter()
                .filter(|s| s.max_timestamp >= timestamp)
                .cloned()
                .collect()
        };
        for seg in candidates {
            let batches = self
                .read_segment(shard, &seg, seg.base_offset, usize::MAX, true)
                .await?;
            let target = if timestamp == -3 {
                seg.max_timestamp
            } else {
                timestamp
            };
            for b in batches.iter().filter(|b| b.max_timestamp() >= target) {
                let records = b.records().map_err(|e| {
                    tracing::error!(topic = %self.topic, partition = self.partition, error = %e, "cannot decode records for ListOffsets");
                    ErrorCode::KAFKA_STORAGE_ERROR
                })?;
                if let Some(r) = records.iter().find(|r| r.timestamp >= target) {
                    return Ok((r.timestamp, r.offset));
                }
            }
        }
        Ok((-1, -1))
    }
}

/// What a ranged GET for a fetch reads beyond the bytes it wants, so a
/// batch ending a little past them still comes; also the most a read holds
/// beyond what it returns.
pub const READ_SLACK: usize = 64 * 1024;

/// Takes batches that end at or after `offset` until `want` bytes (with
/// `whole_first`, at least one). A corrupt batch (bad CRC, bad length) is
/// a storage error.
fn take_batches(
    batches: Batches,
    offset: i64,
    want: usize,
    whole_first: bool,
) -> Result<Vec<RecordBatch>, ErrorCode> {
    let mut taken = Taken::default();
    taken.add(batches, offset, want, whole_first)?;
    Ok(taken.batches)
}

/// Batches taken for a read so far, from one or more runs.
#[derive(Default)]
struct Taken {
    batches: Vec<RecordBatch>,
    bytes: usize,
}

impl Taken {
    /// Adds batches from `run` as [`take_batches`] does; false once `want`
    /// bytes are reached.
    fn add(
        &mut self,
        run: Batches,
        offset: i64,
        want: usize,
        whole_first: bool,
    ) -> Result<bool, ErrorCode> {
        for b in run {
            let b = b.map_err(|e| {
                tracing::error!(error = %e, "corrupt batch in stored segment");
                ErrorCode::KAFKA_STORAGE_ERROR
            })?;
            if b.last_offset() < offset {
                continue;
            }
            let may_exceed = whole_first && self.batches.is_empty();
            if !may_exceed && self.bytes + b.len() > want {
                return Ok(false);
            }
            self.bytes += b.len();
            self.batches.push(b);
        }
        Ok(true)
    }
}

fn storage_error(key: &str, e: &kafscale_s3::StoreError) -> ErrorCode {
    tracing::error!(key, error = %e, "segment read failed");
    ErrorCode::KAFKA_STORAGE_ERROR
}

impl Shard {
    pub fn store_namespace(&self) -> &str {
        &self.args.s3_namespace
    }

    /// Keeps only a freshly committed segment's index (its first read
    /// then needs no GET of the `.index`).
    pub fn cache_index(&self, topic: &str, partition: u32, sealed: &SealedSegment) {
        if let Ok(index) = Index::parse(&sealed.index) {
            self.cache.borrow_mut().insert_index(
                topic,
                partition,
                sealed.info.base_offset,
                Rc::new(index),
            );
        }
    }

    /// Puts a freshly committed segment in the fetch cache.
    pub fn cache_segment(&self, topic: &str, partition: u32, sealed: &SealedSegment) {
        if let Ok(index) = Index::parse(&sealed.index) {
            let seg = CachedSegment {
                data: sealed.segment.clone(),
                index: Rc::new(index),
            };
            self.cache
                .borrow_mut()
                .insert(topic, partition, sealed.info.base_offset, seg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches_at(list: &[(i64, usize)]) -> Bytes {
        let mut out = Vec::new();
        for &(base, n) in list {
            let mut b = kafscale_codec::batch::BatchBuilder::new(base, 1_000);
            for i in 0..n {
                b.push(Some(b"k"), Some(format!("v{i}").as_bytes()), &[]);
            }
            out.extend_from_slice(&b.finish());
        }
        Bytes::from(out)
    }

    #[test]
    fn mirrored_batches_keep_their_offsets_and_gaps() {
        let log = PartitionLog::new("m".into(), 0, PartitionState::NEW, Vec::new(), None);
        let pool = BufferPool::new(1 << 20);
        let split = |b: Bytes| {
            Batches::new(b)
                .collect::<Result<Vec<_>, _>>()
                .expect("well-formed batches")
        };
        // The source's log starts at 1000 and skips 1005..1009.
        let records = batches_at(&[(1000, 5), (1010, 3)]);
        let Ok(Appended::Pending {
            base_offset,
            mut durable,
        }) = log.append_at_offsets(&split(records.clone()), None, 8 << 20, &pool)
        else {
            panic!("not appended");
        };
        assert_eq!(base_offset, 1000);
        assert_eq!(log.next_offset(), 1013);
        // Behind the log's end (1013): refused, nothing changes.
        let behind = batches_at(&[(1012, 2)]);
        assert!(matches!(
            log.append_at_offsets(&split(behind), None, 8 << 20, &pool),
            Err(ErrorCode::CORRUPT_MESSAGE)
        ));
        // A corrupt batch is refused too.
        let mut bad = batches_at(&[(2000, 1)]).to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(
            log.append_at_offsets(&split(Bytes::from(bad)), None, 8 << 20, &pool)
                .is_err()
        );
        assert_eq!(log.next_offset(), 1013);
        let f = log.take_for_flush(5).expect("an open segment");
        assert_eq!(
            (
                f.sealed.info.base_offset,
                f.sealed.info.last_offset,
                f.sealed.info.message_count
            ),
            (1000, 1012, 8)
        );
        assert_eq!(
            f.sealed.segment.to_bytes()[HEADER_LEN..][..records.len()],
            records[..],
            "byte for byte"
        );
        assert!(
            durable.try_recv().unwrap().is_none(),
            "not durable before the commit"
        );
        let state = PartitionState {
            next_offset: f.sealed.info.last_offset + 1,
            ..PartitionState::NEW
        };
        log.committed(f, state);
        assert_eq!(log.high_watermark(), 1013);
        assert_eq!(durable.try_recv().unwrap(), Some(Ok(())));
        // The next segment continues after the log's end, past another gap.
        let later = batches_at(&[(1100, 100)]);
        assert!(
            log.append_at_offsets(&split(later), None, 8 << 20, &pool)
                .is_ok()
        );
        let f = log.take_for_flush(6).unwrap();
        assert_eq!(
            (f.sealed.info.base_offset, f.sealed.info.last_offset),
            (1100, 1199)
        );
    }

    #[test]
    fn copied_transactions_give_read_committed_its_view() {
        use kafscale_codec::batch::BatchBuilder;
        let txn = |base: i64, pid: i64, n: usize| {
            let mut b = BatchBuilder::new(base, 1_000)
                .idempotent(pid, 0, 0)
                .transactional();
            for _ in 0..n {
                b.push(None, Some(b"t"), &[]);
            }
            b.finish()
        };
        let marker = |base: i64, pid: i64, commit: bool| {
            BatchBuilder::new(base, 1_000)
                .idempotent(pid, 0, 0)
                .marker(commit)
                .finish()
        };
        // pid 7 aborts [0, 2) at 2; pid 8 commits [3, 5) at 5; pid 9 opens at 6.
        let blobs = [
            txn(0, 7, 2),
            marker(2, 7, false),
            txn(3, 8, 2),
            marker(5, 8, true),
            txn(6, 9, 1),
        ];
        let batches: Vec<RecordBatch> = blobs
            .iter()
            .map(|b| RecordBatch::parse(b.clone()).unwrap())
            .collect();
        let log = PartitionLog::new("m".into(), 0, PartitionState::NEW, Vec::new(), None);
        let pool = BufferPool::new(1 << 20);
        assert!(
            log.append_at_offsets(&batches[..4], None, 8 << 20, &pool)
                .is_ok()
        );
        assert!(
            log.append_at_offsets(&batches[4..], None, 8 << 20, &pool)
                .is_ok()
        );
        assert_eq!(log.last_stable_offset(), 0, "nothing committed yet");
        let f = log.take_for_flush(1).unwrap();
        let record = f.record();
        assert_eq!(
            record.aborted,
            [AbortedTxn {
                producer_id: 7,
                first_offset: 0,
                last_offset: 2
            }]
        );
        assert_eq!(record.open_txns, [(9, 6)]);
        log.committed(
            f,
            PartitionState {
                next_offset: 7,
                ..PartitionState::NEW
            },
        );
        assert_eq!(log.high_watermark(), 7);
        assert_eq!(log.last_stable_offset(), 6, "pid 9 is still open");
        // After a restart the state comes from the segment records alone.
        let again = PartitionLog::new(
            "m".into(),
            0,
            PartitionState {
                next_offset: 7,
                ..PartitionState::NEW
            },
            vec![record],
            None,
        );
        assert_eq!(again.last_stable_offset(), 6);
        let st = again.state.borrow();
        assert_eq!(st.txns.aborted.len(), 1);
        assert_eq!(st.txns.open.get(&9), Some(&6));
        drop(st);
        // pid 9 commits: the LSO reaches the end once that is durable.
        let commit = RecordBatch::parse(marker(7, 9, true)).unwrap();
        assert!(
            again
                .append_at_offsets(&[commit], None, 8 << 20, &pool)
                .is_ok()
        );
        let f = again.take_for_flush(2).unwrap();
        assert!(f.record().open_txns.is_empty());
        again.committed(
            f,
            PartitionState {
                next_offset: 8,
                ..PartitionState::NEW
            },
        );
        assert_eq!(again.last_stable_offset(), 8);
    }

    #[test]
    fn only_records_that_are_most_of_their_buffer_stay_in_place() {
        let piece = |len: usize| BytesMut::from(&vec![0u8; len][..]);
        let kept = |len, allocation| ProducedRecords::new(piece(len), allocation).in_place;
        assert_eq!(kept(1 << 20, (1 << 20) + 90), Some((1 << 20) + 90));
        assert_eq!(kept(1 << 20, 2 << 20), Some(2 << 20), "half of it");
        assert_eq!(
            kept(64 << 10, 100 << 20),
            None,
            "64 KiB would keep a 100 MiB frame alive: copied"
        );
        assert_eq!(kept(60 << 10, 60 << 10), None, "small: copied");
    }
}
