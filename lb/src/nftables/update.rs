//! Per-service changes to an applied table, without planning the table again: the element
//! deletions and additions that turn one set of services into another, computed from an index
//! of what each frontend holds. Pure: no I/O.
//!
//! Only changes that keep the table's structure go this way: a frontend moving between
//! groups the table has (an emptied group keeps its set, map, chain and jump: see
//! [`Index::empty_groups`]), into or out of the no-backend set, or changing its targets. A
//! change that needs a slot-count group the table lacks (a set, map, chain and jump rule to
//! add), or that another service's frontends conflict with, is left to the whole plan
//! ([`None`]), which also reports the conflict.

use std::collections::{BTreeMap, BTreeSet};

use routemesh_nft::{Element, Op, Transaction, Value};

use super::keys::{slot_element, FrontendKey, KeyKind, SlotKey, Target};
use super::names;
use super::plan::frontend_targets;
use crate::model::{validate_service, Frontend, ValidLbSpec, VirtualService};

/// What each frontend of the applied table holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Index {
    /// The target of each slot, in slot order; empty: in the no-backend set.
    frontends: BTreeMap<FrontendKey, Vec<Target>>,
    /// Frontends per (kind, slot count) group with at least one.
    groups: BTreeMap<(KeyKind, u32), usize>,
    /// The groups the table has a set, map and chain for: those with frontends and those
    /// that emptied since the table was planned.
    made: BTreeSet<(KeyKind, u32)>,
}

impl Index {
    /// The index of `plan_keeping(spec, kept)`.
    pub(super) fn of(spec: &ValidLbSpec, kept: &BTreeSet<(KeyKind, u32)>) -> Index {
        let mut index = Index::default();
        for service in spec.services() {
            let (frontend, targets) = frontend_targets(service);
            index.insert(frontend, targets);
        }
        index.made = index.groups.keys().chain(kept).copied().collect();
        index
    }

    /// The groups the table has, with or without frontends.
    pub(super) fn made(&self) -> &BTreeSet<(KeyKind, u32)> {
        &self.made
    }

    /// The groups the table has with no frontend in them.
    pub(super) fn empty_groups(&self) -> BTreeSet<(KeyKind, u32)> {
        self.made
            .iter()
            .filter(|g| !self.groups.contains_key(g))
            .copied()
            .collect()
    }

    fn insert(&mut self, frontend: FrontendKey, targets: Vec<Target>) {
        if let Some(group) = group_of(frontend, &targets) {
            *self.groups.entry(group).or_default() += 1;
        }
        if let Some(old) = self.frontends.insert(frontend, targets) {
            self.forget_group(frontend, &old);
        }
    }

    fn remove(&mut self, frontend: FrontendKey) {
        if let Some(old) = self.frontends.remove(&frontend) {
            self.forget_group(frontend, &old);
        }
    }

    fn forget_group(&mut self, frontend: FrontendKey, targets: &[Target]) {
        if let Some(group) = group_of(frontend, targets) {
            if let Some(n) = self.groups.get_mut(&group) {
                *n -= 1;
                if *n == 0 {
                    self.groups.remove(&group);
                }
            }
        }
    }

    /// The per-port VIPs on `addr`.
    fn port_vips(&self, addr: std::net::Ipv4Addr) -> impl Iterator<Item = &FrontendKey> {
        let first = FrontendKey::Vip {
            addr,
            proto: crate::model::Proto::Tcp,
            port: 0,
        };
        self.frontends
            .range(first..)
            .map(|(k, _)| k)
            .take_while(move |k| matches!(k, FrontendKey::Vip { addr: a, .. } if *a == addr))
    }
}

/// The (kind, slot count) group of a frontend with these targets; `None`: no backend.
fn group_of(frontend: FrontendKey, targets: &[Target]) -> Option<(KeyKind, u32)> {
    (!targets.is_empty()).then(|| (frontend.kind(), targets.len() as u32))
}

/// A change the kernel can take as elements: the transaction, and what to [`Index::follow`]
/// once the kernel took it.
#[derive(Debug)]
pub(super) struct ElementChange {
    pub txn: Transaction,
    removed: BTreeSet<FrontendKey>,
    set: BTreeMap<FrontendKey, Vec<Target>>,
}

impl Index {
    /// The index after `change` was applied.
    pub(super) fn follow(&mut self, change: ElementChange) {
        for key in change.removed {
            self.remove(key);
        }
        for (key, targets) in change.set {
            self.insert(key, targets);
        }
    }

