//! ListOffsets (v1-v7): earliest (-2), latest (-1), max timestamp (-3), or
//! the first offset at or after a timestamp.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafscale_codec::header::RequestHeader;

use super::{decode, respond};
use crate::auth::acl::{Operation, ResourceType};
use crate::broker::conn::{Caller, Reply};
use crate::broker::errors::ErrorCode;
use crate::broker::shard::Shard;

async fn lookup(
    shard: Rc<Shard>,
    topic: String,
    partition: u32,
    timestamp: i64,
    read_committed: bool,
) -> Result<(i64, i64), ErrorCode> {
    let log = shard.log(&topic, partition).await?;
    if timestamp == -1 && read_committed {
        // Kafka's latest for read_committed: the last stable offset.
        return Ok((-1, log.last_stable_offset()));
    }
    log.offset_for(&shard, timestamp).await
}

pub async fn handle(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let req: ListOffsetsRequest = decode(body, header.api_version)?;
    let read_committed = req.isolation_level == 1;
    let mut resp = ListOffsetsResponse::default();
    for t in req.topics {
        let name = t.name.0.to_string();
        let denied =
            !shard
                .authorizer
                .authorize(caller, Operation::Describe, ResourceType::Topic, &name);
        let known = match denied {
            true => None,
            false => shard.topic(&name).await.ok().flatten(),
        };
        let futs = t.partitions.iter().map(|p| {
            let (s, topic, partition, ts) =
                (shard.clone(), name.clone(), p.partition_index, p.timestamp);
            let exists = known
                .as_ref()
                .is_some_and(|m| partition >= 0 && (partition as u32) < m.partitions);
            async move {
                if denied {
                    return Err(ErrorCode::TOPIC_AUTHORIZATION_FAILED);
                }
                if !exists {
                    return Err(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
                }
                let route = topic.clone();
                s.on_owner(&route, partition as u32, move |o| {
                    lookup(o, topic, partition as u32, ts, read_committed)
                })
                .await?
            }
        });
        let results = futures::future::join_all(futs).await;
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name;
        for (p, r) in t.partitions.iter().zip(results) {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            match r {
                Ok((timestamp, offset)) => {
                    pr.timestamp = timestamp;
                    pr.offset = offset;
                }
                Err(code) => {
                    pr.error_code = code.code();
                    pr.timestamp = -1;
                    pr.offset = -1;
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    respond(header, &resp)
}
