//! ListOffsets: a partition's earliest and latest offsets, or the first
//! offset at or after a timestamp.

use futures::future::join_all;
use kafscale_codec::kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsTopic,
};
use kafscale_codec::kafka_protocol::messages::{ApiKey, BrokerId, ListOffsetsRequest};

use crate::cluster::{Client, topic_name};
use crate::error::{KafkaCode, Result};
use crate::fetch::Isolation;

/// Which offset to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// The first offset whose record timestamp is at or after this time
    /// (milliseconds since the epoch).
    Timestamp(i64),
}

impl OffsetSpec {
    fn wire(self) -> i64 {
        match self {
            Self::Earliest => -2,
            Self::Latest => -1,
            Self::Timestamp(t) => t,
        }
    }
}

/// A ListOffsets answer for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    pub partition: i32,
    /// -1 when no record has a timestamp at or after the one asked for.
    pub offset: i64,
    pub timestamp: i64,
    pub leader_epoch: i32,
}

impl Client {
    /// One partition's offset for `spec`, from its leader (read_uncommitted).
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
    ) -> Result<ListedOffset> {
        self.list_offset_isolated(topic, partition, spec, Isolation::ReadUncommitted)
            .await
    }

    /// As [`Client::list_offset`]; with `ReadCommitted`, `Latest` is the last
    /// stable offset.
    pub async fn list_offset_isolated(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
        isolation: Isolation,
    ) -> Result<ListedOffset> {
        self.with_leader(topic, partition, |conn, epoch| async move {
            let version = conn.version(ApiKey::ListOffsets)?;
            let mut p = ListOffsetsPartition::default();
            p.partition_index = partition;
            p.timestamp = spec.wire();
            p.current_leader_epoch = epoch;
            let mut t = ListOffsetsTopic::default();
            t.name = topic_name(topic);
            t.partitions = vec![p];
            let mut req = ListOffsetsRequest::default();
            req.replica_id = BrokerId(-1);
            req.isolation_level = match isolation {
                Isolation::ReadUncommitted => 0,
                Isolation::ReadCommitted => 1,
            };
            req.topics = vec![t];
            req.timeout_ms = 30_000;
            let r = conn
                .call_at(&req, version, std::time::Duration::ZERO)
                .await?;
            let p = r
                .topics
                .iter()
                .filter(|t| t.name.0.as_str() == topic)
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == partition)
                .ok_or_else(|| {
                    conn.protocol(
                        ApiKey::ListOffsets,
                        version,
                        format!("no answer for {topic}-{partition}"),
                    )
                })?;
            if p.error_code != KafkaCode::NONE.0 {
                return Err(conn.kafka(
                    ApiKey::ListOffsets,
                    Some(format!("{topic}-{partition}")),
                    p.error_code,
                    None,
                ));
            }
            Ok(ListedOffset {
                partition,
                offset: p.offset,
                timestamp: p.timestamp,
                leader_epoch: p.leader_epoch,
            })
        })
        .await
    }

    /// `spec` for each of `partitions`, asked concurrently.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
    ) -> Result<Vec<ListedOffset>> {
        join_all(partitions.iter().map(|&p| self.list_offset(topic, p, spec)))
            .await
            .into_iter()
            .collect()
    }
}
