//! Bridge networks: one Linux bridge per `bridge` network in the node namespace.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use routemesh_netdev::bridge;
use routemesh_netdev::spec::BridgeSpec;

use super::{Pass, Reconciler, Resource};
use crate::agent::plan::BRIDGE_PREFIX;

#[derive(Default)]
pub struct Bridges {
    /// By network name.
    applied: BTreeMap<String, BridgeSpec>,
}

#[async_trait]
impl Reconciler for Bridges {
    fn resource(&self) -> Resource {
        Resource::Bridges
    }

    fn forget(&mut self) {
        self.applied.clear();
    }

    async fn ensure(&mut self, pass: &mut Pass<'_>) {
        for (name, spec) in &pass.plan.bridges {
            if self.applied.get(name) == Some(spec) {
                continue;
            }
            let r = bridge::ensure_bridge(&pass.env.node, spec).await;
            let what = format!("ensuring bridge network {name:?} ({})", spec.ifname);
            if pass.note(self.resource(), what, r) {
                self.applied.insert(name.clone(), spec.clone());
            }
        }
    }

    async fn prune(&mut self, pass: &mut Pass<'_>) {
        let old: Vec<(String, String)> = self
            .applied
            .iter()
            .filter(|(n, _)| !pass.plan.bridges.contains_key(*n))
            .map(|(n, s)| (n.clone(), s.ifname.clone()))
            .collect();
        for (name, ifname) in old {
            let r = bridge::remove_bridge(&pass.env.node, &ifname).await;
            let what = format!("removing bridge network {name:?} ({ifname})");
            if pass.note(self.resource(), what, r) {
                self.applied.remove(&name);
            }
        }
        if pass.full {
            remove_leftovers(pass).await;
        }
    }
}

/// Bridges under our prefix that no network plans (left by a previous daemon).
async fn remove_leftovers(pass: &mut Pass<'_>) {
    let wanted: BTreeSet<&str> = pass
        .plan
        .bridges
        .values()
        .map(|b| b.ifname.as_str())
        .collect();
    let links = match pass.env.node.links().await {
        Ok(links) => links,
        Err(e) => {
            pass.note(Resource::Bridges, "listing links", Err(e));
            return;
        }
    };
    for l in links {
        if l.name.starts_with(BRIDGE_PREFIX) && !wanted.contains(l.name.as_str()) {
            let r = bridge::remove_bridge(&pass.env.node, &l.name).await;
            pass.note(
                Resource::Bridges,
                format!("removing leftover bridge {}", l.name),
                r,
            );
        }
    }
}
