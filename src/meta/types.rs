//! Values stored under the metadata keys (JSON).

use serde::{Deserialize, Serialize};

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    /// Kafka topic id (UUID), hex without dashes.
    pub id: String,
    pub partitions: u32,
    pub created_ms: i64,
    #[serde(default)]
    pub config: std::collections::BTreeMap<String, String>,
}

/// The committed state of one partition. Written only together with the
/// segment that advanced it, in one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Offset the next record will get = high watermark.
    pub next_offset: i64,
    /// First offset still in the log.
    pub log_start_offset: i64,
    /// Owner epoch: bumped when ownership moves, compared on every commit.
    pub epoch: i64,
}

impl PartitionState {
    pub const NEW: Self = Self {
        next_offset: 0,
        log_start_offset: 0,
        epoch: 0,
    };
}

/// One committed segment of a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRecord {
    pub base_offset: i64,
    pub last_offset: i64,
    pub message_count: i32,
    pub size: u64,
    pub created_ms: i64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    /// Transactions whose abort marker is in this segment (mirrored
    /// partitions copy their source's transactions as they are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aborted: Vec<AbortedTxn>,
    /// Transactions still open at this segment's end: (producer id, first
    /// offset). With `aborted` of every segment, what a read_committed
    /// fetch needs, without reading any segment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_txns: Vec<(i64, i64)>,
    /// The S3 versions the upload made, in a versioned bucket (object
    /// lock): reads ask for exactly these, so a later write or delete
    /// marker under the same key changes nothing that is served or restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<ObjectVersions>,
}

/// S3 version ids of a segment's two objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectVersions {
    pub kfs: String,
    pub index: String,
}

impl SegmentRecord {
    pub fn kfs_version(&self) -> Option<&str> {
        self.versions.as_ref().map(|v| v.kfs.as_str())
    }

    pub fn index_version(&self) -> Option<&str> {
        self.versions.as_ref().map(|v| v.index.as_str())
    }
}

/// A transaction its producer aborted: data from `first_offset`, the abort
/// marker (a control batch) at `last_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

impl From<kafscale_codec::kfs::SegmentInfo> for SegmentRecord {
    fn from(i: kafscale_codec::kfs::SegmentInfo) -> Self {
        Self {
            base_offset: i.base_offset,
            last_offset: i.last_offset,
            message_count: i.message_count,
            size: i.size,
            created_ms: i.created_ms,
            min_timestamp: i.min_timestamp,
            max_timestamp: i.max_timestamp,
            aborted: Vec::new(),
            open_txns: Vec::new(),
            versions: None,
        }
    }
}

/// "This segment is uploaded; advance the partition", guarded by the state
/// the writer last saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentCommit {
    pub topic: String,
    pub partition: u32,
    pub expected: PartitionState,
    pub segment: SegmentRecord,
    /// For the first segment of an empty log: where its log starts when
    /// that is inside the segment's first batch (a mirror of a source whose
    /// log start is mid-batch); else the segment's base offset.
    pub log_start: Option<i64>,
}

/// A consumer group's committed offset of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    #[serde(default)]
    pub metadata: Option<String>,
    #[serde(default)]
    pub leader_epoch: i32,
}

/// What survives a restart of a group: its generation and protocol, so
/// generations keep increasing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMeta {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
}

/// A live broker, registered under its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub started_ms: i64,
    /// Its HTTP port (metrics, REST API) on `host`; 0 when not known (a
    /// broker of an older version).
    #[serde(default)]
    pub http_port: u16,
    /// Its endpoint per listener (`--advertised-listeners`); empty for a
    /// broker of an older version, which has only `host` and `port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerEndpoint>,
}

impl BrokerInfo {
    /// Where a client of `listener` reaches this broker: that listener's
    /// endpoint, or `host:port` for a broker that does not list it.
    pub fn endpoint(&self, listener: &str) -> (&str, i32) {
        self.listeners
            .iter()
            .find(|l| l.name == listener)
            .map_or((self.host.as_str(), self.port), |l| {
                (l.host.as_str(), l.port)
            })
    }
}

/// One advertised listener of a broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerEndpoint {
    pub name: String,
    pub host: String,
    pub port: i32,
}

/// Who owns a partition (or coordinates a group), under which lease. The key
/// holding it is bound to that lease, so it vanishes when the owner does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub broker: i32,
    pub lease: i64,
    /// The partition's epoch this ownership began (0 for groups).
    pub epoch: i64,
}
