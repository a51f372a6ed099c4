//! Applying the load-balancer plans: one backend per load-balancing namespace (nftables, or
//! IPVS with nftables marking), each syncing only what changed and doing a full resync at
//! start, periodically and after any failure.

use std::collections::BTreeMap;

use routemesh_lb::ipvs::IpvsBackend;
use routemesh_lb::{Backend, Frontend, LbSpec, NftBackend, Snat, VirtualService};
use routemesh_nft::{Executor, NftCmd, Transaction};

use super::plan_mesh::LbPlan;
use crate::config::IpvsTimeouts;

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
            scheduler: v.scheduler,
        });
    }
    for p in &plan.published {
        services.push(VirtualService {
            frontend: Frontend::Published {
                port: p.port,
                proto: p.proto,
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
            scheduler: p.scheduler,
        });
    }
    LbSpec {
        table: routemesh_lb::names::DEFAULT_TABLE.to_string(),
        snat: Snat::To(plan.snat_to),
        services,
    }
}

/// The dataplane this node load-balances with, settled at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Nftables,
    Ipvs(IpvsTimeouts),
}

enum DataplaneBackend {
    Nft(NftBackend<NftCmd>),
    Ipvs(Box<IpvsBackend<NftCmd>>),
}

impl DataplaneBackend {
    /// A backend for the namespace at `netns`; removes the other dataplane's table, left if
    /// the node ran with the other dataplane before.
    fn open(kind: Kind, netns: &std::path::Path) -> Result<DataplaneBackend, String> {
        let nft = NftCmd::in_netns(netns);
        match kind {
            Kind::Nftables => {
                nft.apply(&Transaction::delete_table(
                    routemesh_lb::ipvs::DEFAULT_TABLE,
                ))
                .map_err(|e| e.to_string())?;
                Ok(DataplaneBackend::Nft(NftBackend::new(nft)))
            }
            Kind::Ipvs(t) => {
                let timeouts = routemesh_lb::ipvs::Timeouts {
                    tcp: t.tcp,
                    tcp_fin: t.tcp_fin,
                    udp: t.udp,
                };
                routemesh_lb::ipvs::prepare_namespace(netns, timeouts)
                    .map_err(|e| e.to_string())?;
                nft.apply(&Transaction::delete_table(
                    routemesh_lb::names::DEFAULT_TABLE,
                ))
                .map_err(|e| e.to_string())?;
                let b = IpvsBackend::open(netns, nft).map_err(|e| e.to_string())?;
                Ok(DataplaneBackend::Ipvs(Box::new(b)))
            }
        }
    }

    fn sync(&mut self, spec: &routemesh_lb::ValidLbSpec, full: bool) -> Result<String, String> {
        match self {
            DataplaneBackend::Nft(b) => {
                let r = if full {
                    b.full_sync(spec)
                } else {
                    b.sync(spec)
                };
                r.map(|r| format!("{r:?}")).map_err(|e| e.to_string())
            }
            DataplaneBackend::Ipvs(b) => {
                let r = if full {
                    b.full_sync(spec)
                } else {
                    b.sync(spec)
                };
                r.map(|r| format!("{r:?}")).map_err(|e| e.to_string())
            }
        }
    }
}

pub struct LbDataplane {
    kind: Kind,
    backends: BTreeMap<String, (Option<LbPlan>, DataplaneBackend)>,
}

impl LbDataplane {
    pub fn new(kind: Kind) -> LbDataplane {
        LbDataplane {
            kind,
            backends: BTreeMap::new(),
        }
    }

    /// Syncs every namespace's tables to `plans`; returns one message per failure. Namespaces
    /// no longer planned are forgotten (their namespace goes, and its tables with it).
    pub fn sync(&mut self, plans: &BTreeMap<String, LbPlan>, full: bool) -> Vec<String> {
        let mut errors = Vec::new();
        self.backends.retain(|ns, _| plans.contains_key(ns));
        for (ns, plan) in plans {
            if !self.backends.contains_key(ns) {
                match DataplaneBackend::open(self.kind, &plan.netns) {
                    Ok(b) => {
                        self.backends.insert(ns.clone(), (None, b));
                    }
                    Err(e) => {
                        errors.push(format!("load balancer in {ns}: {e}"));
                        continue;
                    }
                }
            }
            let Some(entry) = self.backends.get_mut(ns) else {
                continue;
            };
            if !full && entry.0.as_ref() == Some(plan) {
                continue;
            }
            let spec = match lb_spec(plan).validate() {
                Ok(s) => s,
                Err(e) => {
                    errors.push(format!("load balancer in {ns}: {e}"));
                    continue;
                }
            };
            match entry.1.sync(&spec, full || entry.0.is_none()) {
                Ok(report) => {
                    tracing::debug!(netns = %ns, report, "load balancer synced");
                    entry.0 = Some(plan.clone());
                }
                Err(e) => {
                    entry.0 = None;
                    errors.push(format!("syncing the load balancer in {ns}: {e}"));
                }
            }
        }
        errors
    }
}
