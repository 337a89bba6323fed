//! The server side of SCRAM (RFC 5802, RFC 7677), sans-io.
//!
//! ```text
//! client-first  n,,n=USER,r=CNONCE              parse_client_first -> user to look up
//! server-first  r=CNONCE+SNONCE,s=SALT,i=N      ClientFirst::answer(keys)
//! client-final  c=biws,r=NONCE,p=PROOF          Challenge::finish: the proof is checked
//! server-final  v=SERVER-SIGNATURE
//! ```
//!
//! The only way out of [`Challenge::finish`] with a user is a proof whose
//! hash equals the stored key: a wrong proof, a nonce that is not ours, a
//! changed channel-binding header or an unknown user all end in
//! [`ScramFailure`]. An unknown user gets a made-up but stable salt, so the
//! exchange does not tell who exists.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kafscale_client::sasl::ScramHash;

use super::constant_time_eq;
use super::credential::{Keys, MIN_ITERATIONS};

/// Why an exchange failed. Clients are told only that authentication
/// failed; this is for the broker's log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramFailure {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("unsupported SCRAM feature: {0}")]
    Unsupported(&'static str),
    #[error("unknown user")]
    UnknownUser,
    #[error("the client's nonce or channel binding changed between messages")]
    Mismatch,
    #[error("wrong proof (wrong password)")]
    WrongProof,
}

/// The client's first message, parsed.
#[derive(Debug, Clone)]
pub struct ClientFirst {
    pub user: String,
    gs2_header: String,
    client_nonce: String,
    bare: String,
}

/// Between server-first and client-final.
#[derive(Debug)]
pub struct Challenge {
    hash: ScramHash,
    user: String,
    known: bool,
    keys: Keys,
    gs2_header: String,
    nonce: String,
    auth_prefix: String,
}

pub fn parse_client_first(msg: &[u8]) -> Result<ClientFirst, ScramFailure> {
    let msg = std::str::from_utf8(msg).map_err(|_| ScramFailure::Malformed("not UTF-8"))?;
    // gs2-header: cbind-flag "," [authzid] ","
    let mut parts = msg.splitn(3, ',');
    let (Some(cbind), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(ScramFailure::Malformed("no GS2 header"));
    };
    match cbind {
        "n" | "y" => {}
        c if c.starts_with("p=") => return Err(ScramFailure::Unsupported("channel binding")),
        _ => return Err(ScramFailure::Malformed("bad channel-binding flag")),
    }
    let (mut user, mut nonce) = (None, None);
    for (i, attr) in bare.split(',').enumerate() {
        let Some((k, v)) = attr.split_once('=') else {
            return Err(ScramFailure::Malformed("attribute without a value"));
        };
        match (i, k) {
            (0, "m") => return Err(ScramFailure::Unsupported("mandatory extension")),
            (0, "n") => user = Some(unescape(v)?),
            (1, "r") => nonce = Some(v.to_owned()),
            (0 | 1, _) => return Err(ScramFailure::Malformed("expected n= then r=")),
            // Kafka's delegation tokens ride on this extension; we have none.
            (_, "tokenauth") if v.eq_ignore_ascii_case("true") => {
                return Err(ScramFailure::Unsupported("delegation tokens"));
            }
            _ => {}
        }
    }
    let user = user.ok_or(ScramFailure::Malformed("no user name"))?;
    let client_nonce = nonce.ok_or(ScramFailure::Malformed("no nonce"))?;
    if user.is_empty() || client_nonce.is_empty() {
        return Err(ScramFailure::Malformed("empty user name or nonce"));
    }
    if let Some(a) = authzid.strip_prefix("a=") {
        if unescape(a)? != user {
            return Err(ScramFailure::Unsupported(
                "an authorization id other than the user",
            ));
        }
    } else if !authzid.is_empty() {
        return Err(ScramFailure::Malformed("bad authorization id"));
    }
    Ok(ClientFirst {
        user,
        gs2_header: format!("{cbind},{authzid},"),
        client_nonce,
        bare: bare.to_owned(),
    })
}

impl ClientFirst {
    /// The server-first message and the state awaiting the client's proof.
    /// `keys` is `None` for a user without a credential for this mechanism.
    pub fn answer(self, hash: ScramHash, keys: Option<Keys>) -> (Challenge, Vec<u8>) {
        let known = keys.is_some();
        let keys = keys.unwrap_or_else(|| decoy(hash, &self.user));
        let server_nonce: [u8; 24] = rand::random();
        let nonce = format!("{}{}", self.client_nonce, B64.encode(server_nonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&keys.salt),
            keys.iterations
        );
        let auth_prefix = format!("{},{server_first},", self.bare);
        (
            Challenge {
                hash,
                user: self.user,
                known,
                keys,
                gs2_header: self.gs2_header,
                nonce,
                auth_prefix,
            },
            server_first.into_bytes(),
        )
    }
}

