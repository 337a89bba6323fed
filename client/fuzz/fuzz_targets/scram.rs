//! A hostile or broken SASL server: whatever its SCRAM messages hold, the
//! client's parser returns a value or an error and never panics, and a
//! server-final message made of fuzz bytes does not pass verification.
#![no_main]

use kafscale_client::sasl::{Scram, ScramHash};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (first, last) = data.split_at(data.len() / 2);
    for hash in [ScramHash::Sha256, ScramHash::Sha512] {
        let scram = Scram::new(hash, "user", "fixednonce".into());
        if let Ok(server_first) = scram.parse_server_first(first) {
            // One PBKDF2 round: the parser refuses fewer than 4096, so a
            // real count would make each run slow; the rest is the same.
            let salted = hash.salted_password(b"pw", &server_first.salt, 1);
            let fin = scram.client_final(&server_first, &salted);
            // A 32- or 64-byte HMAC guessed by the fuzzer: practically never.
            assert!(
                fin.verify_server_final(last).is_err() || last.len() >= 44,
                "a short server-final message passed"
            );
        }
    }
});
