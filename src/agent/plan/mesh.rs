//! Planning the routing mesh on one node, pure like `plan`: which virtual services each
//! load-balancing namespace holds (VIPs in each overlay namespace, published ports in
//! `ingress_sbox`), the ingress sandbox itself, and the node's DNAT of published ports.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use routemesh_netdev::firewall::{HostPort, IngressDnat};
use routemesh_netdev::spec::{Attachment, InterfaceSpec, Mac, SandboxSpec};

use super::{outer_ifname, NodeContext, BRIDGE_MTU, GWBRIDGE, OVERLAY_MTU};
use crate::layout::INGRESS_SBOX;
use crate::model::{
    ClusterState, DesiredState, EndpointMode, Network, Proto, PublishMode, Scheduler, Service,
    Task, TaskState,
};

/// One load-balancing namespace's virtual services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LbPlan {
    pub netns: PathBuf,
    /// Connections balanced here leave with this source address, so replies come back.
    pub snat_to: Ipv4Addr,
    pub vips: Vec<VipLb>,
    pub published: Vec<PublishedLb>,
}

/// A VIP forwards every port, as Docker's does: backends are addresses only.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct VipLb {
    pub service: String,
    pub vip: Ipv4Addr,
    /// Address and weight (0: draining).
    pub backends: Vec<(Ipv4Addr, u32)>,
    pub scheduler: Scheduler,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PublishedLb {
    pub service: String,
    pub port: u16,
    pub proto: Proto,
    /// Address, target port and weight (0: draining).
    pub backends: Vec<(Ipv4Addr, u16, u32)>,
    pub scheduler: Scheduler,
}

#[derive(Clone, Debug, Default)]
pub struct MeshPlan {
    /// Keyed by the namespace's name (`ov-NETWORK`, `ingress_sbox`).
    pub lbs: BTreeMap<String, LbPlan>,
    /// Extra /32 addresses on each overlay's `br0` (this node's own address).
    pub overlay_addresses: BTreeMap<String, Vec<Ipv4Net>>,
    /// The VIPs each overlay namespace answers (local routes through `br0`), in the order of
    /// its load balancer's `vips`.
    pub overlay_vips: BTreeMap<String, Vec<Ipv4Addr>>,
    pub ingress_sbox: Option<SandboxSpec>,
    pub ingress_dnat: Option<IngressDnat>,
    pub host_ports: Vec<HostPort>,
    /// The service of each `host_ports` entry, in the same order (services by name), so that
    /// `update` finds one service's entries by binary search. Not applied.
    pub host_port_services: Vec<String>,
    /// This plan's version, unique in the process.
    pub version: u64,
    /// The version `changed` is relative to (the plan this one was updated from); 0 when
    /// this plan was made whole.
    pub base: u64,
    /// The services whose load-balancer entries (VIPs, published ports) may differ from plan
    /// `base`'s, in any namespace: the load balancers re-apply only theirs.
    pub changed: BTreeSet<String>,
}

/// Two plans are equal when they program the same: versions say how they were made.
impl PartialEq for MeshPlan {
    fn eq(&self, other: &Self) -> bool {
        let MeshPlan {
            lbs,
            overlay_addresses,
            overlay_vips,
            ingress_sbox,
            ingress_dnat,
            host_ports,
            host_port_services,
            version: _,
            base: _,
            changed: _,
        } = self;
        *lbs == other.lbs
            && *overlay_addresses == other.overlay_addresses
            && *overlay_vips == other.overlay_vips
            && *ingress_sbox == other.ingress_sbox
            && *ingress_dnat == other.ingress_dnat
            && *host_ports == other.host_ports
            && *host_port_services == other.host_port_services
    }
}

impl Eq for MeshPlan {}

impl MeshPlan {
    /// Starts a new version: what `update_service` changes from here on is relative to the
    /// current one.
    pub(super) fn begin_update(&mut self) {
        self.base = self.version;
        self.version = super::next_version();
        self.changed.clear();
    }
}

/// A service's tasks that belong in its load balancers, with their weight: 1 while wanted
/// and running; 0 (draining: no new connections, existing ones finish) while exited and
/// waiting to restart or shutting down. A task that never ran is not a backend yet.
fn members<'a>(
    st: &'a ClusterState,
    service: &'a str,
) -> impl Iterator<Item = (&'a Task, u32)> + 'a {
    super::service_tasks(st, service).filter_map(move |t| {
        let status = st.statuses.get(&t.name)?;
        let running = status.state == TaskState::Running;
        match (t.desired, running) {
            (DesiredState::Running, true) => Some((t, 1)),
            _ if status.ever_ran => Some((t, 0)),
            _ => None,
        }
    })
}

/// Tasks that take new connections: wanted, and reported running.
fn serving<'a>(st: &'a ClusterState, service: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
    super::service_tasks(st, service).filter(move |t| {
        t.desired == DesiredState::Running
            && st
                .statuses
                .get(&t.name)
                .is_some_and(|s| s.state == TaskState::Running)
    })
}

