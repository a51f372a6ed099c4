//! Reading the whole cluster state in one consistent read.
//!
//! Every record is decoded and its names checked again here, before they become paths,
//! interface names or nft identifiers: a record that does not decode (damaged, or holding a
//! value only a newer version knows) or that names something unsafe is left out of the state,
//! logged once with its key and the reason, and counted in [`ClusterState::skipped`]; the rest
//! of the cluster keeps working.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;

use serde::de::DeserializeOwned;

use super::{keys, KeyValue, Result, Store, StoreError};
use crate::model::names::{is_network_id, is_network_name, is_node_name, is_service_name};
use crate::model::{
    names::parse_task_name, ClusterState, Map, Network, Node, NodeAddress, Pending, Service,
    SkippedRecord, Task, TaskStatus,
};

pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|source| StoreError::Decode {
        key: kv.key.clone(),
        source,
    })
}

/// Why a record is unsafe to use, in words for the log.
type Check = std::result::Result<(), String>;

fn ensure(ok: bool, why: impl FnOnce() -> String) -> Check {
    if ok {
        Ok(())
    } else {
        Err(why())
    }
}

fn network_ref(what: &str, name: &str) -> Check {
    ensure(is_network_name(name), || {
        format!("{what} names network {name:?}, not a valid network name")
    })
}

fn node_ref(what: &str, name: &str) -> Check {
    ensure(is_node_name(name), || {
        format!("{what} names node {name:?}, not a valid node name")
    })
}

/// A path another node advertises (its run dir, its socket): absolute, plain components
/// (or empty: not known).
fn plain_path(what: &str, p: &str) -> Check {
    use std::path::Component;
    let ok = p.is_empty()
        || Path::new(p).is_absolute()
            && !p.chars().any(char::is_control)
            && Path::new(p)
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    ensure(ok, || {
        format!("{what} {p:?} is not an absolute path of plain components")
    })
}

/// The one record a key holds: its kind, checked against the key's own name.
trait Record: DeserializeOwned {
    fn check(&self, leaf: &str) -> Check;
}

fn same_name(kind: &str, name: &str, leaf: &str) -> Check {
    ensure(name == leaf, || {
        format!("{kind} record is named {name:?}, not as its key")
    })
}

impl Record for Network {
    fn check(&self, leaf: &str) -> Check {
        // Reserved names (`ingress`) are refused for user networks, not for stored ones.
        ensure(is_network_name(&self.name), || {
            format!("network name {:?} is not valid", self.name)
        })?;
        same_name("network", &self.name, leaf)?;
        ensure(is_network_id(&self.id), || {
            format!("network id {:?} is not 12 hex digits", self.id)
        })?;
        // The parent of a macvlan network is an interface name.
        ensure(
            self.parent
                .as_deref()
                .is_none_or(crate::model::names::is_ifname),
            || format!("network parent {:?} is not an interface name", self.parent),
        )?;
        // The VNI names the overlay's VXLAN interface.
        ensure(
            self.vni
                .is_none_or(|v| (1..=crate::ipam::VNI_MAX).contains(&v)),
            || format!("network VNI {:?} is out of range", self.vni),
        )
    }
}

impl Record for Service {
    fn check(&self, leaf: &str) -> Check {
        ensure(is_service_name(&self.name), || {
            format!("service name {:?} is not valid", self.name)
        })?;
        same_name("service", &self.name, leaf)?;
        for n in &self.networks {
            network_ref("service", n)?;
        }
        for v in &self.vips {
            network_ref("service VIP", &v.network)?;
        }
        for p in &self.ports {
            ensure(p.published > 0 && p.target > 0, || {
                format!("port {p} must have ports 1-65535")
            })?;
        }
        if let Some(image) = &self.image {
            let ok =
                routemesh_runtime::image::normalize_reference(image).is_ok_and(|n| &n == image);
            ensure(ok, || format!("image {image:?} is not a valid reference"))?;
        }
        Ok(())
    }
}

impl Record for Task {
    fn check(&self, leaf: &str) -> Check {
        let parsed = parse_task_name(&self.name);
        ensure(parsed == Some((self.service.as_str(), self.slot)), || {
            format!(
                "task name {:?} is not SERVICE.SLOT of its service {:?} and slot {}",
                self.name, self.service, self.slot
            )
        })?;
        same_name("task", &self.name, leaf)?;
        node_ref("task", &self.node)?;
        for a in &self.attachments {
            network_ref("task", &a.network)?;
        }
        Ok(())
    }
}

