//! The ingress sandbox: this node's leg on the ingress overlay and on the gateway bridge,
//! where published ports are load-balanced.

use async_trait::async_trait;
use routemesh_netdev::spec::SandboxSpec;
use routemesh_netdev::{netns, sandbox};

use super::{Pass, Reconciler, Resource};

#[derive(Default)]
pub struct IngressSandbox {
    applied: Option<SandboxSpec>,
}

#[async_trait]
impl Reconciler for IngressSandbox {
    fn resource(&self) -> Resource {
        Resource::IngressSandbox
    }

    fn forget(&mut self) {
        self.applied = None;
    }

    async fn ensure(&mut self, pass: &mut Pass<'_>) {
        let want = pass.plan.mesh.ingress_sbox.as_ref();
        if self.applied.as_ref() == want && !pass.full {
            return;
        }
        match want {
            Some(spec) => {
                let r = sandbox::ensure_sandbox(&pass.env.node, spec).await;
                let ok = pass.note(self.resource(), "ensuring the ingress sandbox", r)
                    && pass.note(
                        self.resource(),
                        "enabling forwarding in the ingress sandbox",
                        netns::set_sysctl(Some(&spec.netns), "net/ipv4/ip_forward", "1"),
                    );
                self.applied = ok.then(|| spec.clone());
            }
            None => {
                let path = pass.env.ctx.run.ingress_sbox_netns();
                let r = sandbox::remove_sandbox_at(&path).await;
                if pass.note(self.resource(), "removing the ingress sandbox", r) {
                    self.applied = None;
                }
            }
        }
    }
}
