//! The ruleset as data, and its rendering to `nft -f` text.
//!
//! Rendering is the only place that spells nft syntax; [`crate::tracer`] parses the result back.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;

use super::names;
use crate::model::{Frontend, Proto, Snat};

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

    /// The packet expression the key is built from.
    pub fn key_expr(self) -> &'static str {
        match self {
            KeyKind::Vip => "ip daddr . meta l4proto . th dport",
            KeyKind::VipAddr => "ip daddr",
            KeyKind::Published => "meta l4proto . th dport",
        }
    }

    /// The `type` of a frontend set of this kind.
    pub fn set_type(self) -> &'static str {
        match self {
            KeyKind::Vip => "ipv4_addr . inet_proto . inet_service",
            KeyKind::VipAddr => "ipv4_addr",
            KeyKind::Published => "inet_proto . inet_service",
        }
    }

    /// What a backend map of this kind yields: address-only VIPs keep the packet's port.
    pub fn target_expr(self) -> &'static str {
        match self {
            KeyKind::Vip | KeyKind::Published => "ip daddr . th dport",
            KeyKind::VipAddr => "ip daddr",
        }
    }

    /// Whether DNAT targets carry a port.
    pub fn has_target_port(self) -> bool {
        !matches!(self, KeyKind::VipAddr)
    }

    /// Guard in front of the key: published ports only match local destinations.
    fn guard(self) -> &'static str {
        match self {
            KeyKind::Vip | KeyKind::VipAddr => "",
            KeyKind::Published => "fib daddr type local ",
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

impl fmt::Display for FrontendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrontendKey::Vip { addr, proto, port } => write!(f, "{addr} . {proto} . {port}"),
            FrontendKey::VipAddr(addr) => write!(f, "{addr}"),
            FrontendKey::Published { proto, port } => write!(f, "{proto} . {port}"),
        }
    }
}

/// A backend map key: the frontend and the slot `numgen random mod N` picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotKey {
    pub frontend: FrontendKey,
    pub slot: u32,
}

impl fmt::Display for SlotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} . {}", self.frontend, self.slot)
    }
}

/// A DNAT target: `10.1.0.5 . 80`, or `10.1.0.5` when the packet keeps its port (address-only
/// VIPs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub addr: Ipv4Addr,
    pub port: Option<u16>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{} . {port}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub kind: KeyKind,
    pub elements: BTreeSet<FrontendKey>,
}

impl Set {
    pub fn type_decl(&self) -> String {
        format!("type {}", self.kind.set_type())
    }
}

/// A data map `frontend . slot : address . port` (`: address` for address-only VIPs), one per
/// (kind, slot count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Map {
    pub name: String,
    pub kind: KeyKind,
    pub slots: u32,
    pub elements: BTreeMap<SlotKey, Target>,
}

impl Map {
    /// `typeof`, because `numgen` yields a plain integer no `type` name matches.
    pub fn type_decl(&self) -> String {
        format!(
            "typeof {} . numgen random mod {} : {}",
            self.kind.key_expr(),
            self.slots,
            self.kind.target_expr()
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Nat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Output,
    Postrouting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub chain_type: ChainType,
    pub hook: Hook,
    pub priority: i32,
}

impl fmt::Display for BaseChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chain_type = match self.chain_type {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
        };
        let hook = match self.hook {
            Hook::Prerouting => "prerouting",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        };
        // Numeric priority: nft 1.0.6 accepts `dstnat` only on the prerouting hook.
        write!(
            f,
            "type {chain_type} hook {hook} priority {}; policy accept;",
            self.priority
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Jump(String),
    /// The one rule of a group: frontend in the group's set -> DNAT to the slot's backend.
    Dispatch {
        kind: KeyKind,
        slots: u32,
    },
    /// New connection to a frontend without a usable backend -> the reject chain.
    RejectNoBackend(KeyKind),
    RejectTcpReset,
    RejectPortUnreachable,
    /// Source-NAT connections that were DNATed in this namespace.
    SnatDnatted(Snat),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Jump(chain) => write!(f, "jump {chain}"),
            Rule::Dispatch { kind, slots } => write!(
                f,
                "{}{key} @{set} dnat ip to {key} . numgen random mod {slots} map @{map}",
                kind.guard(),
                key = kind.key_expr(),
                set = names::frontend_set(*kind, *slots),
                map = names::backend_map(*kind, *slots),
            ),
            Rule::RejectNoBackend(kind) => write!(
                f,
                "ct state new {}{} @{} goto {}",
                kind.guard(),
                kind.key_expr(),
                names::no_backend_set(*kind),
                names::CHAIN_REJECT
            ),
            Rule::RejectTcpReset => f.write_str("meta l4proto tcp reject with tcp reset"),
            Rule::RejectPortUnreachable => f.write_str("reject with icmp type port-unreachable"),
            Rule::SnatDnatted(Snat::Masquerade) => f.write_str("ct status dnat masquerade"),
            Rule::SnatDnatted(Snat::To(addr)) => write!(f, "ct status dnat snat ip to {addr}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

/// One `ip` table: everything one namespace's load balancing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub sets: BTreeMap<String, Set>,
    pub maps: BTreeMap<String, Map>,
    /// In definition order: chains that are jumped to come before the chains jumping.
    pub chains: Vec<Chain>,
}

impl Table {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// Number of set and map elements.
    pub fn element_count(&self) -> usize {
        self.sets.values().map(|s| s.elements.len()).sum::<usize>()
            + self.maps.values().map(|m| m.elements.len()).sum::<usize>()
    }

    /// The table in nft's block syntax, exactly as [`full_sync_script`](Self::full_sync_script)
    /// sends it.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(64 * (self.element_count() + 16));
        // Writing to a String cannot fail.
        let _ = self.write_block(&mut out);
        out
    }

    /// Replaces the table atomically: `add` makes the `delete` valid when it does not exist yet.
    pub fn full_sync_script(&self) -> String {
        let mut out = format!(
            "add table {fam} {name}\ndelete table {fam} {name}\n",
            fam = names::FAMILY,
            name = self.name
        );
        out.push_str(&self.render());
        out
    }

    fn write_block(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "table {} {} {{", names::FAMILY, self.name)?;
        for set in self.sets.values() {
            writeln!(out, "\tset {} {{", set.name)?;
            writeln!(out, "\t\t{}", set.type_decl())?;
            write_elements(out, set.elements.iter().map(|e| e.to_string()))?;
            writeln!(out, "\t}}")?;
        }
        for map in self.maps.values() {
            writeln!(out, "\tmap {} {{", map.name)?;
            writeln!(out, "\t\t{}", map.type_decl())?;
            write_elements(out, map.elements.iter().map(|(k, v)| format!("{k} : {v}")))?;
            writeln!(out, "\t}}")?;
        }
        for chain in &self.chains {
            writeln!(out, "\tchain {} {{", chain.name)?;
            if let Some(base) = &chain.base {
                writeln!(out, "\t\t{base}")?;
            }
            for rule in &chain.rules {
                writeln!(out, "\t\t{rule}")?;
            }
            writeln!(out, "\t}}")?;
        }
        writeln!(out, "}}")
    }
}

fn write_elements(out: &mut String, elements: impl Iterator<Item = String>) -> fmt::Result {
    let mut elements = elements.peekable();
    if elements.peek().is_none() {
        return Ok(());
    }
    writeln!(out, "\t\telements = {{")?;
    while let Some(element) = elements.next() {
        let sep = if elements.peek().is_some() { "," } else { "" };
        writeln!(out, "\t\t\t{element}{sep}")?;
    }
    writeln!(out, "\t\t}}")
}
