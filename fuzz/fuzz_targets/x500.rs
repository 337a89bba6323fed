//! A client certificate's subject (the bytes of any certificate) and
//! `--ssl-principal-mapping-rules` (any text): a value or an error, never
//! a panic; rules that parse map a subject or say none matches.
#![no_main]

use kafscale::auth::x500::{PrincipalRules, subject_rfc2253};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(subject) = subject_rfc2253(data) {
        let _ = PrincipalRules::default().apply(&subject);
    }
    let text = String::from_utf8_lossy(data);
    if let Ok(rules) = text.parse::<PrincipalRules>() {
        let _ = rules.apply("CN=alice,OU=payments,O=Example,C=DE");
        let _ = rules.apply(&text);
    }
});
