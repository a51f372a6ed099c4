//! The IPVS backend against fakes: mark allocation through syncs, the marking script (golden
//! text), the diff of desired vs dumped services, and incremental behaviour.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use common::{any_port, be, ip, published, valid, vip};
use routemesh_ipvs::{Destination, Family, Scheduler as IpvsScheduler, Service, ServiceKey};
use routemesh_lb::ipvs::{
    desired_state, diff, fwmark_key, fwmark_service, marking_table, IpvsChange, IpvsState,
    MarkedFrontend, ServiceState, DEFAULT_TABLE,
};
use routemesh_lb::{
    FakeIpvs, Frontend, IpvsBackend, IpvsBackendError, Proto, Scheduler, Snat, SyncMode,
    ValidLbSpec, VirtualService,
};
use routemesh_nft::FakeNft;

fn dest(addr: &str, port: u16, weight: u32) -> Destination {
    Destination {
        weight,
        ..Destination::new(IpAddr::V4(ip(addr)), port)
    }
}

fn sock(addr: &str, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip(addr)), port)
}

fn web_spec(weights: [u32; 3]) -> ValidLbSpec {
    let backends = |port| {
        vec![
            be("10.1.0.11", port, weights[0]),
            be("10.1.0.12", port, weights[1]),
            be("10.1.0.13", port, weights[2]),
        ]
    };
    valid(
        Snat::Masquerade,
        vec![
            any_port("10.9.0.10", backends(0)),
            published(8080, Proto::Tcp, backends(80)),
        ],
    )
}

fn backend() -> IpvsBackend<FakeNft, FakeIpvs> {
    IpvsBackend::new(FakeNft::new(), FakeIpvs::new())
}

const GOLDEN_MARKING: &str = "\
add table ip routemesh_ipvs
delete table ip routemesh_ipvs
table ip routemesh_ipvs {
\tmap vip_addr_marks {
\t\ttypeof ip daddr : meta mark
\t\telements = { 10.9.0.10 : 0x00000103 }
\t}
\tmap vip_port_marks {
\t\ttypeof ip daddr . meta l4proto . th dport : meta mark
\t\telements = { 10.9.0.11 . udp . 53 : 0x00000100, 10.9.0.11 . tcp . 8081 : 0x00000101 }
\t}
\tmap published_marks {
\t\ttypeof meta l4proto . th dport : meta mark
\t\telements = { tcp . 8080 : 0x00000102 }
\t}
\tset no_backend_marks {
\t\ttypeof meta mark
\t\telements = { 0x00000100 }
\t}
\tchain mark_prerouting {
\t\ttype filter hook prerouting priority -150; policy accept;
\t\tjump set_mark
\t}
\tchain mark_output {
\t\ttype filter hook output priority -150; policy accept;
\t\tjump set_mark
\t}
\tchain set_mark {
\t\tmeta mark set ip daddr . meta l4proto . th dport map @vip_port_marks goto check_backend
\t\tmeta mark set ip daddr map @vip_addr_marks goto check_backend
\t\tfib daddr type local meta mark set meta l4proto . th dport map @published_marks goto check_backend
\t}
\tchain check_backend {
\t\tct state new meta mark @no_backend_marks goto reject_no_backend
\t}
\tchain reject_no_backend {
\t\tmeta l4proto tcp reject with tcp reset
\t\treject with icmp type port-unreachable
\t}
\tchain snat_postrouting {
\t\ttype nat hook postrouting priority 100; policy accept;
\t\tmeta mark 0x00000100-0x0000ffff snat ip to 10.1.0.1
\t}
}
";

fn golden_spec() -> ValidLbSpec {
    valid(
        Snat::To(ip("10.1.0.1")),
        vec![
            vip("10.9.0.11", 8081, Proto::Tcp, vec![be("10.1.0.11", 80, 1)]),
            // Only a draining backend: its new connections are refused.
            vip("10.9.0.11", 53, Proto::Udp, vec![be("10.1.0.11", 53, 0)]),
            published(8080, Proto::Tcp, vec![be("10.1.0.12", 80, 1)]),
            any_port("10.9.0.10", vec![be("10.1.0.13", 0, 1)]),
        ],
    )
}

#[test]
fn marking_script_is_golden() {
    let mut backend = backend();
    backend.sync(&golden_spec()).unwrap();
    let scripts = backend.nft().scripts();
    assert_eq!(scripts.len(), 1);
    // Frontends sort as Vip (by address, port, protocol) < Published < VipAnyPort: marks
    // follow that order.
    assert_eq!(scripts[0], GOLDEN_MARKING);
}

