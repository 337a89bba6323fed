//! What a restore reads from the metadata store (a topic's committed log)
//! and writes to it (the restored topic, whole, in one step).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::kv::{Compare, Op, Txn};
use super::store::{MetaStore, chunks, new_topic_id, now_ms, to_json};
use super::{
    BrokerInfo, CommittedOffset, MetaError, PartitionState, SegmentRecord, TopicMeta, keys,
};

/// One partition's committed log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSnapshot {
    pub partition: u32,
    pub state: PartitionState,
    /// Committed segments below `state.next_offset`, in offset order.
    pub segments: Vec<SegmentRecord>,
}

/// A topic's committed log, and the brokers that serve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSnapshot {
    pub topic: TopicMeta,
    pub partitions: Vec<PartitionSnapshot>,
    pub brokers: Vec<BrokerInfo>,
}

impl MetaStore {
    /// The topic's committed log, or `None` when there is no such topic.
    pub fn topic_snapshot(&mut self, name: &str) -> Result<Option<TopicSnapshot>, MetaError> {
        let Some(topic) = self.topic(name)? else {
            return Ok(None);
        };
        let mut partitions = Vec::with_capacity(topic.partitions as usize);
        for p in 0..topic.partitions {
            let state = self.partition_state(name, p)?;
            // A commit between the two reads adds a segment past the state
            // read: not part of this snapshot.
            let segments = self
                .segments(name, p)?
                .into_iter()
                .filter(|s| s.last_offset < state.next_offset)
                .collect();
            partitions.push(PartitionSnapshot {
                partition: p,
                state,
                segments,
            });
        }
        let brokers = self.brokers()?;
        Ok(Some(TopicSnapshot {
            topic,
            partitions,
            brokers,
        }))
    }

    /// Creates topic `name` with the given partitions' states and committed
    /// segments (objects already in the bucket). As in `create_topic`, the
    /// partitions go first in transactions guarded by the topic's absence and
    /// the topic key last, which makes the whole topic visible at once.
    pub fn create_restored_topic(
        &mut self,
        name: &str,
        config: BTreeMap<String, String>,
        partitions: &[PartitionSnapshot],
        group_offsets: &[crate::restore::RestoredGroupOffset],
    ) -> Result<TopicMeta, MetaError> {
        crate::internal::guard(name, false, "restore into")?;
        let ns = self.namespace().to_owned();
        let topic_key = keys::topic(&ns, name);
        let meta = TopicMeta {
            name: name.to_owned(),
            id: new_topic_id(),
            partitions: partitions.len() as u32,
            created_ms: now_ms(),
            config,
        };
        let exists = || MetaError::TopicExists {
            topic: name.to_owned(),
        };
        let mut ops = Vec::new();
        for (i, p) in partitions.iter().enumerate() {
            let index = i as u32;
            ops.push(Op::Put(
                keys::partition_state(&ns, name, index),
                to_json(&PartitionState {
                    epoch: 0,
                    ..p.state
                }),
            ));
            for s in &p.segments {
                ops.push(Op::Put(
                    keys::segment(&ns, name, index, s.base_offset),
                    to_json(s),
                ));
            }
        }
        for g in group_offsets {
            if g.partition as usize >= partitions.len() {
                return Err(MetaError::UnknownPartition {
                    topic: name.to_owned(),
                    partition: g.partition,
                });
            }
            ops.push(Op::Put(
                keys::group_offset(&ns, &g.group, name, g.partition),
                to_json(&CommittedOffset {
                    offset: g.offset,
                    metadata: g.metadata.clone(),
                    leader_epoch: g.leader_epoch,
                }),
            ));
        }
        // Keys an interrupted restore of the same name left behind go first
        // (never a live topic's: guarded by its absence), and so do group
        // offsets on the name (of such a restore, or of a deleted topic of
        // that name): the restored topic's groups are exactly those given.
        let groups = keys::groups(&ns);
        let stale: Vec<Op> = self
            .kv_mut()
            .range(&groups)?
            .into_iter()
            .filter(|(k, _)| {
                k[groups.len()..]
                    .split_once("/offsets/")
                    .and_then(|(_, rest)| rest.rsplit_once('/'))
                    .is_some_and(|(topic, _)| topic == name)
            })
            .map(|(k, _)| Op::Delete(k))
            .collect();
        let mut clear = vec![Op::DeletePrefix(keys::topic_partitions(&ns, name))];
        clear.extend(stale);
        for chunk in chunks(clear) {
            if !self.kv_mut().txn(Txn {
                compares: vec![Compare::Absent(topic_key.clone())],
                ops: chunk,
            })? {
                return Err(exists());
            }
        }
        for chunk in chunks(ops) {
            if !self.kv_mut().txn(Txn {
                compares: vec![Compare::Absent(topic_key.clone())],
                ops: chunk,
            })? {
                return Err(exists());
            }
        }
        if self.kv_mut().txn(Txn {
            compares: vec![Compare::Absent(topic_key.clone())],
            ops: vec![Op::Put(topic_key.clone(), to_json(&meta))],
        })? {
            for g in group_offsets {
                crate::offset_history::committed(
                    &g.group,
                    [(
                        name,
                        g.partition,
                        g.offset,
                        g.leader_epoch,
                        g.metadata.as_deref(),
                        None,
                    )],
                    now_ms(),
                );
            }
            Ok(meta)
        } else {
            Err(exists())
        }
    }
}
