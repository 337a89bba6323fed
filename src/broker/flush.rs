//! The shard's flusher: group commit of every partition it owns.
//!
//! One flush at a time per shard: seal every due partition (buffer at
//! `--segment-bytes` or oldest record older than `--flush-interval-ms`),
//! upload all `.kfs` + `.index` pairs concurrently, then commit all of them in
//! one metadata transaction, then acknowledge producers and wake fetches.
//! Appends continue into new buffers while a flush is in flight.

use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::channels::local_channel::LocalReceiver;
use kafscale_s3::{ObjectStore, PutOptions};

use super::errors::ErrorCode;
use super::partition::{Flushing, PartitionLog};
use super::shard::Shard;
use crate::meta::store::MAX_COMMIT_PARTITIONS;
use crate::meta::{MetaError, ObjectVersions, SegmentCommit, keys};

pub async fn run(shard: Rc<Shard>, wake: LocalReceiver<()>) {
    let interval = shard.args.flush_interval();
    let segment_bytes = shard.args.segment_bytes.0 as usize;
    loop {
        let now = Instant::now();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        // Stopping: every open segment is due, whatever its size or age.
        let segment_bytes = if shard.draining() { 0 } else { segment_bytes };
        for log in shard.owned_logs() {
            let (is_due, deadline) = log.flush_due(now, segment_bytes, interval);
            if is_due {
                if let Some(d) = deadline.filter(|d| *d <= now) {
                    shard.metrics.flush_lateness.record(now - d);
                }
                due.push(log);
            } else if let Some(d) = deadline {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        }
        if !due.is_empty() {
            flush(&shard, due).await;
            continue;
        }
        let sleep_for = next
            .map_or(interval, |n| n.saturating_duration_since(now))
            .max(Duration::from_millis(1));
        let woken = async {
            wake.recv().await;
        };
        futures_lite::future::or(woken, glommio::timer::sleep(sleep_for)).await;
    }
}

async fn flush(shard: &Rc<Shard>, logs: Vec<Rc<PartitionLog>>) {
    let now_ms = crate::meta::store::now_ms();
    let mut taken: Vec<(Rc<PartitionLog>, Flushing)> = Vec::with_capacity(logs.len());
    for log in logs {
        let Some(f) = log.take_for_flush(now_ms) else {
            continue;
        };
        // Upload nothing under a lease that may have expired (a paused or
        // partitioned broker); the commit would be refused anyway.
        if !shard.cluster.holds(log.claim.as_ref()) {
            log.flush_failed(f, ErrorCode::NOT_LEADER_OR_FOLLOWER, None);
            if shard.cluster.is_void(log.claim.as_ref()) {
                shard.drop_log(&log);
            }
            continue;
        }
        taken.push((log, f));
    }
    if taken.is_empty() {
        return;
    }
    let started = Instant::now();
    let uploads = taken.iter().map(|(log, f)| upload(shard, log, f));
    let results = futures::future::join_all(uploads).await;

    let mut uploaded = Vec::new();
    for ((log, mut f), result) in taken.into_iter().zip(results) {
        match result {
            Ok(versions) => {
                f.versions = versions;
                uploaded.push((log, f));
            }
            Err(code) => log.flush_failed(f, code, None),
        }
    }
    // One transaction per MAX_COMMIT_PARTITIONS partitions: etcd limits the
    // operations of one transaction, and a flush may cover hundreds.
    while !uploaded.is_empty() {
        let rest = uploaded.split_off(uploaded.len().min(MAX_COMMIT_PARTITIONS));
        commit(shard, std::mem::replace(&mut uploaded, rest), started).await;
    }
}

/// Commits one group of uploaded segments and answers their producers.
async fn commit(shard: &Shard, uploaded: Vec<(Rc<PartitionLog>, Flushing)>, started: Instant) {
    let commits: Vec<SegmentCommit> = uploaded
        .iter()
        .map(|(log, f)| SegmentCommit {
            topic: log.topic.clone(),
            partition: log.partition,
            expected: f.expected,
            segment: f.record(),
            log_start: f.log_start,
        })
        .collect();
    let commit_started = Instant::now();
    let committed = shard.meta.commit(commits).await;
    shard.metrics.commit.record(commit_started.elapsed());
    match committed {
        Ok(states) => {
            let bytes: usize = uploaded.iter().map(|(_, f)| f.sealed.segment.len()).sum();
            shard
                .metrics
                .record_flush(uploaded.len(), bytes, started.elapsed());
            for ((log, f), state) in uploaded.into_iter().zip(states) {
                if log.is_mirrored() {
                    shard.cache_index(&log.topic, log.partition, &f.sealed);
                    let pieces = f.sealed.segment.clone();
                    log.committed(f, state);
                    // The arena is free again once the upload let go of it.
                    for piece in pieces.into_pieces() {
                        shard.pool.give(piece);
                    }
                } else {
                    shard.cache_segment(&log.topic, log.partition, &f.sealed);
                    log.committed(f, state);
                }
            }
        }
        Err(e) => {
            shard
                .metrics
                .commit_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(error = %e, partitions = uploaded.len(), "segment commit failed; producers get a retriable error");
            let code = ErrorCode::from(&e);
            for (log, f) in uploaded {
                if let MetaError::Fenced {
                    topic, partition, ..
                } = &e
                    && *topic == log.topic
                    && *partition == log.partition
                {
                    // Another broker owns the partition now. (The others in
                    // this transaction were not committed either; they keep
                    // their logs and retry. A second fenced one is found by
                    // its own next commit.)
                    log.flush_failed(f, code, None);
                    shard.drop_log(&log);
                    continue;
                }
                // Another writer moved the partition on: adopt its state.
                let fresh = match &e {
                    MetaError::Conflict { .. } => shard
                        .meta
                        .partition_state(&log.topic, log.partition)
                        .await
                        .ok(),
                    _ => None,
                };
                log.flush_failed(f, code, fresh);
            }
        }
    }
}

/// On a broker that locks its segments, the topic's own retention
/// (`kafscale.object.lock.retention.ms`), if it has one. A topic that cannot
/// be read fails the flush (to be retried) rather than lock for less.
async fn topic_retention(
    shard: &Shard,
    topic: &str,
) -> Result<Option<std::time::Duration>, ErrorCode> {
    if shard.store.object_lock().is_none() {
        return Ok(None);
    }
    let meta = shard.topic(topic).await.map_err(|e| ErrorCode::from(&e))?;
    let Some(ms) = meta.and_then(|t| t.config.get(keys::OBJECT_LOCK_RETENTION_MS).cloned()) else {
        return Ok(None);
    };
    match ms.trim().parse::<u64>() {
        Ok(ms) => Ok(Some(std::time::Duration::from_millis(ms))),
        // CreateTopics stores a plain number; anything else was written
        // by hand, and is not taken for "the broker's retention".
        Err(_) => {
            tracing::warn!(topic, value = %ms, "{}: not a number of ms; the topic's segments are not written", keys::OBJECT_LOCK_RETENTION_MS);
            Err(ErrorCode::KAFKA_STORAGE_ERROR)
        }
    }
}

/// Puts a segment's `.kfs` and `.index`; the versions they got in a
/// versioned bucket.
async fn upload(
    shard: &Shard,
    log: &PartitionLog,
    f: &Flushing,
) -> Result<Option<ObjectVersions>, ErrorCode> {
    let info = &f.sealed.info;
    let (kfs_key, index_key) = keys::segment_object(
        shard.store_namespace(),
        &log.topic,
        log.partition,
        info.base_offset,
    );
    let retain_for = topic_retention(shard, &log.topic).await?;
    let opts = keys::object_meta::put_options(info).retain_for(retain_for);
    // The .kfs goes first: an .index without its .kfs never exists. Both
    // are written only if absent, so a writer that lost the partition (its
    // upload still in flight) can never replace a segment its successor
    // committed under the same key.
    let put = || async {
        let started = Instant::now();
        let kfs = shard
            .store
            .put_chunks(&kfs_key, f.sealed.segment.pieces().to_vec(), &opts)
            .await?;
        shard.metrics.segment_put.record(started.elapsed());
        let index = shard
            .store
            .put(
                &index_key,
                f.sealed.index.clone(),
                &PutOptions::default().if_absent().retain_for(retain_for),
            )
            .await?;
        Ok::<_, kafscale_s3::StoreError>(match (kfs.version_id, index.version_id) {
            (Some(kfs), Some(index)) => Some(ObjectVersions { kfs, index }),
            _ => None,
        })
    };
    let mut result = put().await;
    if let Err(e) = &result
        && e.is_exists()
    {
        // Something is at our next offset. If the store still has the
        // partition where we left it (our epoch, our next offset), it is not
        // committed and never will be: left by a crash between upload and
        // commit, or by a previous owner our claim fenced off. Replace it
        // once. Otherwise we are the fenced writer: touch nothing.
        let (t, p) = (log.topic.clone(), log.partition);
        let still_ours = match shard.meta.call(move |m| m.partition_state(&t, p)).await {
            Ok(state) => state == f.expected && shard.cluster.holds(log.claim.as_ref()),
            Err(_) => false,
        };
        if !still_ours {
            tracing::warn!(key = %kfs_key, "another writer owns this partition now; not uploading");
            return Err(ErrorCode::NOT_LEADER_OR_FOLLOWER);
        }
        tracing::warn!(key = %kfs_key, "replacing an uncommitted segment left at this offset");
        shard
            .metrics
            .orphans_found
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        result = match shard
            .store
            .delete_many(&[kfs_key.clone(), index_key.clone()])
            .await
        {
            Ok(()) => put().await,
            Err(e) => Err(e),
        };
    }
    match result {
        Ok(versions) => {
            shard
                .metrics
                .add_upload(f.sealed.segment.len() + f.sealed.index.len());
            Ok(versions)
        }
        Err(e) => {
            shard
                .metrics
                .upload_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(key = %kfs_key, error = %e, "segment upload failed; producers get a retriable error");
            Err(ErrorCode::KAFKA_STORAGE_ERROR)
        }
    }
}
