//! Receive buffers for large response frames, taken back once the last
//! slice of a frame is dropped.
//!
//! A fetch answer of several MiB read into a fresh allocation costs a fresh
//! mapping whose every page the kernel zeroes and faults in (15% of a raw
//! fetch's CPU when measured). Each large frame here gets a buffer of its
//! own, filled from its start, so once the caller has dropped every batch
//! of it the frame is unique again and `try_into_mut` returns the whole
//! buffer: no unsafe, no copy.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Frames at least this large get a buffer of their own.
pub(crate) const LARGE_FRAME: usize = 256 * 1024;

#[derive(Debug)]
pub(crate) struct FrameBuffers {
    /// Frames handed out (clones of each whole buffer), oldest first.
    lent: VecDeque<Bytes>,
    lent_bytes: usize,
    /// Most bytes of frames kept for reuse; past it the oldest are let go
    /// (their memory is freed when the caller drops them).
    cap: usize,
}

impl FrameBuffers {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            lent: VecDeque::new(),
            lent_bytes: 0,
            cap,
        }
    }

    /// An empty buffer with room for `len` bytes: a handed-out frame that
    /// nobody holds any more and that is large enough (and not more than
    /// twice as large), else a new one.
    pub(crate) fn take(&mut self, len: usize) -> BytesMut {
        let mut i = 0;
        while i < self.lent.len() {
            let fits = (len..=len.saturating_mul(2)).contains(&self.lent[i].len());
            if fits && self.lent[i].is_unique() {
                let frame = self.lent.remove(i).unwrap_or_default();
                self.lent_bytes -= frame.len();
                if let Ok(mut buf) = frame.try_into_mut() {
                    buf.clear();
                    if buf.capacity() >= len {
                        return buf;
                    }
                }
                continue;
            }
            i += 1;
        }
        BytesMut::with_capacity(len)
    }

    /// Keeps a clone of a frame just handed out, to take its buffer back later.
    pub(crate) fn lend(&mut self, frame: &Bytes) {
        self.lent.push_back(frame.clone());
        self.lent_bytes += frame.len();
        while self.lent_bytes > self.cap {
            match self.lent.pop_front() {
                Some(old) => self.lent_bytes -= old.len(),
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_frame_buffer_is_reused_and_a_held_one_is_not() {
        let mut pool = FrameBuffers::new(64 << 20);
        let mut b = pool.take(1 << 20);
        b.resize(1 << 20, 1);
        let ptr = b.as_ptr();
        let frame = b.freeze();
        pool.lend(&frame);
        let slice = frame.slice(100..200);
        drop(frame);
        let other = pool.take(1 << 20);
        assert_ne!(other.as_ptr(), ptr, "a slice still holds the frame");
        drop(slice);
        let again = pool.take(1 << 20);
        assert_eq!(again.as_ptr(), ptr, "reused once every slice is gone");
        assert!(again.is_empty() && again.capacity() >= 1 << 20);
    }

    #[test]
    fn kept_frames_are_bounded() {
        let mut pool = FrameBuffers::new(3 << 20);
        let mut held = Vec::new();
        for _ in 0..10 {
            let mut b = pool.take(1 << 20);
            b.resize(1 << 20, 0);
            let f = b.freeze();
            pool.lend(&f);
            held.push(f); // the caller still has them: nothing is reused
        }
        assert!(pool.lent_bytes <= 3 << 20);
        assert_eq!(pool.lent.len(), 3);
    }
}
