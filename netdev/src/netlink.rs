//! An rtnetlink handle bound to one network namespace, with the link, address, route, fdb and
//! neighbour primitives the drivers need. Every error names the object and the namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
    MacVlanMode,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::AddressFamily;
use nix::errno::Errno;
use rtnetlink::{
    AddressMessageBuilder, Handle, LinkBridge, LinkBridgePort, LinkMacVlan, LinkMessageBuilder,
    LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
};

use crate::error::{netlink_errno, Error, Result};
use crate::netns;
use crate::spec::Mac;

/// The IANA VXLAN port; every overlay uses it.
pub const VXLAN_PORT: u16 = 4789;

/// The kernel's `local` routing table (local and broadcast routes of our own addresses).
const RT_TABLE_LOCAL: u32 = 255;

/// What the drivers need to know about one link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkSummary {
    pub name: String,
    pub index: u32,
    /// `bridge`, `veth`, `vxlan`, ... (None for physical devices and `lo`).
    pub kind: Option<String>,
    /// Index of the bridge this link is enslaved to.
    pub master: Option<u32>,
    pub mtu: u32,
    pub up: bool,
    pub mac: Option<Mac>,
    /// VNI, for VXLAN devices.
    pub vni: Option<u32>,
}

/// An rtnetlink connection opened inside one namespace.
pub struct Netlink {
    handle: Handle,
    label: String,
}

