//! Allocator settings for bounded memory.

/// Pins glibc's mmap threshold and its heap trim threshold. Allocations of
/// at least `mmap_threshold` bytes are mapped on their own and returned to
/// the kernel when freed (by default glibc raises the threshold after such
/// frees and serves later ones from the heap, where fragmentation keeps RSS
/// above what the broker actually holds). Below it, buffers come from the
/// heap; up to `trim_threshold` bytes freed at the top of a heap stay mapped,
/// so the next buffer of the same size does not fault in and zero fresh
/// pages. Returns whether glibc accepted both settings.
pub fn tune_allocator(mmap_threshold: usize, trim_threshold: usize) -> bool {
    // SAFETY: mallopt only changes allocator tunables; a bad value is refused
    // with 0. Called at start-up, before the shards start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap_threshold as libc::c_int) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, trim_threshold as libc::c_int) == 1
    }
}

/// The whole buffer behind `bytes`, for reuse, if nothing else refers to it.
///
/// `bytes` may be any piece of a split buffer (a produce request's records,
/// a part of a segment arena): once it is the last piece, the view moves
/// back to the start of the allocation and keeps the initialised length up
/// to the end of this piece, so a reader can size the buffer again without
/// zeroing it.
///
/// # Safety
///
/// Every byte of the allocation before the start of `bytes` must have been
/// initialised. That holds for pieces cut off a buffer's front or split at
/// or below its length (`split_to`, `split`, `advance`, `slice`) and for
/// `Bytes` from a `Vec`; it does not for `BytesMut::split_off` past the
/// length (the piece starts in uninitialised capacity).
pub unsafe fn reclaim(bytes: bytes::Bytes) -> Option<bytes::BytesMut> {
    let mut b = bytes.try_into_mut().ok()?;
    let (start, len) = (b.as_ptr() as usize, b.len());
    b.clear();
    // Unique, so this succeeds when the view began past the allocation's
    // start (and fails, changing nothing, when it did not).
    let front = if b.try_reclaim(b.capacity() + 1) {
        start - b.as_ptr() as usize
    } else {
        0
    };
    // SAFETY: `front + len` is within the capacity (the view only moved back
    // by `front`); the last `len` bytes were this view's contents and the
    // `front` before them are initialised by the caller's promise.
    unsafe { b.set_len(front + len) };
    Some(b)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::reclaim;

    #[test]
    fn the_last_piece_brings_back_the_whole_buffer() {
        let mut whole = BytesMut::with_capacity(1 << 20);
        let ptr = whole.as_ptr();
        whole.resize(1 << 20, 7);
        let head = whole.split_to(1000).freeze();
        let middle = whole.split_to(1000).freeze();
        // SAFETY (all calls here): pieces cut with split_to off a buffer
        // filled by resize, and a Vec.
        assert!(unsafe { reclaim(head) }.is_none(), "other pieces still out");
        assert!(unsafe { reclaim(whole.freeze()) }.is_none());
        let back = unsafe { reclaim(middle) }.expect("last piece");
        assert_eq!(back.as_ptr(), ptr);
        assert_eq!(back.capacity(), 1 << 20);
        assert_eq!(back.len(), 2000, "initialised up to the piece's end");
        assert!(back.iter().all(|&b| b == 7));
        // A buffer that was never split comes back as it was.
        let v = bytes::Bytes::from(vec![1u8; 4096]);
        let back = unsafe { reclaim(v.clone()) };
        assert!(back.is_none(), "a clone is still out");
        drop(back);
        assert_eq!(unsafe { reclaim(v) }.map(|b| b.len()), Some(4096));
    }
}
