//! The audit trail as records: every line [`crate::audit`] writes on this
//! broker is also appended, about every second, to the read-only topic
//! `__kafscale_audit` (one record per line, value = the JSON object, header
//! `broker` = this broker's id), so the trail lives in the bucket like any
//! log and, with object lock, can no more be changed than any segment. A
//! broker that stops appends its last lines before it drains.
//!
//! The topic has [`PARTITIONS`] partitions; each broker appends to the
//! first one it owns (in a cluster, brokers own different ones), so one
//! broker's records stay in order. Clients may read it (with DESCRIBE and
//! READ on it when ACLs are on) but not produce to it or delete it.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use glommio::channels::local_channel::LocalReceiver;
use kafscale_codec::batch::BatchBuilder;

use super::api::produce;
use super::partition::ProducedRecords;
use super::shard::Shard;
use crate::meta::MetaError;
use crate::meta::store::now_ms;

pub use crate::audit::{INTERNAL, TOPIC};
/// Enough that every broker of a cluster very likely owns one (owners are
/// hashed: with 10 brokers one owns none of 64 with probability 0.1%).
const PARTITIONS: u32 = 64;
/// Records per batch at most.
const BATCH: usize = 1000;

/// Appends the kept lines about every second until the broker stops
/// (shard 0 runs it). When `stop` says the broker is stopping it appends
/// what is left, also the lines of that last second, and answers on `done`
/// once they are durable (or cannot be written), before the shard drains.
pub async fn run(
    shard: Rc<Shard>,
    stop: LocalReceiver<()>,
    done: glommio::channels::local_channel::LocalSender<()>,
) {
    crate::audit::keep_for_topic();
    // The topic exists from the start, so its name is never a client's.
    if let Err(why) = ensure(&shard).await {
        tracing::warn!("cannot create {TOPIC} yet (retried with the first record): {why}");
    }
    let mut failing = false;
    loop {
        let stopping = futures_lite::future::or(
            async {
                glommio::timer::sleep(Duration::from_secs(1)).await;
                false
            },
            async { stop.recv().await.is_some() },
        )
        .await;
        loop {
            let (lines, dropped) = crate::audit::take(BATCH);
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "audit lines dropped before they reached {TOPIC} (they are in the log)"
                );
            }
            if lines.is_empty() {
                break;
            }
            match append(&shard, &lines).await {
                Ok(()) => {
                    if failing {
                        tracing::info!("audit records reach {TOPIC} again");
                    }
                    failing = false;
                }
                Err(why) => {
                    if !failing || stopping {
                        tracing::warn!(
                            "cannot append audit records to {TOPIC} (kept, retried): {why}"
                        );
                    }
                    failing = true;
                    crate::audit::give_back(lines);
                    break;
                }
            }
        }
        if stopping {
            let _ignored = done.try_send(());
            return;
        }
    }
}

/// The topic, created if it is not there.
async fn ensure(shard: &Rc<Shard>) -> Result<crate::meta::TopicMeta, String> {
    let topic = match shard.topic(TOPIC).await.map_err(|e| e.to_string())? {
        Some(t) => t,
        None => {
            let config = BTreeMap::from([(INTERNAL.to_owned(), "audit".to_owned())]);
            let created = shard
                .meta
                .call(move |m| m.create_topic(TOPIC, PARTITIONS, config))
                .await;
            match created {
                Ok(t) => t,
                Err(MetaError::TopicExists { .. }) => shard
                    .topic(TOPIC)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("the topic exists and does not")?,
                Err(e) => return Err(format!("cannot create it: {e}")),
            }
        }
    };
    if !topic.config.contains_key(INTERNAL) {
        return Err(format!(
            "a topic {TOPIC} exists that the brokers did not make"
        ));
    }
    Ok(topic)
}

/// Appends `lines` as one batch and waits until it is durable.
async fn append(shard: &Rc<Shard>, lines: &crate::audit::Taken) -> Result<(), String> {
    let topic = ensure(shard).await?;
    let partition = (0..topic.partitions)
        .find(|&p| shard.cluster.prefers_me(TOPIC, p))
        .ok_or("this broker owns none of its partitions now")?;
    let id = shard.cluster.id().to_string();
    let mut batch = BatchBuilder::new(0, now_ms());
    for l in lines.lines() {
        batch.push(None, Some(l.as_bytes()), &[("broker", Some(id.as_bytes()))]);
    }
    let bytes = BytesMut::from(&batch.finish()[..]);
    let len = bytes.len();
    let records = ProducedRecords::new(bytes, len);
    let appended = shard
        .on_owner(TOPIC, partition, move |owner| {
            produce::append_internal(owner, TOPIC.to_owned(), partition, records)
        })
        .await
        .unwrap_or(Err(super::errors::ErrorCode::UNKNOWN_SERVER_ERROR));
    match produce::durable(appended).await {
        (code, _, _) if code == super::errors::ErrorCode::NONE => Ok(()),
        (code, _, _) => Err(format!("partition {partition}: error {}", code.code())),
    }
}
