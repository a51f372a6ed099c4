//! The gateway bridge (`rm_gwbridge`): every task's egress leg, and the way in to the ingress
//! sandbox from the node.

use async_trait::async_trait;
use routemesh_netdev::spec::BridgeSpec;
use routemesh_netdev::{bridge, netns};

use super::{Pass, Reconciler, Resource};

#[derive(Default)]
pub struct GatewayBridge {
    applied: Option<BridgeSpec>,
}

#[async_trait]
impl Reconciler for GatewayBridge {
    fn resource(&self) -> Resource {
        Resource::GatewayBridge
    }

    fn forget(&mut self) {
        self.applied = None;
    }

    async fn ensure(&mut self, pass: &mut Pass<'_>) {
        let want = &pass.plan.gwbridge;
        if self.applied.as_ref() == Some(want) {
            return;
        }
        let name = &want.ifname;
        let r = bridge::ensure_bridge(&pass.env.node, want).await;
        // route_localnet: the node's own 127.0.0.1 may be DNATed to the ingress sandbox.
        let ok = pass.note(
            self.resource(),
            format!("ensuring gateway bridge {name}"),
            r,
        ) && pass.note(
            self.resource(),
            format!("allowing local sources on {name}"),
            netns::set_sysctl(None, &format!("net/ipv4/conf/{name}/route_localnet"), "1"),
        );
        self.applied = ok.then(|| want.clone());
    }
}
