//! Makes this node match a `NodePlan`, changing only what differs from what was applied last
//! (or, on a full pass, from what the kernel and the run dir actually hold). One reconciler per
//! kind of resource, each keeping its own cache of what it applied, run in one declared order:
//! networks before the sandboxes that plug into them, sandboxes torn down before networks, the
//! load balancers and resolvers before the task containers that use them.

mod bridges;
mod containers;
pub mod dns;
mod firewall;
mod gwbridge;
mod ingress_sbox;
mod ipsec;
pub mod lb;
mod overlays;
mod sandboxes;

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use routemesh_netdev::netlink::Netlink;
use routemesh_netdev::netns;
use routemesh_netdev::spec::SandboxSpec;

use super::plan::{NodeContext, NodePlan};
use super::runner::Runner;

/// The kinds of resource one pass reconciles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    GatewayBridge,
    Bridges,
    Overlays,
    IngressSandbox,
    Sandboxes,
    LoadBalancers,
    Dns,
    Containers,
    Firewall,
    Ipsec,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::GatewayBridge => "gateway bridge",
            Resource::Bridges => "bridge networks",
            Resource::Overlays => "overlay networks",
            Resource::IngressSandbox => "ingress sandbox",
            Resource::Sandboxes => "task sandboxes",
            Resource::LoadBalancers => "load balancers",
            Resource::Dns => "embedded DNS",
            Resource::Containers => "task containers",
            Resource::Firewall => "node nftables table",
            Resource::Ipsec => "IPsec (encrypted overlays)",
        })
    }
}

/// One step of a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Create and update what the plan holds.
    Ensure(Resource),
    /// Remove what the plan no longer holds.
    Prune(Resource),
}

/// The order of a pass. Sandboxes that go (or change) are stopped and removed before new ones
/// are made; networks nobody plans any more go only after the sandboxes that used them; a task
/// starts with its sandbox, resolver and load balancers in place; the node's table last.
pub const SCHEDULE: [Step; 13] = [
    Step::Ensure(Resource::GatewayBridge),
    Step::Ensure(Resource::Bridges),
    Step::Ensure(Resource::Ipsec),
    Step::Ensure(Resource::Overlays),
    Step::Ensure(Resource::IngressSandbox),
    Step::Prune(Resource::Sandboxes),
    Step::Ensure(Resource::Sandboxes),
    Step::Ensure(Resource::LoadBalancers),
    Step::Ensure(Resource::Dns),
    Step::Ensure(Resource::Containers),
    Step::Prune(Resource::Overlays),
    Step::Prune(Resource::Bridges),
    Step::Ensure(Resource::Firewall),
];

/// Why applying one object failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Kernel(#[from] routemesh_netdev::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    LoadBalancer(#[from] lb::LbError),
    #[error(transparent)]
    Dns(#[from] dns::DnsError),
    #[error("helper thread: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Runtime(#[from] routemesh_runtime::RuntimeError),
}

/// One object a pass could not bring in line; the pass goes on past it.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct PassError {
    pub resource: Resource,
    /// The operation and the object (`ensuring overlay network "app"`).
    pub what: String,
    #[source]
    pub source: ApplyError,
}

/// Errors of one pass, each naming its object.
#[derive(Default, Debug)]
pub struct PassErrors(pub Vec<PassError>);

impl PassErrors {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What every reconciler may use: the node, its netlink handle and its task containers.
pub struct NodeEnv {
    pub ctx: NodeContext,
    pub node: Netlink,
    pub runner: Runner,
}

/// One pass as a reconciler sees it.
pub struct Pass<'a> {
    pub plan: &'a NodePlan,
    /// Caches were dropped: look at the kernel and the run dir, adopt and clean up.
    pub full: bool,
    pub env: &'a mut NodeEnv,
    /// Sandboxes that are in place, by task: the sandbox reconciler keeps it, the resolver
    /// and the containers start only in these.
    pub ready: &'a mut BTreeMap<String, SandboxSpec>,
    errors: &'a mut PassErrors,
}

impl Pass<'_> {
    /// Records the failure of `what` (logged here); true when `result` is Ok.
    pub fn note<E: Into<ApplyError>>(
        &mut self,
        resource: Resource,
        what: impl Into<String>,
        result: Result<(), E>,
    ) -> bool {
        match result {
            Ok(()) => true,
            Err(e) => {
                let error = PassError {
                    resource,
                    what: what.into(),
                    source: e.into(),
                };
                tracing::warn!(error = %error.source, "{}", error.what);
                self.errors.0.push(error);
                false
            }
        }
    }
}

