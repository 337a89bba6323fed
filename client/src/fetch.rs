//! Fetch that returns record batches as they are on the wire: each batch a
//! `Bytes` slice of the response frame (no copy, no decompression), with the
//! partition's offsets and aborted transactions.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use kafscale_codec::batch::{Batches, RecordBatch};
use kafscale_codec::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafscale_codec::kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse};
use kafscale_codec::kafka_protocol::protocol::Decodable;

use crate::cluster::{Client, topic_name};
use crate::error::{ClientError, KafkaCode, Result};
use crate::offsets::OffsetSpec;

/// Kafka's isolation levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    #[default]
    ReadUncommitted,
    ReadCommitted,
}

/// One partition to fetch from, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSpec {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Most bytes of this partition in one answer (at least one whole batch
    /// always comes, as Kafka guarantees).
    pub max_bytes: i32,
}

impl FetchSpec {
    pub fn new(topic: &str, partition: i32, offset: i64) -> Self {
        Self {
            topic: topic.to_owned(),
            partition,
            offset,
            max_bytes: 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub max_wait: Duration,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub isolation: Isolation,
    /// Check each batch's CRC32C before handing it out.
    pub verify_crc: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 50 * 1024 * 1024,
            isolation: Isolation::ReadUncommitted,
            verify_crc: true,
        }
    }
}

/// A transaction the broker reports aborted within the fetched range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
}

/// What a fetch returned for one partition.
#[derive(Debug, Clone)]
pub struct FetchedPartition {
    pub topic: String,
    pub partition: i32,
    pub high_watermark: i64,
    /// -1 when the broker does not report one.
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub aborted: Vec<AbortedTxn>,
    /// Whole batches in log order, each a slice of the response frame. The
    /// first may start before the requested offset (Kafka returns the whole
    /// batch holding it).
    pub batches: Vec<RecordBatch>,
    /// Bytes of a partial batch at the end of the answer, dropped here (the
    /// next fetch from `next_offset` gets it whole).
    pub truncated_tail: usize,
    /// Where the next fetch continues: after the last whole batch, or the
    /// requested offset when none came.
    pub next_offset: i64,
}

impl FetchedPartition {
    pub fn bytes(&self) -> usize {
        self.batches.iter().map(|b| b.len()).sum()
    }
}

impl Client {
    /// Fetches one partition from its leader, retrying leadership errors.
    pub async fn fetch_partition(
        &self,
        spec: &FetchSpec,
        opts: &FetchOptions,
    ) -> Result<FetchedPartition> {
        let mut out = self.fetch(std::slice::from_ref(spec), opts).await;
        out.pop()
            .unwrap_or_else(|| unreachable!("one answer per requested partition"))
    }

