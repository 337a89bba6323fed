//! DescribeUserScramCredentials and AlterUserScramCredentials (v0, KIP-554),
//! so Kafka's own tools manage users:
//!
//! ```text
//! kafka-configs --alter --entity-type users --entity-name alice \
//!     --add-config 'SCRAM-SHA-512=[iterations=8192,password=...]'
//!   client: salt, PBKDF2 --> salted password --> AlterUserScramCredentials
//!   broker: StoredKey, ServerKey --> users/alice/SCRAM-SHA-512 (as `users add`)
//! ```
//!
//! The rules are Kafka's: a user may appear once per request (else
//! DUPLICATE_RESOURCE), 4096 to 16384 iterations (UNACCEPTABLE_CREDENTIAL),
//! deleting a credential that does not exist is RESOURCE_NOT_FOUND, an
//! unknown mechanism UNSUPPORTED_SASL_MECHANISM. With `--authorizer acl`,
//! describing needs DESCRIBE and altering ALTER on the cluster, as in
//! Kafka. Without, both need an authenticated principal: a client that did
//! not authenticate (`User:ANONYMOUS`) gets CLUSTER_AUTHORIZATION_FAILED,
//! so a plaintext listener cannot list users or change their passwords.

use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafscale_codec::header::RequestHeader;

use super::{decode, respond, str_bytes};
use crate::auth::acl::Operation;
use crate::auth::credential::{MAX_ITERATIONS, MIN_ITERATIONS};
use crate::auth::{ANONYMOUS, ScramCredential, ScramMechanism};
use crate::broker::conn::{Caller, Reply};
use crate::broker::errors::ErrorCode;
use crate::broker::shard::Shard;
use crate::meta::MetaError;

/// Why an unauthenticated client may not use these APIs.
const NEEDS_AUTHENTICATION: &str =
    "SCRAM credentials can only be described or altered by an authenticated principal (SASL)";

/// Why `caller` may not do `op` on the cluster's credentials, if not.
fn refused(shard: &Shard, caller: &Caller, op: Operation) -> Option<String> {
    let az = &shard.authorizer;
    if az.enabled() {
        (!az.authorize_cluster(caller, op)).then(|| {
            format!(
                "{} may not {} SCRAM credentials ({op} on the cluster)",
                caller.principal,
                if op == Operation::Alter {
                    "alter"
                } else {
                    "describe"
                }
            )
        })
    } else {
        (&*caller.principal == ANONYMOUS).then(|| NEEDS_AUTHENTICATION.to_owned())
    }
}

pub async fn describe(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let req: DescribeUserScramCredentialsRequest = decode(body, header.api_version)?;
    let mut resp = DescribeUserScramCredentialsResponse::default();
    if let Some(why) = refused(shard, caller, Operation::Describe) {
        resp.error_code = ErrorCode::CLUSTER_AUTHORIZATION_FAILED.code();
        resp.error_message = Some(str_bytes(&why));
        return respond(header, &resp);
    }
    let all = match shard.meta.call(|m| m.scram_credentials()).await {
        Ok(all) => all,
        Err(e) => {
            resp.error_code = ErrorCode::from(&e).code();
            resp.error_message = Some(str_bytes(&e.to_string()));
            return respond(header, &resp);
        }
    };
    let mut by_user: HashMap<&str, Vec<&ScramCredential>> = HashMap::new();
    for (user, cred) in &all {
        by_user.entry(user.as_str()).or_default().push(cred);
    }
    // Asked for (in order, duplicates marked), or every user by name.
    let asked: Vec<(String, bool)> = match req.users.filter(|u| !u.is_empty()) {
        Some(users) => {
            let names: Vec<String> = users.iter().map(|u| u.name.to_string()).collect();
            let mut seen: Vec<(String, bool)> = Vec::new();
            for n in names {
                match seen.iter_mut().find(|(s, _)| *s == n) {
                    Some(entry) => entry.1 = true,
                    None => seen.push((n, false)),
                }
            }
            seen
        }
        None => {
            let mut names: Vec<String> = by_user.keys().map(|u| (*u).to_owned()).collect();
            names.sort();
            names.into_iter().map(|n| (n, false)).collect()
        }
    };
    for (user, duplicate) in asked {
        let mut r = DescribeUserScramCredentialsResult::default().with_user(str_bytes(&user));
        if duplicate {
            r.error_code = ErrorCode::DUPLICATE_RESOURCE.code();
            r.error_message = Some(str_bytes(&format!(
                "Cannot describe SCRAM credentials for the same user twice in a single request: {user}"
            )));
        } else if let Some(creds) = by_user.get(user.as_str()) {
            r.credential_infos = creds
                .iter()
                .map(|c| {
                    CredentialInfo::default()
                        .with_mechanism(c.mechanism.kafka_type())
                        .with_iterations(c.iterations as i32)
                })
                .collect();
        } else {
            r.error_code = ErrorCode::RESOURCE_NOT_FOUND.code();
            r.error_message = Some(str_bytes(&format!(
                "Attempt to describe a user credential that does not exist: {user}"
            )));
        }
        resp.results.push(r);
    }
    respond(header, &resp)
}

/// One user's change, checked.
enum Change {
    Delete(ScramMechanism),
    Put(ScramCredential),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Delete(m) => write!(f, "delete {m}"),
            Self::Put(c) => write!(f, "set {} ({} iterations)", c.mechanism, c.iterations),
        }
    }
}

/// A Kafka error code and message for one user.
type Refusal = (ErrorCode, String);

