//! Kernel test (root): the nftables backend over [`NftNetlink`]. A backend change goes as one
//! netlink batch, and leaves the kernel exactly where a full `nft -f` replacement of the
//! same spec leaves it. Skipped loudly without root.

mod common;

use std::sync::Mutex;

use common::*;
use routemesh_lb::{NftBackend, Proto, Snat, SyncMode};
use routemesh_nft::netlink::Route;
use routemesh_nft::{Executor, NftError, NftNetlink, Transaction};
use routemesh_testsupport::{root_or_skip, unique, Netns};

/// Applies through [`NftNetlink`] and records which way each transaction went.
struct Routed {
    inner: NftNetlink,
    routes: Mutex<Vec<Route>>,
}

impl Executor for Routed {
    fn apply(&self, txn: &Transaction) -> Result<(), NftError> {
        let route = self.inner.apply_routed(txn)?;
        self.routes.lock().unwrap().push(route);
        Ok(())
    }
}

fn listing(ns: &Netns) -> String {
    ns.exec("nft", &["list", "table", "ip", "routemesh_lb"])
        .unwrap()
}

#[test]
fn backend_changes_go_over_netlink_and_match_a_full_sync() {
    if !root_or_skip("backend_changes_go_over_netlink_and_match_a_full_sync") {
        return;
    }
    let ns = Netns::new(&unique("lbnl")).unwrap();
    let exec = Routed {
        inner: NftNetlink::in_netns(ns.path()),
        routes: Mutex::new(Vec::new()),
    };
    let mut backend = NftBackend::new(exec);
    let services = |last: &str| {
        vec![
            vip(
                "10.0.0.2",
                80,
                Proto::Tcp,
                vec![
                    be("10.1.0.1", 80, 1),
                    be("10.1.0.2", 80, 1),
                    be(last, 80, 1),
                ],
            ),
            any_port("10.0.0.9", vec![be("10.1.0.1", 0, 1), be(last, 0, 1)]),
            published(
                8080,
                Proto::Udp,
                vec![be("10.255.0.7", 53, 1), be(last, 53, 1)],
            ),
            vip("10.0.0.3", 443, Proto::Tcp, vec![be("10.1.0.9", 443, 0)]),
            // Keeps the 3-slot group when 10.0.0.2 drains.
            vip(
                "10.0.0.4",
                80,
                Proto::Tcp,
                vec![
                    be("10.1.0.5", 80, 1),
                    be("10.1.0.6", 80, 1),
                    be("10.1.0.7", 80, 1),
                ],
            ),
        ]
    };
    let first = valid(Snat::Masquerade, services("10.1.0.3"));
    assert_eq!(backend.sync(&first).unwrap().mode, SyncMode::Full);
    let second = valid(Snat::Masquerade, services("10.1.0.4"));
    let report = backend.sync(&second).unwrap();
    assert_eq!(report.mode, SyncMode::Incremental);
    assert_eq!(report.elements_added, 3);
    assert_eq!(
        *backend.nft().routes.lock().unwrap(),
        vec![Route::Text, Route::Netlink]
    );
    let incremental = listing(&ns);
    assert!(incremental.contains("10.1.0.4"), "{incremental}");
    assert!(!incremental.contains("10.1.0.3"), "{incremental}");
    backend.full_sync(&second).unwrap();
    assert_eq!(listing(&ns), incremental);

    // A service losing its last backend moves between sets: still elements only.
    let mut drained = services("10.1.0.4");
    drained[0].backends.iter_mut().for_each(|b| b.weight = 0);
    backend
        .sync(&valid(Snat::Masquerade, drained.clone()))
        .unwrap();
    let routes = backend.nft().routes.lock().unwrap().clone();
    assert_eq!(routes.last(), Some(&Route::Netlink), "{routes:?}");
    let incremental = listing(&ns);
    backend
        .full_sync(&valid(Snat::Masquerade, drained))
        .unwrap();
    assert_eq!(listing(&ns), incremental);
}

#[test]
fn drift_makes_the_netlink_change_fail_and_a_full_sync_repair_it() {
    if !root_or_skip("drift_makes_the_netlink_change_fail_and_a_full_sync_repair_it") {
        return;
    }
    let ns = Netns::new(&unique("lbdr")).unwrap();
    let mut backend = NftBackend::new(NftNetlink::in_netns(ns.path()));
    let spec = |last: &str| {
        valid(
            Snat::Masquerade,
            vec![vip(
                "10.0.0.2",
                80,
                Proto::Tcp,
                vec![be("10.1.0.1", 80, 1), be(last, 80, 1)],
            )],
        )
    };
    backend.sync(&spec("10.1.0.2")).unwrap();
    // Someone deletes the element the next change deletes.
    ns.sh_ok("nft delete element ip routemesh_lb vip_be_2 '{ 10.0.0.2 . tcp . 80 . 1 }'");
    let report = backend.sync(&spec("10.1.0.3")).unwrap();
    assert_eq!(report.mode, SyncMode::Full);
    let first = report.recovered_from.unwrap_or_default();
    assert!(
        first.contains("deleting elements from set ip routemesh_lb vip_be_2"),
        "{first}"
    );
    assert!(listing(&ns).contains("10.0.0.2 . tcp . 80 . 1 : 10.1.0.3 . 80"));
}

