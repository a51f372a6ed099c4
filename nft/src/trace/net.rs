//! Following a packet across namespaces: each namespace has its rendered rules, interfaces
//! with addresses on named L2 segments, a default route, and optionally IPVS fwmark services.
//! A packet is routed by those addresses from hook to hook and namespace to namespace until
//! it is delivered to a local address, dropped, rejected, or has nowhere to go. Where `numgen`
//! or IPVS may pick among several backends, the walk follows every pick and reports each.
//!
//! What it models: the netfilter hooks and NAT per namespace (each namespace has its own
//! conntrack), routing by connected subnets and a default gateway, masquerade to the outgoing
//! interface's first address, IPVS at local-in for marked packets. What it does not: ARP,
//! MTU, reverse-path filtering, bridge netfilter, replies.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use routemesh_types::Proto;

use super::eval::{Ctx, Env, LocalAddrs, Locality, Walk};
use super::parse::HookName;
use super::{RejectKind, Ruleset, SourceNat, TraceError, Verdict};

/// How many namespaces a packet may cross before the walk calls it a loop.
const MAX_HOPS: usize = 16;

/// One interface of a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    /// The first is the address masquerade picks.
    pub addrs: Vec<Ipv4Net>,
    /// The L2 segment it is plugged into (a bridge, an overlay, a veth pair).
    pub segment: String,
}

/// One IPVS destination: a backend address, its port (0: the packet's own) and weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpvsDest {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub weight: u32,
}

#[derive(Debug, Clone, Default)]
pub struct Netns {
    /// Namespaces on the same node are preferred when two own an address on one segment
    /// (every node's overlay bridge holds the same gateway and VIPs).
    pub node: String,
    pub ruleset: Ruleset,
    pub ifaces: Vec<Iface>,
    pub default_via: Option<Ipv4Addr>,
    pub forwarding: bool,
    /// IPVS fwmark services: mark -> destinations.
    pub ipvs: BTreeMap<u32, Vec<IpvsDest>>,
}

impl LocalAddrs for Netns {
    fn is_local(&self, addr: Ipv4Addr) -> bool {
        addr.is_loopback()
            || self
                .ifaces
                .iter()
                .any(|i| i.addrs.iter().any(|a| a.addr() == addr))
    }
}

impl Netns {
    fn env<'a>(&'a self, iif: Option<&'a str>, oif: Option<&'a str>) -> Env<'a> {
        Env {
            local: Locality::Addrs(self),
            iif,
            oif,
        }
    }

    /// The interface and next hop for `daddr`, or `None` when it is local or unroutable.
    fn route(&self, daddr: Ipv4Addr) -> Option<(&Iface, Ipv4Addr)> {
        let connected = |dst: Ipv4Addr| {
            self.ifaces
                .iter()
                .flat_map(|i| i.addrs.iter().map(move |a| (i, a)))
                .filter(|(_, a)| a.prefix_len() < 32 && a.trunc().contains(&dst))
                .max_by_key(|(_, a)| a.prefix_len())
                .map(|(i, _)| i)
        };
        if let Some(iface) = connected(daddr) {
            return Some((iface, daddr));
        }
        let gw = self.default_via?;
        connected(gw).map(|iface| (iface, gw))
    }
}

/// A packet a process sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: Proto,
    pub dport: u16,
}

/// What happened in one namespace on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub ns: String,
    /// Base and regular chains entered, in order.
    pub chains: Vec<String>,
    /// Destination NAT here: the target picked on this branch.
    pub dnat: Option<(Ipv4Addr, u16)>,
    /// Source NAT here: the new source address.
    pub snat: Option<Ipv4Addr>,
    /// The IPVS fwmark service that forwarded the packet here.
    pub ipvs: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Reached a local address of this namespace (a process there would accept it).
    Delivered(String),
    Dropped(String),
    Rejected(String, RejectKind),
    /// No route, or no namespace owns the next hop.
    Unroutable(String),
}

/// One way the packet can go.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub end: End,
    pub hops: Vec<Hop>,
    /// The packet as it arrives at the end.
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub dport: u16,
    /// The share of new connections that take this way (numgen slots, IPVS weights).
    pub share: f64,
}

