//! Fetch (v4-v16): reads on each partition's owner, long polls woken by
//! commits, and a response whose record bytes are the stored segment bytes.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::messages::FetchRequest;
use kafscale_codec::fetch::{FetchPartition, FetchTopic, encode_fetch_response};
use kafscale_codec::header::RequestHeader;

use super::{decode, topic_hex, topic_uuid};
use crate::auth::acl::{Operation, ResourceType};
use crate::broker::conn::{Caller, Reply};
use crate::broker::errors::ErrorCode;
use crate::broker::partition::ReadResult;
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
/// A partition's read as seen by the connection shard (`None`: not asked).
type Polled = (
    Option<Result<ReadResult, ErrorCode>>,
    Option<oneshot::Receiver<()>>,
);

async fn read_partition(
    shard: Rc<Shard>,
    topic: String,
    partition: u32,
    offset: i64,
    max_bytes: usize,
    read_committed: bool,
    watch: bool,
) -> Read {
    let log = match shard.log(&topic, partition).await {
        Ok(l) => l,
        Err(code) => return (Err(code), None),
    };
    let result = log.read(&shard, offset, max_bytes, read_committed).await;
    let watcher = match &result {
        Ok(r) if watch && r.bytes == 0 => Some(log.watch()),
        _ => None,
    };
    (result, watcher)
}

pub async fn handle(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
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
                .allows(caller, Operation::Read, ResourceType::Topic, name)
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

    let mut reads: Vec<Option<Result<ReadResult, ErrorCode>>>;
    loop {
        let wait = Instant::now() < deadline;
        let futs = wants.iter().map(|w| {
            let s = shard.clone();
            let name = w.name.clone();
            let (partition, offset, max) = (w.partition as u32, w.offset, w.max_bytes);
            let error = w.error;
            async move {
                let Some(name) = name.filter(|_| error == ErrorCode::NONE) else {
                    return (None, None);
                };
                let route = name.clone();
                match s
                    .on_owner(&route, partition, move |o| {
                        read_partition(o, name, partition, offset, max, read_committed, wait)
                    })
                    .await
                {
                    Ok((r, w)) => (Some(r), w),
                    Err(code) => (Some(Err(code)), None),
                }
            }
        });
        let results: Vec<Polled> = futures::future::join_all(futs).await;
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
        let woken = async {
            let _ignored = futures::future::select_all(watchers).await;
        };
        futures_lite::future::or(woken, glommio::timer::sleep(deadline - now)).await;
    }

    // The request's max_bytes applies across partitions, in request order; the
    // first batch returned is always whole, even if larger.
    let mut budget = max_bytes;
    let mut sent_any = false;
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
        shard
            .metrics
            .fetch_bytes
            .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
        topics[w.topic].partitions.push(out);
    }
    // Session id 0: no incremental fetch sessions; clients send full requests.
    Ok(Reply::Frame(encode_fetch_response(
        header.correlation_id,
        version,
        0,
        0,
        &topics,
    )))
}
