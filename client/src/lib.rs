//! kafscale's Kafka client, for glommio executors: the one Rust Kafka
//! client of the tree (the mirror, restore, `kafscale-perf` and the tests
//! use it).
//!
//! It moves record batches as they are: [`Client::fetch`] hands out each
//! batch as a `Bytes` slice of the response frame (no copy, no
//! decompression), and [`Client::produce_raw`] / [`IdempotentProducer`]
//! send batches unchanged but for the producer fields.
//!
//! ```text
//! Client ── metadata cache (brokers, leaders, epochs)
//!   │
//!   ├── Connection per broker ── TLS (rustls) ── SASL (PLAIN, SCRAM) ── ApiVersions
//!   │      pipelined requests, answers matched by correlation id
//!   ├── fetch / produce_raw / IdempotentProducer   (retries refresh metadata)
//!   └── list_offset(s), create_topics, describe_topic_config, groups, offsets
//! ```
//!
//! Errors ([`ClientError`]) name the broker, the API and the Kafka error code
//! by name; passwords and keys never appear in them or in logs.

mod admin;
mod buffers;
mod cluster;
mod config;
mod conn;
mod error;
mod fetch;
mod offsets;
mod produce;
pub mod sasl;
mod tls;

pub use admin::{CommittedOffset, GroupDescription, GroupMember, ListedGroup, NewTopic};
pub use cluster::{BrokerInfo, Client, Metadata, PartitionInfo, TopicInfo};
pub use config::{ClientConfig, Mechanism, SaslConfig, Secret, SecurityProtocol, TlsConfig};
pub use conn::Connection;
pub use error::{Api, ClientError, KafkaCode, Result};
pub use fetch::{AbortedTxn, FetchOptions, FetchSpec, FetchedPartition, Isolation, split_batches};
pub use offsets::{ListedOffset, OffsetSpec};
pub use produce::{Acks, IdempotentProducer, Produced, Stamped};
