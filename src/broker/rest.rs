//! The REST API on the HTTP port (`/v1/...`, JSON): mirror sources and
//! jobs, restores, users and tokens (who may call what: `http_auth`). Described by the OpenAPI document it serves at `/v1/openapi.json`
//! (`docs/openapi.json`). Every broker serves it; everything it changes is
//! in the metadata store, where every broker's runners pick it up. A job's
//! status is asked of every live broker at once (`.../report`: that
//! broker's part), so nothing is written to etcd every few seconds.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::Serialize;

use super::cluster::Cluster;
use super::metrics::Metrics;
use crate::auth::token::Role;
use crate::auth::{ScramCredential, ScramMechanism};
use crate::meta::BrokerInfo;
use crate::meta::store::now_ms;
use crate::meta::{MetaClient, MetaError};
use crate::mirror::{JobReport, JobSpec, JobStatus, PartitionReport, PartitionState, SourceSpec};

/// The OpenAPI 3 document of this API.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// How long a job's status waits for another broker's part.
const PEER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Largest request body taken.
pub const MAX_BODY: usize = 1 << 20;

#[derive(Clone)]
pub struct Api {
    meta: MetaClient,
    metrics: Arc<Metrics>,
    cluster: Arc<Cluster>,
    /// This broker's own token for asking its peers (viewer).
    peer_token: Option<Rc<str>>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

/// An answer: status and JSON body.
pub type Answer = (StatusCode, String);

fn json<T: Serialize>(status: StatusCode, v: &T) -> Answer {
    match serde_json::to_string_pretty(v) {
        Ok(mut s) => {
            s.push('\n');
            (status, s)
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode: {e}"),
        ),
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Answer {
    let body = serde_json::json!({ "error": message.into() });
    (status, format!("{body}\n"))
}

fn meta_error(e: &MetaError) -> Answer {
    let status = match e {
        MetaError::Exists { .. } | MetaError::InUse { .. } | MetaError::TopicExists { .. } => {
            StatusCode::CONFLICT
        }
        MetaError::NotFound { .. } | MetaError::UnknownTopic { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}

/// A job in `GET /v1/mirror/jobs`: its spec and how it is doing.
#[derive(Debug, Serialize)]
struct JobSummary {
    #[serde(flatten)]
    spec: JobSpec,
    state: String,
    lag_records: i64,
    partitions: usize,
}

impl Api {
    pub fn new(
        meta: MetaClient,
        metrics: Arc<Metrics>,
        cluster: Arc<Cluster>,
        peer_token: Option<String>,
    ) -> Rc<Self> {
        Rc::new(Self {
            meta,
            metrics,
            cluster,
            peer_token: peer_token.map(Into::into),
        })
    }

    pub async fn handle(&self, method: &Method, path: &str, body: Bytes) -> Answer {
        // The same path the gate judged (http_auth::needs): one "/v1/",
        // no empty segments.
        let segments: Vec<&str> = path
            .strip_prefix("/v1/")
            .unwrap_or(path)
            .trim_end_matches('/')
            .split('/')
            .collect();
        if segments.iter().any(|s| s.is_empty()) {
            return error(
                StatusCode::NOT_FOUND,
                format!("no such resource: {path} (see /v1/openapi.json)"),
            );
        }
        let get = method == Method::GET;
        let post = method == Method::POST;
        let delete = method == Method::DELETE;
        match segments.as_slice() {
            ["openapi.json"] if get => (StatusCode::OK, OPENAPI.to_owned()),
            ["mirror", "sources"] if get => self.list_sources().await,
            ["mirror", "sources"] if post => self.add_source(body).await,
            ["mirror", "sources", name] if get => self.get_source(name).await,
            ["mirror", "sources", name] if delete => self.remove_source(name).await,
            ["mirror", "jobs"] if get => self.list_jobs().await,
            ["mirror", "jobs"] if post => self.add_job(body).await,
            ["mirror", "jobs", name] if get => self.get_job(name).await,
            ["mirror", "jobs", name] if delete => self.remove_job(name).await,
            ["mirror", "jobs", name, "status"] if get => match self.status(name).await {
                Ok(s) => json(StatusCode::OK, &s),
                Err(a) => a,
            },
            ["mirror", "jobs", name, "report"] if get => {
                match self.metrics.mirror.report(name, self.cluster.id()) {
                    Some(r) => json(StatusCode::OK, &r),
                    None => error(
                        StatusCode::NOT_FOUND,
                        format!("this broker runs no part of mirror job {name:?}"),
                    ),
                }
            }
            ["restore", "topics", name] if get => self.topic_snapshot(name).await,
            ["restore", "topics"] if post => self.create_restored(body).await,
            ["tokens"] if get => self.list_tokens().await,
            ["tokens"] if post => self.add_token(body).await,
            ["tokens", name] if delete => self.remove_token(name).await,
            ["users"] if get => self.list_users().await,
            ["users"] if post => self.add_user(body).await,
            ["users", name] if delete => self.remove_user(&unescape(name), None).await,
            ["users", name, mechanism] if delete => {
                let Some(m) = ScramMechanism::parse(mechanism) else {
                    return error(
                        StatusCode::NOT_FOUND,
                        format!("{mechanism:?} is neither SCRAM-SHA-256 nor SCRAM-SHA-512"),
                    );
                };
                self.remove_user(&unescape(name), Some(m)).await
            }
            ["mirror", "jobs", name, "pause"] if post => self.set_paused(name, true).await,
            ["mirror", "jobs", name, "resume"] if post => self.set_paused(name, false).await,
            ["openapi.json"]
            | ["tokens"]
            | ["tokens", _]
            | ["users"]
            | ["users", _]
            | ["users", _, _]
            | ["mirror", "sources" | "jobs"]
            | ["mirror", "sources" | "jobs", _]
            | [
                "mirror",
                "jobs",
                _,
                "status" | "report" | "pause" | "resume",
            ] => error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not served at {path} (see /v1/openapi.json)"),
            ),
            _ => error(
                StatusCode::NOT_FOUND,
                format!("no such resource: {path} (see /v1/openapi.json)"),
            ),
        }
    }

    /// A topic's committed log, for `kafscale restore` against the embedded
    /// store this broker holds.
    async fn topic_snapshot(&self, name: &str) -> Answer {
        let n = name.to_owned();
        match self.meta.call(move |s| s.topic_snapshot(&n)).await {
            Ok(Some(mut s)) => {
                // An embedded store lists no brokers: this one serves it.
                if s.brokers.is_empty() {
                    s.brokers = self.cluster.brokers();
                }
                json(StatusCode::OK, &s)
            }
            Ok(None) => error(StatusCode::NOT_FOUND, format!("no topic {name}")),
            Err(e) => meta_error(&e),
        }
    }

    /// Creates a restored topic whose segments `kafscale restore` has put
    /// in the bucket.
    async fn create_restored(&self, body: Bytes) -> Answer {
        let req: crate::restore::CreateRestored = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("not a restored topic: {e}"),
                );
            }
        };
        if !req.config.contains_key(crate::restore::topic_config::OF) {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "a restored topic needs {} in its config",
                    crate::restore::topic_config::OF
                ),
            );
        }
        match self
            .meta
            .call(move |s| {
                s.create_restored_topic(&req.name, req.config, &req.partitions, &req.group_offsets)
            })
            .await
        {
            Ok(t) => {
                tracing::info!(topic = %t.name, partitions = t.partitions, "restored topic created");
                json(StatusCode::CREATED, &t)
            }
            Err(e) => meta_error(&e),
        }
    }

    /// Tokens without their hashes.
    async fn list_tokens(&self) -> Answer {
        match self.meta.call(|m| m.tokens()).await {
            Ok(t) => {
                let listed: Vec<_> = t
                    .iter()
                    .map(|t| serde_json::json!({"name": t.name, "role": t.role, "created_ms": t.created_ms}))
                    .collect();
                json(StatusCode::OK, &listed)
            }
            Err(e) => meta_error(&e),
        }
    }

    /// Makes a token; its secret is in this answer and nowhere else.
    async fn add_token(&self, body: Bytes) -> Answer {
        let req: NewToken = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a token request: {e}")),
        };
        let Some(role) = Role::parse(&req.role) else {
            return error(
                StatusCode::BAD_REQUEST,
                format!("role {:?}: expected admin, operator or viewer", req.role),
            );
        };
        let (token, stored) = match crate::auth::token::generate(&req.name, role, now_ms()) {
            Ok(t) => t,
            Err(why) => return error(StatusCode::BAD_REQUEST, why),
        };
        let name = req.name.clone();
        let created = self
            .meta
            .call(move |m| match m.token(&name)? {
                Some(_) => Err(MetaError::Exists {
                    what: format!("token {name:?}"),
                }),
                None => m.put_token(&stored),
            })
            .await;
        match created {
            Ok(()) => json(
                StatusCode::CREATED,
                &serde_json::json!({"name": req.name, "role": role, "token": token}),
            ),
            Err(e) => meta_error(&e),
        }
    }

    async fn remove_token(&self, name: &str) -> Answer {
        let n = name.to_owned();
        match self.meta.call(move |m| m.delete_token(&n)).await {
            Ok(()) => json(StatusCode::OK, &serde_json::json!({ "removed": name })),
            Err(e) => meta_error(&e),
        }
    }

    async fn list_users(&self) -> Answer {
        match self.meta.call(|m| m.scram_credentials()).await {
            Ok(c) => json(StatusCode::OK, &crate::auth::credential::summarize(c)),
            Err(e) => meta_error(&e),
        }
    }

    /// Stores a user's SCRAM credentials. Only derived keys are taken: the
    /// CLI does the PBKDF2 work, so no password crosses the wire.
    async fn add_user(&self, body: Bytes) -> Answer {
        let value: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")),
        };
        if value.get("password").is_some() {
            return error(
                StatusCode::BAD_REQUEST,
                "passwords are never sent or stored: give credentials (salt, stored_key, server_key, iterations), which `kafscale users add` derives",
            );
        }
        let user: NewUser = match serde_json::from_value(value) {
            Ok(u) => u,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a user: {e}")),
        };
        if user.name.is_empty() {
            return error(StatusCode::BAD_REQUEST, "the user name is empty");
        }
        if user.credentials.is_empty() {
            return error(StatusCode::BAD_REQUEST, "no credentials given");
        }
        for c in &user.credentials {
            if let Err(e) = c.validate() {
                return error(StatusCode::BAD_REQUEST, format!("{}: {e}", c.mechanism));
            }
        }
        let (name, creds) = (user.name.clone(), user.credentials.clone());
        let stored = self
            .meta
            .call(move |m| {
                for c in &creds {
                    m.put_scram_credential(&name, c)?;
                }
                Ok(())
            })
            .await;
        match stored {
            Ok(()) => {
                let mechanisms: Vec<&str> = user
                    .credentials
                    .iter()
                    .map(|c| c.mechanism.name())
                    .collect();
                tracing::info!(user = %user.name, ?mechanisms, "user credentials stored");
                json(
                    StatusCode::CREATED,
                    &serde_json::json!({ "name": user.name, "mechanisms": mechanisms }),
                )
            }
            Err(e) => meta_error(&e),
        }
    }

    async fn remove_user(&self, name: &str, mechanism: Option<ScramMechanism>) -> Answer {
        let n = name.to_owned();
        match self
            .meta
            .call(move |m| m.delete_scram_credentials(&n, mechanism))
            .await
        {
            Ok(removed) => {
                tracing::info!(user = name, removed, "user credentials removed");
                json(
                    StatusCode::OK,
                    &serde_json::json!({ "removed": name, "credentials": removed }),
                )
            }
            Err(e) => meta_error(&e),
        }
    }

    async fn list_sources(&self) -> Answer {
        match self.meta.call(|m| m.mirror_sources()).await {
            Ok(s) => json(StatusCode::OK, &s),
            Err(e) => meta_error(&e),
        }
    }

    async fn get_source(&self, name: &str) -> Answer {
        let n = name.to_owned();
        match self.meta.call(move |m| m.mirror_source(&n)).await {
            Ok(Some(s)) => json(StatusCode::OK, &s),
            Ok(None) => error(
                StatusCode::NOT_FOUND,
                format!("mirror source {name:?} does not exist"),
            ),
            Err(e) => meta_error(&e),
        }
    }

    async fn add_source(&self, body: Bytes) -> Answer {
        let value: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")),
        };
        if value.get("sasl_password").is_some() {
            return error(
                StatusCode::BAD_REQUEST,
                "passwords are never stored: give sasl_password_env (an environment variable) or sasl_password_file (a file), which each broker reads",
            );
        }
        let mut spec: SourceSpec = match serde_json::from_value(value) {
            Ok(s) => s,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a mirror source: {e}")),
        };
        if let Err(e) = spec.validate() {
            return error(StatusCode::BAD_REQUEST, e);
        }
        spec.created_ms = now_ms();
        let stored = spec.clone();
        match self
            .meta
            .call(move |m| m.create_mirror_source(&stored))
            .await
        {
            Ok(()) => {
                tracing::info!(source = %spec.name, bootstrap = ?spec.bootstrap, "mirror source added");
                json(StatusCode::CREATED, &spec)
            }
            Err(e) => meta_error(&e),
        }
    }

    async fn remove_source(&self, name: &str) -> Answer {
        let n = name.to_owned();
        match self.meta.call(move |m| m.delete_mirror_source(&n)).await {
            Ok(()) => {
                tracing::info!(source = name, "mirror source removed");
                json(StatusCode::OK, &serde_json::json!({ "removed": name }))
            }
            Err(e) => meta_error(&e),
        }
    }

    async fn list_jobs(&self) -> Answer {
        let jobs = match self.meta.call(|m| m.mirror_jobs()).await {
            Ok(j) => j,
            Err(e) => return meta_error(&e),
        };
        let mut out = Vec::with_capacity(jobs.len());
        for spec in jobs {
            let (state, lag, partitions) = match self.status(&spec.name).await {
                Ok(s) => (s.state, s.lag_records, s.partitions.len()),
                Err(_) => ("unknown".to_owned(), 0, 0),
            };
            out.push(JobSummary {
                spec,
                state,
                lag_records: lag,
                partitions,
            });
        }
        json(StatusCode::OK, &out)
    }

    async fn get_job(&self, name: &str) -> Answer {
        let n = name.to_owned();
        match self.meta.call(move |m| m.mirror_job(&n)).await {
            Ok(Some(j)) => json(StatusCode::OK, &j),
            Ok(None) => error(
                StatusCode::NOT_FOUND,
                format!("mirror job {name:?} does not exist"),
            ),
            Err(e) => meta_error(&e),
        }
    }

    async fn add_job(&self, body: Bytes) -> Answer {
        let mut spec: JobSpec = match serde_json::from_slice(&body) {
            Ok(s) => s,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a mirror job: {e}")),
        };
        if let Err(e) = spec.compile() {
            return error(StatusCode::BAD_REQUEST, e);
        }
        spec.created_ms = now_ms();
        let stored = spec.clone();
        match self.meta.call(move |m| m.create_mirror_job(&stored)).await {
            Ok(()) => {
                tracing::info!(job = %spec.name, source = %spec.source, topics = ?spec.topics, "mirror job added");
                json(StatusCode::CREATED, &spec)
            }
            Err(e) => meta_error(&e),
        }
    }

    /// Removes the job; its copies stay, and become writable (a promotion,
    /// e.g. when failing over to the copy).
    async fn remove_job(&self, name: &str) -> Answer {
        let n = name.to_owned();
        let removed = self
            .meta
            .call(move |m| {
                let job = m.delete_mirror_job(&n)?;
                let mut released = Vec::new();
                for t in m.topics()? {
                    if t.config.get(crate::mirror::topic_config::JOB) == Some(&n) {
                        m.update_topic_config(&t.name, |c| {
                            c.remove(crate::mirror::topic_config::JOB);
                        })?;
                        released.push(t.name);
                    }
                }
                Ok((job, released))
            })
            .await;
        match removed {
            Ok((_, released)) => {
                tracing::info!(job = name, topics = ?released, "mirror job removed; its copies are now writable");
                json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "removed": name,
                        "topics": released,
                        "note": "the copies stay in the spine and are no longer read-only",
                    }),
                )
            }
            Err(e) => meta_error(&e),
        }
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Answer {
        let n = name.to_owned();
        let now = now_ms();
        match self
            .meta
            .call(move |m| {
                m.update_mirror_job(&n, |j| {
                    j.paused = paused;
                    if !paused {
                        j.resumed_ms = now;
                    }
                })
            })
            .await
        {
            Ok(j) => {
                tracing::info!(
                    job = name,
                    paused,
                    "mirror job {}",
                    if paused { "paused" } else { "resumed" }
                );
                json(StatusCode::OK, &j)
            }
            Err(e) => meta_error(&e),
        }
    }

    /// The job's status, merged from this broker's part and the parts of
    /// the other live brokers (asked at once; one that does not answer in
    /// time is named in the status's errors).
    pub async fn status(&self, name: &str) -> Result<JobStatus, Answer> {
        let n = name.to_owned();
        let (spec, gaps) = self
            .meta
            .call(move |m| Ok((m.mirror_job(&n)?, m.mirror_gaps(&n)?)))
            .await
            .map_err(|e| meta_error(&e))?;
        let Some(spec) = spec else {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("mirror job {name:?} does not exist"),
            ));
        };
        let me = self.cluster.id();
        // Only live brokers: a dead broker's partitions are moving to the
        // others, whose parts will show them.
        let peers: Vec<_> = self
            .cluster
            .brokers()
            .into_iter()
            .filter(|b| b.id != me)
            .collect();
        let token = self.peer_token.as_deref();
        let asked = peers.iter().map(|b| peer_report(b, name, token));
        let answers = futures::future::join_all(asked).await;
        let mut reports: Vec<JobReport> = Vec::new();
        let mut unanswered = Vec::new();
        for (b, answer) in peers.iter().zip(answers) {
            match answer {
                Ok(Some(r)) => reports.push(r),
                Ok(None) => {}
                Err(e) => unanswered.push(format!("broker {} did not report: {e}", b.id)),
            }
        }
        if let Some(local) = self.metrics.mirror.report(name, me) {
            reports.push(local);
        }
        let mut status = merge(&spec, reports, gaps);
        status.errors.extend(unanswered);
        Ok(status)
    }
}

