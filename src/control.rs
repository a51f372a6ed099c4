//! The writes behind the API: each operation checks the request against the current state and
//! commits it in one compare-and-set transaction, retrying if someone else wrote in between.
//! Nothing here touches the kernel; the agents follow the store.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;

mod error;

pub use error::{ControlError, Operation, Subject};

use crate::ipam;
use crate::model::{
    now_secs, random_id, ClusterState, Driver, EndpointMode, Network, PortConfig, Proto, Service,
    ServiceVip,
};
use crate::store::{keys, state, Store, Txn};
use crate::validate::{NetworkRequest, ServiceRequest};

/// How often a transaction is retried when a concurrent write changed what it checked.
const TXN_ATTEMPTS: usize = 8;

#[derive(Clone, Debug)]
pub struct ControlConfig {
    pub pool: Ipv4Net,
    pub pool_prefix: u8,
    pub gwbridge_subnet: Ipv4Net,
}

#[derive(Clone)]
pub struct Control {
    pub store: Arc<dyn Store>,
    pub cfg: ControlConfig,
}

impl Control {
    async fn read(&self) -> Result<ClusterState, ControlError> {
        Ok(state::read(self.store.as_ref()).await?)
    }

    /// `node_nets`: every route and address of the node, for the bridge overlap rule.
    pub async fn create_network(
        &self,
        req: NetworkRequest,
        node_nets: &[Ipv4Net],
    ) -> Result<Network, ControlError> {
        for _ in 0..TXN_ATTEMPTS {
            let st = self.read().await?;
            let net = self.plan_network(&req, &st, node_nets)?;
            let mut txn = Txn::new()
                .when_absent(keys::network(&net.name))
                .put_json(keys::network(&net.name), &net)?;
            if req.subnet.is_none() {
                let claim = keys::subnet_claim(&net.subnet);
                txn = txn
                    .when_absent(&claim)
                    .put(claim, net.name.clone().into_bytes());
            }
            if let Some(vni) = net.vni {
                let claim = keys::vni_claim(vni);
                txn = txn
                    .when_absent(&claim)
                    .put(claim, net.name.clone().into_bytes());
            }
            if self.store.txn(txn).await?.succeeded {
                tracing::info!(network = %net.name, subnet = %net.subnet, vni = ?net.vni, "network created");
                return Ok(net);
            }
        }
        Err(ControlError::KeptChanging {
            what: Operation::CreateNetwork { name: req.name },
        })
    }

    fn plan_network(
        &self,
        req: &NetworkRequest,
        st: &ClusterState,
        node_nets: &[Ipv4Net],
    ) -> Result<Network, ControlError> {
        if st.networks.contains_key(&req.name) {
            return Err(ControlError::NetworkExists {
                name: req.name.clone(),
            });
        }
        let what = Subject::Network {
            driver: req.driver,
            name: req.name.clone(),
        };
        let subnet = match req.subnet {
            Some(s) => {
                check_explicit_subnet(
                    &what,
                    s,
                    req.driver,
                    st,
                    node_nets,
                    self.cfg.gwbridge_subnet,
                )?;
                s
            }
            None => {
                let mut taken: Vec<Ipv4Net> = st.networks.values().map(|n| n.subnet).collect();
                taken.push(self.cfg.gwbridge_subnet);
                if req.driver == Driver::Bridge {
                    taken.extend_from_slice(node_nets);
                }
                ipam::next_pool_subnet(self.cfg.pool, self.cfg.pool_prefix, &taken).ok_or_else(
                    || ControlError::PoolExhausted {
                        subject: what.clone(),
                        pool: self.cfg.pool,
                        prefix: self.cfg.pool_prefix,
                    },
                )?
            }
        };
        let gateway = match req.gateway {
            Some(g) => g,
            None => ipam::default_gateway(subnet).ok_or_else(|| ControlError::NoHostAddress {
                subject: what.clone(),
                subnet,
            })?,
        };
        let vni = match req.driver {
            Driver::Bridge => None,
            Driver::Overlay => Some(pick_vni(&what, req.vni, st)?),
        };
        Ok(Network {
            name: req.name.clone(),
            id: random_id(),
            driver: req.driver,
            subnet,
            gateway,
            vni,
            created_at: now_secs(),
            ingress: false,
        })
    }

