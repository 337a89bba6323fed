//! The metadata key layout. All keys live under `/kafscale/{namespace}/`.
//!
//! ```text
//! topics/{topic}                                    TopicMeta
//! partitions/{topic}/{partition:010}/state          PartitionState
//! partitions/{topic}/{partition:010}/segments/{base_offset:020}   SegmentRecord
//! groups/{group}/meta                               group metadata      (consumer groups)
//! groups/{group}/offsets/{topic}/{partition:010}    committed offset    (consumer groups)
//! brokers/{broker_id}                               live broker, leased (clusters)
//! owners/{topic}/{partition:010}                    Owner, leased (clusters)
//! coordinators/{group}                              Owner, leased (clusters)
//! producers/next-id                                 InitProducerId counter
//! mirror/sources/{name}                             mirror SourceSpec
//! mirror/jobs/{name}                                mirror JobSpec
//! mirror/gaps/{job}/{topic}/{partition:010}/{from:020}   Gap
//! users/{user}/{mechanism}                        ScramCredential (never a password)
//! acls/{type}/{pattern}/{name}/{principal}/{host}/{operation}/{permission}   Acl
//! tokens/{name}                                    StoredToken (REST bearer token; SHA-256, never the secret)
//! ```
//!
//! Zero-padded numbers make a prefix listing come back in numeric order.
//! Kafka topic names are `[a-zA-Z0-9._-]`, so they never contain `/`.

pub fn root(ns: &str) -> String {
    format!("/kafscale/{ns}/")
}

pub fn topics(ns: &str) -> String {
    format!("/kafscale/{ns}/topics/")
}

pub fn topic(ns: &str, topic: &str) -> String {
    format!("/kafscale/{ns}/topics/{topic}")
}

pub fn topic_partitions(ns: &str, topic: &str) -> String {
    format!("/kafscale/{ns}/partitions/{topic}/")
}

pub fn partition_state(ns: &str, topic: &str, partition: u32) -> String {
    format!("/kafscale/{ns}/partitions/{topic}/{partition:010}/state")
}

pub fn segments(ns: &str, topic: &str, partition: u32) -> String {
    format!("/kafscale/{ns}/partitions/{topic}/{partition:010}/segments/")
}

pub fn segment(ns: &str, topic: &str, partition: u32, base_offset: i64) -> String {
    format!("/kafscale/{ns}/partitions/{topic}/{partition:010}/segments/{base_offset:020}")
}

pub fn group_offset(ns: &str, group: &str, topic: &str, partition: u32) -> String {
    let group = escape(group);
    format!("/kafscale/{ns}/groups/{group}/offsets/{topic}/{partition:010}")
}

/// A group id as one key segment: Kafka allows any characters in it, so `/`
/// (and `%`, the escape) are percent-encoded; otherwise group "a" would own
/// the keys of group "a/x" (a prefix delete of one removed the other).
pub fn escape(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains(['/', '%']) {
        name.replace('%', "%25").replace('/', "%2F").into()
    } else {
        name.into()
    }
}

/// The group id of an escaped key segment.
pub fn unescape(segment: &str) -> String {
    segment.replace("%2F", "/").replace("%25", "%")
}

pub fn broker(ns: &str, broker_id: i32) -> String {
    format!("/kafscale/{ns}/brokers/{broker_id}")
}

pub fn brokers(ns: &str) -> String {
    format!("/kafscale/{ns}/brokers/")
}

pub fn owners(ns: &str) -> String {
    format!("/kafscale/{ns}/owners/")
}

pub fn topic_owners(ns: &str, topic: &str) -> String {
    format!("/kafscale/{ns}/owners/{topic}/")
}

pub fn coordinators(ns: &str) -> String {
    format!("/kafscale/{ns}/coordinators/")
}

pub fn coordinator(ns: &str, group: &str) -> String {
    format!("/kafscale/{ns}/coordinators/{group}")
}

pub fn owner(ns: &str, topic: &str, partition: u32) -> String {
    format!("/kafscale/{ns}/owners/{topic}/{partition:010}")
}

/// Object keys of a segment in the bucket (`shared/kfs-format.md`).
pub fn segment_object(ns: &str, topic: &str, partition: u32, base_offset: i64) -> (String, String) {
    let stem = format!("{ns}/{topic}/{partition}/segment-{base_offset:020}");
    (format!("{stem}.kfs"), format!("{stem}.index"))
}

