//! The shapes of the load balancer's lookups: which packet fields a frontend matches, and how
//! frontends, slots and targets become set and map elements.

use std::net::Ipv4Addr;

use routemesh_nft::{AddrType, DataType, Element, Expr, Match, Value};

use crate::model::{Frontend, Proto};

/// The shape of a lookup key: VIPs match the destination address and port, address-only VIPs
/// the destination address alone, published ports the port on any local address.
///
/// The order is the order of the groups' jumps in `services`: VIP:port, then address-only VIP,
/// then published ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyKind {
    Vip,
    VipAddr,
    Published,
}

impl KeyKind {
    pub const ALL: [KeyKind; 3] = [KeyKind::Vip, KeyKind::VipAddr, KeyKind::Published];

    /// The packet fields the key is built from.
    pub fn key_expr(self) -> Vec<Expr> {
        match self {
            KeyKind::Vip => vec![Expr::IpDaddr, Expr::L4proto, Expr::Dport],
            KeyKind::VipAddr => vec![Expr::IpDaddr],
            KeyKind::Published => vec![Expr::L4proto, Expr::Dport],
        }
    }

    /// The element type of a frontend set of this kind.
    pub fn set_type(self) -> Vec<DataType> {
        match self {
            KeyKind::Vip => vec![
                DataType::Ipv4Addr,
                DataType::InetProto,
                DataType::InetService,
            ],
            KeyKind::VipAddr => vec![DataType::Ipv4Addr],
            KeyKind::Published => vec![DataType::InetProto, DataType::InetService],
        }
    }

    /// What a backend map of this kind yields: address-only VIPs keep the packet's port.
    pub fn target_expr(self) -> Vec<Expr> {
        match self {
            KeyKind::Vip | KeyKind::Published => vec![Expr::IpDaddr, Expr::Dport],
            KeyKind::VipAddr => vec![Expr::IpDaddr],
        }
    }

    /// Whether DNAT targets carry a port.
    pub fn has_target_port(self) -> bool {
        !matches!(self, KeyKind::VipAddr)
    }

    /// Guard in front of the key: published ports only match local destinations.
    pub fn guard(self) -> Option<Match> {
        match self {
            KeyKind::Vip | KeyKind::VipAddr => None,
            KeyKind::Published => Some(Match::Eq(
                Expr::FibDaddrType,
                Value::AddrType(AddrType::Local),
            )),
        }
    }
}

/// A frontend as a set element: `10.0.0.2 . tcp . 80`, `10.0.0.2` or `tcp . 8080`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrontendKey {
    Vip {
        addr: Ipv4Addr,
        proto: Proto,
        port: u16,
    },
    VipAddr(Ipv4Addr),
    Published {
        proto: Proto,
        port: u16,
    },
}

impl FrontendKey {
    pub fn kind(&self) -> KeyKind {
        match self {
            FrontendKey::Vip { .. } => KeyKind::Vip,
            FrontendKey::VipAddr(_) => KeyKind::VipAddr,
            FrontendKey::Published { .. } => KeyKind::Published,
        }
    }

    pub fn values(&self) -> Vec<Value> {
        match *self {
            FrontendKey::Vip { addr, proto, port } => {
                vec![Value::Addr(addr), Value::Proto(proto), Value::Port(port)]
            }
            FrontendKey::VipAddr(addr) => vec![Value::Addr(addr)],
            FrontendKey::Published { proto, port } => vec![Value::Proto(proto), Value::Port(port)],
        }
    }
}

impl From<Frontend> for FrontendKey {
    fn from(frontend: Frontend) -> Self {
        match frontend {
            Frontend::Vip { addr, port, proto } => FrontendKey::Vip { addr, proto, port },
            Frontend::VipAnyPort { addr } => FrontendKey::VipAddr(addr),
            Frontend::Published { port, proto } => FrontendKey::Published { proto, port },
        }
    }
}

/// A backend map key: the frontend and the slot `numgen random mod N` picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotKey {
    pub frontend: FrontendKey,
    pub slot: u32,
}

/// A DNAT target: `10.1.0.5 . 80`, or `10.1.0.5` when the packet keeps its port (address-only
/// VIPs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub addr: Ipv4Addr,
    pub port: Option<u16>,
}

impl Target {
    pub fn values(&self) -> Vec<Value> {
        let mut out = vec![Value::Addr(self.addr)];
        out.extend(self.port.map(Value::Port));
        out
    }
}

/// The map element `frontend . slot : target`.
pub fn slot_element(key: &SlotKey, target: &Target) -> Element {
    let mut k = key.frontend.values();
    k.push(Value::Int(key.slot));
    Element::mapping(k, target.values())
}
