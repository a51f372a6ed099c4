//! A packet tracer over the rendered nft text, in the spirit of kube-proxy's: it parses the
//! exact script sent to nft (full table blocks, and the incremental commands applied on top),
//! walks the first packet of a connection through the hooks, and reports the verdict, every
//! possible DNAT target of `numgen` with its slot count, and the source NAT. Any fragment it
//! does not understand is an error, never a silent pass.

mod parse;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use parse::{HookName, Match, PChain, PTable, Sel, Stmt};

use crate::model::Proto;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    #[error("line {line}: {message}")]
    Parse { line: usize, message: String },
    #[error("trace: {0}")]
    Eval(String),
}

/// The first packet of a connection.
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
}

impl Field {
    fn parse(self, tok: &str) -> Option<Value> {
        match self {
            Field::Addr => tok.parse().ok().map(Value::Addr),
            Field::Proto => match tok {
                "tcp" => Some(Value::Proto(6)),
                "udp" => Some(Value::Proto(17)),
                _ => tok.parse().ok().map(Value::Proto),
            },
            Field::Port => tok.parse().ok().map(Value::Port),
            Field::Int => tok.parse().ok().map(Value::Int),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Value {
    Addr(Ipv4Addr),
    Proto(u8),
    Port(u16),
    Int(u32),
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

    pub fn trace(&self, packet: &Packet) -> Result<Trace, TraceError> {
        let mut walk = Walk {
            ruleset: self,
            ctx: Ctx {
                saddr: packet.src,
                daddr: packet.dst,
                proto: packet.proto.number(),
                dport: packet.dport,
                dst_local: packet.dst_local,
                dnat: None,
            },
            snat: None,
            chains: Vec::new(),
        };
        let first = if packet.locally_generated {
            HookName::Output
        } else {
            HookName::Prerouting
        };
        if let Some(verdict) = walk.hook(first)? {
            return Ok(walk.finish(verdict));
        }
        // Targets are never local: a DNATed packet leaves through postrouting.
        let second = if walk.ctx.dnat.is_none() && packet.dst_local && !packet.locally_generated {
            HookName::Input
        } else {
            HookName::Postrouting
        };
        if let Some(verdict) = walk.hook(second)? {
            return Ok(walk.finish(verdict));
        }
        let verdict = match walk.ctx.dnat.take() {
            Some((targets, slots)) => Verdict::Dnat { targets, slots },
            None => Verdict::Accept,
        };
        Ok(walk.finish(verdict))
    }
}

struct Ctx {
    saddr: Ipv4Addr,
    daddr: Ipv4Addr,
    proto: u8,
    dport: u16,
    dst_local: bool,
    dnat: Option<(Vec<DnatTarget>, u32)>,
}

struct Walk<'a> {
    ruleset: &'a Ruleset,
    ctx: Ctx,
    snat: Option<SourceNat>,
    chains: Vec<String>,
}

/// What evaluating a chain ended with.
enum Outcome {
    Continue,
    Accept,
    Final(Verdict),
    Nat,
}

const MAX_DEPTH: usize = 16;

impl<'a> Walk<'a> {
    fn finish(self, verdict: Verdict) -> Trace {
        Trace {
            verdict,
            snat: self.snat,
            chains: self.chains,
        }
    }

    /// Runs the base chains of `hook` in priority order; `Some` when the packet is dropped or
    /// rejected.
    fn hook(&mut self, hook: HookName) -> Result<Option<Verdict>, TraceError> {
        let mut bases: Vec<(i32, &'a str, &'a PTable, &'a str)> = Vec::new();
        for (table_name, table) in &self.ruleset.tables {
            for (name, chain) in &table.chains {
                if let Some(base) = chain.base.as_ref().filter(|b| b.hook == hook) {
                    bases.push((base.priority, table_name, table, name));
                }
            }
        }
        bases.sort_by(|a, b| (a.0, a.1, a.3).cmp(&(b.0, b.1, b.3)));
        let mut nat_done = false;
        for (_, _, table, name) in bases {
            let is_nat = table.chains[name].base.as_ref().is_some_and(|b| b.nat);
            if is_nat && nat_done {
                continue;
            }
            match self.chain(table, name, 0)? {
                Outcome::Continue | Outcome::Accept => {}
                Outcome::Nat => nat_done = true,
                Outcome::Final(verdict) => return Ok(Some(verdict)),
            }
        }
        Ok(None)
    }

    fn chain(
        &mut self,
        table: &'a PTable,
        name: &str,
        depth: usize,
    ) -> Result<Outcome, TraceError> {
        if depth > MAX_DEPTH {
            return Err(eval(format!(
                "chain {name}: jumps nested deeper than {MAX_DEPTH}"
            )));
        }
        let chain: &PChain = table
            .chains
            .get(name)
            .ok_or_else(|| eval(format!("jump to missing chain {name}")))?;
        self.chains.push(name.to_string());
        for rule in &chain.rules {
            let mut hit = true;
            for m in &rule.matches {
                if !self.matches(table, m)? {
                    hit = false;
                    break;
                }
            }
            if !hit {
                continue;
            }
            let outcome = match &rule.stmt {
                None => Outcome::Continue,
                Some(Stmt::Accept) => Outcome::Accept,
                Some(Stmt::Drop) => Outcome::Final(Verdict::Drop),
                Some(Stmt::RejectTcpReset) => {
                    if self.ctx.proto != Proto::Tcp.number() {
                        return Err(eval("reject with tcp reset on a non-TCP packet".into()));
                    }
                    Outcome::Final(Verdict::Reject(RejectKind::TcpReset))
                }
                Some(Stmt::RejectPortUnreachable) => {
                    Outcome::Final(Verdict::Reject(RejectKind::PortUnreachable))
                }
                Some(Stmt::Jump(target)) => match self.chain(table, target, depth + 1)? {
                    Outcome::Continue => Outcome::Continue,
                    other => other,
                },
                Some(Stmt::Goto(target)) => match self.chain(table, target, depth + 1)? {
                    // The end of a goto target returns past the chain that went there.
                    Outcome::Continue => return Ok(Outcome::Continue),
                    other => other,
                },
                Some(Stmt::DnatMap(expr, map)) => {
                    self.dnat(table, expr, map)?;
                    Outcome::Nat
                }
                Some(Stmt::Masquerade) => {
                    self.snat = Some(SourceNat::Masquerade);
                    Outcome::Nat
                }
                Some(Stmt::SnatTo(addr)) => {
                    self.snat = Some(SourceNat::To(*addr));
                    Outcome::Nat
                }
            };
            if !matches!(outcome, Outcome::Continue) {
                return Ok(outcome);
            }
        }
        Ok(Outcome::Continue)
    }

    fn matches(&self, table: &PTable, m: &Match) -> Result<bool, TraceError> {
        match m {
            Match::Lookup(expr, set_name) => {
                let set = table
                    .sets
                    .get(set_name)
                    .ok_or_else(|| eval(format!("lookup in missing set @{set_name}")))?;
                if set.data.is_some() {
                    return Err(eval(format!("@{set_name} is a map, used as a set")));
                }
                let key = self.key(expr, None)?;
                check_types(set_name, &set.key, &key)?;
                Ok(set.elements.contains_key(&key))
            }
            Match::Eq(sel, literal) => {
                let (actual, known): (&str, &[&str]) = match sel {
                    Sel::CtState => ("new", &["new", "established", "related", "invalid"]),
                    Sel::CtStatus => (
                        if self.ctx.dnat.is_some() { "dnat" } else { "" },
                        &["dnat", "snat", "confirmed"],
                    ),
                    Sel::FibDaddrType => (
                        if self.ctx.dst_local && self.ctx.dnat.is_none() {
                            "local"
                        } else {
                            "unicast"
                        },
                        &["local", "unicast"],
                    ),
                    Sel::L4proto => {
                        let want = Field::Proto
                            .parse(literal)
                            .ok_or_else(|| eval(format!("meta l4proto {literal:?}")))?;
                        return Ok(want == Value::Proto(self.ctx.proto));
                    }
                    other => return Err(eval(format!("unsupported comparison {other:?}"))),
                };
                if !known.contains(&literal.as_str()) {
                    return Err(eval(format!("unsupported value {literal:?} for {sel:?}")));
                }
                Ok(actual == literal)
            }
        }
    }

    fn key(&self, expr: &[Sel], numgen: Option<u32>) -> Result<Vec<Value>, TraceError> {
        expr.iter()
            .map(|sel| match sel {
                Sel::IpDaddr => Ok(Value::Addr(self.ctx.daddr)),
                Sel::IpSaddr => Ok(Value::Addr(self.ctx.saddr)),
                Sel::L4proto => Ok(Value::Proto(self.ctx.proto)),
                Sel::Dport => Ok(Value::Port(self.ctx.dport)),
                Sel::Numgen(_) => numgen
                    .map(Value::Int)
                    .ok_or_else(|| eval("numgen outside a dnat map key".into())),
                other => Err(eval(format!("{other:?} cannot be part of a key"))),
            })
            .collect()
    }

    fn dnat(&mut self, table: &PTable, expr: &[Sel], map_name: &str) -> Result<(), TraceError> {
        let map = table
            .sets
            .get(map_name)
            .ok_or_else(|| eval(format!("dnat through missing map @{map_name}")))?;
        // `address . port`, or `address` alone (address-only VIPs: the packet keeps its port).
        let keeps_port = match map.data.as_deref() {
            Some([Field::Addr, Field::Port]) => false,
            Some([Field::Addr]) => true,
            _ => {
                return Err(eval(format!(
                    "@{map_name} does not map to address . port or address"
                )))
            }
        };
        let mut numgens = expr.iter().filter_map(|s| match s {
            Sel::Numgen(n) => Some(*n),
            _ => None,
        });
        let slots = numgens.next().unwrap_or(1);
        if numgens.next().is_some() {
            return Err(eval(format!("@{map_name}: two numgen in one key")));
        }
        let mut targets: Vec<DnatTarget> = Vec::new();
        for slot in 0..slots {
            let key = self.key(expr, Some(slot))?;
            check_types(map_name, &map.key, &key)?;
            let data = map.elements.get(&key).ok_or_else(|| {
                eval(format!(
                    "@{map_name} has no element for {key:?}: slot {slot} of {slots} would fall through"
                ))
            })?;
            let (addr, port) = match data[..] {
                [Value::Addr(addr), Value::Port(port)] if !keeps_port => (addr, port),
                [Value::Addr(addr)] if keeps_port => (addr, self.ctx.dport),
                _ => return Err(eval(format!("@{map_name}: bad data {data:?}"))),
            };
            match targets
                .iter_mut()
                .find(|t| t.addr == addr && t.port == port)
            {
                Some(t) => t.slots += 1,
                None => targets.push(DnatTarget {
                    addr,
                    port,
                    slots: 1,
                }),
            }
        }
        if let Some(first) = targets.first() {
            self.ctx.daddr = first.addr;
            self.ctx.dport = first.port;
        }
        self.ctx.dnat = Some((targets, slots));
        Ok(())
    }
}

fn check_types(name: &str, want: &[Field], key: &[Value]) -> Result<(), TraceError> {
    let got: Vec<Field> = key
        .iter()
        .map(|v| match v {
            Value::Addr(_) => Field::Addr,
            Value::Proto(_) => Field::Proto,
            Value::Port(_) => Field::Port,
            Value::Int(_) => Field::Int,
        })
        .collect();
    if got != want {
        return Err(eval(format!(
            "@{name}: key types {want:?}, lookup with {got:?}"
        )));
    }
    Ok(())
}

fn eval(message: String) -> TraceError {
    TraceError::Eval(message)
}
