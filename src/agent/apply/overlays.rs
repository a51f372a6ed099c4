//! Overlay networks: per network a namespace holding `br0` and its VXLAN device.

use std::collections::BTreeMap;

use async_trait::async_trait;
use routemesh_netdev::spec::OverlaySpec;
use routemesh_netdev::{netns, overlay};

use super::{Pass, Reconciler, Resource};
use crate::layout::NetnsOwner;

#[derive(Default)]
pub struct Overlays {
    /// By network name.
    applied: BTreeMap<String, OverlaySpec>,
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
        for (name, spec) in &pass.plan.overlays {
            if self.applied.get(name) == Some(spec) {
                continue;
            }
            let r = overlay::ensure_overlay(&pass.env.node, spec).await;
            if pass.note(
                self.resource(),
                format!("ensuring overlay network {name:?}"),
                r,
            ) {
                self.applied.insert(name.clone(), spec.clone());
            }
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
