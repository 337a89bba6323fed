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
}

impl PutOptions {
    pub fn with_meta(mut self, name: &str, value: impl ToString) -> Self {
        self.metadata
            .insert(name.to_ascii_lowercase(), value.to_string());
        self
    }
}

/// What HEAD (or GET) says about an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    pub etag: String,
    pub metadata: BTreeMap<String, String>,
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
    /// Writes a whole object; large bodies may be sent in parts.
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        opts: &PutOptions,
    ) -> Result<ObjectMeta, StoreError>;
    async fn get(&self, key: &str) -> Result<Object, StoreError>;
    /// Bytes `range.start..range.end` (end exclusive, clamped to the object).
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError>;
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError>;
    /// Every key under `prefix`, in lexicographic order.
    async fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, StoreError>;
    /// Deletes the keys; missing keys are not an error.
    async fn delete_many(&self, keys: &[String]) -> Result<(), StoreError>;
    /// A short description for messages: `s3://bucket at http://...` or a path.
    fn describe(&self) -> String;
}
