//! CreateTopics (v2-v7). Durability comes from the object store, so any
//! replication factor is accepted and the topic is stored once. Topic settings
//! are checked as Kafka checks them (known name, value of its kind; otherwise
//! INVALID_CONFIG) and kept with the topic; DescribeConfigs shows them.

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafscale_codec::header::RequestHeader;

use super::{decode, respond, str_bytes, topic_uuid};
use crate::auth::acl::{Operation, ResourceType};
use crate::broker::conn::{Caller, Reply};
use crate::broker::errors::ErrorCode;
use crate::broker::shard::{Shard, valid_topic_name};
use crate::meta::MetaError;

pub async fn handle(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let req: CreateTopicsRequest = decode(body, header.api_version)?;
    let mut resp = CreateTopicsResponse::default();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut r = CreatableTopicResult::default();
        r.name = t.name.clone();
        let v5 = header.api_version >= 5;
        if v5 {
            r.replication_factor = 1;
        }
        let partitions = if t.num_partitions == -1 {
            if t.assignments.is_empty() {
                shard.args.default_partitions as i32
            } else {
                t.assignments.len() as i32
            }
        } else {
            t.num_partitions
        };
        let az = &shard.authorizer;
        let error = if !az.allows_cluster(caller, Operation::Create)
            && !az.allows(caller, Operation::Create, ResourceType::Topic, &name)
        {
            Some((
                ErrorCode::TOPIC_AUTHORIZATION_FAILED,
                format!(
                    "{} may not create topic {name:?} (CREATE on the cluster or the topic)",
                    caller.principal
                ),
            ))
        } else if let Some(what) = crate::internal::what(&name) {
            Some((
                ErrorCode::INVALID_TOPIC_EXCEPTION,
                format!("{name} is {what}; they create it"),
            ))
        } else if !valid_topic_name(&name) {
            Some((
                ErrorCode::INVALID_TOPIC_EXCEPTION,
                format!("{name:?} is not a legal topic name"),
            ))
        } else if partitions <= 0 {
            Some((
                ErrorCode::INVALID_PARTITIONS,
                format!("number of partitions must be positive, got {partitions}"),
            ))
        } else if partitions as u32 > shard.args.max_partitions_per_topic {
            Some((
                ErrorCode::INVALID_PARTITIONS,
                format!(
                    "{partitions} partitions are more than this broker allows per topic ({}, --max-partitions-per-topic)",
                    shard.args.max_partitions_per_topic
                ),
            ))
        } else {
            None
        };
        if let Some((code, msg)) = error {
            caller.audit(
                "CreateTopics",
                &format!("topic {name}"),
                &format!("refused: {msg}"),
            );
            r.error_code = code.code();
            r.error_message = Some(str_bytes(&msg));
            resp.topics.push(r);
            continue;
        }
        if v5 {
            r.num_partitions = partitions;
        }
        let mut config: BTreeMap<String, String> = t
            .configs
            .iter()
            .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
            .collect();
        let why = config
            .iter()
            .find_map(|(k, v)| check_config(k, v).err())
            .or_else(|| lock_retention(shard, &mut config).err());
        if let Some(why) = why {
            caller.audit(
                "CreateTopics",
                &format!("topic {name}"),
                &format!("refused: {why}"),
            );
            r.error_code = ErrorCode::INVALID_CONFIG.code();
            r.error_message = Some(str_bytes(&why));
            resp.topics.push(r);
            continue;
        }
        if req.validate_only {
            match shard.topic(&name).await {
                Ok(Some(_)) => {
                    r.error_code = ErrorCode::TOPIC_ALREADY_EXISTS.code();
                    r.error_message = Some(str_bytes(&format!("topic {name:?} already exists")));
                }
                Ok(None) => {}
                Err(e) => r.error_code = ErrorCode::from(&e).code(),
            }
            resp.topics.push(r);
            continue;
        }
        let created = shard
            .meta
            .call(move |m| m.create_topic(&name, partitions as u32, config))
            .await;
        match created {
            Ok(meta) => {
                if header.api_version >= 7 {
                    r.topic_id = topic_uuid(&meta.id);
                }
                caller.audit(
                    "CreateTopics",
                    &format!("topic {}, {partitions} partitions", meta.name),
                    "ok",
                );
            }
            Err(e @ MetaError::TopicExists { .. }) => {
                r.error_code = ErrorCode::TOPIC_ALREADY_EXISTS.code();
                r.error_message = Some(str_bytes(&e.to_string()));
            }
            Err(e) => {
                r.error_code = ErrorCode::from(&e).code();
                r.error_message = Some(str_bytes(&e.to_string()));
            }
        }
        resp.topics.push(r);
    }
    respond(header, &resp)
}

/// Longest lock a topic may ask for (S3's longest default retention).
const MAX_LOCK_RETENTION: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);

