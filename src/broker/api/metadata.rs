//! Metadata (v0-v12): the live brokers, and for each partition the broker
//! that owns it (or will claim it on its first request).

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafscale_codec::header::RequestHeader;

use super::{decode, respond, str_bytes, topic_uuid};
use crate::auth::acl::{Operation, ResourceType};
use crate::broker::cluster::Cluster;
use crate::broker::conn::{Caller, Reply};
use crate::broker::errors::ErrorCode;
use crate::broker::shard::{Shard, valid_topic_name};
use crate::meta::TopicMeta;

pub async fn handle(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let req: MetadataRequest = decode(body, header.api_version)?;
    let (topic_ops, cluster_ops) = (
        req.include_topic_authorized_operations,
        req.include_cluster_authorized_operations,
    );
    let mut resp = MetadataResponse::default();
    resp.brokers = shard
        .cluster
        .brokers()
        .into_iter()
        .map(|b| {
            let mut broker = MetadataResponseBroker::default();
            broker.node_id = BrokerId(b.id);
            let (host, port) = b.endpoint(caller.listener.name());
            broker.host = str_bytes(host);
            broker.port = port;
            broker
        })
        .collect();
    resp.cluster_id = Some(str_bytes("kafscale"));
    // No controller elections here: the lowest live id stands in for one.
    resp.controller_id = resp
        .brokers
        .first()
        .map_or(BrokerId(shard.cluster.id()), |b| b.node_id);
    let cluster = &shard.cluster;

    // v0 sends an empty list for "all topics"; v1+ sends null.
    let wanted: Option<Vec<(Option<String>, Option<uuid::Uuid>)>> = match req.topics {
        None => None,
        Some(t) if t.is_empty() && header.api_version == 0 => None,
        Some(t) => Some(
            t.into_iter()
                .map(|t| {
                    (
                        t.name.map(|n| n.0.to_string()),
                        Some(t.topic_id).filter(|id| !id.is_nil()),
                    )
                })
                .collect(),
        ),
    };
    let allow_create = header.api_version < 4 || req.allow_auto_topic_creation;
    let az = &shard.authorizer;
    let describable = |t: &str| az.allows(caller, Operation::Describe, ResourceType::Topic, t);
    let creatable = |t: &str| {
        az.allows_cluster(caller, Operation::Create)
            || az.allows(caller, Operation::Create, ResourceType::Topic, t)
    };
    match wanted {
        None => {
            // No answer rather than an empty list, which a client would take
            // for "every topic was deleted": it reconnects and asks again.
            let topics = shard.meta.topics().await.map_err(|e| {
                format!("the metadata store cannot list the topics ({e}); not answering with none")
            })?;
            // As in Kafka, topics the caller may not describe are not listed.
            for t in topics.iter().filter(|t| describable(&t.name)) {
                resp.topics.push(topic_entry(t, cluster));
            }
        }
        Some(list) => {
            for (name, id) in list {
                let found = match (&name, id) {
                    (Some(n), _) if !valid_topic_name(n) => {
                        resp.topics.push(error_entry(
                            Some(n),
                            None,
                            ErrorCode::INVALID_TOPIC_EXCEPTION,
                        ));
                        continue;
                    }
                    (Some(n), _) if !describable(n) => {
                        // Named in the request: a denial (listings are
                        // filtered silently).
                        az.denied(caller, Operation::Describe, ResourceType::Topic, n);
                        resp.topics.push(error_entry(
                            Some(n),
                            None,
                            ErrorCode::TOPIC_AUTHORIZATION_FAILED,
                        ));
                        continue;
                    }
                    // As in Kafka, a topic the client would have created
                    // but may not is refused as unauthorized.
                    (Some(n), _)
                        if allow_create && shard.args.auto_create_topics && !creatable(n) =>
                    {
                        match shard.topic_or_create(n, false).await {
                            Ok(None) => {
                                resp.topics.push(error_entry(
                                    Some(n),
                                    None,
                                    ErrorCode::TOPIC_AUTHORIZATION_FAILED,
                                ));
                                continue;
                            }
                            found => found,
                        }
                    }
                    (Some(n), _) if allow_create && shard.args.auto_create_topics => {
                        let made = shard.topic_or_create_made(n, true).await;
                        if let Ok((Some(t), true)) = &made {
                            caller.audit(
                                "CreateTopics",
                                &format!(
                                    "topic {n}, {} partitions (auto-created by Metadata)",
                                    t.partitions
                                ),
                                "ok",
                            );
                        }
                        made.map(|(t, _)| t)
                    }
                    (Some(n), _) => shard.topic_or_create(n, allow_create).await,
                    (None, Some(id)) => shard.topic_by_id(&super::topic_hex(&id)).await,
                    (None, None) => Ok(None),
                };
                match found {
                    Ok(Some(t)) if !describable(&t.name) => resp.topics.push(error_entry(
                        None,
                        id,
                        ErrorCode::TOPIC_AUTHORIZATION_FAILED,
                    )),
                    Ok(Some(t)) => resp.topics.push(topic_entry(&t, cluster)),
                    Ok(None) if name.is_none() => {
                        resp.topics
                            .push(error_entry(None, id, ErrorCode::UNKNOWN_TOPIC_ID))
                    }
                    Ok(None) => resp.topics.push(error_entry(
                        name.as_deref(),
                        id,
                        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    )),
                    Err(e) => {
                        tracing::warn!(error = %e, "metadata lookup failed");
                        resp.topics
                            .push(error_entry(name.as_deref(), id, ErrorCode::from(&e)));
                    }
                }
            }
        }
    }
    // KIP-430: what the caller may do, when asked.
    let az = &shard.authorizer;
    if topic_ops {
        for t in resp.topics.iter_mut().filter(|t| t.error_code == 0) {
            if let Some(name) = &t.name {
                t.topic_authorized_operations =
                    az.authorized_operations(caller, ResourceType::Topic, name);
            }
        }
    }
    if cluster_ops {
        resp.cluster_authorized_operations = az.authorized_operations(
            caller,
            ResourceType::Cluster,
            crate::auth::acl::CLUSTER_NAME,
        );
    }
    respond(header, &resp)
}

fn topic_entry(t: &TopicMeta, cluster: &Cluster) -> MetadataResponseTopic {
    let mut e = MetadataResponseTopic::default();
    e.name = Some(TopicName(str_bytes(&t.name)));
    e.topic_id = topic_uuid(&t.id);
    // As Kafka marks __consumer_offsets: consumers subscribing by pattern
    // (exclude.internal.topics) and `kafka-topics --exclude-internal` skip
    // the brokers' own topics.
    e.is_internal = t.config.contains_key(crate::internal::INTERNAL);
    e.partitions = (0..t.partitions)
        .zip(cluster.leaders(&t.name, t.partitions))
        .map(|(p, (leader, epoch))| {
            let leader = BrokerId(leader);
            let mut mp = MetadataResponsePartition::default();
            mp.partition_index = p as i32;
            mp.leader_id = leader;
            mp.leader_epoch = epoch;
            // One copy in S3, reachable through whichever broker leads.
            mp.replica_nodes = vec![leader];
            mp.isr_nodes = vec![leader];
            mp
        })
        .collect();
    e
}

fn error_entry(
    name: Option<&str>,
    id: Option<uuid::Uuid>,
    code: ErrorCode,
) -> MetadataResponseTopic {
    let mut e = MetadataResponseTopic::default();
    e.error_code = code.code();
    e.name = name.map(|n| TopicName(str_bytes(n)));
    e.topic_id = id.unwrap_or_default();
    e
}
