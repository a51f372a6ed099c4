//! The single-node store: the whole key space in memory, persisted as a snapshot (one JSON file,
//! the image at `path`) plus an append-only log beside it (`path` with the extension `log`).
//!
//! A transaction appends one record to the log (its revision and its changes, resolved to
//! concrete puts and deletes) and fsyncs it before it is acknowledged, so a write costs what it
//! changes, not what the store holds. Opening reads the snapshot and replays the log over it.
//! When the log outgrows the snapshot (and a floor of [`COMPACT_FLOOR`] bytes), the whole image
//! is written as a new snapshot, atomically (temporary file, fsync, rename, fsync the directory),
//! and the log is emptied: the cost of that copy is spread over at least as many bytes of log.
//!
//! A log record is one line: `<length> <crc32, 8 hex digits> <JSON>\n`, where the length and the
//! CRC-32 (IEEE) cover the JSON, which holds no raw newline. A last line that is unterminated or
//! fails its checks is a record torn by a crash mid-append: it was never acknowledged, so it is
//! dropped (and cut from the file). A bad record with more after it is corruption, and opening
//! says so. Records at or below the snapshot's revision are what a crash between writing a
//! snapshot and emptying the log leaves behind; they are skipped.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use super::{Compare, KeyValue, Op, Result, Store, StoreError, Txn, TxnOutcome, WatchEvent};

/// How many past events a watch can replay; an older start revision closes the watch at once,
/// which tells the watcher to read everything again (as etcd does after compaction).
const HISTORY: usize = 4096;

/// The log is compacted into a new snapshot once it holds more than this many bytes and more
/// bytes than the snapshot itself.
const COMPACT_FLOOR: u64 = 1 << 20;

#[derive(Default, Serialize, Deserialize)]
struct FileImage {
    revision: u64,
    entries: BTreeMap<String, Entry>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    value: String,
    mod_revision: u64,
}

/// One concrete change a transaction made: a put (`value` is `Some`) or a delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Change {
    key: String,
    value: Option<String>,
}

/// What one log record holds, as written.
#[derive(Serialize)]
struct RecordOut<'a> {
    revision: u64,
    changes: &'a [Change],
}

/// What one log record holds, as read back.
#[derive(Deserialize)]
struct Record {
    revision: u64,
    changes: Vec<Change>,
}

/// The open log and what is known about it.
struct Log {
    file: File,
    /// Shown in errors.
    shown: String,
    /// Bytes of whole, acknowledged records in the file.
    len: u64,
    /// A failed append may have left bytes past `len` that could not be cut off at once; they
    /// are cut off before the next append.
    dirty: bool,
    /// The log is compacted when `len` exceeds this.
    compact_above: u64,
}

struct Inner {
    image: FileImage,
    history: VecDeque<WatchEvent>,
    log: Log,
}

pub struct LocalStore {
    path: PathBuf,
    /// The smallest log, in bytes, worth compacting ([`COMPACT_FLOOR`]; tests lower it).
    compact_floor: u64,
    inner: Mutex<Inner>,
    events: broadcast::Sender<WatchEvent>,
}

fn io_err(op: &'static str, path: &str) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_string();
    move |source| StoreError::Io { op, path, source }
}

/// The log's path: `path` with the extension `log` (`state.json` -> `state.log`).
fn log_path(path: &Path) -> PathBuf {
    let log = path.with_extension("log");
    if log == path {
        path.with_extension("log.wal")
    } else {
        log
    }
}

impl LocalStore {
    /// Opens (or creates) the store at `path` (the snapshot) and its log beside it.
    pub fn open(path: &Path) -> Result<LocalStore> {
        LocalStore::open_with(path, COMPACT_FLOOR)
    }

