//! What the parser makes of the text: tables, chains, rules, sets.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::trace::{Field, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sel {
    IpDaddr,
    IpSaddr,
    L4proto,
    Dport,
    Mark,
    Numgen(u32),
    CtState,
    CtStatus,
    FibDaddrType,
    FibSaddrType,
    Iifname,
    Oifname,
    /// `@th,96,24`: a VXLAN packet's VNI (the tracer follows inner packets: never VXLAN).
    VxlanVni,
    /// `meta ipsec` (the tracer's packets never come out of an IPsec transform).
    Ipsec,
}

impl Sel {
    /// The type of a value this selector yields, where it can be part of a key or literal.
    pub(crate) fn field(self) -> Option<Field> {
        match self {
            Sel::IpDaddr | Sel::IpSaddr => Some(Field::Addr),
            Sel::L4proto => Some(Field::Proto),
            Sel::Dport => Some(Field::Port),
            Sel::Mark => Some(Field::Mark),
            Sel::Numgen(_) => Some(Field::Int),
            Sel::Iifname | Sel::Oifname => Some(Field::Iface),
            Sel::CtState
            | Sel::CtStatus
            | Sel::FibDaddrType
            | Sel::FibSaddrType
            | Sel::VxlanVni
            | Sel::Ipsec => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `expr @set`
    Lookup(Vec<Sel>, String),
    /// `selector literal`, or `selector != literal` when `negated`.
    Eq {
        sel: Sel,
        literal: String,
        negated: bool,
    },
    /// `selector low-high`
    Range(Sel, Value, Value),
}

/// Where a dnat statement finds its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnatSource {
    /// `dnat ip to ADDR[:PORT]`
    Fixed(Ipv4Addr, Option<u16>),
    /// `dnat ip to EXPR map @name`
    Named(Vec<Sel>, String),
    /// `dnat ip to EXPR map { ... }`
    Anonymous(Vec<Sel>, PSet),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    /// `counter [packets N bytes M]`: no effect on the packet's path.
    Counter,
    Jump(String),
    Goto(String),
    Accept,
    Drop,
    RejectTcpReset,
    RejectPortUnreachable,
    Dnat(DnatSource),
    Masquerade,
    SnatTo(Ipv4Addr),
    /// `meta mark set EXPR map @name`
    SetMark(Vec<Sel>, String),
    /// `meta mark set VALUE`
    SetMarkTo(u32),
}

impl Stmt {
    pub(crate) fn references(&self, name: &str) -> bool {
        match self {
            Stmt::Jump(c) | Stmt::Goto(c) | Stmt::SetMark(_, c) => c == name,
            Stmt::Dnat(DnatSource::Named(_, c)) => c == name,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PRule {
    pub matches: Vec<Match>,
    pub stmts: Vec<Stmt>,
}

impl PRule {
    pub(crate) fn references(&self, name: &str) -> bool {
        let in_match = self
            .matches
            .iter()
            .any(|m| matches!(m, Match::Lookup(_, s) if s == name));
        in_match || self.stmts.iter().any(|s| s.references(name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HookName {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PBase {
    pub nat: bool,
    pub hook: HookName,
    pub priority: i32,
    pub policy_drop: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PChain {
    pub base: Option<PBase>,
    pub rules: Vec<PRule>,
}

/// A set (no data) or a map (data fields present).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PSet {
    pub key: Vec<Field>,
    pub data: Option<Vec<Field>>,
    pub elements: BTreeMap<Vec<Value>, Vec<Value>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PTable {
    pub sets: BTreeMap<String, PSet>,
    pub chains: BTreeMap<String, PChain>,
}
