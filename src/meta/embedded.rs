//! The embedded metadata store: an in-memory map made durable by an
//! append-only log of transactions, fsynced before each one is acknowledged.
//!
//! ```text
//! {dir}/meta.snapshot   one record: every key as a Put
//! {dir}/meta.log        records appended since the snapshot
//! {dir}/meta.lock       held (flock) while a process uses the store
//! record: length u32 BE | CRC32C u32 BE of payload | payload (JSON list of ops)
//! ```
//!
//! On open the snapshot is loaded and the log replayed. A record cut short at
//! the end of the log is a write the crash interrupted (never acknowledged)
//! and is truncated away; a complete record with a bad CRC is corruption and
//! refuses to open. When the log passes `COMPACT_BYTES` it is folded into a
//! new snapshot (temp, fsync, rename) and truncated. Replaying a log over a
//! snapshot that already holds it gives the same map, so a crash between the
//! two steps is harmless.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::MetaError;
use super::kv::{Compare, Kv, Op, Txn};

const COMPACT_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug)]
pub struct FileKv {
    dir: PathBuf,
    map: BTreeMap<String, String>,
    log: File,
    /// Where the last acknowledged record ends.
    log_len: u64,
    /// Why writes stopped: a failed append that could not be taken back
    /// leaves the log's end unknown, so nothing more is appended to it.
    failed: Option<String>,
    _lock: File,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MetaError + '_ {
    move |source| MetaError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn encode(ops: &[Op]) -> Vec<u8> {
    let payload = serde_json::to_vec(ops).unwrap_or_default();
    let mut rec = Vec::with_capacity(8 + payload.len());
    rec.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    rec.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
    rec.extend_from_slice(&payload);
    rec
}

fn apply(map: &mut BTreeMap<String, String>, ops: Vec<Op>) {
    for op in ops {
        match op {
            Op::Put(k, v) | Op::PutLeased(k, v, _) => {
                map.insert(k, v);
            }
            Op::Delete(k) => {
                map.remove(&k);
            }
            Op::DeletePrefix(p) => {
                let doomed: Vec<String> = map
                    .range(p.clone()..)
                    .take_while(|(k, _)| k.starts_with(&p))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in doomed {
                    map.remove(&k);
                }
            }
        }
    }
}

/// Replays records from `data`. Returns the length of the valid prefix.
fn replay(path: &Path, data: &[u8], map: &mut BTreeMap<String, String>) -> Result<u64, MetaError> {
    let mut pos = 0usize;
    while pos < data.len() {
        let Some(head) = data.get(pos..pos + 8) else {
            break;
        }; // torn header
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        let Some(payload) = data.get(pos + 8..pos + 8 + len) else {
            break;
        }; // torn payload
        let corrupt = |reason: String| MetaError::Corrupt {
            path: path.display().to_string(),
            position: pos as u64,
            reason,
        };
        if crc32c::crc32c(payload) != crc {
            return Err(corrupt("record CRC32C mismatch".into()));
        }
        let ops: Vec<Op> = serde_json::from_slice(payload)
            .map_err(|e| corrupt(format!("record is not a list of ops: {e}")))?;
        apply(map, ops);
        pos += 8 + len;
    }
    Ok(pos as u64)
}

impl FileKv {
    /// Opens or creates the store in `dir`. Fails if another process holds it.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, MetaError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let lock_path = dir.join("meta.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        lock.try_lock().map_err(|e| MetaError::Io {
            path: lock_path.display().to_string(),
            source: std::io::Error::other(format!(
                "another kafscale process is using this data directory ({e})"
            )),
        })?;

        let mut map = BTreeMap::new();
        let snap_path = dir.join("meta.snapshot");
        match fs::read(&snap_path) {
            Ok(data) => {
                let valid = replay(&snap_path, &data, &mut map)?;
                if valid != data.len() as u64 {
                    return Err(MetaError::Corrupt {
                        path: snap_path.display().to_string(),
                        position: valid,
                        reason: "snapshot is truncated".into(),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&snap_path)(e)),
        }
        let log_path = dir.join("meta.log");
        let mut log = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        let mut data = Vec::new();
        log.read_to_end(&mut data).map_err(io(&log_path))?;
        let valid = replay(&log_path, &data, &mut map)?;
        if valid != data.len() as u64 {
            tracing::warn!(path = %log_path.display(), at = valid, dropped = data.len() as u64 - valid, "truncating a torn record at the end of the metadata log");
            log.set_len(valid).map_err(io(&log_path))?;
            log.sync_all().map_err(io(&log_path))?;
        }
        Ok(Self {
            dir,
            map,
            log,
            log_len: valid,
            failed: None,
            _lock: lock,
        })
    }

    fn compact(&mut self) -> Result<(), MetaError> {
        let ops: Vec<Op> = self
            .map
            .iter()
            .map(|(k, v)| Op::Put(k.clone(), v.clone()))
            .collect();
        let tmp = self.dir.join("meta.snapshot.tmp");
        let snap = self.dir.join("meta.snapshot");
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&encode(&ops)).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &snap).map_err(io(&snap))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        let log_path = self.dir.join("meta.log");
        self.log.set_len(0).map_err(io(&log_path))?;
        // Empty from here, even if the sync fails: a later append's
        // rollback must not grow the file back to the old length.
        self.log_len = 0;
        self.log.sync_all().map_err(io(&log_path))?;
        Ok(())
    }
}