/// One status from brokers' reports: a partition reported twice (moving
/// between brokers) counts once, as the most advanced copy.
fn merge(spec: &JobSpec, reports: Vec<JobReport>, gaps: Vec<crate::mirror::Gap>) -> JobStatus {
    let mut partitions: BTreeMap<(String, i32), PartitionReport> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut connection = "connected";
    let mut brokers = Vec::new();
    for r in reports {
        brokers.push(r.broker_id);
        if let Some(e) = r.error {
            errors.push(format!("broker {}: {e}", r.broker_id));
        }
        for (topic, e) in r.topic_errors {
            let line = format!("topic {topic}: {e}");
            if !errors.contains(&line) {
                errors.push(line);
            }
        }
        connection = match (connection, r.source_connection.as_str()) {
            (_, "unreachable") | ("unreachable", _) => "unreachable",
            (_, "connecting") | ("connecting", _) => "connecting",
            _ => "connected",
        };
        for p in r.partitions {
            let key = (p.source_topic.clone(), p.partition);
            match partitions.get(&key) {
                Some(q) if q.mirrored_next_offset >= p.mirrored_next_offset => {}
                _ => {
                    partitions.insert(key, p);
                }
            }
        }
    }
    brokers.sort_unstable();
    if brokers.is_empty() {
        connection = "unknown";
    }
    let partitions: Vec<PartitionReport> = partitions.into_values().collect();
    let healthy = |s: PartitionState| {
        matches!(
            s,
            PartitionState::Running | PartitionState::Starting | PartitionState::Paused
        )
    };
    let state = if spec.paused {
        "paused"
    } else if !errors.is_empty() || connection == "unreachable" {
        "error"
    } else if partitions.iter().any(|p| !healthy(p.state)) {
        "degraded"
    } else {
        "running"
    };
    JobStatus {
        job: spec.name.clone(),
        source: spec.source.clone(),
        state: state.to_owned(),
        errors,
        source_connection: connection.to_owned(),
        lag_records: partitions.iter().map(|p| p.lag_records).sum(),
        partitions,
        gaps,
        brokers_reporting: brokers,
    }
}

