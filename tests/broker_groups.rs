//! Group coordinator error codes, on the wire, against the real broker.

mod common;

use bytes::Bytes;
use common::{call, connect, start};
use kafscale_codec::kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafscale_codec::kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafscale_codec::kafka_protocol::messages::*;
use kafscale_codec::kafka_protocol::protocol::{Decodable, StrBytes};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn join(conn: &mut std::net::TcpStream, group: &str, member: &str) -> JoinGroupResponse {
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
    let mut body = call(conn, ApiKey::JoinGroup, 5, &req).unwrap();
    JoinGroupResponse::decode(&mut body, 5).unwrap()
}

#[test]
fn generation_and_member_checks_answer_like_kafka() {
    let b = start();
    let mut c = connect(&b);

    // v4+: a new member first gets MEMBER_ID_REQUIRED and its id.
    let first = join(&mut c, "g1", "");
    assert_eq!(first.error_code, 79);
    let id = first.member_id.to_string();
    assert!(!id.is_empty());

    // Rejoining with it completes the first generation, with us as leader.
    let joined = join(&mut c, "g1", &id);
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader.as_str(), id);
    assert_eq!(joined.members.len(), 1);

    // A made-up member id is unknown.
    assert_eq!(join(&mut c, "g1", "nobody").error_code, 25);

    let sync = |c: &mut std::net::TcpStream, member: &str, generation: i32| {
        let mut req = SyncGroupRequest::default();
        req.group_id = GroupId(s("g1"));
        req.generation_id = generation;
        req.member_id = s(member);
        let mut a = sync_group_request::SyncGroupRequestAssignment::default();
        a.member_id = s(&id);
        a.assignment = Bytes::from_static(b"assigned");
        req.assignments = vec![a];
        let mut body = call(c, ApiKey::SyncGroup, 3, &req).unwrap();
        SyncGroupResponse::decode(&mut body, 3).unwrap()
    };
    assert_eq!(sync(&mut c, &id, 7).error_code, 22, "ILLEGAL_GENERATION");
    assert_eq!(
        sync(&mut c, "nobody", 1).error_code,
        25,
        "UNKNOWN_MEMBER_ID"
    );
    let ok = sync(&mut c, &id, 1);
    assert_eq!((ok.error_code, &ok.assignment[..]), (0, &b"assigned"[..]));

    let heartbeat = |c: &mut std::net::TcpStream, member: &str, generation: i32| {
        let mut req = HeartbeatRequest::default();
        req.group_id = GroupId(s("g1"));
        req.generation_id = generation;
        req.member_id = s(member);
        let mut body = call(c, ApiKey::Heartbeat, 3, &req).unwrap();
        HeartbeatResponse::decode(&mut body, 3).unwrap().error_code
    };
    assert_eq!(heartbeat(&mut c, &id, 1), 0);
    assert_eq!(heartbeat(&mut c, &id, 0), 22);
    assert_eq!(heartbeat(&mut c, "nobody", 1), 25);

    // No committed offset reads as -1.
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(s("never-committed"));
    t.partition_indexes = vec![0, 1];
    let mut req = OffsetFetchRequest::default();
    req.group_id = GroupId(s("g1"));
    req.topics = Some(vec![t]);
    let mut body = call(&mut c, ApiKey::OffsetFetch, 5, &req).unwrap();
    let r = OffsetFetchResponse::decode(&mut body, 5).unwrap();
    let offs: Vec<i64> = r.topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect();
    assert_eq!(offs, vec![-1, -1]);

    // A group with members cannot be deleted.
    let mut req = DeleteGroupsRequest::default();
    req.groups_names = vec![GroupId(s("g1"))];
    let mut body = call(&mut c, ApiKey::DeleteGroups, 1, &req).unwrap();
    assert_eq!(
        DeleteGroupsResponse::decode(&mut body, 1).unwrap().results[0].error_code,
        68
    );
}
