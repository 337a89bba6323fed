//! Bearer tokens of the REST API (layout in [`super::keys`]): the SHA-256
//! of each secret, never the secret.

use super::kv::{Op, Txn};
use super::store::{MetaStore, from_json, to_json};
use super::{MetaError, keys};
use crate::auth::token::StoredToken;

impl MetaStore {
    pub fn put_token(&mut self, token: &StoredToken) -> Result<(), MetaError> {
        let key = keys::token(self.namespace(), &token.name);
        self.kv_mut().txn(Txn {
            compares: vec![],
            ops: vec![Op::Put(key, to_json(token))],
        })?;
        Ok(())
    }

    pub fn token(&mut self, name: &str) -> Result<Option<StoredToken>, MetaError> {
        let key = keys::token(self.namespace(), name);
        self.kv_mut()
            .get(&key)?
            .map(|v| from_json(&key, &v))
            .transpose()
    }

    pub fn tokens(&mut self) -> Result<Vec<StoredToken>, MetaError> {
        let prefix = keys::tokens(self.namespace());
        self.kv_mut()
            .range(&prefix)?
            .iter()
            .map(|(k, v)| from_json(k, v))
            .collect()
    }

    pub fn delete_token(&mut self, name: &str) -> Result<(), MetaError> {
        if self.token(name)?.is_none() {
            return Err(MetaError::NotFound {
                what: format!("token {name:?}"),
            });
        }
        let key = keys::token(self.namespace(), name);
        self.kv_mut().txn(Txn {
            compares: vec![],
            ops: vec![Op::Delete(key)],
        })?;
        Ok(())
    }
}
