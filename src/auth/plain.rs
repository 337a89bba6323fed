//! PLAIN (RFC 4616): `authzid NUL user NUL password`, checked against the
//! user's SCRAM credential by deriving StoredKey from the password. That
//! derivation is PBKDF2, so it runs on the hasher thread, never on a shard.

use super::constant_time_eq;
use super::credential::Keys;
use kafscale_client::sasl::ScramHash;

/// The user and password of a PLAIN message.
#[derive(Debug)]
pub struct PlainMessage {
    pub user: String,
    pub password: String,
}

pub fn parse(msg: &[u8]) -> Result<PlainMessage, &'static str> {
    let text = std::str::from_utf8(msg).map_err(|_| "not UTF-8")?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("expected authzid, user and password separated by NUL");
    };
    if user.is_empty() || password.is_empty() {
        return Err("empty user name or password");
    }
    if !authzid.is_empty() && authzid != user {
        return Err("an authorization id other than the user");
    }
    Ok(PlainMessage {
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

/// Whether `password` is the one `keys` were made from. Blocking: PBKDF2.
pub fn password_matches(hash: ScramHash, keys: &Keys, password: &str) -> bool {
    let salted = hash.salted_password(password.as_bytes(), &keys.salt, keys.iterations);
    let (stored, _) = hash.stored_and_server_key(&salted);
    constant_time_eq(&stored, &keys.stored_key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{ScramCredential, ScramMechanism};

    #[test]
    fn messages_and_passwords() {
        let m = parse(b"\0alice\0pw").unwrap();
        assert_eq!((m.user.as_str(), m.password.as_str()), ("alice", "pw"));
        assert_eq!(parse(b"alice\0alice\0pw").unwrap().user, "alice");
        assert!(parse(b"bob\0alice\0pw").is_err());
        assert!(parse(b"\0alice\0").is_err());
        assert!(parse(b"\0alice").is_err());
        assert!(parse(b"\0a\0b\0c").is_err());
        let c = ScramCredential::from_password(ScramMechanism::Sha256, "pw", 4096).unwrap();
        let keys = c.keys().unwrap();
        assert!(password_matches(ScramHash::Sha256, &keys, "pw"));
        assert!(!password_matches(ScramHash::Sha256, &keys, "pW"));
    }
}