#[test]
fn marking_script_without_frontends_has_empty_maps() {
    let script = marking_table(DEFAULT_TABLE, Snat::Masquerade, &[]).full_sync_script();
    assert!(script.contains("\tmap vip_addr_marks {\n\t\ttypeof ip daddr : meta mark\n\t}\n"));
    assert!(script.contains("\t\tmeta mark 0x00000100-0x0000ffff masquerade\n"));
    assert!(!script.contains("elements"));
}

#[test]
fn marking_script_does_not_depend_on_input_order() {
    let a = MarkedFrontend {
        frontend: Frontend::Published {
            port: 80,
            proto: Proto::Udp,
        },
        mark: 0x100,
        has_active_backend: true,
    };
    let b = MarkedFrontend {
        frontend: Frontend::Published {
            port: 80,
            proto: Proto::Tcp,
        },
        mark: 0x101,
        has_active_backend: true,
    };
    assert_eq!(
        marking_table("t", Snat::Masquerade, &[a, b]).full_sync_script(),
        marking_table("t", Snat::Masquerade, &[b, a]).full_sync_script()
    );
}

#[test]
fn first_sync_creates_fwmark_services_with_masq_destinations() {
    let mut backend = backend();
    let report = backend.sync(&web_spec([1, 1, 1])).unwrap();
    assert_eq!(report.mode, SyncMode::Full);
    assert!(report.marking_replaced);
    assert_eq!(report.changes.services_added, 2);
    assert_eq!(report.changes.destinations_added, 6);
    assert_eq!(backend.ipvs().dumps, 1);

    let published = Frontend::Published {
        port: 8080,
        proto: Proto::Tcp,
    };
    let vipa = Frontend::VipAnyPort {
        addr: ip("10.9.0.10"),
    };
    assert_eq!(backend.marks()[&published], 0x100);
    assert_eq!(backend.marks()[&vipa], 0x101);

    let table = &backend.ipvs().table;
    let (service, dests) = &table[&fwmark_key(0x101)];
    assert_eq!(service.scheduler, IpvsScheduler::Rr);
    assert_eq!(
        service.key,
        ServiceKey::Fwmark {
            mark: 0x101,
            family: Family::Inet
        }
    );
    // Address-only VIP: port 0, the client's port is kept.
    assert_eq!(dests[&sock("10.1.0.11", 0)], dest("10.1.0.11", 0, 1));
    assert_eq!(dests.len(), 3);
    let (_, dests) = &table[&fwmark_key(0x100)];
    assert_eq!(dests[&sock("10.1.0.12", 80)], dest("10.1.0.12", 80, 1));

    // Same spec: nothing sent, no dump.
    let report = backend.sync(&web_spec([1, 1, 1])).unwrap();
    assert_eq!(report.mode, SyncMode::Unchanged);
    assert_eq!(backend.nft().scripts().len(), 1);
    assert_eq!(backend.ipvs().dumps, 1);
}

#[test]
fn draining_updates_weight_and_removal_deletes_only_that_destination() {
    let mut backend = backend();
    backend.sync(&web_spec([1, 1, 1])).unwrap();
    backend.ipvs_mut().take_changes();

    let report = backend.sync(&web_spec([1, 1, 0])).unwrap();
    assert_eq!(report.mode, SyncMode::Incremental);
    assert!(
        !report.marking_replaced,
        "marks and no-backend set unchanged"
    );
    assert_eq!(
        backend.ipvs_mut().take_changes(),
        vec![
            IpvsChange::UpdateDestination(fwmark_key(0x100), dest("10.1.0.13", 80, 0)),
            IpvsChange::UpdateDestination(fwmark_key(0x101), dest("10.1.0.13", 0, 0)),
        ]
    );

    let gone = valid(
        Snat::Masquerade,
        vec![
            any_port(
                "10.9.0.10",
                vec![be("10.1.0.11", 0, 1), be("10.1.0.12", 0, 1)],
            ),
            published(
                8080,
                Proto::Tcp,
                vec![be("10.1.0.11", 80, 1), be("10.1.0.12", 80, 1)],
            ),
        ],
    );
    backend.sync(&gone).unwrap();
    assert_eq!(
        backend.ipvs_mut().take_changes(),
        vec![
            IpvsChange::DeleteDestination(fwmark_key(0x100), sock("10.1.0.13", 80)),
            IpvsChange::DeleteDestination(fwmark_key(0x101), sock("10.1.0.13", 0)),
        ]
    );
    assert_eq!(backend.ipvs().dumps, 1, "incremental syncs use the cache");
}