/// One kind of resource: its cache of what it applied, and how to bring the kernel in line.
#[async_trait]
pub trait Reconciler: Send + Sync {
    fn resource(&self) -> Resource;
    /// Drops the cache, so the next pass compares with the kernel.
    fn forget(&mut self);
    async fn ensure(&mut self, pass: &mut Pass<'_>);
    async fn prune(&mut self, _pass: &mut Pass<'_>) {}
}

pub struct Applier {
    env: NodeEnv,
    ready: BTreeMap<String, SandboxSpec>,
    reconcilers: Vec<Box<dyn Reconciler>>,
}

impl Applier {
    pub fn new(env: NodeEnv, dns: dns::DnsService, lb: lb::LbDataplane) -> Applier {
        let reconcilers: Vec<Box<dyn Reconciler>> = vec![
            Box::new(gwbridge::GatewayBridge::default()),
            Box::new(bridges::Bridges::default()),
            Box::new(overlays::Overlays::default()),
            Box::new(ingress_sbox::IngressSandbox::default()),
            Box::new(sandboxes::Sandboxes),
            Box::new(lb),
            Box::new(dns),
            Box::new(containers::Containers),
            Box::new(firewall::Firewall::default()),
            Box::new(ipsec::Ipsec::default()),
        ];
        Applier {
            env,
            ready: BTreeMap::new(),
            reconcilers,
        }
    }

    /// One pass. `full` forgets every cache and looks at the kernel and run dir instead, which
    /// adopts what a previous daemon left and removes what nobody wants any more.
    pub async fn apply(&mut self, plan: &NodePlan, full: bool) -> PassErrors {
        let mut errors = PassErrors::default();
        if full {
            self.ready.clear();
            for r in &mut self.reconcilers {
                r.forget();
            }
        }
        let mut pass = Pass {
            plan,
            full,
            env: &mut self.env,
            ready: &mut self.ready,
            errors: &mut errors,
        };
        for step in SCHEDULE {
            let (Step::Ensure(resource) | Step::Prune(resource)) = step;
            let Some(r) = self
                .reconcilers
                .iter_mut()
                .find(|r| r.resource() == resource)
            else {
                continue;
            };
            let start = std::time::Instant::now();
            match step {
                Step::Ensure(_) => r.ensure(&mut pass).await,
                Step::Prune(_) => r.prune(&mut pass).await,
            }
            let took = start.elapsed();
            if took >= std::time::Duration::from_millis(1) {
                tracing::debug!(?step, full, ms = took.as_secs_f64() * 1e3, "pass step");
            }
        }
        errors
    }

    /// Whether anything of `task` may still be on this node: a sandbox, a container, files.
    pub fn holds(&self, task: &str) -> bool {
        self.ready.contains_key(task)
            || self.env.runner.supervised().iter().any(|t| t == task)
            || netns::is_mounted(&self.env.ctx.run.task_netns(task))
            || self.env.ctx.run.task(task).dir.exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_is_ensured_once_and_networks_outlive_their_sandboxes() {
        let pos = |step| SCHEDULE.iter().position(|s| *s == step);
        for r in [
            Resource::GatewayBridge,
            Resource::Bridges,
            Resource::Overlays,
            Resource::IngressSandbox,
            Resource::Sandboxes,
            Resource::LoadBalancers,
            Resource::Dns,
            Resource::Containers,
            Resource::Firewall,
            Resource::Ipsec,
        ] {
            let ensured = SCHEDULE.iter().filter(|s| **s == Step::Ensure(r)).count();
            assert_eq!(ensured, 1, "{r}");
        }
        let ensure = |r| pos(Step::Ensure(r));
        assert!(ensure(Resource::Overlays) < ensure(Resource::Sandboxes));
        // SAs exist before the node table marks VXLAN for them.
        assert!(ensure(Resource::Ipsec) < ensure(Resource::Firewall));
        assert!(pos(Step::Prune(Resource::Sandboxes)) < ensure(Resource::Sandboxes));
        assert!(ensure(Resource::LoadBalancers) < ensure(Resource::Containers));
        assert!(ensure(Resource::Dns) < ensure(Resource::Containers));
        assert!(pos(Step::Prune(Resource::Sandboxes)) < pos(Step::Prune(Resource::Overlays)));
        assert!(pos(Step::Prune(Resource::Sandboxes)) < pos(Step::Prune(Resource::Bridges)));
    }
}