fn handles(ns: &Netns, chain: &str) -> Vec<String> {
    ns.exec("nft", &["-a", "list", "chain", "ip", "routemesh_lb", chain])
        .unwrap()
        .lines()
        .filter(|l| !l.contains('{'))
        .filter_map(|l| l.split("# handle ").nth(1).map(str::to_string))
        .collect()
}

#[test]
fn a_resync_repairs_drift_in_the_kernel() {
    if !root_or_skip("a_resync_repairs_drift_in_the_kernel") {
        return;
    }
    let ns = Netns::new(&unique("lbrs")).unwrap();
    let mut backend = NftBackend::new(NftNetlink::in_netns(ns.path()));
    let mut services = Vec::new();
    for i in 0..2000u32 {
        let addr = std::net::Ipv4Addr::from(0x0ac8_0000 + i).to_string();
        services.push(vip(
            &addr,
            80,
            Proto::Tcp,
            vec![
                be("10.1.0.1", 80, 1),
                be("10.1.0.2", 80, 1),
                be("10.1.0.3", 80, 1),
            ],
        ));
    }
    services.push(any_port(
        "10.0.0.9",
        vec![
            be("10.1.0.1", 0, 1),
            be("10.1.0.2", 0, 1),
            be("10.1.0.3", 0, 1),
        ],
    ));
    services.push(published(
        8080,
        Proto::Udp,
        vec![be("10.255.0.7", 53, 1), be("10.255.0.8", 53, 1)],
    ));
    services.push(vip(
        "10.0.0.3",
        443,
        Proto::Tcp,
        vec![be("10.1.0.9", 443, 0)],
    ));
    let spec = valid(Snat::Masquerade, services);
    assert_eq!(backend.sync(&spec).unwrap().mode, SyncMode::Full);
    let want = listing(&ns);
    let kept = handles(&ns, "vip_3");
    assert_eq!(kept.len(), 1, "{kept:?}");

    // Nothing drifted: the resync leaves the table as it was.
    let report = backend.full_sync(&spec).unwrap();
    assert_eq!(report.mode, SyncMode::Resync, "{report:?}");
    assert_eq!(listing(&ns), want);

    // Drift by hand: an element gone, a stray one, rules flushed and deleted.
    ns.sh_ok("nft delete element ip routemesh_lb vip_be_3 '{ 10.200.0.7 . tcp . 80 . 1 }'");
    ns.sh_ok("nft delete element ip routemesh_lb vip_fe_3 '{ 10.200.1.7 . tcp . 80 }'");
    ns.sh_ok("nft add element ip routemesh_lb vipa_fe_3 '{ 10.9.9.9 }'");
    ns.sh_ok("nft add element ip routemesh_lb no_backend_pub '{ tcp . 9999 }'");
    ns.sh_ok("nft flush chain ip routemesh_lb services");
    ns.sh_ok("nft flush chain ip routemesh_lb filter_prerouting");
    let post = handles(&ns, "nat_postrouting");
    ns.sh_ok(&format!(
        "nft delete rule ip routemesh_lb nat_postrouting handle {}",
        post[0]
    ));
    assert_ne!(listing(&ns), want);
    let report = backend.full_sync(&spec).unwrap();
    assert_eq!(report.mode, SyncMode::Resync, "{report:?}");
    assert_eq!(listing(&ns), want);
    let json = ns
        .exec(
            "nft",
            &["-j", "list", "map", "ip", "routemesh_lb", "vip_be_3"],
        )
        .unwrap();
    assert_eq!(
        json.matches("\"concat\": [\"10.200.").count(),
        6000,
        "vip_be_3 has 6000 elements"
    );
    // The rule the resync keeps (nft cannot re-add it beside its map) keeps its handle.
    assert_eq!(handles(&ns, "vip_3"), kept);

    // That rule drifting makes the resync replace the table, and say why.
    ns.sh_ok("nft flush chain ip routemesh_lb vip_3");
    let report = backend.full_sync(&spec).unwrap();
    assert_eq!(report.mode, SyncMode::Full);
    let why = report.recovered_from.unwrap_or_default();
    assert!(
        why.contains("chain vip_3 of table ip routemesh_lb"),
        "{why}"
    );
    assert_eq!(listing(&ns), want);
    assert_eq!(backend.full_sync(&spec).unwrap().mode, SyncMode::Resync);

    // A set of another type (after an upgrade, say): the structure is refused, the table
    // replaced.
    ns.sh_ok("nft 'flush chain ip routemesh_lb filter_prerouting; flush chain ip routemesh_lb filter_output; delete set ip routemesh_lb no_backend_pub; add set ip routemesh_lb no_backend_pub { type ipv4_addr; }'");
    let report = backend.full_sync(&spec).unwrap();
    assert_eq!(report.mode, SyncMode::Full);
    let why = report.recovered_from.unwrap_or_default();
    assert!(why.starts_with("resync of the structure failed"), "{why}");
    assert_eq!(listing(&ns), want);
}
