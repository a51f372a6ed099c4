//! Turns services into tasks: one task per replica slot, placed on a ready node (spread: the
//! node with the fewest tasks of that service first), with an address claimed on each of the
//! service's networks and on the node's gateway bridge. Runs on the leader only (with the
//! local store there is one node, so it always leads).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;

pub mod keyring;

use crate::control::delete_task;
use crate::ipam;
use crate::model::{
    now_secs, ClusterState, DesiredState, NodeState, Pending, Service, Task, TaskAttachment,
};
use crate::store::cache::{Cache, Changes};
use crate::store::{keys, state, Store, StoreError, Txn};

/// Everything is reconciled this often, whatever changed.
const FULL_RECONCILE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `task` cannot be placed now (for a node's own address, `task` names that address).
    #[error("task {task}: {problem}")]
    Placement { task: String, problem: Unplaceable },
}

/// Why a task (or a node's address) cannot be placed now; it is tried again on a later pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unplaceable {
    #[error("no ready node")]
    NoReadyNode,
    #[error("no ready node has image {image:?} (load it with `routemesh image load` on a node)")]
    NoNodeWithImage { image: String },
    #[error("network {network:?} not found")]
    NetworkNotFound { network: String },
    #[error("network {network:?} ({subnet}) has no free address")]
    NetworkFull { network: String, subnet: Ipv4Net },
    #[error("gateway bridge subnet has no host address")]
    GatewayBridgeNoHost,
    #[error("gateway bridge {subnet} on node {node} has no free address")]
    GatewayBridgeFull { subnet: Ipv4Net, node: String },
}

/// One change the orchestrator wants, computed from the state without I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create {
        service: String,
        slot: u32,
    },
    /// Give a node its own address on an overlay network.
    NodeAddress {
        network: String,
        node: String,
    },
    /// Release the address of a node that is gone (it gets a new one if it comes back).
    ForgetNodeAddress {
        network: String,
        node: String,
    },
    /// Ask the task's node to stop it (desired state shutdown).
    Shutdown {
        task: String,
    },
    /// Delete the record of a task whose node is gone: nobody else will.
    Forget {
        task: String,
    },
}

/// Which part of the cluster a reconcile looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Everything: nodes, networks and every service (at start, on node or network
    /// changes, and periodically).
    #[default]
    All,
    /// Only these services and their tasks (a service or one of its tasks changed).
    Services(BTreeSet<String>),
}

impl Scope {
    /// What the changed store keys ask to look at again; `None`: nothing.
    pub fn of_changes(changes: &Changes) -> Option<Scope> {
        let Changes::Keys(keys_changed) = changes else {
            return Some(Scope::All);
        };
        let mut services = BTreeSet::new();
        for k in keys_changed {
            if let Some(name) = k.strip_prefix(keys::SERVICES) {
                services.insert(name.to_string());
            } else if let Some(task) = k.strip_prefix(keys::TASKS) {
                match crate::model::names::parse_task_name(task) {
                    Some((service, _)) => services.insert(service.to_string()),
                    None => return Some(Scope::All),
                };
            } else if k.starts_with(keys::STATUS)
                || k.starts_with(keys::CLAIMS)
                || k.starts_with(keys::PENDING)
                || k.as_str() == keys::LEADER
                || k.as_str() == keys::KEYRING
            {
                // Task health and claims do not change placement; pending is ours.
            } else {
                return Some(Scope::All);
            }
        }
        (!services.is_empty()).then_some(Scope::Services(services))
    }
}

/// What differs between the services' replica counts and the tasks that exist. Pure.
pub fn plan(st: &ClusterState) -> Vec<Action> {
    plan_scope(st, &Scope::All)
}

