//! Mirror runners: on every shard, one per job, copying the source
//! partitions whose target partitions this shard owns (the shard a
//! partition hashes to, on the broker it hashes to in a cluster).
//!
//! A round: for each ready partition, fetch from the target log's own next
//! offset; the answers' batches go into the log as they are
//! ([`PartitionLog::append_at_offsets`]) and become durable with the
//! shard's next flush. Nothing else is remembered: after a failed flush the
//! log's next offset goes back to its committed end and the next round
//! fetches from there, so the copy has no holes and no repeats.
//!
//! Memory: a round reserves its fetch's `max_bytes` from the shard's budget
//! before sending it, keeps what it appended reserved until that is durable,
//! and a partition with two segments' worth not yet durable is not fetched.
//! When S3 or the metadata store fails, flushes fail, partitions back off
//! and fetching stops; the source's retention is the buffer.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use kafscale_client::{Client, ClientError, FetchOptions, FetchSpec, FetchedPartition, KafkaCode};
use kafscale_codec::batch::RecordBatch;

use super::errors::ErrorCode;
use super::partition::{Appended, PartitionLog};
use super::shard::Shard;
use crate::meta::MetaError;
use crate::meta::store::now_ms;
use crate::mirror::{
    CompiledJob, Gap, JobReport, OnGap, PartitionReport, PartitionState, SourceSpec, topic_config,
};

/// How often each shard reads the job list.
const JOB_POLL: Duration = Duration::from_secs(2);
/// How often a runner lists the source's topics and partitions.
pub const DISCOVERY: Duration = Duration::from_secs(10);
/// How often a runner recomputes which partitions this shard owns.
const ASSIGN_EVERY: Duration = Duration::from_secs(1);
/// How often a runner publishes its partitions' state for status and metrics.
const PUBLISH_EVERY: Duration = Duration::from_millis(500);
/// A partition's share of one fetch, to start with; doubled (up to the
/// largest) when a batch does not fit.
const PARTITION_FETCH_BYTES: i32 = 4 << 20;
const PARTITION_FETCH_MAX: i32 = 64 << 20;
/// Most bytes one fetch asks for (also at most a quarter of the shard's budget).
const FETCH_MAX: u64 = 32 << 20;
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// How often a job's consumer group offsets are copied.
pub const GROUP_SYNC_EVERY: Duration = Duration::from_secs(5);

/// The connection of a job's runners to its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum SourceConnection {
    Connected,
    #[default]
    Connecting,
    Unreachable,
}

impl SourceConnection {
    fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Connecting => "connecting",
            Self::Unreachable => "unreachable",
        }
    }
}

/// One shard's part of a job, as its runner last published it.
#[derive(Debug, Clone, Default)]
pub struct ShardPart {
    pub connection: SourceConnection,
    pub error: Option<String>,
    pub topic_errors: BTreeMap<String, String>,
    pub partitions: BTreeMap<(String, i32), PartitionReport>,
    /// Offsets lost to source retention, per partition, since this runner
    /// started (for the metric; the gaps themselves are stored).
    pub gap_records: BTreeMap<(String, i32), u64>,
}

/// Broker-wide view of every job's runners, for status and /metrics.
#[derive(Debug, Default)]
pub struct MirrorRegistry {
    jobs: Mutex<BTreeMap<String, BTreeMap<usize, ShardPart>>>,
}