impl Record for TaskStatus {
    fn check(&self, leaf: &str) -> Check {
        ensure(parse_task_name(leaf).is_some(), || {
            format!("status of task {leaf:?}, not a valid task name")
        })
    }
}

impl Record for Pending {
    fn check(&self, leaf: &str) -> Check {
        ensure(is_service_name(&self.service), || {
            format!(
                "pending slots of service {:?}, not a valid name",
                self.service
            )
        })?;
        same_name("pending", &self.service, leaf)
    }
}

impl Record for Node {
    fn check(&self, leaf: &str) -> Check {
        ensure(is_node_name(&self.name), || {
            format!("node name {:?} is not valid", self.name)
        })?;
        same_name("node", &self.name, leaf)?;
        plain_path("node run dir", &self.run_dir)?;
        plain_path("node API socket", &self.api_socket)
    }
}

/// Decodes and checks the record under `prefix + leaf` (one segment, no `/`).
fn record<T: Record>(kv: &KeyValue, prefix: &str) -> std::result::Result<(String, T), String> {
    let leaf = kv.key.strip_prefix(prefix).unwrap_or(&kv.key);
    if leaf.is_empty() || leaf.contains('/') {
        return Err("the key is not PREFIX/NAME".into());
    }
    let value: T = decode(kv).map_err(|e| match e {
        StoreError::Decode { source, .. } => {
            format!("does not decode (damaged, or written by a newer version): {source}")
        }
        other => other.to_string(),
    })?;
    value.check(leaf)?;
    Ok((leaf.to_string(), value))
}

fn node_address(kv: &KeyValue) -> std::result::Result<NodeAddress, String> {
    let rest = kv.key.strip_prefix(keys::NODE_ADDRS).unwrap_or(&kv.key);
    let Some((network, node)) = rest.split_once('/') else {
        return Err("the key is not PREFIX/NETWORK/NODE".into());
    };
    let na: NodeAddress = decode(kv).map_err(|e| e.to_string())?;
    network_ref("node address", &na.network)?;
    node_ref("node address", &na.node)?;
    ensure(na.network == network && na.node == node, || {
        format!(
            "node address of {:?} on {:?} is not the one its key names",
            na.node, na.network
        )
    })?;
    Ok(na)
}

/// Keys already logged as skipped, with the reason: a bad record is read on every pass, and
/// said once (until it changes).
static LOGGED: Mutex<BTreeSet<(String, String)>> = Mutex::new(BTreeSet::new());
const MAX_LOGGED: usize = 4096;

fn skip(st: &mut ClusterState, key: &str, reason: String) {
    // Decoder messages quote the record's text: no control characters into the log.
    let reason: String = reason
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    let first = {
        let mut logged = LOGGED.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: a writer making new bad keys without end is told about again, not stored.
        if logged.len() >= MAX_LOGGED {
            logged.clear();
        }
        logged.insert((key.to_string(), reason.clone()))
    };
    if first {
        tracing::warn!(key = ?key, %reason, "store: record skipped");
    }
    st.skipped.insert(
        key.to_string(),
        SkippedRecord {
            key: key.to_string(),
            reason,
        },
    );
}

/// Puts the record `kv` under its leaf in one of the state's maps, or, when it is unusable,
/// takes out what the key held before and notes why.
fn keep<T: Record + Clone + PartialEq>(
    st: &mut ClusterState,
    map: fn(&mut ClusterState) -> &mut Map<String, T>,
    kv: &KeyValue,
    prefix: &str,
) -> bool {
    match record::<T>(kv, prefix) {
        Ok((leaf, value)) => {
            st.skipped.remove(&kv.key);
            // A record written again unchanged (a service create rewrites its networks to
            // move their revision) changes nothing anyone plans from.
            if map(st).get(&leaf) == Some(&value) {
                return false;
            }
            map(st).insert(leaf, value);
            true
        }
        Err(reason) => {
            let leaf = kv.key.strip_prefix(prefix).unwrap_or(&kv.key);
            map(st).remove(leaf);
            skip(st, &kv.key, reason);
            true
        }
    }
}

fn forget<T: Clone>(
    st: &mut ClusterState,
    map: fn(&mut ClusterState) -> &mut Map<String, T>,
    key: &str,
    prefix: &str,
) -> bool {
    let leaf = key.strip_prefix(prefix).unwrap_or(key);
    map(st).remove(leaf);
    true
}

