//! What the embedded DNS answers, as a pure function of the cluster state: the name table's
//! input, and for each local sandbox the networks it may see (its own, in interface order;
//! never the ingress network, which only carries published-port traffic).

use std::collections::{BTreeMap, BTreeSet};

use routemesh_dns::{EndpointMode as DnsMode, Input, NetInput, ServiceInput, TaskInput};

use crate::model::{ClusterState, DesiredState, EndpointMode, Proto, Service, Task, TaskState};

#[derive(Clone, Debug, Default)]
pub struct DnsPlan {
    pub input: Input,
    /// Keyed by local task: the networks its queries are answered from.
    pub queriers: BTreeMap<String, Vec<String>>,
    /// This plan's version, unique in the process.
    pub version: u64,
    /// The version `changed` is relative to (the plan this one was updated from); 0 when
    /// this plan was made whole.
    pub base: u64,
    /// The services whose names (their own or their tasks') differ from plan `base`'s: the
    /// name table re-makes only theirs.
    pub changed: BTreeSet<String>,
}

/// Two plans are equal when they answer the same: versions say how they were made.
impl PartialEq for DnsPlan {
    fn eq(&self, other: &Self) -> bool {
        self.input == other.input && self.queriers == other.queriers
    }
}

impl Eq for DnsPlan {}

impl DnsPlan {
    /// Starts a new version: what `update_service` and `update_task` change from here on is
    /// relative to the current one.
    pub(super) fn begin_update(&mut self) {
        self.base = self.version;
        self.version = super::next_version();
        self.changed.clear();
    }
}

fn visible(st: &ClusterState, network: &str) -> bool {
    st.networks.get(network).is_some_and(|n| !n.ingress)
}

fn service_input(st: &ClusterState, s: &Service) -> ServiceInput {
    let mut ports: Vec<(u16, Proto)> = s.ports.iter().map(|p| (p.target, p.proto)).collect();
    ports.sort();
    ports.dedup();
    ServiceInput {
        name: s.name.clone(),
        // A service with no VIP (dnsrr, or only on bridge networks) is answered with
        // its tasks' addresses.
        mode: match s.endpoint_mode {
            EndpointMode::Vip if !s.vips.is_empty() => DnsMode::Vip,
            _ => DnsMode::Dnsrr,
        },
        vips: s
            .vips
            .iter()
            .filter(|v| visible(st, &v.network))
            .map(|v| (v.network.clone(), v.address.addr()))
            .collect(),
        ports,
    }
}

/// A wanted task's names (on any node).
fn task_input(st: &ClusterState, t: &Task) -> Option<TaskInput> {
    (t.desired == DesiredState::Running).then(|| TaskInput {
        name: t.name.clone(),
        service: t.service.clone(),
        addrs: t
            .attachments
            .iter()
            .filter(|a| visible(st, &a.network))
            .map(|a| (a.network.clone(), a.address.addr()))
            .collect(),
        running: st
            .statuses
            .get(&t.name)
            .is_some_and(|s| s.state == TaskState::Running),
    })
}

/// The networks a wanted task of this node asks about.
fn querier(st: &ClusterState, node: &str, t: &Task) -> Option<Vec<String>> {
    (t.node == node && t.desired == DesiredState::Running).then(|| {
        t.attachments
            .iter()
            .filter(|a| visible(st, &a.network))
            .map(|a| a.network.clone())
            .collect()
    })
}

pub fn plan_dns(st: &ClusterState, node: &str) -> DnsPlan {
    let networks = st
        .networks
        .values()
        .filter(|n| !n.ingress)
        .map(|n| NetInput { id: n.name.clone() })
        .collect();
    let services = st.services.values().map(|s| service_input(st, s)).collect();
    let tasks = st
        .tasks
        .values()
        .filter_map(|t| task_input(st, t))
        .collect();
    let queriers = st
        .tasks
        .values()
        .filter_map(|t| querier(st, node, t).map(|nets| (t.name.clone(), nets)))
        .collect();
    DnsPlan {
        input: Input {
            networks,
            services,
            tasks,
        },
        queriers,
        version: super::next_version(),
        base: 0,
        changed: BTreeSet::new(),
    }
}

/// Brings `service`'s entry to what `plan_dns` holds for it (entries are in name order).
pub(super) fn update_service(dns: &mut DnsPlan, st: &ClusterState, service: &str) {
    let new = st.services.get(service).map(|s| service_input(st, s));
    dns.changed.insert(service.to_string());
    let list = &mut dns.input.services;
    match (list.binary_search_by(|s| s.name.as_str().cmp(service)), new) {
        (Ok(i), Some(s)) => list[i] = s,
        (Ok(i), None) => {
            list.remove(i);
        }
        (Err(i), Some(s)) => list.insert(i, s),
        (Err(_), None) => {}
    }
}

/// Brings task `name`'s entry and querier to what `plan_dns` holds for them.
pub(super) fn update_task(dns: &mut DnsPlan, st: &ClusterState, node: &str, name: &str) {
    let task = st.tasks.get(name);
    let new = task.and_then(|t| task_input(st, t));
    let list = &mut dns.input.tasks;
    let pos = list.binary_search_by(|t| t.name.as_str().cmp(name));
    // The names of the task's service, before and after.
    if let Ok(i) = pos {
        dns.changed.insert(list[i].service.clone());
    }
    if let Some(t) = &new {
        dns.changed.insert(t.service.clone());
    }
    match (pos, new) {
        (Ok(i), Some(t)) => list[i] = t,
        (Ok(i), None) => {
            list.remove(i);
        }
        (Err(i), Some(t)) => list.insert(i, t),
        (Err(_), None) => {}
    }
    match task.and_then(|t| querier(st, node, t)) {
        Some(nets) => {
            dns.queriers.insert(name.to_string(), nets);
        }
        None => {
            dns.queriers.remove(name);
        }
    }
}