    fn open_with(path: &Path, compact_floor: u64) -> Result<LocalStore> {
        let shown = path.display().to_string();
        let (mut image, snapshot_len) = match std::fs::read(path) {
            Ok(bytes) => {
                let image = serde_json::from_slice::<FileImage>(&bytes).map_err(|e| {
                    StoreError::Corrupt {
                        path: shown.clone(),
                        detail: e.to_string(),
                    }
                })?;
                (Some(image), bytes.len() as u64)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, 0),
            Err(source) => {
                return Err(StoreError::Io {
                    op: "reading",
                    path: shown,
                    source,
                })
            }
        };
        let have_snapshot = image.is_some();
        if let Some(dir) = path.parent() {
            // The file holds services' environments: root's alone, in a directory of its own.
            // Parents as `mkdir -p` makes them; the directory itself 0700.
            let creating = |source| StoreError::Io {
                op: "creating directory",
                path: dir.display().to_string(),
                source,
            };
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent).map_err(creating)?;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(creating(e)),
            }
        }
        // A file an older version left readable to all is narrowed now, not at the next write.
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io_err("making private", &shown))?;
            }
        }

        let log_path = log_path(path);
        let log_shown = log_path.display().to_string();
        let log_existed = log_path.exists();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(io_err("opening log", &log_shown))?;
        let mode = file
            .metadata()
            .map_err(io_err("reading log metadata", &log_shown))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io_err("making log private", &log_shown))?;
        }
        if !log_existed {
            // The new log's name must outlast a crash before anything is acknowledged from it.
            sync_dir(path, &log_shown)?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(io_err("reading log", &log_shown))?;
        let image_ref = image.get_or_insert_with(FileImage::default);
        let replayed = replay(image_ref, &bytes, &log_shown)?;
        if replayed.good_len < bytes.len() as u64 {
            tracing::warn!(
                log = %log_shown,
                kept = replayed.good_len,
                dropped = bytes.len() as u64 - replayed.good_len,
                "store: dropping a torn last record (a crash mid-append; it was never acknowledged)"
            );
            file.set_len(replayed.good_len)
                .map_err(io_err("cutting a torn record from log", &log_shown))?;
            file.sync_all().map_err(io_err("syncing log", &log_shown))?;
        }
        let image = image.unwrap_or_default();

        let (events, _) = broadcast::channel(HISTORY);
        let store = LocalStore {
            path: path.to_path_buf(),
            compact_floor,
            inner: Mutex::new(Inner {
                image,
                history: VecDeque::new(),
                log: Log {
                    file,
                    shown: log_shown,
                    len: replayed.good_len,
                    dirty: false,
                    compact_above: compact_floor.max(snapshot_len),
                },
            }),
            events,
        };
        {
            let mut inner = store.lock();
            // No snapshot yet (a new store), a log that a crash kept from being emptied, or one
            // past its bound: write the snapshot now.
            if !have_snapshot || replayed.stale || inner.log.len > inner.log.compact_above {
                store.compact(&mut inner)?;
            }
        }
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the image half-changed: a transaction
        // checks and resolves everything first, and once its record is in the log it only
        // inserts into and removes from the map.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the whole image as the new snapshot and empties the log.
    fn compact(&self, inner: &mut Inner) -> Result<()> {
        let shown = self.path.display().to_string();
        let bytes = serde_json::to_vec(&inner.image).map_err(|e| StoreError::Corrupt {
            path: shown.clone(),
            detail: format!("encoding the snapshot: {e}"),
        })?;
        write_snapshot(&self.path, &bytes)?;
        let log = &mut inner.log;
        log.compact_above = self.compact_floor.max(bytes.len() as u64);
        // Should emptying fail, the log keeps records the snapshot already holds: opening
        // skips them, and appends may follow them.
        log.file
            .set_len(0)
            .map_err(io_err("emptying log after a snapshot", &log.shown))?;
        log.len = 0;
        log.dirty = false;
        log.file
            .sync_data()
            .map_err(io_err("syncing log after emptying it", &log.shown))?;
        Ok(())
    }
}

/// Replaces the snapshot at `path` with `bytes`: a temporary file, fsync, rename, fsync the
/// directory.
fn write_snapshot(path: &Path, bytes: &[u8]) -> Result<()> {
    let shown = path.display().to_string();
    let tmp = path.with_extension("tmp");
    {
        // Created 0600 (whatever the umask), and made so if a crash left one behind.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("creating temporary file", &shown))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io_err("making temporary file private", &shown))?;
        f.write_all(bytes)
            .map_err(io_err("writing temporary file", &shown))?;
        f.sync_all()
            .map_err(io_err("syncing temporary file", &shown))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err("renaming temporary file", &shown))?;
    sync_dir(path, &shown)
}

/// Fsyncs the directory holding `path`, so a new or renamed name in it lasts.
fn sync_dir(path: &Path, shown: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        let d = File::open(dir).map_err(io_err("opening directory", shown))?;
        d.sync_all().map_err(io_err("syncing directory", shown))?;
    }
    Ok(())
}

impl Log {
    /// Appends one record and makes it durable. On failure the file is cut back to its last
    /// whole record (or will be, before the next append), and the record counts as not written.
    fn append(&mut self, record: &[u8]) -> Result<()> {
        if self.dirty {
            self.file
                .set_len(self.len)
                .map_err(io_err("cutting a failed append from log", &self.shown))?;
            self.dirty = false;
        }
        let written = self
            .file
            .write_all(record)
            .map_err(io_err("appending to log", &self.shown))
            .and_then(|()| {
                self.file
                    .sync_data()
                    .map_err(io_err("syncing log", &self.shown))
            });
        if let Err(e) = written {
            if self.file.set_len(self.len).is_err() {
                self.dirty = true;
            }
            return Err(e);
        }
        self.len += record.len() as u64;
        Ok(())
    }
}

