//! Object storage for kafscale: an S3 client built for glommio executors, and a
//! local-directory store for the embedded single-node default.
//!
//! ```text
//! caller (a shard) --ObjectStore--> S3Client --hyper 1 http1--> pooled glommio TcpStream (+rustls)
//!                                      |  SigV4 (aws-sigv4, UNSIGNED-PAYLOAD), retries with jitter
//!                  --ObjectStore--> LocalStore --spawn_blocking--> temp file, fsync, rename
//! ```
//!
//! Both stores are `!Send` by design: each shard owns its own client and
//! connection pool. Requests retry 5xx, throttling and connection failures
//! with jittered exponential backoff; errors carry status, S3 code, request id,
//! bucket and key, and never a secret.

// StoreError carries bucket, key, code and request id by value so messages are
// complete; the size is only moved on the error path of network-bound calls.
#![allow(clippy::result_large_err)]

mod body;
mod client;
mod config;
mod conn;
mod credentials;
mod error;
mod local;
mod multipart;
mod sign;
mod store;
mod time;
mod xml;

pub use client::S3Client;
pub use config::{AddressingStyle, ObjectLock, ObjectLockMode, RetryPolicy, S3Config};
pub use credentials::Credentials;
pub use error::StoreError;
pub use local::LocalStore;
pub use multipart::{Completed, MultipartUpload};
pub use sign::Signer;
pub use store::{AnyStore, ListEntry, Object, ObjectMeta, ObjectStore, PutOptions, StoreConfig};
pub use time::{format_unix_ms, parse_rfc3339_ms};
