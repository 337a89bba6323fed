//! Who a Kafka client is: SASL mechanisms on the server side (SCRAM-SHA-256
//! and -512, RFC 5802 / RFC 7677; PLAIN, RFC 4616) checked against SCRAM
//! credentials kept in the metadata store, never a password.
//!
//! ```text
//! kafscale users add alice --password-stdin
//!   CLI: salt, PBKDF2 --> StoredKey, ServerKey --REST--> users/alice/SCRAM-SHA-512
//! client SCRAM:  proof checked with StoredKey (two HMACs, no PBKDF2, on the shard)
//! client PLAIN:  password --PBKDF2 on the hasher thread--> StoredKey compared
//! ```
//!
//! The mechanisms are sans-io: the connection (`broker::sasl`) feeds them
//! tokens and looks credentials up.

pub mod acl;
pub mod cli;
pub mod credential;
pub mod hasher;
pub mod plain;
pub mod scram;
pub mod token;
pub mod token_cli;
pub mod x500;

pub use credential::{ScramCredential, ScramMechanism, UserSummary};

/// Kafka's principal of an authenticated user.
pub fn user_principal(name: &str) -> String {
    format!("User:{name}")
}

/// The principal of a connection that did not authenticate (PLAINTEXT, or
/// SSL without a client certificate), as Kafka names it.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
