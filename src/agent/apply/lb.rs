//! Applying the load-balancer plans: one backend per load-balancing namespace (nftables, or
//! IPVS with nftables marking), each syncing only what changed and doing a full resync at
//! start, periodically and after any failure.
//!
//! Both go through [`NftNetlink`]: a sync that only adds and removes set/map elements (one
//! backend more or less, say) is one netlink batch on a socket kept open in the namespace;
//! the periodic resync declares chains, rules and sets with one small `nft -f` and sends the
//! difference from a netlink listing of the sets (repairing drift); the first sync replaces
//! the table with `nft -f`, as does any change of chains, rules or sets.

use std::collections::BTreeMap;

use std::path::Path;

use async_trait::async_trait;
use routemesh_lb::ipvs::{IpvsBackend, PrepareError};
use routemesh_lb::{
    Backend, Frontend, IpvsBackendError, LbSpec, NftBackend, NftSyncError, Snat, SpecError,
    ValidLbSpec, VirtualService,
};
use routemesh_nft::{Executor, NftError, NftNetlink, Transaction};

use super::{Pass, Reconciler, Resource};
use crate::agent::plan::mesh::LbPlan;
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

/// A load-balancing namespace whose tables could not be brought in line.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error("load balancer in {netns}: removing table ip {table}: {source}")]
    RemoveOther {
        netns: String,
        table: &'static str,
        #[source]
        source: NftError,
    },
    #[error("load balancer in {netns}: {source}")]
    Prepare {
        netns: String,
        #[source]
        source: Box<PrepareError>,
    },
    #[error("load balancer in {netns}: {source}")]
    OpenIpvs {
        netns: String,
        #[source]
        source: Box<IpvsBackendError>,
    },
    #[error("load balancer in {netns}: {source}")]
    Spec {
        netns: String,
        #[source]
        source: SpecError,
    },
    #[error("syncing the load balancer in {netns}: {source}")]
    SyncNft {
        netns: String,
        #[source]
        source: Box<NftSyncError>,
    },
    #[error("syncing the load balancer in {netns}: {source}")]
    SyncIpvs {
        netns: String,
        #[source]
        source: Box<IpvsBackendError>,
    },
}

enum DataplaneBackend {
    Nft(NftBackend<NftNetlink>),
    Ipvs(Box<IpvsBackend<NftNetlink>>),
}

impl DataplaneBackend {
    /// A backend for the namespace `ns` at `netns`; removes the other dataplane's table, left
    /// if the node ran with the other dataplane before.
    fn open(kind: Kind, ns: &str, netns: &Path) -> Result<DataplaneBackend, LbError> {
        let nft = NftNetlink::in_netns(netns);
        let remove = |table: &'static str| {
            nft.apply(&Transaction::delete_table(table))
                .map_err(|source| LbError::RemoveOther {
                    netns: ns.to_string(),
                    table,
                    source,
                })
        };
        match kind {
            Kind::Nftables => {
                remove(routemesh_lb::ipvs::DEFAULT_TABLE)?;
                Ok(DataplaneBackend::Nft(NftBackend::new(nft)))
            }
            Kind::Ipvs(t) => {
                let timeouts = routemesh_lb::ipvs::Timeouts {
                    tcp: t.tcp,
                    tcp_fin: t.tcp_fin,
                    udp: t.udp,
                };
                routemesh_lb::ipvs::prepare_namespace(netns, timeouts).map_err(|source| {
                    LbError::Prepare {
                        netns: ns.to_string(),
                        source: Box::new(source),
                    }
                })?;
                remove(routemesh_lb::names::DEFAULT_TABLE)?;
                let b = IpvsBackend::open(netns, nft).map_err(|source| LbError::OpenIpvs {
                    netns: ns.to_string(),
                    source: Box::new(source),
                })?;
                Ok(DataplaneBackend::Ipvs(Box::new(b)))
            }
        }
    }

    /// Brings the namespace's tables to `spec`; what was done, for the debug log.
    fn sync(&mut self, ns: &str, spec: &ValidLbSpec, full: bool) -> Result<String, LbError> {
        match self {
            DataplaneBackend::Nft(b) => {
                let r = if full {
                    b.full_sync(spec)
                } else {
                    b.sync(spec)
                };
                r.map(|r| format!("{r:?}"))
                    .map_err(|source| LbError::SyncNft {
                        netns: ns.to_string(),
                        source: Box::new(source),
                    })
            }
            DataplaneBackend::Ipvs(b) => {
                let r = if full {
                    b.full_sync(spec)
                } else {
                    b.sync(spec)
                };
                r.map(|r| format!("{r:?}"))
                    .map_err(|source| LbError::SyncIpvs {
                        netns: ns.to_string(),
                        source: Box::new(source),
                    })
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

    /// Syncs every namespace's tables to `plans`; returns one error per failure. Namespaces
    /// no longer planned are forgotten (their namespace goes, and its tables with it).
    pub fn sync(&mut self, plans: &BTreeMap<String, LbPlan>, full: bool) -> Vec<LbError> {
        let mut errors = Vec::new();
        self.backends.retain(|ns, _| plans.contains_key(ns));
        for (ns, plan) in plans {
            if !self.backends.contains_key(ns) {
                match DataplaneBackend::open(self.kind, ns, &plan.netns) {
                    Ok(b) => {
                        self.backends.insert(ns.clone(), (None, b));
                    }
                    Err(e) => {
                        errors.push(e);
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
                Err(source) => {
                    errors.push(LbError::Spec {
                        netns: ns.clone(),
                        source,
                    });
                    continue;
                }
            };
            match entry.1.sync(ns, &spec, full || entry.0.is_none()) {
                Ok(report) => {
                    tracing::debug!(netns = %ns, report, "load balancer synced");
                    entry.0 = Some(plan.clone());
                }
                Err(e) => {
                    entry.0 = None;
                    errors.push(e);
                }
            }
        }
        errors
    }
}

/// The backends keep their caches across full passes (an IPVS socket, say): `Pass::full`
/// makes them resync from the kernel instead.
#[async_trait]
impl Reconciler for LbDataplane {
    fn resource(&self) -> Resource {
        Resource::LoadBalancers
    }

    fn forget(&mut self) {}

    /// The overlay namespaces and the ingress sandbox exist by now.
    async fn ensure(&mut self, pass: &mut Pass<'_>) {
        let plans = &pass.plan.mesh.lbs;
        let full = pass.full;
        // nft and IPVS calls block: not on an async worker's time.
        let errors = tokio::task::block_in_place(|| self.sync(plans, full));
        for e in errors {
            pass.note(self.resource(), "load balancer", Err(e));
        }
    }
}
