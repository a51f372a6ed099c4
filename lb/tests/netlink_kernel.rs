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
