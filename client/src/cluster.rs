//! The client of a whole cluster: bootstrap, the metadata cache (brokers,
//! partition leaders and leader epochs), one connection per broker opened
//! on first use, and retries with jittered backoff that refresh metadata
//! after leadership errors and lost connections.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_rustls::TlsConnector;
use kafscale_codec::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafscale_codec::kafka_protocol::messages::{ApiKey, MetadataRequest, TopicName};
use kafscale_codec::kafka_protocol::protocol::StrBytes;

use crate::config::{ClientConfig, split_host_port};
use crate::conn::{Connection, OpenOptions};
use crate::error::{ClientError, KafkaCode, Result};

/// A broker as metadata names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

impl BrokerInfo {
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    /// -1 while the partition has no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub error: KafkaCode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: [u8; 16],
    pub internal: bool,
    pub error: KafkaCode,
    pub partitions: Vec<PartitionInfo>,
}

/// What one Metadata answer said.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    pub cluster_id: Option<String>,
    pub controller: i32,
    pub brokers: Vec<BrokerInfo>,
    pub topics: Vec<TopicInfo>,
}

impl Metadata {
    pub fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.iter().find(|t| t.name == name)
    }
}

#[derive(Default)]
struct Cache {
    brokers: HashMap<i32, BrokerInfo>,
    topics: HashMap<String, TopicInfo>,
}

pub(crate) struct Inner {
    pub(crate) config: ClientConfig,
    tls: Option<TlsConnector>,
    conns: RefCell<HashMap<i32, Rc<Connection>>>,
    /// A connection to a bootstrap broker, used until metadata names brokers.
    bootstrap: RefCell<Option<Rc<Connection>>>,
    cache: RefCell<Cache>,
    last_refresh: Cell<Option<Instant>>,
}