/// S3 user metadata of a `.kfs` object (`x-amz-meta-` + name; see
/// `docs/formats.md`): what a tool can learn from a HEAD.
pub mod object_meta {
    pub const BASE_OFFSET: &str = "base-offset";
    pub const LAST_OFFSET: &str = "last-offset";
    pub const MESSAGE_COUNT: &str = "message-count";
    /// When the segment was sealed, just before its upload.
    pub const CREATED_MS: &str = "created-ms";
    /// Smallest batch baseTimestamp.
    pub const MIN_TIMESTAMP: &str = "min-timestamp";
    /// Largest batch maxTimestamp.
    pub const MAX_TIMESTAMP: &str = "max-timestamp";

    /// The write options of a sealed segment's `.kfs`: these names, and
    /// only if absent (a fenced writer never replaces another's segment).
    pub fn put_options(info: &kafscale_codec::kfs::SegmentInfo) -> kafscale_s3::PutOptions {
        kafscale_s3::PutOptions::default()
            .with_meta(BASE_OFFSET, info.base_offset)
            .with_meta(LAST_OFFSET, info.last_offset)
            .with_meta(MESSAGE_COUNT, info.message_count)
            .with_meta(CREATED_MS, info.created_ms)
            .with_meta(MIN_TIMESTAMP, info.min_timestamp)
            .with_meta(MAX_TIMESTAMP, info.max_timestamp)
            .if_absent()
    }
}

/// Topic config: how long the topic's segments stay locked, in ms, instead
/// of the broker's `--s3-retention` (only on a broker that locks).
pub const OBJECT_LOCK_RETENTION_MS: &str = "kafscale.object.lock.retention.ms";

pub fn mirror_sources(ns: &str) -> String {
    format!("/kafscale/{ns}/mirror/sources/")
}

pub fn mirror_source(ns: &str, name: &str) -> String {
    format!("/kafscale/{ns}/mirror/sources/{name}")
}

pub fn mirror_jobs(ns: &str) -> String {
    format!("/kafscale/{ns}/mirror/jobs/")
}

pub fn mirror_job(ns: &str, name: &str) -> String {
    format!("/kafscale/{ns}/mirror/jobs/{name}")
}

pub fn mirror_gaps(ns: &str, job: &str) -> String {
    format!("/kafscale/{ns}/mirror/gaps/{job}/")
}

pub fn mirror_gap(ns: &str, job: &str, topic: &str, partition: i32, from: i64) -> String {
    format!("/kafscale/{ns}/mirror/gaps/{job}/{topic}/{partition:010}/{from:020}")
}

pub fn producer_ids(ns: &str) -> String {
    format!("/kafscale/{ns}/producers/next-id")
}

pub fn groups(ns: &str) -> String {
    format!("/kafscale/{ns}/groups/")
}

pub fn group(ns: &str, group: &str) -> String {
    let group = escape(group);
    format!("/kafscale/{ns}/groups/{group}/")
}

pub fn group_meta(ns: &str, group: &str) -> String {
    let group = escape(group);
    format!("/kafscale/{ns}/groups/{group}/meta")
}

pub fn group_offsets(ns: &str, group: &str) -> String {
    let group = escape(group);
    format!("/kafscale/{ns}/groups/{group}/offsets/")
}

pub fn users(ns: &str) -> String {
    format!("/kafscale/{ns}/users/")
}

/// One user's keys; the name is escaped like a group id (any characters).
pub fn user(ns: &str, user: &str) -> String {
    let user = escape(user);
    format!("/kafscale/{ns}/users/{user}/")
}

pub fn user_credential(ns: &str, user: &str, mechanism: &str) -> String {
    let user = escape(user);
    format!("/kafscale/{ns}/users/{user}/{mechanism}")
}

pub fn acls(ns: &str) -> String {
    format!("/kafscale/{ns}/acls/")
}

/// One ACL binding's key: every field, names escaped like group ids.
pub fn acl(ns: &str, acl: &crate::auth::acl::Acl) -> String {
    format!(
        "/kafscale/{ns}/acls/{}/{}/{}/{}/{}/{}/{}",
        acl.resource_type,
        acl.pattern_type,
        escape(&acl.name),
        escape(&acl.principal),
        escape(&acl.host),
        acl.operation,
        acl.permission
    )
}

pub fn tokens(ns: &str) -> String {
    format!("/kafscale/{ns}/tokens/")
}

/// Token names are `[A-Za-z0-9_-]` (checked where they are made).
pub fn token(ns: &str, name: &str) -> String {
    format!("/kafscale/{ns}/tokens/{name}")
}
