//! InitProducerId (v0-v4) for idempotent producers. Transactions are not
//! supported: a transactional id is refused.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafscale_codec::header::RequestHeader;

use super::{decode, respond};
use crate::broker::conn::Reply;
use crate::broker::errors::ErrorCode;
use crate::broker::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let req: InitProducerIdRequest = decode(body, header.api_version)?;
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    if req.transactional_id.is_some() {
        resp.error_code = ErrorCode::COORDINATOR_NOT_AVAILABLE.code();
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
