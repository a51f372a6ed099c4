//! What this node's kernel and process table should hold, as a pure function of the cluster
//! state. No I/O: every name, address and path is decided here, so the tests below pin the
//! whole layout down without root.

pub mod dns;
pub mod files;
pub mod ipsec;
pub mod mesh;
mod update;

pub use update::{update, Dirty};

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::Ipv4Net;
use routemesh_netdev::firewall::{Guard, GuardedBridge, Masquerade, NodeFirewallSpec};
use routemesh_netdev::netlink::VXLAN_PORT;
use routemesh_netdev::spec::{
    Attachment, BridgeSpec, InterfaceSpec, Mac, OverlaySpec, SandboxSpec,
};

use super::runner::ContainerSpec;
use crate::layout::RunDir;
use crate::model::{ClusterState, DesiredState, Driver, Network, Task};

pub const GWBRIDGE: &str = "rm_gwbridge";
pub const OVERLAY_MTU: u32 = 1450;
pub const BRIDGE_MTU: u32 = 1500;
/// Prefix of the bridges' names, so leftovers can be recognised.
pub const BRIDGE_PREFIX: &str = "rmb-";

/// What the planner needs to know about this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeContext {
    pub node: String,
    pub run: RunDir,
    pub advertise_addr: Option<Ipv4Addr>,
    pub gwbridge_subnet: Ipv4Net,
    /// PATH given to task processes.
    pub task_path: String,
}

impl NodeContext {
    pub fn gwbridge_gateway(&self) -> Ipv4Net {
        let gw = crate::ipam::default_gateway(self.gwbridge_subnet)
            .unwrap_or(self.gwbridge_subnet.network());
        Ipv4Net::new(gw, self.gwbridge_subnet.prefix_len()).unwrap_or(self.gwbridge_subnet)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlan {
    pub gwbridge: BridgeSpec,
    /// Keyed by network name.
    pub bridges: BTreeMap<String, BridgeSpec>,
    pub overlays: BTreeMap<String, OverlaySpec>,
    /// Keyed by task name.
    pub sandboxes: BTreeMap<String, SandboxSpec>,
    pub containers: BTreeMap<String, ContainerSpec>,
    pub task_files: BTreeMap<String, TaskFiles>,
    pub firewall: NodeFirewallSpec,
    /// Load balancers and the ingress sandbox.
    pub mesh: mesh::MeshPlan,
    /// The embedded DNS's names and who may see them.
    pub dns: dns::DnsPlan,
    /// ESP security associations and policies for the encrypted overlays.
    pub ipsec: routemesh_netdev::xfrm::IpsecSpec,
    /// Where the overlays' remote entries come from, for `update`. Not applied.
    pub remote: RemoteEndpoints,
}

/// The contents of a task's resolv.conf and hosts files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskFiles {
    pub resolv_conf: String,
    pub hosts: String,
}

/// FNV-1a: a hash that stays the same across Rust releases, for stable interface names.
pub fn fnv32(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

/// The Linux bridge of a `bridge` network: `rmb-NAME`, or a hashed name when NAME is long.
pub fn bridge_ifname(network: &str) -> String {
    let short = format!("{BRIDGE_PREFIX}{network}");
    if short.len() <= 15 {
        short
    } else {
        format!(
            "{BRIDGE_PREFIX}{}{:04x}",
            &network[..7],
            fnv32(network) & 0xffff
        )
    }
}

/// The outer end of a task's veth: unique per task and interface on one node.
pub fn outer_ifname(task: &str, index: usize) -> String {
    format!("rv{:08x}{index}", fnv32(task))
}

pub fn vxlan_ifname(vni: u32) -> String {
    format!("vxlan{vni}")
}

fn overlay_spec(
    ctx: &NodeContext,
    net: &Network,
    vni: u32,
    remote: &RemoteEndpoints,
) -> OverlaySpec {
    let (fdb, neighbours) = remote.entries(&net.name);
    OverlaySpec {
        netns: ctx.run.overlay_netns(&net.name),
        vxlan_ifname: vxlan_ifname(vni),
        vni,
        local_vtep: ctx.advertise_addr,
        gateway: net.gateway_net(),
        mtu: OVERLAY_MTU,
        fdb,
        neighbours,
        addresses: Vec::new(),
        vips: Vec::new(),
    }
}

/// A service's tasks, found by their names (`SERVICE.SLOT`) rather than by a scan.
pub fn service_tasks<'a>(
    st: &'a ClusterState,
    service: &'a str,
) -> impl Iterator<Item = &'a Task> + 'a {
    let prefix = format!("{service}.");
    st.tasks
        .range(prefix.clone()..)
        .take_while(move |(k, _)| k.starts_with(prefix.as_str()))
        .map(|(_, t)| t)
        .filter(move |t| t.service == service)
}

/// Who put each overlay's static forwarding and neighbour entries there: everything on an
/// overlay that lives on another node, its tasks and the nodes' own (load-balancer, ingress
/// sandbox) addresses, with the VTEP of its node. Learning is off, so these entries are the
/// only way to reach them. `update` patches the entries of one task from here; not applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteEndpoints {
    /// Each remote task's entries: (network, address, VTEP), in attachment order.
    by_task: BTreeMap<String, Vec<(String, Ipv4Addr, Ipv4Addr)>>,
    /// Per overlay, per address: the VTEPs it lives behind, each with how many sources
    /// (tasks, node addresses) put it there. Holds no empty maps.
    sources: BTreeMap<String, BTreeMap<Ipv4Addr, BTreeMap<Ipv4Addr, u32>>>,
}

