//! From a validated spec to the [`Table`] that implements it. Pure: no I/O.
//!
//! Weights become slots: a service whose active backends have weights w1..wk takes
//! N = w1 + .. + wk slots (after dividing by their gcd, and normalised down to
//! [`names::MAX_SLOTS`]), and `numgen random mod N` picks one. Services are grouped by N: per
//! group one frontend set, one backend map and one rule, so the rule count does not grow with
//! the number of services.

use std::collections::{BTreeMap, BTreeSet};

use super::names;
use super::ruleset::{
    BaseChain, Chain, ChainType, FrontendKey, Hook, KeyKind, Map, Rule, Set, SlotKey, Table, Target,
};
use crate::model::{Backend, ValidLbSpec};

/// Frontends and slot targets of one (kind, slot count) group.
type Group = (BTreeSet<FrontendKey>, BTreeMap<SlotKey, Target>);

/// The table that load-balances `spec`.
pub fn plan(spec: &ValidLbSpec) -> Table {
    let mut no_backend: BTreeMap<KeyKind, BTreeSet<FrontendKey>> = BTreeMap::new();
    let mut groups: BTreeMap<(KeyKind, u32), Group> = BTreeMap::new();
    for service in spec.services() {
        let frontend = FrontendKey::from(service.frontend);
        let mut targets = slot_targets(&service.backends);
        if !frontend.kind().has_target_port() {
            for target in &mut targets {
                target.port = None;
            }
        }
        if targets.is_empty() {
            no_backend
                .entry(frontend.kind())
                .or_default()
                .insert(frontend);
            continue;
        }
        let slots = targets.len() as u32;
        let (frontends, map) = groups.entry((frontend.kind(), slots)).or_default();
        frontends.insert(frontend);
        for (slot, target) in (0..slots).zip(targets) {
            map.insert(SlotKey { frontend, slot }, target);
        }
    }

    let mut sets = BTreeMap::new();
    let mut maps = BTreeMap::new();
    let mut chains = Vec::new();
    for kind in KeyKind::ALL {
        let name = names::no_backend_set(kind).to_string();
        let elements = no_backend.remove(&kind).unwrap_or_default();
        sets.insert(
            name.clone(),
            Set {
                name,
                kind,
                elements,
            },
        );
    }
    let mut jumps = Vec::new();
    for ((kind, slots), (frontends, targets)) in groups {
        let set = names::frontend_set(kind, slots);
        sets.insert(
            set.clone(),
            Set {
                name: set,
                kind,
                elements: frontends,
            },
        );
        let map = names::backend_map(kind, slots);
        maps.insert(
            map.clone(),
            Map {
                name: map,
                kind,
                slots,
                elements: targets,
            },
        );
        let chain = names::group_chain(kind, slots);
        jumps.push(Rule::Jump(chain.clone()));
        chains.push(Chain {
            name: chain,
            base: None,
            rules: vec![Rule::Dispatch { kind, slots }],
        });
    }
    chains.push(Chain {
        name: names::CHAIN_SERVICES.to_string(),
        base: None,
        rules: jumps,
    });
    chains.push(Chain {
        name: names::CHAIN_REJECT.to_string(),
        base: None,
        rules: vec![Rule::RejectTcpReset, Rule::RejectPortUnreachable],
    });
    let reject_rules: Vec<Rule> = KeyKind::ALL.map(Rule::RejectNoBackend).to_vec();
    chains.push(base_chain(
        names::CHAIN_FILTER_PREROUTING,
        ChainType::Filter,
        Hook::Prerouting,
        names::PRIORITY_REJECT,
        reject_rules.clone(),
    ));
    chains.push(base_chain(
        names::CHAIN_FILTER_OUTPUT,
        ChainType::Filter,
        Hook::Output,
        names::PRIORITY_REJECT,
        reject_rules,
    ));
    let to_services = vec![Rule::Jump(names::CHAIN_SERVICES.to_string())];
    chains.push(base_chain(
        names::CHAIN_NAT_PREROUTING,
        ChainType::Nat,
        Hook::Prerouting,
        names::PRIORITY_DSTNAT,
        to_services.clone(),
    ));
    chains.push(base_chain(
        names::CHAIN_NAT_OUTPUT,
        ChainType::Nat,
        Hook::Output,
        names::PRIORITY_DSTNAT,
        to_services,
    ));
    chains.push(base_chain(
        names::CHAIN_NAT_POSTROUTING,
        ChainType::Nat,
        Hook::Postrouting,
        names::PRIORITY_SRCNAT,
        vec![Rule::SnatDnatted(spec.snat())],
    ));
    Table {
        name: spec.table().to_string(),
        sets,
        maps,
        chains,
    }
}

