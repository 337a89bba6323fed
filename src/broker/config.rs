//! Broker configuration: flags, `KAFSCALE_*` environment variables and an
//! optional TOML file, in that order of precedence, then defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use serde::{Deserialize, Serialize};

/// A byte count written as `8388608`, `8MiB`, `512MB` or `1GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SizeRepr", into = "SizeRepr")]
pub struct ByteSize(pub u64);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Number(u64),
    Text(String),
}

impl TryFrom<SizeRepr> for ByteSize {
    type Error = String;
    fn try_from(r: SizeRepr) -> Result<Self, String> {
        match r {
            SizeRepr::Number(n) => Ok(Self(n)),
            SizeRepr::Text(s) => s.parse(),
        }
    }
}

impl From<ByteSize> for SizeRepr {
    fn from(b: ByteSize) -> Self {
        Self::Number(b.0)
    }
}

/// `8MiB` as ("8", "MiB"): the leading digits and the rest.
fn number_and_unit(s: &str) -> (&str, &str) {
    s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()))
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (num, unit) = number_and_unit(s);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size (examples: 8388608, 8MiB, 1GiB)"))?;
        let mult = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1000,
            "kib" | "k" => 1024,
            "mb" => 1000 * 1000,
            "mib" | "m" => 1024 * 1024,
            "gb" => 1000 * 1000 * 1000,
            "gib" | "g" => 1024 * 1024 * 1024,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} in {s:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
                ));
            }
        };
        n.checked_mul(mult)
            .map(Self)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

/// The object lock mode of `--s3-object-lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Nobody can delete or shorten a locked version, the root account
    /// included, until its retention ends.
    Compliance,
    /// Users with `s3:BypassGovernanceRetention` can.
    Governance,
}

/// `--s3-object-lock` and `--s3-retention` (the broker's and a restore's)
/// as the S3 client's lock: both or neither.
pub fn object_lock(
    mode: Option<LockMode>,
    retention: Option<Period>,
) -> anyhow::Result<Option<kafscale_s3::ObjectLock>> {
    match (mode, retention) {
        (Some(mode), Some(period)) => Ok(Some(kafscale_s3::ObjectLock {
            mode: mode.into(),
            retain_for: period.0,
        })),
        (None, None) => Ok(None),
        _ => bail!("--s3-object-lock and --s3-retention go together"),
    }
}

impl From<LockMode> for kafscale_s3::ObjectLockMode {
    fn from(m: LockMode) -> Self {
        match m {
            LockMode::Compliance => Self::Compliance,
            LockMode::Governance => Self::Governance,
        }
    }
}

/// A period written as `30d`, `12h`, `90m` or `3600s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Period(pub Duration);