/// [`plan`] for the part of the cluster `scope` names: for a few services it costs what
/// those services hold, not what the cluster holds.
pub fn plan_scope(st: &ClusterState, scope: &Scope) -> Vec<Action> {
    let mut actions = Vec::new();
    // A record the read skipped (damaged, or from a newer version) is not an absent one:
    // nothing that depends on it is stopped or forgotten for its absence.
    let skipped = |key: String| st.skipped.contains_key(&key);
    let tasks: Box<dyn Iterator<Item = &Task>> = match scope {
        Scope::All => Box::new(st.tasks.values()),
        Scope::Services(names) => Box::new(names.iter().flat_map(|n| st.tasks_of(n))),
    };
    for task in tasks {
        let node_alive = st
            .nodes
            .get(&task.node)
            .is_some_and(|n| n.state == NodeState::Ready)
            || skipped(keys::node(&task.node));
        // A task on a lost node is gone with it: forget it, and its slot is placed again on a
        // live node below (on a later pass, once the record is deleted).
        if !node_alive {
            actions.push(Action::Forget {
                task: task.name.clone(),
            });
            continue;
        }
        if task.desired == DesiredState::Shutdown {
            continue;
        }
        // A task whose networks no longer match its service's (a port published on the
        // ingress network, say) is replaced, as Swarm does on a service update.
        let keep = st.services.get(&task.service).is_some_and(|s| {
            task.slot >= 1
                && task.slot <= s.replicas
                && task
                    .attachments
                    .iter()
                    .map(|a| a.network.as_str())
                    .eq(wanted_networks(s).iter().map(String::as_str))
        });
        if !keep && !skipped(keys::service(&task.service)) {
            actions.push(Action::Shutdown {
                task: task.name.clone(),
            });
        }
    }
    let services: Vec<&Service> = match scope {
        Scope::All => st.services.values().collect(),
        Scope::Services(names) => names.iter().filter_map(|n| st.services.get(n)).collect(),
    };
    if let Scope::Services(_) = scope {
        create_actions(&services, st, &mut actions);
        return actions;
    }
    for (network, node) in st.node_addrs.keys() {
        let alive = st
            .nodes
            .get(node)
            .is_some_and(|n| n.state == NodeState::Ready);
        let held = skipped(keys::network(network)) || skipped(keys::node(node));
        if !held && (!alive || !st.networks.contains_key(network)) {
            actions.push(Action::ForgetNodeAddress {
                network: network.clone(),
                node: node.clone(),
            });
        }
    }
    for net in st.networks.values().filter(|n| n.vni.is_some()) {
        for node in st.nodes.values().filter(|n| n.state == NodeState::Ready) {
            if !st
                .node_addrs
                .contains_key(&(net.name.clone(), node.name.clone()))
            {
                actions.push(Action::NodeAddress {
                    network: net.name.clone(),
                    node: node.name.clone(),
                });
            }
        }
    }
    create_actions(&services, st, &mut actions);
    actions
}

/// A create for every slot of `services` that has no task.
fn create_actions(services: &[&Service], st: &ClusterState, actions: &mut Vec<Action>) {
    for svc in services {
        for slot in 1..=svc.replicas {
            if !st.tasks.contains_key(&Task::name_for(&svc.name, slot)) {
                actions.push(Action::Create {
                    service: svc.name.clone(),
                    slot,
                });
            }
        }
    }
}

