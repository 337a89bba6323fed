//! `.index` parsing on arbitrary bytes: errors, never panics; lookups on a
//! parsed index return an entry at or below the wanted offset.
#![no_main]

use kafscale_codec::index::Index;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = Index::parse(data) {
        for want in [i64::MIN, -1, 0, 1, 1000, i64::MAX] {
            if let Some(e) = index.lookup(want) {
                assert!(e.offset <= want);
            }
        }
    }
});
