//! Plain, validated descriptions of what one node's kernel should hold.
//!
//! `src/agent/plan/` (in the root crate) builds these from the cluster state without any I/O;
//! the drivers in this crate make the kernel match them. Every name here is final: the drivers
//! do not invent names of their own, so the planner alone decides what a link is called.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// A MAC address. Task MACs are derived from the task's IPv4 address (`02:42:a.b.c.d`, as
/// Docker does), so a remote node can write the static neighbour entry without asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub fn from_ipv4(ip: Ipv4Addr) -> Mac {
        let o = ip.octets();
        Mac([0x02, 0x42, o[0], o[1], o[2], o[3]])
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// A Linux bridge in the node's own namespace (a `bridge` network, or `rm_gwbridge`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeSpec {
    /// Interface name in the node namespace, at most 15 bytes.
    pub ifname: String,
    /// Gateway address with the subnet's prefix length, e.g. 172.18.0.1/16.
    pub gateway: Ipv4Net,
    pub mtu: u32,
}

/// An overlay network on this node: a namespace holding `br0` and one VXLAN device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlaySpec {
    /// Path of the named namespace file (under the daemon's run dir).
    pub netns: PathBuf,
    /// Name of the VXLAN device inside the overlay namespace (e.g. `vxlan4096`). It is created
    /// by a request from the node namespace, so its UDP socket lives on the underlay, with the
    /// device itself placed in `netns` by the same request.
    pub vxlan_ifname: String,
    pub vni: u32,
    /// Local VTEP address on the underlay (the daemon's advertise address), if any.
    pub local_vtep: Option<Ipv4Addr>,
    /// Gateway address of the overlay subnet, set on `br0`.
    pub gateway: Ipv4Net,
    /// MTU of the VXLAN device, `br0` and every task leg (1450).
    pub mtu: u32,
    /// Static forwarding entries: a remote MAC lives behind this remote VTEP.
    pub fdb: Vec<(Mac, Ipv4Addr)>,
    /// Static neighbour entries on `br0`: a remote IP has this MAC.
    pub neighbours: Vec<(Ipv4Addr, Mac)>,
    /// Further addresses on `br0`, as /32s: this node's own address on the network (the
    /// load balancer's source address).
    #[serde(default)]
    pub addresses: Vec<Ipv4Net>,
    /// The VIPs this namespace answers (ARP, local delivery), as local routes through `br0`
    /// rather than addresses: a network with 10,000 services would otherwise make each new
    /// address walk the other 10,000 in the kernel.
    #[serde(default)]
    pub vips: Vec<Ipv4Addr>,
}

/// What a sandbox interface is plugged into.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Attachment {
    /// The `br0` bridge inside an overlay namespace.
    Overlay { netns: PathBuf },
    /// A bridge in the node namespace (a `bridge` network or `rm_gwbridge`). An `isolated`
    /// port reaches only the bridge itself (the node) and ports that are not isolated: tasks
    /// on the gateway bridge cannot talk to each other over it.
    NodeBridge {
        bridge: String,
        #[serde(default)]
        isolated: bool,
    },
    /// A macvlan device (mode bridge) on `parent`, an interface of the node namespace; the
    /// leg has no outer end.
    Macvlan { parent: String },
}

/// One interface of a sandbox: a veth pair whose outer end is enslaved to `attach`'s bridge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceSpec {
    /// Name inside the sandbox: `eth0`, `eth1`, ...
    pub ifname: String,
    /// Name of the outer end (in the overlay namespace or the node namespace), at most 15 bytes,
    /// unique on that side. The planner derives it from the task and the interface index.
    pub outer_ifname: String,
    pub attach: Attachment,
    pub address: Ipv4Net,
    pub mac: Mac,
    pub mtu: u32,
}

/// A task's network sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Path of the named namespace file (under the daemon's run dir).
    pub netns: PathBuf,
    pub interfaces: Vec<InterfaceSpec>,
    /// Default route via this gateway (the gateway bridge's address), if any.
    pub default_gateway: Option<Ipv4Addr>,
}
