//! Topic and group administration: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs,
//! ListGroups, DescribeGroups, and committed offsets (OffsetFetch,
//! OffsetCommit) through each group's coordinator.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use kafscale_codec::kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafscale_codec::kafka_protocol::messages::create_topics_request::{
    CreatableTopic, CreatableTopicConfig,
};
use kafscale_codec::kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafscale_codec::kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafscale_codec::kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafscale_codec::kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafscale_codec::kafka_protocol::messages::{
    ApiKey, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId,
    ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest,
};
use kafscale_codec::kafka_protocol::protocol::StrBytes;

use crate::cluster::{Client, topic_name};
use crate::conn::Connection;
use crate::error::{ClientError, KafkaCode, Result};

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    /// -1 for the broker's default.
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    pub fn new(name: &str, partitions: i32) -> Self {
        Self {
            name: name.to_owned(),
            partitions,
            replication_factor: -1,
            configs: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    /// Empty when the broker's ListGroups version does not report it.
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<GroupMember>,
}

/// A committed offset of a group for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: i32,
    /// -1 when the group has no offset for the partition.
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

const RESOURCE_TOPIC: i8 = 2;
const COORDINATOR_GROUP: i8 = 0;

impl Client {
    /// Creates topics. A topic that already exists is an error
    /// (TOPIC_ALREADY_EXISTS) like any other; callers that accept it check
    /// [`ClientError::code`].
    pub async fn create_topics(&self, topics: &[NewTopic], timeout: Duration) -> Vec<Result<()>> {
        let conn = match self.controller_or_any().await {
            Ok(c) => c,
            Err(e) => return topics.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut req = CreateTopicsRequest::default();
        req.timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        req.topics = topics
            .iter()
            .map(|t| {
                let mut c = CreatableTopic::default();
                c.name = topic_name(&t.name);
                c.num_partitions = t.partitions;
                c.replication_factor = t.replication_factor;
                c.configs = t
                    .configs
                    .iter()
                    .map(|(k, v)| {
                        let mut cfg = CreatableTopicConfig::default();
                        cfg.name = StrBytes::from_string(k.clone());
                        cfg.value = Some(StrBytes::from_string(v.clone()));
                        cfg
                    })
                    .collect();
                c
            })
            .collect();
        let r = match conn.call(&req).await {
            Ok(r) => r,
            Err(e) => return topics.iter().map(|_| Err(e.clone())).collect(),
        };
        topics
            .iter()
            .map(|t| {
                let res = r.topics.iter().find(|x| x.name.0.as_str() == t.name);
                match res {
                    None => Err(conn.protocol(
                        ApiKey::CreateTopics,
                        conn.version(ApiKey::CreateTopics).unwrap_or(-1),
                        format!("no answer for topic {}", t.name),
                    )),
                    Some(x) if x.error_code != 0 => Err(conn.kafka(
                        ApiKey::CreateTopics,
                        Some(t.name.clone()),
                        x.error_code,
                        x.error_message.as_ref(),
                    )),
                    Some(_) => Ok(()),
                }
            })
            .collect()
    }

    /// Deletes topics by name (DeleteTopics); one result per topic, in
    /// order, with the message a broker may give a success (ours says when
    /// a topic's objects stay under object lock).
    pub async fn delete_topics(
        &self,
        topics: &[&str],
        timeout: Duration,
    ) -> Vec<Result<Option<String>>> {
        let conn = match self.controller_or_any().await {
            Ok(c) => c,
            Err(e) => return topics.iter().map(|_| Err(e.clone())).collect(),
        };
        let version = match conn.version(ApiKey::DeleteTopics) {
            Ok(v) => v,
            Err(e) => return topics.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut req = DeleteTopicsRequest::default();
        req.timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        if version >= 6 {
            req.topics = topics
                .iter()
                .map(|t| {
                    let mut s = DeleteTopicState::default();
                    s.name = Some(topic_name(t));
                    s
                })
                .collect();
        } else {
            req.topic_names = topics.iter().map(|t| topic_name(t)).collect();
        }
        let r = match conn.call_at(&req, version, timeout).await {
            Ok(r) => r,
            Err(e) => return topics.iter().map(|_| Err(e.clone())).collect(),
        };
        let answers = topics
            .iter()
            .map(|&t| {
                let res = r
                    .responses
                    .iter()
                    .find(|x| x.name.as_ref().is_some_and(|n| n.0.as_str() == t));
                match res {
                    None => Err(conn.protocol(
                        ApiKey::DeleteTopics,
                        version,
                        format!("no answer for topic {t}"),
                    )),
                    Some(x) if x.error_code != 0 => Err(conn.kafka(
                        ApiKey::DeleteTopics,
                        Some(t.to_owned()),
                        x.error_code,
                        x.error_message.as_ref(),
                    )),
                    Some(x) => Ok(x.error_message.as_ref().map(|m| m.to_string())),
                }
            })
            .collect();
        topics.iter().for_each(|t| self.invalidate(t));
        answers
    }

    /// Grows a topic to `total` partitions (Kafka never shrinks one).
    pub async fn create_partitions(
        &self,
        topic: &str,
        total: i32,
        timeout: Duration,
    ) -> Result<()> {
        let conn = self.controller_or_any().await?;
        let mut t = CreatePartitionsTopic::default();
        t.name = topic_name(topic);
        t.count = total;
        t.assignments = None;
        let mut req = CreatePartitionsRequest::default();
        req.topics = vec![t];
        req.timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let r = conn.call(&req).await?;
        let result = r
            .results
            .iter()
            .find(|x| x.name.0.as_str() == topic)
            .ok_or_else(|| {
                conn.protocol(
                    ApiKey::CreatePartitions,
                    -1,
                    format!("no answer for topic {topic}"),
                )
            })?;
        if result.error_code != 0 {
            return Err(conn.kafka(
                ApiKey::CreatePartitions,
                Some(topic.to_owned()),
                result.error_code,
                result.error_message.as_ref(),
            ));
        }
        self.invalidate(topic);
        Ok(())
    }

    /// Creates a topic unless it exists; waits until metadata shows it.
    pub async fn ensure_topic(&self, topic: &NewTopic) -> Result<()> {
        let r = self
            .create_topics(std::slice::from_ref(topic), Duration::from_secs(30))
            .await
            .pop()
            .unwrap_or(Ok(()));
        match r {
            Err(e) if e.code() != Some(KafkaCode::TOPIC_ALREADY_EXISTS) => return Err(e),
            _ => {}
        }
        let mut attempt = 0;
        loop {
            let m = self.metadata(&[&topic.name]).await?;
            if m.topic(&topic.name).is_some_and(|t| {
                t.error.is_none()
                    && !t.partitions.is_empty()
                    && t.partitions.iter().all(|p| p.leader >= 0)
            }) {
                return Ok(());
            }
            if attempt >= self.config().retries {
                return Err(ClientError::NoLeader {
                    topic: topic.name.clone(),
                    partition: -1,
                    attempts: attempt,
                    last: "the topic was created but its partitions have no leaders yet".into(),
                });
            }
            glommio::timer::sleep(self.backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// A topic's configuration entries (name, value; sensitive values None).
    pub async fn describe_topic_config(
        &self,
        topic: &str,
    ) -> Result<BTreeMap<String, Option<String>>> {
        let conn = self.any_broker().await?;
        let mut res = DescribeConfigsResource::default();
        res.resource_type = RESOURCE_TOPIC;
        res.resource_name = StrBytes::from_string(topic.to_owned());
        res.configuration_keys = None;
        let mut req = DescribeConfigsRequest::default();
        req.resources = vec![res];
        let r = conn.call(&req).await?;
        let result = r
            .results
            .first()
            .ok_or_else(|| conn.protocol(ApiKey::DescribeConfigs, -1, "no result in the answer"))?;
        if result.error_code != 0 {
            return Err(conn.kafka(
                ApiKey::DescribeConfigs,
                Some(topic.to_owned()),
                result.error_code,
                result.error_message.as_ref(),
            ));
        }
        Ok(result
            .configs
            .iter()
            .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
            .collect())
    }

    /// Every group of every broker.
    pub async fn list_groups(&self) -> Result<Vec<ListedGroup>> {
        let brokers: Vec<i32> = {
            let m = self.metadata(&[]).await?;
            m.brokers.iter().map(|b| b.id).collect()
        };
        let mut out = Vec::new();
        for id in brokers {
            let conn = self.broker(id).await?;
            let r = conn.call(&ListGroupsRequest::default()).await?;
            if r.error_code != 0 {
                return Err(conn.kafka(ApiKey::ListGroups, None, r.error_code, None));
            }
            out.extend(r.groups.iter().map(|g| ListedGroup {
                group_id: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(out)
    }

    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        self.with_coordinator(group, |conn| async move {
            let mut req = DescribeGroupsRequest::default();
            req.groups = vec![GroupId(StrBytes::from_string(group.to_owned()))];
            let r = conn.call(&req).await?;
            let g = r.groups.first().ok_or_else(|| {
                conn.protocol(ApiKey::DescribeGroups, -1, "no group in the answer")
            })?;
            if g.error_code != 0 {
                return Err(conn.kafka(
                    ApiKey::DescribeGroups,
                    Some(group.to_owned()),
                    g.error_code,
                    g.error_message.as_ref(),
                ));
            }
            Ok(GroupDescription {
                group_id: g.group_id.0.to_string(),
                state: g.group_state.to_string(),
                protocol_type: g.protocol_type.to_string(),
                protocol: g.protocol_data.to_string(),
                members: g
                    .members
                    .iter()
                    .map(|m| GroupMember {
                        member_id: m.member_id.to_string(),
                        client_id: m.client_id.to_string(),
                        client_host: m.client_host.to_string(),
                    })
                    .collect(),
            })
        })
        .await
    }

    /// A group's committed offsets: for `topics` (topic, partitions), or
    /// for every partition it has offsets for when `topics` is empty.
    pub async fn offset_fetch(
        &self,
        group: &str,
        topics: &[(&str, Vec<i32>)],
    ) -> Result<Vec<CommittedOffset>> {
        self.with_coordinator(group, |conn| async move {
            let version = conn.version(ApiKey::OffsetFetch)?;
            let mut req = OffsetFetchRequest::default();
            let gid = GroupId(StrBytes::from_string(group.to_owned()));
            if version >= 8 {
                let mut g = OffsetFetchRequestGroup::default();
                g.group_id = gid;
                g.topics = (!topics.is_empty()).then(|| {
                    topics
                        .iter()
                        .map(|(t, ps)| {
                            let mut x = OffsetFetchRequestTopics::default();
                            x.name = topic_name(t);
                            x.partition_indexes = ps.clone();
                            x
                        })
                        .collect()
                });
                req.groups = vec![g];
            } else {
                req.group_id = gid;
                req.topics = (!topics.is_empty()).then(|| {
                    topics
                        .iter()
                        .map(|(t, ps)| {
                            let mut x = OffsetFetchRequestTopic::default();
                            x.name = topic_name(t);
                            x.partition_indexes = ps.clone();
                            x
                        })
                        .collect()
                });
            }
            let r = conn.call_at(&req, version, Duration::ZERO).await?;
            let mut out = Vec::new();
            let check = |code: i16, what: String| -> Result<()> {
                if code == 0 {
                    Ok(())
                } else {
                    Err(conn.kafka(ApiKey::OffsetFetch, Some(what), code, None))
                }
            };
            if version >= 8 {
                let g = r.groups.first().ok_or_else(|| {
                    conn.protocol(ApiKey::OffsetFetch, version, "no group in the answer")
                })?;
                check(g.error_code, group.to_owned())?;
                for t in &g.topics {
                    for p in &t.partitions {
                        check(p.error_code, format!("{}-{}", t.name.0, p.partition_index))?;
                        out.push(CommittedOffset {
                            topic: t.name.0.to_string(),
                            partition: p.partition_index,
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p.metadata.as_ref().map(|m| m.to_string()),
                        });
                    }
                }
            } else {
                check(r.error_code, group.to_owned())?;
                for t in &r.topics {
                    for p in &t.partitions {
                        check(p.error_code, format!("{}-{}", t.name.0, p.partition_index))?;
                        out.push(CommittedOffset {
                            topic: t.name.0.to_string(),
                            partition: p.partition_index,
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p.metadata.as_ref().map(|m| m.to_string()),
                        });
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Commits offsets for a group outside any generation (as a group
    /// administrator or a mirror does: the group must have no active members).
    pub async fn offset_commit(&self, group: &str, offsets: &[CommittedOffset]) -> Result<()> {
        self.with_coordinator(group, |conn| async move {
            let mut req = OffsetCommitRequest::default();
            req.group_id = GroupId(StrBytes::from_string(group.to_owned()));
            req.generation_id_or_member_epoch = -1;
            req.member_id = StrBytes::from_static_str("");
            req.retention_time_ms = -1;
            for o in offsets {
                let mut p = OffsetCommitRequestPartition::default();
                p.partition_index = o.partition;
                p.committed_offset = o.offset;
                p.committed_leader_epoch = o.leader_epoch;
                p.committed_metadata = o.metadata.clone().map(StrBytes::from_string);
                match req.topics.iter_mut().find(|t| t.name.0.as_str() == o.topic) {
                    Some(t) => t.partitions.push(p),
                    None => {
                        let mut t = OffsetCommitRequestTopic::default();
                        t.name = topic_name(&o.topic);
                        t.partitions.push(p);
                        req.topics.push(t);
                    }
                }
            }
            let r = conn.call(&req).await?;
            for t in &r.topics {
                for p in &t.partitions {
                    if p.error_code != 0 {
                        return Err(conn.kafka(
                            ApiKey::OffsetCommit,
                            Some(format!("{} {}-{}", group, t.name.0, p.partition_index)),
                            p.error_code,
                            None,
                        ));
                    }
                }
            }
            Ok(())
        })
        .await
    }

    async fn controller_or_any(&self) -> Result<Rc<Connection>> {
        let m = self.metadata(&[]).await?;
        if m.controller >= 0 && m.brokers.iter().any(|b| b.id == m.controller) {
            self.broker(m.controller).await
        } else {
            self.any_broker().await
        }
    }

    /// The group's coordinator (FindCoordinator).
    pub async fn coordinator(&self, group: &str) -> Result<Rc<Connection>> {
        let conn = self.any_broker().await?;
        let version = conn.version(ApiKey::FindCoordinator)?;
        let mut req = FindCoordinatorRequest::default();
        req.key_type = COORDINATOR_GROUP;
        if version >= 4 {
            req.coordinator_keys = vec![StrBytes::from_string(group.to_owned())];
        } else {
            req.key = StrBytes::from_string(group.to_owned());
        }
        let r = conn.call_at(&req, version, Duration::ZERO).await?;
        let (code, message, node) = if version >= 4 {
            let c = r.coordinators.first().ok_or_else(|| {
                conn.protocol(
                    ApiKey::FindCoordinator,
                    version,
                    "no coordinator in the answer",
                )
            })?;
            (c.error_code, c.error_message.clone(), c.node_id.0)
        } else {
            (r.error_code, r.error_message.clone(), r.node_id.0)
        };
        if code != 0 {
            return Err(conn.kafka(
                ApiKey::FindCoordinator,
                Some(group.to_owned()),
                code,
                message.as_ref(),
            ));
        }
        self.broker(node).await
    }

    async fn with_coordinator<T, F, Fut>(&self, group: &str, mut op: F) -> Result<T>
    where
        F: FnMut(Rc<Connection>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            let r = async { op(self.coordinator(group).await?).await }.await;
            match r {
                Err(e)
                    if attempt < self.config().retries
                        && (e.is_retriable()
                            || matches!(
                                e.code(),
                                Some(
                                    KafkaCode::NOT_COORDINATOR
                                        | KafkaCode::COORDINATOR_NOT_AVAILABLE
                                        | KafkaCode::COORDINATOR_LOAD_IN_PROGRESS
                                )
                            )) =>
                {
                    glommio::timer::sleep(self.backoff(attempt)).await;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }
}