impl Challenge {
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Checks the client's proof; on success, the authenticated user and
    /// the server-final message.
    pub fn finish(self, msg: &[u8]) -> Result<(String, Vec<u8>), ScramFailure> {
        let msg = std::str::from_utf8(msg).map_err(|_| ScramFailure::Malformed("not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramFailure::Malformed("no proof"))?;
        let (mut cbind, mut nonce) = (None, None);
        for (i, attr) in without_proof.split(',').enumerate() {
            match (i, attr.split_once('=')) {
                (0, Some(("c", v))) => cbind = Some(v),
                (1, Some(("r", v))) => nonce = Some(v),
                (0 | 1, _) => return Err(ScramFailure::Malformed("expected c= then r=")),
                _ => {}
            }
        }
        let cbind = B64
            .decode(cbind.ok_or(ScramFailure::Malformed("no channel binding"))?)
            .map_err(|_| ScramFailure::Malformed("channel binding is not base64"))?;
        // RFC 5802 wants our nonce back exactly; librdkafka sends its own
        // nonce before it (client nonce + our whole nonce), which Kafka
        // accepts by checking the end. Either way it carries our fresh
        // part, and the proof covers the message as sent.
        if cbind != self.gs2_header.as_bytes() || !nonce.is_some_and(|n| n.ends_with(&self.nonce)) {
            return Err(ScramFailure::Mismatch);
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramFailure::Malformed("proof is not base64"))?;
        let auth_message = format!("{}{without_proof}", self.auth_prefix);
        let h = self.hash;
        let signature = h.hmac(&self.keys.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(ScramFailure::WrongProof);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        // The one check that authenticates: H(ClientKey) == StoredKey.
        let proof_ok = constant_time_eq(&h.hash(&client_key), &self.keys.stored_key);
        if !self.known {
            return Err(ScramFailure::UnknownUser);
        }
        if !proof_ok {
            return Err(ScramFailure::WrongProof);
        }
        let server_signature = h.hmac(&self.keys.server_key, auth_message.as_bytes());
        Ok((
            self.user,
            format!("v={}", B64.encode(server_signature)).into_bytes(),
        ))
    }
}

/// RFC 5802 saslname: `=2C` is `,` and `=3D` is `=`; any other `=` is an error.
fn unescape(v: &str) -> Result<String, ScramFailure> {
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramFailure::Malformed("bad escape in user name")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Keys for a user who has none: a salt derived from the name with a
/// secret of this process (the same on every attempt, as a real user's
/// is) and random keys no proof matches.
fn decoy(hash: ScramHash, user: &str) -> Keys {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    let secret = SECRET.get_or_init(rand::random);
    let mut salt = hash.hmac(secret, user.as_bytes());
    salt.truncate(24);
    let len = hash.hash(b"").len();
    Keys {
        salt,
        iterations: MIN_ITERATIONS,
        stored_key: (0..len).map(|_| rand::random()).collect(),
        server_key: (0..len).map(|_| rand::random()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ScramMechanism;
    use crate::auth::credential::ScramCredential;
    use kafscale_client::sasl::Scram;

    fn keys_for(password: &str, hash: ScramHash, salt: &[u8]) -> Keys {
        let salted = hash.salted_password(password.as_bytes(), salt, 4096);
        let (stored_key, server_key) = hash.stored_and_server_key(&salted);
        Keys {
            salt: salt.to_vec(),
            iterations: 4096,
            stored_key,
            server_key,
        }
    }

    /// RFC 7677 section 3, from the server's side: our answer to the
    /// client's proof is the RFC's server-final message, byte for byte.
    #[test]
    fn rfc7677_example_from_the_server_side() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let keys = keys_for("pencil", ScramHash::Sha256, &salt);
        let first = parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(first.user, "user");
        let (mut challenge, _) = first.answer(ScramHash::Sha256, Some(keys));
        // The RFC's server nonce instead of our random one.
        challenge.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        challenge.auth_prefix = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,".into();
        let (user, fin) = challenge
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(user, "user");
        assert_eq!(fin, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    /// Our client against our server, with a credential as `users add`
    /// stores it: the right password authenticates, each kind of wrong
    /// message does not.
    fn exchange(
        mechanism: ScramMechanism,
        stored_for: &str,
        password: &str,
        tamper: impl Fn(Vec<u8>) -> Vec<u8>,
    ) -> Result<String, ScramFailure> {
        let hash = mechanism.hash();
        let cred = ScramCredential::from_password(mechanism, stored_for, 4096).unwrap();
        let client = Scram::new(hash, "al,i=ce", Scram::random_nonce());
        let first = parse_client_first(&client.client_first())?;
        assert_eq!(first.user, "al,i=ce");
        let (challenge, server_first) = first.answer(hash, Some(cred.keys().unwrap()));
        let sf = client.parse_server_first(&server_first).unwrap();
        let salted = hash.salted_password(password.as_bytes(), &sf.salt, sf.iterations);
        let fin = client.client_final(&sf, &salted);
        let (user, server_final) = challenge.finish(&tamper(fin.message.clone()))?;
        fin.verify_server_final(&server_final)
            .expect("the client accepts our signature");
        Ok(user)
    }

    #[test]
    fn only_the_right_password_authenticates() {
        for m in ScramMechanism::ALL {
            assert_eq!(exchange(m, "secret", "secret", |x| x).unwrap(), "al,i=ce");
            assert_eq!(
                exchange(m, "secret", "Secret", |x| x).unwrap_err(),
                ScramFailure::WrongProof
            );
            // A proof of the right length but zeroed; a short proof; no proof.
            let zero = |msg: Vec<u8>| {
                let s = String::from_utf8(msg).unwrap();
                let (head, p) = s.rsplit_once(",p=").unwrap();
                let len = B64.decode(p).unwrap().len();
                format!("{head},p={}", B64.encode(vec![0u8; len])).into_bytes()
            };
            assert_eq!(
                exchange(m, "secret", "secret", zero).unwrap_err(),
                ScramFailure::WrongProof
            );
            let short = |msg: Vec<u8>| {
                let s = String::from_utf8(msg).unwrap();
                let (head, _) = s.rsplit_once(",p=").unwrap();
                format!("{head},p=AAAA").into_bytes()
            };
            assert_eq!(
                exchange(m, "secret", "secret", short).unwrap_err(),
                ScramFailure::WrongProof
            );
            let strip = |msg: Vec<u8>| {
                let s = String::from_utf8(msg).unwrap();
                s.rsplit_once(",p=").unwrap().0.as_bytes().to_vec()
            };
            assert!(matches!(
                exchange(m, "secret", "secret", strip).unwrap_err(),
                ScramFailure::Malformed(_)
            ));
            // Another nonce, or a changed channel binding.
            let nonce = |msg: Vec<u8>| {
                String::from_utf8(msg)
                    .unwrap()
                    .replacen(",p=", "x,p=", 1)
                    .into_bytes()
            };
            assert_eq!(
                exchange(m, "secret", "secret", nonce).unwrap_err(),
                ScramFailure::Mismatch
            );
            // librdkafka's form: its nonce, then ours (which starts with its own).
            let doubled = |msg: Vec<u8>| {
                let s = String::from_utf8(msg).unwrap();
                let nonce = s.split(',').nth(1).unwrap().strip_prefix("r=").unwrap();
                let client = &nonce[..32];
                s.replacen(",r=", &format!(",r={client}"), 1).into_bytes()
            };
            assert_eq!(
                exchange(m, "secret", "secret", doubled).unwrap_err(),
                ScramFailure::WrongProof,
                "the proof was made over the undoubled message"
            );
            let cbind = |msg: Vec<u8>| {
                String::from_utf8(msg)
                    .unwrap()
                    .replacen("c=biws", "c=eSws", 1)
                    .into_bytes()
            };
            assert_eq!(
                exchange(m, "secret", "secret", cbind).unwrap_err(),
                ScramFailure::Mismatch
            );
        }
    }

    #[test]
    fn an_unknown_user_gets_a_stable_salt_and_never_authenticates() {
        let hash = ScramHash::Sha512;
        let salt_of = || {
            let first = parse_client_first(b"n,,n=nobody,r=abc").unwrap();
            let (c, sf) = first.answer(hash, None);
            (c, String::from_utf8(sf).unwrap())
        };
        let ((_, a), (c, b)) = (salt_of(), salt_of());
        let salt = |s: &str| s.split(',').nth(1).unwrap().to_owned();
        assert_eq!(salt(&a), salt(&b));
        let nonce = b.split(',').next().unwrap().to_owned();
        let msg = format!("c=biws,{nonce},p={}", B64.encode([0u8; 64]));
        assert_eq!(
            c.finish(msg.as_bytes()).unwrap_err(),
            ScramFailure::UnknownUser
        );
    }

    #[test]
    fn malformed_first_messages_are_refused() {
        for (msg, want) in [
            (&b"n,,r=abc"[..], "expected n= then r="),
            (b"n,,n=u", "no nonce"),
            (b"x,,n=u,r=a", "bad channel-binding flag"),
            (b"n,,n=u=41,r=a", "bad escape in user name"),
            (b"n,,n=,r=a", "empty user name or nonce"),
            (b"\xff", "not UTF-8"),
            (b"n", "no GS2 header"),
        ] {
            assert_eq!(
                parse_client_first(msg).unwrap_err(),
                ScramFailure::Malformed(want),
                "{msg:?}"
            );
        }
        assert!(matches!(
            parse_client_first(b"p=tls-unique,,n=u,r=a"),
            Err(ScramFailure::Unsupported(_))
        ));
        assert!(matches!(
            parse_client_first(b"n,a=other,n=u,r=a"),
            Err(ScramFailure::Unsupported(_))
        ));
        assert!(matches!(
            parse_client_first(b"n,,n=u,r=a,tokenauth=true"),
            Err(ScramFailure::Unsupported(_))
        ));
        assert_eq!(parse_client_first(b"n,a=u,n=u,r=a").unwrap().user, "u");
    }
}
