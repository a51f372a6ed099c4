use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde_json::json;

use super::*;
use crate::store::local::LocalStore;
use crate::store::{KeyValue, Txn, TxnOutcome};

fn service(name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "name": name, "id": "0123456789ab", "replicas": 0, "networks": [],
        "env": [], "command": ["sleep", "1"], "created_at": 0, "updated_at": 0, "ports": []
    }))
    .unwrap()
}

/// A local store whose watch can be cut, and which then refuses to replay anything older
/// than the cut (as etcd does once it compacted).
struct Compacting {
    inner: LocalStore,
    compacted: AtomicU64,
    cut: tokio::sync::watch::Sender<u64>,
}

#[async_trait]
impl Store for Compacting {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, u64)> {
        self.inner.list(prefix).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        self.inner.txn(txn).await
    }
    async fn watch(&self, prefix: &str, after: u64) -> Result<mpsc::Receiver<WatchEvent>> {
        let (tx, rx) = mpsc::channel(16);
        if after < self.compacted.load(Ordering::SeqCst) {
            return Ok(rx);
        }
        let mut inner = self.inner.watch(prefix, after).await?;
        let mut cut = self.cut.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    ev = inner.recv() => match ev {
                        Some(ev) => if tx.send(ev).await.is_err() { return },
                        None => return,
                    },
                    _ = cut.changed() => return,
                }
            }
        });
        Ok(rx)
    }
}

async fn put(store: &dyn Store, key: &str, value: Vec<u8>) -> u64 {
    let out = store.txn(Txn::new().put(key, value)).await.unwrap();
    assert!(out.succeeded);
    out.revision
}

#[tokio::test]
async fn follows_puts_and_deletes_and_says_which_keys_changed() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::open(&dir.path().join("s.json")).unwrap());
    put(store.as_ref(), &keys::service("a"), service("a")).await;
    let cache = Cache::start(store.clone()).await.unwrap();
    let first = cache.snapshot();
    assert!(first.state.services.contains_key("a"));

    let rev = put(store.as_ref(), &keys::service("b"), service("b")).await;
    let snap = cache.at_least(rev).await.unwrap();
    assert!(snap.state.services.contains_key("b"));
    assert_eq!(
        cache.changes(first.seq, snap.seq),
        Changes::Keys([keys::service("b")].into())
    );
    // The snapshot taken before is immutable: it still lacks `b`.
    assert!(!first.state.services.contains_key("b"));

    let out = store
        .txn(
            Txn::new()
                .delete(keys::service("a"))
                .put(keys::alive("n1"), b"1".to_vec()),
        )
        .await
        .unwrap();
    let snap2 = cache.at_least(out.revision).await.unwrap();
    assert!(!snap2.state.services.contains_key("a"));
    assert!(snap2.state.alive.contains("n1"));
    assert_eq!(
        cache.changes(snap.seq, snap2.seq),
        Changes::Keys([keys::service("a"), keys::alive("n1")].into())
    );
    // Claims are indexed, and a fresh read sees a write acknowledged just before it.
    put(
        store.as_ref(),
        &keys::port_claim(crate::model::Proto::Tcp, 80),
        b"web".to_vec(),
    )
    .await;
    let fresh = cache.fresh().await.unwrap();
    assert_eq!(
        fresh
            .state
            .claimed("/routemesh/claims/port/tcp/")
            .collect::<Vec<_>>(),
        ["80"]
    );
    // Equal to what a full read builds.
    let read = state::read(store.as_ref()).await.unwrap();
    assert_eq!(fresh.state, read);
}

#[tokio::test]
async fn a_record_written_again_unchanged_is_no_change() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::open(&dir.path().join("s.json")).unwrap());
    put(store.as_ref(), &keys::service("a"), service("a")).await;
    let cache = Cache::start(store.clone()).await.unwrap();
    let before = cache.snapshot();
    // A service create rewrites its networks unchanged (to move their revision): readers
    // must not re-plan everything for it.
    let rev = put(store.as_ref(), &keys::service("a"), service("a")).await;
    let snap = cache.at_least(rev).await.unwrap();
    assert_eq!(snap.state.revision, rev);
    assert_eq!(
        cache.changes(before.seq, snap.seq),
        Changes::Keys([].into())
    );
    let rev = put(store.as_ref(), &keys::service("a"), service("a2")).await;
    let snap2 = cache.at_least(rev).await.unwrap();
    assert_eq!(
        cache.changes(snap.seq, snap2.seq),
        Changes::Keys([keys::service("a")].into())
    );
}

#[tokio::test]
async fn a_record_that_turns_bad_leaves_the_state_and_is_noted() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::open(&dir.path().join("s.json")).unwrap());
    let cache = Cache::start(store.clone()).await.unwrap();
    put(store.as_ref(), &keys::service("a"), service("a")).await;
    let rev = put(store.as_ref(), &keys::service("a"), b"{not json".to_vec()).await;
    let snap = cache.at_least(rev).await.unwrap();
    assert!(!snap.state.services.contains_key("a"));
    assert!(snap.state.skipped.contains_key(&keys::service("a")));
    let rev = put(store.as_ref(), &keys::service("a"), service("a")).await;
    let snap = cache.at_least(rev).await.unwrap();
    assert!(snap.state.services.contains_key("a"));
    assert!(snap.state.skipped.is_empty());
}

#[tokio::test]
async fn lists_again_after_the_watch_was_compacted_away() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Compacting {
        inner: LocalStore::open(&dir.path().join("s.json")).unwrap(),
        compacted: AtomicU64::new(0),
        cut: tokio::sync::watch::channel(0).0,
    });
    let dyn_store: Arc<dyn Store> = store.clone();
    let cache = Cache::start(dyn_store).await.unwrap();
    let before = cache.snapshot();
    // Writes the watch never delivers, then the watch ends and history before them is gone.
    store.compacted.store(u64::MAX, Ordering::SeqCst);
    store.cut.send_modify(|g| *g += 1);
    let rev = put(store.as_ref(), &keys::service("missed"), service("missed")).await;
    store.compacted.store(rev, Ordering::SeqCst);
    let snap = cache.at_least(rev).await.unwrap();
    assert!(snap.state.services.contains_key("missed"));
    assert_eq!(cache.changes(before.seq, snap.seq), Changes::All);
    // And it follows the new watch from the relist's revision.
    let rev = put(store.as_ref(), &keys::service("after"), service("after")).await;
    let snap2 = cache.at_least(rev).await.unwrap();
    assert!(snap2.state.services.contains_key("after"));
    assert_eq!(
        cache.changes(snap.seq, snap2.seq),
        Changes::Keys([keys::service("after")].into())
    );
}
