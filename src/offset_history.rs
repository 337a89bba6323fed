//! The history of consumer group offsets: every change of a committed
//! offset in the metadata store (a commit, an OffsetDelete, a DeleteGroups;
//! from clients, admin tools and mirror jobs' group sync alike) is also a
//! record of the read-only topic `__kafscale_offsets`, so the bucket knows
//! where each group stood at any moment and `kafscale restore --groups` can
//! set a restored topic's group offsets as they were at T, from S3 alone.
//!
//! ```text
//! key    = group id
//! value  = {"op":"commit","topic":"orders","partition":3,"offset":120,
//!           "leader_epoch":-1,"metadata":"..."}
//!        | {"op":"delete","topic":"orders","partition":3}
//!        | {"op":"delete_group"}
//! timestamp (CreateTime) = when the metadata store took the change (Unix ms)
//! ```
//!
//! The metadata store stays the source of truth; the history follows it.
//! Changes are kept here in memory and appended by the broker every few
//! seconds (`broker::internal_topics`; a stopping broker appends what it
//! holds before it drains), so a broker killed with SIGKILL loses the last
//! few seconds of history, never the offsets themselves. A commit is
//! recorded when it differs from what the store held before it (read in the
//! same metadata call), so the many commits of idle consumers that leave an
//! offset where it was add nothing; an unchanged offset is recorded again
//! when this process has not recorded it for [`AGAIN_AFTER_MS`], so every
//! group that keeps committing appears in any stretch of history that long.
//! The brokers' clocks order changes made on different brokers (keep them
//! synchronised, as etcd wants anyway).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

pub use crate::internal::OFFSETS as TOPIC;

/// One change of a group's committed offsets: the record's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    Commit {
        topic: String,
        partition: u32,
        offset: i64,
        #[serde(default = "no_epoch")]
        leader_epoch: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<String>,
    },
    /// OffsetDelete of one partition.
    Delete { topic: String, partition: u32 },
    /// DeleteGroups: every offset of the group.
    DeleteGroup,
}

/// The leader epoch of an offset committed without one.
pub fn no_epoch() -> i32 {
    -1
}

/// A change as kept for the topic: (group, change, time in Unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub group: String,
    pub change: Change,
    pub time_ms: i64,
}

/// Changes waiting for the topic, oldest first; at most this many (then
/// the oldest are dropped, counted and logged by the appender).
const KEPT_MAX: usize = 200_000;
/// When this process last recorded each group partition; forgotten whole
/// past this size.
const RECORDED_MAX: usize = 1_000_000;
/// An unchanged offset is recorded again after this long (10 minutes).
pub const AGAIN_AFTER_MS: i64 = 600_000;

#[derive(Default)]
struct Kept {
    queue: VecDeque<Entry>,
    dropped: u64,
    recorded: HashMap<(String, String, u32), i64>,
}

static KEPT: OnceLock<Mutex<Kept>> = OnceLock::new();

/// From now on, changes are kept for [`take`] (a broker that writes the
/// topic calls it; elsewhere recording is a no-op).
pub fn keep_for_topic() {
    KEPT.get_or_init(Mutex::default);
}

/// Whether changes are kept (then the metadata store reads what a commit
/// replaces).
pub fn enabled() -> bool {
    KEPT.get().is_some()
}

fn kept() -> Option<std::sync::MutexGuard<'static, Kept>> {
    KEPT.get()
        .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
}

impl Kept {
    fn push(&mut self, entry: Entry) {
        self.queue.push_back(entry);
        self.trim();
    }

    fn trim(&mut self) {
        while self.queue.len() > KEPT_MAX {
            self.queue.pop_front();
            self.dropped += 1;
            // A dropped commit must not keep the same offset from being
            // recorded again soon.
            self.recorded.clear();
        }
    }
}

/// One committed offset: (topic, partition, offset, leader epoch,
/// metadata, the offset the store held before it, if any).
pub type Committed<'a> = (&'a str, u32, i64, i32, Option<&'a str>, Option<i64>);

/// Offsets the metadata store just committed for `group`, at `time_ms`.
pub fn committed<'a>(group: &str, offsets: impl IntoIterator<Item = Committed<'a>>, time_ms: i64) {
    let Some(mut k) = kept() else { return };
    for (topic, partition, offset, leader_epoch, metadata, before) in offsets {
        let key = (group.to_owned(), topic.to_owned(), partition);
        let recently = k
            .recorded
            .get(&key)
            .is_some_and(|at| time_ms - at < AGAIN_AFTER_MS);
        if before == Some(offset) && recently {
            continue;
        }
        if k.recorded.len() >= RECORDED_MAX {
            k.recorded.clear();
        }
        k.recorded.insert(key, time_ms);
        k.push(Entry {
            group: group.to_owned(),
            change: Change::Commit {
                topic: topic.to_owned(),
                partition,
                offset,
                leader_epoch,
                metadata: metadata.filter(|m| !m.is_empty()).map(str::to_owned),
            },
            time_ms,
        });
    }
}

