//! Group coordinator error codes, at given API versions, against the real
//! broker, through kafscale-client's connection.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::kafka::run;
use common::start;
use kafscale_client::{Client, ClientConfig, Connection};
use kafscale_codec::kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafscale_codec::kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafscale_codec::kafka_protocol::messages::*;
use kafscale_codec::kafka_protocol::protocol::{Request, StrBytes};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// `req` at `version`, its answer decoded.
async fn call<R: Request>(c: &Connection, version: i16, req: &R) -> R::Response {
    c.call_at(req, version, Duration::ZERO).await.unwrap()
}

async fn join(c: &Connection, group: &str, member: &str) -> JoinGroupResponse {
    let mut p = JoinGroupRequestProtocol::default();
    p.name = s("range");
    p.metadata = Bytes::from_static(b"\0\0\0\0\0\0\0\0");
    let mut req = JoinGroupRequest::default();
    req.group_id = GroupId(s(group));
    req.session_timeout_ms = 10_000;
    req.rebalance_timeout_ms = 5_000;
    req.member_id = s(member);
    req.protocol_type = s("consumer");
    req.protocols = vec![p];
    call(c, 5, &req).await
}

#[test]
fn generation_and_member_checks_answer_like_kafka() {
    let b = start();
    let bootstrap = format!("127.0.0.1:{}", b.port);
    run(move || async move { scenario(&bootstrap).await });
}

async fn scenario(bootstrap: &str) {
    let client = Client::connect(ClientConfig::new(bootstrap)).await.unwrap();
    let c = client.any_broker().await.unwrap();
    let c = &*c;

    // v4+: a new member first gets MEMBER_ID_REQUIRED and its id.
    let first = join(c, "g1", "").await;
    assert_eq!(first.error_code, 79);
    let id = first.member_id.to_string();
    assert!(!id.is_empty());

    // Rejoining with it completes the first generation, with us as leader.
    let joined = join(c, "g1", &id).await;
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader.as_str(), id);
    assert_eq!(joined.members.len(), 1);

    // A made-up member id is unknown.
    assert_eq!(join(c, "g1", "nobody").await.error_code, 25);

    let sync = |member: &str, generation: i32| {
        let mut req = SyncGroupRequest::default();
        req.group_id = GroupId(s("g1"));
        req.generation_id = generation;
        req.member_id = s(member);
        let mut a = sync_group_request::SyncGroupRequestAssignment::default();
        a.member_id = s(&id);
        a.assignment = Bytes::from_static(b"assigned");
        req.assignments = vec![a];
        async move { call(c, 3, &req).await }
    };
    assert_eq!(sync(&id, 7).await.error_code, 22, "ILLEGAL_GENERATION");
    assert_eq!(sync("nobody", 1).await.error_code, 25, "UNKNOWN_MEMBER_ID");
    let ok = sync(&id, 1).await;
    assert_eq!((ok.error_code, &ok.assignment[..]), (0, &b"assigned"[..]));

    let heartbeat = |member: &str, generation: i32| {
        let mut req = HeartbeatRequest::default();
        req.group_id = GroupId(s("g1"));
        req.generation_id = generation;
        req.member_id = s(member);
        async move { call(c, 3, &req).await.error_code }
    };
    assert_eq!(heartbeat(&id, 1).await, 0);
    assert_eq!(heartbeat(&id, 0).await, 22);
    assert_eq!(heartbeat("nobody", 1).await, 25);

    // No committed offset reads as -1.
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(s("never-committed"));
    t.partition_indexes = vec![0, 1];
    let mut req = OffsetFetchRequest::default();
    req.group_id = GroupId(s("g1"));
    req.topics = Some(vec![t]);
    let r = call(c, 5, &req).await;
    let offs: Vec<i64> = r.topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect();
    assert_eq!(offs, vec![-1, -1]);

    // A group with members cannot be deleted.
    let mut req = DeleteGroupsRequest::default();
    req.groups_names = vec![GroupId(s("g1"))];
    assert_eq!(call(c, 1, &req).await.results[0].error_code, 68);
}

/// A negative partition index names no partition: OffsetCommit and
/// OffsetDelete answer UNKNOWN_TOPIC_OR_PARTITION for it and leave
/// partition 0 alone (it used to be read as partition 0).
#[test]
fn negative_partitions_in_offset_requests_are_unknown() {
    let b = start();
    let bootstrap = format!("127.0.0.1:{}", b.port);
    run(move || async move {
        let client = Client::connect(ClientConfig::new(&bootstrap))
            .await
            .unwrap();
        let c = client.any_broker().await.unwrap();
        let c = &*c;
        let commit = |partition: i32, offset: i64| {
            let mut p = offset_commit_request::OffsetCommitRequestPartition::default();
            p.partition_index = partition;
            p.committed_offset = offset;
            let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
            t.name = TopicName(s("t"));
            t.partitions = vec![p];
            let mut req = OffsetCommitRequest::default();
            req.group_id = GroupId(s("neg"));
            req.generation_id_or_member_epoch = -1;
            req.topics = vec![t];
            async move { call(c, 5, &req).await.topics[0].partitions[0].error_code }
        };
        assert_eq!(commit(0, 5).await, 0);
        assert_eq!(commit(-1, 99).await, 3, "UNKNOWN_TOPIC_OR_PARTITION");
        let fetch = || {
            let mut t = OffsetFetchRequestTopic::default();
            t.name = TopicName(s("t"));
            t.partition_indexes = vec![0];
            let mut req = OffsetFetchRequest::default();
            req.group_id = GroupId(s("neg"));
            req.topics = Some(vec![t]);
            async move { call(c, 5, &req).await.topics[0].partitions[0].committed_offset }
        };
        assert_eq!(fetch().await, 5, "partition 0 kept its offset");
        let mut p = offset_delete_request::OffsetDeleteRequestPartition::default();
        p.partition_index = -1;
        let mut t = offset_delete_request::OffsetDeleteRequestTopic::default();
        t.name = TopicName(s("t"));
        t.partitions = vec![p];
        let mut req = OffsetDeleteRequest::default();
        req.group_id = GroupId(s("neg"));
        req.topics = vec![t];
        let r = call(c, 0, &req).await;
        assert_eq!(r.topics[0].partitions[0].error_code, 3);
        assert_eq!(fetch().await, 5, "partition 0's offset was not deleted");
    });
}
