//! The kernel as the nodes' plans describe it, for the packet tracer: every namespace with the
//! tables it would hold (rendered exactly as they are sent), its interfaces, addresses and
//! routes, so a packet can be followed from a client through node DNAT, the ingress sandbox
//! and the load balancers to a task, without root and without a kernel.
//!
//! Namespaces are named `NODE` (the node's own), `NODE/ov-NET`, `NODE/ingress_sbox` and
//! `NODE/task-TASK`; segments are `underlay`, `NODE/BRIDGE` and `ov-NET` (an overlay spans
//! every node).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use routemesh_lb::ipvs::{allocate_marks, Marks};
use routemesh_netdev::spec::{Attachment, SandboxSpec};
use routemesh_netdev::{dns_redirect, firewall};
use routemesh_nft::trace::net::{Iface, IpvsDest, Netns};
use routemesh_nft::trace::{Network, Ruleset, TraceError};

use super::apply::lb::{lb_spec, Kind};
use super::plan::mesh::LbPlan;
use super::plan::NodePlan;
use crate::layout::netns_name;

/// Ports the DNS redirect sends queries to in a traced sandbox (the kernel picks them for
/// real; any will do here).
pub const TRACE_DNS_PORTS: (u16, u16) = (40001, 40002);

/// One node as the tracer sees it.
pub struct NodeView<'a> {
    pub node: &'a str,
    pub plan: &'a NodePlan,
    /// The node's address on the underlay, with its prefix.
    pub underlay: Ipv4Net,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("load balancer in {netns}: {source}")]
    Spec {
        netns: String,
        #[source]
        source: routemesh_lb::SpecError,
    },
    #[error("load balancer in {netns}: {source}")]
    Marks {
        netns: String,
        #[source]
        source: routemesh_lb::ipvs::MarksExhausted,
    },
    #[error("tables of {netns} do not parse: {source}")]
    Parse {
        netns: String,
        #[source]
        source: TraceError,
    },
}

/// The segment name an underlay interface is on.
pub const UNDERLAY: &str = "underlay";

