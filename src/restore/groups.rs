//! `--groups REGEX`: the restored topic starts with the committed offsets
//! the matching consumer groups had on the original topic at T, replayed
//! from the brokers' offset history (`__kafscale_offsets`, see
//! `crate::offset_history`) in the bucket, each at most the cut.
//!
//! ```text
//! history segments whose first record is not later than T (all partitions)
//!   -> verified, records replayed: per group and partition, the last
//!      commit at or before T (a later OffsetDelete/DeleteGroups removes it)
//!   -> clamped to the partition's cut
//!   -> into the spine: written with the restored topic, before it appears
//!      into Kafka: translated to the target's offsets (the offset of the
//!      first produced record at or after it), committed with OffsetCommit
//!   -> read back with OffsetFetch, in the report
//! ```

use std::collections::BTreeMap;

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use kafscale_client::{Client, CommittedOffset};
use kafscale_s3::{ObjectStore, format_unix_ms};
use regex::Regex;

use super::report::{Check, GroupOffsetEvidence, GroupsEvidence, ObjectEvidence};
use super::{
    Cut, Options, PartitionDone, RestoredGroupOffset, Restorer, disagreement, read_segment, records,
};
use crate::internal::OFFSETS;
use crate::meta::keys;
use crate::meta::store::now_ms;
use crate::offset_history::{GroupOffset, HistoryRecord, Replay};
use kafscale_codec::kfs::SegmentReader;

/// History segments read at the same time.
const PARALLEL_READS: usize = 8;

/// The replayed history: where the matching groups stood.
pub(super) struct History {
    pub pattern: String,
    pub as_of_ms: i64,
    /// The history's earliest record, if it has any.
    pub first_ms: Option<i64>,
    pub offsets: Vec<GroupOffset>,
    pub objects: Vec<ObjectEvidence>,
    pub records: u64,
}

impl Restorer<'_> {
    /// Replays the offset history up to the cut's moment (now, for a cut
    /// by offset) for the groups `pattern` matches.
    pub(super) async fn replay_history(
        &self,
        opts: &Options,
        pattern: &Regex,
    ) -> anyhow::Result<History> {
        let as_of_ms = match opts.cut {
            Cut::Time(t) => t,
            Cut::Offsets(_) => now_ms(),
        };
        let no_history = || {
            anyhow!(
                "--groups: there is no offset history ({OFFSETS}) in {}; brokers record it unless started with --offset-history false",
                if opts.from_bucket {
                    self.store.describe()
                } else {
                    self.catalog.label()
                }
            )
        };
        let snap = if opts.from_bucket {
            let prefix = format!("{}/{OFFSETS}/", self.namespace);
            let listed =
                self.store.list(&prefix).await.with_context(|| {
                    format!("cannot list {prefix} in {}", self.store.describe())
                })?;
            if listed.is_empty() {
                return Err(no_history());
            }
            self.bucket_snapshot(OFFSETS).await?.0
        } else {
            let snap = self
                .catalog
                .snapshot(OFFSETS)
                .await?
                .ok_or_else(no_history)?;
            if snap
                .topic
                .config
                .get(crate::internal::INTERNAL)
                .map(String::as_str)
                != Some("offsets")
            {
                bail!(
                    "--groups: the topic {OFFSETS} in {} was not made by the brokers (it lacks the {} marker), so it is no offset history",
                    self.catalog.label(),
                    crate::internal::INTERNAL
                );
            }
            snap
        };
        let first_ms = snap
            .partitions
            .iter()
            .filter_map(|p| p.segments.first().map(|s| s.min_timestamp))
            .min();
        let wanted: Vec<_> = snap
            .partitions
            .iter()
            .flat_map(|p| {
                p.segments
                    .iter()
                    .filter(|s| s.min_timestamp <= as_of_ms)
                    .map(move |s| (p.partition, s))
            })
            .collect();
        let namespace = &self.namespace;
        let mut reads = futures::stream::iter(wanted)
            .map(|(p, s)| async move {
                let key = keys::segment_object(namespace, OFFSETS, p, s.base_offset).0;
                let seg = read_segment(self.store, &key, s.kfs_version()).await?;
                if let Some(e) = disagreement(&key, s, &seg.reader) {
                    bail!("{e}");
                }
                anyhow::Ok((p, key, seg))
            })
            .buffer_unordered(PARALLEL_READS);
        let mut replay = Replay::default();
        let mut objects = Vec::new();
        let mut count = 0u64;
        while let Some(read) = reads.next().await {
            let (p, key, seg) = read?;
            count += replay_segment(
                &mut replay,
                p,
                &key,
                &seg.reader,
                as_of_ms,
                &opts.topic,
                pattern,
            )?;
            objects.push(Restorer::object_evidence(
                &key,
                &seg.meta,
                true,
                "offset history",
            ));
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(History {
            pattern: pattern.as_str().to_owned(),
            as_of_ms,
            first_ms,
            offsets: replay.offsets(),
            objects,
            records: count,
        })
    }
}

