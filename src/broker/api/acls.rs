//! DescribeAcls, CreateAcls and DeleteAcls (v0-3), as Kafka's brokers
//! answer them: ALTER on the cluster to change bindings, DESCRIBE to list
//! them, SECURITY_DISABLED without `--authorizer acl`. The bindings are
//! kept in the metadata store; this broker holds a change before it
//! answers, the others within a second (see `broker::authorizer`).

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafscale_codec::header::RequestHeader;

use super::{decode, respond, str_bytes};
use crate::auth::acl::{Acl, AclCodes, AclFilter, FilterCodes, Operation};
use crate::broker::conn::{Caller, Reply};
use crate::broker::errors::ErrorCode;
use crate::broker::shard::Shard;

const NO_AUTHORIZER: &str =
    "No Authorizer is configured on the broker (start it with --authorizer acl)";

/// Kafka's answer when the caller may not do `op` on the cluster.
fn cluster_denied(op: Operation) -> String {
    format!("Cluster authorization failed: {op} on the cluster is not allowed")
}

/// Who changed which bindings, for the audit trail.
fn log_change(caller: &Caller, action: &str, acls: &[Acl], outcome: &str) {
    for acl in acls {
        caller.audit(action, &acl.to_string(), outcome);
    }
}

pub async fn describe(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let req: DescribeAclsRequest = decode(body, header.api_version)?;
    let mut resp = DescribeAclsResponse::default();
    let az = &shard.authorizer;
    let refuse = |resp: &mut DescribeAclsResponse, code: ErrorCode, why: &str| {
        resp.error_code = code.code();
        resp.error_message = Some(str_bytes(why));
    };
    if !az.allows_cluster(caller, Operation::Describe) {
        refuse(
            &mut resp,
            ErrorCode::CLUSTER_AUTHORIZATION_FAILED,
            &cluster_denied(Operation::Describe),
        );
        return respond(header, &resp);
    }
    if !az.enabled() {
        refuse(&mut resp, ErrorCode::SECURITY_DISABLED, NO_AUTHORIZER);
        return respond(header, &resp);
    }
    let filter = match AclFilter::new(FilterCodes {
        resource_type: req.resource_type_filter,
        pattern_type: req.pattern_type_filter,
        name: req.resource_name_filter.as_deref(),
        principal: req.principal_filter.as_deref(),
        host: req.host_filter.as_deref(),
        operation: req.operation,
        permission: req.permission_type,
    }) {
        Ok(f) => f,
        Err(why) => {
            refuse(&mut resp, ErrorCode::INVALID_REQUEST, &why);
            return respond(header, &resp);
        }
    };
    let set = az.set();
    let mut by_resource: BTreeMap<_, Vec<AclDescription>> = BTreeMap::new();
    for acl in set.all().iter().filter(|a| filter.matches(a)) {
        by_resource
            .entry((acl.resource_type, acl.name.as_str(), acl.pattern_type))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(str_bytes(&acl.principal))
                    .with_host(str_bytes(&acl.host))
                    .with_operation(acl.operation.code())
                    .with_permission_type(acl.permission.code()),
            );
    }
    resp.resources = by_resource
        .into_iter()
        .map(|((kind, name, pattern), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(kind.code())
                .with_resource_name(str_bytes(name))
                .with_pattern_type(pattern.code())
                .with_acls(acls)
        })
        .collect();
    respond(header, &resp)
}