impl Netlink {
    /// A connection in the calling process's namespace, driven on the current tokio runtime.
    pub fn current() -> Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| Error::io("opening netlink socket in", "current netns", e))?;
        tokio::spawn(conn);
        Ok(Netlink {
            handle,
            label: "current netns".into(),
        })
    }

    /// A connection whose socket was opened inside `netns` (a netlink socket belongs to the
    /// namespace it was created in), driven on the caller's tokio runtime.
    pub async fn open(netns: &Path) -> Result<Netlink> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::io("opening netlink socket in", netns, std::io::Error::other(e)))?;
        let path = netns.to_path_buf();
        let (conn, handle) = netns::run_in(netns, move || {
            let _entered = runtime.enter();
            rtnetlink::new_connection()
                .map(|(conn, handle, _)| (conn, handle))
                .map_err(|e| Error::io("opening netlink socket in", &path, e))
        })??;
        tokio::spawn(conn);
        Ok(Netlink {
            handle,
            label: netns.display().to_string(),
        })
    }

    /// Which namespace this handle talks to, for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    fn err(&self, op: &str, object: impl std::fmt::Display, e: rtnetlink::Error) -> Error {
        Error::netlink(op, format!("{object} in {}", self.label), e)
    }

    // ---- links ----

    pub async fn link(&self, name: &str) -> Result<Option<LinkSummary>> {
        let found = self
            .handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await;
        match found {
            Ok(msg) => Ok(msg.map(|m| summarize(&m))),
            Err(e) if netlink_errno(&e) == Some(Errno::ENODEV) => Ok(None),
            Err(e) => Err(self.err("looking up", format!("link {name}"), e)),
        }
    }

    pub async fn link_index(&self, name: &str) -> Result<Option<u32>> {
        Ok(self.link(name).await?.map(|l| l.index))
    }

    /// The link, or an error saying it is missing.
    pub async fn require_link(&self, name: &str) -> Result<LinkSummary> {
        self.link(name).await?.ok_or_else(|| Error::Conflict {
            object: format!("link {name} in {}", self.label),
            detail: "does not exist".into(),
        })
    }

    pub async fn links(&self) -> Result<Vec<LinkSummary>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.err("listing", "links", e))?;
        Ok(msgs.iter().map(summarize).collect())
    }

    pub async fn add_bridge(&self, name: &str, mtu: u32) -> Result<()> {
        let msg = LinkBridge::new(name).mtu(mtu).build();
        self.add(format!("bridge {name}"), msg).await
    }

    /// A veth pair: `name` here, its peer `peer` made directly in the namespace `peer_netns`
    /// with the MAC `peer_mac`. No temporary name and no move: moving a link to another
    /// namespace waits for the kernel's RCU grace periods (30-40 ms each on a 2-core
    /// machine), creating it there does not.
    pub async fn add_veth(
        &self,
        name: &str,
        peer: &str,
        peer_netns: &Path,
        peer_mac: Mac,
        mtu: u32,
    ) -> Result<()> {
        let ns = netns::open(peer_netns)?;
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .mtu(mtu)
            .address(peer_mac.0.to_vec())
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let msg = LinkVeth::new(name, peer)
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        let object = format!("veth {name} (peer {peer} in {})", peer_netns.display());
        self.add(object, msg).await
    }

    /// A macvlan device `name` in mode bridge on `parent` (a link here), made directly in the
    /// namespace `netns` with the MAC `mac`: one request, no temporary name and no move (a move
    /// waits for the kernel's RCU grace periods, as for veth peers).
    pub async fn add_macvlan(
        &self,
        name: &str,
        parent: &LinkSummary,
        netns: &Path,
        mac: Mac,
        mtu: u32,
    ) -> Result<()> {
        let ns = netns::open(netns)?;
        let msg = LinkMacVlan::new(name, parent.index, MacVlanMode::Bridge)
            .mtu(mtu)
            .address(mac.0.to_vec())
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let object = format!(
            "macvlan {name} (parent {}, in {})",
            parent.name,
            netns.display()
        );
        self.add(object, msg).await
    }

    /// A VXLAN device with static forwarding only (no learning), proxy ARP from the device's
    /// neighbour table, on the standard port, made directly in the namespace `netns`. Its UDP
    /// socket stays in this (the requesting) namespace, the underlay, as it would after a move;
    /// creating it in place skips the move's RCU grace periods and a temporary name.
    pub async fn add_vxlan(
        &self,
        name: &str,
        vni: u32,
        local: Option<Ipv4Addr>,
        netns: &Path,
        mtu: u32,
    ) -> Result<()> {
        let ns = netns::open(netns)?;
        let mut builder = LinkVxlan::new(name, vni)
            .port(VXLAN_PORT)
            .learning(false)
            .proxy(true)
            .mtu(mtu)
            .setns_by_fd(ns.as_raw_fd());
        if let Some(local) = local {
            builder = builder.local(local);
        }
        let object = format!("vxlan {name} (vni {vni}, in {})", netns.display());
        self.add(object, builder.build()).await
    }

    /// Creates the link `msg` describes; `object` names it in the error.
    async fn add(&self, object: String, msg: LinkMessage) -> Result<()> {
        let r = self.handle.link().add(msg).execute().await;
        r.map_err(|e| self.err("creating", object, e))
    }

    async fn change(&self, op: &str, object: String, msg: LinkMessage) -> Result<()> {
        let r = self.handle.link().change(msg).execute().await;
        r.map_err(|e| self.err(op, object, e))
    }

    pub async fn set_up(&self, link: &LinkSummary) -> Result<()> {
        let msg = LinkUnspec::new_with_index(link.index).up().build();
        self.change("setting up", format!("link {}", link.name), msg)
            .await
    }

    pub async fn set_mtu(&self, link: &LinkSummary, mtu: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(link.index).mtu(mtu).build();
        self.change("setting mtu of", format!("link {}", link.name), msg)
            .await
    }

    pub async fn set_mac(&self, link: &LinkSummary, mac: Mac) -> Result<()> {
        let msg = LinkUnspec::new_with_index(link.index)
            .address(mac.0.to_vec())
            .build();
        let object = format!("mac {mac} of link {}", link.name);
        self.change("setting", object, msg).await
    }

    pub async fn set_master(&self, link: &LinkSummary, bridge: &LinkSummary) -> Result<()> {
        let msg = LinkUnspec::new_with_index(link.index)
            .controller(bridge.index)
            .build();
        let object = format!("link {} to bridge {}", link.name, bridge.name);
        self.change("enslaving", object, msg).await
    }

    /// Isolates bridge port `link` (IFLA_BRPORT_ISOLATED): the bridge forwards nothing between
    /// it and other isolated ports.
    pub async fn set_port_isolated(&self, link: &LinkSummary, bridge: &LinkSummary) -> Result<()> {
        let msg = LinkBridgePort::new(link.index)
            .append_info_data(InfoBridgePort::Isolated(true))
            .build();
        let r = self.handle.link().set_port(msg).execute().await;
        let object = format!("port {} of bridge {}", link.name, bridge.name);
        r.map_err(|e| self.err("isolating", object, e))
    }

    /// Deletes link `name`; Ok(false) if it did not exist.
    pub async fn delete_link(&self, name: &str) -> Result<bool> {
        let Some(link) = self.link(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if netlink_errno(&e) == Some(Errno::ENODEV) => Ok(false),
            Err(e) => Err(self.err("deleting", format!("link {name}"), e)),
        }
    }

    // ---- addresses and routes ----

    /// IPv4 addresses as (link index, address with prefix).
    pub async fn ipv4_addrs(&self) -> Result<Vec<(u32, Ipv4Net)>> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.err("listing", "addresses", e))?;
        let mut out = Vec::new();
        for msg in msgs {
            let ip = msg.attributes.iter().find_map(|a| match a {
                netlink_packet_route::address::AddressAttribute::Address(IpAddr::V4(ip)) => {
                    Some(*ip)
                }
                _ => None,
            });
            if let Some(net) = ip.and_then(|ip| Ipv4Net::new(ip, msg.header.prefix_len).ok()) {
                out.push((msg.header.index, net));
            }
        }
        Ok(out)
    }

    pub async fn ipv4_addrs_of(&self, link: &LinkSummary) -> Result<Vec<Ipv4Net>> {
        let all = self.ipv4_addrs().await?;
        Ok(all
            .into_iter()
            .filter(|(i, _)| *i == link.index)
            .map(|(_, n)| n)
            .collect())
    }

    pub async fn add_ipv4_addr(&self, link: &LinkSummary, addr: Ipv4Net) -> Result<()> {
        let r = self
            .handle
            .address()
            .add(link.index, addr.addr().into(), addr.prefix_len())
            .execute()
            .await;
        r.map_err(|e| self.err("adding", format!("address {addr} on {}", link.name), e))
    }

    pub async fn delete_ipv4_addr(&self, link: &LinkSummary, addr: Ipv4Net) -> Result<()> {
        let msg = AddressMessageBuilder::<Ipv4Addr>::new()
            .index(link.index)
            .address(addr.addr(), addr.prefix_len())
            .build();
        let r = self.handle.address().del(msg).execute().await;
        r.map_err(|e| self.err("deleting", format!("address {addr} on {}", link.name), e))
    }

    /// Makes `addr` the only IPv4 address on `link` (adds it, deletes any other).
    pub async fn set_only_ipv4_addr(&self, link: &LinkSummary, addr: Ipv4Net) -> Result<()> {
        self.set_exact_ipv4_addrs(link, &[addr]).await
    }

    /// Gives `link` exactly `addrs`, in order (the first becomes the primary address):
    /// addresses already there are left alone, others removed, missing ones added.
    pub async fn set_exact_ipv4_addrs(&self, link: &LinkSummary, addrs: &[Ipv4Net]) -> Result<()> {
        let have = self.ipv4_addrs_of(link).await?;
        // Sets: an overlay's br0 holds one address per VIP, thousands of them.
        let want: std::collections::HashSet<&Ipv4Net> = addrs.iter().collect();
        let had: std::collections::HashSet<&Ipv4Net> = have.iter().collect();
        for other in have.iter().filter(|a| !want.contains(a)) {
            self.delete_ipv4_addr(link, *other).await?;
        }
        for addr in addrs.iter().filter(|a| !had.contains(a)) {
            self.add_ipv4_addr(link, *addr).await?;
        }
        Ok(())
    }

    // ---- local routes (addresses a namespace answers without holding them) ----

    /// The host addresses routemesh made local through `link`: routes of type `local` in the
    /// `local` table with protocol `static`, as `ip route add local A dev L table local proto
    /// static` makes them. The kernel's own local routes (for addresses) are protocol
    /// `kernel` and not listed.
    pub async fn local_routes_of(&self, link: &LinkSummary) -> Result<Vec<Ipv4Addr>> {
        let msgs = self.ipv4_route_messages().await?;
        Ok(msgs
            .iter()
            .filter(|m| route_table(m) == RT_TABLE_LOCAL)
            .filter(|m| m.header.kind == RouteType::Local)
            .filter(|m| m.header.protocol == RouteProtocol::Static)
            .filter(|m| m.header.destination_prefix_length == 32)
            .filter(|m| route_oif(m) == Some(link.index))
            .filter_map(route_destination)
            .map(|n| n.addr())
            .collect())
    }

    fn local_route(link: &LinkSummary, addr: Ipv4Addr) -> RouteMessage {
        RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(addr, 32)
            .output_interface(link.index)
            .table_id(RT_TABLE_LOCAL)
            .kind(RouteType::Local)
            .scope(RouteScope::Host)
            .protocol(RouteProtocol::Static)
            .build()
    }

    /// Makes `addr` local through `link` (a VIP): the namespace delivers packets for it and
    /// answers ARP for it on any interface, as for an address, but the kernel inserts the
    /// route in O(log n), where every further address on one device walks all the others.
    /// Ok if the route is there already.
    pub async fn add_local_route(&self, link: &LinkSummary, addr: Ipv4Addr) -> Result<()> {
        let msg = Self::local_route(link, addr);
        match self.handle.route().add(msg).execute().await {
            Err(e) if netlink_errno(&e) != Some(Errno::EEXIST) => {
                Err(self.err("adding", format!("local route {addr} dev {}", link.name), e))
            }
            _ => Ok(()),
        }
    }

    /// Deletes the local route `addr` through `link`; Ok if there is none.
    pub async fn delete_local_route(&self, link: &LinkSummary, addr: Ipv4Addr) -> Result<()> {
        let msg = Self::local_route(link, addr);
        match self.handle.route().del(msg).execute().await {
            Err(e) if netlink_errno(&e) != Some(Errno::ESRCH) => Err(self.err(
                "deleting",
                format!("local route {addr} dev {}", link.name),
                e,
            )),
            _ => Ok(()),
        }
    }

    async fn ipv4_route_messages(&self) -> Result<Vec<RouteMessage>> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        self.handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.err("listing", "routes", e))
    }

    /// Destinations of every IPv4 route in every table, except local and broadcast routes.
    pub async fn ipv4_routes(&self) -> Result<Vec<Ipv4Net>> {
        let msgs = self.ipv4_route_messages().await?;
        Ok(msgs
            .iter()
            .filter(|m| route_table(m) != RT_TABLE_LOCAL)
            .filter(|m| !matches!(m.header.kind, RouteType::Local | RouteType::Broadcast))
            .filter_map(route_destination)
            .collect())
    }

    /// The gateway of the main table's IPv4 default route, if there is one.
    pub async fn default_gateway(&self) -> Result<Option<Ipv4Addr>> {
        let msgs = self.ipv4_route_messages().await?;
        Ok(msgs
            .iter()
            .filter(|m| route_table(m) == u32::from(RouteHeader::RT_TABLE_MAIN))
            .filter(|m| m.header.destination_prefix_length == 0)
            .find_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(RouteAddress::Inet(gw)) => Some(*gw),
                    _ => None,
                })
            }))
    }

    pub async fn replace_default_route(&self, gateway: Ipv4Addr) -> Result<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .build();
        let r = self.handle.route().add(msg).replace().execute().await;
        r.map_err(|e| self.err("setting", format!("default route via {gateway}"), e))
    }

    /// Deletes the main table's IPv4 default route; Ok if there is none.
    pub async fn delete_default_route(&self) -> Result<()> {
        // Unspecified protocol/type and scope "nowhere" match a default route whoever made it.
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .protocol(RouteProtocol::Unspec)
            .scope(RouteScope::NoWhere)
            .kind(RouteType::Unspec)
            .build();
        match self.handle.route().del(msg).execute().await {
            Err(e) if netlink_errno(&e) != Some(Errno::ESRCH) => {
                Err(self.err("deleting", "default route", e))
            }
            _ => Ok(()),
        }
    }

    // ---- fdb (on a VXLAN device) and neighbours ----

    /// Permanent `MAC dst VTEP` entries the device itself holds (NTF_SELF), excluding the
    /// kernel's own (all-zero MAC) and bridge (NTF_MASTER) entries.
    pub async fn fdb_entries(&self, dev: &LinkSummary) -> Result<Vec<(Mac, Ipv4Addr)>> {
        let msgs = self
            .neighbour_messages(AddressFamily::Bridge, "fdb entries")
            .await?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.ifindex == dev.index && is_static(m))
            .filter(|m| m.header.flags.contains(NeighbourFlags::Own))
            .filter_map(|m| Some((lladdr(m)?, destination(m)?)))
            .filter(|(mac, _)| mac.0 != [0; 6])
            .collect())
    }

    pub async fn add_fdb(&self, dev: &LinkSummary, mac: Mac, vtep: Ipv4Addr) -> Result<()> {
        let r = self
            .handle
            .neighbours()
            .add_bridge(dev.index, &mac.0)
            .flags(NeighbourFlags::Own)
            .destination(IpAddr::V4(vtep))
            .replace()
            .execute()
            .await;
        let object = format!("fdb entry {mac} dst {vtep} on {}", dev.name);
        r.map_err(|e| self.err("adding", object, e))
    }

    pub async fn delete_fdb(&self, dev: &LinkSummary, mac: Mac, vtep: Ipv4Addr) -> Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = dev.index;
        msg.header.flags = NeighbourFlags::Own;
        msg.header.state = NeighbourState::Permanent;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                vtep,
            )));
        let r = self.handle.neighbours().del(msg).execute().await;
        let object = format!("fdb entry {mac} dst {vtep} on {}", dev.name);
        r.map_err(|e| self.err("deleting", object, e))
    }

    /// Permanent IPv4 neighbour entries on `dev`.
    pub async fn neighbours(&self, dev: &LinkSummary) -> Result<Vec<(Ipv4Addr, Mac)>> {
        let msgs = self
            .neighbour_messages(AddressFamily::Inet, "neighbours")
            .await?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.ifindex == dev.index && is_static(m))
            .filter_map(|m| Some((destination(m)?, lladdr(m)?)))
            .collect())
    }

    /// Adds or replaces the permanent neighbour entry `ip lladdr mac` on `dev`.
    pub async fn set_neighbour(&self, dev: &LinkSummary, ip: Ipv4Addr, mac: Mac) -> Result<()> {
        let r = self
            .handle
            .neighbours()
            .add(dev.index, IpAddr::V4(ip))
            .link_layer_address(&mac.0)
            .replace()
            .execute()
            .await;
        let object = format!("neighbour {ip} lladdr {mac} on {}", dev.name);
        r.map_err(|e| self.err("adding", object, e))
    }

    pub async fn delete_neighbour(&self, dev: &LinkSummary, ip: Ipv4Addr) -> Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = dev.index;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        let r = self.handle.neighbours().del(msg).execute().await;
        r.map_err(|e| self.err("deleting", format!("neighbour {ip} on {}", dev.name), e))
    }

    async fn neighbour_messages(
        &self,
        family: AddressFamily,
        what: &str,
    ) -> Result<Vec<NeighbourMessage>> {
        self.handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.err("listing", what, e))
    }
}

