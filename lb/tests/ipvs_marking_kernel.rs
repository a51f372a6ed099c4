//! The IPVS backend's nft marking table against this machine's kernel (root; no IPVS needed):
//! nft 1.0.6 accepts the rendered table, replaces it atomically, and a frontend without an
//! active backend refuses new TCP connections at once. Also: without IPVS, the backend's
//! entry points fail with a message that says so. The IPVS side runs in the VM
//! (`vm/tests/lb-ipvs.sh`).

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use routemesh_lb::ipvs::{marking_table, MarkedFrontend, Timeouts, DEFAULT_TABLE};
use routemesh_lb::{Frontend, Proto, Snat};
use routemesh_testsupport::{root_or_skip, unique, veth, Netns, RecordingNft};

fn frontends(active: bool) -> Vec<MarkedFrontend> {
    vec![
        MarkedFrontend {
            frontend: Frontend::VipAnyPort {
                addr: Ipv4Addr::new(10, 77, 0, 10),
            },
            mark: 0x100,
            has_active_backend: active,
        },
        MarkedFrontend {
            frontend: Frontend::Vip {
                addr: Ipv4Addr::new(10, 77, 0, 11),
                port: 8081,
                proto: Proto::Tcp,
            },
            mark: 0x101,
            has_active_backend: true,
        },
        MarkedFrontend {
            frontend: Frontend::Published {
                port: 8080,
                proto: Proto::Tcp,
            },
            mark: 0x102,
            has_active_backend: active,
        },
    ]
}

#[test]
fn marking_table_loads_replaces_and_rejects() {
    if !root_or_skip("marking_table_loads_replaces_and_rejects") {
        return;
    }
    let client = Netns::new(&unique("c")).unwrap();
    let lb = Netns::new(&unique("lb")).unwrap();
    veth(&client, "c0", &lb, "l0").unwrap();
    client
        .ip(&["addr", "add", "10.76.0.2/24", "dev", "c0"])
        .unwrap();
    client
        .ip(&["route", "add", "default", "via", "10.76.0.1"])
        .unwrap();
    lb.ip(&["addr", "add", "10.76.0.1/24", "dev", "l0"])
        .unwrap();
    lb.ip(&["addr", "add", "10.77.0.10/32", "dev", "lo"])
        .unwrap();
    let runner = RecordingNft::new(&lb);

    let empty = marking_table(DEFAULT_TABLE, Snat::Masquerade, &[]).full_sync_script();
    runner.run(&empty).unwrap();
    let all_active = marking_table(
        DEFAULT_TABLE,
        Snat::To(Ipv4Addr::new(10, 76, 0, 1)),
        &frontends(true),
    )
    .full_sync_script();
    runner.run(&all_active).unwrap();
    let listed = lb
        .exec("nft", &["list", "table", "ip", DEFAULT_TABLE])
        .unwrap();
    assert!(
        listed.contains("10.77.0.11 . tcp . 8081 : 0x00000101"),
        "{listed}"
    );
    assert!(listed.contains("snat to 10.76.0.1"), "{listed}");

    let none_active =
        marking_table(DEFAULT_TABLE, Snat::Masquerade, &frontends(false)).full_sync_script();
    runner.run(&none_active).unwrap();
    let listed = lb
        .exec("nft", &["list", "table", "ip", DEFAULT_TABLE])
        .unwrap();
    assert!(
        listed.contains("elements = { 0x00000100, 0x00000102 }"),
        "{listed}"
    );

    // Refused at once (nothing listens in lb either, so the counter below proves it was us).
    for target in ["10.77.0.10:22", "10.76.0.1:8080"] {
        let addr: SocketAddr = target.parse().unwrap();
        let started = Instant::now();
        let result = client
            .run_in(|| TcpStream::connect_timeout(&addr, Duration::from_secs(3)))
            .unwrap();
        let err = result.expect_err("no backend: refused");
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{target}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    lb.exec(
        "nft",
        &[
            "insert",
            "rule",
            "ip",
            DEFAULT_TABLE,
            "reject_no_backend",
            "counter",
        ],
    )
    .unwrap();
    let addr: SocketAddr = "10.77.0.10:443".parse().unwrap();
    let _ = client
        .run_in(|| TcpStream::connect_timeout(&addr, Duration::from_secs(3)))
        .unwrap();
    let listed = lb
        .exec(
            "nft",
            &["list", "chain", "ip", DEFAULT_TABLE, "reject_no_backend"],
        )
        .unwrap();
    assert!(listed.contains("counter packets 1 "), "{listed}");
}

#[test]
fn without_ipvs_the_errors_say_so() {
    if !root_or_skip("without_ipvs_the_errors_say_so") {
        return;
    }
    if routemesh_lb::ipvs_available().is_ok() {
        eprintln!("SKIPPED: this kernel has IPVS");
        return;
    }
    let message = routemesh_lb::ipvs_available().unwrap_err().to_string();
    assert!(
        message.starts_with("IPVS is not available: this kernel has no IPVS"),
        "{message}"
    );
    assert!(message.contains("modprobe ip_vs"), "{message}");
    let ns = Netns::new(&unique("prep")).unwrap();
    let err = routemesh_lb::prepare_namespace(&ns.path(), Timeouts::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "preparing IPVS in {}: IPVS is not available",
            ns.path().display()
        )),
        "{err}"
    );
    let err = routemesh_lb::prepare_namespace(
        &ns.path(),
        Timeouts {
            tcp: 0,
            ..Timeouts::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "IPVS tcp timeout 0 s: must be 1-2000000 seconds"
    );
}
