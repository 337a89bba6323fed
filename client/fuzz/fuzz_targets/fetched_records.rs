//! A fetch answer's records as any broker might send them: split into whole
//! batches and a dropped partial tail without panicking, every batch a slice
//! of the input, the tail and batches adding up to the input.
#![no_main]

use bytes::Bytes;
use kafscale_client::split_batches;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let records = Bytes::copy_from_slice(data);
    for verify in [false, true] {
        if let Ok((batches, tail)) = split_batches(records.clone(), verify) {
            let whole: usize = batches.iter().map(|b| b.len()).sum();
            assert_eq!(whole + tail, records.len());
            if verify {
                for b in &batches {
                    assert!(b.validate().is_ok());
                }
            }
        }
    }
});