pub async fn alter(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let req: AlterUserScramCredentialsRequest = decode(body, header.api_version)?;
    // (user, the change or why it is refused), in the request's order.
    let mut changes: Vec<(String, Result<Change, Refusal>)> = Vec::new();
    let deletions = req
        .deletions
        .iter()
        .map(|d| (d.name.to_string(), deletion(d.mechanism)));
    let upsertions = req.upsertions.iter().map(|u| {
        let change = upsertion(u.mechanism, u.iterations, &u.salt, &u.salted_password);
        (u.name.to_string(), change)
    });
    for (user, change) in deletions.chain(upsertions) {
        let change = if user.is_empty() {
            Err((
                ErrorCode::UNACCEPTABLE_CREDENTIAL,
                "Username must not be empty".to_owned(),
            ))
        } else {
            change
        };
        match changes.iter_mut().find(|(u, _)| *u == user) {
            Some((_, earlier)) => {
                *earlier = Err((
                    ErrorCode::DUPLICATE_RESOURCE,
                    "A user credential cannot be altered twice in the same request".into(),
                ))
            }
            None => changes.push((user, change)),
        }
    }
    let refusal = refused(shard, caller, Operation::Alter);
    let mut users = Vec::with_capacity(changes.len());
    let mut results: Vec<Result<(), Refusal>> = Vec::with_capacity(changes.len());
    // (position in `results`, user, change) of what the store is to do.
    let mut valid = Vec::new();
    for (i, (user, change)) in changes.into_iter().enumerate() {
        match change {
            Ok(_) if refusal.is_some() => results.push(Err((
                ErrorCode::CLUSTER_AUTHORIZATION_FAILED,
                refusal.clone().unwrap_or_default(),
            ))),
            Ok(change) => {
                valid.push((i, user.clone(), change));
                results.push(Ok(()));
            }
            Err(refusal) => results.push(Err(refusal)),
        }
        users.push(user);
    }
    let described: Vec<(usize, String)> =
        valid.iter().map(|(i, _, c)| (*i, c.to_string())).collect();
    let todo: Vec<(String, Change)> = valid.into_iter().map(|(_, u, c)| (u, c)).collect();
    let outcomes = match shard.meta.call(move |m| Ok(apply(m, todo))).await {
        Ok(outcomes) => outcomes,
        // The store did not take the job: every change failed alike.
        Err(e) => described.iter().map(|_| Err(meta_error(&e))).collect(),
    };
    for ((i, change), outcome) in described.into_iter().zip(outcomes) {
        let target = format!("user {}: {change}", users[i]);
        match &outcome {
            Ok(()) => caller.audit("AlterUserScramCredentials", &target, "ok"),
            Err((_, why)) => caller.audit(
                "AlterUserScramCredentials",
                &target,
                &format!("refused: {why}"),
            ),
        }
        results[i] = outcome;
    }
    let mut resp = AlterUserScramCredentialsResponse::default();
    for (user, result) in users.iter().zip(results) {
        let mut r = AlterUserScramCredentialsResult::default().with_user(str_bytes(user));
        if let Err((code, why)) = result {
            r.error_code = code.code();
            r.error_message = Some(str_bytes(&why));
        }
        resp.results.push(r);
    }
    respond(header, &resp)
}

fn deletion(mechanism: i8) -> Result<Change, Refusal> {
    let m = ScramMechanism::from_kafka_type(mechanism).ok_or_else(unknown_mechanism)?;
    Ok(Change::Delete(m))
}

fn upsertion(
    mechanism: i8,
    iterations: i32,
    salt: &[u8],
    salted_password: &[u8],
) -> Result<Change, Refusal> {
    let m = ScramMechanism::from_kafka_type(mechanism).ok_or_else(unknown_mechanism)?;
    let unacceptable = |why: &str| (ErrorCode::UNACCEPTABLE_CREDENTIAL, why.to_owned());
    if iterations < MIN_ITERATIONS as i32 {
        return Err(unacceptable("Too few iterations"));
    }
    if iterations > MAX_ITERATIONS as i32 {
        return Err(unacceptable("Too many iterations"));
    }
    let len = m.hash().hash(b"").len();
    if salted_password.len() != len {
        return Err(unacceptable(&format!(
            "the salted password of {m} is {len} bytes, not {}",
            salted_password.len()
        )));
    }
    ScramCredential::from_salted_password(m, salt, salted_password, iterations as u32)
        .map(Change::Put)
        .map_err(|e| unacceptable(&e))
}

fn unknown_mechanism() -> Refusal {
    (
        ErrorCode::UNSUPPORTED_SASL_MECHANISM,
        "Unknown SCRAM mechanism".into(),
    )
}

fn meta_error(e: &MetaError) -> Refusal {
    (ErrorCode::from(e), e.to_string())
}

/// Applies each user's change on the metadata store's thread; one outcome
/// per change, in order.
fn apply(
    m: &mut crate::meta::MetaStore,
    changes: Vec<(String, Change)>,
) -> Vec<Result<(), Refusal>> {
    changes
        .into_iter()
        .map(|(user, change)| match change {
            Change::Put(cred) => m
                .put_scram_credential(&user, &cred)
                .map_err(|e| meta_error(&e)),
            Change::Delete(mech) => match m.scram_credential(&user, mech) {
                Ok(None) => Err((
                    ErrorCode::RESOURCE_NOT_FOUND,
                    "Attempt to delete a user credential that does not exist".into(),
                )),
                Ok(Some(_)) => m
                    .delete_scram_credentials(&user, Some(mech))
                    .map(|_| ())
                    .map_err(|e| meta_error(&e)),
                Err(e) => Err(meta_error(&e)),
            },
        })
        .collect()
}