fn summarize(msg: &LinkMessage) -> LinkSummary {
    let mut link = LinkSummary {
        name: String::new(),
        index: msg.header.index,
        kind: None,
        master: None,
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        mac: None,
        vni: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Controller(master) if *master != 0 => link.master = Some(*master),
            LinkAttribute::Address(addr) => {
                link.mac = <[u8; 6]>::try_from(addr.as_slice()).ok().map(Mac)
            }
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => link.kind = Some(kind.to_string()),
                        LinkInfo::Data(InfoData::Vxlan(data)) => {
                            link.vni = data.iter().find_map(|d| match d {
                                InfoVxlan::Id(id) => Some(*id),
                                _ => None,
                            })
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn route_table(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table))
}

fn route_oif(msg: &RouteMessage) -> Option<u32> {
    msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

fn route_destination(msg: &RouteMessage) -> Option<Ipv4Net> {
    let dst = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        })
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    Ipv4Net::new(dst, msg.header.destination_prefix_length).ok()
}

/// NUD_PERMANENT is a bit: `bridge fdb add` sends NUD_NOARP|NUD_PERMANENT, for example.
fn is_static(msg: &NeighbourMessage) -> bool {
    u16::from(msg.header.state) & u16::from(NeighbourState::Permanent) != 0
}

fn lladdr(msg: &NeighbourMessage) -> Option<Mac> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => <[u8; 6]>::try_from(b.as_slice()).ok().map(Mac),
        _ => None,
    })
}

/// NDA_DST as IPv4. In AF_BRIDGE (fdb) messages the parser cannot know the address family
/// and hands the raw bytes over as `Other`.
fn destination(msg: &NeighbourMessage) -> Option<Ipv4Addr> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        NeighbourAttribute::Destination(NeighbourAddress::Other(raw)) => {
            <[u8; 4]>::try_from(raw.as_slice()).ok().map(Ipv4Addr::from)
        }
        _ => None,
    })
}
