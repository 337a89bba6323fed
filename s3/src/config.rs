//! Client configuration.

use std::time::Duration;

use http::Uri;

use crate::credentials::Credentials;
use crate::error::StoreError;

/// How the bucket appears in request URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressingStyle {
    /// `http://host/bucket/key`: MinIO, s3s, most self-hosted servers.
    Path,
    /// `https://bucket.host/key`: AWS S3's default.
    VirtualHosted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectLockMode {
    Governance,
    Compliance,
}

impl ObjectLockMode {
    pub fn as_header(self) -> &'static str {
        match self {
            Self::Governance => "GOVERNANCE",
            Self::Compliance => "COMPLIANCE",
        }
    }
}

/// Object lock applied to every written object (the bucket must have object
/// lock enabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    pub mode: ObjectLockMode,
    pub retain_for: Duration,
}

/// Jittered exponential backoff: attempt n waits a random time in
/// `[0, min(max_delay, base_delay * 2^n))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    pub fn delay(&self, attempt: u32) -> Duration {
        let cap = self
            .base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        cap.mul_f64(rand::random::<f64>())
    }
}

#[derive(Debug, Clone)]
pub struct S3Config {
    /// `http://127.0.0.1:9000` or `https://s3.eu-west-1.amazonaws.com`.
    pub endpoint: Uri,
    pub bucket: String,
    pub region: String,
    pub addressing: AddressingStyle,
    pub credentials: Credentials,
    pub retry: RetryPolicy,
    /// Time limit for one attempt of one request (connect, send, receive).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Objects larger than this are uploaded as multipart by `ObjectStore::put`.
    pub multipart_threshold: usize,
    /// Part size for multipart uploads made by `ObjectStore::put` (>= 5 MiB).
    pub part_size: usize,
    /// Parts of one upload in flight at once.
    pub max_parts_in_flight: usize,
    /// Send `x-amz-checksum-crc32c` with every PUT and part.
    pub checksums: bool,
    pub object_lock: Option<ObjectLock>,
    /// Idle keep-alive connections kept per client.
    pub max_idle_connections: usize,
}

impl S3Config {
    /// A configuration with defaults for everything but endpoint, bucket and
    /// credentials. Path-style addressing unless the host is `amazonaws.com`.
    pub fn new(
        endpoint: &str,
        bucket: impl Into<String>,
        credentials: Credentials,
    ) -> Result<Self, StoreError> {
        let endpoint: Uri = endpoint
            .trim_end_matches('/')
            .parse()
            .map_err(|e| StoreError::Config(format!("endpoint {endpoint:?} is not a URL: {e}")))?;
        match endpoint.scheme_str() {
            Some("http" | "https") => {}
            _ => {
                return Err(StoreError::Config(format!(
                    "endpoint {endpoint} must start with http:// or https://"
                )));
            }
        }
        if endpoint.host().is_none() {
            return Err(StoreError::Config(format!(
                "endpoint {endpoint} has no host"
            )));
        }
        let addressing = if endpoint
            .host()
            .is_some_and(|h| h.ends_with("amazonaws.com"))
        {
            AddressingStyle::VirtualHosted
        } else {
            AddressingStyle::Path
        };
        let bucket = bucket.into();
        if bucket.is_empty() || bucket.contains('/') {
            return Err(StoreError::Config(format!(
                "bucket name {bucket:?} is not valid"
            )));
        }
        Ok(Self {
            endpoint,
            bucket,
            region: "us-east-1".into(),
            addressing,
            credentials,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            multipart_threshold: 16 * 1024 * 1024,
            part_size: 8 * 1024 * 1024,
            max_parts_in_flight: 4,
            checksums: false,
            object_lock: None,
            max_idle_connections: 32,
        })
    }

    pub fn is_https(&self) -> bool {
        self.endpoint.scheme_str() == Some("https")
    }

    pub fn host(&self) -> &str {
        self.endpoint.host().unwrap_or("localhost")
    }

    pub fn port(&self) -> u16 {
        self.endpoint
            .port_u16()
            .unwrap_or(if self.is_https() { 443 } else { 80 })
    }
}
