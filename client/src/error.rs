//! The client's errors. Each names the broker it came from, the API and,
//! for an error the broker answered, the Kafka error code by name. Secrets
//! (passwords, keys) are never part of one.

use std::fmt;
use std::time::Duration;

use kafscale_codec::kafka_protocol::error::ResponseError;
use kafscale_codec::kafka_protocol::messages::ApiKey;

/// A Kafka error code as a broker sent it: data on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KafkaCode(pub i16);

impl KafkaCode {
    pub const NONE: Self = Self(0);
    pub const OFFSET_OUT_OF_RANGE: Self = Self(1);
    pub const UNKNOWN_TOPIC_OR_PARTITION: Self = Self(3);
    pub const LEADER_NOT_AVAILABLE: Self = Self(5);
    pub const NOT_LEADER_OR_FOLLOWER: Self = Self(6);
    pub const REQUEST_TIMED_OUT: Self = Self(7);
    pub const COORDINATOR_LOAD_IN_PROGRESS: Self = Self(14);
    pub const COORDINATOR_NOT_AVAILABLE: Self = Self(15);
    pub const NOT_COORDINATOR: Self = Self(16);
    pub const INVALID_TOPIC_EXCEPTION: Self = Self(17);
    pub const NOT_ENOUGH_REPLICAS: Self = Self(19);
    pub const UNSUPPORTED_SASL_MECHANISM: Self = Self(33);
    pub const ILLEGAL_SASL_STATE: Self = Self(34);
    pub const UNSUPPORTED_VERSION: Self = Self(35);
    pub const TOPIC_ALREADY_EXISTS: Self = Self(36);
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: Self = Self(45);
    pub const DUPLICATE_SEQUENCE_NUMBER: Self = Self(46);
    pub const KAFKA_STORAGE_ERROR: Self = Self(56);
    pub const SASL_AUTHENTICATION_FAILED: Self = Self(58);
    pub const FENCED_LEADER_EPOCH: Self = Self(74);
    pub const UNKNOWN_LEADER_EPOCH: Self = Self(75);
    pub const OFFSET_NOT_AVAILABLE: Self = Self(78);

    pub fn is_none(self) -> bool {
        self.0 == 0
    }

    /// Kafka's own name for the code, as in its protocol guide
    /// (`NOT_LEADER_OR_FOLLOWER`), or `UNKNOWN` for a code this client does
    /// not know.
    pub fn name(self) -> String {
        match ResponseError::try_from_code(self.0) {
            None => "NONE".to_owned(),
            Some(ResponseError::Unknown(_)) => "UNKNOWN".to_owned(),
            Some(e) => upper_snake(&format!("{e:?}")),
        }
    }

    /// Whether Kafka defines the error as retriable.
    pub fn is_retriable(self) -> bool {
        ResponseError::try_from_code(self.0).is_some_and(|e| e.is_retriable())
    }

    /// Errors after which the partition's leader should be looked up again.
    pub fn is_stale_metadata(self) -> bool {
        matches!(
            self,
            Self::NOT_LEADER_OR_FOLLOWER
                | Self::UNKNOWN_TOPIC_OR_PARTITION
                | Self::LEADER_NOT_AVAILABLE
                | Self::FENCED_LEADER_EPOCH
                | Self::UNKNOWN_LEADER_EPOCH
                | Self::KAFKA_STORAGE_ERROR
        )
    }
}

impl fmt::Display for KafkaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

fn upper_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// An API by its Kafka name (`Fetch`, `SaslAuthenticate`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Api(pub ApiKey);

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // ApiKey's variant names are Kafka's API names.
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("bad client configuration: {0}")]
    Config(String),

    #[error("{addr}: cannot connect: {reason}")]
    Connect { addr: String, reason: String },

    #[error("{addr}: TLS handshake failed: {reason}")]
    Tls { addr: String, reason: String },

    #[error("{addr}: SASL {mechanism} authentication as {user:?} failed: {message}")]
    Authentication {
        addr: String,
        mechanism: &'static str,
        user: String,
        message: String,
    },

    #[error("{addr}: connection lost during {api}: {reason}")]
    ConnectionLost {
        addr: String,
        api: Api,
        reason: String,
    },

    #[error("{addr}: {api}: no answer within {timeout:?}")]
    Timeout {
        addr: String,
        api: Api,
        timeout: Duration,
    },

    #[error("{addr}: {api} v{version}: malformed response: {reason}")]
    Protocol {
        addr: String,
        api: Api,
        version: i16,
        reason: String,
    },

    #[error(
        "{addr}: {api} is not served in a version this client speaks (client {ours:?}, broker {theirs:?})"
    )]
    UnsupportedVersion {
        addr: String,
        api: Api,
        ours: (i16, i16),
        theirs: Option<(i16, i16)>,
    },

    #[error("{addr}: {api}{}: {code}{}", for_what(.resource), message_suffix(.message))]
    Kafka {
        addr: String,
        api: Api,
        /// Topic, partition or group the error is about, if any.
        resource: Option<String>,
        code: KafkaCode,
        message: Option<String>,
    },

    #[error(
        "{topic}-{partition}: offset {requested} is out of range: the log holds [{log_start}, {high_watermark})"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: i32,
        requested: i64,
        log_start: i64,
        high_watermark: i64,
    },

    #[error("{topic}-{partition}: no leader known after {attempts} metadata refreshes: {last}")]
    NoLeader {
        topic: String,
        partition: i32,
        attempts: u32,
        last: String,
    },

    #[error("none of the bootstrap brokers {bootstrap} could be used: {last}")]
    Bootstrap { bootstrap: String, last: Box<Self> },
}

fn for_what(resource: &Option<String>) -> String {
    resource
        .as_ref()
        .map(|r| format!(" for {r}"))
        .unwrap_or_default()
}

fn message_suffix(message: &Option<String>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!(": {m}"),
        _ => String::new(),
    }
}

impl ClientError {
    /// The Kafka error code, when the broker answered with one.
    pub fn code(&self) -> Option<KafkaCode> {
        match self {
            Self::Kafka { code, .. } => Some(*code),
            Self::OffsetOutOfRange { .. } => Some(KafkaCode::OFFSET_OUT_OF_RANGE),
            _ => None,
        }
    }

    /// Whether the same call may succeed later on a fresh connection or
    /// after a metadata refresh.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::ConnectionLost { .. } | Self::Timeout { .. } => true,
            Self::Kafka { code, .. } => code.is_retriable() || code.is_stale_metadata(),
            _ => false,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_as_kafka_names() {
        assert_eq!(
            KafkaCode::NOT_LEADER_OR_FOLLOWER.to_string(),
            "NOT_LEADER_OR_FOLLOWER (6)"
        );
        assert_eq!(KafkaCode(58).name(), "SASL_AUTHENTICATION_FAILED");
        assert_eq!(KafkaCode(-1).name(), "UNKNOWN_SERVER_ERROR");
        assert_eq!(KafkaCode(32000).name(), "UNKNOWN");
        assert_eq!(KafkaCode(0).name(), "NONE");
    }

    #[test]
    fn kafka_errors_name_broker_api_resource_and_code() {
        let e = ClientError::Kafka {
            addr: "127.0.0.1:9092".into(),
            api: Api(ApiKey::Produce),
            resource: Some("orders-3".into()),
            code: KafkaCode::NOT_LEADER_OR_FOLLOWER,
            message: None,
        };
        assert_eq!(
            e.to_string(),
            "127.0.0.1:9092: Produce for orders-3: NOT_LEADER_OR_FOLLOWER (6)"
        );
        assert!(e.is_retriable());
    }
}