/// Replays one segment of the history (partition `partition`, object
/// `key`) into `replay`; returns how many records it holds. The restore
/// and `restore verify` both replay with this.
pub(super) fn replay_segment(
    replay: &mut Replay,
    partition: u32,
    key: &str,
    reader: &SegmentReader,
    as_of_ms: i64,
    topic: &str,
    pattern: &Regex,
) -> anyhow::Result<u64> {
    let mut count = 0u64;
    for b in reader.batches().filter(|b| !b.is_control()) {
        for r in records(key, &b)? {
            count += 1;
            let h = HistoryRecord {
                key: r.key.as_deref(),
                value: r.value.as_deref(),
                time_ms: r.timestamp,
                partition,
                offset: r.offset,
            };
            replay
                .add(h, as_of_ms, topic, |g| pattern.is_match(g))
                .map_err(|e| {
                    anyhow!(
                        "--groups: the offset history record at offset {} of {key}: {e}",
                        r.offset
                    )
                })?;
        }
    }
    Ok(count)
}

/// The history partition an object key of `__kafscale_offsets` is in
/// (`{namespace}/__kafscale_offsets/{partition}/segment-....kfs`).
pub(super) fn history_partition(key: &str) -> Option<u32> {
    let rest = &key[key.find(&format!("/{OFFSETS}/"))? + OFFSETS.len() + 2..];
    rest.split_once('/')?.0.parse().ok()
}

impl History {
    /// The offsets each restored partition gets: the committed ones, at
    /// most the cut (partitions the restore has not: left out).
    pub(super) fn evidence(&self, done: &[PartitionDone]) -> GroupsEvidence {
        let cuts: BTreeMap<u32, i64> = done
            .iter()
            .map(|d| (d.evidence.partition, d.evidence.cut_offset))
            .collect();
        let offsets = self
            .offsets
            .iter()
            .filter_map(|o| {
                let cut = *cuts.get(&o.partition)?;
                Some(GroupOffsetEvidence {
                    group: o.group.clone(),
                    partition: o.partition,
                    committed_offset: o.offset,
                    committed_at: format_unix_ms(o.committed_ms),
                    restored_offset: o.offset.min(cut),
                    clamped: o.offset > cut,
                    read_back: None,
                })
            })
            .collect();
        GroupsEvidence {
            pattern: self.pattern.clone(),
            as_of: format_unix_ms(self.as_of_ms),
            history_from: self.first_ms.map(format_unix_ms),
            history_records: self.records,
            history_segments: self.objects.len() as u64,
            offsets,
        }
    }

    /// The committed offsets' metadata, by group and partition.
    fn metadata(&self) -> BTreeMap<(&str, u32), Option<String>> {
        self.offsets
            .iter()
            .map(|o| ((o.group.as_str(), o.partition), o.metadata.clone()))
            .collect()
    }

    /// The offsets as the spine's restored topic is created with them.
    pub(super) fn for_spine(&self, ev: &GroupsEvidence) -> Vec<RestoredGroupOffset> {
        let metadata = self.metadata();
        ev.offsets
            .iter()
            .map(|o| RestoredGroupOffset {
                group: o.group.clone(),
                partition: o.partition,
                offset: o.restored_offset,
                leader_epoch: -1,
                metadata: metadata
                    .get(&(o.group.as_str(), o.partition))
                    .cloned()
                    .flatten(),
            })
            .collect()
    }

