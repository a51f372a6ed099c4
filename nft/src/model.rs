//! nftables as data: a table with its sets, maps and chains, rules built from typed matches
//! and statements. Builders in the owning crates produce these; [`crate::render`] spells them
//! in nft's syntax, [`crate::diff`] compares two of them.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use routemesh_types::Proto;

/// One `ip` table: everything one owner keeps in one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    /// Sets and maps, in declaration order.
    pub collections: Vec<Collection>,
    /// In definition order: chains that are jumped to come before the chains jumping.
    pub chains: Vec<Chain>,
    pub style: Style,
}

/// How a table is spelled when it is replaced as a whole. Both choices mean the same to nft;
/// each owner keeps the spelling its golden files pin down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Style {
    pub declare: Declare,
    pub elements: ElementLayout,
}

/// How a replacement makes sure the table exists before deleting it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Declare {
    /// `add table ip NAME`
    #[default]
    AddTable,
    /// `table ip NAME {}`
    EmptyBlock,
}

/// How the elements of a set or map are laid out in a table block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ElementLayout {
    /// One element per line: big tables, and nft's error line numbers point at one element.
    #[default]
    OnePerLine,
    /// All elements on one line: small tables.
    OneLine,
}

impl Table {
    pub fn new(name: impl Into<String>) -> Table {
        Table {
            name: name.into(),
            collections: Vec::new(),
            chains: Vec::new(),
            style: Style::default(),
        }
    }

    pub fn with_style(mut self, style: Style) -> Table {
        self.style = style;
        self
    }

    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    pub fn collection(&self, name: &str) -> Option<&Collection> {
        self.collections.iter().find(|c| c.name == name)
    }

    /// Number of set and map elements.
    pub fn element_count(&self) -> usize {
        self.collections.iter().map(|c| c.elements.len()).sum()
    }

    /// Follows a transaction of element deletions and additions that the kernel accepted, so
    /// this table stays what the kernel holds without being planned again. Each touched
    /// collection's elements must be sorted by key (the planners emit them so, and the diff
    /// relies on it); they stay sorted. An added element replaces one with the same key.
    /// Returns `false` when the transaction holds anything else or names a collection this
    /// table does not have: then the table no longer says what the kernel holds.
    pub fn follow_elements(&mut self, ops: &[crate::Op]) -> bool {
        use crate::Op;
        for op in ops {
            match op {
                Op::DeleteElements {
                    collection, keys, ..
                } => {
                    let Some(c) = self.collections.iter_mut().find(|c| c.name == *collection)
                    else {
                        return false;
                    };
                    for key in keys {
                        if let Ok(i) = c.elements.binary_search_by(|e| e.key.cmp(key)) {
                            c.elements.remove(i);
                        }
                    }
                }
                Op::AddElements {
                    collection,
                    elements,
                    ..
                } => {
                    let Some(c) = self.collections.iter_mut().find(|c| c.name == *collection)
                    else {
                        return false;
                    };
                    for element in elements {
                        match c.elements.binary_search_by(|e| e.key.cmp(&element.key)) {
                            Ok(i) => c.elements[i] = element.clone(),
                            Err(i) => c.elements.insert(i, element.clone()),
                        }
                    }
                }
                _ => return false,
            }
        }
        true
    }
}

/// A named set (no data) or map (data present).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    pub name: String,
    pub key: KeyDecl,
    /// `Some` for a map: what each element maps to.
    pub data: Option<KeyDecl>,
    /// In the order they are rendered.
    pub elements: Vec<Element>,
}

impl Collection {
    pub fn set(name: impl Into<String>, key: KeyDecl) -> Collection {
        Collection {
            name: name.into(),
            key,
            data: None,
            elements: Vec::new(),
        }
    }

    pub fn map(name: impl Into<String>, key: KeyDecl, data: KeyDecl) -> Collection {
        Collection {
            name: name.into(),
            key,
            data: Some(data),
            elements: Vec::new(),
        }
    }

    pub fn with_elements(mut self, elements: Vec<Element>) -> Collection {
        self.elements = elements;
        self
    }

