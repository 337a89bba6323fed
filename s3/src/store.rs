//! The object-store interface the broker, mirror and restore use.

use std::collections::BTreeMap;
use std::ops::Range;

use bytes::Bytes;

use crate::error::StoreError;

/// Options for a write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// User metadata, sent as `x-amz-meta-{name}`. Names are lower-case ASCII.
    pub metadata: BTreeMap<String, String>,
    pub content_type: Option<String>,
    /// Write only if no object has the key (`If-None-Match: *`); otherwise
    /// fail with [`StoreError::Exists`] / [`StoreError::LocalExists`]. This is
    /// how a fenced writer is kept from overwriting a segment another
    /// writer already put under the same key.
    pub if_absent: bool,
    /// On a store that locks what it writes: this object's retention
    /// instead of the store's (a topic's own); ignored otherwise.
    pub retain_for: Option<std::time::Duration>,
}

impl PutOptions {
    pub fn retain_for(mut self, period: Option<std::time::Duration>) -> Self {
        self.retain_for = period;
        self
    }

    pub fn with_meta(mut self, name: &str, value: impl ToString) -> Self {
        self.metadata
            .insert(name.to_ascii_lowercase(), value.to_string());
        self
    }

    pub fn if_absent(mut self) -> Self {
        self.if_absent = true;
        self
    }
}

/// What HEAD (or GET) says about an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    pub etag: String,
    pub metadata: BTreeMap<String, String>,
    /// Object lock of this version as HEAD/GET reported it
    /// (`x-amz-object-lock-mode`, `...-retain-until-date`); `None` when the
    /// object is not locked or the store has no locks.
    pub lock_mode: Option<String>,
    pub lock_retain_until: Option<String>,
    /// The version a versioned bucket (every bucket with object lock) gave
    /// this write or answered this read with (`x-amz-version-id`); `None`
    /// without versioning and on the local store.
    pub version_id: Option<String>,
}

/// An object read whole.
#[derive(Debug, Clone)]
pub struct Object {
    pub body: Bytes,
    pub meta: ObjectMeta,
}

/// One listed key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListEntry {
    pub key: String,
    pub size: u64,
    pub etag: String,
    /// As the server gave it (ISO 8601); empty for the local store.
    pub last_modified: String,
}

/// A bucket of immutable objects addressed by key.
///
/// Implementations are used from one glommio executor each; their futures are
/// not `Send`, which is why the `async fn`s carry no `Send` bound.
#[allow(async_fn_in_trait)]
pub trait ObjectStore {
    /// Writes a whole object given as pieces, in order (sent without
    /// joining them); large bodies may be sent in parts.
    async fn put_chunks(
        &self,
        key: &str,
        chunks: Vec<Bytes>,
        opts: &PutOptions,
    ) -> Result<ObjectMeta, StoreError>;
    /// Writes a whole object.
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        opts: &PutOptions,
    ) -> Result<ObjectMeta, StoreError> {
        self.put_chunks(key, vec![body], opts).await
    }
    async fn get(&self, key: &str) -> Result<Object, StoreError>;
    /// Bytes `range.start..range.end` (end exclusive, clamped to the object).
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError>;
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError>;
    /// Every key under `prefix`, in lexicographic order.
    async fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, StoreError>;
    /// Deletes the keys; missing keys are not an error.
    async fn delete_many(&self, keys: &[String]) -> Result<(), StoreError>;
    /// Copies object `from` to a new key `to` inside the store, without the
    /// bytes passing through this process (S3 CopyObject, a hard link on a
    /// local directory). User metadata goes with it; `to` must not exist.
    async fn copy(&self, from: &str, to: &str) -> Result<ObjectMeta, StoreError>;
    /// A short description for messages: `s3://bucket at http://...` or a path.
    fn describe(&self) -> String;

    // Reads of one version of a key. A segment's record keeps the versions
    // its upload made, so what is served and restored is exactly what was
    // committed, whatever was written or deleted under the key later. With
    // `None`, and on stores without versions, they read the key's current
    // object.

    async fn get_version(&self, key: &str, _version: Option<&str>) -> Result<Object, StoreError> {
        self.get(key).await
    }
    async fn get_range_version(
        &self,
        key: &str,
        _version: Option<&str>,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        self.get_range(key, range).await
    }
    async fn head_version(
        &self,
        key: &str,
        _version: Option<&str>,
    ) -> Result<ObjectMeta, StoreError> {
        self.head(key).await
    }
    /// [`ObjectStore::copy`] of one version of `from`.
    async fn copy_version(
        &self,
        from: &str,
        _version: Option<&str>,
        to: &str,
    ) -> Result<ObjectMeta, StoreError> {
        self.copy(from, to).await
    }
}