/// A Kafka client on one glommio executor. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Rc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("bootstrap", &self.inner.config.bootstrap)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Checks the configuration and connects to the first bootstrap broker
    /// that answers (TLS, API versions and SASL included).
    pub async fn connect(config: ClientConfig) -> Result<Self> {
        config.validate()?;
        let tls = if config.security.uses_tls() {
            Some(crate::tls::connector(&config.tls)?)
        } else {
            None
        };
        let client = Self {
            inner: Rc::new(Inner {
                config,
                tls,
                conns: RefCell::default(),
                bootstrap: RefCell::default(),
                cache: RefCell::default(),
                last_refresh: Cell::new(None),
            }),
        };
        client.bootstrap_connection().await?;
        Ok(client)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    async fn bootstrap_connection(&self) -> Result<Rc<Connection>> {
        if let Some(c) = self.inner.bootstrap.borrow().as_ref()
            && !c.is_dead()
        {
            return Ok(c.clone());
        }
        let mut last = None;
        for addr in &self.inner.config.bootstrap {
            match self.open(addr).await {
                Ok(c) => {
                    let c = Rc::new(c);
                    *self.inner.bootstrap.borrow_mut() = Some(c.clone());
                    return Ok(c);
                }
                // A refused login or TLS certificate will not get better on
                // the next bootstrap broker of the same cluster.
                Err(e @ (ClientError::Authentication { .. } | ClientError::Tls { .. })) => {
                    return Err(e);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(ClientError::Bootstrap {
            bootstrap: self.inner.config.bootstrap.join(","),
            last: Box::new(
                last.unwrap_or_else(|| ClientError::Config("no bootstrap broker given".into())),
            ),
        })
    }

    async fn open(&self, addr: &str) -> Result<Connection> {
        let c = &self.inner.config;
        let (host, port) = split_host_port(addr)
            .ok_or_else(|| ClientError::Config(format!("{addr:?} is not HOST:PORT")))?;
        let socket = resolve(host, port)
            .await
            .map_err(|reason| ClientError::Connect {
                addr: addr.to_owned(),
                reason,
            })?;
        let opts = OpenOptions {
            tls: self.inner.tls.as_ref().map(|t| (t, host)),
            sasl: c.sasl.as_ref(),
            client_id: &c.client_id,
            request_timeout: c.request_timeout,
            connect_timeout: c.connect_timeout,
            max_response_bytes: c.max_response_bytes,
        };
        Connection::open(addr, socket, opts).await
    }

    /// The connection to broker `id`, opened if there is none or it died.
    pub async fn broker(&self, id: i32) -> Result<Rc<Connection>> {
        if let Some(c) = self.inner.conns.borrow().get(&id)
            && !c.is_dead()
        {
            return Ok(c.clone());
        }
        let info = self.inner.cache.borrow().brokers.get(&id).cloned();
        let info = match info {
            Some(i) => i,
            None => {
                self.refresh(&[]).await?;
                self.inner
                    .cache
                    .borrow()
                    .brokers
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| ClientError::Connect {
                        addr: format!("broker {id}"),
                        reason: "not in the cluster's metadata".into(),
                    })?
            }
        };
        let conn = Rc::new(self.open(&info.addr()).await?);
        self.inner.conns.borrow_mut().insert(id, conn.clone());
        Ok(conn)
    }

    /// Any live connection: a known broker's, else the bootstrap one.
    pub async fn any_broker(&self) -> Result<Rc<Connection>> {
        let live = self
            .inner
            .conns
            .borrow()
            .values()
            .find(|c| !c.is_dead())
            .cloned();
        match live {
            Some(c) => Ok(c),
            None => self.bootstrap_connection().await,
        }
    }

    /// Metadata for `topics` (all topics when empty), also kept in the cache.
    pub async fn metadata(&self, topics: &[&str]) -> Result<Metadata> {
        let conn = self.any_broker().await?;
        let version = conn.version(ApiKey::Metadata)?;
        let mut req = MetadataRequest::default();
        req.topics = if topics.is_empty() {
            None
        } else {
            Some(
                topics
                    .iter()
                    .map(|t| {
                        let mut mt = MetadataRequestTopic::default();
                        mt.name = Some(topic_name(t));
                        mt
                    })
                    .collect(),
            )
        };
        req.allow_auto_topic_creation = false;
        let r = match conn.call_at(&req, version, Duration::ZERO).await {
            Ok(r) => r,
            Err(e) => {
                self.forget_dead();
                return Err(e);
            }
        };
        let meta = Metadata {
            cluster_id: r.cluster_id.map(|c| c.to_string()),
            controller: r.controller_id.0,
            brokers: r
                .brokers
                .iter()
                .map(|b| BrokerInfo {
                    id: b.node_id.0,
                    host: b.host.to_string(),
                    port: b.port as u16,
                    rack: b.rack.as_ref().map(|r| r.to_string()),
                })
                .collect(),
            topics: r
                .topics
                .iter()
                .map(|t| TopicInfo {
                    name: t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                    id: *t.topic_id.as_bytes(),
                    internal: t.is_internal,
                    error: KafkaCode(t.error_code),
                    partitions: {
                        let mut ps: Vec<PartitionInfo> = t
                            .partitions
                            .iter()
                            .map(|p| PartitionInfo {
                                partition: p.partition_index,
                                leader: p.leader_id.0,
                                leader_epoch: p.leader_epoch,
                                error: KafkaCode(p.error_code),
                            })
                            .collect();
                        ps.sort_by_key(|p| p.partition);
                        ps
                    },
                })
                .collect(),
        };
        let mut cache = self.inner.cache.borrow_mut();
        // Brokers that left: their connections go too.
        cache.brokers = meta.brokers.iter().map(|b| (b.id, b.clone())).collect();
        self.inner.conns.borrow_mut().retain(|id, c| {
            meta.brokers
                .iter()
                .any(|b| b.id == *id && b.addr() == c.addr())
        });
        if topics.is_empty() {
            cache.topics.clear();
        }
        for t in &meta.topics {
            if t.error.is_none() {
                cache.topics.insert(t.name.clone(), t.clone());
            } else {
                cache.topics.remove(&t.name);
            }
        }
        self.inner.last_refresh.set(Some(Instant::now()));
        Ok(meta)
    }

    /// Refreshes the cache for `topics`, at most once per backoff interval.
    pub(crate) async fn refresh(&self, topics: &[&str]) -> Result<()> {
        if let Some(at) = self.inner.last_refresh.get() {
            let since = at.elapsed();
            if since < self.inner.config.retry_backoff {
                glommio::timer::sleep(self.inner.config.retry_backoff - since).await;
            }
        }
        self.metadata(topics).await.map(|_| ())
    }

    /// The cached leader and leader epoch of a partition, refreshing
    /// metadata when the partition is unknown or leaderless.
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<(i32, i32)> {
        if let Some(l) = self.cached_leader(topic, partition) {
            return Ok(l);
        }
        self.refresh(&[topic]).await?;
        self.cached_leader(topic, partition).ok_or_else(|| {
            let cache = self.inner.cache.borrow();
            match cache.topics.get(topic) {
                None => ClientError::Kafka {
                    addr: self.inner.config.bootstrap.join(","),
                    api: crate::error::Api(ApiKey::Metadata),
                    resource: Some(topic.to_owned()),
                    code: KafkaCode::UNKNOWN_TOPIC_OR_PARTITION,
                    message: None,
                },
                Some(t) => ClientError::NoLeader {
                    topic: topic.to_owned(),
                    partition,
                    attempts: 1,
                    last: match t.partitions.iter().find(|p| p.partition == partition) {
                        None => format!("the topic has {} partitions", t.partitions.len()),
                        Some(p) => format!("metadata says {}", p.error),
                    },
                },
            }
        })
    }

    fn cached_leader(&self, topic: &str, partition: i32) -> Option<(i32, i32)> {
        let cache = self.inner.cache.borrow();
        let p = cache
            .topics
            .get(topic)?
            .partitions
            .iter()
            .find(|p| p.partition == partition)?;
        (p.leader >= 0).then_some((p.leader, p.leader_epoch))
    }

    /// Forgets what a leadership error or lost connection made stale.
    pub(crate) fn invalidate(&self, topic: &str) {
        self.inner.cache.borrow_mut().topics.remove(topic);
        self.forget_dead();
    }

    fn forget_dead(&self) {
        self.inner.conns.borrow_mut().retain(|_, c| !c.is_dead());
        let dead = self
            .inner
            .bootstrap
            .borrow()
            .as_ref()
            .is_some_and(|c| c.is_dead());
        if dead {
            *self.inner.bootstrap.borrow_mut() = None;
        }
    }

    /// The pause before retry number `attempt` (0-based): doubling from the
    /// configured backoff up to its maximum, with up to 20% jitter either way.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let c = &self.inner.config;
        let base = c
            .retry_backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(c.retry_backoff_max);
        let jitter = 0.8 + rand::random::<f64>() * 0.4;
        base.mul_f64(jitter)
    }

    /// Runs `op` against the current leader of a partition, retrying after
    /// retriable errors (refreshing metadata first) up to the configured
    /// number of retries.
    pub(crate) async fn with_leader<T, F, Fut>(
        &self,
        topic: &str,
        partition: i32,
        mut op: F,
    ) -> Result<T>
    where
        F: FnMut(Rc<Connection>, i32) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            let result = async {
                let (leader, epoch) = self.leader(topic, partition).await?;
                let conn = self.broker(leader).await?;
                op(conn, epoch).await
            }
            .await;
            match result {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retriable() && attempt < self.inner.config.retries => {
                    tracing::debug!(error = %e, attempt, "retrying after a retriable error");
                    self.invalidate(topic);
                    glommio::timer::sleep(self.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

/// Resolves `host:port` without blocking the executor: IP literals at
/// once, names on glommio's blocking thread pool.
async fn resolve(host: &str, port: u16) -> std::result::Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let name = host.to_owned();
    glommio::executor()
        .spawn_blocking(move || {
            (name.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {name}: {e}"))?
                .next()
                .ok_or_else(|| format!("{name} resolves to no address"))
        })
        .await
}
