//! Group membership APIs of the classic protocol: FindCoordinator (v0-v4),
//! JoinGroup (v0-v7), SyncGroup (v0-v5), Heartbeat (v0-v4), LeaveGroup
//! (v0-v4), DescribeGroups (v0-v5), ListGroups (v0-v4), DeleteGroups (v0-v2).
//! Each group's state lives on its owner shard (see `broker/group.rs`).

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;
use kafscale_codec::header::RequestHeader;

use super::{decode, respond, str_bytes};
use crate::auth::acl::{Operation, ResourceType};
use crate::broker::conn::{Caller, Reply};
use crate::broker::errors::ErrorCode;
use crate::broker::group::{Group, JoinRequest, Joined, State};
use crate::broker::shard::Shard;

/// Whether `caller` may do `op` on `group`.
fn may(shard: &Shard, caller: &Caller, op: Operation, group: &str) -> bool {
    shard
        .authorizer
        .authorize(caller, op, ResourceType::Group, group)
}

fn opt(s: &Option<String>) -> Option<kafka_protocol::protocol::StrBytes> {
    s.as_deref().map(str_bytes)
}

pub async fn find_coordinator(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let v = header.api_version;
    let req: FindCoordinatorRequest = decode(body, v)?;
    let brokers = shard.cluster.brokers();
    let at = |group: &str| {
        let id = shard.cluster.coordinator_of(group);
        let b = brokers
            .iter()
            .find(|b| b.id == id)
            .unwrap_or(&shard.cluster.me);
        let (host, port) = b.endpoint(caller.listener.name());
        (BrokerId(b.id), str_bytes(host), port)
    };
    let mut resp = FindCoordinatorResponse::default();
    // Key type 0 is a group; 1 (transactions) is not served.
    let error = |key: &str| match req.key_type {
        0 if !may(shard, caller, Operation::Describe, key) => ErrorCode::GROUP_AUTHORIZATION_FAILED,
        0 => ErrorCode::NONE,
        1 if !shard.authorizer.authorize(
            caller,
            Operation::Describe,
            ResourceType::TransactionalId,
            key,
        ) =>
        {
            ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        }
        1 => ErrorCode::COORDINATOR_NOT_AVAILABLE,
        _ => ErrorCode::INVALID_REQUEST,
    };
    // As in Kafka, a refused key names no coordinator.
    let at = |key: &str, error: ErrorCode| match error {
        ErrorCode::NONE => at(key),
        _ => (BrokerId(-1), str_bytes(""), -1),
    };
    if v >= 4 {
        resp.coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let mut c = Coordinator::default();
                c.key = k.clone();
                let e = error(k);
                (c.node_id, c.host, c.port) = at(k, e);
                c.error_code = e.code();
                c
            })
            .collect();
    } else {
        let e = error(&req.key);
        resp.error_code = e.code();
        (resp.node_id, resp.host, resp.port) = at(&req.key, e);
    }
    respond(header, &resp)
}

