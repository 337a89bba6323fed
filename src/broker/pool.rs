//! Reuse of large buffers (request frames, segment arenas) on one shard.
//!
//! Without it every 1 MiB produce request and every segment arena is a fresh
//! mapping from the allocator, and the kernel zeroes and faults each page in:
//! a profile of the produce path showed a quarter of the broker's CPU there.
//! Idle buffers are capped, and that cap is part of the memory overhead.

use std::cell::{Cell, RefCell};

use bytes::{Bytes, BytesMut};

/// Buffers smaller than this are not pooled.
pub const MIN_POOLED: usize = 64 * 1024;

pub struct BufferPool {
    free: RefCell<Vec<BytesMut>>,
    idle_bytes: Cell<usize>,
    cap: usize,
}

impl BufferPool {
    pub fn new(cap: usize) -> Self {
        Self {
            free: RefCell::default(),
            idle_bytes: Cell::new(0),
            cap,
        }
    }

    /// A buffer with capacity for at least `len` bytes. A reused buffer keeps
    /// its old length and contents (initialised, unspecified), so a caller
    /// that needs `len` bytes to read into can `resize(len, 0)`, which then
    /// only truncates: no zeroing of memory that is about to be overwritten.
    pub fn take(&self, len: usize) -> BytesMut {
        if len >= MIN_POOLED {
            let mut free = self.free.borrow_mut();
            // Smallest idle buffer that fits, and not more than twice the
            // size: a produce frame's records may stay in a segment, and
            // they keep their whole buffer alive.
            let best = free
                .iter()
                .enumerate()
                .filter(|(_, b)| (len..=len.saturating_mul(2)).contains(&b.capacity()))
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            if let Some(i) = best {
                let b = free.swap_remove(i);
                self.idle_bytes.set(self.idle_bytes.get() - b.capacity());
                return b;
            }
        }
        BytesMut::with_capacity(len)
    }

    /// Takes a buffer back if nothing else still refers to it. `bytes` may
    /// be any piece of a split buffer: the last piece given back brings the
    /// whole allocation.
    pub fn give(&self, bytes: Bytes) {
        let Some(b) = kafscale_shard::reclaim(bytes) else {
            return;
        };
        let cap = b.capacity();
        if cap < MIN_POOLED || self.idle_bytes.get() + cap > self.cap {
            return;
        }
        self.idle_bytes.set(self.idle_bytes.get() + cap);
        self.free.borrow_mut().push(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_when_unique() {
        let pool = BufferPool::new(4 << 20);
        let mut b = pool.take(1 << 20);
        b.resize(1 << 20, 7);
        let frozen = b.freeze();
        let ptr = frozen.as_ptr();
        let slice = frozen.slice(10..20);
        pool.give(frozen.clone());
        assert_eq!(pool.idle_bytes.get(), 0, "still shared: not taken back");
        drop(slice);
        pool.give(frozen);
        assert!(pool.idle_bytes.get() >= 1 << 20);
        let mut again = pool.take(512 * 1024);
        assert_eq!(again.as_ptr(), ptr, "reused");
        assert!(again.capacity() >= 512 * 1024);
        again.resize(512 * 1024, 0);
        assert_eq!(again[0], 7, "resizing down did not zero the old bytes");
        // Pieces of one split buffer: the last one brings the allocation back.
        let mut whole = pool.take(1 << 20);
        let ptr = whole.as_ptr();
        whole.resize(1 << 20, 1);
        let head = whole.split_to(1000).freeze();
        let middle = whole.split_to(1000).freeze();
        let idle = pool.idle_bytes.get();
        pool.give(head);
        pool.give(whole.freeze());
        assert_eq!(pool.idle_bytes.get(), idle, "pieces still out");
        pool.give(middle);
        assert_eq!(pool.idle_bytes.get(), idle + (1 << 20));
        assert_eq!(pool.take(1 << 20).as_ptr(), ptr, "whole allocation back");
        // Much larger than asked for: not handed out.
        pool.give(Bytes::from(vec![0u8; 3 << 20]));
        assert_eq!(pool.take(1 << 20).capacity(), 1 << 20);
        assert_eq!(pool.idle_bytes.get(), 3 << 20, "it stays idle");
        // Over the cap: dropped instead.
        let big = Bytes::from(vec![0u8; 8 << 20]);
        pool.give(big);
        assert_eq!(pool.idle_bytes.get(), 3 << 20);
    }
}