/// The VTEP of a ready node.
fn vtep(st: &ClusterState, node: &str) -> Option<Ipv4Addr> {
    st.nodes
        .get(node)
        .filter(|n| n.state == crate::model::NodeState::Ready)
        .and_then(|n| n.advertise_addr)
}

/// The networks that get an overlay on this node.
fn is_overlay(net: &Network) -> bool {
    net.driver == Driver::Overlay && net.vni.is_some()
}

impl RemoteEndpoints {
    fn build(ctx: &NodeContext, st: &ClusterState) -> RemoteEndpoints {
        let mut remote = RemoteEndpoints::default();
        for t in st.tasks.values() {
            remote.add_task(ctx, st, t, None);
        }
        for na in st.node_addrs.values() {
            if na.node == ctx.node || !st.networks.get(&na.network).is_some_and(is_overlay) {
                continue;
            }
            if let Some(remote_vtep) = vtep(st, &na.node) {
                remote.add(None, &na.network, na.address.addr(), remote_vtep);
            }
        }
        remote
    }

    /// The sorted forwarding and neighbour entries of `network`.
    #[allow(clippy::type_complexity)]
    fn entries(&self, network: &str) -> (Vec<(Mac, Ipv4Addr)>, Vec<(Ipv4Addr, Mac)>) {
        let mut fdb = Vec::new();
        let mut neighbours = Vec::new();
        for (ip, vteps) in self.sources.get(network).into_iter().flatten() {
            let mac = Mac::from_ipv4(*ip);
            fdb.extend(vteps.keys().map(|v| (mac, *v)));
            neighbours.push((*ip, mac));
        }
        fdb.sort();
        fdb.dedup();
        neighbours.sort();
        neighbours.dedup();
        (fdb, neighbours)
    }

    /// Counts `task`'s entries (a wanted task of another node), and adds the ones that are new
    /// to `overlays` when given.
    fn add_task(
        &mut self,
        ctx: &NodeContext,
        st: &ClusterState,
        task: &Task,
        mut overlays: Option<&mut BTreeMap<String, OverlaySpec>>,
    ) {
        if task.node == ctx.node || task.desired != DesiredState::Running {
            return;
        }
        let Some(remote_vtep) = vtep(st, &task.node) else {
            return;
        };
        let entries: Vec<(String, Ipv4Addr, Ipv4Addr)> = task
            .attachments
            .iter()
            .filter(|a| st.networks.get(&a.network).is_some_and(is_overlay))
            .map(|a| (a.network.clone(), a.address.addr(), remote_vtep))
            .collect();
        if entries.is_empty() {
            return;
        }
        for (net, ip, v) in &entries {
            let spec = overlays.as_deref_mut().and_then(|o| o.get_mut(net));
            self.add(spec, net, *ip, *v);
        }
        self.by_task.insert(task.name.clone(), entries);
    }

    /// Forgets task `name`'s entries, and removes from `overlays` the ones nothing else
    /// puts there.
    fn remove_task(&mut self, name: &str, overlays: &mut BTreeMap<String, OverlaySpec>) {
        let Some(entries) = self.by_task.remove(name) else {
            return;
        };
        for (net, ip, v) in entries {
            self.remove(overlays.get_mut(&net), &net, ip, v);
        }
    }