impl TryFrom<String> for Period {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Period> for String {
    fn from(p: Period) -> Self {
        format!("{}s", p.0.as_secs())
    }
}

impl std::str::FromStr for Period {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (num, unit) = number_and_unit(s);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a period (examples: 30d, 12h, 90m, 3600s)"))?;
        let secs = match unit {
            "d" => 86_400,
            "h" => 3_600,
            "m" => 60,
            "s" => 1,
            _ => return Err(format!("{s:?} is not a period: end it in d, h, m or s")),
        };
        match n.checked_mul(secs) {
            Some(0) => Err(format!("{s:?}: a retention must be longer than nothing")),
            Some(t) => Ok(Self(Duration::from_secs(t))),
            None => Err(format!("{s:?} is too long")),
        }
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `kafscale broker` flags. Every flag is also `KAFSCALE_<NAME>` and a key of
/// the TOML file (`--config`) with the flag's name, dashes as underscores.
#[derive(Args, Debug, Clone, Serialize, Deserialize)]
pub struct BrokerArgs {
    /// TOML file with any of these settings.
    #[arg(long, env = "KAFSCALE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Kafka listener (PLAINTEXT); see --listeners for more than one.
    #[arg(long, env = "KAFSCALE_LISTEN", default_value = "0.0.0.0:9092")]
    pub listen: SocketAddr,
    /// HOST:PORT clients are told to connect to (default: localhost and the
    /// listen port). With --listeners, the host of every listener.
    #[arg(long, env = "KAFSCALE_ADVERTISE")]
    pub advertise: Option<String>,
    /// Kafka listeners in Kafka's form, instead of --listen:
    /// `PLAINTEXT://0.0.0.0:9092,SASL_SSL://0.0.0.0:9094` (also SSL and
    /// SASL_PLAINTEXT; one of each).
    #[arg(long, env = "KAFSCALE_LISTENERS", value_delimiter = ',')]
    #[serde(default)]
    pub listeners: Vec<String>,
    /// What clients are told per listener, as
    /// `SASL_SSL://kafka1.example.com:9094,...`; a listener not named here
    /// is advertised on the --advertise host (or localhost) and its port.
    #[arg(long, env = "KAFSCALE_ADVERTISED_LISTENERS", value_delimiter = ',')]
    #[serde(default)]
    pub advertised_listeners: Vec<String>,
    /// SASL mechanisms of the SASL listeners: SCRAM-SHA-512, SCRAM-SHA-256,
    /// PLAIN (checked against the users' SCRAM credentials; use it over TLS).
    #[arg(
        long,
        env = "KAFSCALE_SASL_MECHANISMS",
        value_delimiter = ',',
        default_value = "SCRAM-SHA-512,SCRAM-SHA-256"
    )]
    pub sasl_mechanisms: Vec<String>,
    /// A SASL session lasts this long; then the client re-authenticates
    /// (KIP-368) or its connection is closed at its next request. 0: no
    /// end (Kafka's connections.max.reauth.ms).
    #[arg(long, env = "KAFSCALE_SASL_SESSION_LIFETIME_MS", default_value_t = 0)]
    pub sasl_session_lifetime_ms: u64,
    /// PEM certificate chain of the SSL and SASL_SSL listeners.
    #[arg(long, env = "KAFSCALE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "KAFSCALE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: with it, clients of SSL listeners must present
    /// a certificate one of them signed (mutual TLS). SASL_SSL listeners
    /// never ask for one, as in Kafka: SASL names their clients.
    #[arg(long, env = "KAFSCALE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// How an mTLS client's certificate subject (RFC 2253, as Kafka writes
    /// it) becomes its principal: Kafka's ssl.principal.mapping.rules, e.g.
    /// `RULE:^CN=(.*?),OU=.*$/$1/L,DEFAULT`. A subject no rule maps is
    /// refused.
    #[arg(
        long,
        env = "KAFSCALE_SSL_PRINCIPAL_MAPPING_RULES",
        default_value = "DEFAULT"
    )]
    pub ssl_principal_mapping_rules: String,
    /// `acl`: every request is checked against Kafka ACLs (managed with
    /// `kafka-acls`; nothing is allowed without an ALLOW binding, and a
    /// DENY wins). `none`: everyone may do everything, as in Kafka without
    /// an authorizer.
    #[arg(long, env = "KAFSCALE_AUTHORIZER", default_value = "none", value_parser = ["none", "acl"])]
    #[serde(default = "no_authorizer")]
    pub authorizer: String,
    /// Principals allowed everything with `--authorizer acl`, as Kafka's
    /// super.users: `User:admin;User:ops`.
    #[arg(long, env = "KAFSCALE_SUPER_USERS", default_value = "")]
    #[serde(default)]
    pub super_users: String,
    /// `token`: the REST API (`/v1/...`) needs a bearer token (`kafscale
    /// tokens add`; roles viewer, operator, admin). `none`: anyone who
    /// reaches the HTTP port may do anything.
    #[arg(long, env = "KAFSCALE_HTTP_AUTH", default_value = "token", value_parser = ["token", "none"])]
    #[serde(default = "token_auth")]
    pub http_auth: String,
    /// /metrics and /healthz need a (viewer) token too.
    #[arg(long, env = "KAFSCALE_HTTP_AUTH_ALL", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    #[serde(default)]
    pub http_auth_all: bool,
    /// The admin token this broker registers at start-up: read from this
    /// file if it exists, else made and written to it (mode 0600). Default:
    /// `admin.token` in --data-dir, where the CLIs look for it.
    #[arg(long, env = "KAFSCALE_HTTP_TOKEN_FILE")]
    pub http_token_file: Option<PathBuf>,
    /// Also write the audit trail to the read-only topic `__kafscale_audit`
    /// (it is always on the log).
    #[arg(long, env = "KAFSCALE_AUDIT_TOPIC", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    #[serde(default = "yes")]
    pub audit_topic: bool,
    /// Record every change of a committed group offset in the read-only
    /// topic `__kafscale_offsets`, the history `kafscale restore --groups`
    /// replays.
    #[arg(long, env = "KAFSCALE_OFFSET_HISTORY", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    #[serde(default = "yes")]
    pub offset_history: bool,
    /// How often offset changes are appended to `__kafscale_offsets` (a
    /// broker killed with SIGKILL loses at most this much of the history;
    /// one that stops appends what it holds first).
    #[arg(long, env = "KAFSCALE_OFFSET_HISTORY_INTERVAL", default_value = "5s")]
    #[serde(default = "five_seconds")]
    pub offset_history_interval: Period,
    /// HTTP listener for /metrics and /healthz.
    #[arg(long, env = "KAFSCALE_METRICS_LISTEN", default_value = "0.0.0.0:9093")]
    pub metrics_listen: SocketAddr,
    /// Where the embedded default keeps objects and metadata.
    #[arg(long, env = "KAFSCALE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// S3 endpoint URL; with --s3-bucket, segments go to S3 instead of --data-dir.
    #[arg(long, env = "KAFSCALE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "KAFSCALE_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    #[arg(long, env = "KAFSCALE_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Create the bucket at start-up if it does not exist (quick starts, tests).
    #[arg(long, env = "KAFSCALE_S3_CREATE_BUCKET", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub s3_create_bucket: bool,
    /// Write every `.kfs` and `.index` with S3 object lock in this mode, so
    /// no one can delete or replace a committed segment before
    /// --s3-retention ends. The bucket must have object lock enabled
    /// (--s3-create-bucket makes it so); start-up checks.
    #[arg(
        long,
        env = "KAFSCALE_S3_OBJECT_LOCK",
        value_enum,
        requires = "s3_retention"
    )]
    pub s3_object_lock: Option<LockMode>,
    /// How long each segment stays locked after it is written (`30d`).
    #[arg(long, env = "KAFSCALE_S3_RETENTION", requires = "s3_object_lock")]
    pub s3_retention: Option<Period>,
    /// Prefix of every object key and metadata key.
    #[arg(long, env = "KAFSCALE_S3_NAMESPACE", default_value = "default")]
    pub s3_namespace: String,
    /// etcd endpoints, comma-separated; without them metadata is embedded in --data-dir.
    #[arg(long, env = "KAFSCALE_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// Executors (one per core by default).
    #[arg(long, env = "KAFSCALE_SHARDS")]
    pub shards: Option<usize>,
    /// Longest a record waits in memory before its segment is uploaded.
    #[arg(long, env = "KAFSCALE_FLUSH_INTERVAL_MS", default_value_t = 250)]
    pub flush_interval_ms: u64,
    /// A partition's buffer is sealed and uploaded when it reaches this size.
    #[arg(long, env = "KAFSCALE_SEGMENT_BYTES", default_value = "8MiB")]
    pub segment_bytes: ByteSize,
    /// Memory for request bodies, unsealed segments, the fetch cache and
    /// fetch answers on their way out, split across shards. RSS stays within
    /// this plus a small fixed overhead.
    #[arg(long, env = "KAFSCALE_MEMORY_BUDGET", default_value = "512MiB")]
    pub memory_budget: ByteSize,
    /// The part of --memory-budget that keeps recently written segments for
    /// fetches (default: a quarter of the budget).
    #[arg(long, env = "KAFSCALE_FETCH_CACHE_BYTES")]
    pub fetch_cache_bytes: Option<ByteSize>,
    /// Largest request frame accepted.
    #[arg(long, env = "KAFSCALE_MAX_FRAME_BYTES", default_value = "100MiB")]
    pub max_frame_bytes: ByteSize,
    /// How long a request frame's body may take to arrive after its length,
    /// a new connection's first bytes after it connects, and a client to take
    /// any part of an answer written to it (else its connection is closed).
    #[arg(long, env = "KAFSCALE_FRAME_READ_TIMEOUT_MS", default_value_t = 30_000)]
    pub frame_read_timeout_ms: u64,
    /// Kafka connections the broker holds at most (Kafka's
    /// max.connections); one more is closed at once.
    #[arg(long, env = "KAFSCALE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Kafka connections one client address holds at most (Kafka's
    /// max.connections.per.ip), so one client cannot take every place.
    #[arg(long, env = "KAFSCALE_MAX_CONNECTIONS_PER_IP", default_value_t = 1_000)]
    pub max_connections_per_ip: usize,
    /// Most record bytes one fetch answer carries, whatever the client asks
    /// (Kafka's fetch.max.bytes; one whole batch always comes).
    #[arg(long, env = "KAFSCALE_FETCH_MAX_BYTES", default_value = "55MiB")]
    pub fetch_max_bytes: ByteSize,
    /// This broker's id in the cluster. Default: 0 with embedded metadata;
    /// with etcd, the lowest id no live broker holds.
    #[arg(long, env = "KAFSCALE_BROKER_ID")]
    pub broker_id: Option<i32>,
    /// Seconds a broker's etcd lease (its registration and everything it
    /// owns) outlives its last renewal; a failed broker's partitions move
    /// after this long.
    #[arg(long, env = "KAFSCALE_LEASE_TTL_SECS", default_value_t = 10)]
    pub lease_ttl_secs: u64,
    /// Create unknown topics on Metadata/Produce requests, as Kafka does by default.
    #[arg(long, env = "KAFSCALE_AUTO_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_create_topics: bool,
    /// Partitions of auto-created topics.
    #[arg(long, env = "KAFSCALE_DEFAULT_PARTITIONS", default_value_t = 1)]
    pub default_partitions: u32,
    /// Most partitions one topic may have (CreateTopics, CreatePartitions).
    #[arg(
        long,
        env = "KAFSCALE_MAX_PARTITIONS_PER_TOPIC",
        default_value_t = 10_000
    )]
    pub max_partitions_per_topic: u32,
}

