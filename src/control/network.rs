//! Creating and removing networks: the user's, and the ingress network at daemon start.

use std::collections::BTreeSet;

use ipnet::Ipv4Net;

use super::{claim, Attempt, Control, ControlError, Operation, Subject, INGRESS};
use crate::ipam;
use crate::model::{now_secs, random_id, ClusterState, Driver, Network};
use crate::store::{keys, Txn};
use crate::validate::NetworkRequest;

impl Control {
    /// `node_nets`: every route and address of the node, for the bridge overlap rule.
    pub async fn create_network(
        &self,
        req: NetworkRequest,
        node_nets: &[Ipv4Net],
    ) -> Result<Network, ControlError> {
        let what = Operation::CreateNetwork {
            name: req.name.clone(),
        };
        let req = &req;
        let net = self
            .commit(what, move |st| async move {
                let net = self.plan_network(req, &st, node_nets)?;
                let mut txn = Txn::new()
                    .when_absent(keys::network(&net.name))
                    .put_json(keys::network(&net.name), &net)?;
                if req.subnet.is_none() {
                    txn = claim(txn, keys::subnet_claim(&net.subnet), &net.name);
                }
                if let Some(vni) = net.vni {
                    txn = claim(txn, keys::vni_claim(vni), &net.name);
                }
                Ok(Attempt::Commit(txn, net))
            })
            .await?;
        tracing::info!(network = %net.name, subnet = %net.subnet, vni = ?net.vni, "network created");
        Ok(net)
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
            None => default_gateway(&what, subnet)?,
        };
        if req.encrypted && !self.cfg.esp {
            return Err(ControlError::NoEsp { subject: what });
        }
        let vni = match req.driver {
            Driver::Bridge | Driver::Macvlan => None,
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
            parent: req.parent.clone(),
            encrypted: req.encrypted,
        })
    }

    /// Creates the ingress overlay if it does not exist yet (daemon start).
    pub async fn ensure_ingress_network(&self, subnet: Ipv4Net) -> Result<(), ControlError> {
        let created = self
            .commit(Operation::CreateIngress, move |st| async move {
                if let Some(existing) = st.networks.get(INGRESS) {
                    if existing.subnet != subnet {
                        tracing::warn!(
                            existing = %existing.subnet, wanted = %subnet,
                            "the ingress network exists with another subnet; keeping it"
                        );
                    }
                    return Ok(Attempt::Done(None));
                }
                let gateway = default_gateway(&Subject::Ingress, subnet)?;
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
                    parent: None,
                    encrypted: false,
                };
                let txn = claim(Txn::new(), keys::vni_claim(vni), INGRESS)
                    .when_absent(keys::network(INGRESS))
                    .put_json(keys::network(INGRESS), &net)?;
                Ok(Attempt::Commit(txn, Some(vni)))
            })
            .await?;
        if let Some(vni) = created {
            tracing::info!(subnet = %subnet, vni, "ingress network created");
        }
        Ok(())
    }

    pub async fn remove_network(&self, name: &str) -> Result<(), ControlError> {
        let what = Operation::RemoveNetwork { name: name.into() };
        self.commit(what, move |st| async move {
            let not_found = || ControlError::NetworkNotFound { name: name.into() };
            let net = st.networks.get(name).ok_or_else(not_found)?;
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
                .ok_or_else(not_found)?;
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
            Ok(Attempt::Commit(txn, ()))
        })
        .await?;
        tracing::info!(network = name, "network removed");
        Ok(())
    }
}

fn default_gateway(what: &Subject, subnet: Ipv4Net) -> Result<std::net::Ipv4Addr, ControlError> {
    ipam::default_gateway(subnet).ok_or_else(|| ControlError::NoHostAddress {
        subject: what.clone(),
        subnet,
    })
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
    // Bridge and macvlan subnets are routed on the node (a bridge's, or the parent's
    // segment): no two of them may overlap.
    let local = |d: Driver| matches!(d, Driver::Bridge | Driver::Macvlan);
    if local(driver) {
        if let Some(other) = st
            .networks
            .values()
            .find(|n| local(n.driver) && ipam::overlaps(&n.subnet, &subnet))
        {
            return Err(ControlError::OverlapsBridge {
                subject: what.clone(),
                subnet,
                other: other.name.clone(),
                other_subnet: other.subnet,
            });
        }
        // A macvlan subnet is the parent's segment: the node may well have a route to it.
        if let Some(route) = node_nets
            .iter()
            .find(|r| driver == Driver::Bridge && ipam::overlaps(r, &subnet))
        {
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
