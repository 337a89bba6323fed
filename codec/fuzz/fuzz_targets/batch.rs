//! Record batch splitting, validation and record decoding (all codecs) on
//! arbitrary bytes: errors, never panics.
#![no_main]

use bytes::Bytes;
use kafscale_codec::batch::Batches;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for batch in Batches::new(Bytes::copy_from_slice(data)) {
        let Ok(batch) = batch else { break };
        let _ = batch.validate();
        let _ = batch.last_offset();
        // Records are decoded even when the CRC is wrong: the decoder itself
        // must hold up against anything.
        let _ = batch.records();
    }
});
