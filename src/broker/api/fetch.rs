//! Fetch (v4-v16): reads on each partition's owner, long polls woken by
//! commits, and a response whose record bytes are the stored segment bytes.
//! Each answer reads only into room reserved for it from the shard's
//! answer budget and holds that room until it is written; a connection's
//! fetches reserve in the order they came (see [`Turn`]).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::messages::FetchRequest;
use kafscale_codec::fetch::{FetchPartition, FetchTopic, encode_fetch_response};
use kafscale_codec::header::RequestHeader;

use super::{decode, topic_hex, topic_uuid};
use crate::auth::acl::{Operation, ResourceType};
use crate::broker::conn::{Caller, Held, Reply};
use crate::broker::errors::ErrorCode;
use crate::broker::partition::{READ_SLACK, ReadResult};
use crate::broker::shard::Shard;

struct Want {
    topic: usize,
    name: Option<String>,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    error: ErrorCode,
}

type Read = (Result<ReadResult, ErrorCode>, Option<oneshot::Receiver<()>>);
/// A partition's read as seen by the connection shard (`None`: not read).
type Polled = (
    Option<Result<ReadResult, ErrorCode>>,
    Option<oneshot::Receiver<()>>,
);

/// A fetch's place among its connection's fetches, which reserve their
/// room in the order they came: each reserves once the one before it has
/// (`after`) and then lets the next one go (`reserved`). An answer written
/// later on the connection so never holds room an earlier one waits for
/// (that earlier answer would wait for it forever): a fetch that waits for
/// commits gives its room back, and when it wakes with a later fetch of
/// its connection behind it (`seq` is no longer the connection's `latest`)
/// it answers with what it has rather than reserve again.
pub struct Turn {
    pub after: Option<oneshot::Receiver<()>>,
    pub reserved: oneshot::Sender<()>,
    pub seq: u64,
    pub latest: Rc<Cell<u64>>,
}

#[allow(clippy::too_many_arguments)]
async fn read_partition(
    shard: Rc<Shard>,
    topic: String,
    partition: u32,
    offset: i64,
    max_bytes: usize,
    min_one: bool,
    read_committed: bool,
    watch: bool,
) -> Read {
    let log = match shard.log(&topic, partition).await {
        Ok(l) => l,
        Err(code) => return (Err(code), None),
    };
    let result = log
        .read(&shard, offset, max_bytes, min_one, read_committed)
        .await;
    // Only a partition with nothing to read waits for a commit; one whose
    // records did not fit this answer is read again by the next fetch.
    let watcher = match &result {
        Ok(r) if watch && r.bytes == 0 && !more_to_read(r, offset, read_committed) => {
            Some(log.watch())
        }
        _ => None,
    };
    (result, watcher)
}

/// Whether a read that returned nothing left records at its offset.
fn more_to_read(r: &ReadResult, offset: i64, read_committed: bool) -> bool {
    let end = if read_committed {
        r.last_stable_offset
    } else {
        r.high_watermark
    };
    r.bytes == 0 && offset < end
}

/// Reads one wanted partition on its owner.
fn read_one(
    shard: &Rc<Shard>,
    w: &Want,
    max: usize,
    min_one: bool,
    read_committed: bool,
    watch: bool,
) -> impl std::future::Future<Output = Polled> + 'static {
    let s = shard.clone();
    let name = w.name.clone().unwrap_or_default();
    let (partition, offset) = (w.partition as u32, w.offset);
    async move {
        let route = name.clone();
        let read = s
            .on_owner(&route, partition, move |o| {
                read_partition(
                    o,
                    name,
                    partition,
                    offset,
                    max,
                    min_one,
                    read_committed,
                    watch,
                )
            })
            .await;
        match read {
            Ok((r, w)) => (Some(r), w),
            Err(code) => (Some(Err(code)), None),
        }
    }
}