    /// Creates the ingress overlay if it does not exist yet (daemon start).
    pub async fn ensure_ingress_network(&self, subnet: Ipv4Net) -> Result<(), ControlError> {
        for _ in 0..TXN_ATTEMPTS {
            let st = self.read().await?;
            if let Some(existing) = st.networks.get(INGRESS) {
                if existing.subnet != subnet {
                    tracing::warn!(
                        existing = %existing.subnet, wanted = %subnet,
                        "the ingress network exists with another subnet; keeping it"
                    );
                }
                return Ok(());
            }
            let gateway =
                ipam::default_gateway(subnet).ok_or_else(|| ControlError::NoHostAddress {
                    subject: Subject::Ingress,
                    subnet,
                })?;
            let vni = pick_vni(&Subject::Ingress, None, &st)?;
            let net = Network {
                name: INGRESS.to_string(),
                id: random_id(),
                driver: Driver::Overlay,
                subnet,
                gateway,
                vni: Some(vni),
                created_at: now_secs(),
                ingress: true,
            };
            let claim = keys::vni_claim(vni);
            let txn = Txn::new()
                .when_absent(keys::network(INGRESS))
                .when_absent(&claim)
                .put(claim, INGRESS.as_bytes().to_vec())
                .put_json(keys::network(INGRESS), &net)?;
            if self.store.txn(txn).await?.succeeded {
                tracing::info!(subnet = %subnet, vni, "ingress network created");
                return Ok(());
            }
        }
        Err(ControlError::KeptChanging {
            what: Operation::CreateIngress,
        })
    }

    pub async fn remove_network(&self, name: &str) -> Result<(), ControlError> {
        for _ in 0..TXN_ATTEMPTS {
            let st = self.read().await?;
            let Some(net) = st.networks.get(name) else {
                return Err(ControlError::NetworkNotFound { name: name.into() });
            };
            if net.ingress {
                return Err(ControlError::IngressNetwork { name: name.into() });
            }
            let users: Vec<String> = st
                .services
                .values()
                .filter(|s| s.networks.iter().any(|n| n == name))
                .map(|s| s.name.clone())
                .collect();
            if !users.is_empty() {
                return Err(ControlError::NetworkInUse {
                    name: name.into(),
                    services: users,
                });
            }
            let kv = self
                .store
                .get(&keys::network(name))
                .await?
                .ok_or_else(|| ControlError::NetworkNotFound { name: name.into() })?;
            let mut txn = Txn::new()
                .when_revision(kv.key.clone(), kv.mod_revision)
                .delete(kv.key)
                .delete_prefix(keys::addr_claims(&net.id))
                .delete_prefix(keys::node_addrs_of(name));
            if let Some(vni) = net.vni {
                txn = txn.delete(keys::vni_claim(vni));
            }
            // A pool subnet claim is this network's only if it names it (an explicit subnet
            // claims nothing, and may equal another network's pool subnet).
            if let Some(claim) = self.store.get(&keys::subnet_claim(&net.subnet)).await? {
                if claim.value == name.as_bytes() {
                    txn = txn
                        .when_revision(claim.key.clone(), claim.mod_revision)
                        .delete(claim.key);
                }
            }
            if self.store.txn(txn).await?.succeeded {
                tracing::info!(network = name, "network removed");
                return Ok(());
            }
        }
        Err(ControlError::KeptChanging {
            what: Operation::RemoveNetwork { name: name.into() },
        })
    }

