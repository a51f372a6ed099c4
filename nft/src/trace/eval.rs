//! Evaluating the parsed chains of one namespace for one packet.

use std::net::Ipv4Addr;

use routemesh_types::Proto;

use super::parse::{DnatSource, HookName, Match, PChain, PSet, PTable, Sel, Stmt};
use super::{DnatTarget, Field, RejectKind, Ruleset, SourceNat, Trace, TraceError, Value, Verdict};

/// What is known about the namespace the packet is in.
pub(crate) struct Env<'a> {
    pub local: Locality<'a>,
    /// The interface the packet arrived on (prerouting, input, forward).
    pub iif: Option<&'a str>,
    /// The interface it leaves through (forward, output, postrouting).
    pub oif: Option<&'a str>,
}

/// How `fib ... type local` is answered.
pub(crate) enum Locality<'a> {
    /// Only whether the packet's original destination is local is known (one namespace).
    DstFlag(bool),
    /// The namespace's addresses are known.
    Addrs(&'a dyn LocalAddrs),
}

/// A namespace that knows its own addresses.
pub(crate) trait LocalAddrs {
    fn is_local(&self, addr: Ipv4Addr) -> bool;
}

/// The packet as the rules see it, NAT applied so far in this namespace included.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub saddr: Ipv4Addr,
    pub daddr: Ipv4Addr,
    pub proto: u8,
    pub dport: u16,
    pub mark: u32,
    /// Destination NAT decided in this namespace: every target and the slot count.
    pub dnat: Option<(Vec<DnatTarget>, u32)>,
}

impl Ctx {
    pub fn new(saddr: Ipv4Addr, daddr: Ipv4Addr, proto: Proto, dport: u16) -> Ctx {
        Ctx {
            saddr,
            daddr,
            proto: proto.number(),
            dport,
            mark: 0,
            dnat: None,
        }
    }
}

