//! Keeping a lease alive, and following who leads.

use std::time::Duration;

use etcd_client as etcd;
use tokio::sync::watch;
use tokio::time::Instant;

use super::errors::lease_not_found;
use super::{EtcdFailure, EtcdStore, LeaseId, OBSERVE_RETRY};
use crate::store::{Result, StoreError};

/// Refreshes a lease until it is lost or the handle is dropped.
pub(super) async fn refresh_lease(
    store: EtcdStore,
    lease: LeaseId,
    ttl: Duration,
    mut deadline: Instant,
    lost: watch::Sender<Option<String>>,
) {
    let period = (ttl / 3).max(Duration::from_millis(300));
    let mut stream: Option<(etcd::LeaseKeeper, etcd::LeaseKeepAliveStream)> = None;
    let mut last_error = String::from("no refresh answered");
    loop {
        match refresh_once(&store, lease, &mut stream).await {
            Ok(left) if left > 0 => {
                deadline = Instant::now() + Duration::from_secs(left.unsigned_abs());
            }
            Ok(_) => {
                lost.send_replace(Some(format!(
                    "lease {lease} expired or was revoked in etcd at {}",
                    store.endpoints
                )));
                return;
            }
            Err(e) => {
                stream = None;
                last_error = e.to_string();
            }
        }
        let now = Instant::now();
        if now >= deadline {
            lost.send_replace(Some(format!(
                "lease {lease} not refreshed within its {}s TTL: {last_error}",
                ttl.as_secs()
            )));
            return;
        }
        let pause = period.min(deadline - now);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = lost.closed() => return,
        }
    }
}

/// One keep-alive round trip; the TTL etcd reports left (0 or less: the lease is gone).
pub(super) async fn refresh_once(
    store: &EtcdStore,
    lease: LeaseId,
    stream: &mut Option<(etcd::LeaseKeeper, etcd::LeaseKeepAliveStream)>,
) -> Result<i64> {
    let what = format!("keeping lease {lease} alive");
    if stream.is_none() {
        let mut client = store.client.lease_client();
        match store.call(&what, client.keep_alive(lease.0)).await {
            Ok(opened) => *stream = Some(opened),
            Err(StoreError::Etcd {
                failure: EtcdFailure::Client(e),
                ..
            }) if lease_not_found(&e) => return Ok(0),
            Err(e) => return Err(e),
        }
    }
    let Some((keeper, answers)) = stream.as_mut() else {
        return Err(store.failed(&what, EtcdFailure::NoKeepAliveStream));
    };
    store.call(&what, keeper.keep_alive()).await?;
    match store.call(&what, answers.message()).await? {
        Some(answer) => Ok(answer.ttl()),
        None => Err(store.failed(&what, EtcdFailure::KeepAliveEnded)),
    }
}

/// Keeps a leader observer's value current: watch, and after any break read again.
pub(super) async fn follow_leader(
    store: EtcdStore,
    key: String,
    mut revision: u64,
    tx: watch::Sender<Option<Vec<u8>>>,
) {
    loop {
        if let Ok(mut events) = store.watch_from(&key, false, revision).await {
            loop {
                tokio::select! {
                    ev = events.recv() => match ev {
                        Some(ev) => set_if_changed(&tx, ev.value),
                        None => break,
                    },
                    _ = tx.closed() => return,
                }
            }
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(OBSERVE_RETRY) => {}
                _ = tx.closed() => return,
            }
            if let Ok((current, read_at)) = store.get_at(&key).await {
                revision = read_at;
                set_if_changed(&tx, current.map(|kv| kv.value));
                break;
            }
        }
    }
}

pub(super) fn set_if_changed(tx: &watch::Sender<Option<Vec<u8>>>, value: Option<Vec<u8>>) {
    tx.send_if_modified(|current| {
        if *current == value {
            return false;
        }
        *current = value;
        true
    });
}

/// A lease being refreshed in the background; see [`EtcdStore::keep_alive`].
pub struct LeaseKeepAlive {
    pub(super) lease: LeaseId,
    pub(super) lost: watch::Receiver<Option<String>>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl LeaseKeepAlive {
    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// Resolves once the lease is lost, with why. Keys put with it are gone (or about to be).
    pub async fn lost(&mut self) -> String {
        match self.lost.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => format!("lease {}: keep-alive task stopped", self.lease),
        }
    }

    pub fn is_lost(&self) -> bool {
        self.lost.borrow().is_some() || self.task.is_finished()
    }
}

impl Drop for LeaseKeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}
