//! The embedded object store: a local directory.
//!
//! ```text
//! {root}/objects/{key}        object bytes
//! {root}/meta/{key}.json      user metadata (written before the object)
//! {root}/tmp/                 writes in progress
//! ```
//!
//! A write goes to a temp file, is fsynced, renamed into place, and the
//! directory is fsynced: an object is either wholly there or not at all. All
//! file I/O runs on glommio's blocking-thread pool, never on the executor.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::error::StoreError;
use crate::store::{ListEntry, Object, ObjectMeta, ObjectStore, PutOptions};

#[derive(Debug, Clone)]
pub struct LocalStore {
    inner: Arc<Dirs>,
}

#[derive(Debug)]
struct Dirs {
    root: PathBuf,
    objects: PathBuf,
    meta: PathBuf,
    tmp: PathBuf,
}

/// Temp file numbers, process-wide: two stores on one directory must never
/// pick the same temp name (that once mixed a .kfs into an .index).
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl LocalStore {
    /// Opens (creating if needed) a store under `root`. Blocking; call at start-up.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        let dirs = Dirs {
            objects: root.join("objects"),
            meta: root.join("meta"),
            tmp: root.join("tmp"),
            root,
        };
        for d in [&dirs.objects, &dirs.meta, &dirs.tmp] {
            fs::create_dir_all(d).map_err(io_err(d))?;
        }
        // Leftovers of writes cut short by a crash of an earlier process (this
        // process's other shards may be writing theirs right now).
        let ours = format!("{}-", std::process::id());
        if let Ok(entries) = fs::read_dir(&dirs.tmp) {
            for e in entries.flatten() {
                if !e.file_name().to_string_lossy().starts_with(&ours) {
                    let _ignored = fs::remove_file(e.path());
                }
            }
        }
        Ok(Self {
            inner: Arc::new(dirs),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Dirs) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let dirs = self.inner.clone();
        glommio::executor().spawn_blocking(move || f(&dirs)).await
    }
}

fn check_key(key: &str) -> Result<(), StoreError> {
    let bad = |reason| {
        Err(StoreError::BadKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.starts_with('/') {
        return bad("starts with /");
    }
    if key.contains('\0') {
        return bad("contains NUL");
    }
    if key
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("has an empty, . or .. path component");
    }
    Ok(())
}

impl Dirs {
    fn object(&self, key: &str) -> PathBuf {
        self.objects.join(key)
    }

    fn meta_path(&self, key: &str) -> PathBuf {
        self.meta.join(format!("{key}.json"))
    }

    /// temp file -> fsync -> rename -> fsync dir. With `if_absent`, a hard
    /// link instead of the rename, which fails if `dest` exists.
    fn write_atomic(&self, dest: &Path, data: &[u8]) -> Result<(), StoreError> {
        self.write_file(dest, &[data], false).map(|_| ())
    }

    /// As [`Dirs::write_atomic`]; returns false (and writes nothing) when
    /// `if_absent` and `dest` exists.
    fn write_file(
        &self,
        dest: &Path,
        data: &[impl AsRef<[u8]>],
        if_absent: bool,
    ) -> Result<bool, StoreError> {
        let parent = dest.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        // Unique across every LocalStore of this process (each shard has one).
        let n = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(format!("{}-{n}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            for piece in data {
                f.write_all(piece.as_ref())?;
            }
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ignored = fs::remove_file(&tmp);
            return Err(io_err(&tmp)(e));
        }
        if if_absent {
            let linked = fs::hard_link(&tmp, dest);
            let _ignored = fs::remove_file(&tmp);
            match linked {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
                other => other.map_err(io_err(dest))?,
            }
        } else {
            fs::rename(&tmp, dest).map_err(io_err(dest))?;
        }
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_err(parent))?;
        Ok(true)
    }

    fn read_meta(&self, key: &str, size: u64) -> Result<ObjectMeta, StoreError> {
        let path = self.meta_path(key);
        let metadata = match fs::read(&path) {
            Ok(raw) => serde_json::from_slice(&raw).map_err(|e| StoreError::Io {
                path: path.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io_err(&path)(e)),
        };
        Ok(ObjectMeta {
            size,
            etag: String::new(),
            metadata,
            ..ObjectMeta::default()
        })
    }

    fn open_object(&self, key: &str) -> Result<(fs::File, u64), StoreError> {
        check_key(key)?;
        let path = self.object(key);
        match fs::File::open(&path) {
            Ok(f) => {
                let size = f.metadata().map_err(io_err(&path))?.len();
                Ok((f, size))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::LocalNotFound {
                key: key.to_owned(),
            }),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn walk(&self, dir: &Path, prefix: &str, out: &mut Vec<ListEntry>) -> Result<(), StoreError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(dir)(e)),
        };
        for e in entries {
            let e = e.map_err(io_err(dir))?;
            let path = e.path();
            let Ok(rel) = path.strip_prefix(&self.objects) else {
                continue;
            };
            let key = rel.to_string_lossy().into_owned();
            let ty = e.file_type().map_err(io_err(&path))?;
            if ty.is_dir() {
                // Only descend where keys under this directory can match.
                let as_prefix = format!("{key}/");
                if as_prefix.starts_with(prefix) || prefix.starts_with(&as_prefix) {
                    self.walk(&path, prefix, out)?;
                }
            } else if key.starts_with(prefix) {
                let size = e.metadata().map_err(io_err(&path))?.len();
                out.push(ListEntry {
                    key,
                    size,
                    etag: String::new(),
                    last_modified: String::new(),
                });
            }
        }
        Ok(())
    }
}

