//! The `.index` object beside each `.kfs` segment: sparse offset -> position.
//!
//! ```text
//!  0  magic "IDX\0"    4 version u16 = 1   6 entry count i32
//! 10  interval i32    14 reserved u16 = 0
//! 16  entries: offset i64 | position i32   (12 bytes each)
//! ```
//!
//! Entries sit at batch starts. The first batch always gets one; a later batch
//! gets one when at least `interval` records were written since the previous
//! entry. `position` is absolute within the `.kfs` (the first batch is at 32).

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::{be_i32, be_i64, be_u16};

pub const INDEX_MAGIC: &[u8; 4] = b"IDX\0";
pub const INDEX_VERSION: u16 = 1;
pub const INDEX_HEADER_LEN: usize = 16;
pub const INDEX_ENTRY_LEN: usize = 12;
/// Records between entries in the reference writer.
pub const DEFAULT_INTERVAL: i32 = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("index is {len} bytes, shorter than its 16-byte header")]
    TooShort { len: usize },
    #[error("index magic is {found:02x?}, expected \"IDX\\0\"")]
    BadMagic { found: [u8; 4] },
    #[error("index version {version} is not supported (only 1)")]
    UnsupportedVersion { version: u16 },
    #[error("index declares {count} entries ({need} bytes) but is {len} bytes")]
    BadLength { count: i32, need: usize, len: usize },
    #[error(
        "index entry {entry} goes backwards: offset {offset} at position {position} after offset {prev_offset} at {prev_position}"
    )]
    NotAscending {
        entry: usize,
        offset: i64,
        position: i32,
        prev_offset: i64,
        prev_position: i32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub offset: i64,
    pub position: i32,
}

/// An [`IndexWriter`]'s state, to undo the batches noted after it.
#[derive(Debug, Clone, Copy)]
pub struct IndexCheckpoint {
    since_entry: i64,
    entries: usize,
}

/// Builds the index while a segment is written.
#[derive(Debug, Clone)]
pub struct IndexWriter {
    interval: i32,
    since_entry: i64,
    entries: Vec<IndexEntry>,
}

impl Default for IndexWriter {
    fn default() -> Self {
        Self::new(DEFAULT_INTERVAL)
    }
}

impl IndexWriter {
    pub fn new(interval: i32) -> Self {
        Self {
            interval: interval.max(1),
            since_entry: 0,
            entries: Vec::new(),
        }
    }

    /// Records a batch written at `position` whose first offset is `offset`.
    pub fn on_batch(&mut self, offset: i64, position: i32, record_count: i32) {
        if self.entries.is_empty() || self.since_entry >= i64::from(self.interval) {
            self.entries.push(IndexEntry { offset, position });
            self.since_entry = 0;
        }
        self.since_entry += i64::from(record_count.max(0));
    }

    /// The writer's state, for [`IndexWriter::rollback`].
    pub fn checkpoint(&self) -> IndexCheckpoint {
        IndexCheckpoint {
            since_entry: self.since_entry,
            entries: self.entries.len(),
        }
    }

    /// Forgets the batches noted since `c` was taken.
    pub fn rollback(&mut self, c: IndexCheckpoint) {
        self.since_entry = c.since_entry;
        self.entries.truncate(c.entries);
    }

    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    pub fn finish(&self) -> Bytes {
        let mut out =
            BytesMut::with_capacity(INDEX_HEADER_LEN + INDEX_ENTRY_LEN * self.entries.len());
        out.put_slice(INDEX_MAGIC);
        out.put_u16(INDEX_VERSION);
        out.put_i32(self.entries.len() as i32);
        out.put_i32(self.interval);
        out.put_u16(0);
        for e in &self.entries {
            out.put_i64(e.offset);
            out.put_i32(e.position);
        }
        out.freeze()
    }
}

/// A parsed `.index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub interval: i32,
    pub entries: Vec<IndexEntry>,
}