/// Frames one record: `<length> <crc32> <JSON>\n`.
fn encode_record(revision: u64, changes: &[Change], shown: &str) -> Result<Vec<u8>> {
    let json =
        serde_json::to_vec(&RecordOut { revision, changes }).map_err(|e| StoreError::Corrupt {
            path: shown.to_string(),
            detail: format!("encoding the record of revision {revision}: {e}"),
        })?;
    let mut line = format!("{} {:08x} ", json.len(), crc32(&json)).into_bytes();
    line.reserve(json.len() + 1);
    line.extend_from_slice(&json);
    line.push(b'\n');
    Ok(line)
}

/// Checks and decodes one record line (without its newline).
fn decode_record(line: &[u8]) -> std::result::Result<Record, String> {
    let mut parts = line.splitn(3, |b| *b == b' ');
    let (Some(len), Some(crc), Some(json)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("not `<length> <crc32> <JSON>`".to_string());
    };
    let len: usize = std::str::from_utf8(len)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("the length is not a number")?;
    let crc = std::str::from_utf8(crc)
        .ok()
        .filter(|s| s.len() == 8)
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .ok_or("the checksum is not 8 hex digits")?;
    if json.len() != len {
        return Err(format!("length {len} but {} bytes follow", json.len()));
    }
    let actual = crc32(json);
    if actual != crc {
        return Err(format!(
            "checksum {crc:08x} but the bytes give {actual:08x}"
        ));
    }
    serde_json::from_slice(json).map_err(|e| format!("decoding: {e}"))
}

struct Replayed {
    /// Bytes of whole, good records; anything after them is a torn last record.
    good_len: u64,
    /// Some records were at or below the snapshot's revision.
    stale: bool,
}

/// Applies the log `bytes` to `image`.
fn replay(image: &mut FileImage, bytes: &[u8], shown: &str) -> Result<Replayed> {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: shown.to_string(),
        detail,
    };
    let mut pos = 0;
    let mut index = 0;
    let mut stale = false;
    let mut applied = false;
    while pos < bytes.len() {
        // serde_json escapes newlines inside strings, so a record is exactly one line.
        let Some(nl) = bytes[pos..].iter().position(|b| *b == b'\n') else {
            break; // unterminated: torn
        };
        let end = pos + nl + 1;
        let record = match decode_record(&bytes[pos..pos + nl]) {
            Ok(record) => record,
            Err(_) if end == bytes.len() => break, // the last line: torn
            Err(detail) => {
                return Err(corrupt(format!(
                    "record {index} at byte {pos}, with more records after it: {detail}"
                )))
            }
        };
        if record.revision <= image.revision {
            if applied {
                return Err(corrupt(format!(
                    "record {index} at byte {pos} has revision {} after revision {}",
                    record.revision, image.revision
                )));
            }
            stale = true;
        } else if record.revision != image.revision + 1 {
            return Err(corrupt(format!(
                "record {index} at byte {pos} has revision {} but revision {} comes next",
                record.revision,
                image.revision + 1
            )));
        } else {
            for change in record.changes {
                match change.value {
                    Some(value) => {
                        image.entries.insert(
                            change.key,
                            Entry {
                                value,
                                mod_revision: record.revision,
                            },
                        );
                    }
                    None => {
                        image.entries.remove(&change.key);
                    }
                }
            }
            image.revision = record.revision;
            applied = true;
        }
        pos = end;
        index += 1;
    }
    Ok(Replayed {
        good_len: pos as u64,
        stale,
    })
}

