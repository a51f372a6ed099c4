//! A full resync that does not re-parse every element: the table's structure in one small
//! `nft -f` transaction, then every set's elements flushed and added again in one element-only
//! transaction (one netlink batch through [`crate::NftNetlink`]).
//!
//! ```text
//! structure (nft -f, size independent of the elements):
//!   add table; add chain (base chains with their hook) for every chain; add set/map for every
//!   declaration; flush chain + add rule for every chain it can rewrite; flush + delete the
//!   chains and sets the applied table had and the desired one lacks
//! elements (element-only, atomic):
//!   flush set S; add element S { every element }     for every set and map
//! ```
//!
//! Both transactions are idempotent against a kernel that already holds the table: `add`
//! of an identical declaration changes nothing, the kernel refuses one of another type (the
//! owner then replaces the table). Because a set's flush and its elements travel in one
//! transaction, no packet sees it empty.
//!
//! One exception: nft 1.0.6 cannot parse a rule that references an *existing* map declared
//! `typeof ... : A . B` (it re-reads the `typeof` from the kernel and fails with
//! `conflicting protocols specified: ip vs. th`). Chains holding such a rule are only
//! declared, never flushed here; they are listed in [`Resync::kept_chains`] so the owner can
//! check their rules otherwise (or replace the table when they drifted).

use crate::diff;
use crate::model::{Chain, Collection, CollectionKind, KeyDecl, MapRef, Rule, Stmt, Table};
use crate::txn::{Op, Transaction};

/// The two transactions of a resync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resync {
    /// `nft -f`: table, chains, declarations, rules.
    pub structure: Transaction,
    /// Element-only: a flush and the elements of every set and map.
    pub elements: Transaction,
    /// Chains declared but not rewritten (their rules reference a map nft cannot re-read).
    pub kept_chains: Vec<String>,
}

/// Whether nft 1.0.6 can add `rule` while the maps it references exist in the kernel: not
/// when it looks a key up in a map whose data is a `typeof` concatenation.
pub fn readd_safe(table: &Table, rule: &Rule) -> bool {
    rule.stmts.iter().all(|stmt| {
        let map = match stmt {
            Stmt::DnatMap {
                map: MapRef::Named(name),
                ..
            }
            | Stmt::SetMarkMap { map: name, .. } => name,
            _ => return true,
        };
        !table
            .collection(map)
            .is_some_and(|c| matches!(&c.data, Some(KeyDecl::Typeof(exprs)) if exprs.len() > 1))
    })
}

/// The resync from `applied` (what the owner last applied in full or incrementally) to
/// `desired`; `None` when only a replacement will do (another table name, base chains or set
/// declarations that differ, or a rule of a kept chain that changed).
pub fn resync(applied: &Table, desired: &Table) -> Option<Resync> {
    // The same conditions as an incremental change: one that needs a replacement cannot be
    // made with `add` commands either.
    if diff::needs_replacement(applied, desired) {
        return None;
    }
    let table = desired.name.as_str();
    let op_table = || table.to_string();
    let mut structure = Transaction::new();
    structure.push(Op::AddTable { table: op_table() });

    let keeps = |c: &Chain| c.rules.iter().any(|r| !readd_safe(desired, r));
    let mut kept_chains = Vec::new();
    let mut rewritten: Vec<&Chain> = Vec::new();
    for chain in &desired.chains {
        if keeps(chain) {
            match applied.chain(&chain.name) {
                // Kept as it is in the kernel.
                Some(old) if old.rules == chain.rules => kept_chains.push(chain.name.clone()),
                // Made in this transaction with its new maps (as the incremental path does).
                None if chain
                    .rules
                    .iter()
                    .all(|r| maps_of(r).all(|m| applied.collection(m).is_none())) =>
                {
                    rewritten.push(chain)
                }
                _ => return None,
            }
        } else {
            rewritten.push(chain);
        }
    }

    for chain in &desired.chains {
        structure.push(match chain.base {
            Some(base) => Op::AddBaseChain {
                table: op_table(),
                chain: chain.name.clone(),
                base,
            },
            None => Op::AddChain {
                table: op_table(),
                chain: chain.name.clone(),
            },
        });
    }
    let kinds = [CollectionKind::Set, CollectionKind::Map];
    for kind in kinds {
        for c in desired.collections.iter().filter(|c| c.kind() == kind) {
            structure.push(Op::AddCollection {
                table: op_table(),
                collection: Collection {
                    elements: Vec::new(),
                    ..c.clone()
                },
            });
        }
    }
    let stale_chains: Vec<&Chain> = applied
        .chains
        .iter()
        .filter(|c| desired.chain(&c.name).is_none())
        .collect();
    for chain in rewritten.iter().chain(stale_chains.iter()) {
        structure.push(Op::FlushChain {
            table: op_table(),
            chain: chain.name.clone(),
        });
    }
    for chain in &stale_chains {
        structure.push(Op::DeleteChain {
            table: op_table(),
            chain: chain.name.clone(),
        });
    }
    for kind in kinds {
        for c in applied.collections.iter().filter(|c| c.kind() == kind) {
            if desired.collection(&c.name).is_none() {
                structure.push(Op::DeleteCollection {
                    table: op_table(),
                    kind,
                    name: c.name.clone(),
                });
            }
        }
    }
    // In the table's order: chains that are jumped to come first.
    for chain in &rewritten {
        for rule in &chain.rules {
            structure.push(Op::AddRule {
                table: op_table(),
                chain: chain.name.clone(),
                rule: rule.clone(),
            });
        }
    }

    let mut elements = Transaction::new();
    for kind in kinds {
        for c in desired.collections.iter().filter(|c| c.kind() == kind) {
            elements.push(Op::FlushCollection {
                table: op_table(),
                kind,
                name: c.name.clone(),
            });
            if !c.elements.is_empty() {
                elements.push(Op::AddElements {
                    table: op_table(),
                    collection: c.name.clone(),
                    elements: c.elements.clone(),
                });
            }
        }
    }
    Some(Resync {
        structure,
        elements,
        kept_chains,
    })
}