    fn add(&mut self, spec: Option<&mut OverlaySpec>, network: &str, ip: Ipv4Addr, v: Ipv4Addr) {
        if !self.sources.contains_key(network) {
            self.sources.insert(network.to_string(), BTreeMap::new());
        }
        let Some(ips) = self.sources.get_mut(network) else {
            return;
        };
        let vteps = ips.entry(ip).or_default();
        let new_ip = vteps.is_empty();
        let count = vteps.entry(v).or_insert(0);
        *count += 1;
        let new_vtep = *count == 1;
        let Some(spec) = spec else { return };
        let mac = Mac::from_ipv4(ip);
        if new_vtep {
            if let Err(i) = spec.fdb.binary_search(&(mac, v)) {
                spec.fdb.insert(i, (mac, v));
            }
        }
        if new_ip {
            if let Err(i) = spec.neighbours.binary_search(&(ip, mac)) {
                spec.neighbours.insert(i, (ip, mac));
            }
        }
    }

    fn remove(&mut self, spec: Option<&mut OverlaySpec>, network: &str, ip: Ipv4Addr, v: Ipv4Addr) {
        let Some(ips) = self.sources.get_mut(network) else {
            return;
        };
        let Some(vteps) = ips.get_mut(&ip) else {
            return;
        };
        let mut gone_vtep = false;
        if let Some(count) = vteps.get_mut(&v) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                vteps.remove(&v);
                gone_vtep = true;
            }
        }
        let gone_ip = vteps.is_empty();
        if gone_ip {
            ips.remove(&ip);
            if ips.is_empty() {
                self.sources.remove(network);
            }
        }
        let Some(spec) = spec else { return };
        let mac = Mac::from_ipv4(ip);
        if gone_vtep {
            if let Ok(i) = spec.fdb.binary_search(&(mac, v)) {
                spec.fdb.remove(i);
            }
        }
        if gone_ip {
            if let Ok(i) = spec.neighbours.binary_search(&(ip, mac)) {
                spec.neighbours.remove(i);
            }
        }
    }
}

fn sandbox_spec(ctx: &NodeContext, st: &ClusterState, task: &Task) -> Option<SandboxSpec> {
    let mut interfaces = Vec::new();
    for (i, a) in task.attachments.iter().enumerate() {
        let net = st.networks.get(&a.network)?;
        let (attach, mtu) = match net.driver {
            Driver::Overlay => (
                Attachment::Overlay {
                    netns: ctx.run.overlay_netns(&net.name),
                },
                OVERLAY_MTU,
            ),
            Driver::Bridge => (
                Attachment::NodeBridge {
                    bridge: bridge_ifname(&net.name),
                    isolated: false,
                },
                BRIDGE_MTU,
            ),
            Driver::Macvlan => (
                Attachment::Macvlan {
                    parent: net.parent.clone()?,
                },
                BRIDGE_MTU,
            ),
        };
        interfaces.push(InterfaceSpec {
            ifname: format!("eth{i}"),
            outer_ifname: outer_ifname(&task.name, i),
            attach,
            address: a.address,
            mac: Mac::from_ipv4(a.address.addr()),
            mtu,
        });
    }
    let gw_index = interfaces.len();
    interfaces.push(InterfaceSpec {
        ifname: format!("eth{gw_index}"),
        outer_ifname: outer_ifname(&task.name, gw_index),
        attach: Attachment::NodeBridge {
            bridge: GWBRIDGE.to_string(),
            isolated: true,
        },
        address: task.gateway_address,
        mac: Mac::from_ipv4(task.gateway_address.addr()),
        mtu: BRIDGE_MTU,
    });
    Some(SandboxSpec {
        netns: ctx.run.task_netns(&task.name),
        interfaces,
        default_gateway: Some(ctx.gwbridge_gateway().addr()),
    })
}

