//! SASL client mechanisms, sans-io: PLAIN (RFC 4616) and SCRAM-SHA-256/512
//! (RFC 5802, RFC 7677), as Kafka speaks them inside SaslAuthenticate
//! (KIP-84, KIP-152).
//!
//! ```text
//! client-first   n,,n=USER,r=CNONCE
//! server-first   r=CNONCE+SNONCE,s=SALT,i=ITERATIONS
//! client-final   c=biws,r=NONCE,p=PROOF
//! server-final   v=SERVER-SIGNATURE        (checked: the server knew the key)
//! ```
//!
//! The salted password (PBKDF2, thousands of HMAC rounds) is the expensive
//! step; [`Scram::salted_password`] is a plain function so the connection can
//! run it off the executor.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha512};

use crate::config::Mechanism;

/// Fewest PBKDF2 iterations accepted from a server (Kafka's own minimum);
/// fewer would let a server that is not the real one learn a cheap hash.
pub const MIN_ITERATIONS: u32 = 4096;
/// Most accepted: a hostile server must not make us spin for minutes.
pub const MAX_ITERATIONS: u32 = 1 << 20;

/// The message for PLAIN: authzid (empty), user, password, NUL separated.
pub fn plain_message(user: &str, password: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(user.len() + password.len() + 2);
    m.push(0);
    m.extend_from_slice(user.as_bytes());
    m.push(0);
    m.extend_from_slice(password.as_bytes());
    m
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    pub fn of(mechanism: Mechanism) -> Option<Self> {
        match mechanism {
            Mechanism::ScramSha256 => Some(Self::Sha256),
            Mechanism::ScramSha512 => Some(Self::Sha512),
            Mechanism::Plain => None,
        }
    }

    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // Both HMACs accept keys of any length.
        match self {
            Self::Sha256 => {
                let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
                    .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Self::Sha512 => {
                let mut m = <Hmac<Sha512> as KeyInit>::new_from_slice(key)
                    .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => Sha256::digest(data).to_vec(),
            Self::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// Kafka's name of the mechanism.
    pub fn mechanism_name(self) -> &'static str {
        match self {
            Self::Sha256 => "SCRAM-SHA-256",
            Self::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// What a server keeps of a password (RFC 5802 section 3): StoredKey
    /// (the hash of ClientKey, which checks a client's proof) and ServerKey
    /// (which signs the server's answer), from the salted password.
    pub fn stored_and_server_key(self, salted_password: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let client_key = self.hmac(salted_password, b"Client Key");
        (
            self.hash(&client_key),
            self.hmac(salted_password, b"Server Key"),
        )
    }

    /// RFC 5802's Hi(): PBKDF2 with the HMAC as PRF and one output block.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut first = Vec::with_capacity(salt.len() + 4);
        first.extend_from_slice(salt);
        first.extend_from_slice(&1u32.to_be_bytes());
        let mut u = self.hmac(password, &first);
        let mut out = u.clone();
        for _ in 1..iterations {
            u = self.hmac(password, &u);
            for (o, x) in out.iter_mut().zip(&u) {
                *o ^= x;
            }
        }
        out
    }
}

/// Why a SCRAM exchange stopped on our side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("the server's first message is malformed: {0}")]
    BadServerFirst(String),
    #[error("the server's nonce does not extend ours")]
    NonceMismatch,
    #[error(
        "the server asks for {0} PBKDF2 iterations, outside {MIN_ITERATIONS}..={MAX_ITERATIONS}"
    )]
    Iterations(u32),
    #[error("the server refused the proof: {0}")]
    ServerError(String),
    #[error("the server's final message is malformed")]
    BadServerFinal,
    #[error("the server's signature is wrong: it does not know this user's key")]
    BadServerSignature,
}

/// One SCRAM exchange, driven by the connection.
#[derive(Debug)]
pub struct Scram {
    hash: ScramHash,
    client_nonce: String,
    client_first_bare: String,
}

/// What the server's first message asks for: the inputs of the PBKDF2 step.
#[derive(Debug, Clone)]
pub struct ServerFirst {
    pub raw: String,
    pub nonce: String,
    pub salt: Vec<u8>,
    pub iterations: u32,
}

/// The client's final message and the signature the server must answer with.
#[derive(Debug)]
pub struct ClientFinal {
    pub message: Vec<u8>,
    expected_server_signature: Vec<u8>,
}

impl Scram {
    pub fn new(hash: ScramHash, user: &str, client_nonce: String) -> Self {
        let client_first_bare = format!("n={},r={client_nonce}", escape_name(user));
        Self {
            hash,
            client_nonce,
            client_first_bare,
        }
    }

    /// A nonce of 24 random bytes, base64: printable and comma-free.
    pub fn random_nonce() -> String {
        let bytes: [u8; 24] = rand::random();
        B64.encode(bytes)
    }

