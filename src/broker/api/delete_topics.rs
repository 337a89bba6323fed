//! DeleteTopics (v1-v6): removes the metadata at once, then the segment
//! objects in the background (never under object lock: they stay
//! restorable, and the answer's message says so).

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafscale_codec::header::RequestHeader;
use kafscale_s3::ObjectStore;

use super::{decode, respond, str_bytes, topic_hex, topic_uuid};
use crate::auth::acl::{Operation, ResourceType};
use crate::broker::conn::{Caller, Reply};
use crate::broker::errors::ErrorCode;
use crate::broker::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let req: DeleteTopicsRequest = decode(body, header.api_version)?;
    // v0-v5 name topics in topic_names; v6 uses topics (name or id).
    let mut targets: Vec<(Option<String>, Option<uuid::Uuid>)> = req
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), None))
        .collect();
    targets.extend(req.topics.iter().map(|t| {
        (
            t.name.as_ref().map(|n| n.0.to_string()),
            Some(t.topic_id).filter(|u| !u.is_nil()),
        )
    }));
    let mut resp = DeleteTopicsResponse::default();
    for (name, id) in targets {
        let mut r = DeletableTopicResult::default();
        r.name = name.as_ref().map(|n| TopicName(str_bytes(n)));
        r.topic_id = id.unwrap_or_default();
        let name = match (name, id) {
            (Some(n), _) => Some(n),
            (None, Some(id)) => shard
                .topic_by_id(&topic_hex(&id))
                .await
                .ok()
                .flatten()
                .map(|t| t.name),
            (None, None) => None,
        };
        let Some(name) = name else {
            r.error_code = ErrorCode::UNKNOWN_TOPIC_ID.code();
            resp.responses.push(r);
            continue;
        };
        let az = &shard.authorizer;
        if !az.allows_cluster(caller, Operation::Delete)
            && !az.allows(caller, Operation::Delete, ResourceType::Topic, &name)
        {
            let why = format!(
                "{} may not delete topic {name:?} (DELETE on the topic or the cluster)",
                caller.principal
            );
            caller.audit(
                "DeleteTopics",
                &format!("topic {name}"),
                &format!("refused: {why}"),
            );
            r.error_code = ErrorCode::TOPIC_AUTHORIZATION_FAILED.code();
            if header.api_version >= 5 {
                r.error_message = Some(str_bytes(&why));
            }
            resp.responses.push(r);
            continue;
        }
        let internal = shard
            .topic(&name)
            .await
            .ok()
            .flatten()
            .is_some_and(|t| t.config.contains_key(crate::internal::INTERNAL));
        if internal {
            let what = crate::internal::describe(&name);
            r.error_code = ErrorCode::TOPIC_DELETION_DISABLED.code();
            if header.api_version >= 5 {
                r.error_message = Some(str_bytes(&format!(
                    "topic {name} is {what} and cannot be deleted"
                )));
            }
            caller.audit(
                "DeleteTopics",
                &format!("topic {name}"),
                &format!("refused: {what}"),
            );
            resp.responses.push(r);
            continue;
        }
        let n = name.clone();
        match shard.meta.call(move |m| m.delete_topic(&n)).await {
            Ok(meta) => {
                caller.audit("DeleteTopics", &format!("topic {}", meta.name), "ok");
                r.name = Some(TopicName(str_bytes(&meta.name)));
                if header.api_version >= 6 {
                    r.topic_id = topic_uuid(&meta.id);
                }
                let forget = name.clone();
                shard
                    .on_all(move |s| {
                        let t = forget.clone();
                        async move { s.forget_topic(&t) }
                    })
                    .await;
                if let Some(lock) = shard.store.object_lock() {
                    // Locked versions cannot be deleted, and delete markers
                    // would only hide them from a restore that lists the
                    // bucket: the objects stay as they are.
                    let note = format!(
                        "topic {name} removed from the metadata; its segments stay in the bucket under {} object lock until their retention ends, and `kafscale restore` can still rebuild it from them",
                        lock.mode.as_header()
                    );
                    tracing::info!(topic = %name, "{note}");
                    if header.api_version >= 5 {
                        r.error_message = Some(str_bytes(&note));
                    }
                } else {
                    let s = shard.clone();
                    glommio::spawn_local(async move { delete_objects(&s, &name).await }).detach();
                }
            }
            Err(e) => {
                r.error_code = ErrorCode::from(&e).code();
                if header.api_version >= 5 {
                    r.error_message = Some(str_bytes(&e.to_string()));
                }
            }
        }
        resp.responses.push(r);
    }
    respond(header, &resp)
}

async fn delete_objects(shard: &Shard, topic: &str) {
    let prefix = format!("{}/{topic}/", shard.store_namespace());
    let result = async {
        let keys: Vec<String> = shard
            .store
            .list(&prefix)
            .await?
            .into_iter()
            .map(|e| e.key)
            .collect();
        shard.store.delete_many(&keys).await.map(|()| keys.len())
    };
    match result.await {
        Ok(n) => tracing::info!(topic, objects = n, "deleted topic objects"),
        Err(e) => {
            tracing::warn!(topic, error = %e, "could not delete all objects of a deleted topic; they are orphans now")
        }
    }
}