fn addr_on(task: &Task, network: &str) -> Option<Ipv4Addr> {
    task.attachments
        .iter()
        .find(|a| a.network == network)
        .map(|a| a.address.addr())
}

fn host32(ip: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(ip, 32).unwrap_or_else(|_| Ipv4Net::from(ip))
}

/// The overlays whose namespace balances VIPs on this node: not the ingress network, and
/// only once the node has its own address there. Returns (network, the node's address).
fn vip_networks<'a>(
    st: &'a ClusterState,
    ctx: &'a NodeContext,
) -> impl Iterator<Item = (&'a Network, Ipv4Addr)> + 'a {
    st.networks
        .values()
        .filter(|n| n.vni.is_some() && !n.ingress)
        .filter_map(|net| {
            st.node_addrs
                .get(&(net.name.clone(), ctx.node.clone()))
                .map(|own| (net, own.address.addr()))
        })
}

/// `svc`'s VIP on `network` and its backends, when it has one there.
fn vip_lb(st: &ClusterState, svc: &Service, network: &str) -> Option<VipLb> {
    if svc.endpoint_mode != EndpointMode::Vip {
        return None;
    }
    let vip = svc.vips.iter().find(|v| v.network == network)?;
    let mut backends: Vec<(Ipv4Addr, u32)> = members(st, &svc.name)
        .filter_map(|(t, w)| addr_on(t, network).map(|a| (a, w)))
        .collect();
    backends.sort();
    Some(VipLb {
        service: svc.name.clone(),
        vip: vip.address.addr(),
        backends,
        scheduler: svc.lb_scheduler,
    })
}

/// `svc`'s ingress-mode ports, balanced in the ingress sandbox, in the service's port order.
fn published_lbs(st: &ClusterState, svc: &Service) -> Vec<PublishedLb> {
    let ingress = crate::control::INGRESS;
    svc.ports
        .iter()
        .filter(|p| p.mode == PublishMode::Ingress)
        .map(|p| {
            let mut backends: Vec<(Ipv4Addr, u16, u32)> = members(st, &svc.name)
                .filter_map(|(t, w)| addr_on(t, ingress).map(|a| (a, p.target, w)))
                .collect();
            backends.sort();
            PublishedLb {
                service: svc.name.clone(),
                port: p.published,
                proto: p.proto,
                backends,
                scheduler: svc.lb_scheduler,
            }
        })
        .collect()
}

/// `svc`'s host-mode ports: only this node's own tasks, straight through the gateway bridge.
fn host_ports_of(st: &ClusterState, ctx: &NodeContext, svc: &Service) -> Vec<HostPort> {
    svc.ports
        .iter()
        .filter(|p| p.mode == PublishMode::Host)
        .map(|p| HostPort {
            proto: p.proto,
            port: p.published,
            targets: serving(st, &svc.name)
                .filter(|t| t.node == ctx.node)
                .map(|t| (t.gateway_address.addr(), p.target))
                .collect(),
        })
        .collect()
}

pub fn plan_mesh(st: &ClusterState, ctx: &NodeContext) -> MeshPlan {
    let mut mesh = MeshPlan {
        version: super::next_version(),
        ..MeshPlan::default()
    };
    let ingress = crate::control::INGRESS;

    // VIPs: each overlay namespace balances the VIPs of its network, in service order.
    for (net, own) in vip_networks(st, ctx) {
        let mut addrs = Vec::new();
        let mut vips = Vec::new();
        for svc in st.services.values() {
            if let Some(lb) = vip_lb(st, svc, &net.name) {
                addrs.push(lb.vip);
                vips.push(lb);
            }
        }
        let ns = crate::layout::netns_name(&ctx.run.overlay_netns(&net.name));
        mesh.overlay_addresses
            .insert(net.name.clone(), vec![host32(own)]);
        mesh.overlay_vips.insert(net.name.clone(), addrs);
        mesh.lbs.insert(
            ns,
            LbPlan {
                netns: ctx.run.overlay_netns(&net.name),
                snat_to: own,
                vips,
                published: Vec::new(),
            },
        );
    }

    // Published ports, ingress mode: every node DNATs them to its ingress sandbox, which
    // balances over the tasks' ingress addresses on any node.
    let own_ingress = st.node_addrs.get(&(ingress.to_string(), ctx.node.clone()));
    let sbox_gw = crate::ipam::ingress_sbox_gw_address(ctx.gwbridge_subnet);
    if let (Some(own), Some(sbox_gw)) = (own_ingress, sbox_gw) {
        let published: Vec<PublishedLb> = st
            .services
            .values()
            .flat_map(|svc| published_lbs(st, svc))
            .collect();
        let ports = published.iter().map(|p| (p.proto, p.port)).collect();
        let sbox_ns = ctx.run.ingress_sbox_netns();
        mesh.ingress_sbox = Some(SandboxSpec {
            netns: sbox_ns.clone(),
            interfaces: vec![
                InterfaceSpec {
                    ifname: "eth0".into(),
                    outer_ifname: outer_ifname(INGRESS_SBOX, 0),
                    attach: Attachment::Overlay {
                        netns: ctx.run.overlay_netns(ingress),
                    },
                    address: own.address,
                    mac: Mac::from_ipv4(own.address.addr()),
                    mtu: OVERLAY_MTU,
                },
                InterfaceSpec {
                    ifname: "eth1".into(),
                    outer_ifname: outer_ifname(INGRESS_SBOX, 1),
                    // Not isolated: where bridged traffic passes the ip hooks
                    // (br_netfilter), a task's hairpin to a published port is DNATed to
                    // this leg and bridged to it straight from the task's isolated port.
                    attach: Attachment::NodeBridge {
                        bridge: GWBRIDGE.into(),
                        isolated: false,
                    },
                    address: Ipv4Net::new(sbox_gw, ctx.gwbridge_subnet.prefix_len())
                        .unwrap_or(ctx.gwbridge_subnet),
                    mac: Mac::from_ipv4(sbox_gw),
                    mtu: BRIDGE_MTU,
                },
            ],
            default_gateway: Some(ctx.gwbridge_gateway().addr()),
        });
        mesh.lbs.insert(
            INGRESS_SBOX.to_string(),
            LbPlan {
                netns: sbox_ns,
                snat_to: own.address.addr(),
                vips: Vec::new(),
                published,
            },
        );
        mesh.ingress_dnat = Some(IngressDnat {
            sbox: sbox_gw,
            gw_bridge: GWBRIDGE.into(),
            gw_subnet: ctx.gwbridge_subnet,
            ports,
        });
    }

    // Host mode: only this node's own tasks, straight through the gateway bridge.
    for svc in st.services.values() {
        for hp in host_ports_of(st, ctx, svc) {
            mesh.host_ports.push(hp);
            mesh.host_port_services.push(svc.name.clone());
        }
    }
    mesh
}

/// Replaces `v[range]` with `new`, the range clamped to `v` (the lists patched together
/// always have the same length; clamping only keeps a broken plan from panicking).
fn splice<T>(v: &mut Vec<T>, lo: usize, hi: usize, new: impl IntoIterator<Item = T>) {
    let hi = hi.min(v.len());
    let lo = lo.min(hi);
    v.splice(lo..hi, new);
}

/// Where `service`'s entries are in a list sorted by service: `lo..hi`.
fn service_range<T>(v: &[T], service: &str, key: impl Fn(&T) -> &str) -> (usize, usize) {
    let lo = v.partition_point(|x| key(x) < service);
    let hi = lo + v[lo..].partition_point(|x| key(x) == service);
    (lo, hi)
}

/// Brings `service`'s entries in the mesh (its VIP in each overlay's namespace and on `br0`,
/// its published ports in the ingress sandbox and the node's DNAT, its host ports) to what
/// `plan_mesh(st, ctx)` holds for it, leaving every other service's entries as they are.
pub(super) fn update_service(
    plan: &mut super::NodePlan,
    st: &ClusterState,
    ctx: &NodeContext,
    service: &str,
) {
    let svc = st.services.get(service);
    let mesh = &mut plan.mesh;
    mesh.changed.insert(service.to_string());

    for (net, _) in vip_networks(st, ctx) {
        let ns = crate::layout::netns_name(&ctx.run.overlay_netns(&net.name));
        let Some(lb) = mesh.lbs.get_mut(&ns) else {
            continue;
        };
        let new = svc.and_then(|s| vip_lb(st, s, &net.name));
        let pos = lb
            .vips
            .binary_search_by(|v| v.service.as_str().cmp(service));
        // The VIPs br0 answers: one per entry of `vips`, in the same order.
        let mut addr_lists = [
            mesh.overlay_vips.get_mut(&net.name),
            plan.overlays.get_mut(&net.name).map(|o| &mut o.vips),
        ];
        match (pos, new) {
            (Ok(i), Some(v)) => {
                for addrs in addr_lists.iter_mut().flatten() {
                    if let Some(a) = addrs.get_mut(i) {
                        *a = v.vip;
                    }
                }
                lb.vips[i] = v;
            }
            (Ok(i), None) => {
                for addrs in addr_lists.iter_mut().flatten() {
                    if i < addrs.len() {
                        addrs.remove(i);
                    }
                }
                lb.vips.remove(i);
            }
            (Err(i), Some(v)) => {
                for addrs in addr_lists.iter_mut().flatten() {
                    addrs.insert(i.min(addrs.len()), v.vip);
                }
                lb.vips.insert(i, v);
            }
            (Err(_), None) => {}
        }
    }

    // Published ports: the ingress sandbox's entries and the DNAT's ports go in step.
    if let Some(lb) = mesh.lbs.get_mut(INGRESS_SBOX) {
        let (lo, hi) = service_range(&lb.published, service, |p| p.service.as_str());
        let new = svc.map(|s| published_lbs(st, s)).unwrap_or_default();
        let ports: Vec<(Proto, u16)> = new.iter().map(|p| (p.proto, p.port)).collect();
        if lo != hi || !new.is_empty() {
            for dnat in [mesh.ingress_dnat.as_mut(), plan.firewall.ingress.as_mut()]
                .into_iter()
                .flatten()
            {
                splice(&mut dnat.ports, lo, hi, ports.iter().copied());
            }
            splice(&mut lb.published, lo, hi, new);
        }
    }

    let (lo, hi) = service_range(&mesh.host_port_services, service, |s| s.as_str());
    let new = svc.map(|s| host_ports_of(st, ctx, s)).unwrap_or_default();
    if lo != hi || !new.is_empty() {
        let owners = std::iter::repeat_n(service.to_string(), new.len());
        splice(&mut mesh.host_port_services, lo, hi, owners);
        splice(&mut plan.firewall.host_ports, lo, hi, new.iter().cloned());
        splice(&mut mesh.host_ports, lo, hi, new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn ctx() -> NodeContext {
        NodeContext {
            node: "n1".into(),
            run: crate::layout::RunDir::new("/run/rm"),
            advertise_addr: None,
            gwbridge_subnet: "172.18.0.0/16".parse().unwrap(),
            task_path: "/bin".into(),
        }
    }

    fn net(name: &str, subnet: &str, vni: u32, ingress: bool) -> Network {
        let subnet: Ipv4Net = subnet.parse().unwrap();
        Network {
            name: name.into(),
            id: format!("id-{name}"),
            driver: Driver::Overlay,
            subnet,
            gateway: subnet.hosts().next().unwrap(),
            vni: Some(vni),
            created_at: 0,
            ingress,
            parent: None,
            encrypted: false,
        }
    }

    fn state() -> ClusterState {
        let mut st = ClusterState::default();
        st.networks
            .insert("app".into(), net("app", "10.0.1.0/24", 4097, false));
        st.networks.insert(
            "ingress".into(),
            net("ingress", "10.255.0.0/16", 4096, true),
        );
        for (n, a) in [("app", "10.0.1.2/24"), ("ingress", "10.255.0.2/16")] {
            st.node_addrs.insert(
                (n.into(), "n1".into()),
                NodeAddress {
                    network: n.into(),
                    node: "n1".into(),
                    address: a.parse().unwrap(),
                },
            );
        }
        st.services.insert(
            "web".into(),
            Service {
                name: "web".into(),
                id: "s".into(),
                replicas: 3,
                networks: vec!["app".into()],
                env: vec![],
                command: vec!["x".into()],
                created_at: 0,
                updated_at: 0,
                endpoint_mode: EndpointMode::Vip,
                ports: vec![
                    PortConfig {
                        published: 8080,
                        target: 80,
                        proto: Proto::Tcp,
                        mode: PublishMode::Ingress,
                    },
                    PortConfig {
                        published: 8081,
                        target: 80,
                        proto: Proto::Tcp,
                        mode: PublishMode::Host,
                    },
                ],
                vips: vec![ServiceVip {
                    network: "app".into(),
                    address: "10.0.1.3/24".parse().unwrap(),
                }],
                lb_scheduler: Default::default(),
                image: None,
                user: None,
                limits: Default::default(),
            },
        );
        // web.1 on n1 running, web.2 on n2 running, web.3 on n1 not running yet.
        for (slot, node, state) in [
            (1, "n1", Some(TaskState::Running)),
            (2, "n2", Some(TaskState::Running)),
            (3, "n1", Some(TaskState::Failed)),
        ] {
            let t = Task {
                name: format!("web.{slot}"),
                service: "web".into(),
                slot,
                node: node.into(),
                attachments: vec![
                    TaskAttachment {
                        network: "app".into(),
                        address: format!("10.0.1.{}/24", 10 + slot).parse().unwrap(),
                    },
                    TaskAttachment {
                        network: "ingress".into(),
                        address: format!("10.255.0.{}/16", 10 + slot).parse().unwrap(),
                    },
                ],
                gateway_address: format!("172.18.0.{}/16", 10 + slot).parse().unwrap(),
                created_at: 0,
                desired: DesiredState::Running,
            };
            if let Some(state) = state {
                st.statuses.insert(
                    t.name.clone(),
                    TaskStatus {
                        state,
                        pid: None,
                        message: String::new(),
                        restarts: 0,
                        ever_ran: true,
                        updated_at: 0,
                    },
                );
            }
            st.tasks.insert(t.name.clone(), t);
        }
        st
    }

    #[test]
    fn vip_balances_over_running_tasks_on_every_node() {
        let m = plan_mesh(&state(), &ctx());
        let lb = &m.lbs["ov-app"];
        assert_eq!(lb.snat_to, "10.0.1.2".parse::<Ipv4Addr>().unwrap());
        assert_eq!(lb.vips.len(), 1);
        assert_eq!(lb.vips[0].vip, "10.0.1.3".parse::<Ipv4Addr>().unwrap());
        let b: Vec<String> = lb.vips[0]
            .backends
            .iter()
            .map(|(a, w)| format!("{a} w{w}"))
            .collect();
        assert_eq!(
            b,
            ["10.0.1.11 w1", "10.0.1.12 w1", "10.0.1.13 w0"],
            "web.3 exited: draining"
        );
        let addrs: Vec<String> = m.overlay_addresses["app"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(addrs, ["10.0.1.2/32"]);
        let vips: Vec<String> = m.overlay_vips["app"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(vips, ["10.0.1.3"]);
        assert!(!m.overlay_addresses.contains_key("ingress"));
    }

    #[test]
    fn published_ports_go_through_the_ingress_sandbox() {
        let m = plan_mesh(&state(), &ctx());
        let sbox = m.ingress_sbox.as_ref().unwrap();
        assert_eq!(sbox.netns, PathBuf::from("/run/rm/netns/ingress_sbox"));
        assert_eq!(sbox.interfaces[0].address.to_string(), "10.255.0.2/16");
        assert_eq!(sbox.interfaces[1].address.to_string(), "172.18.0.2/16");
        let lb = &m.lbs[INGRESS_SBOX];
        assert_eq!(lb.published.len(), 1);
        let p = &lb.published[0];
        assert_eq!((p.port, p.proto), (8080, Proto::Tcp));
        let b: Vec<String> = p
            .backends
            .iter()
            .map(|(a, port, w)| format!("{a}:{port} w{w}"))
            .collect();
        assert_eq!(
            b,
            [
                "10.255.0.11:80 w1",
                "10.255.0.12:80 w1",
                "10.255.0.13:80 w0"
            ]
        );
        let dnat = m.ingress_dnat.as_ref().unwrap();
        assert_eq!(dnat.ports, vec![(Proto::Tcp, 8080)]);
        assert_eq!(dnat.sbox.to_string(), "172.18.0.2");
    }

    #[test]
    fn host_mode_targets_only_local_running_tasks() {
        let m = plan_mesh(&state(), &ctx());
        assert_eq!(m.host_ports.len(), 1);
        let t: Vec<String> = m.host_ports[0]
            .targets
            .iter()
            .map(|(a, p)| format!("{a}:{p}"))
            .collect();
        assert_eq!(t, ["172.18.0.11:80"]);
    }

    #[test]
    fn dnsrr_services_get_no_vip() {
        let mut st = state();
        if let Some(s) = st.services.get_mut("web") {
            s.endpoint_mode = EndpointMode::Dnsrr;
        }
        let m = plan_mesh(&st, &ctx());
        assert!(m.lbs["ov-app"].vips.is_empty());
        assert_eq!(m.overlay_addresses["app"].len(), 1);
        assert!(m.overlay_vips["app"].is_empty());
    }

    #[test]
    fn without_a_node_address_nothing_is_balanced_yet() {
        let mut st = state();
        st.node_addrs.clear();
        let m = plan_mesh(&st, &ctx());
        assert!(m.lbs.is_empty() && m.ingress_sbox.is_none() && m.ingress_dnat.is_none());
    }
}
