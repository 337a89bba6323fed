//! CreateTopics (v2-v7). Durability comes from the object store, so any
//! replication factor is accepted and the topic is stored once.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafscale_codec::header::RequestHeader;

use super::{decode, respond, str_bytes, topic_uuid};
use crate::broker::conn::Reply;
use crate::broker::errors::ErrorCode;
use crate::broker::shard::{Shard, valid_topic_name};
use crate::meta::MetaError;

pub async fn handle(
    shard: &Rc<Shard>,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let req: CreateTopicsRequest = decode(body, header.api_version)?;
    let mut resp = CreateTopicsResponse::default();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut r = CreatableTopicResult::default();
        r.name = t.name.clone();
        let v5 = header.api_version >= 5;
        if v5 {
            r.replication_factor = 1;
        }
        let partitions = if t.num_partitions == -1 {
            if t.assignments.is_empty() {
                shard.args.default_partitions as i32
            } else {
                t.assignments.len() as i32
            }
        } else {
            t.num_partitions
        };
        let error = if !valid_topic_name(&name) {
            Some((
                ErrorCode::INVALID_TOPIC_EXCEPTION,
                format!("{name:?} is not a legal topic name"),
            ))
        } else if partitions <= 0 {
            Some((
                ErrorCode::INVALID_PARTITIONS,
                format!("number of partitions must be positive, got {partitions}"),
            ))
        } else {
            None
        };
        if let Some((code, msg)) = error {
            r.error_code = code.code();
            r.error_message = Some(str_bytes(&msg));
            resp.topics.push(r);
            continue;
        }
        if v5 {
            r.num_partitions = partitions;
        }
        if req.validate_only {
            match shard.topic(&name).await {
                Ok(Some(_)) => {
                    r.error_code = ErrorCode::TOPIC_ALREADY_EXISTS.code();
                    r.error_message = Some(str_bytes(&format!("topic {name:?} already exists")));
                }
                Ok(None) => {}
                Err(e) => r.error_code = ErrorCode::from(&e).code(),
            }
            resp.topics.push(r);
            continue;
        }
        let config = t
            .configs
            .iter()
            .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
            .collect();
        let created = shard
            .meta
            .call(move |m| m.create_topic(&name, partitions as u32, config))
            .await;
        match created {
            Ok(meta) => {
                if header.api_version >= 7 {
                    r.topic_id = topic_uuid(&meta.id);
                }
                tracing::info!(topic = %meta.name, partitions, "created topic");
            }
            Err(e @ MetaError::TopicExists { .. }) => {
                r.error_code = ErrorCode::TOPIC_ALREADY_EXISTS.code();
                r.error_message = Some(str_bytes(&e.to_string()));
            }
            Err(e) => {
                r.error_code = ErrorCode::from(&e).code();
                r.error_message = Some(str_bytes(&e.to_string()));
            }
        }
        resp.topics.push(r);
    }
    respond(header, &resp)
}
