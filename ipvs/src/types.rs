//! Plain descriptions of IPVS objects: what callers build and what dumps return.

use std::fmt;
use std::net::IpAddr;

use crate::consts::*;

/// Address family of a service or destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Inet,
    Inet6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Family::Inet,
            IpAddr::V6(_) => Family::Inet6,
        }
    }

    pub(crate) fn raw(self) -> u16 {
        match self {
            Family::Inet => AF_INET,
            Family::Inet6 => AF_INET6,
        }
    }

    pub(crate) fn from_raw(raw: u16) -> Option<Self> {
        match raw {
            AF_INET => Some(Family::Inet),
            AF_INET6 => Some(Family::Inet6),
            _ => None,
        }
    }
}

pub use routemesh_types::{Proto, Scheduler};

/// What identifies a virtual service in the kernel's tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKey {
    /// Packets carrying this firewall mark (set by nftables) of this family.
    Fwmark { mark: u32, family: Family },
    /// Packets to this address, port and protocol.
    Addr {
        addr: IpAddr,
        port: u16,
        proto: Proto,
    },
}

impl ServiceKey {
    pub fn family(&self) -> Family {
        match self {
            ServiceKey::Fwmark { family, .. } => *family,
            ServiceKey::Addr { addr, .. } => Family::of(addr),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Fwmark {
                mark,
                family: Family::Inet,
            } => write!(f, "fwmark {mark}"),
            ServiceKey::Fwmark {
                mark,
                family: Family::Inet6,
            } => write!(f, "fwmark {mark} (IPv6)"),
            ServiceKey::Addr { addr, port, proto } => {
                let proto = proto.as_str().to_ascii_uppercase();
                write!(f, "{proto} {}", std::net::SocketAddr::new(*addr, *port))
            }
        }
    }
}

/// A service's scheduler as the kernel names it (`ipvsadm -s`): one of routemesh's
/// [`Scheduler`]s, or any other module the kernel has (found in a dump, e.g. `wlc`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SchedName {
    Known(Scheduler),
    Other(String),
}

impl SchedName {
    pub fn name(&self) -> &str {
        match self {
            SchedName::Known(s) => s.as_str(),
            SchedName::Other(name) => name,
        }
    }

    pub fn from_name(name: &str) -> Self {
        match name.parse() {
            Ok(s) => SchedName::Known(s),
            Err(_) => SchedName::Other(name.to_string()),
        }
    }
}

impl From<Scheduler> for SchedName {
    fn from(s: Scheduler) -> Self {
        SchedName::Known(s)
    }
}

impl PartialEq<Scheduler> for SchedName {
    fn eq(&self, other: &Scheduler) -> bool {
        *self == SchedName::Known(*other)
    }
}

impl fmt::Display for SchedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `IP_VS_SVC_F_*` bits of a service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceFlags(pub u32);

impl ServiceFlags {
    pub const PERSISTENT: ServiceFlags = ServiceFlags(0x0001);
    pub const ONEPACKET: ServiceFlags = ServiceFlags(0x0004);
    /// `sh` scheduler: fall back to another destination when the chosen one has weight 0.
    pub const SH_FALLBACK: ServiceFlags = ServiceFlags(0x0008);
    /// `sh` scheduler: hash the source port too.
    pub const SH_PORT: ServiceFlags = ServiceFlags(0x0010);

    pub fn contains(self, other: ServiceFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for ServiceFlags {
    type Output = ServiceFlags;
    fn bitor(self, rhs: ServiceFlags) -> ServiceFlags {
        ServiceFlags(self.0 | rhs.0)
    }
}

/// A virtual service.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Service {
    pub key: ServiceKey,
    pub scheduler: SchedName,
    pub flags: ServiceFlags,
    /// Persistence timeout in seconds (used with [`ServiceFlags::PERSISTENT`]).
    pub timeout: u32,
    /// Persistence granularity: `0xffff_ffff` (a /32 mask, as the kernel stores it) for
    /// IPv4, the prefix length (1..=128) for IPv6.
    pub netmask: u32,
}

impl Service {
    /// A service with no persistence and the family's full netmask.
    pub fn new(key: ServiceKey, scheduler: impl Into<SchedName>) -> Self {
        let netmask = match key.family() {
            Family::Inet => 0xffff_ffff,
            Family::Inet6 => 128,
        };
        Service {
            key,
            scheduler: scheduler.into(),
            flags: ServiceFlags::default(),
            timeout: 0,
            netmask,
        }
    }
}

/// How IPVS forwards packets to a destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Forwarding {
    /// NAT: rewrite the destination address (and port). The default, and what routemesh uses.
    #[default]
    Masq,
    /// The destination is local to this namespace.
    Local,
    /// IP-in-IP tunnel.
    Tunnel,
    /// Direct routing (gatewaying).
    Route,
}

impl Forwarding {
    pub(crate) fn raw(self) -> u32 {
        match self {
            Forwarding::Masq => IP_VS_CONN_F_MASQ,
            Forwarding::Local => IP_VS_CONN_F_LOCALNODE,
            Forwarding::Tunnel => IP_VS_CONN_F_TUNNEL,
            Forwarding::Route => IP_VS_CONN_F_DROUTE,
        }
    }

    pub(crate) fn from_raw(raw: u32) -> Option<Self> {
        match raw & IP_VS_CONN_F_FWD_MASK {
            IP_VS_CONN_F_MASQ => Some(Forwarding::Masq),
            IP_VS_CONN_F_LOCALNODE => Some(Forwarding::Local),
            IP_VS_CONN_F_TUNNEL => Some(Forwarding::Tunnel),
            IP_VS_CONN_F_DROUTE => Some(Forwarding::Route),
            _ => None,
        }
    }
}

/// A real server behind a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    pub addr: IpAddr,
    pub port: u16,
    /// 0 drains: no new connections, existing ones continue.
    pub weight: u32,
    pub fwd: Forwarding,
    /// Stop scheduling new connections above this many (0: no limit).
    pub upper_threshold: u32,
    /// Resume scheduling below this many (0: no limit).
    pub lower_threshold: u32,
}

impl Destination {
    /// A masquerading destination of weight 1 without thresholds.
    pub fn new(addr: IpAddr, port: u16) -> Self {
        Destination {
            addr,
            port,
            weight: 1,
            fwd: Forwarding::Masq,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    pub fn socket_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.addr, self.port)
    }
}

/// Traffic counters of a service or destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub conns: u64,
    pub in_packets: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

/// A service as dumped by the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    pub service: Service,
    pub stats: Stats,
}

/// A destination as dumped by the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationEntry {
    pub destination: Destination,
    pub active_conns: u32,
    pub inactive_conns: u32,
    pub persistent_conns: u32,
    pub stats: Stats,
}

/// Connection timeouts of the namespace's IPVS, in seconds (`ipvsadm --set tcp tcpfin udp`).
/// When setting, 0 leaves that timeout unchanged (the kernel's rule).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

/// What `IPVS_CMD_GET_INFO` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    /// (major, minor, patch), e.g. (1, 2, 1).
    pub version: (u8, u8, u8),
    pub conn_tab_size: u32,
}
