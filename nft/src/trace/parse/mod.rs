//! Parser for the nft text routemesh renders: full table blocks and the incremental commands.
//! Anything else is an error naming the line and the token.

use std::collections::BTreeMap;

mod rule;

use super::{Field, TraceError, Value};

mod ast;

pub use ast::*;

/// Key and data (empty for sets) of one element.
type Element = (Vec<Value>, Vec<Value>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tok<'a> {
    text: &'a str,
    line: usize,
}

struct Parser<'a> {
    toks: Vec<Tok<'a>>,
    pos: usize,
}

const NL: &str = "\n";

fn tokenize(text: &str) -> Vec<Tok<'_>> {
    let mut toks = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let mut start = None;
        for (j, c) in line.char_indices() {
            let punct = matches!(c, '{' | '}' | ';' | ',');
            if c.is_whitespace() || punct {
                if let Some(s) = start.take() {
                    toks.push(Tok {
                        text: &line[s..j],
                        line: line_no,
                    });
                }
                if punct {
                    toks.push(Tok {
                        text: &line[j..j + c.len_utf8()],
                        line: line_no,
                    });
                }
            } else if start.is_none() {
                start = Some(j);
            }
        }
        if let Some(s) = start {
            toks.push(Tok {
                text: &line[s..],
                line: line_no,
            });
        }
        toks.push(Tok {
            text: NL,
            line: line_no,
        });
    }
    toks
}

/// Applies `text` (blocks and commands) to `tables`, as nft would, minus the kernel.
pub fn apply(tables: &mut BTreeMap<String, PTable>, text: &str) -> Result<(), TraceError> {
    let mut p = Parser {
        toks: tokenize(text),
        pos: 0,
    };
    loop {
        p.skip_nl();
        let Some(first) = p.peek() else {
            return Ok(());
        };
        match first {
            "table" => {
                p.next()?;
                let name = p.table_name()?;
                p.expect("{")?;
                let table = tables.entry(name).or_default();
                p.table_body(table)?;
            }
            "add" | "delete" | "flush" => p.command(tables)?,
            other => return Err(p.err(format!("unsupported command {other:?}"))),
        }
    }
}

