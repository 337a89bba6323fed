//! DescribeConfigs (v1-v4): the settings this broker actually applies.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafscale_codec::header::RequestHeader;

use super::{decode, respond, str_bytes};
use crate::auth::acl::{Operation, ResourceType};
use crate::broker::conn::{Caller, Reply};
use crate::broker::errors::ErrorCode;
use crate::broker::shard::Shard;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// ConfigSource values.
const DEFAULT_CONFIG: i8 = 5;
const TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER_CONFIG: i8 = 4;

pub async fn handle(
    shard: &Rc<Shard>,
    caller: &Caller,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, String> {
    let req: DescribeConfigsRequest = decode(body, header.api_version)?;
    let args = &shard.args;
    let defaults: Vec<(&str, String)> = vec![
        ("cleanup.policy", "delete".into()),
        ("compression.type", "producer".into()),
        ("max.message.bytes", args.max_frame_bytes.0.to_string()),
        ("message.timestamp.type", "CreateTime".into()),
        ("min.insync.replicas", "1".into()),
        ("retention.ms", "-1".into()),
        ("retention.bytes", "-1".into()),
        ("segment.bytes", args.segment_bytes.0.to_string()),
        ("flush.ms", args.flush_interval_ms.to_string()),
    ];
    let mut resp = DescribeConfigsResponse::default();
    for res in req.resources {
        let mut r = DescribeConfigsResult::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        // (name, value, source, the default it overrides)
        let mut entries: Vec<(String, String, i8, Option<String>)> = Vec::new();
        let (kind, name) = match res.resource_type {
            TOPIC => (ResourceType::Topic, res.resource_name.as_str()),
            _ => (ResourceType::Cluster, crate::auth::acl::CLUSTER_NAME),
        };
        if !shard
            .authorizer
            .authorize(caller, Operation::DescribeConfigs, kind, name)
        {
            // Kafka's answer: the resource's error, no entries.
            r.error_code = match kind {
                ResourceType::Topic => ErrorCode::TOPIC_AUTHORIZATION_FAILED,
                _ => ErrorCode::CLUSTER_AUTHORIZATION_FAILED,
            }
            .code();
            r.error_message = Some(str_bytes(&format!(
                "{} may not describe the configs of {kind} {name} (DESCRIBE_CONFIGS)",
                caller.principal
            )));
            resp.results.push(r);
            continue;
        }
        match res.resource_type {
            TOPIC => match shard.topic(res.resource_name.as_str()).await {
                Ok(Some(t)) => {
                    for (k, v) in &defaults {
                        match t.config.get(*k) {
                            Some(own) => entries.push((
                                (*k).into(),
                                own.clone(),
                                TOPIC_CONFIG,
                                Some(v.clone()),
                            )),
                            None => entries.push(((*k).into(), v.clone(), DEFAULT_CONFIG, None)),
                        }
                    }
                    for (k, v) in &t.config {
                        if !defaults.iter().any(|(d, _)| d == k) {
                            entries.push((k.clone(), v.clone(), TOPIC_CONFIG, None));
                        }
                    }
                }
                Ok(None) => r.error_code = ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code(),
                Err(e) => r.error_code = ErrorCode::from(&e).code(),
            },
            BROKER => {
                entries = defaults
                    .iter()
                    .map(|(k, v)| ((*k).into(), v.clone(), STATIC_BROKER_CONFIG, None))
                    .collect();
                entries.push((
                    "broker.id".into(),
                    shard.cluster.id().to_string(),
                    STATIC_BROKER_CONFIG,
                    None,
                ));
                entries.push((
                    "num.partitions".into(),
                    args.default_partitions.to_string(),
                    STATIC_BROKER_CONFIG,
                    None,
                ));
                entries.push((
                    "auto.create.topics.enable".into(),
                    args.auto_create_topics.to_string(),
                    STATIC_BROKER_CONFIG,
                    None,
                ));
            }
            _ => {
                r.error_code = ErrorCode::INVALID_REQUEST.code();
                r.error_message = Some(str_bytes("only topic and broker resources are described"));
            }
        }
        let wanted = res.configuration_keys.as_ref();
        for (k, v, source, overridden) in entries {
            if wanted.is_some_and(|w| !w.iter().any(|x| x.as_str() == k)) {
                continue;
            }
            let mut c = DescribeConfigsResourceResult::default();
            c.name = str_bytes(&k);
            c.value = Some(str_bytes(&v));
            c.read_only = res.resource_type == BROKER;
            c.config_source = source;
            if req.include_synonyms {
                // As Kafka lists them: by precedence, the value in force first.
                c.synonyms.push(synonym(&k, &v, source));
                if let Some(d) = overridden {
                    c.synonyms.push(synonym(&k, &d, DEFAULT_CONFIG));
                }
            }
            r.configs.push(c);
        }
        resp.results.push(r);
    }
    respond(header, &resp)
}

fn synonym(name: &str, value: &str, source: i8) -> DescribeConfigsSynonym {
    let mut s = DescribeConfigsSynonym::default();
    s.name = str_bytes(name);
    s.value = Some(str_bytes(value));
    s.source = source;
    s
}
