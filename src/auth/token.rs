//! Bearer tokens of the REST API: `NAME.SECRET`, where the metadata store
//! keeps only the SHA-256 of SECRET, the role and when it was made.
//!
//! ```text
//! viewer    GET everything under /v1/
//! operator  viewer + mirror sources and jobs, restores
//! admin     operator + users and tokens
//! ```

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token may do; each role may do what the ones before it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "operator" => Some(Self::Operator),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A token as the metadata store keeps it: never the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    pub name: String,
    pub role: Role,
    /// SHA-256 of the secret, hex.
    pub sha256: String,
    pub created_ms: i64,
}

/// Token names: what a key segment and a log line can hold as they are.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "token name {name:?}: 1 to 64 of A-Z, a-z, 0-9, '-' and '_'"
        ))
    }
}

fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new token `name` with `role`: the token to hand out (once) and what
/// to store.
pub fn generate(name: &str, role: Role, now_ms: i64) -> Result<(String, StoredToken), String> {
    check_name(name)?;
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok((
        format!("{name}.{secret}"),
        stored(name, role, &secret, now_ms),
    ))
}

/// What to store for a token whose secret is known (a bootstrap file).
pub fn stored(name: &str, role: Role, secret: &str, now_ms: i64) -> StoredToken {
    StoredToken {
        name: name.to_owned(),
        role,
        sha256: digest(secret),
        created_ms: now_ms,
    }
}

/// A presented token's name and secret.
pub fn split(token: &str) -> Option<(&str, &str)> {
    let (name, secret) = token.trim().split_once('.')?;
    (check_name(name).is_ok() && !secret.is_empty()).then_some((name, secret))
}

/// Whether `secret` is the one `stored` was made from.
pub fn matches(stored: &StoredToken, secret: &str) -> bool {
    super::constant_time_eq(digest(secret).as_bytes(), stored.sha256.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_matches_only_its_own_secret() {
        let (token, stored) = generate("ci", Role::Operator, 1).unwrap();
        let (name, secret) = split(&token).unwrap();
        assert_eq!(name, "ci");
        assert!(matches(&stored, secret));
        assert!(!matches(&stored, &secret[1..]));
        assert!(!stored.sha256.contains(secret));
        assert!(split("no-secret.").is_none() && split("bad name.x").is_none());
        assert!(check_name("a/b").is_err());
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
    }
}