impl Kv for FileKv {
    fn get(&mut self, key: &str) -> Result<Option<String>, MetaError> {
        Ok(self.map.get(key).cloned())
    }

    fn range(&mut self, prefix: &str) -> Result<Vec<(String, String)>, MetaError> {
        Ok(self
            .map
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn txn(&mut self, txn: Txn) -> Result<bool, MetaError> {
        let holds = txn.compares.iter().all(|c| match c {
            Compare::Equals(k, v) => self.map.get(k) == Some(v),
            Compare::Absent(k) => !self.map.contains_key(k),
        });
        if !holds {
            return Ok(false);
        }
        let log_path = self.dir.join("meta.log");
        if let Some(why) = &self.failed {
            return Err(MetaError::Io {
                path: log_path.display().to_string(),
                source: std::io::Error::other(format!(
                    "no more metadata writes until the broker restarts: {why}"
                )),
            });
        }
        let rec = encode(&txn.ops);
        // A write or fsync that fails may leave part of the record (or all
        // of it, unconfirmed) in the file. It is taken back, so the log ends
        // where the map does and the next record follows a whole one:
        // otherwise the next open would meet a record it cannot read.
        let appended = self.log.write_all(&rec).and_then(|()| self.log.sync_data());
        if let Err(e) = appended {
            let taken_back = self
                .log
                .set_len(self.log_len)
                .and_then(|()| self.log.sync_all());
            if let Err(undo) = taken_back {
                let why = format!(
                    "an append failed ({e}) and could not be taken back ({undo}): the log must be repaired by reopening it"
                );
                tracing::error!(path = %log_path.display(), "{why}");
                self.failed = Some(why);
            }
            return Err(io(&log_path)(e));
        }
        self.log_len += rec.len() as u64;
        apply(&mut self.map, txn.ops);
        // The transaction is durable whatever happens to the compaction,
        // which a later one retries.
        if self.log_len > COMPACT_BYTES
            && let Err(e) = self.compact()
        {
            tracing::warn!(error = %e, "could not fold the metadata log into a snapshot");
        }
        Ok(true)
    }

    // One process holds the embedded store (flock), so there is nobody to
    // share ownership with: clusters need etcd.
    fn grant_lease(&mut self, _ttl_secs: i64) -> Result<i64, MetaError> {
        Err(MetaError::Unsupported {
            what: "leases (several brokers need etcd)",
        })
    }

    fn keep_alive(&mut self, _lease: i64) -> Result<bool, MetaError> {
        self.grant_lease(0).map(|_| false)
    }

    fn revoke_lease(&mut self, _lease: i64) -> Result<(), MetaError> {
        self.grant_lease(0).map(|_| ())
    }

    fn lease_of(&mut self, _key: &str) -> Result<Option<(i64, i64)>, MetaError> {
        Ok(None)
    }
}