/// Offsets the metadata store just deleted (OffsetDelete).
pub fn deleted<'a>(
    group: &str,
    partitions: impl IntoIterator<Item = (&'a str, u32)>,
    time_ms: i64,
) {
    let Some(mut k) = kept() else { return };
    for (topic, partition) in partitions {
        k.recorded
            .remove(&(group.to_owned(), topic.to_owned(), partition));
        k.push(Entry {
            group: group.to_owned(),
            change: Change::Delete {
                topic: topic.to_owned(),
                partition,
            },
            time_ms,
        });
    }
}

/// A group the metadata store just deleted.
pub fn group_deleted(group: &str, time_ms: i64) {
    let Some(mut k) = kept() else { return };
    k.recorded.retain(|(g, _, _), _| g != group);
    k.push(Entry {
        group: group.to_owned(),
        change: Change::DeleteGroup,
        time_ms,
    });
}

/// Up to `max` kept changes, oldest first, and how many were dropped
/// since the last call.
pub fn take(max: usize) -> (Vec<Entry>, u64) {
    let Some(mut k) = kept() else {
        return (Vec::new(), 0);
    };
    let n = k.queue.len().min(max);
    let entries = k.queue.drain(..n).collect();
    (entries, std::mem::take(&mut k.dropped))
}

/// Puts back changes [`take`] gave that could not be written, ahead of newer.
pub fn give_back(entries: Vec<Entry>) {
    if let Some(mut k) = kept() {
        for e in entries.into_iter().rev() {
            k.queue.push_front(e);
        }
        k.trim();
    }
}

/// Where each group's offsets stood at a moment, replayed from the
/// history's records (in any order: each carries its time and place).
#[derive(Debug, Default)]
pub struct Replay {
    /// (group, topic, partition) -> the change that put it where it stood.
    at: HashMap<(String, String, u32), Stood>,
    /// group -> its last deletion.
    group_deleted: HashMap<String, Order>,
}

/// Which of two changes came later: their times, then (in the same
/// millisecond) their places in the history (partition, offset): one
/// broker appends to one partition, in order.
pub type Order = (i64, u32, i64);

/// Where one group partition stood: the change that put it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stood {
    pub order: Order,
    /// None: deleted (or a commit of no offset).
    pub offset: Option<i64>,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// A group's committed offset on one partition at the replayed moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    pub group: String,
    pub partition: u32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    /// When it was committed (Unix ms).
    pub committed_ms: i64,
}

/// One record of the history, as read.
#[derive(Debug, Clone, Copy)]
pub struct HistoryRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub time_ms: i64,
    /// The history partition and offset it was read from.
    pub partition: u32,
    pub offset: i64,
}

