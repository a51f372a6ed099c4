//! [`NftBackend::update`] against the whole plan: over random sequences of per-service
//! changes, the table it keeps and the "kernel" (a [`FakeNft`]) always equal what `plan` makes
//! of all services (with the groups that emptied kept), and a change it cannot make as
//! elements leaves everything as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use routemesh_nft::{FakeNft, Op, Transaction};

use super::*;
use crate::model::{Backend, Frontend, LbSpec, Proto, Snat, VirtualService};

/// A small deterministic generator (no dependency for tests).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_frontend(rng: &mut Lcg) -> Frontend {
    let addr = Ipv4Addr::new(10, 0, 0, 1 + rng.below(12) as u8);
    match rng.below(7) {
        0..=3 => Frontend::VipAnyPort { addr },
        // Now and then on an address-only VIP's address: invalid.
        4 => Frontend::Vip {
            addr: if rng.below(8) == 0 {
                addr
            } else {
                Ipv4Addr::new(10, 0, 1, 1 + rng.below(6) as u8)
            },
            port: 80,
            proto: Proto::Tcp,
        },
        _ => Frontend::Published {
            port: 8080 + rng.below(3) as u16,
            proto: if rng.below(2) == 0 {
                Proto::Tcp
            } else {
                Proto::Udp
            },
        },
    }
}

fn random_service(rng: &mut Lcg, frontend: Frontend) -> VirtualService {
    let mut backends: Vec<Backend> = Vec::new();
    for _ in 0..rng.below(5) {
        let backend = Backend {
            addr: Ipv4Addr::new(10, 1, 0, 1 + rng.below(8) as u8),
            port: 80 + rng.below(2) as u16,
            weight: [0, 1, 1, 1, 1, 1, 2][rng.below(7) as usize],
        };
        // Now and then the same endpoint twice: invalid.
        let duplicate = backends
            .iter()
            .any(|b| (b.addr, b.port) == (backend.addr, backend.port));
        if !duplicate || rng.below(20) == 0 {
            backends.push(backend);
        }
    }
    VirtualService {
        frontend,
        backends,
        scheduler: Default::default(),
    }
}

fn spec_of(services: &BTreeMap<Frontend, VirtualService>) -> Result<ValidLbSpec, crate::SpecError> {
    LbSpec {
        snat: Snat::To(Ipv4Addr::new(10, 0, 0, 254)),
        services: services.values().cloned().collect(),
        ..LbSpec::default()
    }
    .validate()
}

fn sorted_elements(nft: &FakeNft) -> Vec<String> {
    let mut out = nft.ruleset().elements();
    out.sort();
    out
}

/// What the kernel holds after replacing the table with `plan(spec)`.
fn reference_elements(spec: &ValidLbSpec) -> Vec<String> {
    let fresh = FakeNft::new();
    fresh.apply(&Transaction::replace(plan(spec))).unwrap();
    sorted_elements(&fresh)
}

