//! Overlay networks: per network a namespace holding `br0` and its VXLAN device.

use std::collections::BTreeMap;

use async_trait::async_trait;
use routemesh_netdev::netns;
use routemesh_netdev::overlay::{self, EntryChange};
use routemesh_netdev::spec::OverlaySpec;

use super::{Pass, Reconciler, Resource};
use crate::layout::NetnsOwner;

#[derive(Default)]
pub struct Overlays {
    /// By network name.
    applied: BTreeMap<String, OverlaySpec>,
}

impl Overlays {
    async fn ensure_one(&mut self, pass: &mut Pass<'_>, name: &str, spec: &OverlaySpec) {
        let r = overlay::ensure_overlay(&pass.env.node, spec).await;
        if pass.note(
            Resource::Overlays,
            format!("ensuring overlay network {name:?}"),
            r,
        ) {
            self.applied.insert(name.to_string(), spec.clone());
        }
    }
}

#[async_trait]
impl Reconciler for Overlays {
    fn resource(&self) -> Resource {
        Resource::Overlays
    }

    fn forget(&mut self) {
        self.applied.clear();
    }

    async fn ensure(&mut self, pass: &mut Pass<'_>) {
        let plan = pass.plan;
        for (name, spec) in &plan.overlays {
            let Some(applied) = self.applied.get(name) else {
                self.ensure_one(pass, name, spec).await;
                continue;
            };
            if applied == spec {
                continue;
            }
            // A VIP or a remote task came or went: change those entries alone, not the
            // whole network (whose ensure reads back every VIP route and neighbour).
            if let Some(change) = EntryChange::between(applied, spec) {
                match overlay::change_entries(spec, &change).await {
                    Ok(()) => {
                        if let Some(applied) = self.applied.get_mut(name) {
                            applied.clone_from(spec);
                        }
                        continue;
                    }
                    Err(e) => tracing::debug!(
                        network = %name, error = %e,
                        "changing overlay entries failed; ensuring the whole network"
                    ),
                }
            }
            self.ensure_one(pass, name, spec).await;
        }
    }

    async fn prune(&mut self, pass: &mut Pass<'_>) {
        let old: Vec<String> = self
            .applied
            .keys()
            .filter(|n| !pass.plan.overlays.contains_key(*n))
            .cloned()
            .collect();
        for name in old {
            let path = pass.env.ctx.run.overlay_netns(&name);
            let r = overlay::remove_overlay(&path).await;
            if pass.note(
                self.resource(),
                format!("removing overlay network {name:?}"),
                r,
            ) {
                self.applied.remove(&name);
            }
        }
        if !pass.full {
            return;
        }
        // Overlay namespaces no network plans (left by a previous daemon).
        let dir = pass.env.ctx.run.netns_dir();
        let Ok(names) = netns::list(&dir) else {
            return;
        };
        for name in names {
            let NetnsOwner::Overlay(net) = NetnsOwner::of(&name) else {
                continue;
            };
            if !pass.plan.overlays.contains_key(net) {
                let r = overlay::remove_overlay(&dir.join(&name)).await;
                pass.note(
                    self.resource(),
                    format!("removing leftover overlay network {net:?}"),
                    r,
                );
            }
        }
    }
}
