//! From a validated spec to the [`Table`] that implements it. Pure: no I/O.
//!
//! Weights become slots: a service whose active backends have weights w1..wk takes
//! N = w1 + .. + wk slots (after dividing by their gcd, and normalised down to
//! [`names::MAX_SLOTS`]), and `numgen random mod N` picks one. Services are grouped by N: per
//! group one frontend set, one backend map and one rule, so the rule count does not grow with
//! the number of services.

use std::collections::{BTreeMap, BTreeSet};

use routemesh_nft::{
    BaseChain, Chain, ChainType, Collection, CtState, CtStatus, Element, Expr, Hook, KeyDecl,
    MapRef, Match, Priority, Reject, Rule, Stmt, Table, Value,
};

use super::keys::{slot_element, FrontendKey, KeyKind, SlotKey, Target};
use super::names;
use crate::model::{Backend, Proto, Snat, ValidLbSpec, VirtualService};

/// Frontends and slot targets of one (kind, slot count) group.
type Group = (BTreeSet<FrontendKey>, BTreeMap<SlotKey, Target>);

/// The table that load-balances `spec`.
pub fn plan(spec: &ValidLbSpec) -> Table {
    plan_keeping(spec, &BTreeSet::new())
}

/// [`plan`], with the (kind, slot count) groups `keep` in the table even when no service is
/// in them: their set and map empty, their chain and jump in place, so a service that comes
/// into one later is a few elements and not an `nft -f` of a new set, map and chain.
pub fn plan_keeping(spec: &ValidLbSpec, keep: &BTreeSet<(KeyKind, u32)>) -> Table {
    let mut no_backend: BTreeMap<KeyKind, BTreeSet<FrontendKey>> = BTreeMap::new();
    let mut groups: BTreeMap<(KeyKind, u32), Group> = keep
        .iter()
        .map(|group| (*group, Group::default()))
        .collect();
    for service in spec.services() {
        let (frontend, targets) = frontend_targets(service);
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

    // Sets, then maps, each sorted by name.
    let mut sets: BTreeMap<String, Collection> = BTreeMap::new();
    let mut maps: BTreeMap<String, Collection> = BTreeMap::new();
    let mut chains = Vec::new();
    for kind in KeyKind::ALL {
        let elements = no_backend.remove(&kind).unwrap_or_default();
        let name = names::no_backend_set(kind);
        sets.insert(name.to_string(), frontend_set(name, kind, &elements));
    }
    let mut jumps = Vec::new();
    for ((kind, slots), (frontends, targets)) in groups {
        let set = names::frontend_set(kind, slots);
        sets.insert(set.clone(), frontend_set(&set, kind, &frontends));
        let map = names::backend_map(kind, slots);
        let mut key = kind.key_expr();
        key.push(Expr::Numgen(slots));
        let elements: Vec<Element> = targets.iter().map(|(k, t)| slot_element(k, t)).collect();
        maps.insert(
            map.clone(),
            Collection::map(
                map,
                KeyDecl::Typeof(key),
                KeyDecl::Typeof(kind.target_expr()),
            )
            .with_elements(elements),
        );
        let chain = names::group_chain(kind, slots);
        jumps.push(Rule::always(Stmt::Jump(chain.clone())));
        chains.push(Chain::regular(chain, vec![dispatch(kind, slots)]));
    }
    chains.push(Chain::regular(names::CHAIN_SERVICES, jumps));
    chains.push(Chain::regular(
        names::CHAIN_REJECT,
        vec![
            Rule::new(
                vec![Match::Eq(Expr::L4proto, Value::Proto(Proto::Tcp))],
                vec![Stmt::Reject(Reject::TcpReset)],
            ),
            Rule::always(Stmt::Reject(Reject::PortUnreachable)),
        ],
    ));
    let reject_rules: Vec<Rule> = KeyKind::ALL.map(reject_no_backend).to_vec();
    let base = |kind, hook, priority| BaseChain::new(kind, hook, Priority::Num(priority));
    chains.push(Chain::base(
        names::CHAIN_FILTER_PREROUTING,
        base(ChainType::Filter, Hook::Prerouting, names::PRIORITY_REJECT),
        reject_rules.clone(),
    ));
    chains.push(Chain::base(
        names::CHAIN_FILTER_OUTPUT,
        base(ChainType::Filter, Hook::Output, names::PRIORITY_REJECT),
        reject_rules,
    ));
    let to_services = vec![Rule::always(Stmt::Jump(names::CHAIN_SERVICES.to_string()))];
    chains.push(Chain::base(
        names::CHAIN_NAT_PREROUTING,
        base(ChainType::Nat, Hook::Prerouting, names::PRIORITY_DSTNAT),
        to_services.clone(),
    ));
    chains.push(Chain::base(
        names::CHAIN_NAT_OUTPUT,
        base(ChainType::Nat, Hook::Output, names::PRIORITY_DSTNAT),
        to_services,
    ));
    chains.push(Chain::base(
        names::CHAIN_NAT_POSTROUTING,
        base(ChainType::Nat, Hook::Postrouting, names::PRIORITY_SRCNAT),
        vec![snat_dnatted(spec.snat())],
    ));
    let mut table = Table::new(spec.table());
    table.collections = sets.into_values().chain(maps.into_values()).collect();
    table.chains = chains;
    table
}

/// A service's frontend key and the target of each of its slots (empty: no backend takes new
/// connections); address-only VIPs' targets carry no port.
pub(super) fn frontend_targets(service: &VirtualService) -> (FrontendKey, Vec<Target>) {
    let frontend = FrontendKey::from(service.frontend);
    let mut targets = slot_targets(&service.backends);
    if !frontend.kind().has_target_port() {
        for target in &mut targets {
            target.port = None;
        }
    }
    (frontend, targets)
}

fn frontend_set(name: &str, kind: KeyKind, frontends: &BTreeSet<FrontendKey>) -> Collection {
    Collection::set(name, KeyDecl::Type(kind.set_type()))
        .with_elements(frontends.iter().map(|f| Element::key(f.values())).collect())
}

/// The one rule of a group: frontend in the group's set -> DNAT to the slot's backend.
fn dispatch(kind: KeyKind, slots: u32) -> Rule {
    let mut matches: Vec<Match> = kind.guard().into_iter().collect();
    matches.push(Match::InSet(
        kind.key_expr(),
        names::frontend_set(kind, slots),
    ));
    let mut key = kind.key_expr();
    key.push(Expr::Numgen(slots));
    Rule::new(
        matches,
        vec![Stmt::DnatMap {
            key,
            map: MapRef::Named(names::backend_map(kind, slots)),
        }],
    )
}

/// A new connection to a frontend without a usable backend goes to the reject chain.
fn reject_no_backend(kind: KeyKind) -> Rule {
    let mut matches = vec![Match::Eq(Expr::CtState, Value::CtState(CtState::New))];
    matches.extend(kind.guard());
    matches.push(Match::InSet(
        kind.key_expr(),
        names::no_backend_set(kind).to_string(),
    ));
    Rule::new(matches, vec![Stmt::Goto(names::CHAIN_REJECT.to_string())])
}

/// Source-NAT connections that were DNATed in this namespace.
fn snat_dnatted(snat: Snat) -> Rule {
    let stmt = match snat {
        Snat::Masquerade => Stmt::Masquerade,
        Snat::To(addr) => Stmt::SnatTo(addr),
    };
    Rule::new(
        vec![Match::Eq(Expr::CtStatus, Value::CtStatus(CtStatus::Dnat))],
        vec![stmt],
    )
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