    /// Whether `key` exists once `removed` are gone.
    fn holds(&self, key: &FrontendKey, removed: &BTreeSet<FrontendKey>) -> bool {
        self.frontends.contains_key(key) && !removed.contains(key)
    }
}

/// The elements that remove the frontends `removed` and set the services `set` (which may
/// name frontends just removed: an update). Costs what the touched frontends hold, whatever
/// the table's size. A group that empties keeps its structure. `None` when the change needs
/// the whole plan: a service fails validation, a frontend is set twice or is held by a
/// service not removed here, an address would be both address-only and per port, or a
/// frontend needs a slot-count group the table does not have.
pub(super) fn element_change(
    index: &Index,
    table: &str,
    removed: &[Frontend],
    set: Vec<VirtualService>,
) -> Option<ElementChange> {
    let removed: BTreeSet<FrontendKey> = removed.iter().map(|f| FrontendKey::from(*f)).collect();
    let mut wanted: BTreeMap<FrontendKey, Vec<Target>> = BTreeMap::new();
    for service in set {
        let service = validate_service(service).ok()?;
        let (key, targets) = frontend_targets(&service);
        if wanted.insert(key, targets).is_some() || index.holds(&key, &removed) {
            return None;
        }
    }
    for key in wanted.keys() {
        let conflict = match *key {
            FrontendKey::VipAddr(addr) => {
                let port_vip =
                    |k: &FrontendKey| matches!(k, FrontendKey::Vip { addr: a, .. } if *a == addr);
                wanted.keys().any(port_vip) || index.port_vips(addr).any(|k| !removed.contains(k))
            }
            FrontendKey::Vip { addr, .. } => {
                let any_port = FrontendKey::VipAddr(addr);
                wanted.contains_key(&any_port) || index.holds(&any_port, &removed)
            }
            FrontendKey::Published { .. } => false,
        };
        if conflict {
            return None;
        }
    }
    // Groups: every one a frontend goes into must be in the table already.
    if wanted
        .iter()
        .filter_map(|(key, targets)| group_of(*key, targets))
        .any(|group| !index.made.contains(&group))
    {
        return None;
    }

    // Per touched frontend: the elements it had and the ones it gets, by collection. An
    // element whose key stays with new data is deleted and added again in the same batch.
    let mut gone: BTreeMap<String, Vec<Vec<Value>>> = BTreeMap::new();
    let mut came: BTreeMap<String, Vec<Element>> = BTreeMap::new();
    let touched: BTreeSet<FrontendKey> = removed.iter().chain(wanted.keys()).copied().collect();
    for key in touched {
        let old = elements_of(key, index.frontends.get(&key));
        let new = elements_of(key, wanted.get(&key));
        for item in &old {
            if !new.contains(item) {
                gone.entry(item.0.clone())
                    .or_default()
                    .push(item.1.key.clone());
            }
        }
        for item in new {
            if !old.contains(&item) {
                came.entry(item.0).or_default().push(item.1);
            }
        }
    }
    let mut txn = Transaction::new();
    for (collection, keys) in gone {
        txn.push(Op::DeleteElements {
            table: table.to_string(),
            collection,
            keys,
        });
    }
    for (collection, mut elements) in came {
        elements.sort_by(|a, b| a.key.cmp(&b.key));
        txn.push(Op::AddElements {
            table: table.to_string(),
            collection,
            elements,
        });
    }
    Some(ElementChange {
        txn,
        removed,
        set: wanted,
    })
}

/// The elements a frontend with these targets has, with their collections: its key in the
/// no-backend set, or in its group's set and one map element per slot.
fn elements_of(key: FrontendKey, targets: Option<&Vec<Target>>) -> Vec<(String, Element)> {
    let Some(targets) = targets else {
        return Vec::new();
    };
    let kind = key.kind();
    if targets.is_empty() {
        return vec![(
            names::no_backend_set(kind).to_string(),
            Element::key(key.values()),
        )];
    }
    let slots = targets.len() as u32;
    let mut out = vec![(names::frontend_set(kind, slots), Element::key(key.values()))];
    let map = names::backend_map(kind, slots);
    for (slot, target) in (0..slots).zip(targets) {
        out.push((
            map.clone(),
            slot_element(
                &SlotKey {
                    frontend: key,
                    slot,
                },
                target,
            ),
        ));
    }
    out
}
