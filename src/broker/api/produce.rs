//! Produce (v3-v11): batches go to each partition's owner shard, have their
//! records counted (compressed ones decompressed in a stream for it, not
//! kept), are appended as they came, and are answered once durable.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::{Buf, Bytes, BytesMut};
use futures::channel::oneshot;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafscale_codec::header::RequestHeader;
use kafscale_codec::produce::parse_produce;

use super::{decode, respond};
use crate::auth::acl::{Operation, ResourceType};
use crate::broker::conn::{Caller, Reply};
use crate::broker::errors::ErrorCode;
use crate::broker::partition::{Appended, Durable, ProducedRecords};
use crate::broker::shard::Shard;

/// A produce request whose records are separately owned pieces of the
/// request's buffer (no copy), so a partition can write offsets into them
/// and keep large ones as segment pieces.
pub struct Carved {
    acks: i16,
    transactional: bool,
    topics: Vec<(String, Vec<PartitionRecords>)>,
}

/// A partition index and its records (`None`: null records).
type PartitionRecords = (i32, Option<ProducedRecords>);

/// Splits a produce frame (body at `body_at`) into its records pieces; also
/// returns the rest of the buffer. Anything else, or a body this reader
/// refuses, comes back untouched for the ordinary decoder (which then gives
/// Kafka's answer to it).
pub fn carve(
    mut frame: BytesMut,
    header: &RequestHeader,
    body_at: usize,
) -> Result<(Carved, BytesMut), BytesMut> {
    if header.api_key != ApiKey::Produce as i16 || !super::supported_version(header) {
        return Err(frame);
    }
    let Ok(layout) = parse_produce(&frame[body_at..], header.api_version) else {
        return Err(frame);
    };
    // Ranges ascend and do not overlap: cut them off the front in turn.
    let allocation = frame.capacity();
    let mut cut = 0;
    let topics = layout
        .topics
        .into_iter()
        .map(|t| {
            let parts = t
                .partitions
                .into_iter()
                .map(|p| {
                    let records = p.records.map(|r| {
                        frame.advance(body_at + r.start - cut);
                        cut = body_at + r.end;
                        ProducedRecords::new(frame.split_to(r.len()), allocation)
                    });
                    (p.index, records)
                })
                .collect();
            (t.name, parts)
        })
        .collect();
    let mut carved = Carved {
        acks: layout.acks,
        transactional: layout.transactional_id.is_some(),
        topics,
    };
    carved.share_decompression();
    Ok((carved, frame))
}

impl Carved {
    /// Gives each partition its share of what the request may decompress
    /// to check its records.
    fn share_decompression(&mut self) {
        let records = || {
            self.topics
                .iter()
                .flat_map(|(_, parts)| parts.iter().filter_map(|(_, r)| r.as_ref()))
        };
        let total: usize = records().map(ProducedRecords::len).sum();
        for (_, parts) in &mut self.topics {
            for r in parts.iter_mut().filter_map(|(_, r)| r.as_mut()) {
                r.share_of(total);
            }
        }
    }

    /// The ordinary decoder's result in the same shape (records copied).
    fn decode(body: Bytes, version: i16) -> Result<Self, String> {
        let req: ProduceRequest = decode(body, version)?;
        let mut carved = Self {
            acks: req.acks,
            transactional: req.transactional_id.is_some(),
            topics: req
                .topic_data
                .into_iter()
                .map(|t| {
                    let parts = t
                        .partition_data
                        .into_iter()
                        .map(|p| {
                            let records = p
                                .records
                                .map(|r| ProducedRecords::new(BytesMut::from(&r[..]), r.len()));
                            (p.index, records)
                        })
                        .collect();
                    (t.name.0.to_string(), parts)
                })
                .collect(),
        };
        carved.share_decompression();
        Ok(carved)
    }
}

/// What the owner answers right after appending: the base offset and, unless
/// the batches were a retry of durable ones, when they become durable.
type AppendResult = Result<(i64, i64, Option<Durable>), ErrorCode>;

