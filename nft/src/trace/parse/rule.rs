//! Rules: matches, statements and the expressions they are built from.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::{DnatSource, Match, PRule, PSet, Parser, Sel, Stmt, NL};
use crate::trace::{Field, TraceError, Value};

impl Parser<'_> {
    /// One rule: tokens up to the end of the line.
    pub(super) fn rule(&mut self) -> Result<PRule, TraceError> {
        let mut rule = PRule {
            matches: Vec::new(),
            stmts: Vec::new(),
        };
        while let Some(tok) = self.peek() {
            if tok == NL {
                self.pos += 1;
                break;
            }
            if let Some(stmt) = self.statement()? {
                rule.stmts.push(stmt);
                continue;
            }
            if !rule.stmts.is_empty() {
                return Err(self.err(format!("unexpected {tok:?} after the rule's statement")));
            }
            let expr = self.expr()?;
            let tok = self.next()?;
            if let Some(set) = tok.strip_prefix('@') {
                rule.matches.push(Match::Lookup(expr, set.to_string()));
                continue;
            }
            let [sel] = expr[..] else {
                return Err(self.err(format!("unsupported comparison with {tok:?}")));
            };
            if tok == "!=" {
                let literal = self.next()?.to_string();
                rule.matches.push(Match::Eq {
                    sel,
                    literal,
                    negated: true,
                });
            } else if let Some(range) = self.range(sel, tok)? {
                rule.matches.push(range);
            } else {
                rule.matches.push(Match::Eq {
                    sel,
                    literal: tok.to_string(),
                    negated: false,
                });
            }
        }
        Ok(rule)
    }

    /// `LOW-HIGH` for a selector with a numeric type.
    fn range(&self, sel: Sel, tok: &str) -> Result<Option<Match>, TraceError> {
        let Some(field @ (Field::Mark | Field::Port | Field::Int)) = sel.field() else {
            return Ok(None);
        };
        let Some((lo, hi)) = tok.split_once('-') else {
            return Ok(None);
        };
        let bad = || self.err(format!("{tok:?} is not a range of {field:?}"));
        let lo = field.parse(lo).ok_or_else(bad)?;
        let hi = field.parse(hi).ok_or_else(bad)?;
        Ok(Some(Match::Range(sel, lo, hi)))
    }

    fn statement(&mut self) -> Result<Option<Stmt>, TraceError> {
        let Some(tok) = self.peek() else {
            return Ok(None);
        };
        let stmt = match tok {
            "jump" | "goto" => {
                self.pos += 1;
                let chain = self.name()?;
                if tok == "jump" {
                    Stmt::Jump(chain)
                } else {
                    Stmt::Goto(chain)
                }
            }
            "counter" => {
                self.pos += 1;
                // As `nft list` prints it, with what it counted so far.
                if self.eat("packets") {
                    self.next()?;
                    self.expect("bytes")?;
                    self.next()?;
                }
                Stmt::Counter
            }
            "accept" => {
                self.pos += 1;
                Stmt::Accept
            }
            "drop" => {
                self.pos += 1;
                Stmt::Drop
            }
            "masquerade" => {
                self.pos += 1;
                Stmt::Masquerade
            }
            "reject" => {
                self.pos += 1;
                if !self.eat("with") {
                    Stmt::RejectPortUnreachable
                } else {
                    match (self.next()?, self.next()?) {
                        ("tcp", "reset") => Stmt::RejectTcpReset,
                        ("icmp", "type") => {
                            self.expect("port-unreachable")?;
                            Stmt::RejectPortUnreachable
                        }
                        (a, b) => return Err(self.err(format!("unsupported reject {a} {b}"))),
                    }
                }
            }
            "snat" => {
                self.pos += 1;
                self.expect("ip")?;
                self.expect("to")?;
                let tok = self.next()?;
                let addr = tok
                    .parse()
                    .map_err(|_| self.err(format!("snat to {tok:?}: not an address")))?;
                Stmt::SnatTo(addr)
            }
            "dnat" => {
                self.pos += 1;
                self.expect("ip")?;
                self.expect("to")?;
                Stmt::Dnat(self.dnat_source()?)
            }
            "meta" if self.toks.get(self.pos + 2).map(|t| t.text) == Some("set") => {
                self.pos += 1;
                self.expect("mark")?;
                self.expect("set")?;
                if let Some(mark) = self.peek().and_then(parse_mark) {
                    self.pos += 1;
                    return Ok(Some(Stmt::SetMarkTo(mark)));
                }
                let expr = self.expr()?;
                self.expect("map")?;
                let tok = self.next()?;
                let map = tok
                    .strip_prefix('@')
                    .ok_or_else(|| self.err(format!("meta mark set map {tok:?}: only named")))?;
                Stmt::SetMark(expr, map.to_string())
            }
            _ => return Ok(None),
        };
        Ok(Some(stmt))
    }

    /// After `dnat ip to`.
    fn dnat_source(&mut self) -> Result<DnatSource, TraceError> {
        let Some(tok) = self.peek() else {
            return Err(self.err("dnat without a target".into()));
        };
        if let Ok(addr) = tok.parse::<Ipv4Addr>() {
            self.pos += 1;
            return Ok(DnatSource::Fixed(addr, None));
        }
        if let Some((addr, port)) = tok.split_once(':') {
            let addr = addr.parse().ok();
            let port = port.parse().ok();
            if let (Some(addr), Some(port)) = (addr, port) {
                self.pos += 1;
                return Ok(DnatSource::Fixed(addr, Some(port)));
            }
        }
        let expr = self.expr()?;
        self.expect("map")?;
        if self.eat("{") {
            let key = fields(&expr).map_err(|m| self.err(m))?;
            let mut set = PSet {
                key,
                data: None,
                elements: BTreeMap::new(),
            };
            set.elements = self.anonymous_elements(&set)?;
            return Ok(DnatSource::Anonymous(expr, set));
        }
        let tok = self.next()?;
        let map = tok
            .strip_prefix('@')
            .ok_or_else(|| self.err(format!("dnat map {tok:?}: not a map")))?;
        Ok(DnatSource::Named(expr, map.to_string()))
    }

    /// After `map {` of an anonymous map: `key : address [. port], ...}`.
    fn anonymous_elements(
        &mut self,
        set: &PSet,
    ) -> Result<BTreeMap<Vec<Value>, Vec<Value>>, TraceError> {
        let mut out = BTreeMap::new();
        loop {
            let key = self.values(&set.key)?;
            self.expect(":")?;
            let mut data = self.values(&[Field::Addr])?;
            if self.eat(".") {
                data.extend(self.values(&[Field::Port])?);
            }
            out.insert(key, data);
            if self.eat("}") {
                return Ok(out);
            }
            self.expect(",")?;
        }
    }

    pub(super) fn expr(&mut self) -> Result<Vec<Sel>, TraceError> {
        let mut out = Vec::new();
        loop {
            let sel = match (self.next()?, self.peek()) {
                ("ip", Some("daddr")) => Sel::IpDaddr,
                ("ip", Some("saddr")) => Sel::IpSaddr,
                ("meta", Some("l4proto")) => Sel::L4proto,
                ("meta", Some("mark")) => Sel::Mark,
                ("meta", Some("ipsec")) => Sel::Ipsec,
                ("@th", Some(",")) => {
                    for want in [",", "96", ",", "24"] {
                        self.expect(want)?;
                    }
                    out.push(Sel::VxlanVni);
                    if !self.eat(".") {
                        return Ok(out);
                    }
                    continue;
                }
                ("th", Some("dport")) => Sel::Dport,
                ("ct", Some("state")) => Sel::CtState,
                ("ct", Some("status")) => Sel::CtStatus,
                ("fib", Some(addr @ ("daddr" | "saddr"))) => {
                    self.pos += 1;
                    self.expect("type")?;
                    self.pos -= 1;
                    if addr == "daddr" {
                        Sel::FibDaddrType
                    } else {
                        Sel::FibSaddrType
                    }
                }
                ("iifname", _) => {
                    out.push(Sel::Iifname);
                    if !self.eat(".") {
                        return Ok(out);
                    }
                    continue;
                }
                ("oifname", _) => {
                    out.push(Sel::Oifname);
                    if !self.eat(".") {
                        return Ok(out);
                    }
                    continue;
                }
                ("numgen", Some("random")) => {
                    self.pos += 1;
                    self.expect("mod")?;
                    let tok = self.next()?;
                    let n = tok
                        .parse()
                        .ok()
                        .filter(|&n: &u32| n > 0)
                        .ok_or_else(|| self.err(format!("numgen mod {tok:?}")))?;
                    self.pos -= 1;
                    Sel::Numgen(n)
                }
                (a, b) => {
                    return Err(self.err(format!(
                        "unsupported expression {a:?} {:?}",
                        b.unwrap_or("")
                    )))
                }
            };
            self.pos += 1;
            out.push(sel);
            if !self.eat(".") {
                return Ok(out);
            }
        }
    }
}

/// `0x0000abcd` or a decimal number.
fn parse_mark(tok: &str) -> Option<u32> {
    match tok.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => tok.parse().ok(),
    }
}

/// Field types of a typeof expression.
pub(super) fn fields(expr: &[Sel]) -> Result<Vec<Field>, String> {
    expr.iter()
        .map(|s| {
            s.field()
                .filter(|f| *f != Field::Iface)
                .ok_or_else(|| format!("{s:?} cannot be part of a set key"))
        })
        .collect()
}
