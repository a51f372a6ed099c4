//! The writes behind the API: each operation checks the request against the current state and
//! commits it in one compare-and-set transaction, retrying if someone else wrote in between
//! ([`Control::commit`]). Nothing here touches the kernel; the agents follow the store.
//!
//! `network` and `service` hold the operations on each; the checks they share and the pieces
//! the orchestrator and the agents reuse (`delete_task`, `taken_addresses`) are here.

mod error;
mod network;
mod service;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;

pub use error::{ControlError, Operation, Subject};

use crate::model::{ClusterState, Network, Task};
use crate::store::cache::Cache;
use crate::store::{keys, Store, Txn};

/// How often a transaction is retried when a concurrent write changed what it checked.
const TXN_ATTEMPTS: usize = 8;

pub const INGRESS: &str = "ingress";

#[derive(Clone, Debug)]
pub struct ControlConfig {
    pub pool: Ipv4Net,
    pub pool_prefix: u8,
    pub gwbridge_subnet: Ipv4Net,
    /// Whether this node's kernel does IPsec ESP (probed at start): encrypted overlays need it.
    pub esp: bool,
}

#[derive(Clone)]
pub struct Control {
    pub store: Arc<dyn Store>,
    /// The daemon's informer cache: every check reads a snapshot of it, never the keyspace.
    pub cache: Cache,
    pub cfg: ControlConfig,
}

/// What one attempt of an operation decided, from the state it was shown.
enum Attempt<T> {
    /// Nothing to write: the operation's answer is `T` already.
    Done(T),
    /// Commit this transaction; if its compares hold, the operation's answer is `T`.
    Commit(Txn, T),
}

impl Control {
    /// A state holding every write acknowledged before the call (the API's reads and checks).
    pub async fn read(&self) -> Result<ClusterState, ControlError> {
        Ok(self.cache.fresh().await?.state.clone())
    }

    /// Runs `attempt` on a fresh read of the state until its transaction commits. A failed
    /// compare means someone wrote in between, so the operation decides again on what is there
    /// now; after `TXN_ATTEMPTS` lost races it gives up with `KeptChanging { what }`. An error
    /// from `attempt` (a refusal) ends it at once.
    async fn commit<T, F, Fut>(&self, what: Operation, mut attempt: F) -> Result<T, ControlError>
    where
        F: FnMut(ClusterState) -> Fut,
        Fut: Future<Output = Result<Attempt<T>, ControlError>>,
    {
        let mut st = self.read().await?;
        for _ in 0..TXN_ATTEMPTS {
            match attempt(st).await? {
                Attempt::Done(answer) => return Ok(answer),
                Attempt::Commit(txn, answer) => {
                    let outcome = self.store.txn(txn).await?;
                    if outcome.succeeded {
                        // The caller's next read sees this write.
                        self.cache.at_least(outcome.revision).await?;
                        return Ok(answer);
                    }
                    // Decide again on a state holding the write we lost to.
                    st = self.cache.at_least(outcome.revision).await?.state.clone();
                }
            }
        }
        Err(ControlError::KeptChanging { what })
    }
}

/// Adds a claim of `key` for `owner` to `txn`: written only if nobody holds the key yet, so two
/// writers racing for one address, VNI, subnet or port cannot both win.
fn claim(txn: Txn, key: String, owner: &str) -> Txn {
    txn.when_absent(&key).put(key, owner.as_bytes().to_vec())
}

/// Adds the deletion of a task, its status and its address claims to `txn`.
pub fn delete_task(mut txn: Txn, task: &Task, st: &ClusterState) -> Txn {
    txn = txn
        .delete(keys::task(&task.name))
        .delete(keys::status(&task.name))
        .delete(keys::gw_claim(&task.node, task.gateway_address.addr()));
    for a in &task.attachments {
        if let Some(net) = st.networks.get(&a.network) {
            txn = txn.delete(keys::addr_claim(&net.id, a.address.addr()));
        }
    }
    txn
}

/// The lowest address of `net` nobody holds (the gateway is never handed out), from the
/// claims index.
pub fn free_address(st: &ClusterState, net: &Network) -> Option<Ipv4Addr> {
    let taken = st.taken(&keys::addr_claims(&net.id));
    crate::ipam::first_free(net.subnet, &taken, &[net.gateway])
}
