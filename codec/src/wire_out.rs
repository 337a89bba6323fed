//! Writers for the flexible-version encodings.

use bytes::{BufMut, BytesMut};

pub(crate) fn put_uvarint_bytes(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// Compact array/string length: n + 1 as an unsigned varint.
pub(crate) fn put_compact_len(out: &mut BytesMut, n: usize) {
    put_uvarint_bytes(out, n as u64 + 1);
}
