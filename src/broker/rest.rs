//! The REST API on the HTTP port (`/v1/...`, JSON): mirror sources and
//! jobs. Described by the OpenAPI document it serves at `/v1/openapi.json`
//! (`docs/openapi.json`). Every broker serves it; everything it changes is
//! in the metadata store, where every broker's runners pick it up.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::Serialize;

use super::cluster::Cluster;
use super::metrics::Metrics;
use crate::meta::store::now_ms;
use crate::meta::{MetaClient, MetaError};
use crate::mirror::{JobReport, JobSpec, JobStatus, PartitionReport, PartitionState, SourceSpec};

/// The OpenAPI 3 document of this API.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// Reports older than this (a broker that died or stopped the job) are left
/// out of a job's status.
const REPORT_FRESH_MS: i64 = 15_000;

/// Largest request body taken.
pub const MAX_BODY: usize = 1 << 20;

#[derive(Clone)]
pub struct Api {
    meta: MetaClient,
    metrics: Arc<Metrics>,
    cluster: Arc<Cluster>,
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
    pub fn new(meta: MetaClient, metrics: Arc<Metrics>, cluster: Arc<Cluster>) -> Rc<Self> {
        Rc::new(Self {
            meta,
            metrics,
            cluster,
        })
    }

    pub async fn handle(&self, method: &Method, path: &str, body: Bytes) -> Answer {
        let segments: Vec<&str> = path
            .trim_start_matches("/v1/")
            .trim_end_matches('/')
            .split('/')
            .collect();
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
            ["mirror", "jobs", name, "pause"] if post => self.set_paused(name, true).await,
            ["mirror", "jobs", name, "resume"] if post => self.set_paused(name, false).await,
            ["openapi.json"]
            | ["mirror", "sources" | "jobs"]
            | ["mirror", "sources" | "jobs", _]
            | ["mirror", "jobs", _, "status" | "pause" | "resume"] => error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not served at {path} (see /v1/openapi.json)"),
            ),
            _ => error(
                StatusCode::NOT_FOUND,
                format!("no such resource: {path} (see /v1/openapi.json)"),
            ),
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

    /// The job's status, merged from every broker that reported recently
    /// (this broker's part live).
    pub async fn status(&self, name: &str) -> Result<JobStatus, Answer> {
        let n = name.to_owned();
        let (spec, reports, gaps) = self
            .meta
            .call(move |m| Ok((m.mirror_job(&n)?, m.mirror_reports(&n)?, m.mirror_gaps(&n)?)))
            .await
            .map_err(|e| meta_error(&e))?;
        let Some(spec) = spec else {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("mirror job {name:?} does not exist"),
            ));
        };
        let me = self.cluster.id();
        let now = now_ms();
        // Only live brokers' parts: a dead broker's partitions are moving
        // to the others, whose reports will show them.
        let live: Vec<i32> = self.cluster.brokers().iter().map(|b| b.id).collect();
        let mut fresh: Vec<JobReport> = reports
            .into_iter()
            .filter(|r| {
                r.broker_id != me
                    && live.contains(&r.broker_id)
                    && now - r.reported_ms <= REPORT_FRESH_MS
            })
            .collect();
        if let Some(local) = self.metrics.mirror.report(name, me) {
            fresh.push(local);
        }
        Ok(merge(&spec, fresh, gaps))
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
