//! Kafka ACL bindings (layout in [`super::keys`]): one key per binding, so
//! creating one twice or deleting one that is gone changes nothing.

use super::kv::{Op, Txn};
use super::store::{MetaStore, from_json, to_json};
use super::{MetaError, keys};
use crate::auth::acl::Acl;

/// etcd allows 128 operations in a transaction.
const OPS_PER_TXN: usize = 100;

impl MetaStore {
    /// Every binding, in key order.
    pub fn acls(&mut self) -> Result<Vec<Acl>, MetaError> {
        let prefix = keys::acls(self.namespace());
        self.kv_mut()
            .range(&prefix)?
            .iter()
            .map(|(k, v)| from_json(k, v))
            .collect()
    }

    pub fn put_acls(&mut self, acls: &[Acl]) -> Result<(), MetaError> {
        self.acl_ops(acls, |key, acl| Op::Put(key, to_json(acl)))
    }

    pub fn delete_acls(&mut self, acls: &[Acl]) -> Result<(), MetaError> {
        self.acl_ops(acls, |key, _| Op::Delete(key))
    }

    fn acl_ops(&mut self, acls: &[Acl], op: impl Fn(String, &Acl) -> Op) -> Result<(), MetaError> {
        let ns = self.namespace().to_owned();
        for chunk in acls.chunks(OPS_PER_TXN) {
            self.kv_mut().txn(Txn {
                compares: vec![],
                ops: chunk.iter().map(|a| op(keys::acl(&ns, a), a)).collect(),
            })?;
        }
        Ok(())
    }
}
