//! Produce (v3-v11): batches go to each partition's owner shard, are
//! appended without decompression, and are answered once durable.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafscale_codec::header::RequestHeader;

use super::{decode, respond};
use crate::broker::conn::Reply;
use crate::broker::errors::ErrorCode;
use crate::broker::partition::Appended;
use crate::broker::shard::Shard;

/// Appends on the owner and waits until durable. Returns (error, base offset, log start).
async fn produce_partition(
    shard: Rc<Shard>,
    topic: String,
    partition: u32,
    records: Bytes,
) -> (ErrorCode, i64, i64) {
    let log = match shard.log(&topic, partition).await {
        Ok(l) => l,
        Err(code) => return (code, -1, -1),
    };
    let appended = log.append(records, shard.args.segment_bytes.0 as usize, &shard.pool);
    shard.wake_flusher();
    match appended {
        Ok(Appended::Duplicate { base_offset }) => {
            (ErrorCode::NONE, base_offset, log.log_start_offset())
        }
        Ok(Appended::Pending {
            base_offset,
            durable,
        }) => match durable.await {
            Ok(Ok(())) => (ErrorCode::NONE, base_offset, log.log_start_offset()),
            Ok(Err(code)) => (code, -1, -1),
            Err(_) => (ErrorCode::NOT_LEADER_OR_FOLLOWER, -1, -1),
        },
        Err(code) => (code, -1, -1),
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    header: &RequestHeader,
    body: Bytes,
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
                            produce_partition(owner, topic, part, records)
                        })
                        .await
                        .unwrap_or((
                            ErrorCode::UNKNOWN_SERVER_ERROR,
                            -1,
                            -1,
                        ))
                    });
                    Slot::Owner(owners.len() - 1)
                }
                (None, _) => Slot::Now(ErrorCode::CORRUPT_MESSAGE),
            };
            slots.push((ti, p.index, slot));
        }
    }
    let results = futures::future::join_all(owners).await;
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