impl Delivery {
    /// The namespace the packet was delivered to, if it was.
    pub fn delivered_to(&self) -> Option<&str> {
        match &self.end {
            End::Delivered(ns) => Some(ns),
            _ => None,
        }
    }
}

/// Namespaces by name.
#[derive(Debug, Clone, Default)]
pub struct Network {
    pub namespaces: BTreeMap<String, Netns>,
}

/// The packet between namespaces.
#[derive(Debug, Clone)]
struct InFlight {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: Proto,
    dport: u16,
    hops: Vec<Hop>,
    share: f64,
}

impl Network {
    pub fn new() -> Network {
        Network::default()
    }

    /// Adds (or replaces) a namespace.
    pub fn add(&mut self, name: &str, node: &str, ruleset: Ruleset) -> &mut Netns {
        let ns = Netns {
            node: node.to_string(),
            ruleset,
            ..Netns::default()
        };
        let slot = self.namespaces.entry(name.to_string()).or_default();
        *slot = ns;
        slot
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Netns> {
        self.namespaces.get_mut(name)
    }

    /// Follows a packet a process in `from` sends: the output hook, routing, postrouting,
    /// then namespace after namespace.
    pub fn send(&self, from: &str, flow: Flow) -> Result<Vec<Delivery>, TraceError> {
        let ns = self.ns(from)?;
        let packet = InFlight {
            src: flow.src,
            dst: flow.dst,
            proto: flow.proto,
            dport: flow.dport,
            hops: Vec::new(),
            share: 1.0,
        };
        let mut out = Vec::new();
        self.originate(
            from,
            ns,
            packet,
            Ctx::new(flow.src, flow.dst, flow.proto, flow.dport),
            &mut out,
        )?;
        Ok(out)
    }

    fn ns(&self, name: &str) -> Result<&Netns, TraceError> {
        self.namespaces
            .get(name)
            .ok_or_else(|| TraceError::Eval(format!("no namespace {name:?} in the network")))
    }

    /// Runs the first hook a packet meets in `name`: `None` when it ended there (recorded in
    /// `out`), else one walk per DNAT pick, each with its packet and share.
    #[allow(clippy::too_many_arguments)]
    fn first_hook<'r>(
        &self,
        name: &str,
        ns: &'r Netns,
        hook: HookName,
        ctx: Ctx,
        env: &Env<'_>,
        packet: &InFlight,
        out: &mut Vec<Delivery>,
    ) -> Result<Option<Vec<(Walk<'r>, InFlight)>>, TraceError> {
        let mut walk = Walk::new(&ns.ruleset, ctx);
        if let Some(end) = final_end(name, walk.hook(hook, env)?) {
            out.push(finish(packet.clone(), walk_hop(name, &walk, None), end));
            return Ok(None);
        }
        Ok(Some(
            branches(&walk)
                .into_iter()
                .map(|(share, ctx)| {
                    let mut packet = packet.clone();
                    packet.share *= share;
                    (walk.clone_with(ctx), packet)
                })
                .collect(),
        ))
    }

    /// The output path of a locally generated (or IPVS-forwarded) packet, from `ctx`.
    fn originate(
        &self,
        name: &str,
        ns: &Netns,
        packet: InFlight,
        ctx: Ctx,
        out: &mut Vec<Delivery>,
    ) -> Result<(), TraceError> {
        let oif = ns.route(ctx.daddr).map(|(i, _)| i.name.clone());
        let env = ns.env(None, oif.as_deref());
        let Some(branches) =
            self.first_hook(name, ns, HookName::Output, ctx, &env, &packet, out)?
        else {
            return Ok(());
        };
        for (mut branch, packet) in branches {
            if !ns.is_local(branch.ctx.daddr) {
                self.leave(name, ns, &mut branch, packet, None, out)?;
                continue;
            }
            // To a local address: postrouting on the loopback, then input.
            let lo_env = ns.env(Some("lo"), Some("lo"));
            let end = match final_end(name, branch.hook(HookName::Postrouting, &lo_env)?) {
                Some(end) => end,
                None => final_end(name, branch.hook(HookName::Input, &lo_env)?)
                    .unwrap_or_else(|| End::Delivered(name.to_string())),
            };
            out.push(arrived(packet, name, &branch, end));
        }
        Ok(())
    }

