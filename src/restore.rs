//! Point-in-time restore: a topic rebuilt as it was at a moment, from the
//! bucket, record-exact, with evidence.
//!
//! ```text
//! catalog (etcd, the embedded store, or a broker's REST API for an embedded
//!   store its broker holds) --committed segments--> plan, per partition:
//!     segments entirely before the cut   -> verified, copied server-side
//!     the segment the cut falls inside   -> verified, batches before the cut
//!                                           kept as they are, the batch it
//!                                           splits written anew, new .kfs
//!     segments after it that may hold records <= T -> scanned (late records)
//!   -> restored topic committed in one step (read-only, offsets identical)
//!   -> read back through Kafka, digests compared -> report (+ signature)
//! ```
//!
//! The cut: per partition, the restored log is the prefix that ends before
//! the first record whose timestamp is later than T, the offset Kafka's
//! ListOffsets gives for T + 1 ms. Or, with `--to-offset`, before a given
//! offset.

pub mod cli;
mod groups;
pub mod kafka;
pub mod report;
pub mod sign;

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use futures::StreamExt;
use kafscale_codec::batch::RecordBatch;
use kafscale_codec::kfs::{SegmentReader, SegmentWriter};
use kafscale_codec::records::Record;
use kafscale_s3::{AnyStore, ObjectMeta, ObjectStore, PutOptions, format_unix_ms};
use serde::{Deserialize, Serialize};

pub use kafka::KafkaTarget;

use crate::broker::partition::Txns;
use crate::meta::restore::{PartitionSnapshot, TopicSnapshot};
use crate::meta::store::now_ms;
use crate::meta::{
    AbortedTxn, MetaClient, ObjectVersions, PartitionState, SegmentRecord, TopicMeta, keys,
};
use report::{
    Check, ContentDigest, ObjectEvidence, OffsetAt, PartitionEvidence, Phase, Report,
    RequestEvidence, SourceEvidence, TargetEvidence, Tool,
};

/// Topic configuration of a restored topic; while `OF` is set, produce is
/// refused (the restore is evidence: nothing may be added to it).
pub mod topic_config {
    /// The topic it is a restore of.
    pub const OF: &str = "kafscale.restore.of";
    /// The cut, in words (`before the first record later than ...`).
    pub const AT: &str = "kafscale.restore.at";
}

/// Where the restored partitions end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// Before the first record later than this time (Unix ms).
    Time(i64),
    /// Before these offsets; partitions not named are restored whole.
    Offsets(BTreeMap<u32, i64>),
}

impl Cut {
    pub fn rule(&self) -> String {
        match self {
            Self::Time(t) => format!(
                "per partition, every record before the first record whose timestamp is later than {} (the offset ListOffsets gives for {} + 1 ms)",
                format_unix_ms(*t),
                format_unix_ms(*t)
            ),
            Self::Offsets(m) => format!(
                "per partition, every record before offset {} (partitions not named: whole)",
                m.iter()
                    .map(|(p, o)| format!("{p}:{o}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    /// The segment of `segs` (a partition's, ending before `next_offset`)
    /// the cut falls inside or before; `None` when the whole log is kept.
    fn segment_index(
        &self,
        partition: u32,
        segs: &[SegmentRecord],
        next_offset: i64,
    ) -> Option<usize> {
        match self {
            Self::Time(t) => segs.iter().position(|s| s.max_timestamp > *t),
            Self::Offsets(m) => {
                let o = m.get(&partition).copied().unwrap_or(next_offset);
                segs.iter().position(|s| s.last_offset >= o)
            }
        }
    }

    /// `--to-offset 0:120,3:7`.
    pub fn parse_offsets(s: &str) -> Result<Self, String> {
        let mut m = BTreeMap::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (p, o) = item
                .split_once(':')
                .ok_or_else(|| format!("{item:?} is not PARTITION:OFFSET"))?;
            let p: u32 = p
                .trim()
                .parse()
                .map_err(|_| format!("{item:?}: {p:?} is not a partition number"))?;
            let o: i64 = o
                .trim()
                .parse()
                .ok()
                .filter(|o| *o >= 0)
                .ok_or_else(|| format!("{item:?}: {o:?} is not an offset"))?;
            if m.insert(p, o).is_some() {
                return Err(format!("partition {p} is named twice"));
            }
        }
        if m.is_empty() {
            return Err("no PARTITION:OFFSET given".into());
        }
        Ok(Self::Offsets(m))
    }
}

/// What a restored topic is created from (also the body of `POST
/// /v1/restore/topics`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRestored {
    pub name: String,
    pub config: BTreeMap<String, String>,
    pub partitions: Vec<PartitionSnapshot>,
    /// `--groups`: offsets the restored topic starts with, in place before
    /// the topic appears.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_offsets: Vec<RestoredGroupOffset>,
}

/// One group's committed offset on one partition of a restored topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredGroupOffset {
    pub group: String,
    pub partition: u32,
    pub offset: i64,
    #[serde(default = "crate::offset_history::no_epoch")]
    pub leader_epoch: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

/// Where the committed segment lists are read and the restored topic is
/// created.
#[derive(Debug, Clone)]
pub enum Catalog {
    /// The metadata store itself (etcd, or an embedded store no broker holds).
    Direct { meta: MetaClient, label: String },
    /// A running broker's REST API (`HOST:PORT`), for the embedded store it holds.
    Rest {
        target: String,
        token: Option<String>,
    },
}

impl Catalog {
    pub fn label(&self) -> String {
        match self {
            Self::Direct { label, .. } => label.clone(),
            Self::Rest { target, .. } => format!("the broker's REST API at http://{target}"),
        }
    }

    pub async fn snapshot(&self, topic: &str) -> anyhow::Result<Option<TopicSnapshot>> {
        match self {
            Self::Direct { meta, .. } => {
                let t = topic.to_owned();
                Ok(meta.call(move |s| s.topic_snapshot(&t)).await?)
            }
            Self::Rest { target, token } => {
                let path = format!("/v1/restore/topics/{topic}");
                let (status, body) = crate::rest_client::round_trip(
                    target,
                    hyper::Method::GET,
                    &path,
                    Bytes::new(),
                    token.as_deref(),
                )
                .await
                .map_err(|e| anyhow!("{e}"))?;
                match status {
                    hyper::StatusCode::OK => Ok(Some(
                        serde_json::from_slice(&body).context("the broker's topic snapshot")?,
                    )),
                    hyper::StatusCode::NOT_FOUND => Ok(None),
                    s => bail!(
                        "http://{target}{path}: {s}: {}",
                        crate::rest_client::error_message(&body)
                    ),
                }
            }
        }
    }

    pub async fn create(&self, req: CreateRestored) -> anyhow::Result<TopicMeta> {
        match self {
            Self::Direct { meta, .. } => Ok(meta
                .call(move |s| {
                    s.create_restored_topic(
                        &req.name,
                        req.config,
                        &req.partitions,
                        &req.group_offsets,
                    )
                })
                .await?),
            Self::Rest { target, token } => {
                let body = Bytes::from(serde_json::to_vec(&req)?);
                let path = "/v1/restore/topics";
                let (status, body) = crate::rest_client::round_trip(
                    target,
                    hyper::Method::POST,
                    path,
                    body,
                    token.as_deref(),
                )
                .await
                .map_err(|e| anyhow!("{e}"))?;
                if !status.is_success() {
                    bail!("{}", crate::rest_client::error_message(&body));
                }
                Ok(serde_json::from_slice(&body).context("the broker's answer")?)
            }
        }
    }
}

/// A restore to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub topic: String,
    pub cut: Cut,
    /// The restored topic's name.
    pub target: String,
    pub dry_run: bool,
    pub operator: String,
    pub trigger: String,
    /// A Kafka bootstrap to read the restored topic back through; default:
    /// the brokers the catalog lists.
    pub bootstrap: Option<String>,
    /// The metadata store is lost: take the committed log from the bucket
    /// (every segment verified; each partition's last one unconfirmed).
    pub from_bucket: bool,
    /// Into another Kafka cluster instead of a new topic of the spine.
    pub kafka: Option<KafkaTarget>,
    /// A drill: the restored topic is removed once verified.
    pub temporary: bool,
    /// `--groups`: the offsets of the consumer groups this matches, as
    /// they stood at the cut's moment.
    pub groups: Option<regex::Regex>,
    /// Into the spine: copy whole segments unread, serve the restored topic,
    /// then verify and digest them (the time to serve grows with the number
    /// of segments, not their bytes).
    pub serve_first: bool,
}

/// One partition's plan, for `--dry-run` and the progress lines.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionPlanLine {
    pub partition: u32,
    pub copied_segments: usize,
    pub copied_bytes: u64,
    /// The segment the cut falls inside (rewritten), if any.
    pub cut_segment: Option<String>,
    pub cut_offset: i64,
    pub high_watermark: i64,
}

/// What `restore` did.
#[derive(Debug)]
pub enum Outcome {
    Planned(Vec<PartitionPlanLine>),
    Restored(Box<Report>),
}

/// A restore's phases, timed.
struct Clock {
    started_ms: i64,
    started: Instant,
    phases: Vec<Phase>,
    phase: Option<(String, i64)>,
}

impl Clock {
    fn new() -> Self {
        Self {
            started_ms: now_ms(),
            started: Instant::now(),
            phases: Vec::new(),
            phase: None,
        }
    }
    fn now(&self) -> i64 {
        self.started_ms + self.started.elapsed().as_millis() as i64
    }
    fn begin(&mut self, name: &str) {
        self.end();
        self.phase = Some((name.to_owned(), self.now()));
    }
    fn end(&mut self) {
        if let Some((name, start)) = self.phase.take() {
            let end = self.now();
            self.phases.push(Phase {
                name,
                start: format_unix_ms(start),
                end: format_unix_ms(end),
                ms: end - start,
            });
        }
    }
}

/// Partitions restored at the same time (each holds one segment in memory).
const PARALLEL_PARTITIONS: usize = 4;

/// Segments of a partition copied at the same time when served first (each
/// copy holds nothing in memory; it is a round trip to the store).
const COPIES_IN_FLIGHT: usize = 8;

/// Reads, verifies and restores; one instance per restore.
pub struct Restorer<'a> {
    pub store: &'a AnyStore,
    pub catalog: &'a Catalog,
    pub namespace: String,
    /// Prints a progress line (plain lines; the CLI decides where).
    pub progress: &'a dyn Fn(&str),
    /// Told what will be read, then of each segment read (a progress bar).
    pub meter: &'a dyn Fn(Tick),
}

