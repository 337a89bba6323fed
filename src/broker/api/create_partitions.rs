//! CreatePartitions (v0-v3): topics only grow.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafscale_codec::header::RequestHeader;

use super::{decode, respond, str_bytes};
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
    let req: CreatePartitionsRequest = decode(body, header.api_version)?;
    let mut resp = CreatePartitionsResponse::default();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut r = CreatePartitionsTopicResult::default();
        r.name = t.name.clone();
        let result = if !shard.authorizer.allows(
            caller,
            Operation::Alter,
            ResourceType::Topic,
            &name,
        ) {
            Err((
                ErrorCode::TOPIC_AUTHORIZATION_FAILED,
                format!(
                    "{} may not add partitions to topic {name:?} (ALTER on the topic)",
                    caller.principal
                ),
            ))
        } else if t.count <= 0 {
            Err((
                ErrorCode::INVALID_PARTITIONS,
                format!("partition count must be positive, got {}", t.count),
            ))
        } else if t.count as u32 > shard.args.max_partitions_per_topic {
            Err((
                ErrorCode::INVALID_PARTITIONS,
                format!(
                    "{} partitions are more than this broker allows per topic ({}, --max-partitions-per-topic)",
                    t.count, shard.args.max_partitions_per_topic
                ),
            ))
        } else if req.validate_only {
            match shard.meta.topic(&name).await {
                Ok(Some(m)) if (t.count as u32) > m.partitions => Ok(()),
                Ok(Some(m)) => Err((
                    ErrorCode::INVALID_PARTITIONS,
                    format!("topic has {} partitions; can only grow", m.partitions),
                )),
                Ok(None) => Err((
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("topic {name:?} does not exist"),
                )),
                Err(e) => Err((ErrorCode::from(&e), e.to_string())),
            }
        } else {
            let (n, count) = (name.clone(), t.count as u32);
            match shard.meta.call(move |m| m.add_partitions(&n, count)).await {
                Ok(_) => {
                    caller.audit(
                        "CreatePartitions",
                        &format!("topic {name}, {count} partitions"),
                        "ok",
                    );
                    let forget = name.clone();
                    // Shards reload the topic (not the partitions they own).
                    shard
                        .on_all(move |s| {
                            let t = forget.clone();
                            async move { s.refresh_topic(&t) }
                        })
                        .await;
                    Ok(())
                }
                Err(e) => Err((ErrorCode::from(&e), e.to_string())),
            }
        };
        if let Err((code, msg)) = result {
            // Refused (not allowed, not valid) or failed (the store).
            let refused = [
                ErrorCode::TOPIC_AUTHORIZATION_FAILED,
                ErrorCode::INVALID_PARTITIONS,
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            ]
            .contains(&code);
            caller.audit(
                "CreatePartitions",
                &format!("topic {name}, {} partitions", t.count),
                &format!("{}: {msg}", if refused { "refused" } else { "failed" }),
            );
            r.error_code = code.code();
            r.error_message = Some(str_bytes(&msg));
        }
        resp.results.push(r);
    }
    respond(header, &resp)
}
