//! Restore into another Kafka cluster: the restored log's committed records
//! produced there as the batches they are in the bucket.
//!
//! ```text
//! per partition, in offset order, batches in [log start, cut):
//!   control batch                           -> left out (markers are not produced)
//!   transactional, aborted or open at cut   -> left out
//!   the batch the cut falls inside          -> cut (RecordBatch::keep_before)
//!   every other                             -> as it is (no recompression); the
//!        transactional bit cleared, LogAppendTime made CreateTime at the
//!        timestamps consumers saw (RecordBatch::for_producer)
//!   -> idempotent producer, one batch at a time per partition, acks=all
//! ```
//!
//! The target gets what a read_committed consumer of the restored topic
//! sees, in order, at new offsets (the target numbers its own log).
//! Resuming: the producer numbers batches only within one run, so a rerun
//! after an interruption counts the records the target partition already
//! holds, checks they are the start of this restore (the count falls on a
//! batch boundary and the last batch's records are equal) and produces from
//! there. The check is the content digest without offsets, over the whole
//! target partition read back with a fetch.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use kafscale_client::{
    Client, ClientConfig, FetchOptions, FetchSpec, IdempotentProducer, NewTopic, OffsetSpec,
};
use kafscale_codec::batch::RecordBatch;
use kafscale_codec::records::Record;
use kafscale_s3::AnyStore;

use super::report::{ContentDigest, KafkaPartitionEvidence, ObjectEvidence, OffsetAt};
use super::{Restorer, disagreement, read_segment, records};
use crate::meta::{AbortedTxn, SegmentRecord};

/// Where a restore into Kafka goes.
#[derive(Debug, Clone)]
pub struct KafkaTarget {
    /// Bootstrap, security and credentials, as for a mirror source.
    pub config: ClientConfig,
    pub topic: String,
}

impl KafkaTarget {
    pub fn bootstrap(&self) -> String {
        self.config.bootstrap.join(",")
    }
}

/// One partition to produce: the source segments holding its restored log
/// and what of them to leave out.
#[derive(Debug)]
pub(super) struct PartitionPlan {
    pub partition: u32,
    /// Segments read for the first time here, with what the segment list
    /// says of each (checked against what is read).
    pub unread: BTreeMap<String, SegmentRecord>,
    pub source_segments: Vec<String>,
    pub log_start: i64,
    pub cut: i64,
    /// Aborted transactions and those open at the cut.
    pub excluded: Vec<AbortedTxn>,
    /// Versions to read segments at that `unread` does not name (`restore
    /// verify`: those its report names).
    pub versions: BTreeMap<String, String>,
    /// Source offsets (ascending) to translate to the target's: each to the
    /// target offset of the first produced record at or after it (or the
    /// target's end).
    pub translate: Vec<i64>,
}

/// A connected target cluster.
pub(super) struct Sink {
    client: Client,
    producer: Option<IdempotentProducer>,
    topic: String,
    bootstrap: String,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("topic", &self.topic)
            .field("bootstrap", &self.bootstrap)
            .finish()
    }
}