    pub async fn create_service(&self, req: ServiceRequest) -> Result<Service, ControlError> {
        for _ in 0..TXN_ATTEMPTS {
            let st = self.read().await?;
            if st.services.contains_key(&req.name) {
                return Err(ControlError::ServiceExists {
                    name: req.name.clone(),
                });
            }
            let nets = service_networks(&req.name, &req.networks, &st)?;
            let vips_needed = usize::from(req.endpoint_mode == EndpointMode::Vip);
            check_capacity(&req.name, &nets, req.replicas, 0, vips_needed, &st)?;
            check_ports_free(&req.name, &req.ports, &st)?;
            let now = now_secs();
            let mut svc = Service {
                name: req.name.clone(),
                id: random_id(),
                replicas: req.replicas,
                networks: req.networks.clone(),
                env: req.env.clone(),
                command: req.command.clone(),
                created_at: now,
                updated_at: now,
                endpoint_mode: req.endpoint_mode,
                ports: req.ports.clone(),
                vips: Vec::new(),
                lb_scheduler: req.lb_scheduler,
            };
            let mut txn = Txn::new().when_absent(keys::service(&svc.name));
            if svc.endpoint_mode == EndpointMode::Vip {
                // VIPs live in overlay namespaces; a bridge network's service is answered by
                // its tasks' addresses.
                for net in nets.iter().filter(|n| n.driver == Driver::Overlay) {
                    let taken = taken_addresses(self.store.as_ref(), net).await?;
                    let ip = ipam::next_host(net.subnet, &taken).ok_or_else(|| {
                        ControlError::NoAddressForVip {
                            service: svc.name.clone(),
                            network: net.name.clone(),
                            subnet: net.subnet,
                        }
                    })?;
                    let claim = keys::addr_claim(&net.id, ip);
                    txn = txn
                        .when_absent(&claim)
                        .put(claim, format!("vip {}", svc.name).into_bytes());
                    svc.vips.push(ServiceVip {
                        network: net.name.clone(),
                        address: Ipv4Net::new(ip, net.subnet.prefix_len()).unwrap_or(net.subnet),
                    });
                }
            }
            txn = txn.put_json(keys::service(&svc.name), &svc)?;
            txn = claim_ports(txn, &svc.name, &[], &svc.ports);
            // The networks must still be there when the service lands, and a concurrent
            // `network rm` must fail: rewriting them unchanged moves their revision, which
            // the removal compares.
            for n in &svc.networks {
                if let Some(kv) = self.store.get(&keys::network(n)).await? {
                    txn = txn
                        .when_revision(kv.key.clone(), kv.mod_revision)
                        .put(kv.key, kv.value);
                }
            }
            if self.store.txn(txn).await?.succeeded {
                tracing::info!(service = %svc.name, replicas = svc.replicas, "service created");
                return Ok(svc);
            }
        }
        Err(ControlError::KeptChanging {
            what: Operation::CreateService { name: req.name },
        })
    }

    /// A service's stored record (for a compare-and-set) and its decoded value.
    async fn service_record(
        &self,
        name: &str,
    ) -> Result<(crate::store::KeyValue, Service), ControlError> {
        let kv = self
            .store
            .get(&keys::service(name))
            .await?
            .ok_or_else(|| ControlError::ServiceNotFound { name: name.into() })?;
        let svc = state::decode(&kv)?;
        Ok((kv, svc))
    }

    pub async fn scale_service(&self, name: &str, replicas: u32) -> Result<Service, ControlError> {
        for _ in 0..TXN_ATTEMPTS {
            let st = self.read().await?;
            let (kv, mut svc) = self.service_record(name).await?;
            let nets = service_networks(name, &svc.networks, &st)?;
            let existing = st
                .tasks
                .values()
                .filter(|t| t.service == name && t.desired == crate::model::DesiredState::Running)
                .count() as u32;
            check_capacity(name, &nets, replicas, existing, 0, &st)?;
            svc.replicas = replicas;
            svc.updated_at = now_secs();
            let txn = Txn::new()
                .when_revision(kv.key.clone(), kv.mod_revision)
                .put_json(kv.key, &svc)?;
            if self.store.txn(txn).await?.succeeded {
                tracing::info!(service = name, replicas, "service scaled");
                return Ok(svc);
            }
        }
        Err(ControlError::KeptChanging {
            what: Operation::ScaleService { name: name.into() },
        })
    }

