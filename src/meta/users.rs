//! SCRAM credentials of Kafka users (layout in [`super::keys`]). Only the
//! salt, iteration count, StoredKey and ServerKey are kept.

use super::kv::{Op, Txn};
use super::store::{MetaStore, from_json, to_json};
use super::{MetaError, keys};
use crate::auth::{ScramCredential, ScramMechanism};

impl MetaStore {
    /// Adds or replaces `user`'s credential for its mechanism.
    pub fn put_scram_credential(
        &mut self,
        user: &str,
        cred: &ScramCredential,
    ) -> Result<(), MetaError> {
        let key = keys::user_credential(self.namespace(), user, cred.mechanism.name());
        self.kv_mut().txn(Txn {
            compares: vec![],
            ops: vec![Op::Put(key, to_json(cred))],
        })?;
        Ok(())
    }

    pub fn scram_credential(
        &mut self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<Option<ScramCredential>, MetaError> {
        let key = keys::user_credential(self.namespace(), user, mechanism.name());
        self.kv_mut()
            .get(&key)?
            .map(|v| from_json(&key, &v))
            .transpose()
    }

    /// Every credential, as (user, credential), by user name.
    pub fn scram_credentials(&mut self) -> Result<Vec<(String, ScramCredential)>, MetaError> {
        let prefix = keys::users(self.namespace());
        self.kv_mut()
            .range(&prefix)?
            .iter()
            .map(|(k, v)| {
                let name = k[prefix.len()..].split('/').next().unwrap_or_default();
                Ok((keys::unescape(name), from_json(k, v)?))
            })
            .collect()
    }

    /// Removes `user`'s credential for `mechanism`, or all of them; how
    /// many were removed (an error when none).
    pub fn delete_scram_credentials(
        &mut self,
        user: &str,
        mechanism: Option<ScramMechanism>,
    ) -> Result<usize, MetaError> {
        let ns = self.namespace().to_owned();
        let prefix = keys::user(&ns, user);
        let existing: Vec<String> = self
            .kv_mut()
            .range(&prefix)?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| mechanism.is_none_or(|m| k.ends_with(&format!("/{}", m.name()))))
            .collect();
        if existing.is_empty() {
            return Err(MetaError::NotFound {
                what: match mechanism {
                    Some(m) => format!("a {m} credential of user {user:?}"),
                    None => format!("user {user:?}"),
                },
            });
        }
        let n = existing.len();
        self.kv_mut().txn(Txn {
            compares: vec![],
            ops: existing.into_iter().map(Op::Delete).collect(),
        })?;
        Ok(n)
    }
}