#[test]
fn all_draining_frontend_keeps_its_service_and_is_rejected_in_nft() {
    let mut backend = backend();
    backend.sync(&web_spec([1, 1, 1])).unwrap();
    let report = backend.sync(&web_spec([0, 0, 0])).unwrap();
    assert!(report.marking_replaced);
    assert_eq!(report.changes.destinations_updated, 6);
    assert_eq!(report.changes.services_removed, 0);
    let script = backend.nft().last_script().unwrap();
    assert!(
        script.contains("\t\telements = { 0x00000100, 0x00000101 }\n"),
        "{script}"
    );
}

#[test]
fn removed_frontend_unmarked_before_its_service_is_deleted_and_mark_not_reused_at_once() {
    let mut backend = backend();
    backend.sync(&web_spec([1, 1, 1])).unwrap();
    backend.ipvs_mut().take_changes();
    // The published port goes, a UDP one comes: the freed 0x100 is not reused in this sync.
    let spec = valid(
        Snat::Masquerade,
        vec![
            any_port("10.9.0.10", vec![be("10.1.0.11", 0, 1)]),
            published(53, Proto::Udp, vec![be("10.1.0.11", 53, 1)]),
        ],
    );
    let scripts_before = backend.nft().scripts().len();
    backend.sync(&spec).unwrap();
    let udp53 = Frontend::Published {
        port: 53,
        proto: Proto::Udp,
    };
    assert_eq!(backend.marks()[&udp53], 0x102);
    assert_eq!(backend.marks().len(), 2);
    let changes = backend.ipvs_mut().take_changes();
    assert_eq!(
        changes,
        vec![
            IpvsChange::DeleteDestination(fwmark_key(0x101), sock("10.1.0.12", 0)),
            IpvsChange::DeleteDestination(fwmark_key(0x101), sock("10.1.0.13", 0)),
            IpvsChange::AddService(fwmark_service(0x102, Scheduler::Rr)),
            IpvsChange::AddDestination(fwmark_key(0x102), dest("10.1.0.11", 53, 1)),
            IpvsChange::DeleteService(fwmark_key(0x100)),
        ]
    );
    assert_eq!(backend.nft().scripts().len(), scripts_before + 1);
    let script = backend.nft().last_script().unwrap();
    assert!(script.contains("elements = { udp . 53 : 0x00000102 }"));
    assert!(!script.contains("8080"));
}

#[test]
fn scheduler_change_updates_the_service() {
    let mut backend = backend();
    let with = |scheduler| {
        valid(
            Snat::Masquerade,
            vec![VirtualService {
                scheduler,
                ..published(80, Proto::Tcp, vec![be("10.1.0.11", 80, 1)])
            }],
        )
    };
    backend.sync(&with(Scheduler::Rr)).unwrap();
    backend.ipvs_mut().take_changes();
    backend.sync(&with(Scheduler::Sh)).unwrap();
    let changes = backend.ipvs_mut().take_changes();
    let [IpvsChange::UpdateService(service)] = changes.as_slice() else {
        panic!("{changes:?}");
    };
    assert_eq!(service.scheduler, IpvsScheduler::Sh);
    assert_eq!(
        service.flags.0, 0x8,
        "sh falls back from weight-0 destinations"
    );
}

#[test]
fn full_sync_adopts_the_kernel_and_leaves_foreign_services_alone() {
    let mut ipvs = FakeIpvs::new();
    // A stale routemesh service and a service that is not ours.
    let stale = fwmark_service(0x1ff, Scheduler::Rr);
    let foreign = Service::new(
        ServiceKey::Fwmark {
            mark: 7,
            family: Family::Inet,
        },
        IpvsScheduler::Wrr,
    );
    for s in [&stale, &foreign] {
        ipvs.table.insert(s.key, (s.clone(), BTreeMap::new()));
    }
    // The published service already exists with one wrong weight and one extra destination.
    let existing = fwmark_service(0x100, Scheduler::Rr);
    let dests = [
        dest("10.1.0.11", 80, 1),
        dest("10.1.0.12", 80, 5),
        dest("10.1.0.99", 80, 1),
    ]
    .into_iter()
    .map(|d| (d.socket_addr(), d))
    .collect();
    ipvs.table.insert(existing.key, (existing, dests));

    let mut backend = IpvsBackend::new(FakeNft::new(), ipvs);
    backend.sync(&web_spec([1, 1, 1])).unwrap();
    let changes = backend.ipvs_mut().take_changes();
    assert_eq!(
        changes,
        vec![
            IpvsChange::UpdateDestination(fwmark_key(0x100), dest("10.1.0.12", 80, 1)),
            IpvsChange::AddDestination(fwmark_key(0x100), dest("10.1.0.13", 80, 1)),
            IpvsChange::DeleteDestination(fwmark_key(0x100), sock("10.1.0.99", 80)),
            IpvsChange::AddService(fwmark_service(0x101, Scheduler::Rr)),
            IpvsChange::AddDestination(fwmark_key(0x101), dest("10.1.0.11", 0, 1)),
            IpvsChange::AddDestination(fwmark_key(0x101), dest("10.1.0.12", 0, 1)),
            IpvsChange::AddDestination(fwmark_key(0x101), dest("10.1.0.13", 0, 1)),
            IpvsChange::DeleteService(stale.key),
        ]
    );
    assert!(backend.ipvs().table.contains_key(&foreign.key));

    // Drift behind the cache's back is repaired by full_sync, not by sync.
    backend.ipvs_mut().table.remove(&fwmark_key(0x101));
    assert_eq!(
        backend.sync(&web_spec([1, 1, 1])).unwrap().mode,
        SyncMode::Unchanged
    );
    let report = backend.full_sync(&web_spec([1, 1, 1])).unwrap();
    assert_eq!(report.mode, SyncMode::Full);
    assert_eq!(report.changes.services_added, 1);
    assert_eq!(report.changes.destinations_added, 3);
}

