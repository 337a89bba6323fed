//! The brokers' own topics (`crate::internal`), appended by shard 0:
//!
//! - `__kafscale_audit`: every line [`crate::audit`] writes on this broker,
//!   about every second (one record per line, value = the JSON object), so
//!   the trail lives in the bucket like any log and, with object lock, can
//!   no more be changed than any segment;
//! - `__kafscale_offsets`: every change of a committed group offset
//!   ([`crate::offset_history`]), about every `--offset-history-interval` (key = the
//!   group, value = the change, timestamp = when the metadata store took
//!   it), which `kafscale restore --groups` replays.
//!
//! Each record has the header `broker` = this broker's id. Each topic has
//! [`PARTITIONS`] partitions; each broker appends to the first one it owns
//! (in a cluster, brokers own different ones), so one broker's records stay
//! in order. A broker that stops appends what it holds before it drains.
//! Clients may read the topics (with DESCRIBE and READ on them when ACLs
//! are on) but not produce to them or delete them.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use glommio::channels::local_channel::{LocalReceiver, LocalSender};
use kafscale_codec::batch::BatchBuilder;

use super::api::produce;
use super::errors::ErrorCode;
use super::partition::ProducedRecords;
use super::shard::Shard;
use crate::internal::{AUDIT, INTERNAL, OFFSETS};
use crate::meta::MetaError;
use crate::meta::store::now_ms;
use crate::offset_history::Change;

/// Enough that every broker of a cluster very likely owns one (owners are
/// hashed: with 10 brokers one owns none of 64 with probability 0.1%).
const PARTITIONS: u32 = 64;
/// Records per batch at most.
const BATCH: usize = 1000;
/// How long a stopping broker waits for the changes of requests it had
/// read when it stopped, before it appends them too.
const LAST_CHANGES: Duration = Duration::from_millis(300);

/// Which of the topics this broker writes, and how often offset changes
/// are appended (`--offset-history-interval`: a broker killed with SIGKILL
/// loses at most this much of the history, never an offset, and a quiet
/// cluster's history grows by at most one small segment per this per
/// broker).
#[derive(Debug, Clone, Copy)]
pub struct Topics {
    pub audit: bool,
    pub offsets: bool,
    pub offsets_every: Duration,
}

/// A record to append: (timestamp, key, value).
type Row = (i64, Option<Vec<u8>>, Vec<u8>);

/// Appends kept audit lines about every second and offset changes about
/// every `--offset-history-interval` until the broker stops (shard 0 runs it). When
/// `stop` says the broker is stopping it appends what is left and answers
/// on `done` once that is durable (or cannot be written), before the shard
/// drains.
pub async fn run(shard: Rc<Shard>, topics: Topics, stop: LocalReceiver<()>, done: LocalSender<()>) {
    // The topics exist from the start, so their names are never a client's.
    if topics.audit {
        crate::audit::keep_for_topic();
    }
    if topics.offsets {
        crate::offset_history::keep_for_topic();
    }
    for (on, name, marker) in [
        (topics.audit, AUDIT, "audit"),
        (topics.offsets, OFFSETS, "offsets"),
    ] {
        if on && let Err(why) = ensure(&shard, name, marker).await {
            tracing::warn!("cannot create {name} yet (retried with the first record): {why}");
        }
    }
    let mut audit = Appender::new(AUDIT, "audit");
    let mut offsets = Appender::new(OFFSETS, "offsets");
    let mut offsets_at = Instant::now();
    let every = topics.offsets_every;
    loop {
        let stopping = futures_lite::future::or(
            async {
                glommio::timer::sleep(Duration::from_secs(1)).await;
                false
            },
            async { stop.recv().await.is_some() },
        )
        .await;
        // Stopping: the shards stop reading requests as this starts; what
        // the requests they had read change lands here within moments, so a
        // second round takes it.
        let rounds = if stopping { 2 } else { 1 };
        for round in 0..rounds {
            if round > 0 {
                glommio::timer::sleep(LAST_CHANGES).await;
            }
            if topics.audit {
                audit
                    .drain(&shard, stopping, audit_rows, crate::audit::give_back)
                    .await;
            }
            if topics.offsets && (stopping || offsets_at.elapsed() >= every) {
                offsets_at = Instant::now();
                offsets
                    .drain(
                        &shard,
                        stopping,
                        offset_rows,
                        crate::offset_history::give_back,
                    )
                    .await;
            }
        }
        if stopping {
            let _ignored = done.try_send(());
            return;
        }
    }
}

