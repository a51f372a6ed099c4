//! Applying the load-balancer plans: one backend per load-balancing namespace (nftables, or
//! IPVS with nftables marking), each syncing only what changed and doing a full resync at
//! start, periodically and after any failure.
//!
//! Both go through [`NftNetlink`]: a sync that only adds and removes set/map elements (one
//! backend more or less, say) is one netlink batch on a socket kept open in the namespace;
//! the periodic resync declares chains, rules and sets with one small `nft -f` and sends the
//! difference from a netlink listing of the sets (repairing drift); the first sync replaces
//! the table with `nft -f`, as does any change of chains, rules or sets.

use std::collections::{BTreeMap, BTreeSet};

use std::path::Path;

use async_trait::async_trait;
use routemesh_lb::ipvs::{IpvsBackend, PrepareError};
use routemesh_lb::{
    Backend, Frontend, IpvsBackendError, LbSpec, NftBackend, NftSyncError, Snat, SpecError,
    SyncReport, ValidLbSpec, VirtualService,
};
use routemesh_nft::{Executor, NftError, NftNetlink, Transaction};

use super::{Pass, Reconciler, Resource};
use crate::agent::plan::mesh::{LbPlan, MeshPlan, PublishedLb, VipLb};
use crate::config::IpvsTimeouts;

/// A VIP's virtual service: every port, backends by address.
fn vip_service(v: &VipLb) -> VirtualService {
    VirtualService {
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
    }
}

/// A published port's virtual service.
fn published_service(p: &PublishedLb) -> VirtualService {
    VirtualService {
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
    }
}

/// The lb crate's spec for one namespace's plan.
pub fn lb_spec(plan: &LbPlan) -> LbSpec {
    let services = plan
        .vips
        .iter()
        .map(vip_service)
        .chain(plan.published.iter().map(published_service))
        .collect();
    LbSpec {
        table: routemesh_lb::names::DEFAULT_TABLE.to_string(),
        snat: Snat::To(plan.snat_to),
        services,
    }
}

/// One service's virtual services in one namespace's plan (`vips` and `published` are sorted
/// by service): found by binary search.
fn services_of(plan: &LbPlan, service: &str) -> Vec<VirtualService> {
    let mut out = Vec::new();
    if let Ok(i) = plan
        .vips
        .binary_search_by(|v| v.service.as_str().cmp(service))
    {
        out.push(vip_service(&plan.vips[i]));
    }
    let lo = plan
        .published
        .partition_point(|p| p.service.as_str() < service);
    out.extend(
        plan.published[lo..]
            .iter()
            .take_while(|p| p.service == service)
            .map(published_service),
    );
    out
}