/// The priority nft gives a standard name, where nft (1.0.6) accepts that name on `hook`.
fn named_priority(name: &str, hook: HookName) -> Option<i32> {
    match (name, hook) {
        ("raw", _) => Some(-300),
        ("mangle", _) => Some(-150),
        ("dstnat", HookName::Prerouting) => Some(-100),
        ("filter", _) => Some(0),
        ("security", _) => Some(50),
        ("srcnat", HookName::Postrouting) => Some(100),
        _ => None,
    }
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.toks.get(self.pos).map(|t| t.text)
    }

    fn line(&self) -> usize {
        self.toks
            .get(self.pos.min(self.toks.len().saturating_sub(1)))
            .map_or(0, |t| t.line)
    }

    fn err(&self, message: String) -> TraceError {
        TraceError::Parse {
            line: self.line(),
            message,
        }
    }

    fn next(&mut self) -> Result<&'a str, TraceError> {
        let tok = self
            .toks
            .get(self.pos)
            .map(|t| t.text)
            .ok_or_else(|| self.err("unexpected end of input".into()))?;
        self.pos += 1;
        Ok(tok)
    }

    fn expect(&mut self, want: &str) -> Result<(), TraceError> {
        let line = self.line();
        let got = self.next()?;
        if got == want {
            Ok(())
        } else {
            Err(TraceError::Parse {
                line,
                message: format!("expected {want:?}, found {got:?}"),
            })
        }
    }

    fn eat(&mut self, want: &str) -> bool {
        if self.peek() == Some(want) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_nl(&mut self) {
        while self.eat(NL) {}
    }

    fn skip_nl_and_semicolons(&mut self) {
        while self.eat(NL) || self.eat(";") {}
    }

    fn name(&mut self) -> Result<String, TraceError> {
        let tok = self.next()?;
        if tok.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !tok.is_empty() {
            Ok(tok.to_string())
        } else {
            Err(self.err(format!("bad name {tok:?}")))
        }
    }

    fn table_name(&mut self) -> Result<String, TraceError> {
        self.expect("ip")?;
        self.name()
    }

    fn command(&mut self, tables: &mut BTreeMap<String, PTable>) -> Result<(), TraceError> {
        let verb = self.next()?;
        let object = self.next()?;
        let table_name = self.table_name()?;
        if (verb, object) == ("add", "table") {
            tables.entry(table_name).or_default();
            return self.end_of_line();
        }
        if (verb, object) == ("delete", "table") {
            tables
                .remove(&table_name)
                .ok_or_else(|| self.err(format!("delete table {table_name}: no such table")))?;
            return self.end_of_line();
        }
        let line = self.line();
        let Some(table) = tables.get_mut(&table_name) else {
            return Err(self.err(format!("table {table_name}: no such table")));
        };
        let name = self.name()?;
        let fail = |message: String| TraceError::Parse { line, message };
        match (verb, object) {
            ("add", "set" | "map") => {
                self.expect("{")?;
                let set = self.set_body()?;
                // As the kernel: declaring an existing set again is nothing when the
                // declaration is the same (elements are kept), refused otherwise.
                match table.sets.get_mut(&name) {
                    Some(old) if old.key == set.key && old.data == set.data => {
                        old.elements.extend(set.elements);
                    }
                    Some(_) => {
                        return Err(fail(format!(
                            "add {object} {name}: exists with another declaration"
                        )))
                    }
                    None => {
                        table.sets.insert(name, set);
                    }
                }
            }
            ("flush", "set" | "map") => {
                table
                    .sets
                    .get_mut(&name)
                    .ok_or_else(|| fail(format!("flush {object} {name}: no such object")))?
                    .elements
                    .clear();
            }
            ("delete", "set" | "map") => {
                if table
                    .chains
                    .values()
                    .any(|c| c.rules.iter().any(|r| r.references(&name)))
                {
                    return Err(fail(format!("delete {object} {name}: in use by a rule")));
                }
                table
                    .sets
                    .remove(&name)
                    .ok_or_else(|| fail(format!("delete {object} {name}: no such object")))?;
            }
            ("add" | "delete", "element") => {
                self.expect("{")?;
                let set = table
                    .sets
                    .get_mut(&name)
                    .ok_or_else(|| fail(format!("{verb} element: no set or map {name}")))?;
                let elements = self.elements(set, verb == "delete")?;
                for (key, data) in elements {
                    if verb == "delete" {
                        set.elements
                            .remove(&key)
                            .ok_or_else(|| fail(format!("delete element {name} {key:?}: none")))?;
                    } else if let Some(old) = set.elements.get(&key) {
                        if *old != data {
                            return Err(fail(format!(
                                "add element {name} {key:?}: exists with other data"
                            )));
                        }
                    } else {
                        set.elements.insert(key, data);
                    }
                }
            }
            ("add", "chain") => {
                // `add chain NAME { type ... }` declares a base chain; as in nft, adding a
                // chain that exists with the same declaration changes nothing.
                let base = if self.eat("{") {
                    self.chain_body()?.base
                } else {
                    None
                };
                match table.chains.get(&name) {
                    Some(old) if old.base == base => {}
                    Some(_) => {
                        return Err(fail(format!(
                            "add chain {name}: exists with another declaration"
                        )))
                    }
                    None => {
                        table.chains.insert(
                            name,
                            PChain {
                                base,
                                rules: Vec::new(),
                            },
                        );
                    }
                }
            }
            ("delete", "chain") => {
                let chain = table
                    .chains
                    .get(&name)
                    .ok_or_else(|| fail(format!("delete chain {name}: no such chain")))?;
                if !chain.rules.is_empty() {
                    return Err(fail(format!("delete chain {name}: not empty")));
                }
                if table
                    .chains
                    .values()
                    .any(|c| c.rules.iter().any(|r| r.references(&name)))
                {
                    return Err(fail(format!("delete chain {name}: jumped to")));
                }
                table.chains.remove(&name);
            }
            ("flush", "chain") => {
                table
                    .chains
                    .get_mut(&name)
                    .ok_or_else(|| fail(format!("flush chain {name}: no such chain")))?
                    .rules
                    .clear();
            }
            ("add", "rule") => {
                let rule = self.rule()?;
                table
                    .chains
                    .get_mut(&name)
                    .ok_or_else(|| fail(format!("add rule: no chain {name}")))?
                    .rules
                    .push(rule);
                return Ok(());
            }
            _ => return Err(fail(format!("unsupported command {verb} {object}"))),
        }
        self.end_of_line()
    }

    fn end_of_line(&mut self) -> Result<(), TraceError> {
        match self.peek() {
            None => Ok(()),
            Some(NL) => {
                self.pos += 1;
                Ok(())
            }
            Some(other) => Err(self.err(format!("unexpected {other:?} at end of command"))),
        }
    }

    fn table_body(&mut self, table: &mut PTable) -> Result<(), TraceError> {
        loop {
            self.skip_nl();
            match self.next()? {
                "}" => return self.end_of_line(),
                kind @ ("set" | "map") => {
                    let name = self.name()?;
                    self.expect("{")?;
                    let set = self.set_body()?;
                    if table.sets.insert(name.clone(), set).is_some() {
                        return Err(self.err(format!("{kind} {name} defined twice")));
                    }
                }
                "chain" => {
                    let name = self.name()?;
                    self.expect("{")?;
                    let chain = self.chain_body()?;
                    if table.chains.insert(name.clone(), chain).is_some() {
                        return Err(self.err(format!("chain {name} defined twice")));
                    }
                }
                other => return Err(self.err(format!("unexpected {other:?} in table"))),
            }
        }
    }

    /// After `set NAME {` / `map NAME {`, through the closing `}`.
    fn set_body(&mut self) -> Result<PSet, TraceError> {
        let mut set = PSet::default();
        let mut declared = false;
        loop {
            self.skip_nl_and_semicolons();
            match self.next()? {
                "}" => break,
                "type" => {
                    set.key = self.type_names()?;
                    if self.eat(":") {
                        set.data = Some(self.type_names()?);
                    }
                    declared = true;
                }
                "typeof" => {
                    set.key = rule::fields(&self.expr()?).map_err(|m| self.err(m))?;
                    if self.eat(":") {
                        set.data = Some(rule::fields(&self.expr()?).map_err(|m| self.err(m))?);
                    }
                    declared = true;
                }
                "elements" => {
                    if !declared {
                        return Err(self.err("elements before type".into()));
                    }
                    self.expect("=")?;
                    self.expect("{")?;
                    let elements = self.elements(&set, false)?;
                    set.elements.extend(elements);
                }
                other => return Err(self.err(format!("unexpected {other:?} in set"))),
            }
        }
        if !declared {
            return Err(self.err("set without type".into()));
        }
        Ok(set)
    }

    fn type_names(&mut self) -> Result<Vec<Field>, TraceError> {
        let mut out = Vec::new();
        loop {
            let field = match self.next()? {
                "ipv4_addr" => Field::Addr,
                "inet_proto" => Field::Proto,
                "inet_service" => Field::Port,
                "mark" => Field::Mark,
                other => return Err(self.err(format!("unsupported type {other:?}"))),
            };
            out.push(field);
            if !self.eat(".") {
                return Ok(out);
            }
        }
    }

    /// After `{`: elements through `}`. Keys only when `keys_only` (delete element).
    fn elements(&mut self, set: &PSet, keys_only: bool) -> Result<Vec<Element>, TraceError> {
        let mut out = Vec::new();
        loop {
            self.skip_nl();
            if self.eat("}") {
                return Ok(out);
            }
            let key = self.values(&set.key)?;
            let data = match (&set.data, keys_only) {
                (Some(data), false) => {
                    self.expect(":")?;
                    self.values(data)?
                }
                _ => Vec::new(),
            };
            out.push((key, data));
            self.skip_nl();
            if !self.eat(",") {
                self.skip_nl();
                self.expect("}")?;
                return Ok(out);
            }
        }
    }

    fn values(&mut self, types: &[Field]) -> Result<Vec<Value>, TraceError> {
        let mut out = Vec::with_capacity(types.len());
        for (i, field) in types.iter().enumerate() {
            if i > 0 {
                self.expect(".")?;
            }
            let tok = self.next()?;
            let value = field
                .parse(tok)
                .ok_or_else(|| self.err(format!("{tok:?} is not a {field:?}")))?;
            out.push(value);
        }
        Ok(out)
    }

    /// After `chain NAME {`, through the closing `}`.
    fn chain_body(&mut self) -> Result<PChain, TraceError> {
        let mut chain = PChain::default();
        self.skip_nl();
        if self.eat("type") {
            let nat = match self.next()? {
                "nat" => true,
                // A route chain is a filter chain that routes again after a mark change;
                // the tracer routes after the output hook anyway.
                "filter" | "route" => false,
                other => return Err(self.err(format!("unsupported chain type {other:?}"))),
            };
            self.expect("hook")?;
            let hook = match self.next()? {
                "prerouting" => HookName::Prerouting,
                "input" => HookName::Input,
                "forward" => HookName::Forward,
                "output" => HookName::Output,
                "postrouting" => HookName::Postrouting,
                other => return Err(self.err(format!("unsupported hook {other:?}"))),
            };
            self.expect("priority")?;
            let tok = self.next()?;
            let priority = match tok.parse() {
                Ok(n) => n,
                Err(_) => named_priority(tok, hook).ok_or_else(|| {
                    self.err(format!("unsupported priority {tok:?} on hook {hook:?}"))
                })?,
            };
            self.expect(";")?;
            self.expect("policy")?;
            let policy_drop = match self.next()? {
                "accept" => false,
                "drop" => true,
                other => return Err(self.err(format!("unsupported policy {other:?}"))),
            };
            self.expect(";")?;
            chain.base = Some(PBase {
                nat,
                hook,
                priority,
                policy_drop,
            });
        }
        loop {
            self.skip_nl();
            if self.eat("}") {
                return Ok(chain);
            }
            if self.peek().is_none() {
                return Err(self.err("the chain's block is not closed".into()));
            }
            chain.rules.push(self.rule()?);
        }
    }
}
