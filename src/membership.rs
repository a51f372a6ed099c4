//! Who is in the cluster and who leads it. A node is alive while its key under
//! `/routemesh/alive/` exists; with etcd that key lives on a lease the daemon keeps alive, so a
//! node that dies disappears one TTL later. The leader (the only node running the
//! orchestrator) holds `/routemesh/leader` on the same lease. With the local store the node is
//! alone: always alive, always leading.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::model::{now_secs, Node, NodeState};
use crate::store::etcd::{EtcdStore, LeaseId};
use crate::store::{keys, Store, StoreError, Txn};

const RETRY: Duration = Duration::from_secs(1);

pub enum Membership {
    Local(Arc<dyn Store>),
    Etcd { store: Arc<EtcdStore>, ttl: u64 },
}

/// Registers `node` and keeps it registered; returns a receiver that says whether this node
/// leads the cluster now.
pub async fn join(m: Membership, node: Node) -> Result<watch::Receiver<bool>, StoreError> {
    match m {
        Membership::Local(store) => {
            let txn = Txn::new()
                .put_json(keys::node(&node.name), &node)?
                .put(keys::alive(&node.name), b"local".to_vec());
            store.txn(txn).await?;
            let (_tx, rx) = watch::channel(true);
            // The sender is dropped: the value stays `true` for good.
            Ok(rx)
        }
        Membership::Etcd { store, ttl } => {
            let lease = register(&store, &node, ttl).await?;
            let (tx, rx) = watch::channel(false);
            tokio::spawn(stay(store, node, ttl, lease, tx));
            Ok(rx)
        }
    }
}

async fn register(store: &EtcdStore, node: &Node, ttl: u64) -> Result<LeaseId, StoreError> {
    let lease = store.grant_lease(ttl).await?;
    store
        .txn(Txn::new().put_json(keys::node(&node.name), node)?)
        .await?;
    store
        .put_with_lease(
            &keys::alive(&node.name),
            node.name.clone().into_bytes(),
            lease,
        )
        .await?;
    tracing::info!(node = %node.name, %lease, ttl, "node registered");
    Ok(lease)
}

/// Keeps the lease alive, campaigns for leadership whenever nobody leads, and registers
/// again with a new lease if the old one is lost (etcd away longer than the TTL).
async fn stay(
    store: Arc<EtcdStore>,
    node: Node,
    ttl: u64,
    mut lease: LeaseId,
    leading: watch::Sender<bool>,
) {
    loop {
        let mut keep = match store.keep_alive(lease).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "lease lost; registering again");
                let _ = leading.send(false);
                lease = reregister(&store, &node, ttl).await;
                continue;
            }
        };
        let mut leader = match store.observe_leader(keys::LEADER).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot observe the leader key");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        loop {
            if leader.borrow_and_update().is_none() {
                match store
                    .campaign(keys::LEADER, node.name.clone().into_bytes(), lease)
                    .await
                {
                    Ok(won) => {
                        if won && !*leading.borrow() {
                            tracing::info!(node = %node.name, "this node now runs the orchestrator");
                        }
                        let _ = leading.send(won);
                    }
                    Err(e) => tracing::warn!(error = %e, "campaigning for leadership"),
                }
            } else {
                let me = leader.borrow().as_deref() == Some(node.name.as_bytes());
                let _ = leading.send(me);
            }
            tokio::select! {
                reason = keep.lost() => {
                    tracing::warn!(%reason, "lease lost; registering again");
                    let _ = leading.send(false);
                    lease = reregister(&store, &node, ttl).await;
                    break;
                }
                changed = leader.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep(RETRY).await;
                        break;
                    }
                }
                _ = tokio::time::sleep(Duration::from_secs(ttl.max(2) / 2)) => {}
            }
        }
    }
}

async fn reregister(store: &EtcdStore, node: &Node, ttl: u64) -> LeaseId {
    loop {
        let mut fresh = node.clone();
        fresh.updated_at = now_secs();
        fresh.state = NodeState::Ready;
        match register(store, &fresh, ttl).await {
            Ok(l) => return l,
            Err(e) => {
                tracing::warn!(error = %e, "registering the node, retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
