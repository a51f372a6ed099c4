//! Reading the whole cluster state in one consistent read.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use super::{keys, KeyValue, Result, Store, StoreError};
use crate::model::ClusterState;

pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|source| StoreError::Decode {
        key: kv.key.clone(),
        source,
    })
}

fn insert<T: DeserializeOwned>(map: &mut BTreeMap<String, T>, kv: &KeyValue) -> Result<()> {
    map.insert(keys::leaf(&kv.key).to_string(), decode(kv)?);
    Ok(())
}

pub async fn read(store: &dyn Store) -> Result<ClusterState> {
    let (kvs, revision) = store.list(keys::ROOT).await?;
    let mut st = ClusterState {
        revision,
        ..ClusterState::default()
    };
    let mut alive = std::collections::BTreeSet::new();
    for kv in &kvs {
        let k = kv.key.as_str();
        if let Some(node) = k.strip_prefix(keys::ALIVE) {
            alive.insert(node.to_string());
            continue;
        }
        if k.starts_with(keys::NETWORKS) {
            insert(&mut st.networks, kv)?;
        } else if k.starts_with(keys::SERVICES) {
            insert(&mut st.services, kv)?;
        } else if k.starts_with(keys::TASKS) {
            insert(&mut st.tasks, kv)?;
        } else if k.starts_with(keys::STATUS) {
            insert(&mut st.statuses, kv)?;
        } else if k.starts_with(keys::PENDING) {
            insert(&mut st.pending, kv)?;
        } else if k.starts_with(keys::NODES) {
            insert(&mut st.nodes, kv)?;
        } else if k == keys::KEYRING {
            st.keyring = Some(decode(kv)?);
        } else if k.starts_with(keys::NODE_ADDRS) {
            let na: crate::model::NodeAddress = decode(kv)?;
            st.node_addrs
                .insert((na.network.clone(), na.node.clone()), na);
        }
    }
    // A node is ready while its alive key exists, whatever its record last said.
    for (name, node) in st.nodes.iter_mut() {
        node.state = if alive.contains(name) {
            crate::model::NodeState::Ready
        } else {
            crate::model::NodeState::Down
        };
    }
    Ok(st)
}

/// Every claimed key under `prefix`, as leaf names (used by the allocators).
pub async fn claimed(store: &dyn Store, prefix: &str) -> Result<Vec<String>> {
    let (kvs, _) = store.list(prefix).await?;
    Ok(kvs
        .iter()
        .map(|kv| keys::leaf(&kv.key).to_string())
        .collect())
}
