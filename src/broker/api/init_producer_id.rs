//! InitProducerId (v0-v4) for idempotent producers. Transactions are not
//! supported: a transactional id is refused.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafscale_codec::header::RequestHeader;

use super::{decode, respond};
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
    let req: InitProducerIdRequest = decode(body, header.api_version)?;
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    if let Some(id) = &req.transactional_id {
        if !shard
            .authorizer
            .authorize(caller, Operation::Write, ResourceType::TransactionalId, id)
        {
            resp.error_code = ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED.code();
            return respond(header, &resp);
        }
        resp.error_code = ErrorCode::COORDINATOR_NOT_AVAILABLE.code();
        return respond(header, &resp);
    }
    // KIP-679: an idempotent producer needs IDEMPOTENT_WRITE on the
    // cluster or WRITE on some topic.
    let az = &shard.authorizer;
    if !az.allows_cluster(caller, Operation::IdempotentWrite)
        && !az.allows_some(caller, Operation::Write, ResourceType::Topic)
    {
        az.denied(
            caller,
            Operation::IdempotentWrite,
            ResourceType::Cluster,
            crate::auth::acl::CLUSTER_NAME,
        );
        resp.error_code = ErrorCode::CLUSTER_AUTHORIZATION_FAILED.code();
        return respond(header, &resp);
    }
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        // v3+: an idempotent producer bumping its epoch after an error.
        resp.producer_id = req.producer_id;
        resp.producer_epoch = req.producer_epoch + 1;
        return respond(header, &resp);
    }
    match shard.meta.call(|m| m.next_producer_id()).await {
        Ok(id) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = 0;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot allocate a producer id");
            resp.error_code = ErrorCode::from(&e).code();
        }
    }
    respond(header, &resp)
}
