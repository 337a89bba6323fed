//! Request dispatch: one module per Kafka API.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable};
use kafscale_codec::frame::{begin_frame, end_frame};
use kafscale_codec::header::{RequestHeader, encode_response_header};

use super::conn::{Caller, Reply};
use super::shard::{Reservation, Shard};

mod acls;
mod api_versions;
mod create_partitions;
mod create_topics;
mod delete_topics;
mod describe_configs;
pub mod fetch;
mod groups;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod offsets;
pub mod produce;
mod scram_credentials;

/// The APIs and versions this broker serves, as ApiVersions advertises them.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (
        ApiKey::Fetch,
        kafscale_codec::fetch::MIN_VERSION,
        kafscale_codec::fetch::MAX_VERSION,
    ),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::DescribeAcls, 0, 3),
    (ApiKey::CreateAcls, 0, 3),
    (ApiKey::DeleteAcls, 0, 3),
];

pub fn supported(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == api)
        .map(|&(_, min, max)| (min, max))
}

/// A request body as the connection read it.
pub enum Body {
    Raw(Bytes),
    /// A produce request already split into its records pieces.
    Produce(produce::Carved),
}

/// Whether this broker serves the request's API at its version.
pub fn supported_version(header: &RequestHeader) -> bool {
    let Some(api) = header.api() else {
        return false;
    };
    supported(api).is_some_and(|(min, max)| (min..=max).contains(&header.api_version))
}

/// A request's place in its connection's order, for the APIs that keep one.
pub enum Place {
    Produce(produce::Order),
    Fetch(fetch::Turn),
    Any,
}

pub async fn handle(
    shard: Rc<Shard>,
    caller: Caller,
    header: RequestHeader,
    body: Body,
    reservation: Reservation,
    place: Place,
) -> Reply {
    let (body, carved) = match body {
        Body::Raw(b) => (b, None),
        Body::Produce(c) => (Bytes::new(), Some(c)),
    };
    let Some(api) = header.api() else {
        return Reply::Close(format!(
            "unknown API key {} (correlation id {})",
            header.api_key, header.correlation_id
        ));
    };
    let version = header.api_version;
    if !supported_version(&header) {
        if api == ApiKey::ApiVersions {
            return api_versions::unsupported_version(&header);
        }
        return Reply::Close(format!(
            "{api:?} version {version} is not supported (see ApiVersions)"
        ));
    }
    let result = match api {
        ApiKey::ApiVersions => api_versions::handle(&header, body),
        ApiKey::Metadata => metadata::handle(&shard, &caller, &header, body).await,
        ApiKey::Produce => match place {
            Place::Produce(order) => {
                produce::handle(&shard, &caller, &header, body, carved, order).await
            }
            _ => Err("produce request without its place in the connection's order".into()),
        },
        ApiKey::Fetch => match place {
            Place::Fetch(turn) => fetch::handle(&shard, &caller, &header, body, turn).await,
            _ => Err("fetch request without its place in the connection's order".into()),
        },
        ApiKey::ListOffsets => list_offsets::handle(&shard, &caller, &header, body).await,
        ApiKey::CreateTopics => create_topics::handle(&shard, &caller, &header, body).await,
        ApiKey::DeleteTopics => delete_topics::handle(&shard, &caller, &header, body).await,
        ApiKey::CreatePartitions => create_partitions::handle(&shard, &caller, &header, body).await,
        ApiKey::DescribeConfigs => describe_configs::handle(&shard, &caller, &header, body).await,
        ApiKey::InitProducerId => init_producer_id::handle(&shard, &caller, &header, body).await,
        ApiKey::FindCoordinator => groups::find_coordinator(&shard, &caller, &header, body).await,
        ApiKey::JoinGroup => groups::join_group(&shard, &caller, &header, body).await,
        ApiKey::SyncGroup => groups::sync_group(&shard, &caller, &header, body).await,
        ApiKey::Heartbeat => groups::heartbeat(&shard, &caller, &header, body).await,
        ApiKey::LeaveGroup => groups::leave_group(&shard, &caller, &header, body).await,
        ApiKey::DescribeGroups => groups::describe_groups(&shard, &caller, &header, body).await,
        ApiKey::ListGroups => groups::list_groups(&shard, &caller, &header, body).await,
        ApiKey::DeleteGroups => groups::delete_groups(&shard, &caller, &header, body).await,
        ApiKey::OffsetCommit => offsets::offset_commit(&shard, &caller, &header, body).await,
        ApiKey::OffsetFetch => offsets::offset_fetch(&shard, &caller, &header, body).await,
        ApiKey::OffsetDelete => offsets::offset_delete(&shard, &caller, &header, body).await,
        ApiKey::DescribeClientQuotas => no_client_quotas(&shard, &caller, &header, body),
        ApiKey::DescribeUserScramCredentials => {
            scram_credentials::describe(&shard, &caller, &header, body).await
        }
        ApiKey::AlterUserScramCredentials => {
            scram_credentials::alter(&shard, &caller, &header, body).await
        }
        ApiKey::DescribeAcls => acls::describe(&shard, &caller, &header, body).await,
        ApiKey::CreateAcls => acls::create(&shard, &caller, &header, body).await,
        ApiKey::DeleteAcls => acls::delete(&shard, &caller, &header, body).await,
        // A SASL listener's reader answers these itself; here the listener
        // has no SASL.
        ApiKey::SaslHandshake => sasl_not_here(&header, body),
        ApiKey::SaslAuthenticate => sasl_not_here(&header, body),
        _ => Err(format!("{api:?} is not supported")),
    };
    drop(reservation);
    result.unwrap_or_else(|why| Reply::Close(format!("{api:?} v{version}: {why}")))
}