/// One pass over the wanted partitions within `room` bytes, reserved
/// before anything was read. The room goes to partitions in request order
/// (each at most its `partition_max_bytes`, plus [`READ_SLACK`] for what a
/// ranged GET reads past it). Partitions left without room are still asked
/// for their offsets (no records), and when the others returned less than
/// they had room for, those with records are read again with what is
/// left: a pass reads at most `room` bytes however many partitions the
/// request names. The first partition with records (in request order)
/// sends its first batch whole even when it is larger than its room, as in
/// Kafka: the only read that may go past the room.
async fn read_pass(
    shard: &Rc<Shard>,
    wants: &[Want],
    room: usize,
    read_committed: bool,
    watch: bool,
) -> Vec<Polled> {
    let mut polled: Vec<Polled> = wants.iter().map(|_| (None, None)).collect();
    let mut candidates: Vec<usize> = (0..wants.len())
        .filter(|&i| wants[i].error == ErrorCode::NONE && wants[i].name.is_some())
        .collect();
    let first = candidates.first().copied();
    let mut used = 0usize;
    // The first partition (in request order) that returned records, and
    // those whose next batch was larger than the room they had.
    let mut first_with_records: Option<usize> = None;
    let mut too_large = Vec::new();
    while !candidates.is_empty() && room.saturating_sub(used) > READ_SLACK {
        let mut left = room.saturating_sub(used);
        let plan: Vec<(usize, usize)> = candidates
            .iter()
            .map(|&i| {
                let max = wants[i].max_bytes.min(left.saturating_sub(READ_SLACK));
                left = left.saturating_sub(if max > 0 { max + READ_SLACK } else { 0 });
                (i, max)
            })
            .collect();
        let reads = plan.iter().map(|&(i, max)| {
            read_one(
                shard,
                &wants[i],
                max,
                Some(i) == first,
                read_committed,
                watch,
            )
        });
        let results: Vec<Polled> = futures::future::join_all(reads).await;
        let mut starved = Vec::new();
        for (&(i, max), result) in plan.iter().zip(results) {
            if let (Some(Ok(r)), _) = &result {
                if r.bytes > 0 {
                    used += r.bytes + READ_SLACK;
                    first_with_records = Some(first_with_records.map_or(i, |f| f.min(i)));
                } else if more_to_read(r, wants[i].offset, read_committed) {
                    if max == 0 && wants[i].max_bytes > 0 {
                        starved.push(i);
                    } else if max > 0 {
                        too_large.push(i);
                    }
                }
            }
            polled[i] = result;
        }
        if starved.len() == candidates.len() {
            break;
        }
        candidates = starved;
    }
    // Kafka sends the first batch of the first partition with records
    // whole: when that is one whose batch did not fit, it is read again so.
    if let Some(&i) = too_large.iter().min()
        && first_with_records.is_none_or(|f| i < f)
    {
        let max = wants[i].max_bytes.min(room);
        polled[i] = read_one(shard, &wants[i], max, true, read_committed, watch).await;
    }
    polled
}