/// The named maps and sets a rule references.
fn maps_of(rule: &Rule) -> impl Iterator<Item = &str> {
    rule.matches
        .iter()
        .filter_map(|m| match m {
            crate::model::Match::InSet(_, set) => Some(set.as_str()),
            _ => None,
        })
        .chain(rule.stmts.iter().filter_map(|s| match s {
            Stmt::DnatMap {
                map: MapRef::Named(name),
                ..
            }
            | Stmt::SetMarkMap { map: name, .. } => Some(name.as_str()),
            _ => None,
        }))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::model::*;
    use crate::trace::Ruleset;

    fn table(n: u32, addrs: &[u8]) -> Table {
        let mut t = Table::new("t");
        let fe = format!("fe_{n}");
        let be = format!("be_{n}");
        let elements: Vec<Element> = addrs
            .iter()
            .map(|&a| Element::key(vec![Value::Addr(Ipv4Addr::new(10, 0, 0, a))]))
            .collect();
        let maps: Vec<Element> = addrs
            .iter()
            .map(|&a| {
                Element::mapping(
                    vec![Value::Addr(Ipv4Addr::new(10, 0, 0, a)), Value::Int(0)],
                    vec![Value::Addr(Ipv4Addr::new(10, 1, 0, a)), Value::Port(80)],
                )
            })
            .collect();
        t.collections = vec![
            Collection::set(&fe, KeyDecl::Type(vec![DataType::Ipv4Addr])).with_elements(elements),
            Collection::map(
                &be,
                KeyDecl::Typeof(vec![Expr::IpDaddr, Expr::Numgen(n)]),
                KeyDecl::Typeof(vec![Expr::IpDaddr, Expr::Dport]),
            )
            .with_elements(maps),
        ];
        t.chains = vec![
            Chain::regular(
                format!("g_{n}"),
                vec![Rule::new(
                    vec![Match::InSet(vec![Expr::IpDaddr], fe)],
                    vec![Stmt::DnatMap {
                        key: vec![Expr::IpDaddr, Expr::Numgen(n)],
                        map: MapRef::Named(be),
                    }],
                )],
            ),
            Chain::base(
                "pre",
                BaseChain::new(ChainType::Nat, Hook::Prerouting, Priority::Dstnat),
                vec![Rule::always(Stmt::Jump(format!("g_{n}")))],
            ),
        ];
        t
    }

    fn lines(txn: &Transaction) -> Vec<String> {
        txn.render().lines().map(str::to_string).collect()
    }

    #[test]
    fn structure_then_flushed_elements_and_kept_chains() {
        let t = table(1, &[2, 3]);
        let r = resync(&t, &t).unwrap();
        assert_eq!(
            lines(&r.structure),
            vec![
                "add table ip t",
                "add chain ip t g_1",
                "add chain ip t pre { type nat hook prerouting priority dstnat; policy accept; }",
                "add set ip t fe_1 { type ipv4_addr; }",
                "add map ip t be_1 { typeof ip daddr . numgen random mod 1 : ip daddr . th dport; }",
                "flush chain ip t pre",
                "add rule ip t pre jump g_1",
            ]
        );
        assert_eq!(r.kept_chains, vec!["g_1".to_string()]);
        assert_eq!(
            lines(&r.elements),
            vec![
                "flush set ip t fe_1",
                "add element ip t fe_1 { 10.0.0.2, 10.0.0.3 }",
                "flush map ip t be_1",
                "add element ip t be_1 { 10.0.0.2 . 0 : 10.1.0.2 . 80, 10.0.0.3 . 0 : 10.1.0.3 . 80 }",
            ]
        );
    }

    #[test]
    fn a_changed_table_converges_and_stale_objects_go() {
        let old = table(1, &[2, 3]);
        let new = table(2, &[4]);
        let r = resync(&old, &new).unwrap();
        assert!(r.kept_chains.is_empty());
        let mut rs = Ruleset::default();
        rs.apply(&old.full_sync_script()).unwrap();
        // Drift: an element gone, a stray one, the base chain emptied.
        rs.apply("delete element ip t fe_1 { 10.0.0.2 }\nadd element ip t fe_1 { 10.0.0.9 }\nflush chain ip t pre\n")
            .unwrap();
        rs.apply(&r.structure.render()).unwrap();
        rs.apply(&r.elements.render()).unwrap();
        let mut want = Ruleset::default();
        want.apply(&new.full_sync_script()).unwrap();
        assert_eq!(rs, want);
    }

    #[test]
    fn another_declaration_needs_a_replacement() {
        let old = table(1, &[2]);
        let mut new = old.clone();
        new.collections[0].key = KeyDecl::Type(vec![DataType::Mark]);
        assert!(resync(&old, &new).is_none());
    }
}