fn container_spec(ctx: &NodeContext, st: &ClusterState, task: &Task) -> Option<ContainerSpec> {
    let svc = st.services.get(&task.service)?;
    let paths = ctx.run.task(&task.name);
    let mut env = vec![
        ("HOME".to_string(), "/root".to_string()),
        ("HOSTNAME".to_string(), task.name.clone()),
        ("ROUTEMESH_TASK_NAME".to_string(), task.name.clone()),
        ("ROUTEMESH_SERVICE_NAME".to_string(), task.service.clone()),
        ("ROUTEMESH_TASK_SLOT".to_string(), task.slot.to_string()),
        ("ROUTEMESH_NODE".to_string(), ctx.node.clone()),
    ];
    // Without an image the host's programs run, found on the daemon's PATH; an image brings
    // its own PATH.
    if svc.image.is_none() {
        env.insert(0, ("PATH".to_string(), ctx.task_path.clone()));
    }
    // The service's own variables win over ours.
    for (k, v) in &svc.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    Some(ContainerSpec {
        task: task.name.clone(),
        image: svc.image.clone(),
        command: svc.command.clone(),
        env,
        user: svc.user.clone(),
        limits: svc.limits,
        hostname: task.name.clone(),
        netns: ctx.run.task_netns(&task.name),
        resolv_conf: paths.resolv_conf(),
        hosts: paths.hosts(),
        log: paths.log(),
        dirs: paths.container(),
    })
}

/// What a task of this node needs here: its sandbox, its container and its files; None for
/// a task of another node, one not wanted, or one that cannot be set up (network or service
/// gone).
fn local_entries(
    ctx: &NodeContext,
    st: &ClusterState,
    task: &Task,
) -> Option<(SandboxSpec, ContainerSpec, TaskFiles)> {
    if task.node != ctx.node || task.desired != DesiredState::Running {
        return None;
    }
    let sb = sandbox_spec(ctx, st, task)?;
    let proc_spec = container_spec(ctx, st, task)?;
    let first = task.attachments.first().map(|a| a.address.addr());
    let files = TaskFiles {
        resolv_conf: files::resolv_conf(),
        hosts: files::hosts(&task.name, first.or(Some(task.gateway_address.addr()))),
    };
    Some((sb, proc_spec, files))
}

/// The node's filtering, before the `bridge` networks' bridges are added: the gateway bridge
/// closed, every overlay's subnet (the ingress network's too) private to the mesh, VXLAN from
/// the ready nodes' advertise addresses only.
fn guard(st: &ClusterState) -> Guard {
    Guard {
        bridges: vec![GuardedBridge {
            ifname: GWBRIDGE.to_string(),
            intra: false,
        }],
        private_nets: st
            .networks
            .values()
            .filter(|n| n.driver == Driver::Overlay)
            .map(|n| n.subnet)
            .collect(),
        vxlan_port: VXLAN_PORT,
        encrypted_vnis: ipsec::encrypted_vnis(st),
        encrypt_mark: ipsec::ENCRYPT_MARK,
        vxlan_peers: st
            .nodes
            .values()
            .filter(|n| n.state == crate::model::NodeState::Ready)
            .filter_map(|n| n.advertise_addr)
            .collect(),
    }
}

/// The plan for `ctx.node`.
static VERSIONS: AtomicU64 = AtomicU64::new(1);

/// A plan version unique in the process (the DNS and mesh plans say which version they were
/// updated from, so their reconcilers re-apply only what changed since).
fn next_version() -> u64 {
    VERSIONS.fetch_add(1, Ordering::Relaxed)
}

