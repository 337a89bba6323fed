//! Produce of record batches as they are (no re-encoding, no
//! recompression), plain or idempotent.
//!
//! Plain produce retries only answers that say nothing was written (a
//! leadership error); a lost connection or a timeout is returned, since the
//! batch may have been appended. The idempotent producer writes its producer
//! id, epoch and sequence numbers into each batch (CRC recomputed) and
//! retries any retriable failure with the same bytes: the broker drops a
//! duplicate of a sequence it already has, so retries cannot duplicate.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafscale_codec::batch::{stamp_base_offsets, stamp_producer};
use kafscale_codec::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use kafscale_codec::kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, ProduceRequest, ProducerId,
};

use crate::cluster::{Client, topic_name};
use crate::error::{ClientError, KafkaCode, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// No answer: the request is sent and forgotten.
    None,
    Leader,
    All,
}

impl Acks {
    fn wire(self) -> i16 {
        match self {
            Self::None => 0,
            Self::Leader => 1,
            Self::All => -1,
        }
    }
}

/// Where the broker put a produced records blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    pub base_offset: i64,
    /// -1 unless the topic uses LogAppendTime.
    pub log_append_time: i64,
    pub log_start_offset: i64,
}

impl Client {
    /// Appends `records` (one or more whole v2 batches) to a partition.
    /// `None` for `Acks::None`, which has no answer.
    pub async fn produce_raw(
        &self,
        topic: &str,
        partition: i32,
        records: Bytes,
        acks: Acks,
    ) -> Result<Option<Produced>> {
        let timeout = self.inner.config.request_timeout;
        let mut attempt = 0;
        loop {
            let (leader, _) = self.leader(topic, partition).await?;
            let r = self
                .produce_once(leader, topic, partition, records.clone(), acks, timeout)
                .await;
            match r {
                Err(e @ ClientError::Kafka { code, .. })
                    if code.is_stale_metadata() && attempt < self.inner.config.retries =>
                {
                    tracing::debug!(error = %e, "produce retried after a leadership error");
                    self.invalidate(topic);
                    glommio::timer::sleep(self.backoff(attempt)).await;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    async fn produce_once(
        &self,
        leader: i32,
        topic: &str,
        partition: i32,
        records: Bytes,
        acks: Acks,
        timeout: Duration,
    ) -> Result<Option<Produced>> {
        let conn = self.broker(leader).await?;
        let version = conn.version(ApiKey::Produce)?;
        let mut p = PartitionProduceData::default();
        p.index = partition;
        p.records = Some(records);
        let mut t = TopicProduceData::default();
        t.name = topic_name(topic);
        t.partition_data = vec![p];
        let mut req = ProduceRequest::default();
        req.acks = acks.wire();
        req.timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        req.topic_data = vec![t];
        if acks == Acks::None {
            conn.send_only(&req, version).await?;
            return Ok(None);
        }
        let r = conn.call_at(&req, version, timeout).await?;
        let p = r
            .responses
            .iter()
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == partition)
            .ok_or_else(|| {
                conn.protocol(
                    ApiKey::Produce,
                    version,
                    format!("no answer for {topic}-{partition}"),
                )
            })?;
        if p.error_code != 0 {
            return Err(conn.kafka(
                ApiKey::Produce,
                Some(format!("{topic}-{partition}")),
                p.error_code,
                p.error_message.as_ref(),
            ));
        }
        Ok(Some(Produced {
            base_offset: p.base_offset,
            log_append_time: p.log_append_time_ms,
            log_start_offset: p.log_start_offset,
        }))
    }
}

/// Batches stamped for one partition by an [`IdempotentProducer`].
#[derive(Debug, Clone)]
pub struct Stamped {
    pub topic: String,
    pub partition: i32,
    pub first_sequence: i32,
    pub records: Bytes,
}

/// An idempotent producer of raw batches. Send one batch at a time per
/// partition: a batch sent while an earlier one of the same partition is
/// still unanswered may arrive first and be refused as out of order.
#[derive(Debug)]
pub struct IdempotentProducer {
    client: Client,
    producer_id: i64,
    producer_epoch: i16,
    /// Next sequence number per (topic, partition).
    sequences: RefCell<HashMap<(String, i32), i32>>,
}

impl IdempotentProducer {
    /// Asks the cluster for a producer id (InitProducerId, no transaction).
    pub async fn new(client: &Client) -> Result<Self> {
        let mut attempt = 0;
        loop {
            let conn = client.any_broker().await?;
            let version = conn.version(ApiKey::InitProducerId)?;
            let mut req = InitProducerIdRequest::default();
            req.transactional_id = None;
            req.transaction_timeout_ms = -1;
            req.producer_id = ProducerId(-1);
            req.producer_epoch = -1;
            let r = conn.call_at(&req, version, Duration::ZERO).await;
            let r = r.and_then(|r| {
                if r.error_code == 0 {
                    Ok(r)
                } else {
                    Err(conn.kafka(ApiKey::InitProducerId, None, r.error_code, None))
                }
            });
            match r {
                Ok(r) => {
                    return Ok(Self {
                        client: client.clone(),
                        producer_id: r.producer_id.0,
                        producer_epoch: r.producer_epoch,
                        sequences: RefCell::default(),
                    });
                }
                Err(e) if e.is_retriable() && attempt < client.config().retries => {
                    glommio::timer::sleep(client.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn producer_id(&self) -> i64 {
        self.producer_id
    }

    pub fn producer_epoch(&self) -> i16 {
        self.producer_epoch
    }

    /// Stamps `records` with this producer's id, epoch and the partition's
    /// next sequence numbers, then produces them with acks=all, retrying
    /// until written once or a non-retriable error.
    pub async fn send(&self, topic: &str, partition: i32, records: &[u8]) -> Result<Produced> {
        let stamped = self.prepare(topic, partition, records)?;
        self.send_prepared(&stamped).await
    }

    /// Gives `records` the partition's next sequence numbers (taken now, as
    /// a producer numbers a batch when it closes it) and base offsets from 0,
    /// as a producer sends them (Apache Kafka refuses a produced batch whose
    /// base offset is not 0; batches read from a log have their own). The
    /// result can be sent, and sent again, with
    /// [`IdempotentProducer::send_prepared`].
    pub fn prepare(&self, topic: &str, partition: i32, records: &[u8]) -> Result<Stamped> {
        let key = (topic.to_owned(), partition);
        let mut sequences = self.sequences.borrow_mut();
        let first = sequences.get(&key).copied().unwrap_or(0);
        let mut buf = BytesMut::from(records);
        let next = stamp_producer(&mut buf, self.producer_id, self.producer_epoch, first).map_err(
            |e| ClientError::Config(format!("records to produce are not whole batches: {e}")),
        )?;
        sequences.insert(key, next);
        stamp_base_offsets(&mut buf, 0);
        Ok(Stamped {
            topic: topic.to_owned(),
            partition,
            first_sequence: first,
            records: buf.freeze(),
        })
    }

    /// Produces a prepared batch with acks=all. Sending the same batch
    /// again (a retry after a lost answer) does not write it twice.
    pub async fn send_prepared(&self, stamped: &Stamped) -> Result<Produced> {
        let c = &self.client;
        let (topic, partition) = (stamped.topic.as_str(), stamped.partition);
        let mut attempt = 0;
        loop {
            let r = async {
                let (leader, _) = c.leader(topic, partition).await?;
                c.produce_once(
                    leader,
                    topic,
                    partition,
                    stamped.records.clone(),
                    Acks::All,
                    c.config().request_timeout,
                )
                .await
            }
            .await;
            match r {
                Ok(p) => return Ok(p.unwrap_or_else(|| unreachable!("acks=all has an answer"))),
                // Already written by an attempt whose answer was lost.
                Err(ClientError::Kafka { code, .. })
                    if code == KafkaCode::DUPLICATE_SEQUENCE_NUMBER =>
                {
                    return Ok(Produced {
                        base_offset: -1,
                        log_append_time: -1,
                        log_start_offset: -1,
                    });
                }
                Err(e) if e.is_retriable() && attempt < c.config().retries => {
                    tracing::debug!(error = %e, attempt, "idempotent produce retried");
                    c.invalidate(topic);
                    glommio::timer::sleep(c.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