    /// A packet arriving in `name` on `iif`: prerouting, then local delivery (and IPVS) or
    /// forwarding.
    fn arrive(
        &self,
        name: &str,
        iif: &str,
        packet: InFlight,
        out: &mut Vec<Delivery>,
    ) -> Result<(), TraceError> {
        let ns = self.ns(name)?;
        if packet.hops.len() >= MAX_HOPS {
            return Err(TraceError::Eval(format!(
                "the packet crossed {MAX_HOPS} namespaces: a loop through {name}"
            )));
        }
        let ctx = Ctx::new(packet.src, packet.dst, packet.proto, packet.dport);
        let env = ns.env(Some(iif), None);
        let Some(branches) =
            self.first_hook(name, ns, HookName::Prerouting, ctx, &env, &packet, out)?
        else {
            return Ok(());
        };
        for (mut branch, packet) in branches {
            if ns.is_local(branch.ctx.daddr) {
                if let Some(end) = final_end(name, branch.hook(HookName::Input, &env)?) {
                    out.push(finish(packet, walk_hop(name, &branch, None), end));
                    continue;
                }
                let mark = branch.ctx.mark;
                match ns.ipvs.get(&mark).filter(|_| mark != 0) {
                    Some(dests) => self.ipvs(name, ns, &branch, dests, packet, out)?,
                    None => out.push(arrived(
                        packet,
                        name,
                        &branch,
                        End::Delivered(name.to_string()),
                    )),
                }
                continue;
            }
            if !ns.forwarding {
                let hop = walk_hop(name, &branch, None);
                out.push(finish(packet, hop, End::Dropped(name.to_string())));
                continue;
            }
            let oif = ns.route(branch.ctx.daddr).map(|(i, _)| i.name.clone());
            let fwd_env = ns.env(Some(iif), oif.as_deref());
            if let Some(end) = final_end(name, branch.hook(HookName::Forward, &fwd_env)?) {
                out.push(finish(packet, walk_hop(name, &branch, None), end));
                continue;
            }
            self.leave(name, ns, &mut branch, packet, Some(iif), out)?;
        }
        Ok(())
    }

    /// IPVS at local-in: each destination with a weight takes its share; the packet then
    /// leaves as if sent from here (output, postrouting).
    fn ipvs(
        &self,
        name: &str,
        ns: &Netns,
        walk: &Walk<'_>,
        dests: &[IpvsDest],
        packet: InFlight,
        out: &mut Vec<Delivery>,
    ) -> Result<(), TraceError> {
        let total: u32 = dests.iter().map(|d| d.weight).sum();
        if total == 0 {
            let hop = walk_hop(name, walk, Some(walk.ctx.mark));
            out.push(finish(packet, hop, End::Dropped(name.to_string())));
            return Ok(());
        }
        for dest in dests.iter().filter(|d| d.weight > 0) {
            let mut packet = packet.clone();
            packet.share *= f64::from(dest.weight) / f64::from(total);
            let mut hop = walk_hop(name, walk, Some(walk.ctx.mark));
            let port = if dest.port == 0 {
                walk.ctx.dport
            } else {
                dest.port
            };
            hop.dnat = Some((dest.addr, port));
            packet.hops.push(hop);
            let mut ctx = walk.ctx.clone();
            ctx.daddr = dest.addr;
            ctx.dport = port;
            ctx.dnat = None;
            // Its conntrack entry belongs to IPVS: the nat chains see it as not DNATed.
            self.originate(name, ns, packet, ctx, out)?;
        }
        Ok(())
    }

