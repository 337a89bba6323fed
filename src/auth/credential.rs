//! SCRAM credentials as the metadata store keeps them: the salt, the
//! iteration count, StoredKey and ServerKey (RFC 5802 section 3). Knowing
//! them does not give the password, nor does it let anyone log in (the proof
//! needs ClientKey, which only the password yields).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kafscale_client::sasl::ScramHash;
use serde::{Deserialize, Serialize};

/// Fewest PBKDF2 iterations a credential may have (Kafka's minimum).
pub const MIN_ITERATIONS: u32 = 4096;
/// Most: checking a PLAIN password costs this many HMACs on the hasher thread.
pub const MAX_ITERATIONS: u32 = 16384;
/// What `users add` uses unless told otherwise (Kafka's default).
pub const DEFAULT_ITERATIONS: u32 = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ScramMechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [Self; 2] = [Self::Sha256, Self::Sha512];

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "SCRAM-SHA-256" => Some(Self::Sha256),
            "SCRAM-SHA-512" => Some(Self::Sha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        self.hash().mechanism_name()
    }

    pub fn hash(self) -> ScramHash {
        match self {
            Self::Sha256 => ScramHash::Sha256,
            Self::Sha512 => ScramHash::Sha512,
        }
    }

    /// The number Kafka's DescribeUserScramCredentials uses (KIP-554).
    pub fn kafka_type(self) -> i8 {
        match self {
            Self::Sha256 => 1,
            Self::Sha512 => 2,
        }
    }

    pub fn from_kafka_type(t: i8) -> Option<Self> {
        match t {
            1 => Some(Self::Sha256),
            2 => Some(Self::Sha512),
            _ => None,
        }
    }
}

impl std::fmt::Display for ScramMechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One user's credential for one mechanism. Byte fields are base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    pub mechanism: ScramMechanism,
    pub iterations: u32,
    pub salt: String,
    pub stored_key: String,
    pub server_key: String,
}

/// A credential's keys, decoded.
#[derive(Debug, Clone)]
pub struct Keys {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl ScramCredential {
    /// A new credential with a fresh random salt. The PBKDF2 work is done
    /// here: call it where blocking is fine (the CLI).
    pub fn from_password(
        mechanism: ScramMechanism,
        password: &str,
        iterations: u32,
    ) -> Result<Self, String> {
        let salt: [u8; 24] = rand::random();
        let salted = mechanism
            .hash()
            .salted_password(password.as_bytes(), &salt, iterations);
        Self::from_salted_password(mechanism, &salt, &salted, iterations)
    }

    /// From a salted password, as Kafka's AlterUserScramCredentials carries
    /// it (the client did the PBKDF2 work).
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salt: &[u8],
        salted_password: &[u8],
        iterations: u32,
    ) -> Result<Self, String> {
        check_iterations(iterations)?;
        if salt.is_empty() {
            return Err("the salt is empty".into());
        }
        let (stored, server) = mechanism.hash().stored_and_server_key(salted_password);
        Ok(Self {
            mechanism,
            iterations,
            salt: B64.encode(salt),
            stored_key: B64.encode(stored),
            server_key: B64.encode(server),
        })
    }

    /// Checks what arrived over the REST API before it is stored.
    pub fn validate(&self) -> Result<(), String> {
        check_iterations(self.iterations)?;
        let keys = self.keys()?;
        let len = self.mechanism.hash().hash(b"").len();
        if keys.salt.is_empty() {
            return Err("salt is empty".into());
        }
        if keys.stored_key.len() != len || keys.server_key.len() != len {
            return Err(format!(
                "stored_key and server_key of {} are {len} bytes each",
                self.mechanism
            ));
        }
        Ok(())
    }

    pub fn keys(&self) -> Result<Keys, String> {
        let d = |field: &str, v: &str| {
            B64.decode(v)
                .map_err(|_| format!("{field} of the {} credential is not base64", self.mechanism))
        };
        Ok(Keys {
            salt: d("salt", &self.salt)?,
            iterations: self.iterations,
            stored_key: d("stored_key", &self.stored_key)?,
            server_key: d("server_key", &self.server_key)?,
        })
    }
}

fn check_iterations(iterations: u32) -> Result<(), String> {
    if (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        Ok(())
    } else {
        Err(format!(
            "iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, not {iterations}"
        ))
    }
}

/// A user as `users list` shows it: names and mechanisms, no key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSummary {
    pub name: String,
    pub credentials: Vec<CredentialSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialSummary {
    pub mechanism: ScramMechanism,
    pub iterations: u32,
}

/// Groups `(user, credential)` pairs (in key order) into summaries.
pub fn summarize(creds: Vec<(String, ScramCredential)>) -> Vec<UserSummary> {
    let mut out: Vec<UserSummary> = Vec::new();
    for (name, c) in creds {
        let entry = CredentialSummary {
            mechanism: c.mechanism,
            iterations: c.iterations,
        };
        match out.last_mut() {
            Some(u) if u.name == name => u.credentials.push(entry),
            _ => out.push(UserSummary {
                name,
                credentials: vec![entry],
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_holds_keys_of_the_right_size_and_no_password() {
        let c = ScramCredential::from_password(ScramMechanism::Sha512, "pencil", 4096).unwrap();
        c.validate().unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"SCRAM-SHA-512\""), "{json}");
        assert!(!json.contains("pencil"));
        let k = c.keys().unwrap();
        assert_eq!((k.stored_key.len(), k.server_key.len()), (64, 64));
        // Two credentials from one password differ (fresh salts).
        let d = ScramCredential::from_password(ScramMechanism::Sha512, "pencil", 4096).unwrap();
        assert_ne!(c.stored_key, d.stored_key);
    }

    #[test]
    fn iteration_counts_outside_the_range_are_refused() {
        assert!(ScramCredential::from_password(ScramMechanism::Sha256, "p", 1000).is_err());
        let mut c = ScramCredential::from_password(ScramMechanism::Sha256, "p", 4096).unwrap();
        c.stored_key = B64.encode([0u8; 10]);
        assert!(c.validate().unwrap_err().contains("32 bytes"));
    }
}