pub async fn join_group(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let v = header.api_version;
    let req: JoinGroupRequest = decode(body, v)?;
    let group = req.group_id.0.to_string();
    let mut resp = JoinGroupResponse::default();
    resp.generation_id = -1;
    let session = req.session_timeout_ms;
    if !may(shard, caller, Operation::Read, &group) {
        resp.error_code = ErrorCode::GROUP_AUTHORIZATION_FAILED.code();
        resp.member_id = req.member_id;
        return respond(header, &resp);
    }
    if group.is_empty() || !(1_000..=1_800_000).contains(&session) {
        resp.error_code = if group.is_empty() {
            ErrorCode::INVALID_GROUP_ID
        } else {
            ErrorCode::INVALID_SESSION_TIMEOUT
        }
        .code();
        resp.member_id = req.member_id;
        return respond(header, &resp);
    }
    let join = JoinRequest {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: header.client_id.clone().unwrap_or_default(),
        client_host: "/127.0.0.1".into(),
        session_timeout: Duration::from_millis(session as u64),
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout: Duration::from_millis(
            if v >= 1 {
                req.rebalance_timeout_ms
            } else {
                session
            }
            .max(0) as u64,
        ),
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_id: v >= 4,
    };
    let code = shard.cluster.coordinate(&group).await;
    if code != ErrorCode::NONE {
        resp.error_code = code.code();
        resp.member_id = str_bytes(&join.member_id);
        return respond(header, &resp);
    }
    let owner = shard.group_owner(&group);
    let joined: Joined = shard
        .on_shard_waiting(owner, move |s| async move {
            let g = s.group(&group).await;
            Group::join(&g, join).await
        })
        .await
        .map_err(|e| format!("group owner unreachable: {e:?}"))?;
    resp.error_code = joined.error;
    resp.generation_id = if joined.error == 0 {
        joined.generation
    } else {
        -1
    };
    if v >= 7 {
        resp.protocol_type = opt(&joined.protocol_type);
    }
    resp.protocol_name = opt(&joined.protocol).or_else(|| (v < 7).then(|| str_bytes("")));
    resp.leader = str_bytes(&joined.leader);
    resp.member_id = str_bytes(&joined.member_id);
    resp.members = joined
        .members
        .into_iter()
        .map(|(id, instance, meta)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = str_bytes(&id);
            if v >= 5 {
                m.group_instance_id = opt(&instance);
            }
            m.metadata = meta;
            m
        })
        .collect();
    respond(header, &resp)
}

pub async fn sync_group(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let v = header.api_version;
    let req: SyncGroupRequest = decode(body, v)?;
    let group = req.group_id.0.to_string();
    let member = req.member_id.to_string();
    let generation = req.generation_id;
    let assignments: Vec<(String, Bytes)> = req
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let code = match may(shard, caller, Operation::Read, &group) {
        true => shard.cluster.coordinate(&group).await,
        false => ErrorCode::GROUP_AUTHORIZATION_FAILED,
    };
    if code != ErrorCode::NONE {
        let mut resp = SyncGroupResponse::default();
        resp.error_code = code.code();
        return respond(header, &resp);
    }
    let owner = shard.group_owner(&group);
    let result = shard
        .on_shard_waiting(owner, move |s| async move {
            let g = s.group(&group).await;
            let r = Group::sync(&g, &member, generation, assignments).await;
            let (pt, p) = (
                g.borrow().protocol_type.clone(),
                g.borrow().protocol.clone(),
            );
            (r, pt, p)
        })
        .await
        .map_err(|e| format!("group owner unreachable: {e:?}"))?;
    let mut resp = SyncGroupResponse::default();
    match result.0 {
        Ok(a) => resp.assignment = a,
        Err(e) => resp.error_code = e.code(),
    }
    if v >= 5 {
        resp.protocol_type = opt(&result.1);
        resp.protocol_name = opt(&result.2);
    }
    respond(header, &resp)
}

pub async fn heartbeat(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let req: HeartbeatRequest = decode(body, header.api_version)?;
    let group = req.group_id.0.to_string();
    let (member, generation) = (req.member_id.to_string(), req.generation_id);
    let mut resp = HeartbeatResponse::default();
    let code = match may(shard, caller, Operation::Read, &group) {
        true => shard.cluster.coordinate(&group).await,
        false => ErrorCode::GROUP_AUTHORIZATION_FAILED,
    };
    if code != ErrorCode::NONE {
        resp.error_code = code.code();
        return respond(header, &resp);
    }
    let owner = shard.group_owner(&group);
    let code = shard
        .on_shard(owner, move |s| async move {
            match s.existing_group(&group) {
                Some(g) => Group::heartbeat(&g, &member, generation),
                None => ErrorCode::UNKNOWN_MEMBER_ID,
            }
        })
        .await
        .unwrap_or(ErrorCode::COORDINATOR_NOT_AVAILABLE);
    resp.error_code = code.code();
    respond(header, &resp)
}