/// DescribeClientQuotas: this broker has no client quotas, so every filter
/// matches nothing. (`kafka-configs --describe --entity-type users` asks
/// for quotas before it describes SCRAM credentials.)
fn no_client_quotas(
    shard: &Shard,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let _req: kafka_protocol::messages::DescribeClientQuotasRequest =
        decode(body, header.api_version)?;
    let op = crate::auth::acl::Operation::DescribeConfigs;
    if !shard.authorizer.allows_cluster(caller, op) {
        let resp = kafka_protocol::messages::DescribeClientQuotasResponse::default()
            .with_error_code(super::errors::ErrorCode::CLUSTER_AUTHORIZATION_FAILED.code())
            .with_error_message(Some(str_bytes(&format!(
                "{} may not describe client quotas ({op} on the cluster)",
                caller.principal
            ))));
        return respond(header, &resp);
    }
    let resp = kafka_protocol::messages::DescribeClientQuotasResponse::default()
        .with_entries(Some(Vec::new()));
    respond(header, &resp)
}

/// Kafka's answer to SASL requests on a listener without SASL.
fn sasl_not_here(header: &RequestHeader, body: Bytes) -> Result<Reply, String> {
    use kafka_protocol::messages::{
        SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
    };
    let code = super::errors::ErrorCode::ILLEGAL_SASL_STATE.code();
    if header.api_key == ApiKey::SaslHandshake as i16 {
        let _req: SaslHandshakeRequest = decode(body, header.api_version)?;
        respond(
            header,
            &SaslHandshakeResponse::default().with_error_code(code),
        )
    } else {
        respond(
            header,
            &SaslAuthenticateResponse::default()
                .with_error_code(code)
                .with_error_message(Some(str_bytes("this listener does not use SASL"))),
        )
    }
}

/// Decodes a request body; a malformed body closes the connection, as in Kafka.
pub fn decode<T: Decodable>(mut body: Bytes, version: i16) -> Result<T, String> {
    T::decode(&mut body, version).map_err(|e| format!("malformed request: {e}"))
}

/// Encodes a response frame.
pub fn respond<T: Encodable>(header: &RequestHeader, resp: &T) -> Result<Reply, String> {
    let mut out = BytesMut::with_capacity(256);
    let at = begin_frame(&mut out);
    encode_response_header(
        &mut out,
        header.correlation_id,
        header.response_header_version(),
    );
    resp.encode(&mut out, header.api_version)
        .map_err(|e| format!("cannot encode response: {e}"))?;
    end_frame(&mut out, at, 0);
    Ok(Reply::Frame(vec![out.freeze()]))
}

pub fn str_bytes(s: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.to_owned())
}

/// Kafka topic ids from our hex ids.
pub fn topic_uuid(hex: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(hex).unwrap_or(uuid::Uuid::nil())
}

pub fn topic_hex(id: &uuid::Uuid) -> String {
    id.simple().to_string()
}
