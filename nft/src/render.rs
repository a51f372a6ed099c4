//! The one place that spells nft syntax: every model type's `Display`, and a table as the
//! block `nft -f` reads.

use std::fmt::{self, Display, Write as _};

use crate::model::*;
use crate::tables::FAMILY;

/// Items joined by `sep`.
pub(crate) struct Joined<'a, T>(pub &'a [T], pub &'a str);

impl<T: Display> Display for Joined<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(self.1)?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}

/// A concatenation: `ip daddr . th dport`, `10.0.0.2 . tcp . 80`.
pub(crate) fn concat<T: Display>(items: &[T]) -> Joined<'_, T> {
    Joined(items, " . ")
}

impl Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Addr(a) => write!(f, "{a}"),
            Value::Net(n) => write!(f, "{n}"),
            Value::Proto(p) => write!(f, "{p}"),
            Value::Port(p) => write!(f, "{p}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Mark(m) => write!(f, "{m:#010x}"),
            Value::Iface(name) => write!(f, "\"{name}\""),
            Value::CtState(s) => f.write_str(match s {
                CtState::New => "new",
                CtState::Established => "established",
                CtState::Related => "related",
                CtState::Invalid => "invalid",
            }),
            Value::CtStatus(s) => f.write_str(match s {
                CtStatus::Dnat => "dnat",
                CtStatus::Snat => "snat",
            }),
            Value::AddrType(t) => f.write_str(match t {
                AddrType::Local => "local",
                AddrType::Unicast => "unicast",
            }),
            Value::Presence(true) => f.write_str("exists"),
            Value::Presence(false) => f.write_str("missing"),
        }
    }
}

impl Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::IpSaddr => f.write_str("ip saddr"),
            Expr::IpDaddr => f.write_str("ip daddr"),
            Expr::L4proto => f.write_str("meta l4proto"),
            Expr::Dport => f.write_str("th dport"),
            Expr::Mark => f.write_str("meta mark"),
            Expr::CtState => f.write_str("ct state"),
            Expr::CtStatus => f.write_str("ct status"),
            Expr::FibSaddrType => f.write_str("fib saddr type"),
            Expr::FibDaddrType => f.write_str("fib daddr type"),
            Expr::Iifname => f.write_str("iifname"),
            Expr::Oifname => f.write_str("oifname"),
            Expr::VxlanVni => f.write_str("@th,96,24"),
            Expr::Ipsec => f.write_str("meta ipsec"),
            Expr::Numgen(n) => write!(f, "numgen random mod {n}"),
        }
    }
}

impl Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataType::Ipv4Addr => "ipv4_addr",
            DataType::InetProto => "inet_proto",
            DataType::InetService => "inet_service",
            DataType::Mark => "mark",
        })
    }
}

impl Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", concat(&self.key))?;
        if !self.data.is_empty() {
            write!(f, " : {}", concat(&self.data))?;
        }
        Ok(())
    }
}

/// The type line of a set or map: `type A . B`, `typeof EXPR : EXPR`.
pub(crate) struct Decl<'a>(pub &'a Collection);

impl Display for Decl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = |f: &mut fmt::Formatter<'_>, decl: &KeyDecl| match decl {
            KeyDecl::Type(types) => write!(f, "{}", concat(types)),
            KeyDecl::Typeof(exprs) => write!(f, "{}", concat(exprs)),
        };
        f.write_str(match self.0.key {
            KeyDecl::Type(_) => "type ",
            KeyDecl::Typeof(_) => "typeof ",
        })?;
        part(f, &self.0.key)?;
        if let Some(data) = &self.0.data {
            f.write_str(" : ")?;
            part(f, data)?;
        }
        Ok(())
    }
}

impl Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::Eq(e, v) => write!(f, "{e} {v}"),
            Match::Ne(e, v) => write!(f, "{e} != {v}"),
            Match::Range(e, lo, hi) => write!(f, "{e} {lo}-{hi}"),
            Match::InSet(exprs, set) => write!(f, "{} @{set}", concat(exprs)),
        }
    }
}

impl Display for MapRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapRef::Named(name) => write!(f, "@{name}"),
            MapRef::Anonymous(elements) => write!(f, "{{ {} }}", Joined(elements, ", ")),
        }
    }
}

impl Display for Stmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stmt::Counter => f.write_str("counter"),
            Stmt::Accept => f.write_str("accept"),
            Stmt::Drop => f.write_str("drop"),
            Stmt::Jump(chain) => write!(f, "jump {chain}"),
            Stmt::Goto(chain) => write!(f, "goto {chain}"),
            Stmt::Reject(Reject::TcpReset) => f.write_str("reject with tcp reset"),
            Stmt::Reject(Reject::PortUnreachable) => {
                f.write_str("reject with icmp type port-unreachable")
            }
            Stmt::Masquerade => f.write_str("masquerade"),
            Stmt::SnatTo(addr) => write!(f, "snat ip to {addr}"),
            Stmt::SetMark(mark) => write!(f, "meta mark set {mark:#010x}"),
            Stmt::DnatTo { addr, port: None } => write!(f, "dnat ip to {addr}"),
            Stmt::DnatTo {
                addr,
                port: Some(port),
            } => write!(f, "dnat ip to {addr}:{port}"),
            Stmt::DnatMap { key, map } => write!(f, "dnat ip to {} map {map}", concat(key)),
            Stmt::SetMarkMap { key, map } => {
                write!(f, "meta mark set {} map @{map}", concat(key))
            }
        }
    }
}

impl Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Joined(&self.matches, " "))?;
        if !self.matches.is_empty() && !self.stmts.is_empty() {
            f.write_str(" ")?;
        }
        write!(f, "{}", Joined(&self.stmts, " "))
    }
}

impl Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.value()),
        }
    }
}

impl Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        })
    }
}

impl Display for BaseChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
            ChainType::Route => "route",
        };
        let policy = match self.policy {
            Policy::Accept => "accept",
            Policy::Drop => "drop",
        };
        write!(
            f,
            "type {kind} hook {} priority {}; policy {policy};",
            self.hook, self.priority
        )
    }
}

impl Table {
    /// The table in nft's block syntax.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(64 * (self.element_count() + 16));
        // Writing to a String cannot fail.
        let _ = self.write_block(&mut out);
        out
    }

    fn write_block(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "table {FAMILY} {} {{", self.name)?;
        for c in &self.collections {
            let kind = match c.kind() {
                CollectionKind::Set => "set",
                CollectionKind::Map => "map",
            };
            writeln!(out, "\t{kind} {} {{", c.name)?;
            writeln!(out, "\t\t{}", Decl(c))?;
            self.write_elements(out, &c.elements)?;
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

    fn write_elements(&self, out: &mut String, elements: &[Element]) -> fmt::Result {
        if elements.is_empty() {
            return Ok(());
        }
        match self.style.elements {
            ElementLayout::OneLine => {
                writeln!(out, "\t\telements = {{ {} }}", Joined(elements, ", "))
            }
            ElementLayout::OnePerLine => {
                writeln!(out, "\t\telements = {{")?;
                let last = elements.len() - 1;
                for (i, element) in elements.iter().enumerate() {
                    let sep = if i < last { "," } else { "" };
                    writeln!(out, "\t\t\t{element}{sep}")?;
                }
                writeln!(out, "\t\t}}")
            }
        }
    }
}