pub async fn create(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let req: CreateAclsRequest = decode(body, header.api_version)?;
    let az = shard.authorizer.clone();
    let every = |code: ErrorCode, why: &str| {
        req.creations
            .iter()
            .map(|_| {
                AclCreationResult::default()
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(why)))
            })
            .collect::<Vec<_>>()
    };
    let results = if !az.allows_cluster(caller, Operation::Alter) {
        let why = cluster_denied(Operation::Alter);
        caller.audit(
            "CreateAcls",
            &format!("{} bindings", req.creations.len()),
            &format!("refused: {why}"),
        );
        every(ErrorCode::CLUSTER_AUTHORIZATION_FAILED, &why)
    } else if !az.enabled() {
        every(ErrorCode::SECURITY_DISABLED, NO_AUTHORIZER)
    } else {
        let parsed: Vec<Result<Acl, String>> = req
            .creations
            .iter()
            .map(|c| {
                Acl::new(AclCodes {
                    resource_type: c.resource_type,
                    pattern_type: c.resource_pattern_type,
                    name: &c.resource_name,
                    principal: &c.principal,
                    host: &c.host,
                    operation: c.operation,
                    permission: c.permission_type,
                })
            })
            .collect();
        let valid: Vec<Acl> = parsed
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        let stored = if valid.is_empty() {
            Ok(())
        } else {
            let v = valid.clone();
            let az = az.clone();
            // Reading back after writing: this broker holds the change
            // (and any another broker made) before it answers.
            shard
                .meta
                .call(move |m| {
                    m.put_acls(&v)?;
                    az.replace(m.acls()?);
                    Ok(())
                })
                .await
        };
        match &stored {
            Ok(()) => log_change(caller, "CreateAcls", &valid, "ok"),
            Err(e) => log_change(caller, "CreateAcls", &valid, &format!("failed: {e}")),
        }
        for why in parsed.iter().filter_map(|r| r.as_ref().err()) {
            caller.audit(
                "CreateAcls",
                "an invalid binding",
                &format!("refused: {why}"),
            );
        }
        parsed
            .into_iter()
            .map(|r| match (r, &stored) {
                (Err(why), _) => AclCreationResult::default()
                    .with_error_code(ErrorCode::INVALID_REQUEST.code())
                    .with_error_message(Some(str_bytes(&why))),
                (Ok(_), Err(e)) => AclCreationResult::default()
                    .with_error_code(ErrorCode::from(e).code())
                    .with_error_message(Some(str_bytes(&e.to_string()))),
                (Ok(_), Ok(())) => AclCreationResult::default(),
            })
            .collect()
    };
    respond(header, &CreateAclsResponse::default().with_results(results))
}

pub async fn delete(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let req: DeleteAclsRequest = decode(body, header.api_version)?;
    let az = shard.authorizer.clone();
    let every = |code: ErrorCode, why: &str| {
        req.filters
            .iter()
            .map(|_| {
                DeleteAclsFilterResult::default()
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(why)))
            })
            .collect::<Vec<_>>()
    };
    let results = if !az.allows_cluster(caller, Operation::Alter) {
        let why = cluster_denied(Operation::Alter);
        caller.audit(
            "DeleteAcls",
            &format!("{} filters", req.filters.len()),
            &format!("refused: {why}"),
        );
        every(ErrorCode::CLUSTER_AUTHORIZATION_FAILED, &why)
    } else if !az.enabled() {
        every(ErrorCode::SECURITY_DISABLED, NO_AUTHORIZER)
    } else {
        let filters: Vec<Result<AclFilter, String>> = req
            .filters
            .iter()
            .map(|f| {
                AclFilter::new(FilterCodes {
                    resource_type: f.resource_type_filter,
                    pattern_type: f.pattern_type_filter,
                    name: f.resource_name_filter.as_deref(),
                    principal: f.principal_filter.as_deref(),
                    host: f.host_filter.as_deref(),
                    operation: f.operation,
                    permission: f.permission_type,
                })
            })
            .collect();
        // Each filter's matches among the bindings in the store now (not
        // those held, which may be a second old).
        let az2 = az.clone();
        let fs: Vec<Option<AclFilter>> = filters.iter().map(|f| f.as_ref().ok().cloned()).collect();
        let done = shard
            .meta
            .call(move |m| {
                let all = m.acls()?;
                let matched: Vec<Vec<Acl>> = fs
                    .iter()
                    .map(|f| match f {
                        Some(f) => all.iter().filter(|a| f.matches(a)).cloned().collect(),
                        None => Vec::new(),
                    })
                    .collect();
                let mut gone: Vec<Acl> = matched.iter().flatten().cloned().collect();
                gone.sort();
                gone.dedup();
                m.delete_acls(&gone)?;
                az2.replace(m.acls()?);
                Ok((matched, gone))
            })
            .await;
        match done {
            Err(e) => every(ErrorCode::from(&e), &e.to_string()),
            Ok((matched, gone)) => {
                log_change(caller, "DeleteAcls", &gone, "ok");
                filters
                    .into_iter()
                    .zip(matched)
                    .map(|(f, acls)| match f {
                        Err(why) => DeleteAclsFilterResult::default()
                            .with_error_code(ErrorCode::INVALID_REQUEST.code())
                            .with_error_message(Some(str_bytes(&why))),
                        Ok(_) => DeleteAclsFilterResult::default().with_matching_acls(
                            acls.iter()
                                .map(|a| {
                                    DeleteAclsMatchingAcl::default()
                                        .with_resource_type(a.resource_type.code())
                                        .with_resource_name(str_bytes(&a.name))
                                        .with_pattern_type(a.pattern_type.code())
                                        .with_principal(str_bytes(&a.principal))
                                        .with_host(str_bytes(&a.host))
                                        .with_operation(a.operation.code())
                                        .with_permission_type(a.permission.code())
                                })
                                .collect(),
                        ),
                    })
                    .collect()
            }
        }
    };
    respond(
        header,
        &DeleteAclsResponse::default().with_filter_results(results),
    )
}
