//! Committed consumer offsets: OffsetCommit (v2-v8), OffsetFetch (v1-v8),
//! OffsetDelete (v0). Offsets live in the metadata store, so they survive
//! restarts; commits from group members are checked against the group's
//! current generation on its owner shard.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafscale_codec::header::RequestHeader;

use super::{decode, respond, str_bytes};
use crate::auth::acl::{Operation, ResourceType};
use crate::broker::conn::{Caller, Reply};
use crate::broker::errors::ErrorCode;
use crate::broker::shard::Shard;
use crate::meta::CommittedOffset;

pub async fn offset_commit(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let v = header.api_version;
    let req: OffsetCommitRequest = decode(body, v)?;
    let group = req.group_id.0.to_string();
    let member = req.member_id.to_string();
    let generation = req.generation_id_or_member_epoch;
    // Members commit with their generation; admin tools commit with -1 and no member.
    let az = &shard.authorizer;
    let coordinating = match az.authorize(caller, Operation::Read, ResourceType::Group, &group) {
        true => shard.cluster.coordinate(&group).await,
        false => ErrorCode::GROUP_AUTHORIZATION_FAILED,
    };
    let readable = |topic: &str| az.allows(caller, Operation::Read, ResourceType::Topic, topic);
    let check = if coordinating != ErrorCode::NONE {
        coordinating
    } else if generation < 0 && member.is_empty() {
        ErrorCode::NONE
    } else {
        let (g, m) = (group.clone(), member.clone());
        let owner = shard.group_owner(&group);
        shard
            .on_shard(owner, move |s| async move {
                match s.existing_group(&g) {
                    Some(grp) => grp
                        .borrow()
                        .check(&m, generation)
                        .err()
                        .unwrap_or(ErrorCode::NONE),
                    None => ErrorCode::UNKNOWN_MEMBER_ID,
                }
            })
            .await
            .unwrap_or(ErrorCode::COORDINATOR_NOT_AVAILABLE)
    };
    let mut offsets = Vec::new();
    for t in req.topics.iter().filter(|t| readable(&t.name)) {
        // A negative partition index names no partition: answered
        // UNKNOWN_TOPIC_OR_PARTITION below, never stored.
        for p in t.partitions.iter().filter(|p| p.partition_index >= 0) {
            let o = CommittedOffset {
                offset: p.committed_offset,
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                leader_epoch: p.committed_leader_epoch,
            };
            offsets.push((t.name.0.to_string(), p.partition_index as u32, o));
        }
    }
    let code = if check != ErrorCode::NONE {
        check
    } else {
        let g = group.clone();
        match shard
            .meta
            .call(move |m| m.commit_offsets(&g, &offsets))
            .await
        {
            Ok(()) => ErrorCode::NONE,
            Err(e) => {
                tracing::warn!(group, error = %e, "offset commit failed");
                ErrorCode::from(&e)
            }
        }
    };
    let mut resp = OffsetCommitResponse::default();
    resp.topics = req
        .topics
        .iter()
        .map(|t| {
            let mut rt = OffsetCommitResponseTopic::default();
            rt.name = t.name.clone();
            let code = topic_code(code, readable(&t.name));
            rt.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut rp = OffsetCommitResponsePartition::default();
                    rp.partition_index = p.partition_index;
                    rp.error_code = partition_code(p.partition_index, code).code();
                    rp
                })
                .collect();
            rt
        })
        .collect();
    respond(header, &resp)
}

type Wanted = Option<Vec<(String, Vec<i32>)>>;
/// A partition's committed offset: (partition, offset or -1, metadata, error).
type Committed = (i32, i64, Option<String>, ErrorCode);
/// (topic, partition, offset or -1, metadata, error).
type Row = (String, i32, i64, Option<String>, ErrorCode);

/// The committed offsets asked for; all when `None`. As in Kafka, a topic
/// the caller may not describe is left out of "all" and answered
/// TOPIC_AUTHORIZATION_FAILED when named.
async fn fetch_group(
    shard: &Shard,
    caller: &Caller,
    group: String,
    wanted: Wanted,
) -> Result<Vec<Row>, ErrorCode> {
    let az = &shard.authorizer;
    if !az.authorize(caller, Operation::Describe, ResourceType::Group, &group) {
        return Err(ErrorCode::GROUP_AUTHORIZATION_FAILED);
    }
    let describable = |t: &str| az.allows(caller, Operation::Describe, ResourceType::Topic, t);
    let code = shard.cluster.coordinate(&group).await;
    if code != ErrorCode::NONE {
        return Err(code);
    }
    let stored = shard
        .meta
        .call(move |m| m.group_offsets(&group))
        .await
        .map_err(|e| ErrorCode::from(&e))?;
    Ok(match wanted {
        None => stored
            .into_iter()
            .filter(|(t, _, _)| describable(t))
            .map(|(t, p, o)| (t, p as i32, o.offset, o.metadata, ErrorCode::NONE))
            .collect(),
        Some(list) => list
            .into_iter()
            .flat_map(|(t, parts)| parts.into_iter().map(move |p| (t.clone(), p)))
            .map(|(t, p)| {
                if !describable(&t) {
                    return (t, p, -1, None, ErrorCode::TOPIC_AUTHORIZATION_FAILED);
                }
                let hit = stored
                    .iter()
                    .find(|(st, sp, _)| *st == t && *sp as i32 == p);
                match hit {
                    Some((_, _, o)) => (t, p, o.offset, o.metadata.clone(), ErrorCode::NONE),
                    None => (t, p, -1, None, ErrorCode::NONE),
                }
            })
            .collect(),
    })
}