impl Index {
    pub fn parse(buf: &[u8]) -> Result<Self, IndexError> {
        if buf.len() < INDEX_HEADER_LEN {
            return Err(IndexError::TooShort { len: buf.len() });
        }
        let found = [buf[0], buf[1], buf[2], buf[3]];
        if &found != INDEX_MAGIC {
            return Err(IndexError::BadMagic { found });
        }
        let version = be_u16(buf, 4).unwrap_or(0);
        if version != INDEX_VERSION {
            return Err(IndexError::UnsupportedVersion { version });
        }
        let count = be_i32(buf, 6).unwrap_or(-1);
        let interval = be_i32(buf, 10).unwrap_or(0);
        let need = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(INDEX_ENTRY_LEN))
            .and_then(|n| n.checked_add(INDEX_HEADER_LEN));
        if need != Some(buf.len()) {
            return Err(IndexError::BadLength {
                count,
                need: need.unwrap_or(usize::MAX),
                len: buf.len(),
            });
        }
        let mut entries = Vec::with_capacity(count as usize);
        for (i, e) in buf[INDEX_HEADER_LEN..]
            .chunks_exact(INDEX_ENTRY_LEN)
            .enumerate()
        {
            let entry = IndexEntry {
                offset: be_i64(e, 0).unwrap_or(0),
                position: be_i32(e, 8).unwrap_or(0),
            };
            if let Some(prev) = entries.last().copied()
                && let IndexEntry {
                    offset: prev_offset,
                    position: prev_position,
                } = prev
                && (entry.offset <= prev_offset || entry.position <= prev_position)
            {
                return Err(IndexError::NotAscending {
                    entry: i,
                    offset: entry.offset,
                    position: entry.position,
                    prev_offset,
                    prev_position,
                });
            }
            entries.push(entry);
        }
        Ok(Self { interval, entries })
    }

    /// The last entry whose offset is <= `offset`: where a reader starts.
    pub fn lookup(&self, offset: i64) -> Option<IndexEntry> {
        let i = self.entries.partition_point(|e| e.offset <= offset);
        i.checked_sub(1).map(|i| self.entries[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_follow_the_interval() {
        let mut w = IndexWriter::new(100);
        let mut pos = 32;
        let mut off = 0;
        for _ in 0..10 {
            w.on_batch(off, pos, 40);
            off += 40;
            pos += 1000;
        }
        // entries at records 0, 120 (after 3 batches = 120 >= 100), 240, 360
        let offs: Vec<_> = w.entries().iter().map(|e| e.offset).collect();
        assert_eq!(offs, vec![0, 120, 240, 360]);
        let idx = Index::parse(&w.finish()).unwrap();
        assert_eq!(idx.interval, 100);
        assert_eq!(idx.lookup(0).unwrap().position, 32);
        assert_eq!(idx.lookup(250).unwrap().offset, 240);
        assert_eq!(idx.lookup(-1), None);
    }

    #[test]
    fn corrupt_indexes_are_typed() {
        let mut w = IndexWriter::new(1);
        w.on_batch(0, 32, 1);
        w.on_batch(1, 100, 1);
        let good = w.finish().to_vec();
        assert_eq!(
            Index::parse(&good[..10]),
            Err(IndexError::TooShort { len: 10 })
        );
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(
            Index::parse(&bad),
            Err(IndexError::BadMagic { .. })
        ));
        let mut bad = good.clone();
        bad[5] = 9;
        assert_eq!(
            Index::parse(&bad),
            Err(IndexError::UnsupportedVersion { version: 9 })
        );
        assert!(matches!(
            Index::parse(&good[..good.len() - 1]),
            Err(IndexError::BadLength { .. })
        ));
        let mut bad = good.clone();
        bad[28 + 8..28 + 12].copy_from_slice(&10i32.to_be_bytes());
        assert!(matches!(
            Index::parse(&bad),
            Err(IndexError::NotAscending { entry: 1, .. })
        ));
    }
}