impl Replay {
    /// Takes one record of the history. Changes later than `until_ms`, of
    /// groups `wanted` refuses and of other topics than `topic` are left
    /// out. A record that does not read is an error naming what is wrong.
    pub fn add(
        &mut self,
        r: HistoryRecord<'_>,
        until_ms: i64,
        topic: &str,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<(), String> {
        if r.time_ms > until_ms {
            return Ok(());
        }
        let group = std::str::from_utf8(r.key.ok_or("a record without a group (key)")?)
            .map_err(|_| "a group id that is not UTF-8")?;
        if !wanted(group) {
            return Ok(());
        }
        let change: Change = serde_json::from_slice(r.value.ok_or("a record without a value")?)
            .map_err(|e| format!("group {group}: {e}"))?;
        let order = (r.time_ms, r.partition, r.offset);
        let (t, partition, offset, leader_epoch, metadata) = match change {
            Change::DeleteGroup => {
                let d = self.group_deleted.entry(group.to_owned()).or_insert(order);
                *d = (*d).max(order);
                return Ok(());
            }
            Change::Commit {
                topic,
                partition,
                offset,
                leader_epoch,
                metadata,
            } => (
                topic,
                partition,
                // A commit of -1 is no offset.
                (offset >= 0).then_some(offset),
                leader_epoch,
                metadata,
            ),
            Change::Delete { topic, partition } => (topic, partition, None, -1, None),
        };
        if t != topic {
            return Ok(());
        }
        let stood = Stood {
            order,
            offset,
            leader_epoch,
            metadata,
        };
        match self.at.entry((group.to_owned(), t, partition)) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                if o.get().order < order {
                    o.insert(stood);
                }
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(stood);
            }
        }
        Ok(())
    }

    /// The committed offsets standing at the moment, by group and
    /// partition (a commit before its group's deletion is gone).
    pub fn offsets(&self) -> Vec<GroupOffset> {
        let mut out: Vec<GroupOffset> = self
            .at
            .iter()
            .filter_map(|((group, _, partition), s)| {
                let offset = s.offset?;
                if self.group_deleted.get(group).is_some_and(|d| *d > s.order) {
                    return None;
                }
                Some(GroupOffset {
                    group: group.clone(),
                    partition: *partition,
                    offset,
                    leader_epoch: s.leader_epoch,
                    metadata: s.metadata.clone(),
                    committed_ms: s.order.0,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.group, a.partition).cmp(&(&b.group, b.partition)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(r: &mut Replay, group: &str, c: &Change, t: i64) {
        at(r, group, c, t, 0, t);
    }

    fn at(r: &mut Replay, group: &str, c: &Change, t: i64, partition: u32, offset: i64) {
        let v = serde_json::to_vec(c).unwrap();
        let h = HistoryRecord {
            key: Some(group.as_bytes()),
            value: Some(&v),
            time_ms: t,
            partition,
            offset,
        };
        r.add(h, 1000, "orders", |_| true).unwrap();
    }

    fn commit(topic: &str, partition: u32, offset: i64) -> Change {
        Change::Commit {
            topic: topic.into(),
            partition,
            offset,
            leader_epoch: -1,
            metadata: None,
        }
    }

    #[test]
    fn the_last_change_at_or_before_the_moment_stands() {
        let mut r = Replay::default();
        rec(&mut r, "g", &commit("orders", 0, 5), 100);
        rec(&mut r, "g", &commit("orders", 0, 9), 900);
        rec(&mut r, "g", &commit("orders", 0, 20), 1001); // after the moment
        rec(&mut r, "g", &commit("other", 0, 7), 500); // another topic
        rec(&mut r, "g", &commit("orders", 1, 3), 200);
        rec(
            &mut r,
            "g",
            &Change::Delete {
                topic: "orders".into(),
                partition: 1,
            },
            300,
        );
        rec(&mut r, "h", &commit("orders", 0, 4), 100);
        rec(&mut r, "h", &Change::DeleteGroup, 150);
        rec(&mut r, "h", &commit("orders", 2, 6), 160); // after the deletion: stands
        let got: Vec<_> = r
            .offsets()
            .into_iter()
            .map(|o| (o.group, o.partition, o.offset, o.committed_ms))
            .collect();
        assert_eq!(got, vec![("g".into(), 0, 9, 900), ("h".into(), 2, 6, 160)]);
    }

    #[test]
    fn records_read_out_of_order_give_the_same_answer() {
        let mut r = Replay::default();
        rec(&mut r, "g", &commit("orders", 0, 9), 900);
        rec(&mut r, "g", &commit("orders", 0, 5), 100);
        assert_eq!(r.offsets()[0].offset, 9);
        // In the same millisecond the later place in the history wins,
        // whichever is read first.
        let mut r = Replay::default();
        at(&mut r, "g", &commit("orders", 0, 7), 500, 3, 11);
        at(&mut r, "g", &commit("orders", 0, 6), 500, 3, 10);
        assert_eq!(r.offsets()[0].offset, 7);
        // A commit after a deletion in the same millisecond stands.
        at(&mut r, "g", &Change::DeleteGroup, 600, 3, 12);
        at(&mut r, "g", &commit("orders", 1, 2), 600, 3, 13);
        let got: Vec<_> = r
            .offsets()
            .iter()
            .map(|o| (o.partition, o.offset))
            .collect();
        assert_eq!(got, vec![(1, 2)]);
        // A commit of no offset (-1) is none.
        at(&mut r, "g", &commit("orders", 1, -1), 700, 3, 14);
        assert!(r.offsets().is_empty());
    }

    #[test]
    fn a_record_that_does_not_read_is_named() {
        let mut r = Replay::default();
        let rec = |key: Option<&'static [u8]>, value: &'static [u8]| HistoryRecord {
            key,
            value: Some(value),
            time_ms: 1,
            partition: 0,
            offset: 0,
        };
        let e = r
            .add(rec(Some(b"g"), br#"{"op":"nope"}"#), 10, "orders", |_| true)
            .unwrap_err();
        assert!(e.starts_with("group g: unknown variant `nope`"), "{e}");
        let e = r.add(rec(None, b"{}"), 10, "orders", |_| true).unwrap_err();
        assert_eq!(e, "a record without a group (key)");
    }

    #[test]
    fn the_value_format_is_the_documented_one() {
        let c = commit("orders", 3, 120);
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"op":"commit","topic":"orders","partition":3,"offset":120,"leader_epoch":-1}"#
        );
        assert_eq!(
            serde_json::to_string(&Change::DeleteGroup).unwrap(),
            r#"{"op":"delete_group"}"#
        );
    }
}