/// A topic's own lock retention, checked against the broker's and kept
/// as a plain number: only on a broker that locks, never shorter than its
/// `--s3-retention` (a client cannot weaken what the operator set) and at
/// most 100 years.
fn lock_retention(shard: &Shard, config: &mut BTreeMap<String, String>) -> Result<(), String> {
    let key = crate::meta::keys::OBJECT_LOCK_RETENTION_MS;
    let Some(value) = config.get_mut(key) else {
        return Ok(());
    };
    let Some(lock) = shard.store.object_lock() else {
        return Err(format!(
            "{key}: this broker does not lock what it writes (start it with --s3-object-lock)"
        ));
    };
    let ms: u64 = value
        .trim()
        .parse()
        .map_err(|_| format!("invalid value {value:?} for topic config {key}"))?;
    let asked = std::time::Duration::from_millis(ms);
    if asked < lock.retain_for {
        return Err(format!(
            "{key}: {ms} ms is shorter than the broker's --s3-retention ({} ms); a topic can only be locked longer",
            lock.retain_for.as_millis()
        ));
    }
    if asked > MAX_LOCK_RETENTION {
        return Err(format!(
            "{key}: {ms} ms is longer than 100 years ({} ms)",
            MAX_LOCK_RETENTION.as_millis()
        ));
    }
    *value = ms.to_string();
    Ok(())
}

/// The kinds of value a topic setting takes.
enum Kind {
    Long,
    /// A long above 0.
    Positive,
    Int,
    Double,
    Bool,
    /// A list (comma separated) of any words.
    List,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// A comma-separated list of these words.
    ListOf(&'static [&'static str]),
}

/// The topic settings Apache Kafka 4.x knows, with their kinds. Topics keep
/// and describe them; the broker applies only what `describe_configs` lists
/// as its defaults. Anything else is refused, as Kafka refuses it.
const TOPIC_CONFIGS: &[(&str, Kind)] = &[
    ("cleanup.policy", Kind::ListOf(&["delete", "compact"])),
    (
        "compression.type",
        Kind::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
    ),
    ("compression.gzip.level", Kind::Int),
    ("compression.lz4.level", Kind::Int),
    ("compression.zstd.level", Kind::Int),
    ("delete.retention.ms", Kind::Long),
    ("file.delete.delay.ms", Kind::Long),
    ("flush.messages", Kind::Long),
    ("flush.ms", Kind::Long),
    ("follower.replication.throttled.replicas", Kind::List),
    ("index.interval.bytes", Kind::Int),
    ("leader.replication.throttled.replicas", Kind::List),
    ("local.retention.bytes", Kind::Long),
    ("local.retention.ms", Kind::Long),
    ("max.compaction.lag.ms", Kind::Long),
    ("max.message.bytes", Kind::Int),
    ("message.timestamp.after.max.ms", Kind::Long),
    ("message.timestamp.before.max.ms", Kind::Long),
    (
        "message.timestamp.type",
        Kind::OneOf(&["CreateTime", "LogAppendTime"]),
    ),
    ("min.cleanable.dirty.ratio", Kind::Double),
    ("min.compaction.lag.ms", Kind::Long),
    ("min.insync.replicas", Kind::Int),
    ("preallocate", Kind::Bool),
    ("remote.log.copy.disable", Kind::Bool),
    ("remote.log.delete.on.disable", Kind::Bool),
    ("remote.storage.enable", Kind::Bool),
    ("retention.bytes", Kind::Long),
    ("retention.ms", Kind::Long),
    ("segment.bytes", Kind::Int),
    ("segment.index.bytes", Kind::Int),
    ("segment.jitter.ms", Kind::Long),
    ("segment.ms", Kind::Long),
    ("unclean.leader.election.enable", Kind::Bool),
    // Ours: how long this topic's segments stay locked (--s3-object-lock).
    (crate::meta::keys::OBJECT_LOCK_RETENTION_MS, Kind::Positive),
];

/// Whether `name=value` is a topic setting Kafka would accept: a known name
/// and a value of its kind.
fn check_config(name: &str, value: &str) -> Result<(), String> {
    let Some((_, kind)) = TOPIC_CONFIGS.iter().find(|(n, _)| *n == name) else {
        return Err(format!("unknown topic config name: {name}"));
    };
    let v = value.trim();
    let ok = match kind {
        Kind::Long => v.parse::<i64>().is_ok(),
        Kind::Positive => v.parse::<i64>().is_ok_and(|n| n > 0),
        Kind::Int => v.parse::<i32>().is_ok(),
        Kind::Double => v.parse::<f64>().is_ok_and(f64::is_finite),
        Kind::Bool => v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false"),
        Kind::List => true,
        Kind::OneOf(words) => words.contains(&v),
        Kind::ListOf(words) => v.split(',').all(|w| words.contains(&w.trim())),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("invalid value {value:?} for topic config {name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::check_config;

    #[test]
    fn topic_configs_are_checked_like_kafka_checks_them() {
        assert!(check_config("retention.ms", "86400000").is_ok());
        assert!(check_config("retention.ms", "-1").is_ok());
        assert!(check_config("cleanup.policy", "compact,delete").is_ok());
        assert!(check_config("compression.type", "zstd").is_ok());
        assert!(check_config("preallocate", "TRUE").is_ok());
        assert!(check_config("min.cleanable.dirty.ratio", "0.5").is_ok());
        assert!(check_config("kafscale.object.lock.retention.ms", "86400000").is_ok());
        for bad in ["0", "-1", "1d"] {
            assert!(check_config("kafscale.object.lock.retention.ms", bad).is_err());
        }
        for (k, v) in [
            ("no.such.config", "1"),
            ("retention.ms", "abc"),
            ("segment.bytes", "99999999999"),
            ("cleanup.policy", "bogus"),
            ("cleanup.policy", "delete,bogus"),
            ("compression.type", "brotli"),
            ("preallocate", "yes"),
            ("min.cleanable.dirty.ratio", "NaN"),
        ] {
            assert!(check_config(k, v).is_err(), "{k}={v} accepted");
        }
    }
}
