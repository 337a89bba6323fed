//! The broker's SCRAM server against any client. Three ways in, chosen by
//! the first byte:
//!
//! - a real client (kafscale-client's SCRAM) with a fuzz-chosen password and
//!   one fuzz-chosen byte of its final message changed, or none: the
//!   exchange authenticates if and only if the password is the user's and
//!   nothing was changed (the SCRAM trap: a finished exchange is not a
//!   valid proof);
//! - a client-first and a client-final message of any bytes: never
//!   authenticates (the server nonce is fresh, so nobody can guess a proof);
//! - never a panic, on any message.
#![no_main]

use std::sync::OnceLock;

use kafscale::auth::credential::Keys;
use kafscale::auth::scram::parse_client_first;
use kafscale_client::sasl::{Scram, ScramHash};
use libfuzzer_sys::fuzz_target;

/// The user's salted password, derived with one PBKDF2 round so a run is
/// fast: the server only ever sees StoredKey and ServerKey, and announces
/// 4096 iterations, the least a client accepts. The client below derives
/// its key the same way.
fn keys(hash: ScramHash) -> &'static Keys {
    static KEYS: OnceLock<[Keys; 2]> = OnceLock::new();
    let make = |h: ScramHash| {
        let salt = b"fuzz-salt".to_vec();
        let salted = h.salted_password(b"right-password", &salt, 1);
        let (stored_key, server_key) = h.stored_and_server_key(&salted);
        Keys {
            salt,
            iterations: 4096,
            stored_key,
            server_key,
        }
    };
    let all = KEYS.get_or_init(|| [make(ScramHash::Sha256), make(ScramHash::Sha512)]);
    &all[usize::from(hash == ScramHash::Sha512)]
}

fuzz_target!(|data: &[u8]| {
    let Some((&how, rest)) = data.split_first() else {
        return;
    };
    let hash = if how & 1 == 0 {
        ScramHash::Sha256
    } else {
        ScramHash::Sha512
    };
    if how & 2 == 0 {
        exchange(hash, rest);
    } else {
        any_messages(hash, rest);
    }
});

fn exchange(hash: ScramHash, data: &[u8]) {
    // [position: 2][xor][password...]; position past the message or xor 0:
    // nothing changed.
    let [p0, p1, xor, password @ ..] = data else {
        return;
    };
    let client = Scram::new(hash, "alice", Scram::random_nonce());
    let first = parse_client_first(&client.client_first()).expect("our client's first message");
    assert_eq!(first.user, "alice");
    let (challenge, server_first) = first.answer(hash, Some(keys(hash).clone()));
    let server_first = client
        .parse_server_first(&server_first)
        .expect("our server's first message");
    let salted = hash.salted_password(password, &server_first.salt, 1);
    let mut fin = client.client_final(&server_first, &salted).message;
    let at = usize::from(u16::from_le_bytes([*p0, *p1]));
    let changed = *xor != 0 && at < fin.len();
    if changed {
        fin[at] ^= xor;
    }
    let outcome = challenge.finish(&fin);
    let should = password == b"right-password" && !changed;
    assert_eq!(
        outcome.is_ok(),
        should,
        "password {:?}, final message changed: {changed}, outcome {outcome:?}",
        String::from_utf8_lossy(password)
    );
    if let Ok((user, server_final)) = outcome {
        assert_eq!(user, "alice");
        let expect = client.client_final(&server_first, &salted);
        expect
            .verify_server_final(&server_final)
            .expect("the server proves it holds ServerKey");
    }
}

fn any_messages(hash: ScramHash, data: &[u8]) {
    let cut = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (first, last) = (&data[..cut], data.get(cut + 1..).unwrap_or_default());
    let Ok(first) = parse_client_first(first) else {
        return;
    };
    assert!(!first.user.is_empty());
    let known = first.user == "alice";
    let (challenge, _) = first.answer(hash, known.then(|| keys(hash).clone()));
    assert!(
        challenge.finish(last).is_err(),
        "a client-final message of fuzz bytes authenticated"
    );
}