impl Sink {
    /// Connects and checks the target topic: it must have at least
    /// `partitions` partitions and CreateTime timestamps. With `create`, a
    /// missing topic is created with `partitions` partitions and the
    /// producer is set up (a dry run neither creates nor produces).
    pub async fn open(target: &KafkaTarget, partitions: u32, create: bool) -> anyhow::Result<Self> {
        let bootstrap = target.bootstrap();
        let topic = target.topic.clone();
        let client = Client::connect(target.config.clone())
            .await
            .map_err(|e| anyhow!("cannot connect to the target cluster {bootstrap}: {e}"))?;
        let meta = client
            .metadata(&[&topic])
            .await
            .map_err(|e| anyhow!("target cluster {bootstrap}: {e}"))?;
        let existing = meta
            .topic(&topic)
            .filter(|t| t.error.is_none())
            .map(|t| t.partitions.len());
        match existing {
            Some(n) if n < partitions as usize => bail!(
                "target topic {topic} on {bootstrap} has {n} partitions; the restore needs {partitions} (partition i goes to partition i)"
            ),
            Some(_) => {}
            None if create => {
                // Restored records keep their timestamps: under a time
                // retention Kafka would delete old ones as they arrive.
                let mut t = NewTopic::new(&topic, partitions as i32);
                t.configs.insert("retention.ms".into(), "-1".into());
                t.configs
                    .insert("message.timestamp.type".into(), "CreateTime".into());
                client.ensure_topic(&t).await.map_err(|e| {
                    anyhow!("cannot create target topic {topic} on {bootstrap}: {e}")
                })?
            }
            None => {}
        }
        if existing.is_some() || create {
            let config = client
                .describe_topic_config(&topic)
                .await
                .map_err(|e| anyhow!("target topic {topic} on {bootstrap}: {e}"))?;
            if let Some(Some(t)) = config.get("message.timestamp.type")
                && t == "LogAppendTime"
            {
                bail!(
                    "target topic {topic} on {bootstrap} uses LogAppendTime: it would replace every restored timestamp with the time of the restore; restore into a CreateTime topic"
                );
            }
            if let Some(Some(ms)) = config.get("retention.ms")
                && ms != "-1"
            {
                bail!(
                    "target topic {topic} on {bootstrap} has retention.ms={ms}: Kafka would delete restored records older than that as they arrive; set retention.ms=-1 for the restore (and back afterwards)"
                );
            }
        }
        let producer = if create {
            Some(IdempotentProducer::new(&client).await.map_err(|e| {
                anyhow!("target cluster {bootstrap}: cannot start an idempotent producer: {e}")
            })?)
        } else {
            None
        };
        Ok(Self {
            client,
            producer,
            topic,
            bootstrap,
        })
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Produces one partition's restored log (or what an interrupted run
    /// left to produce). Also returns the evidence of the segments read
    /// here for the first time, the last record of the restored log (any,
    /// control records aside) and the target offsets of `plan.translate`.
    pub async fn produce(
        &self,
        store: &AnyStore,
        plan: &PartitionPlan,
    ) -> anyhow::Result<(
        KafkaPartitionEvidence,
        Vec<ObjectEvidence>,
        Option<OffsetAt>,
        Vec<i64>,
    )> {
        let Some(producer) = &self.producer else {
            bail!("the target was opened for a dry run");
        };
        let (topic, p) = (self.topic.as_str(), plan.partition as i32);
        let at = |spec| async move {
            self.client
                .list_offset(topic, p, spec)
                .await
                .map(|o| o.offset)
                .map_err(|e| anyhow!("target {topic} partition {p} on {}: {e}", self.bootstrap))
        };
        let start = at(OffsetSpec::Earliest).await?;
        let mut end = at(OffsetSpec::Latest).await?;
        if end > start {
            // A resume: a request of the interrupted run may still be on
            // its way in; count once the partition has stopped growing.
            loop {
                glommio::timer::sleep(Duration::from_secs(2)).await;
                let now = at(OffsetSpec::Latest).await?;
                if now == end {
                    break;
                }
                end = now;
            }
        }
        // What an interrupted run of this restore left there.
        let have = end - start;
        let mut digest = ContentDigest::without_offsets();
        let mut counted = 0i64;
        let mut batches = 0u64;
        let mut last_skipped: Option<Vec<Record>> = None;
        let mut objects = Vec::new();
        let mut last_batch: Option<(String, RecordBatch)> = None;
        let mut translated = Vec::with_capacity(plan.translate.len());
        for key in &plan.source_segments {
            let unread = plan.unread.get(key);
            let seg = read_segment(store, key, unread.and_then(|s| s.kfs_version())).await?;
            if let Some(s) = unread {
                if let Some(e) = disagreement(key, s, &seg.reader) {
                    bail!("{e}");
                }
                objects.push(Restorer::object_evidence(key, &seg.meta, true, "produced"));
            }
            for b in seg.reader.batches() {
                if !b.is_control()
                    && b.base_offset() < plan.cut
                    && b.last_offset() >= plan.log_start
                {
                    last_batch = Some((key.clone(), b.clone()));
                }
                let b = match plan.select(key, b)? {
                    Selected::Take(b) => b,
                    Selected::Skip => continue,
                    Selected::End => break,
                };
                let recs = records(key, &b)?;
                recs.iter().for_each(|r| digest.add(r));
                for (i, r) in recs.iter().enumerate() {
                    while let Some(&want) = plan.translate.get(translated.len())
                        && want <= r.offset
                    {
                        translated.push(start + counted + i as i64);
                    }
                }
                let n = recs.len() as i64;
                if counted + n <= have {
                    counted += n;
                    last_skipped = Some(recs);
                    continue;
                }
                if counted < have {
                    bail!(
                        "target {topic} partition {p} holds {have} records, which is not a batch boundary of this restore (one ends at {counted}): it was not written by an earlier run of it; restore into a new or empty topic"
                    );
                }
                if let Some(last) = last_skipped.take() {
                    self.same_as_target(p, start + have - last.len() as i64, &last)
                        .await?;
                }
                // The producer copies it once, to stamp its fields and base
                // offset 0.
                let bytes = b
                    .for_producer()
                    .map_err(|e| anyhow!("segment {key}: {e}"))?;
                let size = bytes.len();
                let sent = producer.send(topic, p, &bytes).await.map_err(|e| {
                    anyhow!(
                        "producing the batch at offset {} ({size} bytes) of {key} to {topic} partition {p} on {}: {e}",
                        b.base_offset(),
                        self.bootstrap
                    )
                })?;
                if sent.base_offset >= 0 && sent.base_offset != start + counted {
                    bail!(
                        "target {topic} partition {p} was written by someone else during the restore: a batch landed at offset {}, expected {}",
                        sent.base_offset,
                        start + counted
                    );
                }
                counted += n;
                batches += 1;
            }
        }
        if counted < have {
            bail!(
                "target {topic} partition {p} holds {have} records, more than this restore has ({counted}): it was not written by an earlier run of it; restore into a new or empty topic"
            );
        }
        if let Some(last) = last_skipped.take() {
            self.same_as_target(p, start + have - last.len() as i64, &last)
                .await?;
        }
        translated.resize(plan.translate.len(), start + counted);
        let last_kept = match last_batch {
            Some((key, b)) => records(&key, &b)?
                .into_iter()
                .rfind(|r| r.offset < plan.cut)
                .map(|r| OffsetAt {
                    offset: r.offset,
                    timestamp: r.timestamp,
                }),
            None => None,
        };
        let evidence = KafkaPartitionEvidence {
            records: counted as u64,
            digest: digest.finish(),
            produced_batches: batches,
            resumed_after: have as u64,
            target_start: start,
            target_end: start + counted,
            excluded_transactions: plan
                .excluded
                .iter()
                .map(|t| (t.producer_id, t.first_offset, t.last_offset))
                .collect(),
        };
        Ok((evidence, objects, last_kept, translated))
    }

    /// The records at `from..` of the target partition equal `want`
    /// (offsets aside): the check that a resume continues its own prefix.
    async fn same_as_target(&self, p: i32, from: i64, want: &[Record]) -> anyhow::Result<()> {
        let end = from + want.len() as i64;
        let (_, got) = read_partition(
            &self.client,
            &self.topic,
            p,
            from,
            end,
            false,
            Some(want.len()),
        )
        .await?;
        let same = got.len() == want.len()
            && got.iter().zip(want).all(|(g, w)| {
                (g.timestamp, &g.key, &g.value, &g.headers)
                    == (w.timestamp, &w.key, &w.value, &w.headers)
            });
        if !same {
            bail!(
                "target {} partition {p} holds records at offsets {from}..{end} that differ from this restore's: it was not written by an earlier run of it; restore into a new or empty topic",
                self.topic
            );
        }
        Ok(())
    }

    /// The target partition read back whole: (digest without offsets, count).
    pub async fn read_back(
        &self,
        ev: &KafkaPartitionEvidence,
        p: u32,
    ) -> anyhow::Result<(String, u64)> {
        let (digest, _) = read_partition(
            &self.client,
            &self.topic,
            p as i32,
            ev.target_start,
            ev.target_end,
            false,
            None,
        )
        .await?;
        Ok(digest)
    }
}

/// What becomes of a source batch.
pub(super) enum Selected {
    /// Produced (cut if the cut falls inside it).
    Take(RecordBatch),
    /// Left out: a control batch, before the log start, or of an excluded
    /// transaction.
    Skip,
    /// At or past the cut.
    End,
}

impl PartitionPlan {
    /// What of `b`, read from segment `key`, the target gets.
    pub(super) fn select(&self, key: &str, b: RecordBatch) -> anyhow::Result<Selected> {
        if b.base_offset() >= self.cut {
            return Ok(Selected::End);
        }
        if b.is_control() || b.last_offset() < self.log_start {
            return Ok(Selected::Skip);
        }
        if b.base_offset() < self.log_start {
            bail!(
                "segment {key}: the log starts at offset {} inside the batch at {} (records were deleted from its middle); a restore into Kafka produces whole batches and cannot leave the deleted ones out",
                self.log_start,
                b.base_offset()
            );
        }
        if b.is_transactional() && self.excluded.iter().any(|t| t.holds(&b)) {
            return Ok(Selected::Skip);
        }
        if b.last_offset() < self.cut {
            return Ok(Selected::Take(b));
        }
        match b
            .keep_before(self.cut)
            .map_err(|e| anyhow!("segment {key}: {e}"))?
        {
            Some(part) => Ok(Selected::Take(
                RecordBatch::parse(part).map_err(|e| anyhow!("segment {key}: cut batch: {e}"))?,
            )),
            None => Ok(Selected::End),
        }
    }

