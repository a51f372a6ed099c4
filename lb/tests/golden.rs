//! Golden dumps of rendered scripts. Regenerate with `UPDATE_GOLDEN=1 cargo test -p
//! routemesh-lb --test golden` and review the diff.

mod common;

use std::path::PathBuf;

use common::*;
use routemesh_lb::nftables::plan;
use routemesh_lb::{NftBackend, Snat};
use routemesh_nft::FakeNft;

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert!(
        expected == actual,
        "{} differs from the rendering (UPDATE_GOLDEN=1 to accept):\n{actual}",
        path.display()
    );
}

#[test]
fn full_sync() {
    check("full_sync.nft", &plan(&fixture()).full_sync_script());
}

#[test]
fn small_vip_table() {
    let spec = valid(
        Snat::To(ip("10.0.1.250")),
        vec![vip(
            "10.0.1.3",
            80,
            routemesh_lb::Proto::Tcp,
            vec![be("10.0.1.5", 80, 1), be("10.0.1.6", 80, 1)],
        )],
    );
    check("small_vip.nft", &plan(&spec).full_sync_script());
}

#[test]
fn address_only_vip_table() {
    let spec = valid(
        Snat::To(ip("10.0.1.250")),
        vec![
            any_port(
                "10.0.1.20",
                vec![
                    be("10.0.1.5", 0, 1),
                    be("10.0.1.6", 0, 1),
                    be("10.0.1.7", 0, 1),
                ],
            ),
            any_port("10.0.1.21", vec![be("10.0.1.5", 0, 0)]),
        ],
    );
    check("address_only_vip.nft", &plan(&spec).full_sync_script());
}

#[test]
fn incremental_scripts() {
    let mut backend = NftBackend::new(FakeNft::new());
    backend.sync(&fixture()).unwrap();
    let mut s = services();
    s[0].backends[2] = be("10.1.0.9", 8080, 1);
    backend.sync(&valid(Snat::Masquerade, s.clone())).unwrap();
    check(
        "incremental_backend_swap.nft",
        &backend.nft().last_script().unwrap(),
    );
    s[0].backends.push(be("10.1.0.10", 8080, 1));
    s.remove(1);
    backend.sync(&valid(Snat::Masquerade, s)).unwrap();
    check(
        "incremental_new_and_emptied_group.nft",
        &backend.nft().last_script().unwrap(),
    );
}
