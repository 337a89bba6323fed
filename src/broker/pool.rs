//! Reuse of large buffers (request frames, segment arenas) on one shard.
//!
//! Without it every 1 MiB produce request and every segment arena is a fresh
//! mapping from the allocator, and the kernel zeroes and faults each page in:
//! a profile of the produce path showed a quarter of the broker's CPU there.
//! Idle buffers are capped, and that cap is part of the memory overhead.

use std::cell::{Cell, RefCell};

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::metrics::Metrics;

/// Buffers smaller than this are not pooled.
pub const MIN_POOLED: usize = 64 * 1024;

pub struct BufferPool {
    free: RefCell<Vec<BytesMut>>,
    idle_bytes: Cell<usize>,
    cap: usize,
    metrics: Option<Arc<Metrics>>,
}

impl BufferPool {
    pub fn new(cap: usize) -> Self {
        Self {
            free: RefCell::default(),
            idle_bytes: Cell::new(0),
            cap,
            metrics: None,
        }
    }

    /// Counts reuses and allocations in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count(&self, reused: bool) {
        if let Some(m) = &self.metrics {
            let c = if reused {
                &m.buffers_reused
            } else {
                &m.buffers_allocated
            };
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// An empty buffer with capacity for at least `len` bytes; a reader
    /// sizes it with `resize(len, 0)`.
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
                self.count(true);
                return b;
            }
            self.count(false);
        }
        BytesMut::with_capacity(len)
    }

    /// Takes a buffer back if nothing else still refers to it. `bytes` may
    /// be any piece of a split buffer: the last piece given back brings the
    /// whole allocation. When idle buffers would exceed the cap, the oldest
    /// make room (so buffers no request size fits any more do not stay).
    pub fn give(&self, bytes: Bytes) {
        let Some(b) = kafscale_shard::reclaim(bytes) else {
            return;
        };
        let cap = b.capacity();
        if cap < MIN_POOLED || cap > self.cap {
            return;
        }
        let mut free = self.free.borrow_mut();
        while self.idle_bytes.get() + cap > self.cap && !free.is_empty() {
            let old = free.remove(0);
            self.idle_bytes.set(self.idle_bytes.get() - old.capacity());
        }
        self.idle_bytes.set(self.idle_bytes.get() + cap);
        free.push(b);
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
        let again = pool.take(512 * 1024);
        assert_eq!(again.as_ptr(), ptr, "reused");
        assert!(again.capacity() >= 512 * 1024);
        assert!(again.is_empty(), "handed out empty");
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
        // ...until newer buffers need the room (cap 4 MiB).
        pool.give(Bytes::from(vec![0u8; 2 << 20]));
        assert_eq!(pool.idle_bytes.get(), 2 << 20, "the 3 MiB one made room");
        // Larger than the cap: dropped.
        pool.give(Bytes::from(vec![0u8; 8 << 20]));
        assert_eq!(pool.idle_bytes.get(), 2 << 20);
    }

    /// A produce frame split into records pieces (as `carve` does): once the
    /// rest went back early and the records piece comes back from the
    /// segment cache, the whole frame is reused.
    #[test]
    fn a_carved_frame_comes_back_whole() {
        use bytes::Buf;
        let pool = BufferPool::new(32 << 20);
        let len = (1 << 20) + 100;
        let mut frame = pool.take(len);
        frame.resize(len, 0);
        let ptr = frame.as_ptr();
        frame.advance(60);
        let records = frame.split_to(len - 60).freeze();
        pool.give(frame.freeze());
        assert_eq!(pool.idle_bytes.get(), 0, "records still out");
        pool.give(records);
        assert_eq!(pool.idle_bytes.get(), len);
        let again = pool.take(len);
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.capacity() >= len);
    }
}