/// Another broker's part of a job (`GET .../report` on its HTTP port):
/// `None` when it runs none.
async fn peer_report(
    b: &BrokerInfo,
    job: &str,
    token: Option<&str>,
) -> Result<Option<JobReport>, String> {
    if b.http_port == 0 {
        return Err("its HTTP port is not known (an older version?)".into());
    }
    let target = format!("{}:{}", b.host, b.http_port);
    let path = format!("/v1/mirror/jobs/{job}/report");
    let ask = async {
        let (status, body) =
            crate::rest_client::round_trip(&target, Method::GET, &path, Bytes::new(), token)
                .await?;
        match status {
            StatusCode::OK => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| format!("{target}: not a report: {e}")),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(format!("{target}: HTTP {s}")),
        }
    };
    kafscale_shard::within(PEER_TIMEOUT, ask)
        .await
        .unwrap_or_else(|| Err(format!("no answer within {PEER_TIMEOUT:?}")))
}

/// The body of `POST /v1/tokens`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: String,
}

/// The body of `POST /v1/users`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    credentials: Vec<ScramCredential>,
}

/// A path segment with its percent-escapes decoded (user names may hold
/// any character).
fn unescape(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_describes_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        assert_eq!(doc["openapi"], "3.0.3");
        // The routes `Api::handle` serves, with their methods.
        let routes = [
            ("/v1/openapi.json", "get"),
            ("/v1/mirror/sources", "get"),
            ("/v1/mirror/sources", "post"),
            ("/v1/mirror/sources/{name}", "get"),
            ("/v1/mirror/sources/{name}", "delete"),
            ("/v1/mirror/jobs", "get"),
            ("/v1/mirror/jobs", "post"),
            ("/v1/mirror/jobs/{name}", "get"),
            ("/v1/mirror/jobs/{name}", "delete"),
            ("/v1/mirror/jobs/{name}/status", "get"),
            ("/v1/mirror/jobs/{name}/report", "get"),
            ("/v1/mirror/jobs/{name}/pause", "post"),
            ("/v1/mirror/jobs/{name}/resume", "post"),
            ("/v1/restore/topics/{name}", "get"),
            ("/v1/restore/topics", "post"),
            ("/v1/users", "get"),
            ("/v1/users", "post"),
            ("/v1/users/{name}", "delete"),
            ("/v1/users/{name}/{mechanism}", "delete"),
            ("/v1/tokens", "get"),
            ("/v1/tokens", "post"),
            ("/v1/tokens/{name}", "delete"),
        ];
        for (path, method) in routes {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} is not in docs/openapi.json"
            );
        }
        let documented: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| {
                p.as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| *k != "parameters")
                    .count()
            })
            .sum();
        assert_eq!(
            documented,
            routes.len(),
            "the document has routes not served"
        );
    }
}
