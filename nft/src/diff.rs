//! The incremental transaction that turns the applied [`Table`] into the desired one, sending
//! only what differs (knftables' way): changed elements become `delete element` / `add
//! element`; a set, map or regular chain that appears or goes is added or deleted; a chain
//! whose rules changed is flushed and refilled.
//!
//! Owners that add rules referencing a map should create the rule's chain together with the
//! map (the load balancer does): nft 1.0.6 cannot re-read a `typeof ... : ip daddr . th dport`
//! map from the kernel when parsing a rule added to an existing chain.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Chain, Collection, CollectionKind, Element, Table, Value};
use crate::txn::{Op, Transaction};

/// `None` when only a full replacement will do: another table name, base chains that differ
/// in type, hook or priority, or a set or map whose declared type changed.
pub fn incremental(applied: &Table, desired: &Table) -> Option<Transaction> {
    if needs_replacement(applied, desired) {
        return None;
    }
    let table = desired.name.as_str();
    let mut txn = Transaction::new();

    let old_chains: BTreeMap<&str, &Chain> = applied
        .chains
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    let new_chains: BTreeSet<&str> = desired.chains.iter().map(|c| c.name.as_str()).collect();
    let removed_chains: Vec<&str> = old_chains
        .keys()
        .filter(|n| !new_chains.contains(*n))
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
        txn.push(Op::FlushChain {
            table: table.into(),
            chain: chain.into(),
        });
    }

    // Sets before maps, each in declaration order.
    fn by_kind(t: &Table, kind: CollectionKind) -> impl Iterator<Item = &Collection> {
        t.collections.iter().filter(move |c| c.kind() == kind)
    }
    let kinds = [CollectionKind::Set, CollectionKind::Map];
    let mut adds: Vec<(&str, Vec<Element>)> = Vec::new();
    for kind in kinds {
        for new in by_kind(desired, kind) {
            let Some(old) = applied.collection(&new.name) else {
                continue;
            };
            let (gone, came) = element_changes(old, new);
            if !gone.is_empty() {
                txn.push(Op::DeleteElements {
                    table: table.into(),
                    collection: new.name.clone(),
                    keys: gone,
                });
            }
            adds.push((&new.name, came));
        }
    }
    for chain in &removed_chains {
        txn.push(Op::DeleteChain {
            table: table.into(),
            chain: (*chain).into(),
        });
    }
    for kind in kinds {
        for old in by_kind(applied, kind) {
            if desired.collection(&old.name).is_none() {
                txn.push(Op::DeleteCollection {
                    table: table.into(),
                    kind,
                    name: old.name.clone(),
                });
            }
        }
    }
    for kind in kinds {
        for new in by_kind(desired, kind) {
            if applied.collection(&new.name).is_none() {
                txn.push(Op::AddCollection {
                    table: table.into(),
                    collection: Collection {
                        elements: Vec::new(),
                        ..new.clone()
                    },
                });
                adds.push((&new.name, new.elements.clone()));
            }
        }
    }
    for (collection, elements) in adds {
        if !elements.is_empty() {
            txn.push(Op::AddElements {
                table: table.into(),
                collection: collection.into(),
                elements,
            });
        }
    }
    for chain in &added_chains {
        txn.push(Op::AddChain {
            table: table.into(),
            chain: chain.name.clone(),
        });
    }
    for chain in added_chains.iter().chain(changed_chains.iter()) {
        for rule in &chain.rules {
            txn.push(Op::AddRule {
                table: table.into(),
                chain: chain.name.clone(),
                rule: rule.clone(),
            });
        }
    }
    Some(txn)
}

/// Whether going from `applied` to `desired` needs the table replaced: another name, base
/// chains that differ in type, hook or priority, or a set or map whose declaration changed.
pub fn needs_replacement(applied: &Table, desired: &Table) -> bool {
    applied.name != desired.name
        || !same_base_chains(applied, desired)
        || desired.collections.iter().any(|new| {
            applied
                .collection(&new.name)
                .is_some_and(|old| old.key != new.key || old.data != new.data)
        })
}