/// Marks `name`'s record ready or down as its alive key says.
fn set_node_state(st: &mut ClusterState, name: &str) {
    let ready = st.alive.contains(name);
    if let Some(node) = st.nodes.get_mut(name) {
        node.state = if ready {
            crate::model::NodeState::Ready
        } else {
            crate::model::NodeState::Down
        };
    }
}

/// Applies one change of the store to `st`: `kv` is the key's new record, `None` when the key
/// was deleted. Costs O(log n) in the size of the state: the informer cache calls it per watch
/// event, and [`read`] per listed key. Returns false when the key's record was written again
/// unchanged (nobody needs to look at it again).
pub fn apply(st: &mut ClusterState, key: &str, kv: Option<&KeyValue>) -> bool {
    if kv.is_none() {
        st.skipped.remove(key);
    }
    if let Some(node) = key.strip_prefix(keys::ALIVE) {
        match kv {
            Some(_) if !is_node_name(node) => skip(
                st,
                key,
                format!("alive key of {node:?}, not a valid node name"),
            ),
            Some(_) => {
                st.alive.insert(node.to_string());
                set_node_state(st, node);
            }
            None => {
                st.alive.remove(node);
                set_node_state(st, node);
            }
        }
        return true;
    }
    if key.starts_with(keys::CLAIMS) {
        match kv {
            Some(_) => st.claims.insert(key.to_string()),
            None => st.claims.remove(key),
        };
        // Address claims are indexed by their prefix as well.
        if let Some((prefix, leaf)) = key.rsplit_once('/') {
            if let Ok(ip) = leaf.parse::<std::net::Ipv4Addr>() {
                let prefix = format!("{prefix}/");
                let mut set = st.claimed_addrs.get(&prefix).cloned().unwrap_or_default();
                match kv {
                    Some(_) => set.insert(ip),
                    None => set.remove(&ip),
                };
                if set.is_empty() {
                    st.claimed_addrs.remove(&prefix);
                } else {
                    st.claimed_addrs.insert(prefix, set);
                }
            }
        }
        return true;
    }
    macro_rules! record_map {
        ($prefix:expr, $field:ident) => {
            if key.starts_with($prefix) {
                return match kv {
                    Some(kv) => keep(st, |s| &mut s.$field, kv, $prefix),
                    None => forget(st, |s| &mut s.$field, key, $prefix),
                };
            }
        };
    }
    record_map!(keys::NETWORKS, networks);
    record_map!(keys::SERVICES, services);
    record_map!(keys::TASKS, tasks);
    record_map!(keys::STATUS, statuses);
    record_map!(keys::PENDING, pending);
    if let Some(leaf) = key.strip_prefix(keys::NODES) {
        let changed = match kv {
            Some(kv) => keep(st, |s| &mut s.nodes, kv, keys::NODES),
            None => forget(st, |s| &mut s.nodes, key, keys::NODES),
        };
        let leaf = leaf.to_string();
        set_node_state(st, &leaf);
        return changed;
    }
    if key == keys::KEYRING {
        st.keyring = None;
        if let Some(kv) = kv {
            match decode::<crate::model::Keyring>(kv) {
                Ok(ring) => st.keyring = Some(ring),
                Err(e) => skip(st, key, e.to_string()),
            }
        }
        return true;
    }
    if let Some(rest) = key.strip_prefix(keys::NODE_ADDRS) {
        let Some((network, node)) = rest.split_once('/') else {
            if kv.is_some() {
                skip(st, key, "the key is not PREFIX/NETWORK/NODE".into());
            }
            return true;
        };
        let slot = (network.to_string(), node.to_string());
        st.node_addrs.remove(&slot);
        if let Some(kv) = kv {
            match node_address(kv) {
                Ok(na) => {
                    st.node_addrs.insert(slot, na);
                }
                Err(reason) => skip(st, key, reason),
            }
        }
    }
    true
}

/// The whole cluster state in one consistent read (the informer cache's list; tests).
pub async fn read(store: &dyn Store) -> Result<ClusterState> {
    let (kvs, revision) = store.list(keys::ROOT).await?;
    let mut st = ClusterState {
        revision,
        ..ClusterState::default()
    };
    for kv in &kvs {
        apply(&mut st, &kv.key, Some(kv));
    }
    Ok(st)
}

#[cfg(test)]
mod tests;