/// Resolves when leadership changes; never, once nobody can change it any more.
async fn leadership_changed(rx: &mut tokio::sync::watch::Receiver<bool>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The networks a service's tasks attach to, in interface order: the service's own, then the
/// ingress network when it publishes a port in ingress mode.
pub fn wanted_networks(svc: &Service) -> Vec<String> {
    let mut nets = svc.networks.clone();
    if svc.publishes_ingress() {
        nets.push(crate::control::INGRESS.to_string());
    }
    nets
}

/// The ready node with the fewest tasks of `service`, then the fewest tasks, then by name;
/// only nodes holding the service's image, if it has one.
pub fn pick_node(st: &ClusterState, service: &str) -> Option<String> {
    let image = st.services.get(service).and_then(|s| s.image.as_ref());
    let mut per_node: BTreeMap<&str, (usize, usize)> = st
        .nodes
        .values()
        .filter(|n| n.state == NodeState::Ready)
        .filter(|n| image.is_none_or(|i| n.images.contains(i)))
        .map(|n| (n.name.as_str(), (0, 0)))
        .collect();
    for t in st
        .tasks
        .values()
        .filter(|t| t.desired == DesiredState::Running)
    {
        if let Some(c) = per_node.get_mut(t.node.as_str()) {
            c.1 += 1;
            if t.service == service {
                c.0 += 1;
            }
        }
    }
    per_node
        .into_iter()
        .min_by_key(|(name, counts)| (*counts, *name))
        .map(|(name, _)| name.to_string())
}

pub struct Orchestrator {
    pub store: Arc<dyn Store>,
    /// The daemon's informer cache: what the orchestrator reads.
    pub cache: Cache,
    pub gwbridge_subnet: Ipv4Net,
    /// True while this node leads the cluster; only the leader orchestrates.
    pub leading: tokio::sync::watch::Receiver<bool>,
    /// Seconds between two rotations of the encrypted overlays' key.
    pub key_rotation: u64,
}

impl Orchestrator {
    /// Follows the cache until the process ends: reconciles what each change touches, and
    /// everything every few seconds in case a change was missed.
    pub async fn run(mut self) {
        let mut snapshots = self.cache.subscribe();
        loop {
            if !*self.leading.borrow_and_update() {
                leadership_changed(&mut self.leading).await;
                continue;
            }
            // Leading from now: look at everything once.
            let mut seen = snapshots.borrow_and_update().seq;
            let mut scope = Some(Scope::All);
            let mut last_full = tokio::time::Instant::now();
            loop {
                if let Some(s) = scope.take() {
                    if s == Scope::All {
                        last_full = tokio::time::Instant::now();
                    }
                    if let Err(e) = self.reconcile(&s).await {
                        tracing::warn!(error = %e, "orchestrator: reconcile failed, retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        scope = Some(Scope::All);
                        continue;
                    }
                }
                let full = tokio::time::sleep(FULL_RECONCILE.saturating_sub(last_full.elapsed()));
                tokio::select! {
                    changed = snapshots.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let now = snapshots.borrow_and_update().seq;
                        scope = Scope::of_changes(&self.cache.changes(seen, now));
                        seen = now;
                    }
                    _ = full => scope = Some(Scope::All),
                    _ = leadership_changed(&mut self.leading) => break,
                }
            }
        }
    }

    /// Applies the plan for `scope` one action at a time, each on a snapshot holding the
    /// writes before it (so every placement sees the tasks placed just before it, as spread
    /// needs, and a transaction that lost a race is simply decided again).
    pub async fn reconcile(&self, scope: &Scope) -> Result<(), OrchestratorError> {
        let mut unplaceable: Vec<Action> = Vec::new();
        let mut unplaced: BTreeMap<String, Pending> = BTreeMap::new();
        self.keyring().await?;
        let mut st = self.cache.snapshot().state.clone();
        loop {
            let Some(action) = plan_scope(&st, scope)
                .into_iter()
                .find(|a| !unplaceable.contains(a))
            else {
                return self.record_pending(&st, scope, unplaced).await;
            };
            let result = match &action {
                Action::Shutdown { task } => self.shutdown_task(&st, task).await,
                Action::Forget { task } => self.forget_task(&st, task).await,
                Action::NodeAddress { network, node } => {
                    self.node_address(&st, network, node).await
                }
                Action::ForgetNodeAddress { network, node } => {
                    self.forget_node_address(&st, network, node).await
                }
                Action::Create { service, slot } => match st.services.get(service) {
                    Some(svc) => self.create_task(&st, svc, *slot).await,
                    None => Ok(st.revision),
                },
            };
            match result {
                // Go on from a state that holds what was just written (or what beat it).
                Ok(revision) => st = self.cache.at_least(revision).await?.state.clone(),
                Err(OrchestratorError::Placement { task, problem }) => {
                    tracing::warn!(task, detail = %problem, "cannot place task");
                    if let Action::Create { service, slot } = &action {
                        let p = unplaced.entry(service.clone()).or_insert_with(|| Pending {
                            service: service.clone(),
                            slots: Vec::new(),
                            reason: problem.to_string(),
                        });
                        p.slots.push(*slot);
                    }
                    unplaceable.push(action);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates the encrypted overlays' keyring when the first one exists, and moves a key
    /// rotation on by one step when it is due (see `plan::ipsec::next_keyring`).
    async fn keyring(&self) -> Result<(), OrchestratorError> {
        let snap = self.cache.snapshot();
        let st = &snap.state;
        // A step waits long enough for every node to have applied the one before.
        let settle = (self.key_rotation / 20).clamp(5, 60);
        let now = now_secs();
        let Some(next) = keyring::next_keyring(
            st.keyring.as_ref(),
            st.any_encrypted(),
            now,
            self.key_rotation,
            settle,
        ) else {
            return Ok(());
        };
        tracing::info!(
            phase = ?next.phase, primary = next.primary, keys = next.keys.len(),
            "encrypted overlays: keyring updated"
        );
        let txn = Txn::new().put_json(keys::KEYRING, &next)?;
        self.store.txn(txn).await?;
        Ok(())
    }

    /// Writes why slots stay unplaced (for `task ls`), and forgets the reasons that no
    /// longer hold. Returns the revision of the last write or read.
    async fn record_pending(
        &self,
        st: &ClusterState,
        scope: &Scope,
        unplaced: BTreeMap<String, Pending>,
    ) -> Result<(), OrchestratorError> {
        let mut txn = Txn::new();
        for (service, p) in &unplaced {
            if st.pending.get(service) != Some(p) {
                txn = txn.put_json(keys::pending(service), p)?;
            }
        }
        let in_scope = |s: &String| match scope {
            Scope::All => true,
            Scope::Services(names) => names.contains(s),
        };
        for service in st
            .pending
            .keys()
            .filter(|s| in_scope(s) && !unplaced.contains_key(*s))
        {
            txn = txn.delete(keys::pending(service));
        }
        if !txn.ops.is_empty() {
            self.store.txn(txn).await?;
        }
        Ok(())
    }

    async fn shutdown_task(
        &self,
        _st: &ClusterState,
        name: &str,
    ) -> Result<u64, OrchestratorError> {
        let Some(kv) = self.store.get(&keys::task(name)).await? else {
            // The cache has not seen what the store holds yet: wait for it.
            return Ok(self.store.revision().await?);
        };
        let mut task: Task = state::decode(&kv)?;
        task.desired = DesiredState::Shutdown;
        let txn = Txn::new()
            .when_revision(kv.key.clone(), kv.mod_revision)
            .put_json(kv.key, &task)?;
        let out = self.store.txn(txn).await?;
        if out.succeeded {
            tracing::info!(task = name, node = %task.node, "task to shut down");
        }
        Ok(out.revision)
    }

    async fn forget_task(&self, st: &ClusterState, name: &str) -> Result<u64, OrchestratorError> {
        let (Some(task), Some(kv)) = (st.tasks.get(name), self.store.get(&keys::task(name)).await?)
        else {
            // The cache has not seen what the store holds yet: wait for it.
            return Ok(self.store.revision().await?);
        };
        let txn = delete_task(Txn::new(), task, st).when_revision(kv.key, kv.mod_revision);
        let out = self.store.txn(txn).await?;
        if out.succeeded {
            tracing::info!(task = name, "task of a lost node forgotten");
        }
        Ok(out.revision)
    }

    async fn forget_node_address(
        &self,
        st: &ClusterState,
        network: &str,
        node: &str,
    ) -> Result<u64, OrchestratorError> {
        let Some(kv) = self.store.get(&keys::node_addr(network, node)).await? else {
            // The cache has not seen what the store holds yet: wait for it.
            return Ok(self.store.revision().await?);
        };
        let mut txn = Txn::new()
            .when_revision(kv.key.clone(), kv.mod_revision)
            .delete(kv.key);
        if let (Some(net), Some(na)) = (
            st.networks.get(network),
            st.node_addrs.get(&(network.to_string(), node.to_string())),
        ) {
            txn = txn.delete(keys::addr_claim(&net.id, na.address.addr()));
        }
        let out = self.store.txn(txn).await?;
        if out.succeeded {
            tracing::info!(network, node, "address of a lost node released");
        }
        Ok(out.revision)
    }

    async fn node_address(
        &self,
        st: &ClusterState,
        network: &str,
        node: &str,
    ) -> Result<u64, OrchestratorError> {
        let Some(net) = st.networks.get(network) else {
            // The cache has not seen what the store holds yet: wait for it.
            return Ok(self.store.revision().await?);
        };
        let (Some(net_kv), Some(node_kv)) = (
            self.store.get(&keys::network(network)).await?,
            self.store.get(&keys::node(node)).await?,
        ) else {
            // The cache has not seen what the store holds yet: wait for it.
            return Ok(self.store.revision().await?);
        };
        let Some(ip) = crate::control::free_address(st, net) else {
            return Err(OrchestratorError::Placement {
                task: format!("{node}'s address on {network}"),
                problem: Unplaceable::NetworkFull {
                    network: network.to_string(),
                    subnet: net.subnet,
                },
            });
        };
        let claim = keys::addr_claim(&net.id, ip);
        let na = crate::model::NodeAddress {
            network: network.to_string(),
            node: node.to_string(),
            address: Ipv4Net::new(ip, net.subnet.prefix_len()).unwrap_or(net.subnet),
        };
        let txn = Txn::new()
            .when_revision(net_kv.key, net_kv.mod_revision)
            .when_revision(node_kv.key, node_kv.mod_revision)
            .when_absent(&claim)
            .when_absent(keys::node_addr(network, node))
            .put(claim, format!("node {node}").into_bytes())
            .put_json(keys::node_addr(network, node), &na)?;
        let out = self.store.txn(txn).await?;
        if out.succeeded {
            tracing::info!(network, node, address = %na.address, "node address assigned");
        }
        Ok(out.revision)
    }

    async fn create_task(
        &self,
        st: &ClusterState,
        svc: &Service,
        slot: u32,
    ) -> Result<u64, OrchestratorError> {
        let name = Task::name_for(&svc.name, slot);
        let placement = |problem| OrchestratorError::Placement {
            task: name.clone(),
            problem,
        };
        let node = pick_node(st, &svc.name).ok_or_else(|| {
            placement(match &svc.image {
                Some(image) if st.nodes.values().any(|n| n.state == NodeState::Ready) => {
                    Unplaceable::NoNodeWithImage {
                        image: image.clone(),
                    }
                }
                _ => Unplaceable::NoReadyNode,
            })
        })?;
        let mut txn = Txn::new().when_absent(keys::task(&name));
        let svc_kv = self.store.get(&keys::service(&svc.name)).await?;
        let Some(svc_kv) = svc_kv else {
            // The cache has not seen what the store holds yet: wait for it.
            return Ok(self.store.revision().await?);
        };
        txn = txn.when_revision(svc_kv.key, svc_kv.mod_revision);
        let mut attachments = Vec::new();
        for net_name in &wanted_networks(svc) {
            let net = st.networks.get(net_name).ok_or_else(|| {
                placement(Unplaceable::NetworkNotFound {
                    network: net_name.clone(),
                })
            })?;
            let ip = crate::control::free_address(st, net).ok_or_else(|| {
                placement(Unplaceable::NetworkFull {
                    network: net_name.clone(),
                    subnet: net.subnet,
                })
            })?;
            let claim = keys::addr_claim(&net.id, ip);
            txn = txn
                .when_absent(&claim)
                .put(claim, name.clone().into_bytes());
            attachments.push(TaskAttachment {
                network: net_name.clone(),
                address: Ipv4Net::new(ip, net.subnet.prefix_len()).unwrap_or(net.subnet),
            });
        }
        let taken = st.taken(&keys::gw_claims(&node));
        let gw = ipam::default_gateway(self.gwbridge_subnet)
            .ok_or_else(|| placement(Unplaceable::GatewayBridgeNoHost))?;
        let mut reserved = vec![gw];
        reserved.extend(ipam::ingress_sbox_gw_address(self.gwbridge_subnet));
        let gw_ip = ipam::first_free(self.gwbridge_subnet, &taken, &reserved).ok_or_else(|| {
            placement(Unplaceable::GatewayBridgeFull {
                subnet: self.gwbridge_subnet,
                node: node.clone(),
            })
        })?;
        let claim = keys::gw_claim(&node, gw_ip);
        txn = txn
            .when_absent(&claim)
            .put(claim, name.clone().into_bytes());
        let task = Task {
            name: name.clone(),
            service: svc.name.clone(),
            slot,
            node,
            attachments,
            gateway_address: Ipv4Net::new(gw_ip, self.gwbridge_subnet.prefix_len())
                .unwrap_or(self.gwbridge_subnet),
            created_at: now_secs(),
            desired: DesiredState::Running,
        };
        txn = txn.put_json(keys::task(&name), &task)?;
        let out = self.store.txn(txn).await?;
        if out.succeeded {
            tracing::info!(task = %name, node = %task.node, "task assigned");
        }
        Ok(out.revision)
    }
}

#[cfg(test)]
mod tests;
