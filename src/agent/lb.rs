//! Applying the load-balancer plans: one nftables backend per load-balancing namespace,
//! each syncing only the elements that changed and doing a full, atomic resync at start,
//! periodically and after any failure.

use std::collections::BTreeMap;
use std::path::PathBuf;

use routemesh_lb::model::Scheduler;
use routemesh_lb::{Backend, Frontend, LbSpec, NftBackend, NftRunner, Snat, VirtualService};

use super::plan_mesh::LbPlan;
use crate::model::{LbScheduler, Proto};

/// Runs `nft -f -` inside one namespace.
pub struct NsRunner {
    pub netns: PathBuf,
}

impl NftRunner for NsRunner {
    fn run(&self, script: &str) -> Result<(), String> {
        routemesh_ingress::firewall::apply(Some(&self.netns), script).map_err(|e| e.to_string())
    }
}

fn lb_proto(p: Proto) -> routemesh_lb::Proto {
    match p {
        Proto::Tcp => routemesh_lb::Proto::Tcp,
        Proto::Udp => routemesh_lb::Proto::Udp,
    }
}

fn scheduler(s: LbScheduler) -> Scheduler {
    match s {
        LbScheduler::Rr => Scheduler::Rr,
        LbScheduler::Wrr => Scheduler::Wrr,
        LbScheduler::Lc => Scheduler::Lc,
        LbScheduler::Sh => Scheduler::Sh,
        LbScheduler::Mh => Scheduler::Mh,
    }
}

/// The lb crate's spec for one namespace's plan.
pub fn lb_spec(plan: &LbPlan) -> LbSpec {
    let mut services = Vec::new();
    for v in &plan.vips {
        services.push(VirtualService {
            frontend: Frontend::VipAnyPort { addr: v.vip },
            backends: v
                .backends
                .iter()
                .map(|(a, w)| Backend {
                    addr: *a,
                    port: 0,
                    weight: *w,
                })
                .collect(),
            scheduler: scheduler(v.scheduler),
        });
    }
    for p in &plan.published {
        services.push(VirtualService {
            frontend: Frontend::Published {
                port: p.port,
                proto: lb_proto(p.proto),
            },
            backends: p
                .backends
                .iter()
                .map(|(a, port, w)| Backend {
                    addr: *a,
                    port: *port,
                    weight: *w,
                })
                .collect(),
            scheduler: scheduler(p.scheduler),
        });
    }
    LbSpec {
        table: routemesh_lb::names::DEFAULT_TABLE.to_string(),
        snat: Snat::To(plan.snat_to),
        services,
    }
}

#[derive(Default)]
pub struct LbDataplane {
    backends: BTreeMap<String, (LbPlan, NftBackend<NsRunner>)>,
}

impl LbDataplane {
    /// Syncs every namespace's table to `plans`; returns one message per failure. Namespaces
    /// no longer planned are forgotten (their namespace goes, and the table with it).
    pub fn sync(&mut self, plans: &BTreeMap<String, LbPlan>, full: bool) -> Vec<String> {
        let mut errors = Vec::new();
        self.backends.retain(|ns, _| plans.contains_key(ns));
        for (ns, plan) in plans {
            let entry = self.backends.entry(ns.clone()).or_insert_with(|| {
                (
                    plan.clone(),
                    NftBackend::new(NsRunner {
                        netns: plan.netns.clone(),
                    }),
                )
            });
            if !full && entry.0 == *plan && entry.1.applied().is_some() {
                continue;
            }
            let spec = match lb_spec(plan).validate() {
                Ok(s) => s,
                Err(e) => {
                    errors.push(format!("load balancer in {ns}: {e}"));
                    continue;
                }
            };
            let result = if full {
                entry.1.full_sync(&spec)
            } else {
                entry.1.sync(&spec)
            };
            match result {
                Ok(report) => {
                    tracing::debug!(netns = %ns, ?report, "load balancer synced");
                    entry.0 = plan.clone();
                }
                Err(e) => errors.push(format!("syncing the load balancer in {ns}: {e}")),
            }
        }
        errors
    }
}
