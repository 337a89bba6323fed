//! Produce request layouts on arbitrary bytes (every version): errors, never
//! panics; record ranges lie inside the body, ascend and do not overlap (the
//! broker splits its buffer at them); offsets stamped into arbitrary records
//! never write outside them.
#![no_main]

use kafscale_codec::batch::stamp_base_offsets;
use kafscale_codec::produce::parse_produce;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&version, body)) = data.split_first() else {
        return;
    };
    if let Ok(layout) = parse_produce(body, i16::from(version % 16)) {
        let mut end = 0;
        for range in layout
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .filter_map(|p| p.records.clone())
        {
            assert!(range.start >= end && range.end <= body.len());
            end = range.end;
            let mut records = body[range].to_vec();
            let len = records.len();
            stamp_base_offsets(&mut records, 42);
            assert_eq!(records.len(), len);
        }
    }
});