    /// Adds and removes published ports of a running service.
    pub async fn update_service(
        &self,
        name: &str,
        add: &[PortConfig],
        remove: &[(u16, Proto)],
    ) -> Result<Service, ControlError> {
        for _ in 0..TXN_ATTEMPTS {
            let st = self.read().await?;
            let (kv, mut svc) = self.service_record(name).await?;
            let before_ports = svc.ports.clone();
            for (port, proto) in remove {
                let before = svc.ports.len();
                svc.ports
                    .retain(|p| !(p.published == *port && p.proto == *proto));
                if svc.ports.len() == before {
                    return Err(ControlError::PortNotPublished {
                        service: name.into(),
                        port: *port,
                        proto: *proto,
                    });
                }
            }
            // An added spec replaces one with the same published port and protocol.
            for p in add {
                svc.ports
                    .retain(|q| !(q.published == p.published && q.proto == p.proto));
                svc.ports.push(*p);
            }
            crate::validate::distinct_ports(&svc.ports)?;
            check_ports_free(name, &svc.ports, &st)?;
            svc.updated_at = now_secs();
            let txn = Txn::new()
                .when_revision(kv.key.clone(), kv.mod_revision)
                .put_json(kv.key, &svc)?;
            let txn = claim_ports(txn, name, &before_ports, &svc.ports);
            if self.store.txn(txn).await?.succeeded {
                tracing::info!(service = name, ports = ?svc.ports, "service updated");
                return Ok(svc);
            }
        }
        Err(ControlError::KeptChanging {
            what: Operation::UpdateService { name: name.into() },
        })
    }

    /// Removes the service, its VIP and port claims in one transaction, so a `network rm`
    /// right after it succeeds; the orchestrator then shuts its tasks down (with a compare of
    /// its own, and one transaction per task, so a service of any size can go).
    pub async fn remove_service(&self, name: &str) -> Result<(), ControlError> {
        for _ in 0..TXN_ATTEMPTS {
            let st = self.read().await?;
            let (kv, svc) = self.service_record(name).await?;
            let mut txn = Txn::new()
                .when_revision(kv.key.clone(), kv.mod_revision)
                .delete(kv.key);
            for vip in &svc.vips {
                if let Some(net) = st.networks.get(&vip.network) {
                    txn = txn.delete(keys::addr_claim(&net.id, vip.address.addr()));
                }
            }
            txn = claim_ports(txn, name, &svc.ports, &[]);
            if self.store.txn(txn).await?.succeeded {
                tracing::info!(service = name, "service removed");
                return Ok(());
            }
        }
        Err(ControlError::KeptChanging {
            what: Operation::RemoveService { name: name.into() },
        })
    }
}

/// Adds the deletion of a task, its status and its address claims to `txn`.
pub fn delete_task(mut txn: Txn, task: &crate::model::Task, st: &ClusterState) -> Txn {
    txn = txn
        .delete(keys::task(&task.name))
        .delete(keys::status(&task.name))
        .delete(keys::gw_claim(&task.node, task.gateway_address.addr()));
    for a in &task.attachments {
        if let Some(net) = st.networks.get(&a.network) {
            txn = txn.delete(keys::addr_claim(&net.id, a.address.addr()));
        }
    }
    txn
}

pub const INGRESS: &str = "ingress";

/// Moves the port claims of `service` from `before` to `after` in `txn`: new ports are claimed
/// only if nobody holds them (so two services racing for one port cannot both win), dropped
/// ports are released.
fn claim_ports(mut txn: Txn, service: &str, before: &[PortConfig], after: &[PortConfig]) -> Txn {
    let key = |p: &PortConfig| keys::port_claim(p.proto, p.published);
    let held: BTreeSet<String> = before.iter().map(key).collect();
    let wanted: BTreeSet<String> = after.iter().map(key).collect();
    for k in wanted.difference(&held) {
        txn = txn
            .when_absent(k.clone())
            .put(k.clone(), service.as_bytes().to_vec());
    }
    for k in held.difference(&wanted) {
        txn = txn.delete(k.clone());
    }
    txn
}

/// Refuses a published port another service already publishes.
fn check_ports_free(
    service: &str,
    ports: &[PortConfig],
    st: &ClusterState,
) -> Result<(), ControlError> {
    for p in ports {
        let owner = st.services.values().find(|s| {
            s.name != service
                && s.ports
                    .iter()
                    .any(|q| q.published == p.published && q.proto == p.proto)
        });
        if let Some(owner) = owner {
            return Err(ControlError::PortTaken {
                port: p.published,
                proto: p.proto,
                owner: owner.name.clone(),
            });
        }
    }
    Ok(())
}