fn base_chain(
    name: &str,
    chain_type: ChainType,
    hook: Hook,
    priority: i32,
    rules: Vec<Rule>,
) -> Chain {
    Chain {
        name: name.to_string(),
        base: Some(BaseChain {
            chain_type,
            hook,
            priority,
        }),
        rules,
    }
}

/// The backend of each slot, in backend order; empty when no backend takes new connections.
pub fn slot_targets(backends: &[Backend]) -> Vec<Target> {
    let active: Vec<&Backend> = backends.iter().filter(|b| !b.is_draining()).collect();
    let weights: Vec<u32> = active.iter().map(|b| b.weight).collect();
    let slots = apportion(&weights, names::MAX_SLOTS);
    active
        .iter()
        .zip(slots)
        .flat_map(|(b, n)| {
            std::iter::repeat_n(
                Target {
                    addr: b.addr,
                    port: Some(b.port),
                },
                n as usize,
            )
        })
        .collect()
}

/// Slot counts proportional to `weights` (all > 0), reduced by their gcd. When they add up to
/// more than `max(cap, weights.len())`, each gets one slot plus its largest-remainder share of
/// the rest, so no active backend is ever left without a slot.
pub fn apportion(weights: &[u32], cap: u32) -> Vec<u32> {
    let reduced = reduce(weights.iter().map(|&w| u64::from(w)).collect());
    let sum: u64 = reduced.iter().sum();
    let count = reduced.len() as u64;
    let cap = u64::from(cap).max(count);
    if sum <= cap {
        return to_u32(reduced);
    }
    let spare = u128::from(cap - count);
    let sum = u128::from(sum);
    let mut slots: Vec<u64> = Vec::with_capacity(reduced.len());
    let mut remainders: Vec<(u128, usize)> = Vec::with_capacity(reduced.len());
    for (i, &w) in reduced.iter().enumerate() {
        let share = u128::from(w) * spare;
        slots.push(1 + (share / sum) as u64);
        remainders.push((share % sum, i));
    }
    let given: u64 = slots.iter().sum();
    let leftover = (cap - given) as usize;
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in remainders.iter().take(leftover) {
        slots[i] += 1;
    }
    to_u32(reduce(slots))
}

fn reduce(values: Vec<u64>) -> Vec<u64> {
    let g = values.iter().copied().fold(0, gcd);
    if g <= 1 {
        return values;
    }
    values.into_iter().map(|v| v / g).collect()
}

fn to_u32(values: Vec<u64>) -> Vec<u32> {
    // Every value is at most max(cap, count), both of which fit in u32.
    values
        .into_iter()
        .map(|v| u32::try_from(v).unwrap_or(u32::MAX))
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apportion_cases() {
        let cases: &[(&[u32], &[u32])] = &[
            (&[], &[]),
            (&[1, 1, 1], &[1, 1, 1]),
            (&[5, 5], &[1, 1]),
            (&[2, 4], &[1, 2]),
            (&[100, 100, 200], &[1, 1, 2]),
            (&[1, 1000], &[1, 63]),
            (&[u32::MAX, 1, u32::MAX], &[32, 1, 31]),
            (&[3, 5, 7, 11, 13, 17, 19], &[3, 5, 6, 9, 11, 14, 16]),
        ];
        for (weights, want) in cases {
            assert_eq!(apportion(weights, 64), *want, "weights {weights:?}");
        }
    }

    #[test]
    fn apportion_never_exceeds_cap_and_keeps_every_backend() {
        for n in 1..100u32 {
            let weights: Vec<u32> = (1..=n).map(|i| i * 37).collect();
            let slots = apportion(&weights, 64);
            assert!(slots.iter().all(|&s| s >= 1));
            assert!(slots.iter().sum::<u32>() <= 64.max(n));
        }
    }
}