pub fn plan(st: &ClusterState, ctx: &NodeContext) -> NodePlan {
    let gwbridge = BridgeSpec {
        ifname: GWBRIDGE.to_string(),
        gateway: ctx.gwbridge_gateway(),
        mtu: BRIDGE_MTU,
    };
    let mesh = mesh::plan_mesh(st, ctx);
    let mut firewall = NodeFirewallSpec {
        masquerade: vec![Masquerade {
            subnet: ctx.gwbridge_subnet,
            bridge: GWBRIDGE.to_string(),
        }],
        ingress: mesh.ingress_dnat.clone(),
        host_ports: mesh.host_ports.clone(),
        guard: Some(guard(st)),
    };
    let remote = RemoteEndpoints::build(ctx, st);
    let mut bridges = BTreeMap::new();
    let mut overlays = BTreeMap::new();
    for net in st.networks.values() {
        match (net.driver, net.vni) {
            (Driver::Bridge, _) => {
                let spec = BridgeSpec {
                    ifname: bridge_ifname(&net.name),
                    gateway: net.gateway_net(),
                    mtu: BRIDGE_MTU,
                };
                firewall.masquerade.push(Masquerade {
                    subnet: net.subnet,
                    bridge: spec.ifname.clone(),
                });
                if let Some(guard) = firewall.guard.as_mut() {
                    guard.bridges.push(GuardedBridge {
                        ifname: spec.ifname.clone(),
                        intra: true,
                    });
                }
                bridges.insert(net.name.clone(), spec);
            }
            (Driver::Overlay, Some(vni)) => {
                let mut spec = overlay_spec(ctx, net, vni, &remote);
                if let Some(addrs) = mesh.overlay_addresses.get(&net.name) {
                    spec.addresses = addrs.clone();
                }
                if let Some(vips) = mesh.overlay_vips.get(&net.name) {
                    spec.vips = vips.clone();
                }
                overlays.insert(net.name.clone(), spec);
            }
            // Nothing on the node: each task's leg hangs off the parent itself.
            (Driver::Macvlan, _) => {}
            (Driver::Overlay, None) => {
                tracing::warn!(network = %net.name, "overlay network without a VNI, skipped");
            }
        }
    }
    let mut sandboxes = BTreeMap::new();
    let mut containers = BTreeMap::new();
    let mut task_files = BTreeMap::new();
    for task in st.tasks.values() {
        if let Some((sb, proc_spec, files)) = local_entries(ctx, st, task) {
            task_files.insert(task.name.clone(), files);
            sandboxes.insert(task.name.clone(), sb);
            containers.insert(task.name.clone(), proc_spec);
        }
    }
    NodePlan {
        gwbridge,
        bridges,
        overlays,
        sandboxes,
        containers,
        task_files,
        firewall,
        mesh,
        dns: dns::plan_dns(st, &ctx.node),
        ipsec: ipsec::plan_ipsec(st, ctx),
        remote,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::model::{Service, TaskAttachment};

    fn ctx() -> NodeContext {
        NodeContext {
            node: "n1".into(),
            run: RunDir::new("/run/rm"),
            advertise_addr: Some("192.168.50.1".parse().unwrap()),
            gwbridge_subnet: "172.18.0.0/16".parse().unwrap(),
            task_path: "/usr/bin:/bin".into(),
        }
    }

    fn state() -> ClusterState {
        let mut st = ClusterState::default();
        st.networks.insert(
            "app".into(),
            Network {
                name: "app".into(),
                id: "aaaa".into(),
                driver: Driver::Overlay,
                subnet: "10.0.1.0/24".parse().unwrap(),
                gateway: "10.0.1.1".parse().unwrap(),
                vni: Some(4096),
                created_at: 0,
                ingress: false,
                parent: None,
                encrypted: false,
            },
        );
        st.networks.insert(
            "local".into(),
            Network {
                name: "local".into(),
                id: "bbbb".into(),
                driver: Driver::Bridge,
                subnet: "10.0.2.0/24".parse().unwrap(),
                gateway: "10.0.2.1".parse().unwrap(),
                vni: None,
                created_at: 0,
                ingress: false,
                parent: None,
                encrypted: false,
            },
        );
        st.services.insert(
            "web".into(),
            Service {
                name: "web".into(),
                id: "s".into(),
                replicas: 2,
                networks: vec!["app".into(), "local".into()],
                env: vec![("PATH".into(), "/opt/bin".into()), ("X".into(), "1".into())],
                command: vec!["routemesh".into(), "whoami".into()],
                created_at: 0,
                updated_at: 0,
                endpoint_mode: Default::default(),
                ports: vec![],
                vips: vec![],
                lb_scheduler: Default::default(),
                image: None,
                user: None,
                limits: Default::default(),
            },
        );
        for (slot, node) in [(1, "n1"), (2, "n2")] {
            let t = Task {
                name: format!("web.{slot}"),
                service: "web".into(),
                slot,
                node: node.into(),
                attachments: vec![
                    TaskAttachment {
                        network: "app".into(),
                        address: format!("10.0.1.{}/24", slot + 1).parse().unwrap(),
                    },
                    TaskAttachment {
                        network: "local".into(),
                        address: format!("10.0.2.{}/24", slot + 1).parse().unwrap(),
                    },
                ],
                gateway_address: format!("172.18.0.{}/16", slot + 1).parse().unwrap(),
                created_at: 0,
                desired: DesiredState::Running,
            };
            st.tasks.insert(t.name.clone(), t);
        }
        st
    }

    #[test]
    fn only_this_nodes_tasks_get_sandboxes() {
        let p = plan(&state(), &ctx());
        assert_eq!(p.sandboxes.keys().collect::<Vec<_>>(), vec!["web.1"]);
        assert_eq!(p.containers.keys().collect::<Vec<_>>(), vec!["web.1"]);
    }

    #[test]
    fn sandbox_interfaces_follow_network_order_then_gateway_leg() {
        let p = plan(&state(), &ctx());
        let sb = &p.sandboxes["web.1"];
        assert_eq!(sb.netns, PathBuf::from("/run/rm/netns/task-web.1"));
        let names: Vec<_> = sb.interfaces.iter().map(|i| i.ifname.as_str()).collect();
        assert_eq!(names, ["eth0", "eth1", "eth2"]);
        let eth0 = &sb.interfaces[0];
        assert_eq!(eth0.address.to_string(), "10.0.1.2/24");
        assert_eq!(eth0.mtu, 1450);
        assert_eq!(eth0.mac.to_string(), "02:42:0a:00:01:02");
        assert_eq!(
            eth0.attach,
            Attachment::Overlay {
                netns: "/run/rm/netns/ov-app".into()
            }
        );
        assert_eq!(
            sb.interfaces[1].attach,
            Attachment::NodeBridge {
                bridge: "rmb-local".into(),
                isolated: false,
            }
        );
        assert_eq!(
            sb.interfaces[2].attach,
            Attachment::NodeBridge {
                bridge: GWBRIDGE.into(),
                isolated: true,
            },
            "tasks on the gateway bridge do not reach each other"
        );
        assert_eq!(sb.default_gateway, Some("172.18.0.1".parse().unwrap()));
        let outer: std::collections::BTreeSet<_> = sb
            .interfaces
            .iter()
            .map(|i| i.outer_ifname.clone())
            .collect();
        assert_eq!(outer.len(), 3);
        assert!(outer.iter().all(|n| n.len() <= 15));
    }

    #[test]
    fn overlay_and_bridge_and_firewall() {
        let p = plan(&state(), &ctx());
        let ov = &p.overlays["app"];
        assert_eq!(
            (ov.vni, ov.mtu, ov.vxlan_ifname.as_str()),
            (4096, 1450, "vxlan4096")
        );
        assert_eq!(ov.gateway.to_string(), "10.0.1.1/24");
        assert_eq!(ov.local_vtep, Some("192.168.50.1".parse().unwrap()));
        assert_eq!(p.bridges["local"].gateway.to_string(), "10.0.2.1/24");
        assert_eq!(p.gwbridge.gateway.to_string(), "172.18.0.1/16");
        let masq: Vec<_> = p
            .firewall
            .masquerade
            .iter()
            .map(|m| (m.subnet.to_string(), m.bridge.clone()))
            .collect();
        assert_eq!(
            masq,
            [
                ("172.18.0.0/16".to_string(), GWBRIDGE.to_string()),
                ("10.0.2.0/24".to_string(), "rmb-local".to_string())
            ]
        );
        let guard = p.firewall.guard.as_ref().unwrap();
        let bridges: Vec<_> = guard
            .bridges
            .iter()
            .map(|b| (b.ifname.as_str(), b.intra))
            .collect();
        assert_eq!(bridges, [(GWBRIDGE, false), ("rmb-local", true)]);
        let private: Vec<_> = guard.private_nets.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            private,
            ["10.0.1.0/24"],
            "overlays only, not bridge networks"
        );
        assert_eq!(guard.vxlan_port, 4789);
    }

    #[test]
    fn process_env_and_files() {
        let p = plan(&state(), &ctx());
        let pr = &p.containers["web.1"];
        assert_eq!(pr.command, ["routemesh", "whoami"]);
        assert_eq!(pr.image, None, "no image: the host's root");
        let env: BTreeMap<_, _> = pr.env.iter().cloned().collect();
        assert_eq!(env["PATH"], "/opt/bin", "service env overrides defaults");
        assert_eq!(env["ROUTEMESH_TASK_NAME"], "web.1");
        assert_eq!(env["X"], "1");
        assert_eq!(pr.hostname, "web.1");
        assert_eq!(pr.netns, PathBuf::from("/run/rm/netns/task-web.1"));
        assert_eq!(
            pr.resolv_conf,
            PathBuf::from("/run/rm/tasks/web.1/resolv.conf")
        );
        assert_eq!(
            pr.dirs.bundle(),
            PathBuf::from("/run/rm/tasks/web.1/bundle")
        );
        assert_eq!(pr.log, PathBuf::from("/run/rm/tasks/web.1/log"));
        let files = &p.task_files["web.1"];
        assert_eq!(
            files.resolv_conf,
            "nameserver 127.0.0.11\noptions ndots:0\n"
        );
        assert!(files.hosts.contains("10.0.1.2\tweb.1"));
    }

    #[test]
    fn remote_tasks_and_node_addresses_get_static_entries() {
        let mut st = state();
        for (name, addr) in [
            ("n1", "192.168.50.1"),
            ("n2", "192.168.50.2"),
            ("n3", "192.168.50.3"),
        ] {
            st.nodes.insert(
                name.into(),
                crate::model::Node {
                    name: name.into(),
                    advertise_addr: Some(addr.parse().unwrap()),
                    state: if name == "n3" {
                        crate::model::NodeState::Down
                    } else {
                        crate::model::NodeState::Ready
                    },
                    api_socket: String::new(),
                    run_dir: String::new(),
                    updated_at: 0,
                    images: vec![],
                },
            );
        }
        st.node_addrs.insert(
            ("app".into(), "n2".into()),
            crate::model::NodeAddress {
                network: "app".into(),
                node: "n2".into(),
                address: "10.0.1.200/24".parse().unwrap(),
            },
        );
        let p = plan(&st, &ctx());
        let ov = &p.overlays["app"];
        // web.2 (10.0.1.3) and n2's own address live on n2; web.1 is local.
        let fdb: Vec<String> = ov.fdb.iter().map(|(m, v)| format!("{m} {v}")).collect();
        assert_eq!(
            fdb,
            [
                "02:42:0a:00:01:03 192.168.50.2",
                "02:42:0a:00:01:c8 192.168.50.2"
            ]
        );
        let neigh: Vec<String> = ov
            .neighbours
            .iter()
            .map(|(i, m)| format!("{i} {m}"))
            .collect();
        assert_eq!(
            neigh,
            ["10.0.1.3 02:42:0a:00:01:03", "10.0.1.200 02:42:0a:00:01:c8"]
        );
        // VXLAN is accepted from the ready nodes only (n3 is down).
        let peers = &p.firewall.guard.as_ref().unwrap().vxlan_peers;
        let peers: Vec<String> = peers.iter().map(|a| a.to_string()).collect();
        assert_eq!(peers, ["192.168.50.1", "192.168.50.2"]);
    }

    #[test]
    fn long_bridge_names_fit_and_differ() {
        let a = bridge_ifname("a-very-long-network-name-1");
        let b = bridge_ifname("a-very-long-network-name-2");
        assert!(a.len() <= 15 && b.len() <= 15);
        assert_ne!(a, b);
        assert_eq!(bridge_ifname("short"), "rmb-short");
    }

    #[test]
    fn tasks_to_shut_down_are_not_planned() {
        let mut st = state();
        if let Some(t) = st.tasks.get_mut("web.1") {
            t.desired = DesiredState::Shutdown;
        }
        let p = plan(&st, &ctx());
        assert!(p.sandboxes.is_empty() && p.containers.is_empty());
    }

    #[test]
    fn a_task_whose_network_vanished_is_not_planned() {
        let mut st = state();
        st.networks.remove("local");
        let p = plan(&st, &ctx());
        assert!(p.sandboxes.is_empty());
        assert!(!p.bridges.contains_key("local"));
    }

    #[test]
    fn a_macvlan_network_gives_legs_on_its_parent_and_nothing_on_the_node() {
        let mut st = state();
        if let Some(n) = st.networks.get_mut("local") {
            n.driver = Driver::Macvlan;
            n.parent = Some("eth1".into());
        }
        let p = plan(&st, &ctx());
        assert!(p.bridges.is_empty(), "no bridge for macvlan");
        assert_eq!(
            p.sandboxes["web.1"].interfaces[1].attach,
            Attachment::Macvlan {
                parent: "eth1".into()
            }
        );
        let guard = p.firewall.guard.as_ref().unwrap();
        assert!(
            !guard
                .private_nets
                .iter()
                .any(|n| n.to_string() == "10.0.2.0/24"),
            "the parent's segment is not private to the mesh"
        );
        assert_eq!(p.firewall.masquerade.len(), 1, "no NAT for macvlan");
    }
}