/// Every namespace of `nodes`, with the load balancers `kind` programs.
pub fn network(nodes: &[NodeView<'_>], kind: Kind) -> Result<Network, ModelError> {
    let mut net = Network::new();
    for view in nodes {
        add_node(&mut net, view, kind)?;
    }
    Ok(net)
}

fn add_node(net: &mut Network, view: &NodeView<'_>, kind: Kind) -> Result<(), ModelError> {
    let node = view.node;
    let plan = view.plan;
    let node_rules = parse(node, &[firewall::table(&plan.firewall).full_sync_script()])?;
    let ns = net.add(node, node, node_rules);
    ns.forwarding = true;
    ns.ifaces.push(iface("eth0", vec![view.underlay], UNDERLAY));
    let gw = &plan.gwbridge;
    ns.ifaces.push(iface(
        &gw.ifname,
        vec![gw.gateway],
        &format!("{node}/{}", gw.ifname),
    ));
    for bridge in plan.bridges.values() {
        ns.ifaces.push(iface(
            &bridge.ifname,
            vec![bridge.gateway],
            &format!("{node}/{}", bridge.ifname),
        ));
    }

    for spec in plan.overlays.values() {
        let name = netns_name(&spec.netns);
        let id = format!("{node}/{name}");
        let lb = plan.mesh.lbs.get(&name);
        let (rules, ipvs) = lb_tables(&id, lb, kind)?;
        let ns = net.add(&id, node, rules);
        ns.forwarding = true;
        ns.ipvs = ipvs;
        let mut addrs = vec![spec.gateway];
        addrs.extend(spec.addresses.iter().copied());
        // VIPs are local routes through br0: local like addresses, for the tracer.
        addrs.extend(spec.vips.iter().map(|v| Ipv4Net::from(*v)));
        ns.ifaces.push(iface("br0", addrs, &name));
    }

    if let Some(sbox) = &plan.mesh.ingress_sbox {
        let id = format!("{node}/{}", crate::layout::INGRESS_SBOX);
        let lb = plan.mesh.lbs.get(crate::layout::INGRESS_SBOX);
        let (rules, ipvs) = lb_tables(&id, lb, kind)?;
        let ns = net.add(&id, node, rules);
        ns.forwarding = true;
        ns.ipvs = ipvs;
        sandbox_ifaces(ns, node, sbox);
    }

    let (udp, tcp) = TRACE_DNS_PORTS;
    let dns = dns_redirect::table(udp, tcp).full_sync_script();
    for sbox in plan.sandboxes.values() {
        let id = format!("{node}/{}", netns_name(&sbox.netns));
        let rules = parse(&id, std::slice::from_ref(&dns))?;
        let ns = net.add(&id, node, rules);
        sandbox_ifaces(ns, node, sbox);
    }
    Ok(())
}

fn iface(name: &str, addrs: Vec<Ipv4Net>, segment: &str) -> Iface {
    Iface {
        name: name.to_string(),
        addrs,
        segment: segment.to_string(),
    }
}

fn sandbox_ifaces(ns: &mut Netns, node: &str, spec: &SandboxSpec) {
    for i in &spec.interfaces {
        let segment = match &i.attach {
            Attachment::Overlay { netns } => netns_name(netns),
            Attachment::NodeBridge { bridge, .. } => format!("{node}/{bridge}"),
            Attachment::Macvlan { parent } => format!("{node}/{parent}"),
        };
        ns.ifaces.push(iface(&i.ifname, vec![i.address], &segment));
    }
    ns.default_via = spec.default_gateway;
}

type Tables = (Ruleset, std::collections::BTreeMap<u32, Vec<IpvsDest>>);

/// The load-balancing tables of one namespace (and its IPVS services with that dataplane).
fn lb_tables(id: &str, lb: Option<&LbPlan>, kind: Kind) -> Result<Tables, ModelError> {
    let Some(lb) = lb else {
        return Ok((Ruleset::default(), Default::default()));
    };
    let spec = lb_spec(lb).validate().map_err(|source| ModelError::Spec {
        netns: id.to_string(),
        source,
    })?;
    match kind {
        Kind::Nftables => {
            let script = routemesh_lb::plan(&spec).full_sync_script();
            Ok((parse(id, &[script])?, Default::default()))
        }
        Kind::Ipvs(_) => {
            let frontends = spec.services().iter().map(|s| s.frontend);
            let marks =
                allocate_marks(&Marks::new(), frontends).map_err(|source| ModelError::Marks {
                    netns: id.to_string(),
                    source,
                })?;
            let (table, state) =
                routemesh_lb::ipvs::desired(routemesh_lb::ipvs::DEFAULT_TABLE, &spec, &marks);
            let ipvs = state
                .into_iter()
                .map(|(mark, service)| {
                    let dests = service
                        .destinations
                        .iter()
                        .filter_map(|(sock, d)| match sock.ip() {
                            std::net::IpAddr::V4(addr) => Some(IpvsDest {
                                addr,
                                port: sock.port(),
                                weight: d.weight,
                            }),
                            std::net::IpAddr::V6(_) => None,
                        })
                        .collect();
                    (mark, dests)
                })
                .collect();
            Ok((parse(id, &[table.full_sync_script()])?, ipvs))
        }
    }
}

#[cfg(test)]
#[path = "trace_tests.rs"]
mod tests;

fn parse(id: &str, scripts: &[String]) -> Result<Ruleset, ModelError> {
    let mut rules = Ruleset::default();
    for script in scripts {
        rules.apply(script).map_err(|source| ModelError::Parse {
            netns: id.to_string(),
            source,
        })?;
    }
    Ok(rules)
}

/// The address of `task`'s interface `ifname` in a plan (tests pick their sources with it).
pub fn task_addr(plan: &NodePlan, task: &str, ifname: &str) -> Option<Ipv4Addr> {
    plan.sandboxes
        .get(task)?
        .interfaces
        .iter()
        .find(|i| i.ifname == ifname)
        .map(|i| i.address.addr())
}
