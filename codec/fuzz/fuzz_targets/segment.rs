//! `.kfs` reading on arbitrary bytes: errors, never panics. A segment that
//! opens is internally consistent.
#![no_main]

use bytes::Bytes;
use kafscale_codec::kfs::{SegmentReader, batches_in_range};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(seg) = SegmentReader::open(bytes.clone()) {
        let batches: Vec<_> = seg.batches().collect();
        assert_eq!(batches.len(), seg.batch_count());
        assert_eq!(batches.last().map(|b| b.last_offset()), Some(seg.last_offset()));
    }
    // Ranged reads start anywhere.
    if data.len() > 40 {
        let start = (data[0] as usize) % data.len();
        for b in batches_in_range(bytes.slice(start..), start) {
            if b.is_err() {
                break;
            }
        }
    }
});