/// Either store, chosen at start-up. Not `Send`: build one per shard from a
/// [`StoreConfig`].
#[derive(Debug, Clone)]
pub enum AnyStore {
    Local(crate::LocalStore),
    S3(crate::S3Client),
}

impl AnyStore {
    /// The lock every write carries, if any (S3 only).
    pub fn object_lock(&self) -> Option<crate::ObjectLock> {
        match self {
            Self::Local(_) => None,
            Self::S3(s) => s.config().object_lock,
        }
    }
}

/// How to build an [`AnyStore`] on each shard (`Send`).
#[derive(Debug, Clone)]
pub enum StoreConfig {
    Local(std::path::PathBuf),
    S3(Box<crate::S3Config>),
}

impl StoreConfig {
    /// Builds the store for the calling executor.
    pub fn build(&self) -> Result<AnyStore, StoreError> {
        Ok(match self {
            Self::Local(path) => AnyStore::Local(crate::LocalStore::open(path)?),
            Self::S3(cfg) => AnyStore::S3(crate::S3Client::new(cfg.as_ref().clone())),
        })
    }
}

impl ObjectStore for AnyStore {
    async fn put_chunks(
        &self,
        key: &str,
        chunks: Vec<Bytes>,
        opts: &PutOptions,
    ) -> Result<ObjectMeta, StoreError> {
        match self {
            Self::Local(s) => s.put_chunks(key, chunks, opts).await,
            Self::S3(s) => s.put_chunks(key, chunks, opts).await,
        }
    }
    async fn get(&self, key: &str) -> Result<Object, StoreError> {
        match self {
            Self::Local(s) => s.get(key).await,
            Self::S3(s) => s.get(key).await,
        }
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        match self {
            Self::Local(s) => s.get_range(key, range).await,
            Self::S3(s) => s.get_range(key, range).await,
        }
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        match self {
            Self::Local(s) => s.head(key).await,
            Self::S3(s) => s.head(key).await,
        }
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, StoreError> {
        match self {
            Self::Local(s) => s.list(prefix).await,
            Self::S3(s) => s.list(prefix).await,
        }
    }
    async fn delete_many(&self, keys: &[String]) -> Result<(), StoreError> {
        match self {
            Self::Local(s) => s.delete_many(keys).await,
            Self::S3(s) => s.delete_many(keys).await,
        }
    }
    async fn copy(&self, from: &str, to: &str) -> Result<ObjectMeta, StoreError> {
        match self {
            Self::Local(s) => s.copy(from, to).await,
            Self::S3(s) => s.copy(from, to).await,
        }
    }
    fn describe(&self) -> String {
        match self {
            Self::Local(s) => s.describe(),
            Self::S3(s) => s.describe(),
        }
    }
    async fn get_version(&self, key: &str, version: Option<&str>) -> Result<Object, StoreError> {
        match self {
            Self::Local(s) => s.get_version(key, version).await,
            Self::S3(s) => s.get_version(key, version).await,
        }
    }
    async fn get_range_version(
        &self,
        key: &str,
        version: Option<&str>,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        match self {
            Self::Local(s) => s.get_range_version(key, version, range).await,
            Self::S3(s) => s.get_range_version(key, version, range).await,
        }
    }
    async fn head_version(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<ObjectMeta, StoreError> {
        match self {
            Self::Local(s) => s.head_version(key, version).await,
            Self::S3(s) => s.head_version(key, version).await,
        }
    }
    async fn copy_version(
        &self,
        from: &str,
        version: Option<&str>,
        to: &str,
    ) -> Result<ObjectMeta, StoreError> {
        match self {
            Self::Local(s) => s.copy_version(from, version, to).await,
            Self::S3(s) => s.copy_version(from, version, to).await,
        }
    }
}