    /// Fetches several partitions: one request per leader, sent at once.
    /// Partitions that meet a leadership error or a lost connection are
    /// retried (metadata refreshed, jittered backoff) up to the configured
    /// number of retries; the answer has one result per spec, in order.
    pub async fn fetch(
        &self,
        specs: &[FetchSpec],
        opts: &FetchOptions,
    ) -> Vec<Result<FetchedPartition>> {
        let mut results: Vec<Option<Result<FetchedPartition>>> =
            (0..specs.len()).map(|_| None).collect();
        let mut todo: Vec<usize> = (0..specs.len()).collect();
        let mut attempt = 0;
        loop {
            let mut by_leader: HashMap<i32, Vec<(usize, i32)>> = HashMap::new();
            let mut retry = Vec::new();
            for &i in &todo {
                let s = &specs[i];
                match self.leader(&s.topic, s.partition).await {
                    Ok((leader, epoch)) => by_leader.entry(leader).or_default().push((i, epoch)),
                    Err(e) => retry.push((i, e)),
                }
            }
            let sent = by_leader
                .into_iter()
                .map(|(leader, parts)| self.fetch_from(leader, parts, specs, opts));
            for outcome in join_all(sent).await {
                for (i, r) in outcome {
                    match r {
                        Err(e) if e.is_retriable() => retry.push((i, e)),
                        r => results[i] = Some(r),
                    }
                }
            }
            if retry.is_empty() || attempt >= self.inner.config.retries {
                for (i, e) in retry {
                    results[i] = Some(Err(e));
                }
                break;
            }
            for (i, e) in &retry {
                tracing::debug!(error = %e, topic = %specs[*i].topic, "fetch retried");
                self.invalidate(&specs[*i].topic);
            }
            glommio::timer::sleep(self.backoff(attempt)).await;
            attempt += 1;
            todo = retry.into_iter().map(|(i, _)| i).collect();
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| unreachable!("every spec was answered")))
            .collect()
    }

    async fn fetch_from(
        &self,
        leader: i32,
        parts: Vec<(usize, i32)>,
        specs: &[FetchSpec],
        opts: &FetchOptions,
    ) -> Vec<(usize, Result<FetchedPartition>)> {
        // A failure of the whole request is every partition's answer.
        let all_fail = |e: ClientError, parts: &[(usize, i32)]| {
            parts
                .iter()
                .map(|&(i, _)| (i, Err(e.clone())))
                .collect::<Vec<_>>()
        };
        let conn = match self.broker(leader).await {
            Ok(c) => c,
            Err(e) => return all_fail(e, &parts),
        };
        let version = match conn.version(ApiKey::Fetch) {
            Ok(v) => v,
            Err(e) => return all_fail(e, &parts),
        };
        let mut topics: Vec<FetchTopic> = Vec::new();
        for &(i, epoch) in &parts {
            let s = &specs[i];
            let mut p = FetchPartition::default();
            p.partition = s.partition;
            p.fetch_offset = s.offset;
            p.partition_max_bytes = s.max_bytes;
            p.current_leader_epoch = epoch;
            p.log_start_offset = -1;
            match topics.iter_mut().find(|t| t.topic.0.as_str() == s.topic) {
                Some(t) => t.partitions.push(p),
                None => {
                    let mut t = FetchTopic::default();
                    t.topic = topic_name(&s.topic);
                    t.partitions.push(p);
                    topics.push(t);
                }
            }
        }
        let mut req = FetchRequest::default();
        req.replica_id = BrokerId(-1);
        req.max_wait_ms = opts.max_wait.as_millis().min(i32::MAX as u128) as i32;
        req.min_bytes = opts.min_bytes;
        req.max_bytes = opts.max_bytes;
        req.isolation_level = match opts.isolation {
            Isolation::ReadUncommitted => 0,
            Isolation::ReadCommitted => 1,
        };
        req.session_id = 0;
        req.session_epoch = -1; // no fetch session: every fetch is whole
        req.topics = topics;
        let mut body = match conn.call_raw(&req, version, opts.max_wait).await {
            Ok(b) => b,
            Err(e) => return all_fail(e, &parts),
        };
        let resp = match FetchResponse::decode(&mut body, version) {
            Ok(r) => r,
            Err(e) => return all_fail(conn.protocol(ApiKey::Fetch, version, e), &parts),
        };
        if resp.error_code != 0 {
            let e = conn.kafka(ApiKey::Fetch, None, resp.error_code, None);
            return all_fail(e, &parts);
        }
        let mut out = Vec::with_capacity(parts.len());
        for &(i, _) in &parts {
            let s = &specs[i];
            let data = resp
                .responses
                .iter()
                .filter(|t| t.topic.0.as_str() == s.topic)
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == s.partition);
            let resource = Some(format!("{}-{}", s.topic, s.partition));
            let r = match data {
                None => Err(conn.protocol(
                    ApiKey::Fetch,
                    version,
                    format!("no answer for {}-{}", s.topic, s.partition),
                )),
                Some(p) if p.error_code == KafkaCode::OFFSET_OUT_OF_RANGE.0 => {
                    Err(self.out_of_range(s).await)
                }
                Some(p) if p.error_code != 0 => {
                    Err(conn.kafka(ApiKey::Fetch, resource, p.error_code, None))
                }
                Some(p) => split_batches(p.records.clone().unwrap_or_default(), opts.verify_crc)
                    .map(|(batches, truncated_tail)| FetchedPartition {
                        topic: s.topic.clone(),
                        partition: s.partition,
                        high_watermark: p.high_watermark,
                        last_stable_offset: p.last_stable_offset,
                        log_start_offset: p.log_start_offset,
                        aborted: p
                            .aborted_transactions
                            .iter()
                            .flatten()
                            .map(|a| AbortedTxn {
                                producer_id: a.producer_id.0,
                                first_offset: a.first_offset,
                            })
                            .collect(),
                        next_offset: batches
                            .last()
                            .map_or(s.offset, |b| (b.last_offset() + 1).max(s.offset)),
                        batches,
                        truncated_tail,
                    })
                    .map_err(|reason| {
                        conn.protocol(
                            ApiKey::Fetch,
                            version,
                            format!(
                                "{}-{} at offset {}: {reason}",
                                s.topic, s.partition, s.offset
                            ),
                        )
                    }),
            };
            out.push((i, r));
        }
        out
    }

    /// OFFSET_OUT_OF_RANGE, with the partition's current range looked up.
    async fn out_of_range(&self, s: &FetchSpec) -> ClientError {
        let start = self
            .list_offset(&s.topic, s.partition, OffsetSpec::Earliest)
            .await;
        let end = self
            .list_offset(&s.topic, s.partition, OffsetSpec::Latest)
            .await;
        match (start, end) {
            (Ok(start), Ok(end)) => ClientError::OffsetOutOfRange {
                topic: s.topic.clone(),
                partition: s.partition,
                requested: s.offset,
                log_start: start.offset,
                high_watermark: end.offset,
            },
            (Err(e), _) | (_, Err(e)) => e,
        }
    }
}

/// The whole batches of a fetched records blob and the length of a partial
/// tail (dropped). A malformed or corrupt batch before the tail is an error.
pub fn split_batches(
    records: Bytes,
    verify_crc: bool,
) -> std::result::Result<(Vec<RecordBatch>, usize), String> {
    let total = records.len();
    let mut it = Batches::new(records).allow_partial_tail();
    if verify_crc {
        it = it.validated();
    }
    let mut batches = Vec::new();
    for b in it.by_ref() {
        batches.push(b.map_err(|e| e.to_string())?);
    }
    Ok((batches, total - it.position()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafscale_codec::batch::BatchBuilder;

    #[test]
    fn a_partial_last_batch_is_dropped_and_counted() {
        let mut b1 = BatchBuilder::new(0, 1);
        b1.push(Some(b"k"), Some(b"v"), &[]);
        let mut b2 = BatchBuilder::new(1, 1);
        b2.push(Some(b"k2"), Some(b"v2"), &[]);
        let (b1, b2) = (b1.finish(), b2.finish());
        let mut blob = b1.to_vec();
        blob.extend_from_slice(&b2[..b2.len() - 5]);
        let blob = Bytes::from(blob);
        let (batches, tail) = split_batches(blob.clone(), true).unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(tail, b2.len() - 5);
        assert_eq!(batches[0].as_bytes().as_ptr(), blob.as_ptr(), "no copy");

        let mut corrupt = b1.to_vec();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        let err = split_batches(Bytes::from(corrupt.clone()), true).unwrap_err();
        assert!(err.contains("CRC"), "{err}");
        assert!(split_batches(Bytes::from(corrupt), false).is_ok());
    }
}