/// CRC-32 (IEEE 802.3, as zlib and `crc32fast` compute it).
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for b in bytes {
        crc = TABLE[((crc ^ u32::from(*b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

fn holds(image: &FileImage, cmp: &Compare) -> bool {
    match cmp {
        Compare::Absent(k) => !image.entries.contains_key(k),
        Compare::ModRevision(k, rev) => {
            image.entries.get(k).is_some_and(|e| e.mod_revision == *rev)
        }
    }
}

/// Resolves `ops`, in order, against `entries` into concrete changes, without touching
/// `entries`: a delete of a missing key changes nothing, a prefix delete becomes a delete of
/// each key under the prefix at that point (in key order).
fn resolve(entries: &BTreeMap<String, Entry>, ops: Vec<Op>) -> Result<Vec<Change>> {
    // What this transaction has done so far to each key it touched (None: deleted).
    let mut overlay: BTreeMap<String, Option<()>> = BTreeMap::new();
    let exists = |overlay: &BTreeMap<String, Option<()>>, key: &str| match overlay.get(key) {
        Some(now) => now.is_some(),
        None => entries.contains_key(key),
    };
    let mut changes = Vec::new();
    for op in ops {
        match op {
            Op::Put(key, value) => {
                let value = String::from_utf8(value).map_err(|e| StoreError::Corrupt {
                    path: key.clone(),
                    detail: format!("value is not UTF-8: {e}"),
                })?;
                overlay.insert(key.clone(), Some(()));
                changes.push(Change {
                    key,
                    value: Some(value),
                });
            }
            Op::Delete(key) => {
                if exists(&overlay, &key) {
                    overlay.insert(key.clone(), None);
                    changes.push(Change { key, value: None });
                }
            }
            Op::DeletePrefix(prefix) => {
                let under = |k: &&String| k.starts_with(&prefix);
                let doomed: BTreeSet<String> = entries
                    .range(prefix.clone()..)
                    .map(|(k, _)| k)
                    .take_while(under)
                    .chain(
                        overlay
                            .range(prefix.clone()..)
                            .map(|(k, _)| k)
                            .take_while(under),
                    )
                    .filter(|k| exists(&overlay, k))
                    .cloned()
                    .collect();
                for key in doomed {
                    overlay.insert(key.clone(), None);
                    changes.push(Change { key, value: None });
                }
            }
        }
    }
    Ok(changes)
}

#[async_trait]
impl Store for LocalStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let inner = self.lock();
        Ok(inner.image.entries.get(key).map(|e| KeyValue {
            key: key.to_string(),
            value: e.value.clone().into_bytes(),
            mod_revision: e.mod_revision,
        }))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, u64)> {
        let inner = self.lock();
        let kvs = inner
            .image
            .entries
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| KeyValue {
                key: k.clone(),
                value: e.value.clone().into_bytes(),
                mod_revision: e.mod_revision,
            })
            .collect();
        Ok((kvs, inner.image.revision))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if !txn.compares.iter().all(|c| holds(&inner.image, c)) {
            return Ok(TxnOutcome {
                succeeded: false,
                revision: inner.image.revision,
            });
        }
        if txn.ops.is_empty() {
            return Ok(TxnOutcome {
                succeeded: true,
                revision: inner.image.revision,
            });
        }
        let revision = inner.image.revision + 1;
        let changes = resolve(&inner.image.entries, txn.ops)?;
        let record = encode_record(revision, &changes, &inner.log.shown)?;
        // Durable before anything in memory changes: a failed append leaves the store as it was.
        inner.log.append(&record)?;
        inner.image.revision = revision;
        for change in changes {
            let ev = WatchEvent {
                revision,
                key: change.key.clone(),
                value: change.value.as_ref().map(|v| v.clone().into_bytes()),
            };
            match change.value {
                Some(value) => {
                    inner.image.entries.insert(
                        change.key,
                        Entry {
                            value,
                            mod_revision: revision,
                        },
                    );
                }
                None => {
                    inner.image.entries.remove(&change.key);
                }
            }
            if inner.history.len() == HISTORY {
                inner.history.pop_front();
            }
            inner.history.push_back(ev.clone());
            // No receiver is not an error: nobody watches yet.
            let _ = self.events.send(ev);
        }
        if inner.log.len > inner.log.compact_above {
            if let Err(e) = self.compact(inner) {
                // The transaction is durable in the log. Compaction is tried again once the log
                // has grown by the current bound again (so the bound doubles per failure).
                tracing::warn!(error = %e, "store: compacting the log failed");
                inner.log.compact_above = inner.log.len.saturating_add(inner.log.compact_above);
            }
        }
        Ok(TxnOutcome {
            succeeded: true,
            revision,
        })
    }

    async fn watch(&self, prefix: &str, after_revision: u64) -> Result<mpsc::Receiver<WatchEvent>> {
        let (tx, rx) = mpsc::channel(1024);
        let (replay, mut live, complete) = {
            let inner = self.lock();
            let live = self.events.subscribe();
            let oldest = inner.history.front().map(|e| e.revision);
            // Everything after `after_revision` must still be in the history, or we say so by
            // closing the watch without events.
            let complete = after_revision >= inner.image.revision
                || oldest.is_some_and(|o| o <= after_revision + 1);
            let replay: Vec<WatchEvent> = inner
                .history
                .iter()
                .filter(|e| e.revision > after_revision && e.key.starts_with(prefix))
                .cloned()
                .collect();
            (replay, live, complete)
        };
        if !complete {
            return Ok(rx);
        }
        let prefix = prefix.to_string();
        let mut last = after_revision;
        tokio::spawn(async move {
            for ev in replay {
                last = ev.revision;
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(ev) => {
                        if ev.revision <= last || !ev.key.starts_with(&prefix) {
                            continue;
                        }
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                    // Fell behind: close the watch, the watcher reads everything again.
                    Err(_) => return,
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(&dir.path().join("state.json")).unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn claims_are_exclusive() {
        let (_d, s) = store();
        let t = || Txn::new().when_absent("/c/a").put("/c/a", b"1".to_vec());
        assert!(s.txn(t()).await.unwrap().succeeded);
        assert!(!s.txn(t()).await.unwrap().succeeded);
        assert_eq!(s.get("/c/a").await.unwrap().unwrap().value, b"1");
    }

    #[tokio::test]
    async fn failed_compare_writes_nothing() {
        let (_d, s) = store();
        s.txn(Txn::new().put("/k", b"1".to_vec())).await.unwrap();
        let out = s
            .txn(
                Txn::new()
                    .when_absent("/k")
                    .put("/other", b"2".to_vec())
                    .delete("/k"),
            )
            .await
            .unwrap();
        assert!(!out.succeeded);
        assert!(s.get("/other").await.unwrap().is_none());
        assert!(s.get("/k").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn mod_revision_guards_updates() {
        let (_d, s) = store();
        let r = s.txn(Txn::new().put("/k", b"1".to_vec())).await.unwrap();
        let stale = Txn::new()
            .when_revision("/k", r.revision - 1)
            .put("/k", b"x".to_vec());
        assert!(!s.txn(stale).await.unwrap().succeeded);
        let fresh = Txn::new()
            .when_revision("/k", r.revision)
            .put("/k", b"2".to_vec());
        assert!(s.txn(fresh).await.unwrap().succeeded);
    }

    #[tokio::test]
    async fn survives_reopen_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        {
            let s = LocalStore::open(&path).unwrap();
            s.txn(
                Txn::new()
                    .put("/a/1", b"x".to_vec())
                    .put("/a/2", b"y".to_vec()),
            )
            .await
            .unwrap();
            s.txn(Txn::new().delete_prefix("/a/1")).await.unwrap();
        }
        let s = LocalStore::open(&path).unwrap();
        let (kvs, rev) = s.list("/a/").await.unwrap();
        assert_eq!(rev, 2);
        assert_eq!(kvs.len(), 1);
        assert_eq!(kvs[0].key, "/a/2");
        assert!(!path.with_extension("tmp").exists());
    }

    #[tokio::test]
    async fn the_file_is_private_and_its_new_directory_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("state.json");
        let s = LocalStore::open(&path).unwrap();
        let t = Txn::new().put("/k", b"secret env".to_vec());
        assert!(s.txn(t).await.unwrap().succeeded);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        // A file an older version left world-readable is narrowed on open.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(s);
        let _s = LocalStore::open(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[tokio::test]
    async fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{not json").unwrap();
        let err = LocalStore::open(&path).err().unwrap().to_string();
        assert!(err.contains("corrupt"), "{err}");
    }

    #[tokio::test]
    async fn watch_replays_then_follows_with_prefix_filter() {
        let (_d, s) = store();
        let r1 = s.txn(Txn::new().put("/w/a", b"1".to_vec())).await.unwrap();
        s.txn(Txn::new().put("/x/b", b"2".to_vec())).await.unwrap();
        s.txn(Txn::new().put("/w/c", b"3".to_vec())).await.unwrap();
        let mut rx = s.watch("/w/", r1.revision).await.unwrap();
        let ev = rx.recv().await.unwrap();
        assert_eq!(ev.key, "/w/c");
        s.txn(Txn::new().delete("/w/a")).await.unwrap();
        let ev = rx.recv().await.unwrap();
        assert_eq!((ev.key.as_str(), ev.value), ("/w/a", None));
    }

    #[tokio::test]
    async fn watch_from_forgotten_revision_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        {
            let s = LocalStore::open(&path).unwrap();
            s.txn(Txn::new().put("/w/a", b"1".to_vec())).await.unwrap();
            s.txn(Txn::new().put("/w/a", b"2".to_vec())).await.unwrap();
        }
        // A reopened store has no history: a watch from revision 0 must not pretend otherwise.
        let s = LocalStore::open(&path).unwrap();
        let mut rx = s.watch("/w/", 0).await.unwrap();
        assert!(rx.recv().await.is_none());
    }

    fn log_of(path: &Path) -> PathBuf {
        log_path(path)
    }

    fn snapshot_revision(path: &Path) -> u64 {
        let image: FileImage = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        image.revision
    }

    /// Puts, overwrites, deletes of present and missing keys, prefix deletes, and a put and a
    /// delete of one key in one transaction; values with newlines and quotes.
    async fn churn(s: &LocalStore, n: usize) {
        for i in 0..n {
            let t = match i % 5 {
                0 | 1 => Txn::new().put(format!("/s/{}/{i}", i % 7), format!("v{i}").into_bytes()),
                2 => Txn::new()
                    .put(
                        format!("/s/{}/{}", i % 7, i - 2),
                        b"over\nwrite \"q\"".to_vec(),
                    )
                    .delete(format!("/s/{}/{}", (i + 3) % 7, i - 1)),
                3 => Txn::new()
                    .put(format!("/t/{i}"), b"x".to_vec())
                    .delete(format!("/t/{i}"))
                    .put(format!("/u/{i}"), b"y".to_vec()),
                _ => Txn::new().delete_prefix(format!("/s/{}/", i % 7)),
            };
            assert!(s.txn(t).await.unwrap().succeeded);
        }
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[tokio::test]
    async fn reopen_after_many_txns_gives_identical_contents_and_revision() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let before = {
            let s = LocalStore::open(&path).unwrap();
            churn(&s, 300).await;
            s.list("").await.unwrap()
        };
        assert_eq!(before.1, 300);
        // Nothing was compacted: the snapshot is the empty one, everything came from the log.
        assert_eq!(snapshot_revision(&path), 0);
        let s = LocalStore::open(&path).unwrap();
        assert_eq!(s.list("").await.unwrap(), before);
        // And it goes on from there.
        let r = s.txn(Txn::new().put("/z", b"1".to_vec())).await.unwrap();
        assert_eq!(r.revision, 301);
    }

    #[tokio::test]
    async fn a_txn_appends_one_record_and_rewrites_no_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let s = LocalStore::open(&path).unwrap();
        let snapshot = std::fs::read(&path).unwrap();
        s.txn(Txn::new().put("/a", b"1".to_vec())).await.unwrap();
        s.txn(Txn::new().put("/b", b"2".to_vec()).delete_prefix("/a"))
            .await
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), snapshot);
        let log = std::fs::read(log_of(&path)).unwrap();
        let lines: Vec<&[u8]> = log
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 2);
        let second = decode_record(lines[1]).unwrap();
        assert_eq!(second.revision, 2);
        assert_eq!(
            second.changes,
            [
                Change {
                    key: "/b".into(),
                    value: Some("2".into())
                },
                Change {
                    key: "/a".into(),
                    value: None
                }
            ]
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&log_of(&path)), 0o600);
    }

    #[tokio::test]
    async fn a_torn_last_record_is_ignored_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let before = {
            let s = LocalStore::open(&path).unwrap();
            churn(&s, 20).await;
            s.list("").await.unwrap()
        };
        let log = log_of(&path);
        let good = std::fs::read(&log).unwrap();
        let next = encode_record(
            before.1 + 1,
            &[Change {
                key: "/torn".into(),
                value: Some("never acknowledged".into()),
            }],
            "",
        )
        .unwrap();
        let mut bad_sum = next.clone();
        let at = bad_sum.len() - 5;
        bad_sum[at] ^= 1;
        let tails: [&[u8]; 4] = [
            &next[..next.len() / 2],
            &next[..next.len() - 1],
            &bad_sum,
            &[0; 64],
        ];
        for tail in tails {
            let mut bytes = good.clone();
            bytes.extend_from_slice(tail);
            std::fs::write(&log, &bytes).unwrap();
            let s = LocalStore::open(&path).unwrap();
            assert_eq!(s.list("").await.unwrap(), before);
            assert_eq!(
                std::fs::read(&log).unwrap(),
                good,
                "the torn record is cut off"
            );
        }
        // Appends go on after the good records, and reopen sees them.
        {
            let s = LocalStore::open(&path).unwrap();
            let r = s
                .txn(Txn::new().put("/after", b"1".to_vec()))
                .await
                .unwrap();
            assert_eq!(r.revision, before.1 + 1);
        }
        let s = LocalStore::open(&path).unwrap();
        assert!(s.get("/after").await.unwrap().is_some());
        assert!(s.get("/torn").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_bad_record_in_the_middle_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        {
            let s = LocalStore::open(&path).unwrap();
            for i in 0..3 {
                s.txn(Txn::new().put(format!("/k{i}"), b"value".to_vec()))
                    .await
                    .unwrap();
            }
        }
        let log = log_of(&path);
        let good = std::fs::read(&log).unwrap();
        // A flipped bit in the first record's value.
        let mut flipped = good.clone();
        let at = good.windows(5).position(|w| w == b"value").unwrap();
        flipped[at] ^= 0x20;
        std::fs::write(&log, &flipped).unwrap();
        let err = LocalStore::open(&path).err().unwrap();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        let shown = err.to_string();
        assert!(
            shown.contains("state.log") && shown.contains("checksum"),
            "{shown}"
        );
        // A missing record in the middle (a gap in revisions) too.
        let lines: Vec<&[u8]> = good.split_inclusive(|b| *b == b'\n').collect();
        std::fs::write(&log, [lines[0], lines[2]].concat()).unwrap();
        let shown = LocalStore::open(&path).err().unwrap().to_string();
        assert!(
            shown.contains("corrupt") && shown.contains("revision"),
            "{shown}"
        );
        // The good log still opens.
        std::fs::write(&log, &good).unwrap();
        let s = LocalStore::open(&path).unwrap();
        assert_eq!(s.list("").await.unwrap().1, 3);
    }

    #[tokio::test]
    async fn the_log_is_compacted_and_reopen_is_still_right() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let before = {
            let s = LocalStore::open_with(&path, 512).unwrap();
            churn(&s, 200).await;
            let log_len = s.lock().log.len;
            let snapshot = std::fs::metadata(&path).unwrap().len();
            assert!(log_len <= snapshot.max(512) + 256, "{log_len}");
            s.list("").await.unwrap()
        };
        let compacted_at = snapshot_revision(&path);
        assert!(compacted_at > 0 && compacted_at <= 200, "{compacted_at}");
        assert!(!path.with_extension("tmp").exists());
        let s = LocalStore::open(&path).unwrap();
        assert_eq!(s.list("").await.unwrap(), before);
        // Watches still see changes after a compaction.
        let mut rx = s.watch("/w/", before.1).await.unwrap();
        s.txn(Txn::new().put("/w/a", b"1".to_vec())).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().revision, before.1 + 1);
    }

    #[tokio::test]
    async fn records_a_snapshot_already_holds_are_skipped() {
        // A crash after the snapshot was renamed but before the log was emptied.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let log = log_of(&path);
        let before = {
            let s = LocalStore::open(&path).unwrap();
            churn(&s, 30).await;
            let old = std::fs::read(&log).unwrap();
            s.compact(&mut s.lock()).unwrap();
            assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
            churn(&s, 10).await;
            let new = std::fs::read(&log).unwrap();
            std::fs::write(&log, [old, new].concat()).unwrap();
            s.list("").await.unwrap()
        };
        assert_eq!(snapshot_revision(&path), 30);
        let s = LocalStore::open(&path).unwrap();
        assert_eq!(s.list("").await.unwrap(), before);
        // Opening wrote a fresh snapshot and emptied the log.
        assert_eq!(snapshot_revision(&path), 40);
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
    }

    #[tokio::test]
    async fn a_failed_compare_or_an_empty_txn_writes_nothing_to_the_log() {
        let (d, s) = store();
        let log = log_of(&d.path().join("state.json"));
        s.txn(Txn::new().put("/k", b"1".to_vec())).await.unwrap();
        let len = std::fs::metadata(&log).unwrap().len();
        assert!(len > 0);
        let out = s
            .txn(Txn::new().when_absent("/k").put("/other", b"2".to_vec()))
            .await
            .unwrap();
        assert!(!out.succeeded);
        assert!(s.txn(Txn::new().when_absent("/x")).await.unwrap().succeeded);
        assert_eq!(std::fs::metadata(&log).unwrap().len(), len);
    }

    #[tokio::test]
    async fn a_failed_append_leaves_memory_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let log = log_of(&path);
        let s = LocalStore::open(&path).unwrap();
        s.txn(Txn::new().put("/k", b"1".to_vec())).await.unwrap();
        let before = s.list("").await.unwrap();
        // A read-only handle: the append fails.
        let writable = std::mem::replace(&mut s.lock().log.file, File::open(&log).unwrap());
        let mut rx = s.watch("/", before.1).await.unwrap();
        let err = s
            .txn(Txn::new().put("/k", b"2".to_vec()).put("/n", b"3".to_vec()))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("state.log") && err.contains("appending"),
            "{err}"
        );
        assert_eq!(s.list("").await.unwrap(), before);
        s.lock().log.file = writable;
        let r = s.txn(Txn::new().put("/n", b"4".to_vec())).await.unwrap();
        assert_eq!(r.revision, before.1 + 1);
        // The watch saw only the write that happened.
        let ev = rx.recv().await.unwrap();
        assert_eq!((ev.key.as_str(), ev.revision), ("/n", before.1 + 1));
        drop(s);
        let s = LocalStore::open(&path).unwrap();
        assert_eq!(s.get("/k").await.unwrap().unwrap().value, b"1");
        assert_eq!(s.get("/n").await.unwrap().unwrap().value, b"4");
    }

    #[tokio::test]
    async fn a_state_file_from_before_the_log_still_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(
            &path,
            br#"{"revision":7,"entries":{"/a":{"value":"x","mod_revision":5}}}"#,
        )
        .unwrap();
        {
            let s = LocalStore::open(&path).unwrap();
            let a = s.get("/a").await.unwrap().unwrap();
            assert_eq!((a.value.as_slice(), a.mod_revision), (&b"x"[..], 5));
            let r = s.txn(Txn::new().put("/b", b"y".to_vec())).await.unwrap();
            assert_eq!(r.revision, 8);
        }
        let s = LocalStore::open(&path).unwrap();
        let (kvs, rev) = s.list("").await.unwrap();
        assert_eq!((kvs.len(), rev), (2, 8));
    }

    #[tokio::test]
    async fn ops_in_one_txn_apply_in_order() {
        let (d, s) = store();
        s.txn(Txn::new().put("/p/x", b"0".to_vec())).await.unwrap();
        let mut rx = s.watch("/p/", 1).await.unwrap();
        let t = Txn::new()
            .put("/p/a", b"1".to_vec())
            .put("/p/b", b"2".to_vec())
            .delete("/p/missing")
            .delete_prefix("/p/")
            .put("/p/c", b"3".to_vec());
        s.txn(t).await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..6 {
            let ev = rx.recv().await.unwrap();
            seen.push((ev.key, ev.value.is_some()));
        }
        let want: Vec<(String, bool)> = [
            ("/p/a", true),
            ("/p/b", true),
            ("/p/a", false),
            ("/p/b", false),
            ("/p/x", false),
            ("/p/c", true),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
        assert_eq!(seen, want);
        let now = s.list("").await.unwrap();
        drop(s);
        let s = LocalStore::open(&d.path().join("state.json")).unwrap();
        assert_eq!(s.list("").await.unwrap(), now);
        assert_eq!(now.0.len(), 1);
    }

    /// Time per transaction with 10,000 keys present: this store (one log record) against the
    /// way it was before (clone the map, rewrite the whole file). Prints; asserts nothing.
    /// `cargo test -p routemesh --lib store::local -- --ignored --nocapture txn_cost`
    #[tokio::test]
    #[ignore = "a measurement, not a test"]
    async fn txn_cost_with_10000_keys() {
        const KEYS: usize = 10_000;
        let value = vec![b'v'; 300];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let s = LocalStore::open(&path).unwrap();
        for batch in 0..KEYS / 1000 {
            let mut t = Txn::new();
            for i in 0..1000 {
                t = t.put(format!("/services/{:05}", batch * 1000 + i), value.clone());
            }
            s.txn(t).await.unwrap();
        }
        s.compact(&mut s.lock()).unwrap();
        let snapshot = std::fs::metadata(&path).unwrap().len();

        // After: one put per transaction.
        let n = 2000;
        let start = std::time::Instant::now();
        for i in 0..n {
            let t = Txn::new().put(format!("/services/{:05}", i * 7 % KEYS), value.clone());
            s.txn(t).await.unwrap();
        }
        let after = start.elapsed() / n as u32;
        let record = s.lock().log.len / n as u64;
        let start = std::time::Instant::now();
        s.compact(&mut s.lock()).unwrap();
        let compaction = start.elapsed();
        let per = compaction / (snapshot.max(COMPACT_FLOOR) / record.max(1)) as u32;

        // Before: what each transaction did until now.
        let m: u32 = 50;
        let start = std::time::Instant::now();
        for i in 0..m {
            let inner = s.lock();
            let mut next = FileImage {
                revision: inner.image.revision + 1,
                entries: inner.image.entries.clone(),
            };
            next.entries.insert(
                format!("/services/{:05}", i as usize * 7 % KEYS),
                Entry {
                    value: "v".repeat(300),
                    mod_revision: next.revision,
                },
            );
            let bytes = serde_json::to_vec(&next).unwrap();
            write_snapshot(&path, &bytes).unwrap();
        }
        let before = start.elapsed() / m;
        println!(
            "{KEYS} keys, snapshot {snapshot} bytes, log record {record} bytes\n\
             before (clone + whole-file rewrite): {before:?} per txn ({m} txns)\n\
             after  (append + fsync one record):  {after:?} per txn ({n} txns)\n\
             compaction: {compaction:?} once per >= {} bytes of log, ~{per:?} per txn amortised",
            snapshot.max(COMPACT_FLOOR)
        );
    }
}
