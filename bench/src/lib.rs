//! Inputs for the criterion benchmarks: realistic batches of non-repeating bytes.

use bytes::Bytes;
use kafscale_codec::batch::BatchBuilder;

/// A record batch v2 of about `size` bytes made of `record_size`-byte records
/// with random (incompressible) values.
pub fn batch_of(size: usize, record_size: usize) -> Bytes {
    let mut b = BatchBuilder::new(0, 1_778_682_180_000);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut value = vec![0u8; record_size];
    while b.records_len() + record_size + 16 <= size.saturating_sub(61) {
        for chunk in value.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        b.push(None, Some(&value), &[]);
    }
    b.finish()
}
