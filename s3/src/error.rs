//! The one error type of this crate. Display is for people; secrets never
//! appear in it.

use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("S3 object s3://{bucket}/{key} does not exist")]
    NotFound { bucket: String, key: String },
    #[error("S3 object s3://{bucket}/{key} already exists (the write required it absent)")]
    Exists { bucket: String, key: String },
    #[error("local store object {key} already exists (the write required it absent)")]
    LocalExists { key: String },
    #[error("S3 bucket {bucket:?} does not exist at {endpoint} (request id {request_id})")]
    NoSuchBucket {
        bucket: String,
        endpoint: String,
        request_id: String,
    },
    #[error(
        "S3 at {endpoint} rejected the credentials for access key {access_key_id:?}: {code}: {message} (request id {request_id}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
    )]
    Credentials {
        endpoint: String,
        access_key_id: String,
        code: String,
        message: String,
        request_id: String,
    },
    #[error(
        "S3 {operation} s3://{bucket}/{key} failed: HTTP {status} {code}: {message} (request id {request_id})"
    )]
    Http {
        operation: &'static str,
        status: StatusCode,
        code: String,
        message: String,
        request_id: String,
        bucket: String,
        key: String,
    },
    #[error("cannot reach S3 at {endpoint} for {operation} s3://{bucket}/{key}: {reason}")]
    Connect {
        operation: &'static str,
        endpoint: String,
        bucket: String,
        key: String,
        reason: String,
    },
    #[error("S3 {operation} s3://{bucket}/{key} timed out after {seconds:.1} s")]
    Timeout {
        operation: &'static str,
        bucket: String,
        key: String,
        seconds: f64,
    },
    #[error("S3 {operation} s3://{bucket}/{key} returned a response we cannot read: {reason}")]
    BadResponse {
        operation: &'static str,
        bucket: String,
        key: String,
        reason: String,
    },
    #[error("S3 configuration: {0}")]
    Config(String),
    #[error("local store {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("local store object {key} does not exist")]
    LocalNotFound { key: String },
    #[error("object key {key:?} is not allowed: {reason}")]
    BadKey { key: String, reason: &'static str },
}

impl StoreError {
    /// True when the object (not the bucket) is missing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. } | Self::LocalNotFound { .. })
    }

    /// True when a write that required the key to be absent found an object.
    pub fn is_exists(&self) -> bool {
        matches!(self, Self::Exists { .. } | Self::LocalExists { .. })
    }

    /// True for failures worth retrying later: server errors, throttling,
    /// timeouts, connection failures.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Http { status, code, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || matches!(
                        code.as_str(),
                        "SlowDown"
                            | "RequestTimeout"
                            | "InternalError"
                            | "ServiceUnavailable"
                            | "Throttling"
                            // 409 to a conditional write racing another
                            // write of the key; AWS says to retry (the retry
                            // gets 412 if the other write won).
                            | "ConditionalRequestConflict"
                    )
            }
            Self::Connect { .. } | Self::Timeout { .. } => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16, code: &str) -> StoreError {
        StoreError::Http {
            operation: "PutObject",
            status: StatusCode::from_u16(status).unwrap(),
            code: code.into(),
            message: String::new(),
            request_id: "-".into(),
            bucket: "b".into(),
            key: "k".into(),
        }
    }

    #[test]
    fn retryable_answers() {
        assert!(http(503, "SlowDown").is_retryable());
        assert!(http(500, "").is_retryable());
        assert!(http(429, "").is_retryable());
        assert!(http(409, "ConditionalRequestConflict").is_retryable());
        assert!(!http(409, "BucketAlreadyExists").is_retryable());
        assert!(!http(403, "AccessDenied").is_retryable());
        assert!(!http(400, "InvalidArgument").is_retryable());
    }
}