/// Every address of `net` someone holds, the gateway included.
pub async fn taken_addresses(
    store: &dyn Store,
    net: &Network,
) -> Result<BTreeSet<Ipv4Addr>, crate::store::StoreError> {
    let mut taken: BTreeSet<Ipv4Addr> = state::claimed(store, &keys::addr_claims(&net.id))
        .await?
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    taken.insert(net.gateway);
    Ok(taken)
}

fn check_explicit_subnet(
    what: &Subject,
    subnet: Ipv4Net,
    driver: Driver,
    st: &ClusterState,
    node_nets: &[Ipv4Net],
    gwbridge: Ipv4Net,
) -> Result<(), ControlError> {
    if ipam::overlaps(&subnet, &gwbridge) {
        return Err(ControlError::OverlapsGwbridge {
            subject: what.clone(),
            subnet,
            gwbridge,
        });
    }
    if driver == Driver::Bridge {
        if let Some(other) = st
            .networks
            .values()
            .find(|n| n.driver == Driver::Bridge && ipam::overlaps(&n.subnet, &subnet))
        {
            return Err(ControlError::OverlapsBridge {
                subject: what.clone(),
                subnet,
                other: other.name.clone(),
                other_subnet: other.subnet,
            });
        }
        if let Some(route) = node_nets.iter().find(|r| ipam::overlaps(r, &subnet)) {
            return Err(ControlError::OverlapsNodeRoute {
                subject: what.clone(),
                subnet,
                route: *route,
            });
        }
    }
    Ok(())
}

fn pick_vni(what: &Subject, wanted: Option<u32>, st: &ClusterState) -> Result<u32, ControlError> {
    let used: BTreeSet<u32> = st.networks.values().filter_map(|n| n.vni).collect();
    match wanted {
        Some(v) => match st.networks.values().find(|n| n.vni == Some(v)) {
            Some(owner) => Err(ControlError::VniInUse {
                subject: what.clone(),
                vni: v,
                owner: owner.name.clone(),
            }),
            None => Ok(v),
        },
        None => ipam::next_vni(&used).ok_or_else(|| ControlError::VnisExhausted {
            subject: what.clone(),
        }),
    }
}

/// The service's networks, all existing, with no two overlapping subnets.
fn service_networks<'a>(
    service: &str,
    names: &[String],
    st: &'a ClusterState,
) -> Result<Vec<&'a Network>, ControlError> {
    let mut nets: Vec<&Network> = Vec::new();
    for name in names {
        let net = st
            .networks
            .get(name)
            .ok_or_else(|| ControlError::ServiceNetworkNotFound {
                service: service.into(),
                network: name.clone(),
            })?;
        if let Some(other) = nets.iter().find(|o| ipam::overlaps(&o.subnet, &net.subnet)) {
            return Err(ControlError::NetworksOverlap {
                service: service.into(),
                first: other.name.clone(),
                first_subnet: other.subnet,
                second: net.name.clone(),
                second_subnet: net.subnet,
            });
        }
        nets.push(net);
    }
    Ok(nets)
}