    /// The offsets as committed to a Kafka target (translated already).
    pub(super) fn for_kafka(
        &self,
        ev: &GroupsEvidence,
        topic: &str,
    ) -> BTreeMap<String, Vec<CommittedOffset>> {
        let metadata = self.metadata();
        let mut by_group: BTreeMap<String, Vec<CommittedOffset>> = BTreeMap::new();
        for o in &ev.offsets {
            by_group
                .entry(o.group.clone())
                .or_default()
                .push(CommittedOffset {
                    topic: topic.to_owned(),
                    partition: o.partition as i32,
                    offset: o.restored_offset,
                    leader_epoch: -1,
                    metadata: metadata
                        .get(&(o.group.as_str(), o.partition))
                        .cloned()
                        .flatten(),
                });
        }
        by_group
    }
}

/// Commits the (translated) offsets to the target cluster, one
/// OffsetCommit per group, as an admin tool does (no member, generation
/// -1): Kafka refuses it for a group with active members.
pub(super) async fn commit_to_kafka(
    client: &Client,
    bootstrap: &str,
    offsets: &BTreeMap<String, Vec<CommittedOffset>>,
) -> anyhow::Result<()> {
    for (group, list) in offsets {
        client.offset_commit(group, list).await.map_err(|e| {
            anyhow!(
                "cannot commit the restored offsets of group {group} on {bootstrap} (a group with active members refuses them): {e}"
            )
        })?;
    }
    Ok(())
}

/// Asks the target for each group's offsets on `topic` and notes them.
pub(super) async fn read_back(
    client: &Client,
    topic: &str,
    ev: &mut GroupsEvidence,
) -> anyhow::Result<()> {
    let groups: std::collections::BTreeSet<String> =
        ev.offsets.iter().map(|o| o.group.clone()).collect();
    for group in groups {
        let parts: Vec<i32> = ev
            .offsets
            .iter()
            .filter(|o| o.group == group)
            .map(|o| o.partition as i32)
            .collect();
        let got = client
            .offset_fetch(&group, &[(topic, parts)])
            .await
            .map_err(|e| anyhow!("reading the offsets of group {group} on {topic} back: {e}"))?;
        for o in ev.offsets.iter_mut().filter(|o| o.group == group) {
            o.read_back = got
                .iter()
                .find(|c| c.topic == topic && c.partition == o.partition as i32)
                .map(|c| c.offset)
                .filter(|off| *off >= 0);
        }
    }
    Ok(())
}

/// The report's check of the group offsets.
pub(super) fn check(ev: &GroupsEvidence, nis2: impl Fn(&str) -> String) -> Check {
    let wrong: Vec<String> = ev
        .offsets
        .iter()
        .filter(|o| o.read_back != Some(o.restored_offset))
        .map(|o| format!("{} partition {}", o.group, o.partition))
        .collect();
    let groups: std::collections::BTreeSet<&str> =
        ev.offsets.iter().map(|o| o.group.as_str()).collect();
    let clamped = ev.offsets.iter().filter(|o| o.clamped).count();
    // History that begins after the moment cannot say where groups stood.
    let late_start = ev.history_from.as_deref().filter(|from| {
        kafscale_s3::parse_rfc3339_ms(from)
            .is_ok_and(|f| kafscale_s3::parse_rfc3339_ms(&ev.as_of).is_ok_and(|at| f > at))
    });
    Check {
        name: "consumer group offsets as they stood".into(),
        passed: wrong.is_empty() && late_start.is_none(),
        detail: if let Some(from) = late_start {
            format!(
                "the offset history begins at {from}, after {}: where groups stood then is not recorded",
                ev.as_of
            )
        } else if wrong.is_empty() {
            format!(
                "{} offsets of {} groups matching {} as of {}, replayed from {} offset history records in {} segments (the history begins at {}) and read back from the target; {clamped} were past the cut and set to it",
                ev.offsets.len(),
                groups.len(),
                ev.pattern,
                ev.as_of,
                ev.history_records,
                ev.history_segments,
                ev.history_from
                    .as_deref()
                    .unwrap_or("-, it holds no records")
            )
        } else {
            format!(
                "the target holds other offsets than the restore set for {}",
                wrong.join(", ")
            )
        },
        supports: vec!["DORA Art. 12(7)".into(), nis2("2(b)")],
    }
}