/// What a progress bar is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// The segments up to each partition's cut: what the restore reads
    /// (late-record scans may add a few).
    Planned { segments: usize, bytes: u64 },
    /// A segment was read.
    Segment { bytes: u64 },
}

impl std::fmt::Debug for Restorer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restorer")
            .field("store", &self.store.describe())
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// A verified segment read whole.
struct ReadSegment {
    reader: SegmentReader,
    meta: ObjectMeta,
}

/// What one partition's restore produced.
struct PartitionDone {
    evidence: PartitionEvidence,
    /// The source segments the restored log's records come from, in order.
    source_segments: Vec<String>,
    /// Those of them not read yet (into Kafka: read once, when produced),
    /// with what the segment list says of each, checked when read.
    unread: BTreeMap<String, SegmentRecord>,
    objects: Vec<ObjectEvidence>,
    restored: PartitionSnapshot,
    plan: PartitionPlanLine,
    /// Served first: why its copied segments did not verify.
    verify_error: Option<String>,
}

impl Restorer<'_> {
    /// Runs the restore (or, with `dry_run`, only plans it). A drill that
    /// fails still removes what it made.
    pub async fn run(&self, opts: &Options) -> anyhow::Result<Outcome> {
        let r = self.run_once(opts).await;
        if r.is_err() && opts.temporary && !opts.dry_run {
            let left = match self.catalog.snapshot(&opts.target).await {
                Ok(Some(snap)) => {
                    let b = opts.bootstrap.clone().or_else(|| {
                        snap.brokers
                            .first()
                            .map(|b| format!("{}:{}", b.host, b.port))
                    });
                    self.remove_restored(&opts.target, b.as_deref())
                        .await
                        .map(|_| ())
                }
                Ok(None) => self.clear_leftovers(&opts.target).await,
                Err(e) => Err(e),
            };
            if let Err(e) = left {
                (self.progress)(&format!(
                    "the failed drill's temporary topic {} may be left: {e:#}",
                    opts.target
                ));
            }
        }
        r
    }

    async fn run_once(&self, opts: &Options) -> anyhow::Result<Outcome> {
        let mut clock = Clock::new();
        clock.begin("plan");
        if let Cut::Time(t) = opts.cut {
            let now = now_ms();
            if t > now {
                bail!(
                    "--to {} is in the future (it is {} now): a restore can only go back in time",
                    format_unix_ms(t),
                    format_unix_ms(now)
                );
            }
        }
        let (snap, unconfirmed) = if opts.from_bucket {
            self.bucket_snapshot(&opts.topic).await?
        } else {
            let snap = self.catalog.snapshot(&opts.topic).await?.ok_or_else(|| {
                anyhow!(
                    "topic {} does not exist in {} (namespace {})",
                    opts.topic,
                    self.catalog.label(),
                    self.namespace
                )
            })?;
            (snap, BTreeMap::new())
        };
        if let Cut::Offsets(m) = &opts.cut
            && let Some(p) = m.keys().find(|p| **p >= snap.topic.partitions)
        {
            bail!(
                "--to-offset names partition {p}, but {} has {} partitions",
                opts.topic,
                snap.topic.partitions
            );
        }
        // Before anything is created or copied: a restore asked for group
        // offsets it cannot give stops here.
        let history = match &opts.groups {
            Some(pattern) => {
                clock.begin("replay offset history");
                let h = self.replay_history(opts, pattern).await?;
                clock.begin("plan");
                Some(h)
            }
            None => None,
        };
        let sink = match &opts.kafka {
            Some(k) => Some(kafka::Sink::open(k, snap.topic.partitions, !opts.dry_run).await?),
            None => None,
        };
        if sink.is_none() && !opts.dry_run {
            if self.catalog.snapshot(&opts.target).await?.is_some() {
                bail!(
                    "topic {} exists; name the restored topic with --as",
                    opts.target
                );
            }
            self.clear_leftovers(&opts.target).await?;
        }
        let planned = snap.partitions.iter().flat_map(|p| {
            let n = opts
                .cut
                .segment_index(p.partition, &p.segments, p.state.next_offset)
                .map_or(p.segments.len(), |i| i + 1);
            &p.segments[..n]
        });
        let (segments, bytes) = planned.fold((0, 0), |(n, b), s| (n + 1, b + s.size));
        (self.meter)(Tick::Planned { segments, bytes });
        clock.begin("restore segments");
        let mut done = Vec::with_capacity(snap.partitions.len());
        // A few partitions at a time: a segment's read is mostly waiting on
        // the store, so the time is the slowest partition's, not the sum.
        // Each in flight holds one segment. Results come in partition order.
        let mut partitions = futures::stream::iter(&snap.partitions)
            .map(|p| async move { (p, self.partition(opts, p).await) })
            .buffered(PARALLEL_PARTITIONS);
        while let Some((p, d)) = partitions.next().await {
            let mut d = d?;
            d.evidence.unconfirmed_last_segment = unconfirmed.get(&p.partition).cloned();
            (self.progress)(&format!(
                "partition {}: {} segments copied ({} bytes){}, cut at offset {} of {}",
                p.partition,
                d.plan.copied_segments,
                d.plan.copied_bytes,
                d.plan
                    .cut_segment
                    .as_ref()
                    .map_or(String::new(), |k| format!(", {k} cut")),
                d.plan.cut_offset,
                d.plan.high_watermark
            ));
            done.push(d);
        }
        drop(partitions);
        if let Cut::Time(t) = opts.cut
            && done.iter().all(|d| d.evidence.last_kept.is_none())
        {
            let first = done
                .iter()
                .filter_map(|d| d.evidence.first_excluded.as_ref())
                .map(|a| a.timestamp)
                .min();
            match first {
                Some(first) => bail!(
                    "nothing to restore: every record of {} is later than {} (the first is at {})",
                    opts.topic,
                    format_unix_ms(t),
                    format_unix_ms(first)
                ),
                None => bail!("nothing to restore: {} holds no records", opts.topic),
            }
        }
        let mut groups = history.as_ref().map(|h| h.evidence(&done));
        if opts.dry_run {
            return Ok(Outcome::Planned(done.into_iter().map(|d| d.plan).collect()));
        }
        if let Some(sink) = &sink {
            self.produce_into_kafka(sink, &mut done, groups.as_mut(), &mut clock)
                .await?;
            if let (Some(h), Some(g)) = (&history, groups.as_mut()) {
                clock.begin("commit group offsets");
                let offsets = h.for_kafka(g, sink.topic());
                groups::commit_to_kafka(sink.client(), sink.bootstrap(), &offsets).await?;
                groups::read_back(sink.client(), sink.topic(), g).await?;
            }
            let read_back = format!(
                "Kafka protocol, kafscale-client fetch from {}, digested without offsets",
                sink.bootstrap()
            );
            clock.end();
            return Ok(Outcome::Restored(Box::new(self.report(
                opts, &snap, done, read_back, None, history, groups, clock,
            ))));
        }

        clock.begin("commit restored topic");
        let mut config = BTreeMap::new();
        config.insert(topic_config::OF.to_owned(), opts.topic.clone());
        config.insert(topic_config::AT.to_owned(), opts.cut.rule());
        let created = self
            .catalog
            .create(CreateRestored {
                name: opts.target.clone(),
                config,
                partitions: done.iter().map(|d| d.restored.clone()).collect(),
                group_offsets: match (&history, &groups) {
                    (Some(h), Some(g)) => h.for_spine(g),
                    _ => Vec::new(),
                },
            })
            .await
            .with_context(|| format!("cannot create the restored topic {}", opts.target))?;
        (self.progress)(&format!(
            "restored topic {} created ({} partitions)",
            created.name, created.partitions
        ));
        let served_ms = clock.now() - clock.started_ms;
        if opts.serve_first {
            clock.begin("verify copied segments");
            // A segment that fails now fails the report (the topic is
            // served already); the read-back still runs, so the report says
            // what the topic holds.
            let target = &opts.target;
            futures::stream::iter(done.iter_mut())
                .for_each_concurrent(PARALLEL_PARTITIONS, |d| async move {
                    if let Err(e) = self.verify_copied(d).await {
                        (self.progress)(&format!(
                            "partition {}: verification FAILED after {target} was served: {e:#}",
                            d.evidence.partition
                        ));
                        d.verify_error = Some(format!("{e:#}"));
                    }
                })
                .await;
        }

        clock.begin("read back");
        let bootstrap = opts.bootstrap.clone().or_else(|| {
            snap.brokers
                .first()
                .map(|b| format!("{}:{}", b.host, b.port))
        });
        let read_back = match &bootstrap {
            Some(b) => {
                self.read_back_kafka(b, &opts.target, &mut done).await?;
                format!("Kafka protocol, kafscale-client fetch from {b}")
            }
            None => {
                self.read_back_bucket(&mut done).await?;
                "the restored segments in the bucket (no broker listed)".to_owned()
            }
        };
        if let Some(g) = groups.as_mut() {
            self.read_back_groups(bootstrap.as_deref(), &opts.target, g)
                .await?;
        }
        let removed = if opts.temporary {
            clock.begin("remove temporary topic");
            let r = self
                .remove_restored(&opts.target, bootstrap.as_deref())
                .await;
            match &r {
                Ok(how) => {
                    (self.progress)(&format!("temporary topic {} removed {how}", opts.target))
                }
                Err(e) => (self.progress)(&format!(
                    "temporary topic {} NOT removed: {e:#}",
                    opts.target
                )),
            }
            Some(r.map_err(|e| format!("{e:#}")))
        } else {
            None
        };
        clock.end();
        let mut report = self.report(
            opts, &snap, done, read_back, removed, history, groups, clock,
        );
        report.served_ms = Some(served_ms);
        Ok(Outcome::Restored(Box::new(report)))
    }

    /// Removes a restored topic: through a broker's DeleteTopics when one
    /// is known (it removes the metadata, then the objects), else in the
    /// metadata store and the bucket directly. Returns how, in words.
    async fn remove_restored(&self, name: &str, bootstrap: Option<&str>) -> anyhow::Result<String> {
        if let Some(b) = bootstrap {
            use kafscale_client::{Client, ClientConfig};
            let client =
                Client::connect(ClientConfig::new(b).with_client_id("kafscale-restore-drill"))
                    .await
                    .map_err(|e| anyhow!("cannot connect to {b}: {e}"))?;
            let r = client
                .delete_topics(&[name], std::time::Duration::from_secs(30))
                .await
                .pop()
                .unwrap_or(Ok(None));
            let note = r.map_err(|e| anyhow!("DeleteTopics {name} on {b}: {e}"))?;
            return Ok(match note {
                Some(note) => format!("with DeleteTopics on {b} ({note})"),
                None => format!("with DeleteTopics on {b}"),
            });
        }
        match self.catalog {
            Catalog::Direct { meta, label } => {
                let n = name.to_owned();
                meta.call(move |s| s.delete_topic(&n))
                    .await
                    .with_context(|| format!("cannot delete {name} from {label}"))?;
                self.clear_leftovers(name).await?;
                Ok(format!("from {label} and the bucket"))
            }
            Catalog::Rest { target, .. } => bail!(
                "no broker to delete it through (the metadata is held by the broker at http://{target}; pass --bootstrap)"
            ),
        }
    }

    /// The committed log as the bucket alone shows it (the metadata store
    /// is lost): every `{ns}/{topic}/{p}/segment-*.kfs` with its `.index`,
    /// in offset order; a `.kfs` without its `.index` is an upload a crash
    /// interrupted and not part of the log (`shared/kfs-format.md`). Returns
    /// each partition's last segment, which may hold records never
    /// acknowledged (unconfirmed).
    async fn bucket_snapshot(
        &self,
        topic: &str,
    ) -> anyhow::Result<(TopicSnapshot, BTreeMap<u32, String>)> {
        let prefix = format!("{}/{topic}/", self.namespace);
        let listed = self
            .store
            .list(&prefix)
            .await
            .with_context(|| format!("cannot list {prefix} in {}", self.store.describe()))?;
        let names: std::collections::BTreeSet<&str> =
            listed.iter().map(|e| e.key.as_str()).collect();
        let mut by_partition: BTreeMap<u32, Vec<SegmentRecord>> = BTreeMap::new();
        for e in &listed {
            let Some(rest) = e.key.strip_prefix(&prefix) else {
                continue;
            };
            let Some((p, name)) = rest.split_once('/') else {
                continue;
            };
            let (Ok(p), Some(base)) = (
                p.parse::<u32>(),
                name.strip_prefix("segment-")
                    .and_then(|n| n.strip_suffix(".kfs"))
                    .and_then(|n| n.parse::<i64>().ok()),
            ) else {
                continue;
            };
            let (_, index) = keys::segment_object(&self.namespace, topic, p, base);
            if !names.contains(index.as_str()) {
                (self.progress)(&format!(
                    "{} has no .index: an interrupted upload, not part of the log",
                    e.key
                ));
                continue;
            }
            let info = self.segment_info(&e.key).await?;
            by_partition
                .entry(p)
                .or_default()
                .push(SegmentRecord::from(info));
        }
        let Some(&last_partition) = by_partition.keys().next_back() else {
            bail!(
                "the bucket holds no segments of topic {topic} under {prefix} in {}",
                self.store.describe()
            );
        };
        let mut partitions = Vec::new();
        let mut unconfirmed = BTreeMap::new();
        for p in 0..=last_partition {
            let mut segments = by_partition.remove(&p).unwrap_or_default();
            segments.sort_by_key(|s| s.base_offset);
            if let Some(w) = segments
                .windows(2)
                .find(|w| w[1].base_offset <= w[0].last_offset)
            {
                bail!(
                    "partition {p} of {topic}: segments at {} and {} overlap; the bucket alone cannot say which is committed",
                    w[0].base_offset,
                    w[1].base_offset
                );
            }
            let state = match (segments.first(), segments.last()) {
                (Some(first), Some(last)) => {
                    unconfirmed.insert(
                        p,
                        keys::segment_object(&self.namespace, topic, p, last.base_offset).0,
                    );
                    PartitionState {
                        next_offset: last.last_offset + 1,
                        log_start_offset: first.base_offset,
                        epoch: 0,
                    }
                }
                _ => PartitionState::NEW,
            };
            partitions.push(PartitionSnapshot {
                partition: p,
                state,
                segments,
            });
        }
        let topic_meta = TopicMeta {
            name: topic.to_owned(),
            id: String::new(),
            partitions: partitions.len() as u32,
            created_ms: 0,
            config: BTreeMap::new(),
        };
        Ok((
            TopicSnapshot {
                topic: topic_meta,
                partitions,
                brokers: Vec::new(),
            },
            unconfirmed,
        ))
    }

    /// What a segment's S3 metadata says of it (a HEAD), or, when a writer
    /// set none, what reading it says. Either is checked against the segment
    /// itself when the restore reads it.
    async fn segment_info(&self, key: &str) -> anyhow::Result<kafscale_codec::kfs::SegmentInfo> {
        use keys::object_meta as m;
        let head =
            self.store.head(key).await.with_context(|| {
                format!("cannot read segment {key} from {}", self.store.describe())
            })?;
        let get = |name: &str| head.metadata.get(name).and_then(|v| v.parse::<i64>().ok());
        if let (Some(base), Some(last), Some(count), Some(created), Some(min), Some(max)) = (
            get(m::BASE_OFFSET),
            get(m::LAST_OFFSET),
            get(m::MESSAGE_COUNT),
            get(m::CREATED_MS),
            get(m::MIN_TIMESTAMP),
            get(m::MAX_TIMESTAMP),
        ) {
            return Ok(kafscale_codec::kfs::SegmentInfo {
                base_offset: base,
                last_offset: last,
                message_count: count as i32,
                size: head.size,
                created_ms: created,
                min_timestamp: min,
                max_timestamp: max,
            });
        }
        let seg = self.read_segment(key, None).await?;
        Ok(segment_info_of(&seg.reader, seg.meta.size))
    }

    /// Objects under the target's prefix with no topic in the catalog: an
    /// interrupted restore of the same name. They are not part of any log.
    async fn clear_leftovers(&self, target: &str) -> anyhow::Result<()> {
        let prefix = format!("{}/{target}/", self.namespace);
        let left: Vec<String> = self
            .store
            .list(&prefix)
            .await
            .with_context(|| format!("cannot list {prefix} in {}", self.store.describe()))?
            .into_iter()
            .map(|e| e.key)
            .collect();
        if !left.is_empty() {
            (self.progress)(&format!(
                "removing {} objects an interrupted restore left under {prefix}",
                left.len()
            ));
            self.store.delete_many(&left).await.with_context(|| {
                format!("cannot remove what an interrupted restore left under {prefix}")
            })?;
        }
        Ok(())
    }

    async fn read_segment(&self, key: &str, version: Option<&str>) -> anyhow::Result<ReadSegment> {
        let seg = read_segment(self.store, key, version).await?;
        (self.meter)(Tick::Segment {
            bytes: seg.meta.size,
        });
        Ok(seg)
    }

    fn object_evidence(key: &str, meta: &ObjectMeta, crc: bool, use_: &str) -> ObjectEvidence {
        ObjectEvidence {
            key: key.to_owned(),
            size: meta.size,
            etag: meta.etag.clone(),
            lock_mode: meta.lock_mode.clone(),
            lock_retain_until: meta.lock_retain_until.clone(),
            version_id: meta.version_id.clone(),
            crc_verified: crc,
            use_: use_.to_owned(),
        }
    }

    /// Restores one partition's objects (nothing is committed here).
    async fn partition(
        &self,
        opts: &Options,
        snap: &PartitionSnapshot,
    ) -> anyhow::Result<PartitionDone> {
        let (ns, topic, p) = (&self.namespace, &opts.topic, snap.partition);
        let state = snap.state;
        let log_start = state.log_start_offset;
        let segs = &snap.segments;
        let wanted_offset = match &opts.cut {
            Cut::Time(_) => None,
            Cut::Offsets(m) => {
                let o = m.get(&p).copied().unwrap_or(state.next_offset);
                if o > state.next_offset || o < log_start {
                    bail!(
                        "--to-offset {p}:{o} is outside partition {p} of {topic}, which holds offsets {log_start} to {} (cut at most at {})",
                        state.next_offset - 1,
                        state.next_offset
                    );
                }
                Some(o)
            }
        };
        let cut_index = opts.cut.segment_index(p, segs, state.next_offset);
        let whole = &segs[..cut_index.unwrap_or(segs.len())];
        // Into Kafka, segments are read here and produced later: nothing
        // is written to the bucket.
        let into_kafka = opts.kafka.is_some();
        let write_bucket = !opts.dry_run && !into_kafka;
        // Into Kafka the whole segments are read once, as they are produced
        // (from the bucket alone they are read here too, to follow
        // transactions through them). Served first, they are copied
        // unread and verified once the restored topic is served.
        let serve_first = opts.serve_first && write_bucket;
        let read_whole = !opts.dry_run && (opts.from_bucket || !into_kafka) && !serve_first;
        let mut source_segments = Vec::new();
        let mut unread = BTreeMap::new();

        let mut digest = ContentDigest::default();
        let mut objects = Vec::new();
        let mut restored: Vec<SegmentRecord> = Vec::new();
        let mut target_segments = Vec::new();
        let mut last_kept: Option<OffsetAt> = None;
        let mut copied_bytes = 0;
        let mut copied_segments = 0;
        let keep = |r: &Record, digest: &mut ContentDigest| {
            if r.offset >= log_start {
                digest.add(r);
            }
        };
        // Served first: the whole segments are copied unread, several at
        // a time (each copy is a round trip to the store).
        let mut copies = futures::stream::iter(whole.iter().filter(|_| serve_first))
            .map(|s| async move {
                let src = keys::segment_object(ns, topic, p, s.base_offset);
                let dst = keys::segment_object(ns, &opts.target, p, s.base_offset);
                // The committed versions, as the segment list names them.
                let (kfs, copied_index, index) = futures::try_join!(
                    self.copy(&src.0, s.kfs_version(), &dst.0),
                    self.copy(&src.1, s.index_version(), &dst.1),
                    self.head(&src.1, s.index_version())
                )?;
                let versions = versions_of(kfs.version_id.clone(), copied_index.version_id);
                anyhow::Ok((s, src, dst, index, versions))
            })
            .buffered(COPIES_IN_FLIGHT);
        while let Some(copied) = copies.next().await {
            let (s, src, dst, index, versions) = copied?;
            copied_segments += 1;
            // Provisional, from the segment list (the copy's metadata is
            // the copy's): replaced by what the verification reads.
            objects.push(ObjectEvidence {
                key: src.0.clone(),
                size: s.size,
                etag: String::new(),
                lock_mode: None,
                lock_retain_until: None,
                version_id: s.kfs_version().map(str::to_owned),
                crc_verified: false,
                use_: "copied".into(),
            });
            objects.push(Self::object_evidence(&src.1, &index, false, "copied"));
            copied_bytes += s.size;
            last_kept = Some(OffsetAt {
                offset: s.last_offset,
                timestamp: s.max_timestamp,
            });
            restored.push(SegmentRecord {
                versions,
                ..s.clone()
            });
            unread.insert(src.0.clone(), s.clone());
            source_segments.push(src.0);
            target_segments.push(dst.0);
        }
        drop(copies);
        for s in whole.iter().filter(|_| !serve_first) {
            let src_keys = keys::segment_object(ns, topic, p, s.base_offset);
            let dst_keys = keys::segment_object(ns, &opts.target, p, s.base_offset);
            let (src, dst) = (src_keys.0.clone(), dst_keys.0.clone());
            copied_segments += 1;
            if !read_whole {
                copied_bytes += s.size;
                last_kept = Some(OffsetAt {
                    offset: s.last_offset,
                    timestamp: s.max_timestamp,
                });
                if into_kafka {
                    restored.push(s.clone());
                    unread.insert(src.clone(), s.clone());
                    source_segments.push(src);
                }
                continue;
            }
            let seg = self.read_segment(&src, s.kfs_version()).await?;
            if let Some(e) = disagreement(&src, s, &seg.reader) {
                bail!("{e}");
            }
            let batches: Vec<RecordBatch> = seg.reader.batches().collect();
            let record = if opts.from_bucket {
                followed(s, restored.last(), &batches)
            } else {
                s.clone()
            };
            for b in batches {
                if b.is_control() {
                    continue;
                }
                for r in records(&src, &b)? {
                    keep(&r, &mut digest);
                    last_kept = Some(OffsetAt {
                        offset: r.offset,
                        timestamp: r.timestamp,
                    });
                }
            }
            copied_bytes += seg.meta.size;
            let (evidence, versions) = self
                .copy_segment(
                    &src_keys,
                    &seg.meta,
                    s.index_version(),
                    &dst_keys,
                    !write_bucket,
                )
                .await?;
            objects.extend(evidence);
            drop(seg);
            restored.push(SegmentRecord { versions, ..record });
            source_segments.push(src);
            if write_bucket {
                target_segments.push(dst);
            }
        }

        let mut cut_offset = wanted_offset.unwrap_or(state.next_offset);
        let mut first_excluded = None;
        let mut split_batches = 0;
        let mut late = (0u64, Vec::new());
        let mut cut_segment_key = None;
        // Transactions open where the restored log ends.
        let mut open_at_cut: Vec<(i64, i64)> = restored
            .last()
            .map(|s| s.open_txns.clone())
            .unwrap_or_default();
        if let Some(i) = cut_index {
            let s = &segs[i];
            let (src, _) = keys::segment_object(ns, topic, p, s.base_offset);
            if serve_first {
                // Read again (its committed version) for the digest.
                unread.insert(src.clone(), s.clone());
            }
            let seg = self.read_segment(&src, s.kfs_version()).await?;
            if let Some(e) = disagreement(&src, s, &seg.reader) {
                bail!("{e}");
            }
            let batches: Vec<RecordBatch> = seg.reader.batches().collect();
            if let Cut::Time(t) = opts.cut {
                cut_offset = s.last_offset + 1;
                'find: for b in &batches {
                    if b.max_timestamp() <= t {
                        continue;
                    }
                    for r in records(&src, b)? {
                        if r.timestamp > t {
                            cut_offset = r.offset;
                            break 'find;
                        }
                    }
                }
            }
            let mut kept = Vec::new();
            for b in &batches {
                if b.last_offset() < cut_offset {
                    kept.push(b.clone());
                } else {
                    if b.base_offset() < cut_offset {
                        let part = b
                            .keep_before(cut_offset)
                            .map_err(|e| anyhow!("segment {src}: {e}"))?;
                        if let Some(part) = part {
                            kept.push(
                                RecordBatch::parse(part)
                                    .map_err(|e| anyhow!("segment {src}: cut batch: {e}"))?,
                            );
                            split_batches += 1;
                        }
                    }
                    break;
                }
            }
            for b in &kept {
                if b.is_control() {
                    continue;
                }
                for r in records(&src, b)? {
                    keep(&r, &mut digest);
                    last_kept = Some(OffsetAt {
                        offset: r.offset,
                        timestamp: r.timestamp,
                    });
                }
            }
            // The first record the restore leaves out, and late ones.
            for b in batches.iter().filter(|b| b.last_offset() >= cut_offset) {
                for r in records(&src, b)?
                    .into_iter()
                    .filter(|r| r.offset >= cut_offset)
                {
                    if first_excluded.is_none() {
                        first_excluded = Some(OffsetAt {
                            offset: r.offset,
                            timestamp: r.timestamp,
                        });
                    }
                    if let Cut::Time(t) = opts.cut
                        && r.timestamp <= t
                        && !b.is_control()
                    {
                        note_late(&mut late, r.offset);
                    }
                }
            }
            // Open where the whole segments end (segs[i - 1], as restored).
            let prev_open: Vec<(i64, i64)> = restored
                .last()
                .map(|s| s.open_txns.clone())
                .unwrap_or_default();
            if !kept.is_empty() && kept.len() == batches.len() && split_batches == 0 {
                // The cut is at this segment's end: copy it whole.
                let src_keys = keys::segment_object(ns, topic, p, s.base_offset);
                let dst_keys = keys::segment_object(ns, &opts.target, p, s.base_offset);
                let dst = dst_keys.0.clone();
                let (evidence, versions) = self
                    .copy_segment(
                        &src_keys,
                        &seg.meta,
                        s.index_version(),
                        &dst_keys,
                        !write_bucket,
                    )
                    .await?;
                objects.extend(evidence);
                copied_bytes += seg.meta.size;
                copied_segments += 1;
                let record = SegmentRecord {
                    versions,
                    ..if opts.from_bucket {
                        followed(s, restored.last(), &batches)
                    } else {
                        s.clone()
                    }
                };
                open_at_cut = record.open_txns.clone();
                restored.push(record);
                source_segments.push(src.clone());
                if write_bucket {
                    target_segments.push(dst);
                }
            } else {
                objects.push(Self::object_evidence(&src, &seg.meta, true, "cut"));
                cut_segment_key = Some(src.clone());
                let mut txns = Txns::following(&prev_open);
                let aborted = txns.follow(&kept);
                open_at_cut = if kept.is_empty() {
                    prev_open
                } else {
                    txns.open_now()
                };
                if let Some(first) = kept.first() {
                    let mut w = SegmentWriter::new(first.base_offset());
                    w.append_copy_at_offsets(&kept)
                        .map_err(|e| anyhow!("segment {src}: cannot rewrite it: {e}"))?;
                    let sealed = w
                        .seal(now_ms())
                        .map_err(|e| anyhow!("segment {src}: cannot rewrite it: {e}"))?;
                    let mut record = SegmentRecord::from(sealed.info);
                    record.aborted = aborted;
                    record.open_txns = open_at_cut.clone();
                    let (dst, dst_index) =
                        keys::segment_object(ns, &opts.target, p, record.base_offset);
                    if write_bucket {
                        record.versions = self.write_segment(&dst, &dst_index, sealed).await?;
                        target_segments.push(dst);
                    }
                    restored.push(record);
                    source_segments.push(src.clone());
                }
            }
            drop(batches);
            drop(seg);
            if let Cut::Time(t) = opts.cut
                && !opts.dry_run
            {
                for later in segs[i + 1..].iter().filter(|s| s.min_timestamp <= t) {
                    let (key, _) = keys::segment_object(ns, topic, p, later.base_offset);
                    let seg = self.read_segment(&key, later.kfs_version()).await?;
                    for b in seg.reader.batches().filter(|b| !b.is_control()) {
                        for r in records(&key, &b)? {
                            if r.timestamp <= t {
                                note_late(&mut late, r.offset);
                            }
                        }
                    }
                    objects.push(Self::object_evidence(&key, &seg.meta, true, "scanned"));
                }
            }
        }

        // A transaction open at the cut has no marker in the restored log:
        // it is recorded as aborted (no marker is invented), so the
        // read_committed view leaves it out and the LSO is the end.
        if let Some(last) = restored.last_mut() {
            last.aborted
                .extend(
                    open_at_cut
                        .iter()
                        .map(|&(producer_id, first_offset)| AbortedTxn {
                            producer_id,
                            first_offset,
                            last_offset: cut_offset - 1,
                        }),
                );
            last.open_txns.clear();
        }
        let restored_state = PartitionState {
            next_offset: cut_offset,
            log_start_offset: if restored.is_empty() {
                cut_offset
            } else {
                log_start.min(cut_offset)
            },
            epoch: 0,
        };
        let plan = PartitionPlanLine {
            partition: p,
            copied_segments,
            copied_bytes,
            cut_segment: cut_segment_key,
            cut_offset,
            high_watermark: state.next_offset,
        };
        let expected_records = digest.records();
        Ok(PartitionDone {
            evidence: PartitionEvidence {
                partition: p,
                source_log_start: log_start,
                source_high_watermark: state.next_offset,
                cut_offset,
                last_kept,
                first_excluded,
                late_records: late.0,
                late_offsets: late.1,
                split_batches,
                open_transactions: open_at_cut,
                expected_records,
                source_digest: digest.finish(),
                restored_records: None,
                target_digest: None,
                target_segments,
                unconfirmed_last_segment: None,
                kafka: None,
            },
            source_segments,
            unread,
            objects,
            restored: PartitionSnapshot {
                partition: p,
                state: restored_state,
                segments: restored,
            },
            plan,
            verify_error: None,
        })
    }

    /// Copies a verified segment (`.kfs` and `.index` keys `src`; the
    /// `.kfs` read had `meta`) to `dst` (nothing with `dry_run`); returns the
    /// evidence of the source objects.
    async fn copy_segment(
        &self,
        src: &(String, String),
        meta: &ObjectMeta,
        index_version: Option<&str>,
        dst: &(String, String),
        dry_run: bool,
    ) -> anyhow::Result<(Vec<ObjectEvidence>, Option<ObjectVersions>)> {
        let mut out = vec![Self::object_evidence(&src.0, meta, true, "copied")];
        if dry_run {
            return Ok((out, None));
        }
        // The version read, so the copy is of what was verified. The
        // evidence names the source index (a HEAD of the version copied),
        // not the copy.
        let (kfs, copied_index, index) = futures::try_join!(
            self.copy(&src.0, meta.version_id.as_deref(), &dst.0),
            self.copy(&src.1, index_version, &dst.1),
            self.head(&src.1, index_version)
        )?;
        out.push(Self::object_evidence(&src.1, &index, false, "copied"));
        Ok((out, versions_of(kfs.version_id, copied_index.version_id)))
    }

    /// The copy's own versions: a restored topic's records name its objects,
    /// never the source's.
    async fn copy(
        &self,
        from: &str,
        version: Option<&str>,
        to: &str,
    ) -> anyhow::Result<ObjectMeta> {
        self.store
            .copy_version(from, version, to)
            .await
            .with_context(|| format!("cannot copy {from} to {to} in {}", self.store.describe()))
    }

    /// What the store says of a version of an object.
    async fn head(&self, key: &str, version: Option<&str>) -> anyhow::Result<ObjectMeta> {
        self.store
            .head_version(key, version)
            .await
            .with_context(|| format!("cannot read {key} in {}", self.store.describe()))
    }

    async fn write_segment(
        &self,
        key: &str,
        index_key: &str,
        sealed: kafscale_codec::kfs::SealedSegment,
    ) -> anyhow::Result<Option<ObjectVersions>> {
        let opts = keys::object_meta::put_options(&sealed.info);
        let kfs = self
            .store
            .put_chunks(key, sealed.segment.into_pieces(), &opts)
            .await
            .with_context(|| format!("cannot write {key} to {}", self.store.describe()))?;
        let index = self
            .store
            .put(index_key, sealed.index, &PutOptions::default().if_absent())
            .await
            .with_context(|| format!("cannot write {index_key} to {}", self.store.describe()))?;
        Ok(versions_of(kfs.version_id, index.version_id))
    }

    /// Reads every restored partition back through a Kafka fetch and
    /// digests what a consumer gets.
    async fn read_back_kafka(
        &self,
        bootstrap: &str,
        topic: &str,
        done: &mut [PartitionDone],
    ) -> anyhow::Result<()> {
        use kafscale_client::{Client, ClientConfig};
        let client =
            Client::connect(ClientConfig::new(bootstrap).with_client_id("kafscale-restore"))
                .await
                .map_err(|e| {
                    anyhow!("cannot read the restored topic back from {bootstrap}: {e}")
                })?;
        let client = &client;
        let read: Vec<_> = futures::stream::iter(done.iter().enumerate())
            .map(|(i, d)| async move {
                let r = kafka::read_partition(
                    client,
                    topic,
                    d.evidence.partition as i32,
                    d.restored.state.log_start_offset,
                    d.restored.state.next_offset,
                    true,
                    None,
                )
                .await;
                (i, r)
            })
            .buffer_unordered(PARALLEL_PARTITIONS)
            .collect()
            .await;
        for (i, r) in read {
            match r {
                Ok(((digest, n), _)) => {
                    done[i].evidence.restored_records = Some(n);
                    done[i].evidence.target_digest = Some(digest);
                }
                // Served first with a segment that did not verify: the
                // report already fails; it says the read-back failed too.
                Err(e) if done[i].verify_error.is_some() => {
                    let why = done[i].verify_error.take().unwrap_or_default();
                    done[i].verify_error = Some(format!("{why}; reading it back: {e:#}"));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Produces every partition's restored log into the target cluster, a
    /// few partitions at a time, then reads each back whole.
    /// With `groups`, their restored offsets are translated to the target's.
    async fn produce_into_kafka(
        &self,
        sink: &kafka::Sink,
        done: &mut [PartitionDone],
        mut groups: Option<&mut report::GroupsEvidence>,
        clock: &mut Clock,
    ) -> anyhow::Result<()> {
        use futures::stream;
        const PARALLEL: usize = PARALLEL_PARTITIONS;
        clock.begin("produce into Kafka");
        let plans: Vec<kafka::PartitionPlan> = done
            .iter()
            .map(|d| kafka::PartitionPlan {
                partition: d.evidence.partition,
                unread: d.unread.clone(),
                source_segments: d.source_segments.clone(),
                log_start: d.evidence.source_log_start,
                cut: d.evidence.cut_offset,
                excluded: d
                    .restored
                    .segments
                    .iter()
                    .flat_map(|s| s.aborted.iter().cloned())
                    .collect(),
                versions: BTreeMap::new(),
                translate: groups.as_ref().map_or_else(Vec::new, |g| {
                    let mut o: Vec<i64> = g
                        .offsets
                        .iter()
                        .filter(|o| o.partition == d.evidence.partition)
                        .map(|o| o.restored_offset)
                        .collect();
                    o.sort_unstable();
                    o.dedup();
                    o
                }),
            })
            .collect();
        let produced: Vec<_> = stream::iter(plans.iter().enumerate())
            .map(|(i, plan)| async move { (i, sink.produce(self.store, plan).await) })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        let mut produced: Vec<_> = produced.into_iter().collect();
        produced.sort_by_key(|(i, _)| *i);
        for (i, r) in produced {
            let (ev, objects, last_kept, translated) = r?;
            if let Some(g) = groups.as_deref_mut() {
                let plan = &plans[i];
                for o in g
                    .offsets
                    .iter_mut()
                    .filter(|o| o.partition == plan.partition)
                {
                    if let Ok(at) = plan.translate.binary_search(&o.restored_offset) {
                        o.restored_offset = translated[at];
                    }
                }
            }
            let d = &mut done[i];
            // What the target gets is what the source side is digested as.
            d.evidence.source_digest = ev.digest.clone();
            d.evidence.expected_records = ev.records;
            d.evidence.last_kept = last_kept;
            let earlier = std::mem::replace(&mut d.objects, objects);
            d.objects.extend(earlier);
            (self.progress)(&format!(
                "partition {}: {} records produced to {} partition {} ({} batches{}), offsets {} to {}",
                done[i].evidence.partition,
                ev.records - ev.resumed_after,
                sink.topic(),
                done[i].evidence.partition,
                ev.produced_batches,
                if ev.resumed_after > 0 {
                    format!(
                        ", resumed after the {} an earlier run produced",
                        ev.resumed_after
                    )
                } else {
                    String::new()
                },
                ev.target_start,
                ev.target_end
            ));
            done[i].evidence.kafka = Some(ev);
        }
        clock.begin("read back");
        let read: Vec<_> = stream::iter(done.iter().enumerate())
            .map(|(i, d)| async move {
                let r = match &d.evidence.kafka {
                    Some(ev) => sink.read_back(ev, d.evidence.partition).await,
                    None => Err(anyhow!(
                        "partition {} was not produced",
                        d.evidence.partition
                    )),
                };
                (i, r)
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        for (i, r) in read {
            let (digest, n) = r?;
            done[i].evidence.restored_records = Some(n);
            done[i].evidence.target_digest = Some(digest);
        }
        for o in done.iter_mut().flat_map(|d| d.objects.iter_mut()) {
            if o.use_ == "copied" {
                o.use_ = "produced".into();
            }
        }
        Ok(())
    }

    /// Served first: reads the source segments a partition's restored log
    /// comes from, verifies those copied unread against the segment list,
    /// and takes the partition's digest and last record from them.
    async fn verify_copied(&self, d: &mut PartitionDone) -> anyhow::Result<()> {
        let (start, end) = (d.evidence.source_log_start, d.evidence.cut_offset);
        let mut digest = ContentDigest::default();
        let mut last_kept = None;
        for key in &d.source_segments {
            let listed = d.unread.get(key);
            let version = listed.and_then(|s| s.kfs_version());
            // Segments read before (the cut one) were counted then: not again.
            let unread = d.objects.iter().any(|o| o.key == *key && !o.crc_verified);
            let seg = if unread {
                self.read_segment(key, version).await?
            } else {
                read_segment(self.store, key, version).await?
            };
            if let Some(s) = listed {
                if let Some(e) = disagreement(key, s, &seg.reader) {
                    bail!("{e}");
                }
                if let Some(o) = d.objects.iter_mut().find(|o| o.key == *key) {
                    *o = Self::object_evidence(key, &seg.meta, true, &o.use_.clone());
                }
            }
            for b in seg.reader.batches().filter(|b| !b.is_control()) {
                for r in records(key, &b)? {
                    if r.offset >= start && r.offset < end {
                        digest.add(&r);
                        last_kept = Some(OffsetAt {
                            offset: r.offset,
                            timestamp: r.timestamp,
                        });
                    }
                }
            }
        }
        d.evidence.expected_records = digest.records();
        d.evidence.source_digest = digest.finish();
        d.evidence.last_kept = last_kept;
        d.unread.clear();
        Ok(())
    }

    /// Asks the restored topic's brokers (or, with none, the metadata
    /// store) for the group offsets the restore set.
    async fn read_back_groups(
        &self,
        bootstrap: Option<&str>,
        topic: &str,
        ev: &mut report::GroupsEvidence,
    ) -> anyhow::Result<()> {
        if let Some(b) = bootstrap {
            use kafscale_client::{Client, ClientConfig};
            let client = Client::connect(ClientConfig::new(b).with_client_id("kafscale-restore"))
                .await
                .map_err(|e| anyhow!("cannot read the group offsets back from {b}: {e}"))?;
            return groups::read_back(&client, topic, ev).await;
        }
        let Catalog::Direct { meta, .. } = self.catalog else {
            bail!("no broker to read the restored group offsets back from");
        };
        for o in ev.offsets.iter_mut() {
            let g = o.group.clone();
            let stored = meta.call(move |m| m.group_offsets(&g)).await?;
            o.read_back = stored
                .iter()
                .find(|(t, p, _)| t == topic && *p == o.partition)
                .map(|(_, _, c)| c.offset);
        }
        Ok(())
    }

    /// Reads every restored segment from the bucket and digests it.
    async fn read_back_bucket(&self, done: &mut [PartitionDone]) -> anyhow::Result<()> {
        for d in done.iter_mut() {
            // The restored objects' own versions, as their records name them.
            let keys: Vec<(String, Option<String>)> = d
                .evidence
                .target_segments
                .iter()
                .zip(&d.restored.segments)
                .map(|(k, s)| (k.clone(), s.kfs_version().map(str::to_owned)))
                .collect();
            let read = digest_objects(
                self.store,
                &keys,
                d.restored.state.log_start_offset,
                d.restored.state.next_offset,
            )
            .await;
            match read {
                Ok((d_, n)) => {
                    d.evidence.restored_records = Some(n);
                    d.evidence.target_digest = Some(d_);
                }
                // As in read_back_kafka: the report already fails.
                Err(e) if d.verify_error.is_some() => {
                    let why = d.verify_error.take().unwrap_or_default();
                    d.verify_error = Some(format!("{why}; reading it back: {e:#}"));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        opts: &Options,
        snap: &TopicSnapshot,
        done: Vec<PartitionDone>,
        read_back: String,
        removed: Option<Result<String, String>>,
        history: Option<groups::History>,
        groups: Option<report::GroupsEvidence>,
        clock: Clock,
    ) -> Report {
        let mut partitions = Vec::new();
        let mut objects = Vec::new();
        let mut unverified = Vec::new();
        for d in done {
            if let Some(e) = d.verify_error {
                unverified.push(format!("partition {}: {e}", d.evidence.partition));
            }
            partitions.push(d.evidence);
            objects.extend(d.objects);
        }
        objects.extend(history.into_iter().flat_map(|h| h.objects));
        let expected: u64 = partitions.iter().map(|p| p.expected_records).sum();
        // Into Kafka the target holds the committed records, offsets aside.
        let wanted = |p: &PartitionEvidence| match &p.kafka {
            Some(k) => (k.records, k.digest.clone()),
            None => (p.expected_records, p.source_digest.clone()),
        };
        let wanted_total: u64 = partitions.iter().map(|p| wanted(p).0).sum();
        let restored: u64 = partitions.iter().filter_map(|p| p.restored_records).sum();
        let source_digest = report::topic_digest(
            partitions
                .iter()
                .map(|p| (p.partition, p.source_digest.as_str())),
        );
        let target_digest = partitions
            .iter()
            .map(|p| p.target_digest.as_deref().map(|d| (p.partition, d)))
            .collect::<Option<Vec<_>>>()
            .map(report::topic_digest);
        let rto_ms = clock.now() - clock.started_ms;
        let mismatched: Vec<String> = partitions
            .iter()
            .filter(|p| p.target_digest.as_deref() != Some(wanted(p).1.as_str()))
            .map(|p| p.partition.to_string())
            .collect();
        let late: u64 = partitions.iter().map(|p| p.late_records).sum();
        let open: usize = partitions.iter().map(|p| p.open_transactions.len()).sum();
        let nis2 = |s: &str| format!("NIS2 Implementing Regulation (EU) 2024/2690, Annex 4.2.{s}");
        let mut checks = vec![
            Check {
                name: "source segments verified".into(),
                passed: unverified.is_empty(),
                detail: if unverified.is_empty() {
                    format!(
                        "{} segment objects read whole: footer CRC32C, every batch CRC, offsets and counts checked",
                        objects.iter().filter(|o| o.crc_verified).count()
                    )
                } else {
                    format!(
                        "the restored topic was served before its copied segments were verified (--serve-first), and they did not: {}",
                        unverified.join("; ")
                    )
                },
                supports: vec!["DORA Art. 12(7)".into(), nis2("3")],
            },
            Check {
                name: "restored records match the source".into(),
                passed: mismatched.is_empty() && wanted_total == restored,
                detail: if mismatched.is_empty() {
                    format!(
                        "{restored} of {wanted_total} records read back ({read_back}), content digests equal{}",
                        if opts.kafka.is_some() {
                            format!(
                                "; the committed records of the restored log, produced idempotently, {} of them by an interrupted earlier run",
                                partitions
                                    .iter()
                                    .filter_map(|p| p.kafka.as_ref())
                                    .map(|k| k.resumed_after)
                                    .sum::<u64>()
                            )
                        } else {
                            String::new()
                        }
                    )
                } else {
                    format!(
                        "digest differs in partitions {}; {restored} of {wanted_total} records read back",
                        mismatched.join(",")
                    )
                },
                supports: vec!["DORA Art. 12(7)".into(), nis2("2(b)"), nis2("6")],
            },
            Check {
                name: "restore completed and timed".into(),
                passed: true,
                detail: format!(
                    "recovery took {rto_ms} ms from start to verified read-back{}",
                    if opts.serve_first {
                        " (served first: the restored topic was served before its copied segments were verified; see served_ms)"
                    } else {
                        ""
                    }
                ),
                supports: vec!["DORA Art. 12(2)".into(), nis2("2(a)"), nis2("6")],
            },
            Check {
                name: "late and open records accounted for".into(),
                passed: true,
                detail: format!(
                    "{late} records after the cut have timestamps not later than the cut (named per partition); {open} transactions open at the cut are excluded from read_committed"
                ),
                supports: vec![nis2("2(b)")],
            },
        ];
        if let Some(removed) = &removed {
            checks.push(Check {
                name: "drill cleaned up".into(),
                passed: removed.is_ok(),
                detail: match removed {
                    Ok(how) => format!(
                        "the temporary topic {} was verified, then removed {how}",
                        opts.target
                    ),
                    Err(e) => format!("the temporary topic {} was NOT removed: {e}", opts.target),
                },
                supports: vec!["DORA Art. 12(2)".into(), nis2("6")],
            });
        }
        if opts.from_bucket {
            checks.push(Check {
                name: "log rebuilt from the bucket alone".into(),
                passed: true,
                detail: format!(
                    "no metadata store: the segment list is every .kfs with its .index under {}/{}/, each verified; each partition's last segment is unconfirmed (it may hold records that were never acknowledged)",
                    self.namespace, opts.topic
                ),
                supports: vec![nis2("2(e)")],
            });
        }
        if let Some(g) = &groups {
            checks.push(groups::check(g, nis2));
        }
        let passed = checks.iter().all(|c| c.passed);
        Report {
            format: report::FORMAT.into(),
            tool: Tool::this(),
            operator: opts.operator.clone(),
            trigger: opts.trigger.clone(),
            source: SourceEvidence {
                store: self.store.describe(),
                namespace: self.namespace.clone(),
                topic: opts.topic.clone(),
                topic_id: snap.topic.id.clone(),
                catalog: if opts.from_bucket {
                    format!("the bucket alone ({} had no say)", self.catalog.label())
                } else {
                    self.catalog.label()
                },
            },
            request: RequestEvidence {
                to: match opts.cut {
                    Cut::Time(t) => Some(format_unix_ms(t)),
                    Cut::Offsets(_) => None,
                },
                to_ms: match opts.cut {
                    Cut::Time(t) => Some(t),
                    Cut::Offsets(_) => None,
                },
                to_offsets: match &opts.cut {
                    Cut::Offsets(m) => Some(m.iter().map(|(p, o)| (p.to_string(), *o)).collect()),
                    Cut::Time(_) => None,
                },
                rule: opts.cut.rule(),
            },
            target: match &opts.kafka {
                Some(k) => TargetEvidence {
                    kind: "kafka".into(),
                    topic: k.topic.clone(),
                    store: format!("Kafka cluster {}", k.bootstrap()),
                    read_back,
                    temporary: false,
                },
                None => TargetEvidence {
                    kind: "spine".into(),
                    topic: opts.target.clone(),
                    store: self.store.describe(),
                    read_back,
                    temporary: opts.temporary,
                },
            },
            partitions,
            objects,
            expected_records: expected,
            restored_records: Some(restored),
            source_digest,
            target_digest,
            phases: clock.phases,
            rto_ms,
            checks,
            passed,
            groups,
            served_ms: None,
        }
    }
}

/// A segment's offsets, count and timestamp bounds, as read.
fn segment_info_of(r: &SegmentReader, size: u64) -> kafscale_codec::kfs::SegmentInfo {
    let (mut min, mut max) = (i64::MAX, i64::MIN);
    for b in r.batches() {
        min = min.min(b.base_timestamp());
        max = max.max(b.max_timestamp());
    }
    kafscale_codec::kfs::SegmentInfo {
        base_offset: r.base_offset(),
        last_offset: r.last_offset(),
        message_count: r.header().message_count,
        size,
        created_ms: r.header().created_ms,
        min_timestamp: min,
        max_timestamp: max,
    }
}

/// The first way `s` (what the catalog or the object's metadata says)
/// disagrees with the segment as read, in words.
fn disagreement(key: &str, s: &SegmentRecord, r: &SegmentReader) -> Option<String> {
    let actual = segment_info_of(r, s.size);
    let pairs = [
        ("base offset", s.base_offset, actual.base_offset),
        ("last offset", s.last_offset, actual.last_offset),
        (
            "record count",
            i64::from(s.message_count),
            i64::from(actual.message_count),
        ),
        ("largest timestamp", s.max_timestamp, actual.max_timestamp),
    ];
    pairs
        .iter()
        .find(|(_, want, got)| want != got)
        .map(|(what, want, got)| {
            format!("segment {key}: its {what} is {got}, but the segment list says {want}")
        })
}

/// `s` with the transactions its batches abort and leave open, following
/// on from `before` (the segment ahead of it): for a log rebuilt from the
/// bucket, whose segment records are not stored anywhere.
fn followed(
    s: &SegmentRecord,
    before: Option<&SegmentRecord>,
    batches: &[RecordBatch],
) -> SegmentRecord {
    let mut txns = Txns::following(before.map_or(&[][..], |b| &b.open_txns));
    SegmentRecord {
        aborted: txns.follow(batches),
        open_txns: txns.open_now(),
        ..s.clone()
    }
}

fn versions_of(kfs: Option<String>, index: Option<String>) -> Option<ObjectVersions> {
    Some(ObjectVersions {
        kfs: kfs?,
        index: index?,
    })
}

/// Keeps the count of late records and the first 100 of their offsets.
fn note_late(late: &mut (u64, Vec<i64>), offset: i64) {
    late.0 += 1;
    if late.1.len() < 100 {
        late.1.push(offset);
    }
}

fn records(what: &str, b: &RecordBatch) -> anyhow::Result<Vec<Record>> {
    b.records().map_err(|e| anyhow!("{what}: {e}"))
}

/// The default name of a restored topic: `{topic}.restored-{UTC time}`.
pub fn default_target(topic: &str, now_ms: i64) -> String {
    let t: String = format_unix_ms(now_ms)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(15)
        .collect();
    format!("{topic}.restored-{t}Z")
}

async fn read_segment(
    store: &AnyStore,
    key: &str,
    version: Option<&str>,
) -> anyhow::Result<ReadSegment> {
    let object = store
        .get_version(key, version)
        .await
        .with_context(|| format!("cannot read segment {key} from {}", store.describe()))?;
    let reader =
        SegmentReader::open(object.body).map_err(|e| anyhow!("segment {key} is corrupt: {e}"))?;
    Ok(ReadSegment {
        reader,
        meta: object.meta,
    })
}

/// Digest and record count of the records in [start, end) of these
/// segments (each with the version to read, if the bucket keeps versions),
/// each verified as it is read.
pub async fn digest_objects(
    store: &AnyStore,
    keys: &[(String, Option<String>)],
    start: i64,
    end: i64,
) -> anyhow::Result<(String, u64)> {
    let mut digest = ContentDigest::default();
    for (key, version) in keys {
        let seg = read_segment(store, key, version.as_deref()).await?;
        for b in seg.reader.batches().filter(|b| !b.is_control()) {
            for r in records(key, &b)? {
                if r.offset >= start && r.offset < end {
                    digest.add(&r);
                }
            }
        }
    }
    let n = digest.records();
    Ok((digest.finish(), n))
}