/// Appends on the owner shard. Returns (base offset, log start, durability).
pub(crate) async fn append_on_owner(
    shard: Rc<Shard>,
    topic: String,
    partition: u32,
    records: ProducedRecords,
) -> AppendResult {
    // Stopping: the partition moves (in a cluster) or comes back with this
    // broker; the producer retries either way. Checked before loading (no
    // claim just before leaving) and again after it (the load awaits).
    if shard.draining() {
        return Err(ErrorCode::NOT_LEADER_OR_FOLLOWER);
    }
    let log = shard.log(&topic, partition).await?;
    if shard.draining() {
        return Err(ErrorCode::NOT_LEADER_OR_FOLLOWER);
    }
    append_to(&shard, &log, records)
}

/// Appends the broker's own records on the owner shard, also while it
/// stops (the audit trail's last lines are written during the drain).
pub(crate) async fn append_internal(
    shard: Rc<Shard>,
    topic: String,
    partition: u32,
    records: ProducedRecords,
) -> AppendResult {
    let log = shard.log(&topic, partition).await?;
    append_to(&shard, &log, records)
}

fn append_to(
    shard: &Shard,
    log: &crate::broker::partition::PartitionLog,
    records: ProducedRecords,
) -> AppendResult {
    let appended = log.append(records, shard.args.segment_bytes.0 as usize, &shard.pool);
    shard.wake_flusher();
    match appended? {
        Appended::Duplicate { base_offset } => Ok((base_offset, log.log_start_offset(), None)),
        Appended::Pending {
            base_offset,
            durable,
        } => Ok((base_offset, log.log_start_offset(), Some(durable))),
    }
}

/// Waits until the appended records are durable. Returns (error, base offset, log start).
pub(crate) async fn durable(appended: AppendResult) -> (ErrorCode, i64, i64) {
    match appended {
        Err(code) => (code, -1, -1),
        Ok((base, start, None)) => (ErrorCode::NONE, base, start),
        Ok((base, start, Some(rx))) => match rx.await {
            Ok(Ok(())) => (ErrorCode::NONE, base, start),
            Ok(Err(code)) => (code, -1, -1),
            Err(_) => (ErrorCode::NOT_LEADER_OR_FOLLOWER, -1, -1),
        },
    }
}

/// Keeps the produce requests of one connection in order: each appends only
/// after the previous one has appended (not after it is durable), as Kafka
/// processes a connection's requests in order.
pub struct Order {
    pub after: Option<oneshot::Receiver<()>>,
    pub appended: oneshot::Sender<()>,
}