    pub fn kind(&self) -> CollectionKind {
        if self.data.is_some() {
            CollectionKind::Map
        } else {
            CollectionKind::Set
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectionKind {
    Set,
    Map,
}

/// The declared type of a key or of a map's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyDecl {
    /// `type ipv4_addr . inet_service`
    Type(Vec<DataType>),
    /// `typeof ip daddr . th dport`: needed where no type name fits (`numgen`).
    Typeof(Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Ipv4Addr,
    InetProto,
    InetService,
    Mark,
}

/// One element: a key, and for a map the data it maps to (empty for a set).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    pub key: Vec<Value>,
    pub data: Vec<Value>,
}

impl Element {
    pub fn key(key: Vec<Value>) -> Element {
        Element {
            key,
            data: Vec::new(),
        }
    }

    pub fn mapping(key: Vec<Value>, data: Vec<Value>) -> Element {
        Element { key, data }
    }
}

/// A literal: an element's part or the right-hand side of a comparison.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    Addr(Ipv4Addr),
    /// An address prefix (`10.0.0.0/24`).
    Net(Ipv4Net),
    Proto(Proto),
    Port(u16),
    /// A plain integer (a `numgen` slot).
    Int(u32),
    /// A packet mark, spelled `0x00000100`.
    Mark(u32),
    /// An interface name, spelled quoted.
    Iface(String),
    CtState(CtState),
    CtStatus(CtStatus),
    AddrType(AddrType),
    /// `exists` / `missing`, for `meta ipsec`.
    Presence(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CtState {
    New,
    Established,
    Related,
    Invalid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CtStatus {
    Dnat,
    Snat,
}

/// What `fib ... type` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddrType {
    Local,
    Unicast,
}

/// A packet field or a computed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Expr {
    IpSaddr,
    IpDaddr,
    L4proto,
    /// `th dport`: the destination port of TCP, UDP or SCTP.
    Dport,
    Mark,
    CtState,
    CtStatus,
    /// `fib saddr type`
    FibSaddrType,
    /// `fib daddr type`
    FibDaddrType,
    Iifname,
    Oifname,
    /// `@th,96,24`: the VNI of a VXLAN packet (24 bits, 12 bytes past the UDP header's start).
    VxlanVni,
    /// `meta ipsec`: whether the packet came out of an IPsec transform (`exists`/`missing`).
    Ipsec,
    /// `numgen random mod N`
    Numgen(u32),
}

/// A condition of a rule; all of a rule's matches must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `EXPR VALUE` (a prefix value matches the addresses in it).
    Eq(Expr, Value),
    /// `EXPR != VALUE`
    Ne(Expr, Value),
    /// `EXPR LOW-HIGH`
    Range(Expr, Value, Value),
    /// `EXPR . EXPR @set`
    InSet(Vec<Expr>, String),
}

/// Where a map statement looks its key up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapRef {
    /// `@name`
    Named(String),
    /// `{ key : data, ... }`, written inline.
    Anonymous(Vec<Element>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    TcpReset,
    PortUnreachable,
}

/// What a rule does once its matches hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    /// `counter`: counts the packets and bytes that reach it, then goes on with the rule.
    Counter,
    Accept,
    Drop,
    Jump(String),
    Goto(String),
    Reject(Reject),
    Masquerade,
    SnatTo(Ipv4Addr),
    /// `meta mark set 0x...`
    SetMark(u32),
    /// `dnat ip to ADDR[:PORT]`
    DnatTo {
        addr: Ipv4Addr,
        port: Option<u16>,
    },
    /// `dnat ip to KEY map MAP`: the map yields `address` or `address . port`.
    DnatMap {
        key: Vec<Expr>,
        map: MapRef,
    },
    /// `meta mark set KEY map @MAP`; when the key is not in the map, the rest of the rule is
    /// skipped.
    SetMarkMap {
        key: Vec<Expr>,
        map: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub stmts: Vec<Stmt>,
}

impl Rule {
    pub fn new(matches: Vec<Match>, stmts: Vec<Stmt>) -> Rule {
        Rule { matches, stmts }
    }

    /// A rule without matches.
    pub fn always(stmt: Stmt) -> Rule {
        Rule {
            matches: Vec::new(),
            stmts: vec![stmt],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Nat,
    /// A filter that routes again when it changes the mark (output only).
    Route,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

/// A base chain's priority: a standard name, or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Raw,
    Mangle,
    Dstnat,
    Filter,
    Srcnat,
    Num(i32),
}

impl Priority {
    /// nft's standard names, with their values.
    const STANDARD: [(Priority, &'static str, i32); 5] = [
        (Priority::Raw, "raw", -300),
        (Priority::Mangle, "mangle", -150),
        (Priority::Dstnat, "dstnat", -100),
        (Priority::Filter, "filter", 0),
        (Priority::Srcnat, "srcnat", 100),
    ];

    fn standard(self) -> Option<(&'static str, i32)> {
        Self::STANDARD
            .iter()
            .find(|(p, _, _)| *p == self)
            .map(|&(_, name, value)| (name, value))
    }

    /// The standard name, `None` for a number.
    pub fn name(self) -> Option<&'static str> {
        self.standard().map(|(name, _)| name)
    }

    pub fn value(self) -> i32 {
        match self {
            Priority::Num(n) => n,
            named => named.standard().map_or(0, |(_, value)| value),
        }
    }

    /// Whether nft (1.0.6) accepts this priority on `hook`: `dstnat` only on prerouting,
    /// `srcnat` only on postrouting; numbers and the other names anywhere.
    pub fn fits(self, hook: Hook) -> bool {
        match self {
            Priority::Dstnat => hook == Hook::Prerouting,
            Priority::Srcnat => hook == Hook::Postrouting,
            _ => true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

/// What makes a chain a base chain: it is attached to a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: ChainType,
    pub hook: Hook,
    pub priority: Priority,
    pub policy: Policy,
}

impl BaseChain {
    pub fn new(kind: ChainType, hook: Hook, priority: Priority) -> BaseChain {
        BaseChain {
            kind,
            hook,
            priority,
            policy: Policy::Accept,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    /// `None` for a regular chain, reached only by jumps.
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

impl Chain {
    pub fn regular(name: impl Into<String>, rules: Vec<Rule>) -> Chain {
        Chain {
            name: name.into(),
            base: None,
            rules,
        }
    }

    pub fn base(name: impl Into<String>, base: BaseChain, rules: Vec<Rule>) -> Chain {
        Chain {
            name: name.into(),
            base: Some(base),
            rules,
        }
    }
}