pub async fn leave_group(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let v = header.api_version;
    let req: LeaveGroupRequest = decode(body, v)?;
    let group = req.group_id.0.to_string();
    // v0-v2 name one member; v3+ a batch (by member id or instance id).
    let leaving: Vec<(String, Option<String>)> = if v >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let code = match may(shard, caller, Operation::Read, &group) {
        true => shard.cluster.coordinate(&group).await,
        false => ErrorCode::GROUP_AUTHORIZATION_FAILED,
    };
    if code != ErrorCode::NONE {
        let mut resp = LeaveGroupResponse::default();
        resp.error_code = code.code();
        return respond(header, &resp);
    }
    let owner = shard.group_owner(&group);
    let l = leaving.clone();
    let codes = shard
        .on_shard(owner, move |s| async move {
            let Some(g) = s.existing_group(&group) else {
                return vec![ErrorCode::UNKNOWN_MEMBER_ID; l.len()];
            };
            let ids: Vec<String> = l
                .iter()
                .map(|(id, inst)| {
                    let by_instance = inst.as_ref().and_then(|i| {
                        g.borrow()
                            .members
                            .values()
                            .find(|m| m.instance_id.as_ref() == Some(i))
                            .map(|m| m.id.clone())
                    });
                    by_instance.unwrap_or_else(|| id.clone())
                })
                .collect();
            Group::remove(&g, &ids)
        })
        .await
        .unwrap_or_else(|_| vec![ErrorCode::COORDINATOR_NOT_AVAILABLE; leaving.len()]);
    let mut resp = LeaveGroupResponse::default();
    if v >= 3 {
        resp.members = leaving
            .iter()
            .zip(&codes)
            .map(|((id, inst), code)| {
                let mut m = MemberResponse::default();
                m.member_id = str_bytes(id);
                m.group_instance_id = opt(inst);
                m.error_code = code.code();
                m
            })
            .collect();
    } else {
        resp.error_code = codes.first().copied().unwrap_or(ErrorCode::NONE).code();
    }
    respond(header, &resp)
}

/// (state, protocol type, protocol, members: id, instance, client, host, metadata, assignment)
type Described = (
    State,
    String,
    String,
    Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
);

async fn describe_one(shard: &Rc<Shard>, group: String) -> Option<Described> {
    let owner = shard.group_owner(&group);
    shard
        .on_shard(owner, move |s| async move {
            let g = s.existing_group(&group)?;
            let g = g.borrow();
            let protocol = g.protocol.clone().unwrap_or_default();
            let members = g
                .members
                .values()
                .map(|m| {
                    let meta = m.metadata(Some(&protocol));
                    (
                        m.id.clone(),
                        m.instance_id.clone(),
                        m.client_id.clone(),
                        m.client_host.clone(),
                        meta,
                        m.assignment.clone(),
                    )
                })
                .collect();
            Some((
                g.state,
                g.protocol_type.clone().unwrap_or_default(),
                protocol,
                members,
            ))
        })
        .await
        .ok()
        .flatten()
}

pub async fn describe_groups(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let v = header.api_version;
    let req: DescribeGroupsRequest = decode(body, v)?;
    let include_ops = req.include_authorized_operations;
    let mut resp = DescribeGroupsResponse::default();
    for id in req.groups {
        let mut d = DescribedGroup::default();
        d.group_id = id.clone();
        if include_ops {
            d.authorized_operations =
                shard
                    .authorizer
                    .authorized_operations(caller, ResourceType::Group, &id.0);
        }
        let code = match may(shard, caller, Operation::Describe, &id.0) {
            true => shard.cluster.coordinate(&id.0).await,
            false => ErrorCode::GROUP_AUTHORIZATION_FAILED,
        };
        if code != ErrorCode::NONE {
            d.error_code = code.code();
            resp.groups.push(d);
            continue;
        }
        match describe_one(shard, id.0.to_string()).await {
            Some((state, ptype, protocol, members)) => {
                d.group_state = str_bytes(state.name());
                d.protocol_type = str_bytes(&ptype);
                d.protocol_data = str_bytes(&protocol);
                d.members = members
                    .into_iter()
                    .map(|(mid, inst, client, host, meta, assignment)| {
                        let mut m = DescribedGroupMember::default();
                        m.member_id = str_bytes(&mid);
                        if v >= 4 {
                            m.group_instance_id = opt(&inst);
                        }
                        m.client_id = str_bytes(&client);
                        m.client_host = str_bytes(&host);
                        m.member_metadata = meta;
                        m.member_assignment = assignment;
                        m
                    })
                    .collect();
            }
            None => d.group_state = str_bytes(if v >= 6 { "Dead" } else { "Empty" }),
        }
        resp.groups.push(d);
    }
    respond(header, &resp)
}