pub async fn handle(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
    carved: Option<Carved>,
    order: Order,
) -> Result<Reply, String> {
    let started = std::time::Instant::now();
    let req = match carved {
        Some(c) => c,
        None => Carved::decode(body, header.api_version)?,
    };
    let acks = req.acks;
    let refuse_all = if !matches!(acks, -1..=1) {
        Some(ErrorCode::INVALID_REQUIRED_ACKS)
    } else if req.transactional {
        // Transactions (control batches, markers) are not implemented.
        Some(ErrorCode::INVALID_REQUEST)
    } else if shard.draining() {
        // This shard is stopping and may already have reported that every
        // produce it read is answered: route nothing more to owners that
        // are not draining yet.
        Some(ErrorCode::NOT_LEADER_OR_FOLLOWER)
    } else {
        None
    };

    // Each partition is either answered now (an error) or by its owner.
    enum Slot {
        Now(ErrorCode),
        /// Refused with a message: a read-only mirror copy.
        Refused(ErrorCode, Rc<str>),
        Owner(usize),
    }
    let mut slots = Vec::new();
    let mut owners = Vec::new();
    let mut resp = ProduceResponse::default();
    for (ti, (name, partitions)) in req.topics.into_iter().enumerate() {
        let mut tr = TopicProduceResponse::default();
        tr.name = TopicName(StrBytes::from_string(name.clone()));
        resp.responses.push(tr);
        // As in Kafka, a topic the caller may not write to is refused
        // before anything tells whether it exists.
        let denied = refuse_all.is_none()
            && !shard
                .authorizer
                .authorize(caller, Operation::Write, ResourceType::Topic, &name);
        let known = match refuse_all {
            Some(_) => None,
            None if denied => None,
            None => shard.topic(&name).await.ok().flatten(),
        };
        // A mirror's copy takes records only from its job (as Kafka refuses
        // produce to internal topics: INVALID_TOPIC_EXCEPTION).
        let read_only: Option<Rc<str>> = known.as_ref().and_then(|m| {
            if m.config.contains_key(crate::internal::INTERNAL) {
                let what = crate::internal::describe(&name);
                return Some(format!("topic {name} is {what}; only they write to it").into());
            }
            if let Some(of) = m.config.get(crate::restore::topic_config::OF) {
                return Some(
                    format!(
                        "topic {name} is a read-only restore of {of} ({})",
                        m.config
                            .get(crate::restore::topic_config::AT)
                            .map_or("?", |s| s.as_str())
                    )
                    .into(),
                );
            }
            let job = m.config.get(crate::mirror::topic_config::JOB)?;
            let source = m.config.get(crate::mirror::topic_config::SOURCE);
            let source_topic = m.config.get(crate::mirror::topic_config::SOURCE_TOPIC);
            Some(
                format!(
                    "topic {name} is a read-only copy of {} from source {} (mirror job {job}); remove the job to make it writable",
                    source_topic.map_or("?", |s| s.as_str()),
                    source.map_or("?", |s| s.as_str()),
                )
                .into(),
            )
        });
        for (index, records) in partitions {
            let exists = known
                .as_ref()
                .is_some_and(|m| index >= 0 && (index as u32) < m.partitions);
            let refused = refuse_all
                .or(denied.then_some(ErrorCode::TOPIC_AUTHORIZATION_FAILED))
                .or((!exists).then_some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION));
            let slot = match (refused, records) {
                (Some(code), _) => Slot::Now(code),
                (None, _) if read_only.is_some() => Slot::Refused(
                    ErrorCode::INVALID_TOPIC_EXCEPTION,
                    read_only.clone().unwrap_or_default(),
                ),
                (None, Some(records)) if !records.is_empty() => {
                    shard
                        .metrics
                        .produce_records_bytes
                        .fetch_add(records.len() as u64, Relaxed);
                    let (s, topic, part) = (shard.clone(), name.clone(), index as u32);
                    owners.push(async move {
                        let route = topic.clone();
                        s.on_owner(&route, part, move |owner| {
                            append_on_owner(owner, topic, part, records)
                        })
                        .await
                        .unwrap_or(Err(ErrorCode::UNKNOWN_SERVER_ERROR))
                    });
                    Slot::Owner(owners.len() - 1)
                }
                (None, _) => Slot::Now(ErrorCode::CORRUPT_MESSAGE),
            };
            slots.push((ti, index, slot));
        }
    }
    // Phase 1, in connection order: append on every owner.
    if let Some(after) = order.after {
        let _ignored = after.await; // Err: the previous request failed early; it appended nothing.
    }
    let appended = futures::future::join_all(owners).await;
    let _ignored = order.appended.send(());
    // Phase 2, concurrently with later requests: wait until durable.
    let results = futures::future::join_all(appended.into_iter().map(durable)).await;
    for (ti, index, slot) in slots {
        let (code, base, start) = match &slot {
            Slot::Now(code) | Slot::Refused(code, _) => (*code, -1, -1),
            Slot::Owner(i) => results[*i],
        };
        if code != ErrorCode::NONE {
            shard.metrics.produce_errors.fetch_add(1, Relaxed);
        }
        let mut pr = PartitionProduceResponse::default();
        pr.index = index;
        pr.error_code = code.code();
        pr.base_offset = base;
        pr.log_append_time_ms = -1;
        if header.api_version >= 5 {
            pr.log_start_offset = start;
        }
        if let Slot::Refused(_, why) = &slot {
            // Carried from v8 on; older clients get the code alone.
            pr.error_message = Some(StrBytes::from_string(why.to_string()));
        }
        resp.responses[ti].partition_responses.push(pr);
    }
    if acks == 0 {
        return Ok(Reply::Nothing);
    }
    shard.metrics.produce.record(started.elapsed());
    respond(header, &resp)
}
