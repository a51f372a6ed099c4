//! A packet tracer over rendered nft text, in the spirit of kube-proxy's: it parses the exact
//! scripts sent to nft (full table blocks, and the incremental commands applied on top), walks
//! the first packet of a connection through the hooks and reports the verdict, every possible
//! DNAT target of `numgen` with its slot count, and the source NAT. Any fragment it does not
//! understand is an error, never a silent pass.
//!
//! [`Ruleset::trace`] follows a packet through one namespace; [`net::Network`] follows it
//! across namespaces (node, ingress sandbox, load balancers, task sandboxes), routing by the
//! addresses each namespace holds, and reports where it is delivered.

mod eval;
pub mod net;
mod parse;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use parse::{HookName, PTable};
use routemesh_types::Proto;

pub use net::{Delivery, End, Flow, Hop, Network};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    #[error("line {line}: {message}")]
    Parse { line: usize, message: String },
    #[error("trace: {0}")]
    Eval(String),
}

/// The first packet of a connection, as [`Ruleset::trace`] takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: Proto,
    pub dport: u16,
    /// Whether `dst` is an address of this namespace (`fib daddr type local`).
    pub dst_local: bool,
    /// Sent by a process in this namespace (output hook) rather than arriving (prerouting).
    pub locally_generated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RejectKind {
    TcpReset,
    PortUnreachable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnatTarget {
    pub addr: Ipv4Addr,
    /// The backend's port, or the packet's own when the map yields an address only.
    pub port: u16,
    /// How many of the `numgen` slots pick this target.
    pub slots: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Passes unchanged.
    Accept,
    Drop,
    Reject(RejectKind),
    /// Destination NAT to one of `targets`, chosen by `numgen random mod slots`.
    Dnat {
        targets: Vec<DnatTarget>,
        slots: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceNat {
    Masquerade,
    To(Ipv4Addr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub verdict: Verdict,
    pub snat: Option<SourceNat>,
    /// Chains entered, in order.
    pub chains: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Addr,
    Proto,
    Port,
    Int,
    Mark,
    Iface,
}

impl Field {
    fn parse(self, tok: &str) -> Option<Value> {
        match self {
            Field::Addr => tok.parse().ok().map(Value::Addr),
            Field::Proto => match tok.parse::<Proto>() {
                Ok(p) => Some(Value::Proto(p.number())),
                Err(_) => tok.parse().ok().map(Value::Proto),
            },
            Field::Port => tok.parse().ok().map(Value::Port),
            Field::Int => tok.parse().ok().map(Value::Int),
            Field::Mark => match tok.strip_prefix("0x") {
                Some(hex) => u32::from_str_radix(hex, 16).ok().map(Value::Mark),
                None => tok.parse().ok().map(Value::Mark),
            },
            Field::Iface => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Value {
    Addr(Ipv4Addr),
    Proto(u8),
    Port(u16),
    Int(u32),
    Mark(u32),
}

impl Value {
    fn field(self) -> Field {
        match self {
            Value::Addr(_) => Field::Addr,
            Value::Proto(_) => Field::Proto,
            Value::Port(_) => Field::Port,
            Value::Int(_) => Field::Int,
            Value::Mark(_) => Field::Mark,
        }
    }
}

/// Tables as the scripts applied so far would leave them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    tables: BTreeMap<String, PTable>,
}

impl Ruleset {
    /// Parses one script (e.g. the full-sync script).
    pub fn parse(text: &str) -> Result<Self, TraceError> {
        let mut ruleset = Ruleset::default();
        ruleset.apply(text)?;
        Ok(ruleset)
    }

    /// Applies a further script (e.g. an incremental sync) the way nft would.
    pub fn apply(&mut self, text: &str) -> Result<(), TraceError> {
        // Like nft, a script is one transaction: on error nothing changes.
        let mut next = self.tables.clone();
        parse::apply(&mut next, text)?;
        self.tables = next;
        Ok(())
    }

    /// Every rule of `table`: (chain, its parsed form as bytes), chains by name (what
    /// [`crate::FakeNft`] answers for [`crate::Executor::rules`]).
    pub fn rule_fingerprints(&self, table: &str) -> Vec<(String, Vec<u8>)> {
        self.tables
            .get(table)
            .map(|t| {
                t.chains
                    .iter()
                    .flat_map(|(name, chain)| {
                        chain
                            .rules
                            .iter()
                            .map(move |r| (name.clone(), format!("{r:?}").into_bytes()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn table_names(&self) -> Vec<&str> {
        self.tables.keys().map(String::as_str).collect()
    }

    /// Every element of every set and map, rendered `key [: data]`, for "nothing left" checks.
    pub fn elements(&self) -> Vec<String> {
        let mut out = Vec::new();
        for table in self.tables.values() {
            for (name, set) in &table.sets {
                for (key, data) in &set.elements {
                    out.push(format!("{name}: {key:?} {data:?}"));
                }
            }
        }
        out
    }

    /// Follows the first packet of a connection through this one namespace: the first hook
    /// (prerouting, or output when locally generated), then input or postrouting.
    pub fn trace(&self, packet: &Packet) -> Result<Trace, TraceError> {
        let env = eval::Env {
            local: eval::Locality::DstFlag(packet.dst_local),
            iif: None,
            oif: None,
        };
        let mut walk = eval::Walk::new(
            self,
            eval::Ctx::new(packet.src, packet.dst, packet.proto, packet.dport),
        );
        let first = if packet.locally_generated {
            HookName::Output
        } else {
            HookName::Prerouting
        };
        if let Some(verdict) = walk.hook(first, &env)? {
            return Ok(walk.finish(verdict));
        }
        // Targets are never local: a DNATed packet leaves through postrouting.
        let second = if walk.ctx.dnat.is_none() && packet.dst_local && !packet.locally_generated {
            HookName::Input
        } else {
            HookName::Postrouting
        };
        if let Some(verdict) = walk.hook(second, &env)? {
            return Ok(walk.finish(verdict));
        }
        let verdict = match walk.ctx.dnat.take() {
            Some((targets, slots)) => Verdict::Dnat { targets, slots },
            None => Verdict::Accept,
        };
        Ok(walk.finish(verdict))
    }
}
