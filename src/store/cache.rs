//! The informer cache: each daemon lists the store once, then follows the watch from that
//! revision, applying each event to one in-memory [`ClusterState`] (O(log n) per event, on
//! persistent maps). The API, the orchestrator and the agent read immutable snapshots of it
//! ([`Cache::snapshot`]; taking one is O(1)) instead of reading the keyspace themselves.
//!
//! A watch that ends (the store compacted past it, etcd went away, the watcher fell behind)
//! makes the cache list everything again; readers are told with [`Changes::All`].
//!
//! Readers that must see their own writes (the API's checks before a commit) ask for a
//! [`Cache::fresh`] snapshot: the store's current revision is read (one small request) and the
//! cache waited for until it has applied it, as Kubernetes' consistent reads from cache do.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{keys, state, Result, Store, StoreError, WatchEvent};
use crate::model::ClusterState;

/// How many past publications keep their changed keys; a reader further behind plans all.
const CHANGE_LOG: usize = 4096;
/// How long a fresh read waits for the cache to reach the store's revision.
const FRESH_WAIT: Duration = Duration::from_secs(10);
/// After a failed list or watch, the next try comes this soon.
const RETRY: Duration = Duration::from_millis(500);

/// One published state: `seq` counts publications (not store revisions).
#[derive(Debug)]
pub struct Snapshot {
    pub state: ClusterState,
    pub seq: u64,
}

/// What changed between two publications.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changes {
    /// Everything may have changed (a relist, or the reader fell behind the change log).
    All,
    /// These keys changed (put or deleted).
    Keys(BTreeSet<String>),
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        matches!(self, Changes::Keys(k) if k.is_empty())
    }
}

struct Log {
    /// (seq, keys changed by that publication; `None`: a relist).
    entries: VecDeque<(u64, Option<Arc<[String]>>)>,
}

pub struct Cache {
    store: Arc<dyn Store>,
    rx: watch::Receiver<Arc<Snapshot>>,
    log: Arc<Mutex<Log>>,
}

impl Clone for Cache {
    fn clone(&self) -> Cache {
        Cache {
            store: self.store.clone(),
            rx: self.rx.clone(),
            log: self.log.clone(),
        }
    }
}

impl Cache {
    /// Lists the store once (failing if it cannot) and follows it from then on, in a task
    /// that lives as long as the runtime.
    pub async fn start(store: Arc<dyn Store>) -> Result<Cache> {
        let st = state::read(store.as_ref()).await?;
        tracing::info!(
            revision = st.revision,
            services = st.services.len(),
            tasks = st.tasks.len(),
            "cache: store listed"
        );
        let (tx, rx) = watch::channel(Arc::new(Snapshot { state: st, seq: 0 }));
        let log = Arc::new(Mutex::new(Log {
            entries: VecDeque::new(),
        }));
        tokio::spawn(follow(store.clone(), tx, log.clone()));
        Ok(Cache { store, rx, log })
    }

    /// The latest state the cache holds (it may lag the store by the events in flight).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.rx.borrow().clone()
    }

    /// A receiver that wakes on every publication.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.rx.clone()
    }

    /// A snapshot holding at least every write the store had acknowledged when this was
    /// called.
    pub async fn fresh(&self) -> Result<Arc<Snapshot>> {
        let revision = self.store.revision().await?;
        self.at_least(revision).await
    }

    /// A snapshot at `revision` or later; fails after [`FRESH_WAIT`] (the watch is stuck).
    pub async fn at_least(&self, revision: u64) -> Result<Arc<Snapshot>> {
        let mut rx = self.rx.clone();
        let wait = async move {
            rx.wait_for(|s| s.state.revision >= revision)
                .await
                .map(|snap| snap.clone())
        };
        match tokio::time::timeout(FRESH_WAIT, wait).await {
            Ok(Ok(snap)) => Ok(snap),
            Ok(Err(_)) | Err(_) => Err(StoreError::Behind {
                revision,
                have: self.snapshot().state.revision,
            }),
        }
    }

    /// The keys changed after publication `from` up to and including `to`.
    pub fn changes(&self, from: u64, to: u64) -> Changes {
        if to <= from {
            return Changes::Keys(BTreeSet::new());
        }
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        // The log must hold every publication after `from`.
        if log.entries.front().is_none_or(|(seq, _)| *seq > from + 1) {
            return Changes::All;
        }
        let mut keys = BTreeSet::new();
        for (seq, changed) in log.entries.iter() {
            if *seq <= from || *seq > to {
                continue;
            }
            match changed {
                None => return Changes::All,
                Some(k) => keys.extend(k.iter().cloned()),
            }
        }
        Changes::Keys(keys)
    }
}

fn publish(
    tx: &watch::Sender<Arc<Snapshot>>,
    log: &Mutex<Log>,
    state: &ClusterState,
    changed: Option<Vec<String>>,
) {
    let seq = tx.borrow().seq + 1;
    {
        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
        if log.entries.len() == CHANGE_LOG {
            log.entries.pop_front();
        }
        log.entries.push_back((seq, changed.map(Arc::from)));
    }
    // A clone of the state shares all its maps: O(1).
    tx.send_replace(Arc::new(Snapshot {
        state: state.clone(),
        seq,
    }));
}

/// Follows the store until the runtime ends (or nobody holds the cache any more).
async fn follow(store: Arc<dyn Store>, tx: watch::Sender<Arc<Snapshot>>, log: Arc<Mutex<Log>>) {
    let mut st = tx.borrow().state.clone();
    loop {
        let mut events = match store.watch(keys::ROOT, st.revision).await {
            Ok(rx) => rx,
            Err(e) => {
                tracing::warn!(error = %e, revision = st.revision, "cache: watch failed, retrying");
                tokio::time::sleep(RETRY).await;
                if tx.is_closed() {
                    return;
                }
                continue;
            }
        };
        follow_watch(&mut events, &mut st, &tx, &log).await;
        if tx.is_closed() {
            return;
        }
        // The watch ended: compaction, a lost connection, or we fell behind. List again.
        loop {
            match state::read(store.as_ref()).await {
                Ok(fresh) => {
                    tracing::info!(revision = fresh.revision, "cache: store listed again");
                    st = fresh;
                    publish(&tx, &log, &st, None);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cache: listing the store failed, retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

/// Applies events as they come, publishing after each burst (everything the channel held).
async fn follow_watch(
    events: &mut mpsc::Receiver<WatchEvent>,
    st: &mut ClusterState,
    tx: &watch::Sender<Arc<Snapshot>>,
    log: &Mutex<Log>,
) {
    while let Some(first) = events.recv().await {
        let mut changed = Vec::new();
        let mut next = Some(first);
        while let Some(ev) = next {
            if apply_event(st, &ev) {
                changed.push(ev.key);
            }
            next = events.try_recv().ok();
        }
        publish(tx, log, st, Some(changed));
    }
}

/// Applies one event; false when it changed nothing readers plan from.
fn apply_event(st: &mut ClusterState, ev: &WatchEvent) -> bool {
    st.revision = st.revision.max(ev.revision);
    match &ev.value {
        Some(value) => {
            let kv = super::KeyValue {
                key: ev.key.clone(),
                value: value.clone(),
                mod_revision: ev.revision,
            };
            state::apply(st, &ev.key, Some(&kv))
        }
        None => state::apply(st, &ev.key, None),
    }
}

#[cfg(test)]
mod tests;