#[test]
fn failed_incremental_sync_recovers_with_a_full_one() {
    let mut backend = backend();
    backend.sync(&web_spec([1, 1, 1])).unwrap();
    backend.ipvs_mut().fail_next(12);
    let report = backend.sync(&web_spec([1, 1, 0])).unwrap();
    assert_eq!(report.mode, SyncMode::Full);
    assert_eq!(
        report.recovered_from.as_deref(),
        Some("IPVS: updating destination 10.1.0.13:80 of fwmark 256: Out of memory")
    );
    assert_eq!(backend.ipvs().dumps, 2);
    let (_, dests) = &backend.ipvs().table[&fwmark_key(0x100)];
    assert_eq!(dests[&sock("10.1.0.13", 80)].weight, 0);
}

#[test]
fn failed_nft_run_is_reported_and_retried() {
    let mut backend = backend();
    backend.nft().fail_next("Error: syntax error");
    let err = backend.sync(&web_spec([1, 1, 1])).unwrap_err();
    assert!(matches!(err, IpvsBackendError::Nft { .. }));
    assert_eq!(
        err.to_string(),
        "nft table ip routemesh_ipvs: replacing the marking table failed: Error: syntax error"
    );
    // The services went in; the marking table did not: the next sync re-reads and resends.
    backend.nft().fail_next("Error: still broken");
    assert!(backend.sync(&web_spec([1, 1, 1])).is_err());
    let report = backend.sync(&web_spec([1, 1, 1])).unwrap();
    assert_eq!(report.mode, SyncMode::Full);
    assert!(report.marking_replaced);
    assert_eq!(report.changes.services_added, 0);
}

#[test]
fn teardown_removes_table_and_owned_services() {
    let mut backend = backend();
    backend.sync(&web_spec([1, 1, 1])).unwrap();
    backend.teardown().unwrap();
    assert!(backend.ipvs().table.is_empty());
    assert_eq!(
        backend.nft().last_script().unwrap(),
        "add table ip routemesh_ipvs\ndelete table ip routemesh_ipvs\n"
    );
    assert!(backend.marks().is_empty());
}

#[test]
fn diff_is_pure_and_empty_for_equal_states() {
    let spec = web_spec([1, 2, 0]);
    let marks = routemesh_lb::ipvs::allocate_marks(
        &Default::default(),
        spec.services().iter().map(|s| s.frontend),
    )
    .unwrap();
    let desired = desired_state(&spec, &marks);
    assert!(diff(&desired, &desired).is_empty());
    let empty = IpvsState::new();
    let all = diff(&empty, &desired);
    assert_eq!(all.len(), 8);
    let removal = diff(&desired, &empty);
    assert_eq!(
        removal,
        vec![
            IpvsChange::DeleteService(fwmark_key(0x100)),
            IpvsChange::DeleteService(fwmark_key(0x101)),
        ]
    );
    let ServiceState { destinations, .. } = &desired[&0x100];
    assert_eq!(destinations[&sock("10.1.0.12", 80)].weight, 2);
}

#[test]
fn scheduler_parses_and_defaults_to_rr() {
    assert_eq!(Scheduler::default(), Scheduler::Rr);
    assert_eq!("mh".parse::<Scheduler>(), Ok(Scheduler::Mh));
    assert_eq!(Scheduler::Wrr.to_string(), "wrr");
    assert_eq!(
        "wlc".parse::<Scheduler>().unwrap_err().to_string(),
        "unknown scheduler \"wlc\": expected one of rr, wrr, lc, sh, mh"
    );
}
