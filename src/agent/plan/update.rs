//! Re-planning per changed object: `update` brings a plan made for one cluster state to the
//! plan of another, touching only what the changed services and tasks own. `plan` stays the
//! reference; the tests below check that both always agree.

use std::collections::BTreeSet;

use super::{dns, local_entries, mesh, service_tasks, NodeContext, NodePlan};
use crate::model::names::parse_task_name;
use crate::model::ClusterState;

/// What changed since the plan was made, by object (built by the agent from store keys).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    /// Services whose record changed (created, updated, removed).
    pub services: BTreeSet<String>,
    /// Tasks whose record or status changed (created, updated, removed).
    pub tasks: BTreeSet<String>,
    /// Something else changed (networks, nodes, node addresses, keyring): plan everything.
    pub all: bool,
}

impl Dirty {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.all && self.services.is_empty() && self.tasks.is_empty()
    }
}

/// The service a task's name says it belongs to (`SERVICE.SLOT`; the store refuses a task
/// whose `service` differs).
fn service_of(task: &str) -> &str {
    parse_task_name(task)
        .map(|(svc, _)| svc)
        .or_else(|| task.rsplit_once('.').map(|(svc, _)| svc))
        .unwrap_or(task)
}

/// Brings `plan` (made by `plan(old, ctx)`) to what `plan(st, ctx)` returns, when `dirty`
/// covers every difference between `old` and `st`; touches only the entries of the dirty
/// services and tasks (and of the services of dirty tasks).
///
/// Per dirty task: its DNS name and querier, its overlays' forwarding and neighbour entries
/// (when it lives on another node), its sandbox, container and files (when it lives here).
/// Per dirty service, and per service of a dirty task: its VIP in each overlay's load
/// balancer and on `br0`, its published ports (ingress sandbox, DNAT), its host ports. Per
/// dirty service also: its DNS entry and its local tasks' containers (which read it).
pub fn update(plan: &mut NodePlan, st: &ClusterState, ctx: &NodeContext, dirty: &Dirty) {
    if dirty.all {
        *plan = super::plan(st, ctx);
        return;
    }
    plan.dns.begin_update();
    plan.mesh.begin_update();
    // Load-balancer backends come from the tasks and their status.
    let mut balanced: BTreeSet<&str> = dirty.services.iter().map(String::as_str).collect();
    // Sandboxes and containers: the dirty tasks, and the tasks of dirty services.
    let mut local: BTreeSet<&str> = dirty.tasks.iter().map(String::as_str).collect();
    for name in &dirty.tasks {
        balanced.insert(service_of(name));
        if let Some(t) = st.tasks.get(name) {
            balanced.insert(&t.service);
        }
        plan.remote.remove_task(name, &mut plan.overlays);
        if let Some(t) = st.tasks.get(name) {
            plan.remote.add_task(ctx, st, t, Some(&mut plan.overlays));
        }
        dns::update_task(&mut plan.dns, st, &ctx.node, name);
    }
    for svc in &dirty.services {
        dns::update_service(&mut plan.dns, st, svc);
        local.extend(service_tasks(st, svc).map(|t| t.name.as_str()));
    }
    for svc in balanced {
        mesh::update_service(plan, st, ctx, svc);
    }
    for name in local {
        let entries = st.tasks.get(name).and_then(|t| local_entries(ctx, st, t));
        match entries {
            Some((sb, proc_spec, files)) => {
                plan.sandboxes.insert(name.to_string(), sb);
                plan.containers.insert(name.to_string(), proc_spec);
                plan.task_files.insert(name.to_string(), files);
            }
            None => {
                plan.sandboxes.remove(name);
                plan.containers.remove(name);
                plan.task_files.remove(name);
            }
        }
    }
}

#[cfg(test)]
#[path = "update_tests.rs"]
mod tests;