impl MirrorRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, BTreeMap<usize, ShardPart>>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, job: &str, shard: usize, part: ShardPart) {
        self.lock()
            .entry(job.to_owned())
            .or_default()
            .insert(shard, part);
    }

    fn remove(&self, job: &str, shard: usize) {
        let mut jobs = self.lock();
        if let Some(shards) = jobs.get_mut(job) {
            shards.remove(&shard);
            if shards.is_empty() {
                jobs.remove(job);
            }
        }
    }

    /// This broker's report of a job, from every shard's part.
    pub fn report(&self, job: &str, broker_id: i32) -> Option<JobReport> {
        let jobs = self.lock();
        let shards = jobs.get(job)?;
        let mut r = JobReport {
            job: job.to_owned(),
            broker_id,
            reported_ms: now_ms(),
            ..JobReport::default()
        };
        let worst = shards
            .values()
            .map(|p| p.connection)
            .max()
            .unwrap_or_default();
        r.source_connection = worst.as_str().to_owned();
        r.error = shards.values().find_map(|p| p.error.clone());
        let mut topic_errors = BTreeMap::new();
        for p in shards.values() {
            topic_errors.extend(p.topic_errors.clone());
            r.partitions.extend(p.partitions.values().cloned());
        }
        r.topic_errors = topic_errors.into_iter().collect();
        r.partitions
            .sort_by(|a, b| (&a.source_topic, a.partition).cmp(&(&b.source_topic, b.partition)));
        Some(r)
    }

    /// Prometheus text for every job this broker runs.
    pub fn render(&self, out: &mut String) {
        let jobs = self.lock();
        let series: [(&str, &str, &str); 6] = [
            (
                "kafscale_mirror_lag_records",
                "gauge",
                "Records the source has that the copy does not yet.",
            ),
            (
                "kafscale_mirror_lag_seconds",
                "gauge",
                "Now minus the newest copied record's timestamp, while records wait.",
            ),
            (
                "kafscale_mirror_bytes_total",
                "counter",
                "Record batch bytes copied from the source.",
            ),
            (
                "kafscale_mirror_records_total",
                "counter",
                "Records copied from the source.",
            ),
            (
                "kafscale_mirror_fetch_errors_total",
                "counter",
                "Fetches from the source that failed.",
            ),
            (
                "kafscale_mirror_gap_records_total",
                "counter",
                "Offsets the source deleted (retention) before they were copied.",
            ),
        ];
        for (i, (name, kind, help)) in series.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (job, shards) in jobs.iter() {
                for part in shards.values() {
                    for ((topic, partition), p) in &part.partitions {
                        let value = match i {
                            0 => p.lag_records as f64,
                            1 => p.lag_seconds,
                            2 => p.bytes_copied as f64,
                            3 => p.records_copied as f64,
                            4 => p.fetch_errors as f64,
                            _ => part
                                .gap_records
                                .get(&(topic.clone(), *partition))
                                .copied()
                                .unwrap_or(0) as f64,
                        };
                        let _ = writeln!(
                            out,
                            "{name}{{job=\"{job}\",topic=\"{topic}\",partition=\"{partition}\"}} {value}"
                        );
                    }
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP kafscale_mirror_source_connected 1 while every runner of the job is connected to its source.\n# TYPE kafscale_mirror_source_connected gauge"
        );
        for (job, shards) in jobs.iter() {
            let worst = shards
                .values()
                .map(|p| p.connection)
                .max()
                .unwrap_or_default();
            let up = u8::from(worst == SourceConnection::Connected);
            let _ = writeln!(
                out,
                "kafscale_mirror_source_connected{{job=\"{job}\"}} {up}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP kafscale_mirror_partitions Mirrored partitions on this broker by state.\n# TYPE kafscale_mirror_partitions gauge"
        );
        for (job, shards) in jobs.iter() {
            for state in PartitionState::ALL {
                let n = shards
                    .values()
                    .flat_map(|p| p.partitions.values())
                    .filter(|p| p.state == state)
                    .count();
                let _ = writeln!(
                    out,
                    "kafscale_mirror_partitions{{job=\"{job}\",state=\"{}\"}} {n}",
                    state.as_str()
                );
            }
        }
    }
}

/// What the supervisor tells a runner; read at the start of every round.
struct Control {
    job: Result<CompiledJob, String>,
    source: Option<SourceSpec>,
    stopped: bool,
}

/// Every shard: starts, updates and stops one runner per stored job.
pub async fn supervise(shard: Rc<Shard>) {
    let mut runners: HashMap<String, Rc<RefCell<Control>>> = HashMap::new();
    let mut failing = false;
    loop {
        if shard.draining() {
            for c in runners.values() {
                c.borrow_mut().stopped = true;
            }
            return;
        }
        let listed = shard
            .meta
            .call(|m| Ok((m.mirror_jobs()?, m.mirror_sources()?)))
            .await;
        match listed {
            Ok((jobs, sources)) => {
                failing = false;
                runners.retain(|name, c| {
                    let keep = jobs.iter().any(|j| &j.name == name);
                    if !keep {
                        c.borrow_mut().stopped = true;
                    }
                    keep
                });
                for job in jobs {
                    let source = sources.iter().find(|s| s.name == job.source).cloned();
                    let compiled = job.compile();
                    match runners.get(&job.name) {
                        Some(c) => {
                            let mut c = c.borrow_mut();
                            c.job = compiled;
                            c.source = source;
                        }
                        None => {
                            let c = Rc::new(RefCell::new(Control {
                                job: compiled,
                                source,
                                stopped: false,
                            }));
                            runners.insert(job.name.clone(), c.clone());
                            let runner = Runner::new(shard.clone(), job.name.clone(), c);
                            glommio::spawn_local(runner.run()).detach();
                        }
                    }
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot read the mirror jobs; running jobs go on as they were");
                }
                failing = true;
            }
        }
        glommio::timer::sleep(JOB_POLL).await;
    }
}

/// Exponential backoff with jitter: 200 ms doubling to 30 s.
fn backoff(attempt: u32) -> Duration {
    let base = 200u64.saturating_mul(1 << attempt.min(8)).min(30_000);
    let jitter = rand::random::<u64>() % (base / 4 + 1);
    Duration::from_millis(base - base / 8 + jitter)
}

/// What durability watchers tell the runner about a partition.
#[derive(Default)]
struct Durability {
    /// Bytes appended and not yet durable (or failed).
    in_flight: Cell<usize>,
    /// A flush failed since the runner last looked.
    failed: RefCell<Option<String>>,
    /// A flush succeeded since the runner last looked.
    succeeded: Cell<bool>,
}

struct Part {
    target: String,
    report: PartitionReport,
    durability: Rc<Durability>,
    retry_at: Option<Instant>,
    fetch_attempt: u32,
    target_attempt: u32,
    /// Where the copy continues when not at the log's end: the source's
    /// log start (an empty copy of a source whose log starts later, or past
    /// a recorded gap). Kept until the log's committed end passes it.
    start_at: Option<i64>,
    /// Stopped until the job is resumed (a gap with `on_gap: stop`, a copy
    /// ahead of its source).
    stopped: bool,
    max_bytes: i32,
    /// Timestamps read from the log once, after a (re)start.
    seen_log: bool,
}

impl Part {
    fn new(source_topic: &str, partition: i32, target: &str) -> Self {
        Self {
            target: target.to_owned(),
            report: PartitionReport {
                source_topic: source_topic.to_owned(),
                partition,
                target_topic: target.to_owned(),
                source_high_watermark: -1,
                source_log_start: -1,
                newest_copied_ms: -1,
                ..PartitionReport::default()
            },
            durability: Rc::default(),
            retry_at: None,
            fetch_attempt: 0,
            target_attempt: 0,
            start_at: None,
            stopped: false,
            max_bytes: PARTITION_FETCH_BYTES,
            seen_log: false,
        }
    }

    fn problem(&mut self, state: PartitionState, error: String, retry_in: Duration) {
        self.report.state = state;
        self.report.last_error = Some(error);
        self.retry_at = Some(Instant::now() + retry_in);
    }

    /// Lag figures from the source's last answer and the copy's end.
    fn refresh_lag(&mut self, now_ms: i64) {
        // Past a recorded gap the copy continues at `start_at`.
        let at = self.start_at.map_or(self.report.mirrored_next_offset, |s| {
            s.max(self.report.mirrored_next_offset)
        });
        let r = &mut self.report;
        r.lag_records = if r.source_high_watermark >= 0 {
            (r.source_high_watermark - at).max(0)
        } else {
            0
        };
        r.lag_seconds = if r.lag_records > 0 && r.newest_copied_ms >= 0 {
            ((now_ms - r.newest_copied_ms).max(0) as f64) / 1000.0
        } else {
            0.0
        };
    }
}

/// A partition fetched in a round: where from, and the log as it was.
struct Asked {
    key: (String, i32),
    log: Rc<PartitionLog>,
    /// The log's next offset when the fetch was sent.
    log_next: i64,
    from: i64,
}

struct Runner {
    shard: Rc<Shard>,
    name: String,
    control: Rc<RefCell<Control>>,
    client: Option<(SourceSpec, Client)>,
    connect_attempt: u32,
    /// Source topic -> (target topic, partitions).
    topics: BTreeMap<String, (String, u32)>,
    /// This shard's partitions, by source topic and partition.
    parts: BTreeMap<(String, i32), Part>,
    view: ShardPart,
    discovered: Option<Instant>,
    assigned: Option<Instant>,
    published: Option<Instant>,
    last_resume: i64,
    groups_synced: Option<Instant>,
    rotate: usize,
    wake_tx: Rc<LocalSender<()>>,
    wake_rx: LocalReceiver<()>,
}

impl Runner {
    fn new(shard: Rc<Shard>, name: String, control: Rc<RefCell<Control>>) -> Self {
        let (wake_tx, wake_rx) = local_channel::new_bounded(1);
        let wake_tx = Rc::new(wake_tx);
        Self {
            shard,
            name,
            control,
            client: None,
            connect_attempt: 0,
            topics: BTreeMap::new(),
            parts: BTreeMap::new(),
            view: ShardPart::default(),
            discovered: None,
            assigned: None,
            published: None,
            last_resume: 0,
            groups_synced: None,
            rotate: 0,
            wake_tx,
            wake_rx,
        }
    }

    async fn run(mut self) {
        tracing::info!(job = %self.name, shard = self.shard.id, "mirror job runner started");
        loop {
            let (job, source, stopped) = {
                let c = self.control.borrow();
                (c.job.clone(), c.source.clone(), c.stopped)
            };
            if stopped || self.shard.draining() {
                break;
            }
            let job = match job {
                Ok(j) => j,
                Err(e) => {
                    self.view.error = Some(e);
                    self.publish(true);
                    glommio::timer::sleep(JOB_POLL).await;
                    continue;
                }
            };
            let Some(source) = source else {
                self.view.error = Some(format!(
                    "source {} does not exist (removed?)",
                    job.spec.source
                ));
                self.publish(true);
                glommio::timer::sleep(JOB_POLL).await;
                continue;
            };
            if job.spec.resumed_ms != self.last_resume {
                self.last_resume = job.spec.resumed_ms;
                for p in self.parts.values_mut() {
                    p.stopped = false;
                    p.retry_at = None;
                }
            }
            if job.spec.paused {
                for p in self.parts.values_mut() {
                    p.report.state = PartitionState::Paused;
                }
                self.publish(true);
                glommio::timer::sleep(Duration::from_millis(500)).await;
                continue;
            }
            if !self.connect(&source).await {
                continue;
            }
            if self.discovered.is_none_or(|t| t.elapsed() >= DISCOVERY) {
                self.discover(&job, &source).await;
            }
            if self.assigned.is_none_or(|t| t.elapsed() >= ASSIGN_EVERY) {
                self.assign();
            }
            if job.spec.groups.is_some()
                && self
                    .groups_synced
                    .is_none_or(|t| t.elapsed() >= GROUP_SYNC_EVERY)
                && self.shard.id == 0
                && self
                    .shard
                    .cluster
                    .prefers_me_for(&format!("mirror-groups/{}", self.name))
            {
                self.groups_synced = Some(Instant::now());
                self.sync_groups(&job).await;
            }
            self.round(&job).await;
            self.publish(false);
        }
        self.shard.metrics.mirror.remove(&self.name, self.shard.id);
        // The job may be gone: this shard reads its copies' configuration
        // again (no longer read-only once the job is removed).
        for (target, _) in self.topics.values() {
            self.shard.refresh_topic(target);
        }
        tracing::info!(job = %self.name, shard = self.shard.id, "mirror job runner stopped");
    }

    /// A connected client for `source`, reconnecting when its settings changed.
    async fn connect(&mut self, source: &SourceSpec) -> bool {
        if self.client.as_ref().is_some_and(|(s, _)| s == source) {
            return true;
        }
        self.client = None;
        let was = self.view.connection;
        self.view.connection = SourceConnection::Connecting;
        let connected = match source.client_config(&format!("kafscale-mirror-{}", self.name)) {
            Ok(config) => Client::connect(config)
                .await
                .map_err(|e| format!("cannot connect to source {}: {e}", source.name)),
            Err(e) => Err(e),
        };
        match connected {
            Ok(client) => {
                tracing::info!(job = %self.name, source = %source.name, "connected to the mirror source");
                self.client = Some((source.clone(), client));
                self.view.connection = SourceConnection::Connected;
                self.view.error = None;
                self.connect_attempt = 0;
                true
            }
            Err(e) => {
                if was != SourceConnection::Unreachable || self.connect_attempt == 0 {
                    tracing::warn!(job = %self.name, error = %e, "mirror source unreachable; retrying");
                }
                self.view.connection = SourceConnection::Unreachable;
                for p in self.parts.values_mut() {
                    p.report.state = PartitionState::SourceUnreachable;
                    p.report.last_error = Some(e.clone());
                }
                self.view.error = Some(e);
                self.publish(true);
                glommio::timer::sleep(backoff(self.connect_attempt).min(Duration::from_secs(10)))
                    .await;
                self.connect_attempt += 1;
                false
            }
        }
    }

    /// Lists the source's topics: matching ones get (or grow) their target
    /// topic; topics gone or no longer matched are no longer copied.
    async fn discover(&mut self, job: &CompiledJob, source: &SourceSpec) {
        self.discovered = Some(Instant::now());
        let Some((_, client)) = &self.client else {
            return;
        };
        let metadata = match client.metadata(&[]).await {
            Ok(m) => m,
            Err(e) => {
                self.view.error = Some(format!(
                    "cannot list the topics of source {}: {e}",
                    source.name
                ));
                if e.is_retriable() {
                    self.view.connection = SourceConnection::Unreachable;
                    self.client = None;
                }
                return;
            }
        };
        self.view.error = None;
        let mut topics = BTreeMap::new();
        let mut errors = BTreeMap::new();
        for t in metadata.topics.iter() {
            if t.internal || !t.error.is_none() || !job.matches(&t.name) {
                continue;
            }
            let partitions = t.partitions.len() as u32;
            let ensured = match job.target(&t.name) {
                Ok(target) => self
                    .ensure_target(&source.name, &t.name, &target, partitions)
                    .await
                    .map(|()| target),
                Err(e) => Err(e),
            };
            match ensured {
                Ok(target) => {
                    topics.insert(t.name.clone(), (target, partitions));
                }
                Err(e) => {
                    tracing::warn!(job = %self.name, topic = %t.name, error = %e, "cannot mirror topic");
                    errors.insert(t.name.clone(), e);
                }
            }
        }
        for gone in self.topics.keys().filter(|t| !topics.contains_key(*t)) {
            tracing::info!(job = %self.name, topic = %gone, "source topic no longer mirrored (deleted at the source or no longer matched); its copy stays");
        }
        self.topics = topics;
        self.view.topic_errors = errors;
        self.assign();
    }

    /// Makes sure the target topic exists as a copy of `source_topic` with
    /// at least `partitions` partitions.
    async fn ensure_target(
        &self,
        source: &str,
        source_topic: &str,
        target: &str,
        partitions: u32,
    ) -> Result<(), String> {
        let shard = &self.shard;
        for _ in 0..3 {
            shard.refresh_topic(target);
            let existing = shard
                .topic(target)
                .await
                .map_err(|e| format!("cannot read target topic {target}: {e}"))?;
            let Some(t) = existing else {
                let config = BTreeMap::from([
                    (topic_config::JOB.to_owned(), self.name.clone()),
                    (topic_config::SOURCE.to_owned(), source.to_owned()),
                    (
                        topic_config::SOURCE_TOPIC.to_owned(),
                        source_topic.to_owned(),
                    ),
                ]);
                let name = target.to_owned();
                match shard
                    .meta
                    .call(move |m| m.create_topic(&name, partitions, config))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(job = %self.name, topic = target, source_topic, partitions, "created mirror target topic");
                        shard.refresh_topic(target);
                        return Ok(());
                    }
                    // Another shard or broker created it: look again.
                    Err(MetaError::TopicExists { .. }) => continue,
                    Err(e) => return Err(format!("cannot create target topic {target}: {e}")),
                }
            };
            let of = |k: &str| t.config.get(k).map(String::as_str);
            if of(topic_config::SOURCE) != Some(source)
                || of(topic_config::SOURCE_TOPIC) != Some(source_topic)
            {
                return Err(format!(
                    "target topic {target} already exists and is not a copy of {source_topic} from source {source}; nothing is copied into it"
                ));
            }
            match of(topic_config::JOB) {
                Some(j) if j == self.name => {}
                Some(other) => {
                    return Err(format!(
                        "target topic {target} is already copied into by mirror job {other}"
                    ));
                }
                None => {
                    // A copy whose job was removed: this job adopts it and
                    // continues from its end.
                    let (name, job) = (target.to_owned(), self.name.clone());
                    shard
                        .meta
                        .call(move |m| {
                            m.update_topic_config(&name, |c| {
                                c.insert(topic_config::JOB.to_owned(), job.clone());
                            })
                        })
                        .await
                        .map_err(|e| format!("cannot adopt target topic {target}: {e}"))?;
                    tracing::info!(job = %self.name, topic = target, "adopted an earlier copy; continuing from its end");
                    continue;
                }
            }
            if t.partitions < partitions {
                let name = target.to_owned();
                match shard
                    .meta
                    .call(move |m| m.add_partitions(&name, partitions))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(job = %self.name, topic = target, partitions, "source topic grew; added partitions to its copy");
                    }
                    Err(MetaError::BadPartitionCount { .. }) => {}
                    Err(e) => return Err(format!("cannot add partitions to {target}: {e}")),
                }
                continue;
            }
            if t.partitions > partitions {
                return Err(format!(
                    "target topic {target} has {} partitions, the source topic {source_topic} only {partitions} (re-created at the source?); nothing is copied into it",
                    t.partitions
                ));
            }
            return Ok(());
        }
        Err(format!("target topic {target} keeps changing; retrying"))
    }

    /// The partitions this shard copies: those whose target partition it owns.
    fn assign(&mut self) {
        self.assigned = Some(Instant::now());
        let mut want = BTreeSet::new();
        for (source_topic, (target, n)) in &self.topics {
            for p in 0..*n {
                if self.shard.owner_of(target, p) == self.shard.id
                    && self.shard.cluster.prefers_me(target, p)
                {
                    want.insert((source_topic.clone(), p as i32));
                }
            }
        }
        self.parts.retain(|k, _| want.contains(k));
        for key in want {
            let target = &self.topics[&key.0].0;
            self.parts
                .entry(key.clone())
                .or_insert_with(|| Part::new(&key.0, key.1, target));
        }
    }

    async fn round(&mut self, job: &CompiledJob) {
        let now = Instant::now();
        let limit = 2 * self.shard.args.segment_bytes.0 as usize;
        let mut asked = Vec::new();
        let mut specs = Vec::new();
        let keys: Vec<(String, i32)> = self.parts.keys().cloned().collect();
        let n = keys.len().max(1);
        self.rotate = (self.rotate + 1) % n;
        for key in keys.iter().cycle().skip(self.rotate).take(keys.len()) {
            let Some(p) = self.parts.get_mut(key) else {
                continue;
            };
            if let Some(e) = p.durability.failed.take() {
                p.target_attempt += 1;
                p.problem(
                    PartitionState::TargetUnavailable,
                    e,
                    backoff(p.target_attempt),
                );
            }
            if p.durability.succeeded.replace(false) {
                p.target_attempt = 0;
            }
            if p.stopped
                || p.retry_at.is_some_and(|t| t > now)
                || p.durability.in_flight.get() >= limit
            {
                continue;
            }
            let log = match self.shard.log(&p.target, key.1 as u32).await {
                Ok(l) => l,
                Err(ErrorCode::NOT_LEADER_OR_FOLLOWER) => {
                    // Moving between brokers, or our lease is being renewed.
                    p.problem(
                        PartitionState::Starting,
                        "the target partition is moving between brokers".into(),
                        Duration::from_secs(1),
                    );
                    continue;
                }
                Err(code) => {
                    p.target_attempt += 1;
                    p.problem(
                        PartitionState::TargetUnavailable,
                        format!(
                            "cannot load target partition {}-{}: error {code:?}",
                            p.target, key.1
                        ),
                        backoff(p.target_attempt),
                    );
                    continue;
                }
            };
            if !p.seen_log {
                p.seen_log = true;
                if let Some(last) = log.segments().last() {
                    p.report.newest_copied_ms = last.max_timestamp;
                }
            }
            if p.start_at.is_some_and(|s| log.high_watermark() >= s) {
                p.start_at = None;
            }
            let log_next = log.next_offset();
            let from = p.start_at.map_or(log_next, |s| s.max(log_next));
            // What the copy holds durably (appends in flight are not a backup yet).
            p.report.mirrored_next_offset = log.high_watermark();
            specs.push(FetchSpec {
                topic: key.0.clone(),
                partition: key.1,
                offset: from,
                max_bytes: p.max_bytes,
            });
            asked.push(Asked {
                key: key.clone(),
                log,
                log_next,
                from,
            });
        }
        if specs.is_empty() {
            // Nothing ready: wait for a flush to finish or a backoff to end.
            let woken = async {
                let _ignored = self.wake_rx.recv().await;
            };
            futures_lite::future::or(woken, glommio::timer::sleep(Duration::from_millis(100)))
                .await;
            return;
        }
        let Some((_, client)) = self.client.clone() else {
            return;
        };
        let wanted: u64 = specs.iter().map(|s| s.max_bytes.max(0) as u64).sum();
        let quarter = (self.shard.args.produce_budget() / self.shard.count as u64 / 4).max(1 << 20);
        let max_bytes = wanted.min(FETCH_MAX).min(quarter);
        let mut reservation = self.shard.reserve(max_bytes).await;
        let opts = FetchOptions {
            max_wait: FETCH_WAIT,
            min_bytes: 1,
            max_bytes: max_bytes as i32,
            // Appending checks every batch's CRC while copying it.
            verify_crc: false,
            ..FetchOptions::default()
        };
        let results = client.fetch(&specs, &opts).await;
        let mut pending = Vec::new();
        for (a, result) in asked.into_iter().zip(results) {
            match result {
                Ok(f) => self.copied(a, f, &mut pending),
                Err(e) => self.fetch_failed(job, a, e).await,
            }
        }
        self.shard.wake_flusher();
        let appended: usize = pending.iter().map(|(_, _, bytes)| bytes).sum();
        reservation.shrink(appended as u64);
        let reservation = Rc::new(reservation);
        for (durable, durability, bytes) in pending {
            let (reservation, wake) = (reservation.clone(), self.wake_tx.clone());
            glommio::spawn_local(async move {
                let outcome = durable.await;
                durability
                    .in_flight
                    .set(durability.in_flight.get().saturating_sub(bytes));
                match outcome {
                    Ok(Ok(())) => durability.succeeded.set(true),
                    Ok(Err(code)) => {
                        *durability.failed.borrow_mut() = Some(format!(
                            "the spine could not store the copied records (error {code:?}: S3 or the metadata store unavailable?); retrying"
                        ));
                    }
                    // The log was dropped (ownership moved): nothing to report.
                    Err(_) => {}
                }
                drop(reservation);
                let _ignored = wake.try_send(());
            })
            .detach();
        }
    }

    /// Appends what a fetch returned for one partition.
    fn copied(
        &mut self,
        a: Asked,
        f: FetchedPartition,
        pending: &mut Vec<(super::partition::Durable, Rc<Durability>, usize)>,
    ) {
        let Some(p) = self.parts.get_mut(&a.key) else {
            return;
        };
        p.fetch_attempt = 0;
        p.report.source_high_watermark = f.high_watermark;
        p.report.source_log_start = f.log_start_offset;
        if a.log.next_offset() != a.log_next || !self.shard.cluster.holds(a.log.claim.as_ref()) {
            // A flush failed meanwhile (the log went back to its committed
            // end) or the partition moved: the next round fetches again.
            return;
        }
        let batches: Vec<RecordBatch> = f
            .batches
            .into_iter()
            .filter(|b| b.last_offset() >= a.from)
            .collect();
        if batches.is_empty() {
            if f.truncated_tail > 0 && p.max_bytes < PARTITION_FETCH_MAX {
                // A batch larger than this partition's share: ask for more.
                p.max_bytes = (p.max_bytes * 2).min(PARTITION_FETCH_MAX);
            }
            if p.report.state != PartitionState::Gap || p.start_at.is_none() {
                p.report.state = PartitionState::Running;
                p.report.last_error = None;
            }
            return;
        }
        if batches[0].base_offset() < a.log_next {
            p.stopped = true;
            p.report.state = PartitionState::Error;
            p.report.last_error = Some(format!(
                "the source's batch at offset {} starts before the copy's end {} (its batches changed?); this partition is not copied until the job is resumed",
                batches[0].base_offset(),
                a.log_next
            ));
            tracing::error!(job = %self.name, topic = %a.key.0, partition = a.key.1, error = p.report.last_error.as_deref().unwrap_or_default(), "mirror partition stopped");
            return;
        }
        let bytes: usize = batches.iter().map(|b| b.len()).sum();
        let records: u64 = batches.iter().map(|b| b.record_count().max(0) as u64).sum();
        let newest = batches
            .iter()
            .map(|b| b.max_timestamp())
            .max()
            .unwrap_or(-1);
        let segment_bytes = self.shard.args.segment_bytes.0 as usize;
        match a.log.append_at_offsets(
            &batches,
            Some(f.log_start_offset),
            segment_bytes,
            &self.shard.pool,
        ) {
            Ok(Appended::Pending { durable, .. }) => {
                let d = &p.durability;
                d.in_flight.set(d.in_flight.get() + bytes);
                pending.push((durable, p.durability.clone(), bytes));
                p.report.bytes_copied += bytes as u64;
                p.report.records_copied += records;
                p.report.newest_copied_ms = p.report.newest_copied_ms.max(newest);
                p.report.mirrored_next_offset = a.log.high_watermark();
                p.report.state = PartitionState::Running;
                p.report.last_error = None;
            }
            Ok(Appended::Duplicate { .. }) => {}
            Err(ErrorCode::NOT_LEADER_OR_FOLLOWER) => {}
            Err(code) => {
                let why = match code {
                    ErrorCode::MESSAGE_TOO_LARGE => format!(
                        "a source batch of {bytes} bytes does not fit a segment (--segment-bytes {segment_bytes})"
                    ),
                    ErrorCode::KAFKA_STORAGE_ERROR => format!(
                        "the copy's open segment cannot count {records} more records (a segment counts at most 2^31 - 1); retried once it is flushed"
                    ),
                    _ => format!(
                        "source batches at offset {} were refused (error {code:?}: a CRC mismatch or a malformed batch from the source)",
                        a.from
                    ),
                };
                tracing::error!(job = %self.name, topic = %a.key.0, partition = a.key.1, error = %why, "cannot append mirrored batches");
                p.fetch_attempt += 1;
                let wait = backoff(p.fetch_attempt + 4);
                p.problem(PartitionState::Error, why, wait);
            }
        }
    }

    async fn fetch_failed(&mut self, job: &CompiledJob, a: Asked, e: ClientError) {
        let Some(p) = self.parts.get_mut(&a.key) else {
            return;
        };
        p.report.fetch_errors += 1;
        p.fetch_attempt += 1;
        let (topic, partition) = (&a.key.0, a.key.1);
        match e {
            ClientError::OffsetOutOfRange {
                requested,
                log_start,
                high_watermark,
                ..
            } if requested < log_start => {
                p.report.source_log_start = log_start;
                p.report.source_high_watermark = high_watermark;
                let never_written =
                    a.log.segments().is_empty() && a.log_next == a.log.high_watermark();
                if never_written {
                    tracing::info!(job = %self.name, topic, partition, log_start, "the source's log starts at {log_start}; the copy starts there");
                    p.start_at = Some(log_start);
                    p.retry_at = None;
                    p.fetch_attempt = 0;
                    return;
                }
                let gap = Gap {
                    source_topic: topic.clone(),
                    partition,
                    target_topic: p.target.clone(),
                    from: requested,
                    to: log_start,
                    detected_ms: now_ms(),
                };
                tracing::error!(
                    job = %self.name, topic, partition, from = requested, to = log_start,
                    "GAP: the source's retention deleted offsets [{requested}, {log_start}) before they were mirrored; they are missing from the copy"
                );
                *self.view.gap_records.entry(a.key.clone()).or_default() +=
                    (log_start - requested) as u64;
                let (job_name, g) = (self.name.clone(), gap.clone());
                if let Err(e) = self
                    .shard
                    .meta
                    .call(move |m| m.record_mirror_gap(&job_name, &g))
                    .await
                {
                    tracing::error!(job = %self.name, error = %e, "cannot record the gap in the metadata store");
                }
                let Some(p) = self.parts.get_mut(&a.key) else {
                    return;
                };
                p.report.state = PartitionState::Gap;
                let what = format!(
                    "offsets [{requested}, {log_start}) were deleted by the source's retention before they were copied"
                );
                match job.spec.on_gap {
                    OnGap::Continue => {
                        p.report.last_error = Some(format!("{what}; continuing at {log_start}"));
                        p.start_at = Some(log_start);
                        p.retry_at = None;
                    }
                    OnGap::Stop => {
                        // Resuming the job accepts the gap: the copy then
                        // continues at the source's log start.
                        p.report.last_error = Some(format!(
                            "{what}; stopped (on_gap: stop) until the job is resumed, then continuing at {log_start}"
                        ));
                        p.stopped = true;
                        p.start_at = Some(log_start);
                    }
                }
            }
            ClientError::OffsetOutOfRange {
                requested,
                high_watermark,
                ..
            } => {
                p.stopped = true;
                p.report.state = PartitionState::Error;
                p.report.source_high_watermark = high_watermark;
                p.report.last_error = Some(format!(
                    "the copy is ahead of the source: copied up to {requested}, the source's log ends at {high_watermark} (source topic re-created or truncated?); not copied until the job is resumed"
                ));
                tracing::error!(job = %self.name, topic, partition, requested, high_watermark, "mirror partition ahead of its source; stopped");
            }
            e if e.is_retriable()
                || matches!(
                    e,
                    ClientError::NoLeader { .. }
                        | ClientError::Bootstrap { .. }
                        | ClientError::Authentication { .. }
                        | ClientError::Tls { .. }
                ) =>
            {
                let wait = backoff(p.fetch_attempt);
                p.problem(
                    PartitionState::SourceUnreachable,
                    format!("fetch from the source failed: {e}"),
                    wait,
                );
                if matches!(e, ClientError::Authentication { .. }) {
                    self.view.connection = SourceConnection::Unreachable;
                }
            }
            ClientError::Protocol { reason, .. } if reason.contains("magic") => {
                p.problem(
                    PartitionState::Error,
                    format!(
                        "source topic {topic} partition {partition} holds records in the old message format (magic 0 or 1), which cannot be copied byte for byte: {reason}"
                    ),
                    Duration::from_secs(60),
                );
            }
            ClientError::Kafka { code, .. } if code == KafkaCode::UNKNOWN_TOPIC_OR_PARTITION => {
                p.problem(
                    PartitionState::Error,
                    format!("the source has no partition {topic}-{partition} any more (deleted?)"),
                    Duration::from_secs(5),
                );
                self.discovered = None;
            }
            e => {
                let wait = backoff(p.fetch_attempt + 3);
                p.problem(
                    PartitionState::Error,
                    format!("fetch from the source failed: {e}"),
                    wait,
                );
            }
        }
    }

    /// Copies the committed offsets of the job's source consumer groups for
    /// the topics it mirrors. Offsets are 1:1, so a consumer moved to the
    /// copy continues where it was. An offset is written only when it moves
    /// the group forward and the copy already holds it (so a consumer of
    /// the copy is never sent beyond its end, and one that moved to the copy
    /// and committed further is not set back).
    async fn sync_groups(&mut self, job: &CompiledJob) {
        let Some((_, client)) = self.client.clone() else {
            return;
        };
        let groups = match client.list_groups().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(job = %self.name, error = %e, "cannot list the source's consumer groups");
                return;
            }
        };
        for g in groups.into_iter().filter(|g| job.syncs_group(&g.group_id)) {
            let offsets = match client.offset_fetch(&g.group_id, &[]).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(job = %self.name, group = %g.group_id, error = %e, "cannot read the source group's offsets");
                    continue;
                }
            };
            let mirrored: Vec<(String, u32, i64, Option<String>, i32)> = offsets
                .into_iter()
                .filter(|o| o.offset >= 0 && o.partition >= 0)
                .filter_map(|o| {
                    let (target, _) = self.topics.get(&o.topic)?;
                    Some((
                        target.clone(),
                        o.partition as u32,
                        o.offset,
                        o.metadata,
                        o.leader_epoch,
                    ))
                })
                .collect();
            if mirrored.is_empty() {
                continue;
            }
            let group = g.group_id.clone();
            let synced = self
                .shard
                .meta
                .call(move |m| {
                    let stored = m.group_offsets(&group)?;
                    let mut write = Vec::new();
                    for (topic, partition, offset, metadata, leader_epoch) in mirrored {
                        let copy_end = m.partition_state(&topic, partition)?.next_offset;
                        let current = stored
                            .iter()
                            .find(|(t, p, _)| *t == topic && *p == partition)
                            .map(|(_, _, o)| o.offset);
                        let offset = offset.min(copy_end);
                        if current.is_none_or(|c| offset > c) {
                            write.push((
                                topic,
                                partition,
                                crate::meta::CommittedOffset {
                                    offset,
                                    metadata,
                                    leader_epoch,
                                },
                            ));
                        }
                    }
                    let n = write.len();
                    if n > 0 {
                        m.commit_offsets(&group, &write)?;
                    }
                    Ok(n)
                })
                .await;
            match synced {
                Ok(0) => {}
                Ok(n) => {
                    tracing::debug!(job = %self.name, group = %g.group_id, partitions = n, "copied consumer group offsets")
                }
                Err(e) => {
                    tracing::warn!(job = %self.name, group = %g.group_id, error = %e, "cannot store the group's offsets")
                }
            }
        }
    }

    fn publish(&mut self, force: bool) {
        if !force && self.published.is_some_and(|t| t.elapsed() < PUBLISH_EVERY) {
            return;
        }
        self.published = Some(Instant::now());
        let now = now_ms();
        self.view.partitions.clear();
        for (key, p) in self.parts.iter_mut() {
            p.refresh_lag(now);
            self.view.partitions.insert(key.clone(), p.report.clone());
        }
        self.view
            .gap_records
            .retain(|k, _| self.parts.contains_key(k));
        self.shard
            .metrics
            .mirror
            .publish(&self.name, self.shard.id, self.view.clone());
    }
}