impl ObjectStore for LocalStore {
    async fn put_chunks(
        &self,
        key: &str,
        chunks: Vec<Bytes>,
        opts: &PutOptions,
    ) -> Result<ObjectMeta, StoreError> {
        check_key(key)?;
        let key = key.to_owned();
        let metadata = opts.metadata.clone();
        let if_absent = opts.if_absent;
        self.blocking(move |d| {
            if if_absent && d.object(&key).exists() {
                return Err(StoreError::LocalExists { key });
            }
            if !metadata.is_empty() {
                let raw = serde_json::to_vec(&metadata).unwrap_or_default();
                d.write_atomic(&d.meta_path(&key), &raw)?;
            }
            if !d.write_file(&d.object(&key), &chunks, if_absent)? {
                return Err(StoreError::LocalExists { key });
            }
            Ok(ObjectMeta {
                size: chunks.iter().map(|c| c.len() as u64).sum(),
                etag: String::new(),
                metadata,
                ..ObjectMeta::default()
            })
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Object, StoreError> {
        let key = key.to_owned();
        self.blocking(move |d| {
            let (mut f, size) = d.open_object(&key)?;
            let mut body = Vec::with_capacity(size as usize);
            f.read_to_end(&mut body).map_err(io_err(&d.object(&key)))?;
            let meta = d.read_meta(&key, body.len() as u64)?;
            Ok(Object {
                body: Bytes::from(body),
                meta,
            })
        })
        .await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let key = key.to_owned();
        self.blocking(move |d| {
            let (mut f, size) = d.open_object(&key)?;
            let start = range.start.min(size);
            let end = range.end.min(size).max(start);
            let mut body = vec![0; (end - start) as usize];
            let path = d.object(&key);
            f.seek(SeekFrom::Start(start)).map_err(io_err(&path))?;
            f.read_exact(&mut body).map_err(io_err(&path))?;
            Ok(Bytes::from(body))
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let key = key.to_owned();
        self.blocking(move |d| {
            let (_f, size) = d.open_object(&key)?;
            d.read_meta(&key, size)
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, StoreError> {
        let prefix = prefix.to_owned();
        self.blocking(move |d| {
            let mut out = Vec::new();
            d.walk(&d.objects, &prefix, &mut out)?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), StoreError> {
        for k in keys {
            check_key(k)?;
        }
        let keys = keys.to_vec();
        self.blocking(move |d| {
            for k in &keys {
                for path in [d.object(k), d.meta_path(k)] {
                    match fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err(&path)(e)),
                    }
                }
            }
            Ok(())
        })
        .await
    }

    async fn copy(&self, from: &str, to: &str) -> Result<ObjectMeta, StoreError> {
        check_key(from)?;
        check_key(to)?;
        let (from, to) = (from.to_owned(), to.to_owned());
        self.blocking(move |d| {
            let (_f, size) = d.open_object(&from)?;
            let meta = d.read_meta(&from, size)?;
            if !meta.metadata.is_empty() {
                let raw = serde_json::to_vec(&meta.metadata).unwrap_or_default();
                d.write_atomic(&d.meta_path(&to), &raw)?;
            }
            // Objects are never changed in place, so a second name for the
            // same bytes is a copy that costs nothing.
            let dest = d.object(&to);
            let parent = dest.parent().unwrap_or(&d.root);
            fs::create_dir_all(parent).map_err(io_err(parent))?;
            match fs::hard_link(d.object(&from), &dest) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(StoreError::LocalExists { key: to });
                }
                other => other.map_err(io_err(&dest))?,
            }
            fs::File::open(parent)
                .and_then(|f| f.sync_all())
                .map_err(io_err(parent))?;
            Ok(meta)
        })
        .await
    }

    fn describe(&self) -> String {
        format!("local directory {}", self.inner.root.display())
    }
}
