//! What the broker remembers outside S3: topics, partitions and their
//! committed segments; later consumer groups, offsets and ownership leases.
//!
//! ```text
//! shard (glommio) --MetaClient--bounded crossbeam channel--> control-plane thread
//!                                                             MetaStore<dyn Kv>
//!                                                               |-- EtcdKv (tokio runtime, etcd-client)
//!                                                               '-- FileKv (embedded: log + snapshot, fsync)
//! ```
//!
//! Both backends are a small key-value interface with one atomic primitive,
//! a transaction guarded by compares ([`kv::Txn`]). The logic that maps topics
//! and segments onto keys ([`store::MetaStore`]) is written once on top of it,
//! so the embedded default and etcd behave the same. The key layout is in
//! [`keys`] and `docs/metadata.md`.

pub mod acls;
pub mod client;
pub mod embedded;
pub mod etcd;
pub mod keys;
pub mod kv;
pub mod mirror;
pub mod restore;
pub mod store;
pub mod tokens;
mod types;
pub mod users;

pub use client::MetaClient;
pub use store::MetaStore;
pub use types::{
    AbortedTxn, BrokerInfo, CommittedOffset, GroupMeta, ListenerEndpoint, ObjectVersions, Owner,
    PartitionState, SegmentCommit, SegmentRecord, TopicMeta,
};

/// Errors of the metadata layer. Display is one sentence for a person.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("cannot reach etcd at {endpoints}: {reason}")]
    Etcd { endpoints: String, reason: String },
    #[error("etcd at {endpoints} refused the request: {reason}")]
    EtcdRefused { endpoints: String, reason: String },
    #[error("embedded metadata store {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("embedded metadata store {path} is corrupt at byte {position}: {reason}")]
    Corrupt {
        path: String,
        position: u64,
        reason: String,
    },
    #[error("metadata key {key} holds a value we cannot read: {reason}")]
    Decode { key: String, reason: String },
    #[error("topic {topic:?} already exists")]
    TopicExists { topic: String },
    #[error("topic {topic:?} does not exist")]
    UnknownTopic { topic: String },
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("topic {topic:?} has {current} partitions; cannot change to {requested}")]
    BadPartitionCount {
        topic: String,
        current: u32,
        requested: u32,
    },
    #[error(
        "partition {topic}-{partition} moved on: expected next offset {expected}, store has {actual}; another writer committed first"
    )]
    Conflict {
        topic: String,
        partition: u32,
        expected: i64,
        actual: i64,
    },
    #[error("the embedded metadata store does not support {what}")]
    Unsupported { what: &'static str },
    #[error("{what} is owned by broker {broker}")]
    OwnedBy { what: String, broker: i32 },
    #[error(
        "broker id {id} is registered by a live broker (or by a previous run whose lease has not expired yet)"
    )]
    BrokerIdTaken { id: i32 },
    #[error(
        "partition {topic}-{partition} changed owner: this writer holds epoch {epoch}, the store has {actual}; it cannot append any more"
    )]
    Fenced {
        topic: String,
        partition: u32,
        epoch: i64,
        actual: i64,
    },
    #[error("{what} already exists")]
    Exists { what: String },
    #[error("{what} does not exist")]
    NotFound { what: String },
    #[error("{what} is used by {by}")]
    InUse { what: String, by: String },
    #[error("metadata requests are queued beyond capacity; retry")]
    Busy,
    #[error("the metadata thread has stopped")]
    Closed,
}
