//! The incremental script that turns the applied [`Table`] into the desired one.
//!
//! Changed elements become `delete element` / `add element` lines; a slot-count group that
//! appears or empties adds or removes its set, map and chain. A rule is never added to an
//! existing chain that references an existing map: nft 1.0.6 cannot re-read a `typeof ... : ip
//! daddr . th dport` map from the kernel when parsing such a rule ("conflicting protocols
//! specified: ip vs. th"), so each group's rule lives in its own chain created together with the
//! map, and `services` only holds jumps, which are rewritten (flush + add) when groups change.

use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};

use super::names::FAMILY;
use super::ruleset::{Chain, Table};

/// Elements per `add element` / `delete element` command.
const ELEMENTS_PER_COMMAND: usize = 500;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Incremental {
    pub script: String,
    pub elements_added: usize,
    pub elements_removed: usize,
}

impl Incremental {
    pub fn is_empty(&self) -> bool {
        self.script.is_empty()
    }
}

/// `None` when the change needs a full sync: another table name, or base chains that differ
/// in type, hook or priority.
pub fn incremental(applied: &Table, desired: &Table) -> Option<Incremental> {
    if applied.name != desired.name {
        return None;
    }
    let old_chains: BTreeMap<&str, &Chain> = applied
        .chains
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    let new_chains: BTreeMap<&str, &Chain> = desired
        .chains
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    for (name, old) in &old_chains {
        let new_base = new_chains.get(name).map(|c| c.base);
        if old.base.is_some() && new_base != Some(old.base) {
            return None;
        }
    }
    for (name, new) in &new_chains {
        if new.base.is_some() && old_chains.get(name).map(|c| c.base) != Some(new.base) {
            return None;
        }
    }

    let mut script = Script::new(&desired.name);
    let mut out = Incremental::default();

    let removed_chains: Vec<&str> = old_chains
        .keys()
        .filter(|n| !new_chains.contains_key(*n))
        .copied()
        .collect();
    let changed_chains: Vec<&Chain> = desired
        .chains
        .iter()
        .filter(|c| {
            old_chains
                .get(c.name.as_str())
                .is_some_and(|old| old.rules != c.rules)
        })
        .collect();
    let added_chains: Vec<&Chain> = desired
        .chains
        .iter()
        .filter(|c| !old_chains.contains_key(c.name.as_str()))
        .collect();

    for chain in changed_chains
        .iter()
        .map(|c| c.name.as_str())
        .chain(removed_chains.iter().copied())
    {
        script.cmd("flush chain", chain);
    }

    // Deletions of elements in sets and maps that stay.
    let mut adds: Vec<(&str, Vec<String>)> = Vec::new();
    for (name, new) in &desired.sets {
        let Some(old) = applied.sets.get(name) else {
            continue;
        };
        let gone: Vec<String> = old
            .elements
            .difference(&new.elements)
            .map(|e| e.to_string())
            .collect();
        let came: Vec<String> = new
            .elements
            .difference(&old.elements)
            .map(|e| e.to_string())
            .collect();
        out.elements_removed += gone.len();
        script.elements("delete", name, &gone);
        adds.push((name, came));
    }
    for (name, new) in &desired.maps {
        let Some(old) = applied.maps.get(name) else {
            continue;
        };
        let mut gone = Vec::new();
        for (key, target) in &old.elements {
            match new.elements.get(key) {
                Some(t) if t == target => {}
                _ => gone.push(key.to_string()),
            }
        }
        let came: Vec<String> = new
            .elements
            .iter()
            .filter(|(key, target)| old.elements.get(key) != Some(target))
            .map(|(key, target)| format!("{key} : {target}"))
            .collect();
        out.elements_removed += gone.len();
        script.elements("delete", name, &gone);
        adds.push((name, came));
    }

    for chain in &removed_chains {
        script.cmd("delete chain", chain);
    }
    for name in applied
        .sets
        .keys()
        .filter(|n| !desired.sets.contains_key(*n))
    {
        script.cmd("delete set", name);
    }
    for name in applied
        .maps
        .keys()
        .filter(|n| !desired.maps.contains_key(*n))
    {
        script.cmd("delete map", name);
    }

    for (name, set) in desired
        .sets
        .iter()
        .filter(|(n, _)| !applied.sets.contains_key(*n))
    {
        script.cmd("add set", format_args!("{name} {{ {}; }}", set.type_decl()));
        adds.push((name, set.elements.iter().map(|e| e.to_string()).collect()));
    }
    for (name, map) in desired
        .maps
        .iter()
        .filter(|(n, _)| !applied.maps.contains_key(*n))
    {
        script.cmd("add map", format_args!("{name} {{ {}; }}", map.type_decl()));
        adds.push((
            name,
            map.elements
                .iter()
                .map(|(k, v)| format!("{k} : {v}"))
                .collect(),
        ));
    }
    for (name, elements) in &adds {
        out.elements_added += elements.len();
        script.elements("add", name, elements);
    }

    for chain in &added_chains {
        script.cmd("add chain", &chain.name);
    }
    for chain in added_chains.iter().chain(changed_chains.iter()) {
        for rule in &chain.rules {
            script.cmd("add rule", format_args!("{} {rule}", chain.name));
        }
    }

    out.script = script.finish();
    Some(out)
}

/// Builds command lines addressed to one table.
struct Script {
    table: String,
    text: String,
}

impl Script {
    fn new(table: &str) -> Self {
        Script {
            table: format!("{FAMILY} {table}"),
            text: String::new(),
        }
    }

    /// `<verb> ip <table> <rest>`, e.g. `flush chain ip routemesh_lb services`.
    fn cmd(&mut self, verb: &str, rest: impl Display) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "{verb} {} {rest}", self.table);
    }

    fn elements(&mut self, verb: &str, name: &str, elements: &[String]) {
        for chunk in elements.chunks(ELEMENTS_PER_COMMAND) {
            self.cmd(
                &format!("{verb} element"),
                format_args!("{name} {{ {} }}", chunk.join(", ")),
            );
        }
    }

    fn finish(self) -> String {
        self.text
    }
}