#[test]
fn updates_equal_the_whole_plan_over_random_changes() {
    for seed in 1..=12u64 {
        let mut rng = Lcg(seed);
        let mut backend = NftBackend::new(FakeNft::new());
        let mut services: BTreeMap<Frontend, VirtualService> = BTreeMap::new();
        backend.sync(&spec_of(&services).unwrap()).unwrap();
        let (mut by_update, mut by_sync, mut refused) = (0, 0, 0);
        for step in 0..300 {
            let mut next = services.clone();
            let mut removed = Vec::new();
            let mut set = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let frontend = random_frontend(&mut rng);
                if next.contains_key(&frontend) && !removed.contains(&frontend) {
                    removed.push(frontend);
                }
                if rng.below(4) == 0 {
                    next.remove(&frontend);
                    set.retain(|s: &VirtualService| s.frontend != frontend);
                } else {
                    let service = random_service(&mut rng, frontend);
                    set.retain(|s: &VirtualService| s.frontend != frontend);
                    set.push(service.clone());
                    next.insert(frontend, service);
                }
            }
            let before = (backend.applied().cloned(), sorted_elements(backend.nft()));
            let whole = spec_of(&next);
            match backend.update(&removed, set) {
                Some(_) => {
                    let whole = whole.unwrap_or_else(|e| {
                        panic!("seed {seed} step {step}: update took what the spec refuses: {e}")
                    });
                    by_update += 1;
                    // The whole plan, with the groups that emptied kept.
                    assert_eq!(
                        backend.applied(),
                        Some(&plan_keeping(&whole, &backend.empty_groups())),
                        "seed {seed} step {step}"
                    );
                    assert_eq!(sorted_elements(backend.nft()), reference_elements(&whole));
                    services = next;
                }
                None => {
                    assert_eq!(
                        (backend.applied().cloned(), sorted_elements(backend.nft())),
                        before,
                        "seed {seed} step {step}: a refused update changed something"
                    );
                    match whole {
                        Ok(whole) => {
                            by_sync += 1;
                            backend.sync(&whole).unwrap();
                            assert_eq!(sorted_elements(backend.nft()), reference_elements(&whole));
                            services = next;
                        }
                        Err(_) => refused += 1,
                    }
                }
            }
        }
        eprintln!("seed {seed}: {by_update} updates, {by_sync} syncs, {refused} refused");
        // The sequences exercise all three ways.
        assert!(
            by_update >= 100,
            "seed {seed}: only {by_update} updates as elements"
        );
        assert!(
            by_sync > 5 && refused > 5,
            "seed {seed}: {by_sync} syncs, {refused} refused"
        );
    }
}

#[test]
fn one_backend_more_sends_only_that_services_elements() {
    let be = |last: u8| Backend::new(Ipv4Addr::new(10, 1, 0, last), 80);
    let mut services: Vec<VirtualService> = (1..=200u8)
        .map(|i| VirtualService {
            frontend: Frontend::VipAnyPort {
                addr: Ipv4Addr::new(10, 0, 1, i),
            },
            backends: vec![],
            scheduler: Default::default(),
        })
        .collect();
    for (i, s) in services.iter_mut().enumerate().take(3) {
        s.backends = (1..=3 + (i / 2) as u8).map(be).collect();
    }
    let spec = LbSpec {
        services: services.clone(),
        ..LbSpec::default()
    }
    .validate()
    .unwrap();
    let mut backend = NftBackend::new(FakeNft::new());
    backend.sync(&spec).unwrap();
    let sent = backend.nft().transactions().len();

    // Service 0 goes from 3 to 4 backends: group 3 keeps service 1, group 4 has service 2.
    let mut changed = services[0].clone();
    changed.backends.push(be(9));
    let report = backend
        .update(&[changed.frontend], vec![changed.clone()])
        .expect("an element change");
    assert_eq!(report.mode, SyncMode::Incremental);
    let txns = backend.nft().transactions();
    assert_eq!(txns.len(), sent + 1);
    let ops = &txns[sent].ops;
    assert!(ops
        .iter()
        .all(|op| matches!(op, Op::AddElements { .. } | Op::DeleteElements { .. })));
    // Out of group 3 (set element, 3 slots), into group 4 (set element, 4 slots).
    assert_eq!((report.elements_removed, report.elements_added), (4, 5));
    services[0] = changed;
    let whole = LbSpec {
        services: services.clone(),
        ..LbSpec::default()
    }
    .validate()
    .unwrap();
    assert_eq!(backend.applied(), Some(&plan(&whole)));

    // The same service again: nothing to send.
    let again = backend
        .update(&[services[0].frontend], vec![services[0].clone()])
        .expect("an element change");
    assert_eq!(again.mode, SyncMode::Unchanged);
    assert_eq!(backend.nft().transactions().len(), sent + 1);

    // A fifth backend makes group 5 appear: the whole spec is needed, nothing is sent.
    let mut grown = services[0].clone();
    grown.backends.push(be(10));
    assert!(backend.update(&[grown.frontend], vec![grown]).is_none());
    assert_eq!(backend.nft().transactions().len(), sent + 1);
}