fn same_base_chains(applied: &Table, desired: &Table) -> bool {
    let bases = |t: &Table| -> BTreeMap<String, _> {
        t.chains
            .iter()
            .filter_map(|c| c.base.map(|b| (c.name.clone(), b)))
            .collect()
    };
    // Also refuses a base chain that turns regular or back: it is in one map only.
    bases(applied) == bases(desired)
}

/// Keys whose element went or changed, and elements that came or changed, in each side's order.
fn element_changes(old: &Collection, new: &Collection) -> (Vec<Vec<Value>>, Vec<Element>) {
    // The planners emit elements sorted by key: then one walk over both, allocating only for
    // what changed (a table of 10,000 services changes one element per service create).
    let sorted = |c: &Collection| c.elements.is_sorted_by(|a, b| a.key < b.key);
    if sorted(old) && sorted(new) {
        return sorted_element_changes(&old.elements, &new.elements);
    }
    let new_by_key: BTreeMap<&[Value], &[Value]> = new
        .elements
        .iter()
        .map(|e| (e.key.as_slice(), e.data.as_slice()))
        .collect();
    let old_by_key: BTreeMap<&[Value], &[Value]> = old
        .elements
        .iter()
        .map(|e| (e.key.as_slice(), e.data.as_slice()))
        .collect();
    let gone = old
        .elements
        .iter()
        .filter(|e| new_by_key.get(e.key.as_slice()) != Some(&e.data.as_slice()))
        .map(|e| e.key.clone())
        .collect();
    let came = new
        .elements
        .iter()
        .filter(|e| old_by_key.get(e.key.as_slice()) != Some(&e.data.as_slice()))
        .cloned()
        .collect();
    (gone, came)
}

/// [`element_changes`] for two element lists sorted by strictly increasing key.
fn sorted_element_changes(old: &[Element], new: &[Element]) -> (Vec<Vec<Value>>, Vec<Element>) {
    let (mut gone, mut came) = (Vec::new(), Vec::new());
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (o.peek(), n.peek()) {
            (Some(a), Some(b)) => match a.key.cmp(&b.key) {
                std::cmp::Ordering::Less => {
                    gone.push(a.key.clone());
                    o.next();
                }
                std::cmp::Ordering::Greater => {
                    came.push((*b).clone());
                    n.next();
                }
                std::cmp::Ordering::Equal => {
                    if a.data != b.data {
                        gone.push(a.key.clone());
                        came.push((*b).clone());
                    }
                    o.next();
                    n.next();
                }
            },
            (Some(a), None) => {
                gone.push(a.key.clone());
                o.next();
            }
            (None, Some(b)) => {
                came.push((*b).clone());
                n.next();
            }
            (None, None) => return (gone, came),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeyDecl;

    fn collection(elements: Vec<Element>) -> Collection {
        Collection {
            name: "m".into(),
            key: KeyDecl::Typeof(Vec::new()),
            data: None,
            elements,
        }
    }

    fn element(key: u32, data: u32) -> Element {
        Element {
            key: vec![Value::Int(key)],
            data: vec![Value::Int(data)],
        }
    }

    /// The walk over sorted lists says what the general (map) comparison says, over random
    /// tables; unsorted lists take the general path.
    #[test]
    fn sorted_walk_agrees_with_the_general_comparison() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n) as u32
        };
        for _ in 0..300 {
            let mut side = |len: u64| -> Vec<Element> {
                let mut keys: BTreeMap<u32, u32> = BTreeMap::new();
                for _ in 0..next(len) {
                    keys.insert(next(40), next(3));
                }
                keys.into_iter().map(|(k, d)| element(k, d)).collect()
            };
            let (old, new) = (side(30), side(30));
            let walked = sorted_element_changes(&old, &new);
            let mut reversed = collection(old.clone());
            reversed.elements.reverse();
            let mut general = element_changes(&reversed, &collection(new.clone()));
            // The general path lists gone keys in the (reversed) old order.
            general.0.sort();
            assert_eq!(walked, general, "{old:?} -> {new:?}");
            assert_eq!(
                element_changes(&collection(old.clone()), &collection(new.clone())),
                walked
            );
        }
    }
}
