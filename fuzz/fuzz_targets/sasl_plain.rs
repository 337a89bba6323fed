//! PLAIN messages of any bytes: a value or an error, never a panic; what
//! parses names a non-empty user and password without NUL in either, and
//! is the message `kafscale-client` would send for them (with or without
//! the authorization id, which may only repeat the user).
#![no_main]

use kafscale::auth::plain;
use kafscale_client::sasl::plain_message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = plain::parse(data) else {
        return;
    };
    assert!(!m.user.is_empty() && !m.password.is_empty());
    assert!(!m.user.contains('\0') && !m.password.contains('\0'));
    let sent = plain_message(&m.user, &m.password);
    let with_authzid = [m.user.as_bytes(), &sent].concat();
    assert!(
        data == sent.as_slice() || data == with_authzid.as_slice(),
        "parsed {m:?} from a message that is not its encoding"
    );
});