/// The frontends each service holds in a namespace's plan.
fn owned_frontends(plan: &LbPlan) -> BTreeMap<String, Vec<Frontend>> {
    let mut owned: BTreeMap<String, Vec<Frontend>> = BTreeMap::new();
    for v in &plan.vips {
        owned
            .entry(v.service.clone())
            .or_default()
            .push(Frontend::VipAnyPort { addr: v.vip });
    }
    for p in &plan.published {
        owned
            .entry(p.service.clone())
            .or_default()
            .push(Frontend::Published {
                port: p.port,
                proto: p.proto,
            });
    }
    owned
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
    Nft(Box<NftBackend<NftNetlink>>),
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
                Ok(DataplaneBackend::Nft(Box::new(NftBackend::new(nft))))
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

/// One load-balancing namespace: its backend and what was applied there.
struct Namespace {
    backend: DataplaneBackend,
    /// The mesh plan version applied last; `None` (at first, after a failure): the next
    /// sync is a whole one.
    applied: Option<u64>,
    /// nftables: the frontends each service holds here as applied, so a change to some
    /// services sends only theirs ([`NftBackend::update`]).
    owned: BTreeMap<String, Vec<Frontend>>,
    /// IPVS: the plan applied, so namespaces whose plan did not change are skipped.
    last: Option<LbPlan>,
}

pub struct LbDataplane {
    kind: Kind,
    namespaces: BTreeMap<String, Namespace>,
}

impl LbDataplane {
    pub fn new(kind: Kind) -> LbDataplane {
        LbDataplane {
            kind,
            namespaces: BTreeMap::new(),
        }
    }

    /// Syncs every namespace's tables to `mesh`; returns one error per failure. Namespaces
    /// no longer planned are forgotten (their namespace goes, and its tables with it).
    ///
    /// When `mesh` was updated from the version a namespace holds, only the changed services'
    /// frontends are re-applied there (nftables: one element batch, costing what they hold);
    /// otherwise, in a full pass, or when that needs the whole table, the whole spec is.
    pub fn sync(&mut self, mesh: &MeshPlan, full: bool) -> Vec<LbError> {
        let mut errors = Vec::new();
        self.namespaces.retain(|ns, _| mesh.lbs.contains_key(ns));
        for (ns, plan) in &mesh.lbs {
            if self.namespaces.contains_key(ns) {
                continue;
            }
            match DataplaneBackend::open(self.kind, ns, &plan.netns) {
                Ok(backend) => {
                    let entry = Namespace {
                        backend,
                        applied: None,
                        owned: BTreeMap::new(),
                        last: None,
                    };
                    self.namespaces.insert(ns.clone(), entry);
                }
                Err(e) => errors.push(e),
            }
        }
        // The cheap way first, in turn; what needs the whole spec (a new slot group is an
        // `nft -f` of ~10 ms) runs for every such namespace at once, so the overlay's VIPs do
        // not wait for the ingress sandbox's published ports.
        let mut whole: Vec<(&String, &mut Namespace, &LbPlan)> = Vec::new();
        for (ns, entry) in &mut self.namespaces {
            let Some(plan) = mesh.lbs.get(ns) else {
                continue;
            };
            if !full && entry.update(ns, plan, mesh) {
                continue;
            }
            whole.push((ns, entry, plan));
        }
        let sync = |(ns, entry, plan): (&String, &mut Namespace, &LbPlan)| {
            entry.sync_whole(ns, plan, mesh.version, full)
        };
        if whole.len() < 2 {
            errors.extend(whole.into_iter().filter_map(|w| sync(w).err()));
        } else {
            std::thread::scope(|scope| {
                let running: Vec<_> = whole
                    .into_iter()
                    .map(|w| scope.spawn(move || sync(w)))
                    .collect();
                for handle in running {
                    // A panic in a sync is a bug; it surfaces here as it would have inline.
                    match handle.join() {
                        Ok(r) => errors.extend(r.err()),
                        Err(panic) => std::panic::resume_unwind(panic),
                    }
                }
            });
        }
        errors
    }
}

impl Namespace {
    /// Brings the namespace to `mesh` without the whole spec when it can: nothing to do (this
    /// version applied), only the changed services' frontends (nftables, updated from the
    /// version applied), or a plan equal to the one applied (IPVS). `false`: the whole spec
    /// is needed.
    fn update(&mut self, ns: &str, plan: &LbPlan, mesh: &MeshPlan) -> bool {
        let Some(applied) = self.applied else {
            return false;
        };
        if applied == mesh.version {
            return true;
        }
        let done = match &mut self.backend {
            DataplaneBackend::Nft(b) if mesh.base != 0 && applied == mesh.base => {
                update_services(b, &mut self.owned, plan, &mesh.changed)
                    .map(|report| format!("{report:?}"))
            }
            DataplaneBackend::Nft(_) => None,
            DataplaneBackend::Ipvs(_) => {
                (self.last.as_ref() == Some(plan)).then(|| "unchanged".to_string())
            }
        };
        let Some(report) = done else {
            return false;
        };
        tracing::debug!(netns = %ns, report, "load balancer updated");
        self.applied = Some(mesh.version);
        true
    }

    /// Syncs the whole spec of `plan` (version `version`): a resync when `full` or nothing
    /// is applied, else the difference from the table applied.
    fn sync_whole(
        &mut self,
        ns: &str,
        plan: &LbPlan,
        version: u64,
        full: bool,
    ) -> Result<(), LbError> {
        let spec = lb_spec(plan).validate().map_err(|source| {
            self.applied = None;
            LbError::Spec {
                netns: ns.to_string(),
                source,
            }
        })?;
        match self.backend.sync(ns, &spec, full || self.applied.is_none()) {
            Ok(report) => {
                tracing::debug!(netns = %ns, report, "load balancer synced");
                self.applied = Some(version);
                match self.backend {
                    DataplaneBackend::Nft(_) => self.owned = owned_frontends(plan),
                    DataplaneBackend::Ipvs(_) => self.last = Some(plan.clone()),
                }
                Ok(())
            }
            Err(e) => {
                self.applied = None;
                self.last = None;
                Err(e)
            }
        }
    }
}

/// Re-applies the frontends of `changed` services in one namespace: the ones they held
/// (`owned`) go, the ones `plan` gives them come. `None` when that needs the whole spec.
fn update_services(
    backend: &mut NftBackend<NftNetlink>,
    owned: &mut BTreeMap<String, Vec<Frontend>>,
    plan: &LbPlan,
    changed: &BTreeSet<String>,
) -> Option<SyncReport> {
    let mut removed = Vec::new();
    let mut set = Vec::new();
    let mut held = Vec::with_capacity(changed.len());
    for service in changed {
        removed.extend(owned.get(service).into_iter().flatten().copied());
        let now = services_of(plan, service);
        held.push((service, now.iter().map(|s| s.frontend).collect::<Vec<_>>()));
        set.extend(now);
    }
    let report = backend.update(&removed, set)?;
    for (service, frontends) in held {
        if frontends.is_empty() {
            owned.remove(service);
        } else {
            owned.insert(service.clone(), frontends);
        }
    }
    Some(report)
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
        let mesh = &pass.plan.mesh;
        let full = pass.full;
        // nft and IPVS calls block: not on an async worker's time.
        let errors = tokio::task::block_in_place(|| self.sync(mesh, full));
        for e in errors {
            pass.note(self.resource(), "load balancer", Err(e));
        }
    }
}