#[test]
fn a_refused_element_change_drops_the_cache_so_the_next_sync_replaces() {
    let service = |n: usize| VirtualService {
        frontend: Frontend::VipAnyPort {
            addr: Ipv4Addr::new(10, 0, 1, 1),
        },
        backends: (1..=n as u8)
            .map(|i| Backend::new(Ipv4Addr::new(10, 1, 0, i), 80))
            .collect(),
        scheduler: Default::default(),
    };
    let spec = |n| {
        LbSpec {
            services: vec![service(n)],
            ..LbSpec::default()
        }
        .validate()
        .unwrap()
    };
    let mut backend = NftBackend::new(FakeNft::new());
    backend.sync(&spec(0)).unwrap();
    backend.nft().fail_next("refused");
    let same = backend.update(&[service(0).frontend], vec![service(0)]);
    assert_eq!(same.map(|r| r.mode), Some(SyncMode::Unchanged));
    // Unchanged sent nothing, so the failure is still pending: a real change meets it.
    let mut other = service(0);
    other.frontend = Frontend::VipAnyPort {
        addr: Ipv4Addr::new(10, 0, 1, 2),
    };
    assert!(backend.update(&[], vec![other]).is_none());
    assert!(backend.applied().is_none());
    assert_eq!(backend.sync(&spec(0)).unwrap().mode, SyncMode::Full);
}

#[test]
fn an_emptied_group_stays_for_the_next_service_until_two_full_syncs_find_it_empty() {
    let be = |last: u8| Backend::new(Ipv4Addr::new(10, 1, 0, last), 80);
    let web = |n: u8| VirtualService {
        frontend: Frontend::VipAnyPort {
            addr: Ipv4Addr::new(10, 0, 1, 1),
        },
        backends: (1..=n).map(be).collect(),
        scheduler: Default::default(),
    };
    // Another service holds group 3, so 4 -> 3 is a move between groups the table has.
    let other = VirtualService {
        frontend: Frontend::VipAnyPort {
            addr: Ipv4Addr::new(10, 0, 1, 2),
        },
        backends: (5..=7).map(be).collect(),
        scheduler: Default::default(),
    };
    let spec = |n: u8| {
        LbSpec {
            services: vec![web(n), other.clone()],
            ..LbSpec::default()
        }
        .validate()
        .unwrap()
    };
    let group4 = (KeyKind::VipAddr, 4);
    let mut backend = NftBackend::new(FakeNft::new());
    backend.sync(&spec(4)).unwrap();
    let has_chain = |b: &NftBackend<FakeNft>| {
        let chain = names::group_chain(KeyKind::VipAddr, 4);
        b.nft()
            .ruleset()
            .rule_fingerprints(spec(4).table())
            .iter()
            .any(|(c, _)| *c == chain)
    };
    assert!(has_chain(&backend));

    // 4 -> 3: group 4 empties as elements; its chain, set and map stay.
    let sent = backend.nft().transactions().len();
    assert!(backend.update(&[web(4).frontend], vec![web(3)]).is_some());
    assert_eq!(backend.empty_groups(), BTreeSet::from([group4]));
    assert!(has_chain(&backend));
    assert_eq!(sorted_elements(backend.nft()), reference_elements(&spec(3)));
    // 3 -> 4: back into the kept group, as elements only.
    assert!(backend.update(&[web(3).frontend], vec![web(4)]).is_some());
    assert_eq!(backend.nft().transactions().len(), sent + 2);
    assert!(backend.nft().transactions()[sent..]
        .iter()
        .flat_map(|t| &t.ops)
        .all(|op| matches!(op, Op::AddElements { .. } | Op::DeleteElements { .. })));
    assert!(backend.empty_groups().is_empty());
    assert_eq!(backend.applied(), Some(&plan(&spec(4))));

    // Empty again: the first full sync keeps the group, the second finds it still empty and
    // removes it; the kernel then holds exactly the plan.
    assert!(backend.update(&[web(4).frontend], vec![web(3)]).is_some());
    backend.full_sync(&spec(3)).unwrap();
    assert!(has_chain(&backend));
    assert_eq!(backend.empty_groups(), BTreeSet::from([group4]));
    backend.full_sync(&spec(3)).unwrap();
    assert!(!has_chain(&backend));
    assert!(backend.empty_groups().is_empty());
    assert_eq!(backend.applied(), Some(&plan(&spec(3))));
    assert_eq!(sorted_elements(backend.nft()), reference_elements(&spec(3)));
    // Group 4 is gone now: coming back into it needs the whole spec.
    assert!(backend.update(&[web(3).frontend], vec![web(4)]).is_none());
}
