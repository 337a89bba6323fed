//! Topics, partitions and segments mapped onto the key-value store.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::kv::{Compare, Kv, Op, Txn};
use super::types::{
    BrokerInfo, CommittedOffset, GroupMeta, Owner, PartitionState, SegmentCommit, SegmentRecord,
    TopicMeta,
};
use super::{MetaError, keys};

/// The metadata operations, over either backend.
pub struct MetaStore {
    kv: Box<dyn Kv>,
    ns: String,
}

impl std::fmt::Debug for MetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaStore")
            .field("namespace", &self.ns)
            .finish()
    }
}

/// Most operations (and most compares) etcd takes in one transaction: its
/// `--max-txn-ops`, 128 by default. Larger changes are split.
pub const MAX_TXN_OPS: usize = 128;

/// Most partitions whose segments one commit transaction covers (one
/// compare and two puts each).
pub const MAX_COMMIT_PARTITIONS: usize = MAX_TXN_OPS / 2;

/// `ops` in transactions of at most MAX_TXN_OPS.
pub(crate) fn chunks(mut ops: Vec<Op>) -> Vec<Vec<Op>> {
    let mut out = Vec::new();
    while ops.len() > MAX_TXN_OPS {
        let rest = ops.split_off(MAX_TXN_OPS);
        out.push(std::mem::replace(&mut ops, rest));
    }
    if !ops.is_empty() {
        out.push(ops);
    }
    out
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> String {
    // Our value types are plain structs of numbers and strings: always encodable.
    serde_json::to_string(v).unwrap_or_default()
}

pub(crate) fn from_json<T: DeserializeOwned>(key: &str, v: &str) -> Result<T, MetaError> {
    serde_json::from_str(v).map_err(|e| MetaError::Decode {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// For the cluster view (brokers, owners, coordinators), read every second:
/// one malformed record is logged and left out instead of failing the whole
/// view. Claims still read their own key strictly, so nothing is taken over
/// on the strength of a record that cannot be read.
fn from_json_or_skip<T: DeserializeOwned>(key: &str, v: &str) -> Option<T> {
    from_json(key, v)
        .map_err(|e| tracing::warn!(error = %e, "skipping an unreadable cluster record"))
        .ok()
}

impl MetaStore {
    pub fn new(kv: Box<dyn Kv>, namespace: impl Into<String>) -> Self {
        Self {
            kv,
            ns: namespace.into(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }

    pub(crate) fn kv_mut(&mut self) -> &mut dyn Kv {
        self.kv.as_mut()
    }

    /// Creates a topic and its partitions' initial state, atomically; fails if
    /// it exists.
    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        config: BTreeMap<String, String>,
    ) -> Result<TopicMeta, MetaError> {
        crate::internal::guard(
            name,
            config.contains_key(crate::internal::INTERNAL),
            "create",
        )?;
        let topic_key = keys::topic(&self.ns, name);
        let meta = TopicMeta {
            name: name.to_owned(),
            id: new_topic_id(),
            partitions,
            created_ms: now_ms(),
            config,
        };
        // delete_topic removes a topic's partition keys in the same transaction as
        // the topic key, so none are left over here. (etcd refuses a transaction
        // that deletes a prefix and puts keys under it.) etcd takes at most
        // MAX_TXN_OPS operations per transaction, so the partitions' states go
        // first in chunks, each guarded by the topic's absence (so a creator
        // that lost the race writes nothing once the topic exists), and the
        // topic key last, which is what makes the topic visible.
        let absent = || vec![Compare::Absent(topic_key.clone())];
        let states: Vec<Op> = (0..partitions)
            .map(|p| {
                Op::Put(
                    keys::partition_state(&self.ns, name, p),
                    to_json(&PartitionState::NEW),
                )
            })
            .collect();
        let exists = || MetaError::TopicExists {
            topic: name.to_owned(),
        };
        for chunk in chunks(states) {
            if !self.kv.txn(Txn {
                compares: absent(),
                ops: chunk,
            })? {
                return Err(exists());
            }
        }
        if self.kv.txn(Txn {
            compares: absent(),
            ops: vec![Op::Put(topic_key.clone(), to_json(&meta))],
        })? {
            Ok(meta)
        } else {
            Err(exists())
        }
    }

    pub fn topic(&mut self, name: &str) -> Result<Option<TopicMeta>, MetaError> {
        let key = keys::topic(&self.ns, name);
        self.kv.get(&key)?.map(|v| from_json(&key, &v)).transpose()
    }

    pub fn topics(&mut self) -> Result<Vec<TopicMeta>, MetaError> {
        self.kv
            .range(&keys::topics(&self.ns))?
            .iter()
            .map(|(k, v)| from_json(k, v))
            .collect()
    }

    /// Deletes the topic and its partitions' metadata. Segment objects stay in
    /// the bucket (the caller deletes them).
    pub fn delete_topic(&mut self, name: &str) -> Result<TopicMeta, MetaError> {
        let key = keys::topic(&self.ns, name);
        let Some(raw) = self.kv.get(&key)? else {
            return Err(MetaError::UnknownTopic {
                topic: name.to_owned(),
            });
        };
        let meta: TopicMeta = from_json(&key, &raw)?;
        crate::internal::guard(name, false, "delete")?;
        let txn = Txn {
            compares: vec![Compare::Equals(key.clone(), raw)],
            ops: vec![
                Op::Delete(key),
                Op::DeletePrefix(keys::topic_partitions(&self.ns, name)),
                Op::DeletePrefix(keys::topic_owners(&self.ns, name)),
            ],
        };
        if self.kv.txn(txn)? {
            Ok(meta)
        } else {
            Err(MetaError::UnknownTopic {
                topic: name.to_owned(),
            })
        }
    }

    /// Grows a topic to `total` partitions (Kafka never shrinks).
    pub fn add_partitions(&mut self, name: &str, total: u32) -> Result<TopicMeta, MetaError> {
        let key = keys::topic(&self.ns, name);
        let Some(raw) = self.kv.get(&key)? else {
            return Err(MetaError::UnknownTopic {
                topic: name.to_owned(),
            });
        };
        let mut meta: TopicMeta = from_json(&key, &raw)?;
        crate::internal::guard(name, false, "add partitions")?;
        if total <= meta.partitions {
            return Err(MetaError::BadPartitionCount {
                topic: name.to_owned(),
                current: meta.partitions,
                requested: total,
            });
        }
        let old = meta.partitions;
        meta.partitions = total;
        // As in create_topic: the new partitions' states in chunks, each
        // guarded by the topic as read, then the topic with its new count.
        let states: Vec<Op> = (old..total)
            .map(|p| {
                Op::Put(
                    keys::partition_state(&self.ns, name, p),
                    to_json(&PartitionState::NEW),
                )
            })
            .collect();
        let mut applied = true;
        for chunk in chunks(states) {
            applied &= self.kv.txn(Txn {
                compares: vec![Compare::Equals(key.clone(), raw.clone())],
                ops: chunk,
            })?;
            if !applied {
                break;
            }
        }
        if applied
            && self.kv.txn(Txn {
                compares: vec![Compare::Equals(key, raw)],
                ops: vec![Op::Put(keys::topic(&self.ns, name), to_json(&meta))],
            })?
        {
            Ok(meta)
        } else {
            // Someone changed the topic between our read and write: report what it is now.
            let now = self.topic(name)?.map_or(0, |t| t.partitions);
            Err(MetaError::BadPartitionCount {
                topic: name.to_owned(),
                current: now,
                requested: total,
            })
        }
    }

    pub fn partition_state(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> Result<PartitionState, MetaError> {
        let key = keys::partition_state(&self.ns, topic, partition);
        match self.kv.get(&key)? {
            Some(v) => from_json(&key, &v),
            None if self.topic(topic)?.is_none() => Err(MetaError::UnknownTopic {
                topic: topic.to_owned(),
            }),
            None => Err(MetaError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
            }),
        }
    }

    /// The partition's committed segments in offset order.
    pub fn segments(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> Result<Vec<SegmentRecord>, MetaError> {
        self.kv
            .range(&keys::segments(&self.ns, topic, partition))?
            .iter()
            .map(|(k, v)| from_json(k, v))
            .collect()
    }

    /// Commits uploaded segments of several partitions (at most
    /// [`MAX_COMMIT_PARTITIONS`]: callers split larger flushes) in one transaction.
    /// Each partition must still be in the state its writer expects (same
    /// next offset and epoch), and its segment must start at that next offset
    /// or beyond it (an offset gap);
    /// otherwise nothing is committed and the first partition that moved on is
    /// reported as a [`MetaError::Conflict`]. Returns the new states.
    pub fn commit(&mut self, commits: &[SegmentCommit]) -> Result<Vec<PartitionState>, MetaError> {
        let mut txn = Txn::default();
        let mut states = Vec::with_capacity(commits.len());
        for c in commits {
            // A segment may start beyond the next offset (a mirrored
            // partition keeps its source's offsets, gaps included), never
            // before it.
            if c.segment.base_offset < c.expected.next_offset {
                return Err(MetaError::Conflict {
                    topic: c.topic.clone(),
                    partition: c.partition,
                    expected: c.expected.next_offset,
                    actual: c.segment.base_offset,
                });
            }
            let state_key = keys::partition_state(&self.ns, &c.topic, c.partition);
            // An empty log starts where its first segment does (a mirror
            // of a source whose log starts beyond 0).
            let empty = c.expected.next_offset == c.expected.log_start_offset;
            let next = PartitionState {
                next_offset: c.segment.last_offset + 1,
                log_start_offset: if empty {
                    c.log_start.map_or(c.segment.base_offset, |s| {
                        s.clamp(c.segment.base_offset, c.segment.last_offset)
                    })
                } else {
                    c.expected.log_start_offset
                },
                ..c.expected
            };
            txn.compares
                .push(Compare::Equals(state_key.clone(), to_json(&c.expected)));
            txn.ops.push(Op::Put(state_key, to_json(&next)));
            txn.ops.push(Op::Put(
                keys::segment(&self.ns, &c.topic, c.partition, c.segment.base_offset),
                to_json(&c.segment),
            ));
            states.push(next);
        }
        if self.kv.txn(txn)? {
            return Ok(states);
        }
        for c in commits {
            let actual = self.partition_state(&c.topic, c.partition)?;
            if actual.epoch != c.expected.epoch {
                return Err(MetaError::Fenced {
                    topic: c.topic.clone(),
                    partition: c.partition,
                    epoch: c.expected.epoch,
                    actual: actual.epoch,
                });
            }
            if actual != c.expected {
                return Err(MetaError::Conflict {
                    topic: c.topic.clone(),
                    partition: c.partition,
                    expected: c.expected.next_offset,
                    actual: actual.next_offset,
                });
            }
        }
        // Every state matched on re-read: a concurrent writer came and went.
        Err(MetaError::Busy)
    }
}

impl MetaStore {
    /// Allocates a producer id for InitProducerId, unique across brokers.
    pub fn next_producer_id(&mut self) -> Result<i64, MetaError> {
        let key = keys::producer_ids(&self.ns);
        loop {
            let current = self.kv.get(&key)?;
            let id: i64 = match &current {
                Some(v) => from_json(&key, v)?,
                None => 1000,
            };
            let guard = match current {
                Some(v) => Compare::Equals(key.clone(), v),
                None => Compare::Absent(key.clone()),
            };
            if self.kv.txn(Txn {
                compares: vec![guard],
                ops: vec![Op::Put(key.clone(), to_json(&(id + 1)))],
            })? {
                return Ok(id);
            }
        }
    }
}

/// Clusters: live brokers and ownership, all bound to brokers' leases.
impl MetaStore {
    pub fn grant_lease(&mut self, ttl_secs: i64) -> Result<i64, MetaError> {
        self.kv.grant_lease(ttl_secs)
    }

    pub fn keep_alive(&mut self, lease: i64) -> Result<bool, MetaError> {
        self.kv.keep_alive(lease)
    }

    pub fn revoke_lease(&mut self, lease: i64) -> Result<(), MetaError> {
        self.kv.revoke_lease(lease)
    }

    /// Registers a broker under `info.id`; refused while another live lease
    /// holds that id.
    pub fn register_broker(&mut self, info: &BrokerInfo, lease: i64) -> Result<(), MetaError> {
        let key = keys::broker(&self.ns, info.id);
        let put = Op::PutLeased(key.clone(), to_json(info), lease);
        if self.kv.txn(Txn {
            compares: vec![Compare::Absent(key)],
            ops: vec![put],
        })? {
            Ok(())
        } else {
            Err(MetaError::BrokerIdTaken { id: info.id })
        }
    }

    /// The lease holding broker `id`'s registration and its seconds left.
    pub fn broker_lease(&mut self, id: i32) -> Result<Option<(i64, i64)>, MetaError> {
        let key = keys::broker(&self.ns, id);
        self.kv.lease_of(&key)
    }

    /// Registers under the lowest free id and returns it.
    pub fn register_any_broker(
        &mut self,
        mut info: BrokerInfo,
        lease: i64,
    ) -> Result<i32, MetaError> {
        loop {
            let taken: Vec<i32> = self.brokers()?.iter().map(|b| b.id).collect();
            info.id = (0..)
                .find(|id| !taken.contains(id))
                .expect("an unbounded range has a free id");
            match self.register_broker(&info, lease) {
                Err(MetaError::BrokerIdTaken { .. }) => continue,
                other => return other.map(|()| info.id),
            }
        }
    }

    /// Live brokers, by id.
    pub fn brokers(&mut self) -> Result<Vec<BrokerInfo>, MetaError> {
        let mut out: Vec<BrokerInfo> = self
            .kv
            .range(&keys::brokers(&self.ns))?
            .iter()
            .filter_map(|(k, v)| from_json_or_skip(k, v))
            .collect();
        out.sort_by_key(|b| b.id);
        Ok(out)
    }

    /// Every partition with a live owner: (topic, partition, owner).
    pub fn owners(&mut self) -> Result<Vec<(String, u32, Owner)>, MetaError> {
        let prefix = keys::owners(&self.ns);
        let mut out = Vec::new();
        for (k, v) in self.kv.range(&prefix)? {
            if let Some((topic, part)) = k[prefix.len()..].rsplit_once('/')
                && let Ok(part) = part.parse::<u32>()
                && let Some(owner) = from_json_or_skip(&k, &v)
            {
                out.push((topic.to_owned(), part, owner));
            }
        }
        Ok(out)
    }

    /// Every group with a live coordinator.
    pub fn coordinators(&mut self) -> Result<Vec<(String, Owner)>, MetaError> {
        let prefix = keys::coordinators(&self.ns);
        Ok(self
            .kv
            .range(&prefix)?
            .iter()
            .filter_map(|(k, v)| Some((k[prefix.len()..].to_owned(), from_json_or_skip(k, v)?)))
            .collect())
    }

    /// Takes ownership of a partition for `broker` under `lease`, unless
    /// another live broker holds it. Taking it bumps the partition's epoch in
    /// the same transaction, so every commit the previous owner still tries
    /// (its `expected` state carries the old epoch) fails: that is the fence.
    /// Claiming a partition this lease already owns returns its state.
    pub fn claim_partition(
        &mut self,
        topic: &str,
        partition: u32,
        broker: i32,
        lease: i64,
    ) -> Result<PartitionState, MetaError> {
        let owner_key = keys::owner(&self.ns, topic, partition);
        let state_key = keys::partition_state(&self.ns, topic, partition);
        loop {
            if let Some(raw) = self.kv.get(&owner_key)? {
                let owner: Owner = from_json(&owner_key, &raw)?;
                if owner.broker == broker && owner.lease == lease {
                    return self.partition_state(topic, partition);
                }
                return Err(MetaError::OwnedBy {
                    what: format!("partition {topic}-{partition}"),
                    broker: owner.broker,
                });
            }
            let Some(raw_state) = self.kv.get(&state_key)? else {
                // Unknown topic or partition: say which.
                return self.partition_state(topic, partition);
            };
            let state: PartitionState = from_json(&state_key, &raw_state)?;
            let claimed = PartitionState {
                epoch: state.epoch + 1,
                ..state
            };
            let owner = Owner {
                broker,
                lease,
                epoch: claimed.epoch,
            };
            if self.kv.txn(Txn {
                compares: vec![
                    Compare::Absent(owner_key.clone()),
                    Compare::Equals(state_key.clone(), raw_state),
                ],
                ops: vec![
                    Op::PutLeased(owner_key.clone(), to_json(&owner), lease),
                    Op::Put(state_key.clone(), to_json(&claimed)),
                ],
            })? {
                return Ok(claimed);
            }
        }
    }

    /// Gives a partition up (it moves to the broker it hashes to). A no-op
    /// when `owner` no longer holds it.
    pub fn release_partition(
        &mut self,
        topic: &str,
        partition: u32,
        owner: &Owner,
    ) -> Result<(), MetaError> {
        let key = keys::owner(&self.ns, topic, partition);
        self.kv
            .txn(Txn {
                compares: vec![Compare::Equals(key.clone(), to_json(owner))],
                ops: vec![Op::Delete(key)],
            })
            .map(|_| ())
    }

    /// Becomes the coordinator of a group unless another live broker is.
    pub fn claim_coordinator(
        &mut self,
        group: &str,
        broker: i32,
        lease: i64,
    ) -> Result<(), MetaError> {
        let key = keys::coordinator(&self.ns, group);
        loop {
            if let Some(raw) = self.kv.get(&key)? {
                let owner: Owner = from_json(&key, &raw)?;
                if owner.broker == broker && owner.lease == lease {
                    return Ok(());
                }
                return Err(MetaError::OwnedBy {
                    what: format!("group {group:?}"),
                    broker: owner.broker,
                });
            }
            let owner = Owner {
                broker,
                lease,
                epoch: 0,
            };
            if self.kv.txn(Txn {
                compares: vec![Compare::Absent(key.clone())],
                ops: vec![Op::PutLeased(key.clone(), to_json(&owner), lease)],
            })? {
                return Ok(());
            }
        }
    }
}

/// Consumer groups: committed offsets and group metadata.
impl MetaStore {
    /// Applies ops with no condition, atomically.
    fn apply(&mut self, ops: Vec<Op>) -> Result<(), MetaError> {
        self.kv
            .txn(Txn {
                compares: vec![],
                ops,
            })
            .map(|_| ())
    }

    /// Stores offsets of one group: one transaction per MAX_TXN_OPS
    /// partitions (Kafka's OffsetCommit is not atomic across partitions
    /// either: each has its own error code). What is stored is also kept
    /// for the offset history (`crate::offset_history`).
    pub fn commit_offsets(
        &mut self,
        group: &str,
        offsets: &[(String, u32, CommittedOffset)],
    ) -> Result<(), MetaError> {
        // What each commit replaces, for the history: a commit that moves
        // nothing is not a change.
        let before: BTreeMap<(String, u32), i64> = if crate::offset_history::enabled() {
            self.group_offsets(group)?
                .into_iter()
                .map(|(t, p, o)| ((t, p), o.offset))
                .collect()
        } else {
            BTreeMap::new()
        };
        for part in offsets.chunks(MAX_TXN_OPS) {
            let ops = part
                .iter()
                .map(|(t, p, o)| Op::Put(keys::group_offset(&self.ns, group, t, *p), to_json(o)))
                .collect();
            self.apply(ops)?;
            // What the store took is history, even if a later part fails.
            crate::offset_history::committed(
                group,
                part.iter().map(|(t, p, o)| {
                    let was = before.get(&(t.clone(), *p)).copied();
                    (
                        t.as_str(),
                        *p,
                        o.offset,
                        o.leader_epoch,
                        o.metadata.as_deref(),
                        was,
                    )
                }),
                now_ms(),
            );
        }
        Ok(())
    }

    /// Every committed offset of a group: (topic, partition, offset).
    pub fn group_offsets(
        &mut self,
        group: &str,
    ) -> Result<Vec<(String, u32, CommittedOffset)>, MetaError> {
        let prefix = keys::group_offsets(&self.ns, group);
        let mut out = Vec::new();
        for (k, v) in self.kv.range(&prefix)? {
            let rest = &k[prefix.len()..];
            let Some((topic, part)) = rest.rsplit_once('/') else {
                continue;
            };
            let Ok(part) = part.parse::<u32>() else {
                continue;
            };
            out.push((topic.to_owned(), part, from_json(&k, &v)?));
        }
        Ok(out)
    }

    pub fn delete_offsets(
        &mut self,
        group: &str,
        partitions: &[(String, u32)],
    ) -> Result<(), MetaError> {
        let ops = partitions
            .iter()
            .map(|(t, p)| Op::Delete(keys::group_offset(&self.ns, group, t, *p)))
            .collect();
        self.apply(ops)?;
        crate::offset_history::deleted(
            group,
            partitions.iter().map(|(t, p)| (t.as_str(), *p)),
            now_ms(),
        );
        Ok(())
    }

    pub fn group_meta(&mut self, group: &str) -> Result<Option<GroupMeta>, MetaError> {
        let key = keys::group_meta(&self.ns, group);
        self.kv.get(&key)?.map(|v| from_json(&key, &v)).transpose()
    }

    pub fn put_group_meta(&mut self, group: &str, meta: &GroupMeta) -> Result<(), MetaError> {
        let op = Op::Put(keys::group_meta(&self.ns, group), to_json(meta));
        self.apply(vec![op])
    }

    /// Names of every group with stored metadata or offsets.
    pub fn group_names(&mut self) -> Result<Vec<String>, MetaError> {
        let prefix = keys::groups(&self.ns);
        let mut names: Vec<String> = self
            .kv
            .range(&prefix)?
            .into_iter()
            .filter_map(|(k, _)| k[prefix.len()..].split('/').next().map(keys::unescape))
            .collect();
        names.dedup();
        Ok(names)
    }

    /// Removes a group's offsets and metadata.
    pub fn delete_group(&mut self, group: &str) -> Result<(), MetaError> {
        let op = Op::DeletePrefix(keys::group(&self.ns, group));
        self.apply(vec![op])?;
        crate::offset_history::group_deleted(group, now_ms());
        Ok(())
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A random 128-bit topic id (UUID v4 layout), hex.
pub(crate) fn new_topic_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    b.iter().map(|x| format!("{x:02x}")).collect()
}