pub async fn list_groups(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let v = header.api_version;
    let req: ListGroupsRequest = decode(body, v)?;
    let mut names = shard
        .meta
        .call(|m| m.group_names())
        .await
        .unwrap_or_default();
    for i in 0..shard.count {
        if let Ok(live) = shard.on_shard(i, |s| async move { s.group_names() }).await {
            names.extend(live);
        }
    }
    names.sort();
    names.dedup();
    // Each broker lists the groups it coordinates (admin clients ask them all).
    names.retain(|n| shard.cluster.coordinator_of(n) == shard.cluster.id());
    // As in Kafka: DESCRIBE on the cluster lists every group, otherwise
    // only those the caller may describe.
    if !shard.authorizer.allows_cluster(caller, Operation::Describe) {
        names.retain(|n| may(shard, caller, Operation::Describe, n));
    }
    let mut resp = ListGroupsResponse::default();
    for name in names {
        let (state, ptype) = match describe_one(shard, name.clone()).await {
            Some((state, ptype, _, _)) => (state.name(), ptype),
            None => ("Empty", "consumer".to_owned()),
        };
        if !req.states_filter.is_empty() && !req.states_filter.iter().any(|s| s.as_str() == state) {
            continue;
        }
        let mut g = ListedGroup::default();
        g.group_id = GroupId(str_bytes(&name));
        g.protocol_type = str_bytes(&ptype);
        if v >= 4 {
            g.group_state = str_bytes(state);
        }
        resp.groups.push(g);
    }
    respond(header, &resp)
}

pub async fn delete_groups(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let req: DeleteGroupsRequest = decode(body, header.api_version)?;
    let mut resp = DeleteGroupsResponse::default();
    for id in req.groups_names {
        let name = id.0.to_string();
        let owner = shard.group_owner(&name);
        let n = name.clone();
        let code = match may(shard, caller, Operation::Delete, &name) {
            true => shard.cluster.coordinate(&name).await,
            false => ErrorCode::GROUP_AUTHORIZATION_FAILED,
        };
        let code = if code != ErrorCode::NONE {
            code
        } else {
            shard
                .on_shard(owner, move |s| async move {
                    if s.existing_group(&n)
                        .is_some_and(|g| !g.borrow().members.is_empty())
                    {
                        return ErrorCode::NON_EMPTY_GROUP;
                    }
                    let known = s.meta.call({
                        let n = n.clone();
                        move |m| Ok(m.group_names()?.contains(&n))
                    });
                    match known.await {
                        Ok(false) if s.existing_group(&n).is_none() => {
                            return ErrorCode::GROUP_ID_NOT_FOUND;
                        }
                        Err(e) => return ErrorCode::from(&e),
                        _ => {}
                    }
                    s.drop_group(&n);
                    match s.meta.call(move |m| m.delete_group(&n)).await {
                        Ok(()) => ErrorCode::NONE,
                        Err(e) => ErrorCode::from(&e),
                    }
                })
                .await
                .unwrap_or(ErrorCode::COORDINATOR_NOT_AVAILABLE)
        };
        if code == ErrorCode::NONE {
            caller.audit("DeleteGroups", &format!("group {name}"), "ok");
        } else if code == ErrorCode::GROUP_AUTHORIZATION_FAILED {
            caller.audit(
                "DeleteGroups",
                &format!("group {name}"),
                "refused: DELETE on the group is not allowed",
            );
        }
        let mut r = DeletableGroupResult::default();
        r.group_id = id;
        r.error_code = code.code();
        resp.results.push(r);
    }
    respond(header, &resp)
}
