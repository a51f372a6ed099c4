//! The single-node store: the whole key space in memory, persisted to one JSON file that is
//! replaced atomically (write a temporary file, fsync, rename, fsync the directory) before a
//! transaction is acknowledged, so a crash mid-write loses nothing that was acknowledged.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
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

struct Inner {
    image: FileImage,
    history: VecDeque<WatchEvent>,
}

pub struct LocalStore {
    path: PathBuf,
    inner: Mutex<Inner>,
    events: broadcast::Sender<WatchEvent>,
}

impl LocalStore {
    /// Opens (or creates) the store file at `path`.
    pub fn open(path: &Path) -> Result<LocalStore> {
        let shown = path.display().to_string();
        let image = match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice::<FileImage>(&bytes).map_err(|e| StoreError::Corrupt {
                    path: shown.clone(),
                    detail: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileImage::default(),
            Err(source) => {
                return Err(StoreError::Io {
                    op: "reading",
                    path: shown,
                    source,
                })
            }
        };
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
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
                    |source| StoreError::Io {
                        op: "making private",
                        path: shown.clone(),
                        source,
                    },
                )?;
            }
        }
        let (events, _) = broadcast::channel(HISTORY);
        Ok(LocalStore {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner {
                image,
                history: VecDeque::new(),
            }),
            events,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the image half-changed: changes are made
        // on a copy and swapped in only after the file is written.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, image: &FileImage) -> Result<()> {
        let shown = self.path.display().to_string();
        let io = |op: &'static str| {
            let path = shown.clone();
            move |source| StoreError::Io { op, path, source }
        };
        let bytes = serde_json::to_vec(image).map_err(|e| StoreError::Corrupt {
            path: shown.clone(),
            detail: e.to_string(),
        })?;
        let tmp = self.path.with_extension("tmp");
        {
            // Created 0600 (whatever the umask), and made so if a crash left one behind.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("creating temporary file"))?;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io("making temporary file private"))?;
            f.write_all(&bytes).map_err(io("writing temporary file"))?;
            f.sync_all().map_err(io("syncing temporary file"))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io("renaming temporary file"))?;
        if let Some(dir) = self.path.parent() {
            let d = std::fs::File::open(dir).map_err(io("opening directory"))?;
            d.sync_all().map_err(io("syncing directory"))?;
        }
        Ok(())
    }
}

fn holds(image: &FileImage, cmp: &Compare) -> bool {
    match cmp {
        Compare::Absent(k) => !image.entries.contains_key(k),
        Compare::ModRevision(k, rev) => {
            image.entries.get(k).is_some_and(|e| e.mod_revision == *rev)
        }
    }
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
        let mut inner = self.lock();
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
        let mut next = FileImage {
            revision,
            entries: inner.image.entries.clone(),
        };
        let mut changes = Vec::new();
        for op in txn.ops {
            match op {
                Op::Put(key, value) => {
                    let value = String::from_utf8(value).map_err(|e| StoreError::Corrupt {
                        path: key.clone(),
                        detail: format!("value is not UTF-8: {e}"),
                    })?;
                    changes.push(WatchEvent {
                        revision,
                        key: key.clone(),
                        value: Some(value.clone().into_bytes()),
                    });
                    next.entries.insert(
                        key,
                        Entry {
                            value,
                            mod_revision: revision,
                        },
                    );
                }
                Op::Delete(key) => {
                    if next.entries.remove(&key).is_some() {
                        changes.push(WatchEvent {
                            revision,
                            key,
                            value: None,
                        });
                    }
                }
                Op::DeletePrefix(prefix) => {
                    let doomed: Vec<String> = next
                        .entries
                        .range(prefix.clone()..)
                        .take_while(|(k, _)| k.starts_with(&prefix))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in doomed {
                        next.entries.remove(&key);
                        changes.push(WatchEvent {
                            revision,
                            key,
                            value: None,
                        });
                    }
                }
            }
        }
        self.persist(&next)?;
        inner.image = next;
        for ev in changes {
            if inner.history.len() == HISTORY {
                inner.history.pop_front();
            }
            inner.history.push_back(ev.clone());
            // No receiver is not an error: nobody watches yet.
            let _ = self.events.send(ev);
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
}
