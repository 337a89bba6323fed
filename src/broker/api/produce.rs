//! Produce (v3-v11): batches go to each partition's owner shard, are
//! appended without decompression, and are answered once durable.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafscale_codec::header::RequestHeader;

use super::{decode, respond};
use crate::broker::conn::Reply;
use crate::broker::errors::ErrorCode;
use crate::broker::partition::{Appended, Durable};
use crate::broker::shard::Shard;

/// What the owner answers right after appending: the base offset and, unless
/// the batches were a retry of durable ones, when they become durable.
type AppendResult = Result<(i64, i64, Option<Durable>), ErrorCode>;

/// Appends on the owner shard. Returns (base offset, log start, durability).
async fn append_on_owner(
    shard: Rc<Shard>,
    topic: String,
    partition: u32,
    records: Bytes,
) -> AppendResult {
    let log = shard.log(&topic, partition).await?;
    let appended = log.append(records, shard.args.segment_bytes.0 as usize, &shard.pool);
    shard.wake_flusher();
    match appended? {
        Appended::Duplicate { base_offset } => Ok((base_offset, log.log_start_offset(), None)),
        Appended::Pending {
            base_offset,
            durable,
        } => Ok((base_offset, log.log_start_offset(), Some(durable))),
    }
}

/// Waits until the appended records are durable. Returns (error, base offset, log start).
async fn durable(appended: AppendResult) -> (ErrorCode, i64, i64) {
    match appended {
        Err(code) => (code, -1, -1),
        Ok((base, start, None)) => (ErrorCode::NONE, base, start),
        Ok((base, start, Some(rx))) => match rx.await {
            Ok(Ok(())) => (ErrorCode::NONE, base, start),
            Ok(Err(code)) => (code, -1, -1),
            Err(_) => (ErrorCode::NOT_LEADER_OR_FOLLOWER, -1, -1),
        },
    }
}

/// Keeps the produce requests of one connection in order: each appends only
/// after the previous one has appended (not after it is durable), as Kafka
/// processes a connection's requests in order.
pub struct Order {
    pub after: Option<oneshot::Receiver<()>>,
    pub appended: oneshot::Sender<()>,
}

pub async fn handle(
    shard: &Rc<Shard>,
    header: &RequestHeader,
    body: Bytes,
    order: Order,
) -> Result<Reply, String> {
    let req: ProduceRequest = decode(body, header.api_version)?;
    let acks = req.acks;
    let refuse_all = if !matches!(acks, -1..=1) {
        Some(ErrorCode::INVALID_REQUIRED_ACKS)
    } else if req.transactional_id.is_some() {
        // Transactions (control batches, markers) are not implemented.
        Some(ErrorCode::INVALID_REQUEST)
    } else {
        None
    };

    // Each partition is either answered now (an error) or by its owner.
    enum Slot {
        Now(ErrorCode),
        Owner(usize),
    }
    let mut slots = Vec::new();
    let mut owners = Vec::new();
    let mut resp = ProduceResponse::default();
    for (ti, t) in req.topic_data.into_iter().enumerate() {
        let name = t.name.0.to_string();
        let mut tr = TopicProduceResponse::default();
        tr.name = t.name.clone();
        resp.responses.push(tr);
        let known = match refuse_all {
            Some(_) => None,
            None => shard.topic(&name).await.ok().flatten(),
        };
        for p in t.partition_data {
            let exists = known
                .as_ref()
                .is_some_and(|m| p.index >= 0 && (p.index as u32) < m.partitions);
            let refused = refuse_all.or((!exists).then_some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION));
            let slot = match (refused, p.records) {
                (Some(code), _) => Slot::Now(code),
                (None, Some(records)) if !records.is_empty() => {
                    shard
                        .metrics
                        .produce_records_bytes
                        .fetch_add(records.len() as u64, Relaxed);
                    let (s, topic, part) = (shard.clone(), name.clone(), p.index as u32);
                    owners.push(async move {
                        let route = topic.clone();
                        s.on_owner(&route, part, move |owner| {
                            append_on_owner(owner, topic, part, records)
                        })
                        .await
                        .unwrap_or(Err(ErrorCode::UNKNOWN_SERVER_ERROR))
                    });
                    Slot::Owner(owners.len() - 1)
                }
                (None, _) => Slot::Now(ErrorCode::CORRUPT_MESSAGE),
            };
            slots.push((ti, p.index, slot));
        }
    }
    // Phase 1, in connection order: append on every owner.
    if let Some(after) = order.after {
        let _ignored = after.await; // Err: the previous request failed early; it appended nothing.
    }
    let appended = futures::future::join_all(owners).await;
    let _ignored = order.appended.send(());
    // Phase 2, concurrently with later requests: wait until durable.
    let results = futures::future::join_all(appended.into_iter().map(durable)).await;
    for (ti, index, slot) in slots {
        let (code, base, start) = match slot {
            Slot::Now(code) => (code, -1, -1),
            Slot::Owner(i) => results[i],
        };
        if code != ErrorCode::NONE {
            shard.metrics.produce_errors.fetch_add(1, Relaxed);
        }
        let mut pr = PartitionProduceResponse::default();
        pr.index = index;
        pr.error_code = code.code();
        pr.base_offset = base;
        pr.log_append_time_ms = -1;
        if header.api_version >= 5 {
            pr.log_start_offset = start;
        }
        resp.responses[ti].partition_responses.push(pr);
    }
    if acks == 0 {
        return Ok(Reply::Nothing);
    }
    respond(header, &resp)
}
