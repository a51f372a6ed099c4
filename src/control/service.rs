//! Creating, scaling, updating and removing services, and the checks they need: networks that
//! exist and do not overlap, addresses enough for the replicas, published ports nobody else
//! holds.

use std::collections::BTreeSet;

use ipnet::Ipv4Net;

use super::{claim, free_address, Attempt, Control, ControlError, Operation};
use crate::ipam;
use crate::model::{
    now_secs, random_id, ClusterState, DesiredState, Driver, EndpointMode, Network, PortConfig,
    Proto, Service, ServiceVip,
};
use crate::store::{keys, state, KeyValue, Txn};
use crate::validate::ServiceRequest;

impl Control {
    pub async fn create_service(&self, req: ServiceRequest) -> Result<Service, ControlError> {
        let what = Operation::CreateService {
            name: req.name.clone(),
        };
        let req = &req;
        let svc = self
            .commit(what, move |st| async move {
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
                    image: req.image.clone(),
                    user: req.user.clone(),
                    limits: req.limits,
                };
                let mut txn = Txn::new().when_absent(keys::service(&svc.name));
                if svc.endpoint_mode == EndpointMode::Vip {
                    // VIPs live in overlay namespaces; a bridge network's service is answered
                    // by its tasks' addresses.
                    for net in nets.iter().filter(|n| n.driver == Driver::Overlay) {
                        let vip = free_vip(&svc.name, net, &st)?;
                        let key = keys::addr_claim(&net.id, vip.address.addr());
                        txn = claim(txn, key, &format!("vip {}", svc.name));
                        svc.vips.push(vip);
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
                Ok(Attempt::Commit(txn, svc))
            })
            .await?;
        tracing::info!(service = %svc.name, replicas = svc.replicas, "service created");
        Ok(svc)
    }

    /// A service's stored record (for a compare-and-set) and its decoded value.
    async fn service_record(&self, name: &str) -> Result<(KeyValue, Service), ControlError> {
        let kv = self
            .store
            .get(&keys::service(name))
            .await?
            .ok_or_else(|| ControlError::ServiceNotFound { name: name.into() })?;
        let svc = state::decode(&kv)?;
        Ok((kv, svc))
    }

    pub async fn scale_service(&self, name: &str, replicas: u32) -> Result<Service, ControlError> {
        let what = Operation::ScaleService { name: name.into() };
        let svc = self
            .commit(what, move |st| async move {
                let (kv, mut svc) = self.service_record(name).await?;
                let nets = service_networks(name, &svc.networks, &st)?;
                let existing = st
                    .tasks
                    .values()
                    .filter(|t| t.service == name && t.desired == DesiredState::Running)
                    .count() as u32;
                check_capacity(name, &nets, replicas, existing, 0, &st)?;
                svc.replicas = replicas;
                svc.updated_at = now_secs();
                Ok(Attempt::Commit(rewrite(kv, &svc)?, svc))
            })
            .await?;
        tracing::info!(service = name, replicas, "service scaled");
        Ok(svc)
    }

    /// Adds and removes published ports of a running service.
    pub async fn update_service(
        &self,
        name: &str,
        add: &[PortConfig],
        remove: &[(u16, Proto)],
    ) -> Result<Service, ControlError> {
        let what = Operation::UpdateService { name: name.into() };
        let svc = self
            .commit(what, move |st| async move {
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
                let txn = claim_ports(rewrite(kv, &svc)?, name, &before_ports, &svc.ports);
                Ok(Attempt::Commit(txn, svc))
            })
            .await?;
        tracing::info!(service = name, ports = ?svc.ports, "service updated");
        Ok(svc)
    }

    /// Removes the service, its VIP and port claims in one transaction, so a `network rm`
    /// right after it succeeds; the orchestrator then shuts its tasks down (with a compare of
    /// its own, and one transaction per task, so a service of any size can go).
    pub async fn remove_service(&self, name: &str) -> Result<(), ControlError> {
        let what = Operation::RemoveService { name: name.into() };
        self.commit(what, move |st| async move {
            let (kv, svc) = self.service_record(name).await?;
            let mut txn = Txn::new()
                .when_revision(kv.key.clone(), kv.mod_revision)
                .delete(kv.key);
            for vip in &svc.vips {
                if let Some(net) = st.networks.get(&vip.network) {
                    txn = txn.delete(keys::addr_claim(&net.id, vip.address.addr()));
                }
            }
            Ok(Attempt::Commit(claim_ports(txn, name, &svc.ports, &[]), ()))
        })
        .await?;
        tracing::info!(service = name, "service removed");
        Ok(())
    }
}

/// The next address of `net` nobody holds, for `service`'s VIP there (to be claimed).
fn free_vip(service: &str, net: &Network, st: &ClusterState) -> Result<ServiceVip, ControlError> {
    let ip = free_address(st, net).ok_or_else(|| ControlError::NoAddressForVip {
        service: service.into(),
        network: net.name.clone(),
        subnet: net.subnet,
    })?;
    Ok(ServiceVip {
        network: net.name.clone(),
        address: Ipv4Net::new(ip, net.subnet.prefix_len()).unwrap_or(net.subnet),
    })
}

/// Writes `svc` over the record read as `kv`, if nobody wrote it since.
fn rewrite(kv: KeyValue, svc: &Service) -> Result<Txn, ControlError> {
    Ok(Txn::new()
        .when_revision(kv.key.clone(), kv.mod_revision)
        .put_json(kv.key, svc)?)
}

/// Moves the port claims of `service` from `before` to `after` in `txn`: new ports are claimed
/// only if nobody holds them (so two services racing for one port cannot both win), dropped
/// ports are released.
fn claim_ports(mut txn: Txn, service: &str, before: &[PortConfig], after: &[PortConfig]) -> Txn {
    let key = |p: &PortConfig| keys::port_claim(p.proto, p.published);
    let held: BTreeSet<String> = before.iter().map(key).collect();
    let wanted: BTreeSet<String> = after.iter().map(key).collect();
    for k in wanted.difference(&held) {
        txn = claim(txn, k.clone(), service);
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
        // The claims index says whether anyone holds the port; only then is the owner looked up.
        if !st.claims.contains(&keys::port_claim(p.proto, p.published)) {
            continue;
        }
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
        // Every address in use on the network is claimed (tasks, VIPs, nodes' own); the
        // gateway is not, and is never handed out.
        let taken = st.taken(&keys::addr_claims(&net.id));
        let gateway = usize::from(!taken.contains(&net.gateway));
        let hosts = usize::try_from(ipam::host_count(net.subnet)).unwrap_or(usize::MAX);
        let free = hosts.saturating_sub(taken.len() + gateway).min(more);
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