fn by_topic(rows: Vec<Row>) -> Vec<(String, Vec<Committed>)> {
    let mut out: Vec<(String, Vec<Committed>)> = Vec::new();
    for (t, p, o, m, e) in rows {
        match out.iter_mut().find(|(name, _)| *name == t) {
            Some((_, v)) => v.push((p, o, m, e)),
            None => out.push((t, vec![(p, o, m, e)])),
        }
    }
    out
}

pub async fn offset_fetch(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let v = header.api_version;
    let req: OffsetFetchRequest = decode(body, v)?;
    let mut resp = OffsetFetchResponse::default();
    if v >= 8 {
        for g in req.groups {
            let wanted: Wanted = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes))
                    .collect()
            });
            let mut rg = OffsetFetchResponseGroup::default();
            rg.group_id = g.group_id.clone();
            match fetch_group(shard, caller, g.group_id.0.to_string(), wanted).await {
                Ok(rows) => {
                    rg.topics = by_topic(rows)
                        .into_iter()
                        .map(|(t, parts)| {
                            let mut rt = OffsetFetchResponseTopics::default();
                            rt.name = TopicName(str_bytes(&t));
                            rt.partitions = parts
                                .into_iter()
                                .map(|(p, o, m, e)| {
                                    let mut rp = OffsetFetchResponsePartitions::default();
                                    rp.partition_index = p;
                                    rp.error_code = e.code();
                                    rp.committed_offset = o;
                                    rp.metadata = Some(str_bytes(&m.unwrap_or_default()));
                                    rp
                                })
                                .collect();
                            rt
                        })
                        .collect();
                }
                Err(code) => rg.error_code = code.code(),
            }
            resp.groups.push(rg);
        }
        return respond(header, &resp);
    }
    let wanted: Wanted = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    match fetch_group(shard, caller, req.group_id.0.to_string(), wanted).await {
        Ok(rows) => {
            resp.topics = by_topic(rows)
                .into_iter()
                .map(|(t, parts)| {
                    let mut rt = OffsetFetchResponseTopic::default();
                    rt.name = TopicName(str_bytes(&t));
                    rt.partitions = parts
                        .into_iter()
                        .map(|(p, o, m, e)| {
                            let mut rp = OffsetFetchResponsePartition::default();
                            rp.partition_index = p;
                            rp.error_code = e.code();
                            rp.committed_offset = o;
                            rp.metadata = Some(str_bytes(&m.unwrap_or_default()));
                            rp
                        })
                        .collect();
                    rt
                })
                .collect();
        }
        Err(code) if v >= 2 => resp.error_code = code.code(),
        Err(_) => {}
    }
    respond(header, &resp)
}

pub async fn offset_delete(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let req: OffsetDeleteRequest = decode(body, header.api_version)?;
    let group = req.group_id.0.to_string();
    let az = &shard.authorizer;
    let readable = |topic: &str| az.allows(caller, Operation::Read, ResourceType::Topic, topic);
    let parts: Vec<(String, u32)> = req
        .topics
        .iter()
        .filter(|t| readable(&t.name))
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| p.partition_index >= 0)
                .map(move |p| (t.name.0.to_string(), p.partition_index as u32))
        })
        .collect();
    let mut resp = OffsetDeleteResponse::default();
    let coordinating = match az.authorize(caller, Operation::Delete, ResourceType::Group, &group) {
        true => shard.cluster.coordinate(&group).await,
        false => ErrorCode::GROUP_AUTHORIZATION_FAILED,
    };
    if coordinating != ErrorCode::NONE {
        resp.error_code = coordinating.code();
        return respond(header, &resp);
    }
    let code = match shard
        .meta
        .call(move |m| m.delete_offsets(&group, &parts))
        .await
    {
        Ok(()) => ErrorCode::NONE,
        Err(e) => ErrorCode::from(&e),
    };
    resp.topics = req
        .topics
        .iter()
        .map(|t| {
            let mut rt = OffsetDeleteResponseTopic::default();
            rt.name = t.name.clone();
            let code = topic_code(code, readable(&t.name));
            rt.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut rp = OffsetDeleteResponsePartition::default();
                    rp.partition_index = p.partition_index;
                    rp.error_code = partition_code(p.partition_index, code).code();
                    rp
                })
                .collect();
            rt
        })
        .collect();
    respond(header, &resp)
}

/// A topic's answer: the request's, unless the caller may not read it
/// (a group the caller may not use is answered as such everywhere).
fn topic_code(request: ErrorCode, readable: bool) -> ErrorCode {
    if readable || request == ErrorCode::GROUP_AUTHORIZATION_FAILED {
        request
    } else {
        ErrorCode::TOPIC_AUTHORIZATION_FAILED
    }
}

/// The answer for one partition of an offset request: a negative index
/// names no partition.
fn partition_code(partition: i32, request: ErrorCode) -> ErrorCode {
    if partition < 0 {
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
    } else {
        request
    }
}