    pub fn hash(&self) -> ScramHash {
        self.hash
    }

    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    pub fn parse_server_first(&self, msg: &[u8]) -> Result<ServerFirst, ScramError> {
        let raw = std::str::from_utf8(msg)
            .map_err(|_| ScramError::BadServerFirst("not UTF-8".into()))?
            .to_owned();
        if let Some(e) = raw.strip_prefix("e=") {
            return Err(ScramError::ServerError(e.to_owned()));
        }
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attr in raw.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v.to_owned()),
                Some(("s", v)) => {
                    salt = Some(
                        B64.decode(v)
                            .map_err(|_| ScramError::BadServerFirst("salt is not base64".into()))?,
                    )
                }
                Some(("i", v)) => {
                    iterations = Some(v.parse::<u32>().map_err(|_| {
                        ScramError::BadServerFirst("iteration count is not a number".into())
                    })?)
                }
                Some(("m", _)) => {
                    return Err(ScramError::BadServerFirst(
                        "mandatory extension not supported".into(),
                    ));
                }
                _ => {}
            }
        }
        let nonce = nonce.ok_or_else(|| ScramError::BadServerFirst("no nonce".into()))?;
        let salt = salt.ok_or_else(|| ScramError::BadServerFirst("no salt".into()))?;
        let iterations =
            iterations.ok_or_else(|| ScramError::BadServerFirst("no iteration count".into()))?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(ScramError::NonceMismatch);
        }
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        Ok(ServerFirst {
            raw,
            nonce,
            salt,
            iterations,
        })
    }

    /// The client-final message from the salted password of `first`.
    pub fn client_final(&self, first: &ServerFirst, salted_password: &[u8]) -> ClientFinal {
        let h = self.hash;
        let without_proof = format!("c=biws,r={}", first.nonce);
        let auth_message = format!("{},{},{without_proof}", self.client_first_bare, first.raw);
        let client_key = h.hmac(salted_password, b"Client Key");
        let stored_key = h.hash(&client_key);
        let signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = h.hmac(salted_password, b"Server Key");
        ClientFinal {
            message: format!("{without_proof},p={}", B64.encode(proof)).into_bytes(),
            expected_server_signature: h.hmac(&server_key, auth_message.as_bytes()),
        }
    }
}

impl ClientFinal {
    /// Checks the server-final message: the exchange succeeded only if the
    /// server proved it holds the user's ServerKey.
    pub fn verify_server_final(&self, msg: &[u8]) -> Result<(), ScramError> {
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::BadServerFinal)?;
        if let Some(e) = msg.strip_prefix("e=") {
            return Err(ScramError::ServerError(e.to_owned()));
        }
        let v = msg
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .ok_or(ScramError::BadServerFinal)?;
        let got = B64.decode(v).map_err(|_| ScramError::BadServerFinal)?;
        if got != self.expected_server_signature {
            return Err(ScramError::BadServerSignature);
        }
        Ok(())
    }
}

/// RFC 5802 saslname: `=` and `,` escaped.
fn escape_name(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3's example exchange (SCRAM-SHA-256, user "user",
    /// password "pencil"); RFC 5802's is SHA-1, which Kafka does not offer.
    #[test]
    fn rfc7677_example_exchange() {
        let scram = Scram::new(ScramHash::Sha256, "user", "rOprNGfwEbeRWgbNEkqO".into());
        assert_eq!(scram.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let first = scram
            .parse_server_first(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            )
            .unwrap();
        let salted = ScramHash::Sha256.salted_password(b"pencil", &first.salt, first.iterations);
        let fin = scram.client_final(&first, &salted);
        assert_eq!(
            String::from_utf8(fin.message.clone()).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        fin.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert_eq!(
            fin.verify_server_final(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::BadServerSignature)
        );
    }

    #[test]
    fn hostile_server_first_messages_are_refused() {
        let scram = Scram::new(ScramHash::Sha512, "a,b=c", "abc".into());
        assert_eq!(scram.client_first(), b"n,,n=a=2Cb=3Dc,r=abc");
        assert_eq!(
            scram
                .parse_server_first(b"r=xyz123,s=AAAA,i=4096")
                .unwrap_err(),
            ScramError::NonceMismatch
        );
        assert_eq!(
            scram
                .parse_server_first(b"r=abc,s=AAAA,i=4096")
                .unwrap_err(),
            ScramError::NonceMismatch
        );
        assert_eq!(
            scram.parse_server_first(b"r=abcd,s=AAAA,i=1").unwrap_err(),
            ScramError::Iterations(1)
        );
        assert!(matches!(
            scram.parse_server_first(b"r=abcd,i=4096"),
            Err(ScramError::BadServerFirst(_))
        ));
        assert_eq!(
            scram.parse_server_first(b"e=unknown-user").unwrap_err(),
            ScramError::ServerError("unknown-user".into())
        );
    }

    #[test]
    fn plain_message_layout() {
        assert_eq!(plain_message("u", "p"), b"\0u\0p");
    }
}