    /// Routing, postrouting and the hop to the next namespace.
    fn leave(
        &self,
        name: &str,
        ns: &Netns,
        walk: &mut Walk<'_>,
        mut packet: InFlight,
        iif: Option<&str>,
        out: &mut Vec<Delivery>,
    ) -> Result<(), TraceError> {
        let Some((oif, next_hop)) = ns.route(walk.ctx.daddr) else {
            let hop = walk_hop(name, walk, None);
            out.push(finish(packet, hop, End::Unroutable(name.to_string())));
            return Ok(());
        };
        let env = ns.env(iif, Some(&oif.name));
        if let Some(end) = final_end(name, walk.hook(HookName::Postrouting, &env)?) {
            out.push(finish(packet, walk_hop(name, walk, None), end));
            return Ok(());
        }
        let mut hop = walk_hop(name, walk, None);
        match walk.snat {
            Some(SourceNat::To(addr)) => hop.snat = Some(addr),
            Some(SourceNat::Masquerade) => {
                let addr = oif.addrs.first().map(|a| a.addr()).ok_or_else(|| {
                    TraceError::Eval(format!("masquerade out of {} without an address", oif.name))
                })?;
                hop.snat = Some(addr);
            }
            None => {}
        }
        packet.src = hop.snat.unwrap_or(walk.ctx.saddr);
        packet.dst = walk.ctx.daddr;
        packet.dport = walk.ctx.dport;
        packet.hops.push(hop);
        match self.owner(ns, &oif.segment, next_hop, name) {
            Some((next, next_iif)) => self.arrive(next, next_iif, packet, out),
            None => {
                out.push(packet.end(End::Unroutable(name.to_string())));
                Ok(())
            }
        }
    }

    /// The namespace (and its interface) that owns `addr` on `segment`, preferring one on the
    /// same node as `from`.
    fn owner(
        &self,
        from: &Netns,
        segment: &str,
        addr: Ipv4Addr,
        from_name: &str,
    ) -> Option<(&str, &str)> {
        let mut found: Option<(&str, &str, bool)> = None;
        for (name, ns) in &self.namespaces {
            if name == from_name {
                continue;
            }
            for iface in &ns.ifaces {
                if iface.segment == segment && iface.addrs.iter().any(|a| a.addr() == addr) {
                    let same_node = ns.node == from.node;
                    if found.is_none_or(|(_, _, best)| same_node && !best) {
                        found = Some((name, &iface.name, same_node));
                    }
                }
            }
        }
        found.map(|(name, iface, _)| (name, iface))
    }
}

/// Each DNAT target the walk picked (with its share), or the packet unchanged.
fn branches(walk: &Walk<'_>) -> Vec<(f64, Ctx)> {
    match &walk.ctx.dnat {
        Some((targets, slots)) => targets
            .iter()
            .map(|t| {
                let mut ctx = walk.ctx.clone();
                ctx.daddr = t.addr;
                ctx.dport = t.port;
                (f64::from(t.slots) / f64::from(*slots), ctx)
            })
            .collect(),
        None => vec![(1.0, walk.ctx.clone())],
    }
}

fn walk_hop(name: &str, walk: &Walk<'_>, ipvs: Option<u32>) -> Hop {
    Hop {
        ns: name.to_string(),
        chains: walk.chains.clone(),
        dnat: walk
            .ctx
            .dnat
            .as_ref()
            .map(|_| (walk.ctx.daddr, walk.ctx.dport)),
        snat: None,
        ipvs,
    }
}

fn final_end(name: &str, verdict: Option<Verdict>) -> Option<End> {
    match verdict? {
        Verdict::Drop => Some(End::Dropped(name.to_string())),
        Verdict::Reject(kind) => Some(End::Rejected(name.to_string(), kind)),
        Verdict::Accept | Verdict::Dnat { .. } => None,
    }
}

/// The packet ends in `name` at the destination the walk gave it.
fn arrived(mut packet: InFlight, name: &str, walk: &Walk<'_>, end: End) -> Delivery {
    packet.dst = walk.ctx.daddr;
    packet.dport = walk.ctx.dport;
    finish(packet, walk_hop(name, walk, None), end)
}

fn finish(mut packet: InFlight, hop: Hop, end: End) -> Delivery {
    packet.hops.push(hop);
    packet.end(end)
}

impl InFlight {
    fn end(self, end: End) -> Delivery {
        Delivery {
            end,
            hops: self.hops,
            src: self.src,
            dst: self.dst,
            dport: self.dport,
            share: self.share,
        }
    }
}
