//! What a job reports: per partition where the copy stands against the
//! source, and what went wrong. Each broker writes its part to the metadata
//! store every few seconds; any broker's REST API merges them.

use serde::{Deserialize, Serialize};

/// A partition's state, as `jobs status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionState {
    #[default]
    Starting,
    Running,
    Paused,
    /// The source cannot be reached (or refuses the credentials).
    SourceUnreachable,
    /// The spine cannot take the records (S3 or the metadata store down,
    /// memory budget spent); the job waits and resumes on its own.
    TargetUnavailable,
    /// Source retention deleted records not yet copied; with `on_gap: stop`
    /// the partition stays here until the job is resumed.
    Gap,
    /// Something only an operator can fix (see `last_error`).
    Error,
}

impl PartitionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::SourceUnreachable => "source-unreachable",
            Self::TargetUnavailable => "target-unavailable",
            Self::Gap => "gap",
            Self::Error => "error",
        }
    }

    pub const ALL: [Self; 7] = [
        Self::Starting,
        Self::Running,
        Self::Paused,
        Self::SourceUnreachable,
        Self::TargetUnavailable,
        Self::Gap,
        Self::Error,
    ];
}

/// One mirrored partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PartitionReport {
    pub source_topic: String,
    pub partition: i32,
    pub target_topic: String,
    /// -1 until the source answered a fetch.
    pub source_high_watermark: i64,
    pub source_log_start: i64,
    /// The copy's durable end: its high watermark (records appended but
    /// not yet in S3 and committed do not count).
    pub mirrored_next_offset: i64,
    pub lag_records: i64,
    /// How far behind in time: now minus the newest copied record's
    /// timestamp while records are waiting, else 0.
    pub lag_seconds: f64,
    pub state: PartitionState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub bytes_copied: u64,
    pub records_copied: u64,
    pub fetch_errors: u64,
    /// Newest copied batch's max timestamp (ms), -1 before any.
    pub newest_copied_ms: i64,
}

/// One job's part on one broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct JobReport {
    pub job: String,
    pub broker_id: i32,
    pub reported_ms: i64,
    /// "connected", "connecting" or "unreachable" (the worst of its shards).
    pub source_connection: String,
    /// A job-wide problem (source unreachable, bad credentials, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Topics the job matched but cannot copy, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topic_errors: Vec<(String, String)>,
    pub partitions: Vec<PartitionReport>,
}

/// Offsets the source deleted before the mirror copied them: `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub source_topic: String,
    pub partition: i32,
    pub target_topic: String,
    pub from: i64,
    pub to: i64,
    pub detected_ms: i64,
}

/// `GET /v1/mirror/jobs/{name}/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct JobStatus {
    pub job: String,
    pub source: String,
    /// "running", "paused" or "error".
    pub state: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    pub source_connection: String,
    pub partitions: Vec<PartitionReport>,
    pub gaps: Vec<Gap>,
    pub lag_records: i64,
    pub brokers_reporting: Vec<i32>,
}