/// Refuses a replica count the networks' subnets cannot address.
fn check_capacity(
    service: &str,
    nets: &[&Network],
    replicas: u32,
    existing: u32,
    vips: usize,
    st: &ClusterState,
) -> Result<(), ControlError> {
    let more = replicas.saturating_sub(existing) as usize + vips;
    for net in nets {
        let used: BTreeSet<Ipv4Addr> = st
            .tasks
            .values()
            .flat_map(|t| t.attachments.iter())
            .filter(|a| a.network == net.name)
            .map(|a| a.address.addr())
            .chain(
                st.services
                    .values()
                    .flat_map(|s| s.vips.iter())
                    .filter(|v| v.network == net.name)
                    .map(|v| v.address.addr()),
            )
            .chain(
                st.node_addrs
                    .values()
                    .filter(|a| a.network == net.name)
                    .map(|a| a.address.addr()),
            )
            .chain(std::iter::once(net.gateway))
            .collect();
        let free = net
            .subnet
            .hosts()
            .filter(|ip| !used.contains(ip))
            .take(more)
            .count();
        if free < more {
            return Err(ControlError::NotEnoughAddresses {
                service: service.into(),
                network: net.name.clone(),
                subnet: net.subnet,
                free,
                needed: more,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;
    use crate::validate;
    use crate::wire::{NetworkCreate, ServiceCreate};

    fn control(dir: &tempfile::TempDir) -> Control {
        Control {
            store: Arc::new(LocalStore::open(&dir.path().join("state.json")).unwrap()),
            cfg: ControlConfig {
                pool: "10.0.0.0/8".parse().unwrap(),
                pool_prefix: 24,
                gwbridge_subnet: "172.18.0.0/16".parse().unwrap(),
            },
        }
    }

    async fn network(c: &Control, name: &str, driver: &str) {
        let req = validate::network_request(&NetworkCreate {
            name: name.into(),
            driver: Some(driver.into()),
            ..Default::default()
        })
        .unwrap();
        c.create_network(req, &[]).await.unwrap();
    }

    fn service(name: &str, net: &str, publish: &[&str]) -> ServiceRequest {
        validate::service_request(
            &ServiceCreate {
                name: name.into(),
                replicas: Some(1),
                networks: vec![net.into()],
                env: vec![],
                command: vec!["sh".into()],
                endpoint_mode: None,
                publish: publish.iter().map(|s| s.to_string()).collect(),
                lb_scheduler: None,
            },
            "/bin:/usr/bin",
        )
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_services_racing_for_one_port_cannot_both_win() {
        let dir = tempfile::tempdir().unwrap();
        let c = control(&dir);
        network(&c, "app", "overlay").await;
        for round in 0..20 {
            let (a, b) = (format!("a{round}"), format!("b{round}"));
            let (c1, c2) = (c.clone(), c.clone());
            let (r1, r2) = tokio::join!(
                tokio::spawn(
                    async move { c1.create_service(service(&a, "app", &["9000:80"])).await }
                ),
                tokio::spawn(
                    async move { c2.create_service(service(&b, "app", &["9000:80"])).await }
                ),
            );
            let (r1, r2) = (r1.unwrap(), r2.unwrap());
            assert!(r1.is_ok() != r2.is_ok(), "round {round}: exactly one wins");
            let loser = r1.err().or(r2.err()).unwrap().to_string();
            assert!(loser.contains("already published by service"), "{loser}");
            let winner = c
                .read()
                .await
                .unwrap()
                .services
                .keys()
                .find(|k| k.ends_with(&round.to_string()))
                .cloned()
                .unwrap();
            c.remove_service(&winner).await.unwrap();
        }
    }

    #[tokio::test]
    async fn ports_are_released_by_update_and_rm() {
        let dir = tempfile::tempdir().unwrap();
        let c = control(&dir);
        network(&c, "app", "overlay").await;
        c.create_service(service("web", "app", &["8080:80"]))
            .await
            .unwrap();
        let p = validate::publish("8081:80").unwrap();
        c.update_service("web", &[p], &[(8080, Proto::Tcp)])
            .await
            .unwrap();
        // 8080 is free again, 8081 is web's.
        c.create_service(service("other", "app", &["8080:80"]))
            .await
            .unwrap();
        assert!(c
            .create_service(service("third", "app", &["8081:80"]))
            .await
            .is_err());
        c.remove_service("web").await.unwrap();
        c.create_service(service("third", "app", &["8081:80"]))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn bridge_networks_get_no_vip() {
        let dir = tempfile::tempdir().unwrap();
        let c = control(&dir);
        network(&c, "lan", "bridge").await;
        network(&c, "app", "overlay").await;
        let mut req = service("web", "lan", &[]);
        req.networks.push("app".into());
        let svc = c.create_service(req).await.unwrap();
        let nets: Vec<&str> = svc.vips.iter().map(|v| v.network.as_str()).collect();
        assert_eq!(nets, ["app"]);
    }
}