/// Up to a batch of audit lines as records (value = the line).
fn audit_rows() -> (Vec<Row>, crate::audit::Taken, u64) {
    let (lines, dropped) = crate::audit::take(BATCH);
    let now = now_ms();
    let rows = lines
        .lines()
        .map(|l| (now, None, l.as_bytes().to_vec()))
        .collect();
    (rows, lines, dropped)
}

/// Up to a batch of offset changes as records.
fn offset_rows() -> (Vec<Row>, Vec<crate::offset_history::Entry>, u64) {
    let (entries, dropped) = crate::offset_history::take(BATCH);
    let rows = entries
        .iter()
        .map(|e| {
            let value = serde_json::to_vec::<Change>(&e.change).unwrap_or_default();
            (e.time_ms, Some(e.group.as_bytes().to_vec()), value)
        })
        .collect();
    (rows, entries, dropped)
}

/// One topic's appending, and whether it is failing (logged once).
struct Appender {
    topic: &'static str,
    marker: &'static str,
    failing: bool,
}

impl Appender {
    fn new(topic: &'static str, marker: &'static str) -> Self {
        Self {
            topic,
            marker,
            failing: false,
        }
    }

    /// Appends what `take` gives, a batch at a time, until it gives
    /// nothing or an append fails (then `give_back` keeps it for the next
    /// round).
    async fn drain<T>(
        &mut self,
        shard: &Rc<Shard>,
        stopping: bool,
        take: fn() -> (Vec<Row>, T, u64),
        give_back: fn(T),
    ) {
        let topic = self.topic;
        loop {
            let (rows, taken, dropped) = take();
            if dropped > 0 {
                tracing::warn!(dropped, "records dropped before they reached {topic}");
            }
            if rows.is_empty() {
                return;
            }
            match append(shard, topic, self.marker, &rows).await {
                Ok(()) => {
                    if self.failing {
                        tracing::info!("records reach {topic} again");
                    }
                    self.failing = false;
                }
                Err(why) => {
                    if !self.failing || stopping {
                        tracing::warn!("cannot append records to {topic} (kept, retried): {why}");
                    }
                    self.failing = true;
                    give_back(taken);
                    return;
                }
            }
        }
    }
}

/// The topic, created if it is not there.
async fn ensure(
    shard: &Rc<Shard>,
    name: &'static str,
    marker: &str,
) -> Result<crate::meta::TopicMeta, String> {
    let topic = match shard.topic(name).await.map_err(|e| e.to_string())? {
        Some(t) => t,
        None => {
            let config = BTreeMap::from([(INTERNAL.to_owned(), marker.to_owned())]);
            let created = shard
                .meta
                .call(move |m| m.create_topic(name, PARTITIONS, config))
                .await;
            match created {
                Ok(t) => t,
                Err(MetaError::TopicExists { .. }) => shard
                    .topic(name)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("the topic exists and does not")?,
                Err(e) => return Err(format!("cannot create it: {e}")),
            }
        }
    };
    if !topic.config.contains_key(INTERNAL) {
        return Err(format!(
            "a topic {name} exists that the brokers did not make"
        ));
    }
    Ok(topic)
}

/// Appends `rows` as one batch and waits until it is durable.
async fn append(
    shard: &Rc<Shard>,
    name: &'static str,
    marker: &str,
    rows: &[Row],
) -> Result<(), String> {
    let topic = ensure(shard, name, marker).await?;
    let partition = (0..topic.partitions)
        .find(|&p| shard.cluster.prefers_me(name, p))
        .ok_or("this broker owns none of its partitions now")?;
    let id = shard.cluster.id().to_string();
    let base = rows.iter().map(|r| r.0).min().unwrap_or_else(now_ms);
    let mut batch = BatchBuilder::new(0, base);
    for (ts, key, value) in rows {
        batch.push_at(
            *ts,
            key.as_deref(),
            Some(value),
            &[("broker", Some(id.as_bytes()))],
        );
    }
    let bytes = BytesMut::from(&batch.finish()[..]);
    let len = bytes.len();
    let records = ProducedRecords::new(bytes, len);
    let appended = shard
        .on_owner(name, partition, move |owner| {
            produce::append_internal(owner, name.to_owned(), partition, records)
        })
        .await
        .unwrap_or(Err(ErrorCode::UNKNOWN_SERVER_ERROR));
    match produce::durable(appended).await {
        (code, _, _) if code == ErrorCode::NONE => Ok(()),
        (code, _, _) => Err(format!("partition {partition}: error {}", code.code())),
    }
}