impl BrokerArgs {
    /// Applies `--config` file values to every setting still at its default.
    pub fn with_file(mut self, matches: &ArgMatches) -> anyhow::Result<Self> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read --config {}", path.display()))?;
        let file: toml::Table = toml::from_str(&text)
            .with_context(|| format!("--config {} is not valid TOML", path.display()))?;
        let mut current = serde_json::to_value(&self)?;
        let obj = current.as_object_mut().context("settings are an object")?;
        for (key, value) in file {
            if !obj.contains_key(&key) {
                bail!("--config {}: unknown setting {key:?}", path.display());
            }
            if matches.value_source(&key) == Some(ValueSource::DefaultValue)
                || matches.value_source(&key).is_none()
            {
                obj.insert(key, serde_json::to_value(value)?);
            }
        }
        let config = self.config.take();
        self = serde_json::from_value(current)
            .with_context(|| format!("--config {}: a value has the wrong type", path.display()))?;
        self.config = config;
        Ok(self)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.s3_bucket.is_some() != self.s3_endpoint.is_some() {
            bail!(
                "--s3-endpoint and --s3-bucket go together: give both to use S3, or neither for the local data directory"
            );
        }
        if self.segment_bytes.0 < 1024 {
            bail!("--segment-bytes must be at least 1KiB");
        }
        if self.broker_id.is_some_and(|id| id < 0) {
            bail!("--broker-id must be 0 or more");
        }
        if !(1..=300).contains(&self.lease_ttl_secs) {
            bail!("--lease-ttl-secs must be between 1 and 300");
        }
        if self.flush_interval_ms == 0 {
            bail!("--flush-interval-ms must be at least 1");
        }
        if self.default_partitions == 0 {
            bail!("--default-partitions must be at least 1");
        }
        if self.max_partitions_per_topic == 0 || self.max_partitions_per_topic > i32::MAX as u32 {
            bail!("--max-partitions-per-topic must be between 1 and 2147483647");
        }
        if self.default_partitions > self.max_partitions_per_topic {
            bail!("--default-partitions must be at most --max-partitions-per-topic");
        }
        if self.shards == Some(0) {
            bail!("--shards must be at least 1");
        }
        if self.memory_budget.0 < 16 * 1024 * 1024 {
            bail!("--memory-budget must be at least 16MiB");
        }
        if self.fetch_cache().0 > self.memory_budget.0 / 2 {
            bail!("--fetch-cache-bytes must be at most half of --memory-budget");
        }
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            bail!("--max-connections and --max-connections-per-ip must be at least 1");
        }
        if self.frame_read_timeout_ms == 0 {
            bail!("--frame-read-timeout-ms must be at least 1");
        }
        if self.fetch_max_bytes.0 < 1024 || self.fetch_max_bytes.0 > i32::MAX as u64 {
            bail!("--fetch-max-bytes must be between 1KiB and 2GiB");
        }
        if self.max_frame_bytes.0 < 1024 || self.max_frame_bytes.0 > i32::MAX as u64 {
            bail!("--max-frame-bytes must be between 1KiB and 2GiB");
        }
        Ok(())
    }

    pub fn frame_read_timeout(&self) -> Duration {
        Duration::from_millis(self.frame_read_timeout_ms)
    }

    pub fn fetch_cache(&self) -> ByteSize {
        self.fetch_cache_bytes
            .unwrap_or(ByteSize(self.memory_budget.0 / 4))
    }

    /// The part of the budget for fetch answers read but not yet written
    /// to their clients: a quarter.
    pub fn fetch_answer_budget(&self) -> u64 {
        self.memory_budget.0 / 4
    }

    /// The budget left for request bodies and unsealed segments.
    pub fn produce_budget(&self) -> u64 {
        self.memory_budget.0 - self.fetch_cache().0 - self.fetch_answer_budget()
    }

    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    /// The Kafka listeners and what each advertises.
    pub fn listener_plan(
        &self,
    ) -> anyhow::Result<(
        Vec<super::listeners::Listener>,
        Vec<crate::meta::ListenerEndpoint>,
    )> {
        use super::listeners::{Listener, Protocol, advertised, parse_listeners};
        if self.listeners.is_empty() {
            if !self.advertised_listeners.is_empty() {
                bail!("--advertised-listeners needs --listeners");
            }
            let (host, port) = self.advertised();
            let l = Listener {
                protocol: Protocol::Plaintext,
                addr: self.listen,
            };
            let e = crate::meta::ListenerEndpoint {
                name: Protocol::Plaintext.name().into(),
                host,
                port,
            };
            return Ok((vec![l], vec![e]));
        }
        let listeners = parse_listeners(&self.listeners)?;
        let host = match &self.advertise {
            Some(a) => a.rsplit_once(':').map_or(a.as_str(), |(h, _)| h).to_owned(),
            None if listeners[0].addr.ip().is_unspecified() => "localhost".to_owned(),
            None => listeners[0].addr.ip().to_string(),
        };
        let endpoints = advertised(&listeners, &self.advertised_listeners, &host)?;
        if listeners.iter().any(|l| l.protocol.tls())
            && (self.tls_cert.is_none() || self.tls_key.is_none())
        {
            bail!("an SSL or SASL_SSL listener needs --tls-cert and --tls-key");
        }
        Ok((listeners, endpoints))
    }

    pub fn advertised(&self) -> (String, i32) {
        if let Some(a) = &self.advertise {
            if let Some((h, p)) = a.rsplit_once(':')
                && let Ok(p) = p.parse()
            {
                return (h.to_owned(), p);
            }
            return (a.clone(), i32::from(self.listen.port()));
        }
        let host = if self.listen.ip().is_unspecified() {
            "localhost".to_owned()
        } else {
            self.listen.ip().to_string()
        };
        (host, i32::from(self.listen.port()))
    }
}

fn no_authorizer() -> String {
    "none".into()
}

fn yes() -> bool {
    true
}

fn five_seconds() -> Period {
    Period(Duration::from_secs(5))
}

fn token_auth() -> String {
    "token".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!("8MiB".parse::<ByteSize>(), Ok(ByteSize(8 * 1024 * 1024)));
        assert_eq!("1000".parse::<ByteSize>(), Ok(ByteSize(1000)));
        assert_eq!("2 GB".parse::<ByteSize>(), Ok(ByteSize(2_000_000_000)));
        assert!(
            "8 parsecs"
                .parse::<ByteSize>()
                .unwrap_err()
                .contains("unknown size unit")
        );
    }
}
