//! Record batch splitting, validation, record decoding and the produce
//! path's record check (all codecs) on arbitrary bytes: errors, never
//! panics, and the check never takes what the decoder refuses.
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
        let records = batch.records();
        // The produce path's check walks the same records without keeping
        // them: it must agree with the full decode on what is well formed
        // (the check also wants offset deltas inside the batch, so it may
        // refuse what decodes, never the other way round).
        let checked = batch.check_records();
        assert!(
            records.is_ok() || checked.is_err(),
            "check_records took a batch records() refuses: {:?}",
            records.err()
        );
    }
});