pub async fn handle(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
    turn: Turn,
) -> Result<Reply, String> {
    let version = header.api_version;
    let req: FetchRequest = decode(body, version)?;
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    let read_committed = req.isolation_level == 1;
    // Clamped before anything is read from the object store: a client's
    // i32::MAX would otherwise read whole partitions into one answer.
    let limit = shard.args.fetch_max_bytes.0 as usize;
    let max_bytes = if req.max_bytes > 0 {
        (req.max_bytes as usize).min(limit)
    } else {
        limit
    };

    let mut topics: Vec<FetchTopic> = Vec::new();
    let mut wants: Vec<Want> = Vec::new();
    for t in req.topics {
        let (meta, missing) = if version >= 13 {
            let m = shard
                .topic_by_id(&topic_hex(&t.topic_id))
                .await
                .ok()
                .flatten();
            (m, ErrorCode::UNKNOWN_TOPIC_ID)
        } else {
            let m = shard.topic(t.topic.0.as_str()).await.ok().flatten();
            (m, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
        };
        // Kafka answers an unknown topic id as unknown, and a named topic
        // the caller may not read as unauthorized, whether it exists or not.
        let readable = |name: &str| {
            shard
                .authorizer
                .authorize(caller, Operation::Read, ResourceType::Topic, name)
        };
        let denied = match &meta {
            Some(m) => !readable(&m.name),
            None => version < 13 && !readable(t.topic.0.as_str()),
        };
        let ti = topics.len();
        topics.push(FetchTopic {
            name: t.topic.0.to_string(),
            topic_id: *t.topic_id.as_bytes(),
            partitions: Vec::new(),
        });
        if let Some(m) = &meta {
            topics[ti].name = m.name.clone();
            topics[ti].topic_id = *topic_uuid(&m.id).as_bytes();
        }
        for p in t.partitions {
            let error = match &meta {
                _ if denied => ErrorCode::TOPIC_AUTHORIZATION_FAILED,
                None => missing,
                Some(m) if p.partition < 0 || p.partition as u32 >= m.partitions => {
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
                }
                Some(_) => ErrorCode::NONE,
            };
            wants.push(Want {
                topic: ti,
                name: meta.as_ref().map(|m| m.name.clone()),
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: (p.partition_max_bytes.max(0) as usize).min(max_bytes),
                error,
            });
        }
    }

    // What this fetch may read: its max_bytes, or less when its partitions
    // ask for less. Room for it is reserved from the shard's answer budget
    // before reading; a pass that finds too little keeps only the room of
    // what it read while it waits for commits.
    let ask = wants
        .iter()
        .filter(|w| w.error == ErrorCode::NONE)
        .map(|w| w.max_bytes.saturating_add(READ_SLACK))
        .fold(0usize, usize::saturating_add)
        .min(max_bytes.saturating_add(READ_SLACK));
    if let Some(after) = turn.after {
        // Ok or cancelled: either way the fetch before has its room.
        let _ignored = after.await;
    }
    let mut room = shard.answers.reserve(&caller.host, ask as u64).await;
    drop(turn.reserved);
    let mut reads: Vec<Option<Result<ReadResult, ErrorCode>>>;
    loop {
        let wait = Instant::now() < deadline;
        let results = read_pass(shard, &wants, room.units() as usize, read_committed, wait).await;
        let total: usize = results
            .iter()
            .filter_map(|(r, _)| r.as_ref()?.as_ref().ok().map(|r| r.bytes))
            .sum();
        let any_error = results.iter().any(|(r, _)| matches!(r, Some(Err(_))));
        let (rs, watchers): (Vec<_>, Vec<_>) = results.into_iter().unzip();
        reads = rs;
        let now = Instant::now();
        let watchers: Vec<_> = watchers.into_iter().flatten().collect();
        if total >= min_bytes.max(1) || any_error || now >= deadline || watchers.is_empty() {
            break;
        }
        // Waiting for commits holds only the room of what was read.
        let with_records = reads
            .iter()
            .filter(|r| matches!(r, Some(Ok(r)) if r.bytes > 0))
            .count();
        room.shrink((total + with_records * READ_SLACK) as u64);
        let woken = async {
            let _ignored = futures::future::select_all(watchers).await;
            true
        };
        let timed_out = async {
            glommio::timer::sleep(deadline - now).await;
            false
        };
        // Nothing new by the deadline, or a later fetch of this connection
        // behind this one: the answer is what was read.
        if !futures_lite::future::or(woken, timed_out).await || turn.latest.get() != turn.seq {
            break;
        }
        // Reserving again never waits: another answer of this connection
        // may come to hold room meanwhile, and this one is written first.
        let Some(more) = shard.answers.try_reserve(&caller.host, ask as u64) else {
            break;
        };
        reads.clear();
        room = more;
    }

    // The request's max_bytes applies across partitions, in request order; the
    // first batch returned is always whole, even if larger.
    let mut budget = max_bytes;
    let mut sent_any = false;
    let (mut sent, mut with_records) = (0usize, 0usize);
    for (w, read) in wants.iter().zip(reads) {
        let mut out = FetchPartition {
            partition: w.partition,
            error_code: w.error.code(),
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            aborted: Vec::new(),
            records: Vec::new(),
        };
        match read {
            None => {}
            Some(Err(code)) => out.error_code = code.code(),
            Some(Ok(r)) => {
                out.high_watermark = r.high_watermark;
                out.last_stable_offset = r.last_stable_offset;
                out.log_start_offset = r.log_start_offset;
                out.aborted = r.aborted;
                for chunk in r.chunks {
                    if sent_any && chunk.len() > budget {
                        break;
                    }
                    budget = budget.saturating_sub(chunk.len());
                    sent_any = true;
                    out.records.push(chunk);
                }
            }
        }
        let bytes: usize = out.records.iter().map(Bytes::len).sum();
        sent += bytes;
        with_records += usize::from(bytes > 0);
        shard
            .metrics
            .fetch_bytes
            .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
        topics[w.topic].partitions.push(out);
    }
    // The answer holds what it sends (and the unread end of each ranged
    // GET it came from) until the connection has written it.
    let holding = sent + with_records * READ_SLACK;
    if holding as u64 > room.units() {
        shard.answers.grow(&mut room, holding as u64);
    } else {
        room.shrink(holding as u64);
    }
    // Session id 0: no incremental fetch sessions; clients send full requests.
    let frame = encode_fetch_response(header.correlation_id, version, 0, 0, &topics);
    Ok(Reply::Held(frame, Held::new(room)))
}
