//! Kafka error codes: data on the wire, kept apart from Rust errors.

/// A Kafka protocol error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub i16);

impl ErrorCode {
    pub const NONE: Self = Self(0);
    pub const UNKNOWN_SERVER_ERROR: Self = Self(-1);
    pub const OFFSET_OUT_OF_RANGE: Self = Self(1);
    pub const CORRUPT_MESSAGE: Self = Self(2);
    pub const UNKNOWN_TOPIC_OR_PARTITION: Self = Self(3);
    pub const NOT_LEADER_OR_FOLLOWER: Self = Self(6);
    pub const MESSAGE_TOO_LARGE: Self = Self(10);
    pub const COORDINATOR_NOT_AVAILABLE: Self = Self(15);
    pub const NOT_COORDINATOR: Self = Self(16);
    pub const INVALID_TOPIC_EXCEPTION: Self = Self(17);
    pub const INVALID_REQUIRED_ACKS: Self = Self(21);
    pub const UNSUPPORTED_SASL_MECHANISM: Self = Self(33);
    pub const ILLEGAL_SASL_STATE: Self = Self(34);
    pub const UNSUPPORTED_VERSION: Self = Self(35);
    pub const TOPIC_ALREADY_EXISTS: Self = Self(36);
    pub const INVALID_PARTITIONS: Self = Self(37);
    pub const INVALID_CONFIG: Self = Self(40);
    pub const INVALID_REQUEST: Self = Self(42);
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: Self = Self(45);
    pub const INVALID_PRODUCER_EPOCH: Self = Self(47);
    pub const KAFKA_STORAGE_ERROR: Self = Self(56);
    pub const SASL_AUTHENTICATION_FAILED: Self = Self(58);
    pub const UNKNOWN_TOPIC_ID: Self = Self(100);
    pub const ILLEGAL_GENERATION: Self = Self(22);
    pub const INCONSISTENT_GROUP_PROTOCOL: Self = Self(23);
    pub const INVALID_GROUP_ID: Self = Self(24);
    pub const UNKNOWN_MEMBER_ID: Self = Self(25);
    pub const INVALID_SESSION_TIMEOUT: Self = Self(26);
    pub const REBALANCE_IN_PROGRESS: Self = Self(27);
    pub const GROUP_ID_NOT_FOUND: Self = Self(69);
    pub const NON_EMPTY_GROUP: Self = Self(68);
    pub const MEMBER_ID_REQUIRED: Self = Self(79);
    pub const INVALID_RECORD: Self = Self(87);
    pub const TOPIC_AUTHORIZATION_FAILED: Self = Self(29);
    pub const GROUP_AUTHORIZATION_FAILED: Self = Self(30);
    pub const CLUSTER_AUTHORIZATION_FAILED: Self = Self(31);
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: Self = Self(53);
    pub const SECURITY_DISABLED: Self = Self(54);
    pub const TOPIC_DELETION_DISABLED: Self = Self(73);
    pub const RESOURCE_NOT_FOUND: Self = Self(91);
    pub const DUPLICATE_RESOURCE: Self = Self(92);
    pub const UNACCEPTABLE_CREDENTIAL: Self = Self(93);

    pub fn code(self) -> i16 {
        self.0
    }
}

impl From<&crate::meta::MetaError> for ErrorCode {
    fn from(e: &crate::meta::MetaError) -> Self {
        use crate::meta::MetaError as M;
        match e {
            M::UnknownTopic { .. } | M::UnknownPartition { .. } => Self::UNKNOWN_TOPIC_OR_PARTITION,
            M::TopicExists { .. } => Self::TOPIC_ALREADY_EXISTS,
            M::BadPartitionCount { .. } => Self::INVALID_PARTITIONS,
            M::Conflict { .. } | M::Fenced { .. } | M::OwnedBy { .. } => {
                Self::NOT_LEADER_OR_FOLLOWER
            }
            // Refused for good (a name only the brokers may use).
            M::InUse { .. } => Self::INVALID_REQUEST,
            // etcd unreachable, queue full, I/O: retriable for the client.
            _ => Self::KAFKA_STORAGE_ERROR,
        }
    }
}
