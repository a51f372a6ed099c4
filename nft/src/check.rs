//! Checks a transaction before anything is sent: names nft would misread and priorities a
//! hook refuses are errors here, not surprises from nft (or silently different rules).

use crate::error::NftError;
use crate::model::{Match, Rule, Table, Value};
use crate::txn::{Op, Transaction};

/// Longest object name nft keeps (`NFT_NAME_MAXLEN` - 1).
pub const MAX_NAME_LEN: usize = 255;
/// Longest interface name the kernel accepts (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

pub fn transaction(txn: &Transaction) -> Result<(), NftError> {
    for op in &txn.ops {
        let table = op.table();
        name(table, "table", table)?;
        match op {
            Op::Replace(t) => self::table(t)?,
            Op::DeleteTable { .. } | Op::AddTable { .. } => {}
            Op::AddBaseChain { chain, base, .. } => {
                name(table, "chain", chain)?;
                if !base.priority.fits(base.hook) {
                    return Err(invalid(
                        table,
                        format!(
                            "chain {chain}: priority {} is not accepted on hook {}",
                            base.priority, base.hook
                        ),
                    ));
                }
            }
            Op::FlushChain { chain, .. }
            | Op::AddChain { chain, .. }
            | Op::DeleteChain { chain, .. } => name(table, "chain", chain)?,
            Op::AddRule { chain, rule, .. } => {
                name(table, "chain", chain)?;
                self::rule(table, rule)?;
            }
            Op::AddCollection { collection, .. } => name(table, "set", &collection.name)?,
            Op::DeleteCollection { name: n, .. } | Op::FlushCollection { name: n, .. } => {
                name(table, "set", n)?
            }
            Op::AddElements { collection, .. } | Op::DeleteElements { collection, .. } => {
                name(table, "set", collection)?
            }
        }
    }
    Ok(())
}

pub fn table(t: &Table) -> Result<(), NftError> {
    name(&t.name, "table", &t.name)?;
    for c in &t.collections {
        name(&t.name, "set", &c.name)?;
    }
    for chain in &t.chains {
        name(&t.name, "chain", &chain.name)?;
        if let Some(base) = &chain.base {
            if !base.priority.fits(base.hook) {
                return Err(invalid(
                    &t.name,
                    format!(
                        "chain {}: priority {} is not accepted on hook {}",
                        chain.name, base.priority, base.hook
                    ),
                ));
            }
        }
        for r in &chain.rules {
            rule(&t.name, r)?;
        }
    }
    Ok(())
}

fn rule(table: &str, rule: &Rule) -> Result<(), NftError> {
    for m in &rule.matches {
        let values: Vec<&Value> = match m {
            Match::Eq(_, v) | Match::Ne(_, v) => vec![v],
            Match::Range(_, lo, hi) => vec![lo, hi],
            Match::InSet(_, set) => {
                name(table, "set", set)?;
                vec![]
            }
        };
        for v in values {
            if let Value::Iface(ifname) = v {
                let ok = !ifname.is_empty()
                    && ifname.len() <= MAX_IFNAME_LEN
                    && ifname
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                if !ok {
                    return Err(invalid(table, format!("interface name {ifname:?}")));
                }
            }
        }
    }
    Ok(())
}

fn name(table: &str, what: &str, n: &str) -> Result<(), NftError> {
    let mut chars = n.chars();
    let ok = n.len() <= MAX_NAME_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            table,
            format!("{what} name {n:?}: use letters, digits and '_', starting with a letter"),
        ))
    }
}

fn invalid(table: &str, detail: String) -> NftError {
    NftError::Invalid {
        table: table.to_string(),
        detail,
    }
}
