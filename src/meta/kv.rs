//! The key-value interface both metadata backends implement.

use super::MetaError;

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key exists and holds exactly this value.
    Equals(String, String),
    /// The key does not exist.
    Absent(String),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    Put(String, String),
    /// Put bound to a lease: the key disappears when the lease expires.
    PutLeased(String, String, i64),
    Delete(String),
    DeletePrefix(String),
}

/// If every compare holds, apply every op, atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

/// A blocking key-value store with compare-guarded transactions. Called only
/// from the metadata thread.
pub trait Kv: Send {
    fn get(&mut self, key: &str) -> Result<Option<String>, MetaError>;
    /// Every key starting with `prefix`, in key order.
    fn range(&mut self, prefix: &str) -> Result<Vec<(String, String)>, MetaError>;
    /// Returns whether the compares held (and the ops were applied).
    fn txn(&mut self, txn: Txn) -> Result<bool, MetaError>;

    /// Grants a lease that lives `ttl_secs` unless renewed.
    fn grant_lease(&mut self, ttl_secs: i64) -> Result<i64, MetaError>;
    /// Renews a lease; `false` when it has already expired (its keys are gone).
    fn keep_alive(&mut self, lease: i64) -> Result<bool, MetaError>;
    /// Ends a lease now, deleting its keys.
    fn revoke_lease(&mut self, lease: i64) -> Result<(), MetaError>;
    /// The lease `key` is attached to and the seconds it has left (-1 when
    /// it has expired but etcd has not yet deleted its keys); `None` when the
    /// key is absent or not leased. For diagnostics.
    fn lease_of(&mut self, key: &str) -> Result<Option<(i64, i64)>, MetaError>;
}