pub(crate) struct Walk<'a> {
    ruleset: &'a Ruleset,
    pub ctx: Ctx,
    pub snat: Option<SourceNat>,
    pub chains: Vec<String>,
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
    pub fn new(ruleset: &'a Ruleset, ctx: Ctx) -> Walk<'a> {
        Walk {
            ruleset,
            ctx,
            snat: None,
            chains: Vec::new(),
        }
    }

    /// The same walk so far, going on with another packet (one branch of a DNAT pick).
    pub fn clone_with(&self, ctx: Ctx) -> Walk<'a> {
        Walk {
            ruleset: self.ruleset,
            ctx,
            snat: self.snat,
            chains: self.chains.clone(),
        }
    }

    pub fn finish(self, verdict: Verdict) -> Trace {
        Trace {
            verdict,
            snat: self.snat,
            chains: self.chains,
        }
    }

    /// Runs the base chains of `hook` in priority order; `Some` when the packet is dropped or
    /// rejected. Once a NAT statement ran at this hook, later nat chains are skipped (the
    /// connection's binding is made).
    pub fn hook(&mut self, hook: HookName, env: &Env<'_>) -> Result<Option<Verdict>, TraceError> {
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
            let Some(base) = table.chains[name].base.as_ref() else {
                continue;
            };
            if base.nat && nat_done {
                continue;
            }
            match self.chain(table, name, env, 0)? {
                Outcome::Continue if base.policy_drop => return Ok(Some(Verdict::Drop)),
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
        env: &Env<'_>,
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
        'rules: for rule in &chain.rules {
            for m in &rule.matches {
                if !self.matches(table, m, env)? {
                    continue 'rules;
                }
            }
            for stmt in &rule.stmts {
                let outcome = match stmt {
                    Stmt::Counter => continue,
                    Stmt::SetMarkTo(mark) => {
                        self.ctx.mark = *mark;
                        continue;
                    }
                    Stmt::SetMark(expr, map) => {
                        if self.set_mark(table, expr, map)? {
                            continue;
                        }
                        // A key missing from the map ends the rule here.
                        continue 'rules;
                    }
                    Stmt::Accept => Outcome::Accept,
                    Stmt::Drop => Outcome::Final(Verdict::Drop),
                    Stmt::RejectTcpReset => {
                        if self.ctx.proto != Proto::Tcp.number() {
                            return Err(eval("reject with tcp reset on a non-TCP packet".into()));
                        }
                        Outcome::Final(Verdict::Reject(RejectKind::TcpReset))
                    }
                    Stmt::RejectPortUnreachable => {
                        Outcome::Final(Verdict::Reject(RejectKind::PortUnreachable))
                    }
                    Stmt::Jump(target) => match self.chain(table, target, env, depth + 1)? {
                        Outcome::Continue => continue,
                        other => other,
                    },
                    Stmt::Goto(target) => match self.chain(table, target, env, depth + 1)? {
                        // The end of a goto target returns past the chain that went there.
                        Outcome::Continue => return Ok(Outcome::Continue),
                        other => other,
                    },
                    Stmt::Dnat(source) => {
                        self.dnat(table, source)?;
                        Outcome::Nat
                    }
                    Stmt::Masquerade => {
                        self.snat = Some(SourceNat::Masquerade);
                        Outcome::Nat
                    }
                    Stmt::SnatTo(addr) => {
                        self.snat = Some(SourceNat::To(*addr));
                        Outcome::Nat
                    }
                };
                return Ok(outcome);
            }
        }
        Ok(Outcome::Continue)
    }

    fn matches(&self, table: &PTable, m: &Match, env: &Env<'_>) -> Result<bool, TraceError> {
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
            Match::Range(sel, lo, hi) => {
                let actual = self.key(&[*sel], None)?;
                Ok(lo <= &actual[0] && &actual[0] <= hi)
            }
            Match::Eq {
                sel,
                literal,
                negated,
            } => self.compare(*sel, literal, env).map(|hit| hit != *negated),
        }
    }

    fn compare(&self, sel: Sel, literal: &str, env: &Env<'_>) -> Result<bool, TraceError> {
        let known_words = |actual: &str, known: &[&str]| {
            if known.contains(&literal) {
                Ok(actual == literal)
            } else {
                Err(eval(format!("unsupported value {literal:?} for {sel:?}")))
            }
        };
        let addr_type = |local: bool| if local { "local" } else { "unicast" };
        match sel {
            Sel::CtState => known_words("new", &["new", "established", "related", "invalid"]),
            Sel::CtStatus => known_words(
                if self.ctx.dnat.is_some() { "dnat" } else { "" },
                &["dnat", "snat", "confirmed"],
            ),
            Sel::FibDaddrType => {
                let local = match env.local {
                    Locality::DstFlag(dst_local) => dst_local && self.ctx.dnat.is_none(),
                    Locality::Addrs(ns) => ns.is_local(self.ctx.daddr),
                };
                known_words(addr_type(local), &["local", "unicast"])
            }
            Sel::FibSaddrType => match env.local {
                Locality::Addrs(ns) => known_words(
                    addr_type(ns.is_local(self.ctx.saddr)),
                    &["local", "unicast"],
                ),
                Locality::DstFlag(_) => Err(eval(
                    "fib saddr type needs the namespace's addresses (trace it in a Network)".into(),
                )),
            },
            Sel::Iifname | Sel::Oifname => {
                let name = literal
                    .strip_prefix('"')
                    .and_then(|s| s.strip_suffix('"'))
                    .ok_or_else(|| eval(format!("{sel:?} {literal}: not a quoted name")))?;
                let actual = if sel == Sel::Iifname {
                    env.iif
                } else {
                    env.oif
                };
                let actual = actual.ok_or_else(|| {
                    eval(format!("{sel:?} is not known at this point of the trace"))
                })?;
                Ok(actual == name)
            }
            Sel::IpSaddr | Sel::IpDaddr => {
                let actual = if sel == Sel::IpSaddr {
                    self.ctx.saddr
                } else {
                    self.ctx.daddr
                };
                if let Ok(net) = literal.parse::<ipnet::Ipv4Net>() {
                    return Ok(net.contains(&actual));
                }
                let want: Ipv4Addr = literal
                    .parse()
                    .map_err(|_| eval(format!("{sel:?} {literal:?}: not an address")))?;
                Ok(want == actual)
            }
            Sel::L4proto | Sel::Dport | Sel::Mark => {
                let field = sel.field().unwrap_or(Field::Int);
                let want = field
                    .parse(literal)
                    .ok_or_else(|| eval(format!("{sel:?} {literal:?}")))?;
                Ok(self.key(&[sel], None)? == [want])
            }
            Sel::Numgen(_) => Err(eval(format!("unsupported comparison {sel:?}"))),
            // Traced packets are never VXLAN-encapsulated, nor decrypted by IPsec.
            Sel::VxlanVni => Ok(false),
            Sel::Ipsec => known_words("missing", &["exists", "missing"]),
        }
    }

    fn key(&self, expr: &[Sel], numgen: Option<u32>) -> Result<Vec<Value>, TraceError> {
        expr.iter()
            .map(|sel| match sel {
                Sel::IpDaddr => Ok(Value::Addr(self.ctx.daddr)),
                Sel::IpSaddr => Ok(Value::Addr(self.ctx.saddr)),
                Sel::L4proto => Ok(Value::Proto(self.ctx.proto)),
                Sel::Dport => Ok(Value::Port(self.ctx.dport)),
                Sel::Mark => Ok(Value::Mark(self.ctx.mark)),
                Sel::Numgen(_) => numgen
                    .map(Value::Int)
                    .ok_or_else(|| eval("numgen outside a dnat map key".into())),
                other => Err(eval(format!("{other:?} cannot be part of a key"))),
            })
            .collect()
    }

    /// `meta mark set KEY map @map`: whether the key was found (and the mark set).
    fn set_mark(
        &mut self,
        table: &PTable,
        expr: &[Sel],
        map_name: &str,
    ) -> Result<bool, TraceError> {
        let map = table
            .sets
            .get(map_name)
            .ok_or_else(|| eval(format!("meta mark set through missing map @{map_name}")))?;
        if map.data.as_deref() != Some(&[Field::Mark]) {
            return Err(eval(format!("@{map_name} does not map to a mark")));
        }
        let key = self.key(expr, None)?;
        check_types(map_name, &map.key, &key)?;
        match map.elements.get(&key).map(|d| d.as_slice()) {
            Some([Value::Mark(mark)]) => {
                self.ctx.mark = *mark;
                Ok(true)
            }
            Some(other) => Err(eval(format!("@{map_name}: bad data {other:?}"))),
            None => Ok(false),
        }
    }

    fn dnat(&mut self, table: &PTable, source: &DnatSource) -> Result<(), TraceError> {
        let (expr, map_name, map): (&[Sel], &str, &PSet) = match source {
            DnatSource::Fixed(addr, port) => {
                let target = DnatTarget {
                    addr: *addr,
                    port: port.unwrap_or(self.ctx.dport),
                    slots: 1,
                };
                return self.set_dnat(vec![target], 1);
            }
            DnatSource::Named(expr, name) => {
                let map = table
                    .sets
                    .get(name)
                    .ok_or_else(|| eval(format!("dnat through missing map @{name}")))?;
                // `address . port`, or `address` alone (address-only VIPs: the packet keeps
                // its port).
                if !matches!(
                    map.data.as_deref(),
                    Some([Field::Addr, Field::Port]) | Some([Field::Addr])
                ) {
                    return Err(eval(format!(
                        "@{name} does not map to address . port or address"
                    )));
                }
                (expr, name, map)
            }
            DnatSource::Anonymous(expr, map) => (expr, "an anonymous map", map),
        };
        let mut numgens = expr.iter().filter_map(|s| match s {
            Sel::Numgen(n) => Some(*n),
            _ => None,
        });
        let slots = numgens.next().unwrap_or(1);
        if numgens.next().is_some() {
            return Err(eval(format!("{map_name}: two numgen in one key")));
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
                [Value::Addr(addr), Value::Port(port)] => (addr, port),
                [Value::Addr(addr)] => (addr, self.ctx.dport),
                _ => return Err(eval(format!("{map_name}: bad data {data:?}"))),
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
        self.set_dnat(targets, slots)
    }

    fn set_dnat(&mut self, targets: Vec<DnatTarget>, slots: u32) -> Result<(), TraceError> {
        if let Some(first) = targets.first() {
            self.ctx.daddr = first.addr;
            self.ctx.dport = first.port;
        }
        self.ctx.dnat = Some((targets, slots));
        Ok(())
    }
}

fn check_types(name: &str, want: &[Field], key: &[Value]) -> Result<(), TraceError> {
    let got: Vec<Field> = key.iter().map(|v| v.field()).collect();
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