    /// The digest (without offsets) and count of what the target gets,
    /// recomputed from the source segments (`restore verify`).
    pub(super) async fn digest(&self, store: &AnyStore) -> anyhow::Result<(String, u64)> {
        let mut digest = ContentDigest::without_offsets();
        for key in &self.source_segments {
            let version = self
                .unread
                .get(key)
                .and_then(|s| s.kfs_version())
                .or_else(|| self.versions.get(key).map(String::as_str));
            let seg = read_segment(store, key, version).await?;
            for b in seg.reader.batches() {
                match self.select(key, b)? {
                    Selected::Take(b) => records(key, &b)?.iter().for_each(|r| digest.add(r)),
                    Selected::Skip => {}
                    Selected::End => break,
                }
            }
        }
        let n = digest.records();
        Ok((digest.finish(), n))
    }
}

impl AbortedTxn {
    /// `b` is one of this transaction's batches.
    fn holds(&self, b: &RecordBatch) -> bool {
        self.producer_id == b.producer_id()
            && self.first_offset <= b.base_offset()
            && b.base_offset() <= self.last_offset
    }
}

/// Fetches `[start, end)` of a partition with a Kafka fetch and digests what
/// a consumer gets (with or without offsets); with `keep`, also returns up
/// to that many of the records.
pub(super) async fn read_partition(
    client: &Client,
    topic: &str,
    partition: i32,
    start: i64,
    end: i64,
    with_offsets: bool,
    keep: Option<usize>,
) -> anyhow::Result<((String, u64), Vec<Record>)> {
    let opts = FetchOptions {
        max_wait: Duration::from_millis(100),
        ..FetchOptions::default()
    };
    let mut digest = if with_offsets {
        ContentDigest::default()
    } else {
        ContentDigest::without_offsets()
    };
    let mut kept = Vec::new();
    let mut offset = start;
    let mut idle = 0;
    while offset < end {
        let mut spec = FetchSpec::new(topic, partition, offset);
        spec.max_bytes = 8 * 1024 * 1024;
        let got = client
            .fetch_partition(&spec, &opts)
            .await
            .with_context(|| {
                format!("reading {topic} partition {partition} back at offset {offset}")
            })?;
        if got.batches.is_empty() {
            idle += 1;
            if idle > 50 {
                bail!(
                    "reading {topic} partition {partition} back: no records at offset {offset} (high watermark {})",
                    got.high_watermark
                );
            }
            glommio::timer::sleep(Duration::from_millis(100)).await;
            continue;
        }
        idle = 0;
        for b in got.batches.iter().filter(|b| !b.is_control()) {
            for r in records(topic, b)? {
                if r.offset >= offset && r.offset < end {
                    digest.add(&r);
                    if keep.is_some_and(|k| kept.len() < k) {
                        kept.push(r);
                    }
                }
            }
        }
        offset = got.next_offset;
    }
    let n = digest.records();
    Ok(((digest.finish(), n), kept))
}
