//! Table-driven traces through the rendered ruleset: every path a packet can take.

mod common;

use common::*;
use routemesh_lb::nftables::{plan, plan_keeping};
use routemesh_lb::{NftBackend, Proto, Snat, ValidLbSpec};
use routemesh_nft::trace::{DnatTarget, Packet, RejectKind, Ruleset, SourceNat, Trace, Verdict};
use routemesh_nft::FakeNft;

fn ruleset(spec: &ValidLbSpec) -> Ruleset {
    Ruleset::parse(&plan(spec).full_sync_script()).unwrap()
}

fn pkt(dst: &str, proto: Proto, dport: u16, dst_local: bool) -> Packet {
    Packet {
        src: ip("10.9.0.1"),
        dst: ip(dst),
        proto,
        dport,
        dst_local,
        locally_generated: false,
    }
}

fn dnat(targets: &[(&str, u16, u32)]) -> Verdict {
    Verdict::Dnat {
        slots: targets.iter().map(|t| t.2).sum(),
        targets: targets
            .iter()
            .map(|&(addr, port, slots)| DnatTarget {
                addr: ip(addr),
                port,
                slots,
            })
            .collect(),
    }
}

#[test]
fn packet_paths() {
    use Proto::{Tcp, Udp};
    let masq = Some(SourceNat::Masquerade);
    let three = [
        ("10.1.0.1", 8080, 1),
        ("10.1.0.2", 8080, 1),
        ("10.1.0.3", 8080, 1),
    ];
    let cases: Vec<(&str, Packet, Verdict, Option<SourceNat>)> = vec![
        (
            "vip hit",
            pkt("10.0.0.2", Tcp, 80, true),
            dnat(&three),
            masq,
        ),
        (
            "vip not local still hit",
            pkt("10.0.0.2", Tcp, 80, false),
            dnat(&three),
            masq,
        ),
        (
            "vip other port",
            pkt("10.0.0.2", Tcp, 81, true),
            Verdict::Accept,
            None,
        ),
        (
            "vip other proto",
            pkt("10.0.0.2", Udp, 80, true),
            Verdict::Accept,
            None,
        ),
        (
            "unknown address",
            pkt("10.0.0.99", Tcp, 80, false),
            Verdict::Accept,
            None,
        ),
        (
            "udp vip",
            pkt("10.0.0.3", Udp, 53, true),
            dnat(&[("10.1.0.4", 53, 1), ("10.1.0.5", 53, 1)]),
            masq,
        ),
        (
            "weights and a draining backend",
            pkt("10.0.0.4", Tcp, 80, true),
            dnat(&[("10.1.0.1", 80, 1), ("10.1.0.3", 80, 2)]),
            masq,
        ),
        (
            "all backends draining",
            pkt("10.0.0.5", Tcp, 80, true),
            Verdict::Reject(RejectKind::TcpReset),
            None,
        ),
        (
            "no backend tcp",
            pkt("10.0.0.6", Tcp, 443, true),
            Verdict::Reject(RejectKind::TcpReset),
            None,
        ),
        (
            "no backend udp",
            pkt("10.0.0.7", Udp, 53, true),
            Verdict::Reject(RejectKind::PortUnreachable),
            None,
        ),
        (
            "published on a local address",
            pkt("172.18.0.2", Tcp, 8080, true),
            dnat(&[("10.255.0.7", 80, 1), ("10.255.0.8", 80, 1)]),
            masq,
        ),
        (
            "published port on a VIP address is still published",
            pkt("10.0.0.2", Tcp, 8080, true),
            dnat(&[("10.255.0.7", 80, 1), ("10.255.0.8", 80, 1)]),
            masq,
        ),
        (
            "published port, destination elsewhere",
            pkt("192.168.1.1", Tcp, 8080, false),
            Verdict::Accept,
            None,
        ),
        (
            "published udp",
            pkt("172.18.0.2", Udp, 9053, true),
            dnat(&[("10.255.0.9", 53, 1)]),
            masq,
        ),
        (
            "published without backend",
            pkt("172.18.0.2", Tcp, 9999, true),
            Verdict::Reject(RejectKind::TcpReset),
            None,
        ),
        (
            "published without backend, destination elsewhere",
            pkt("192.168.1.1", Tcp, 9999, false),
            Verdict::Accept,
            None,
        ),
        (
            "locally generated to a vip",
            Packet {
                locally_generated: true,
                ..pkt("10.0.0.2", Tcp, 80, false)
            },
            dnat(&three),
            masq,
        ),
        (
            "locally generated to a vip without backend",
            Packet {
                locally_generated: true,
                ..pkt("10.0.0.6", Tcp, 443, false)
            },
            Verdict::Reject(RejectKind::TcpReset),
            None,
        ),
    ];
    let rs = ruleset(&fixture());
    for (name, packet, verdict, snat) in cases {
        let trace = rs.trace(&packet).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(trace.verdict, verdict, "{name}: {trace:?}");
        assert_eq!(trace.snat, snat, "{name}: {trace:?}");
    }
}

/// Address-only VIPs: any protocol and port to the address, DNAT of the address only.
#[test]
fn address_only_vip_paths() {
    use Proto::{Tcp, Udp};
    let masq = Some(SourceNat::Masquerade);
    // The packet's port is kept: each target carries the port the packet was sent to.
    let three = |port| {
        dnat(&[
            ("10.2.0.1", port, 1),
            ("10.2.0.2", port, 1),
            ("10.2.0.3", port, 1),
        ])
    };
    let cases: Vec<(&str, Packet, Verdict, Option<SourceNat>)> = vec![
        ("tcp 80", pkt("10.0.0.20", Tcp, 80, true), three(80), masq),
        (
            "tcp 443",
            pkt("10.0.0.20", Tcp, 443, true),
            three(443),
            masq,
        ),
        (
            "tcp high port",
            pkt("10.0.0.20", Tcp, 65535, false),
            three(65535),
            masq,
        ),
        ("udp 53", pkt("10.0.0.20", Udp, 53, true), three(53), masq),
        ("udp 1", pkt("10.0.0.20", Udp, 1, true), three(1), masq),
        (
            "weights and a draining backend, port kept",
            pkt("10.0.0.21", Udp, 5353, true),
            dnat(&[("10.2.0.1", 5353, 1), ("10.2.0.3", 5353, 2)]),
            masq,
        ),
        (
            "all backends draining, tcp",
            pkt("10.0.0.22", Tcp, 8443, true),
            Verdict::Reject(RejectKind::TcpReset),
            None,
        ),
        (
            "all backends draining, udp",
            pkt("10.0.0.22", Udp, 53, true),
            Verdict::Reject(RejectKind::PortUnreachable),
            None,
        ),
        (
            "no backend tcp, any port",
            pkt("10.0.0.23", Tcp, 22, true),
            Verdict::Reject(RejectKind::TcpReset),
            None,
        ),
        (
            "no backend udp, any port",
            pkt("10.0.0.23", Udp, 4789, true),
            Verdict::Reject(RejectKind::PortUnreachable),
            None,
        ),
        (
            "address-only VIP wins over a published port on its address",
            pkt("10.0.0.24", Tcp, 8080, true),
            dnat(&[("10.2.0.4", 8080, 1)]),
            masq,
        ),
        (
            "neighbouring address untouched",
            pkt("10.0.0.25", Tcp, 80, false),
            Verdict::Accept,
            None,
        ),
        (
            "locally generated",
            Packet {
                locally_generated: true,
                ..pkt("10.0.0.20", Udp, 9000, false)
            },
            three(9000),
            masq,
        ),
        (
            "locally generated without backend",
            Packet {
                locally_generated: true,
                ..pkt("10.0.0.23", Tcp, 80, false)
            },
            Verdict::Reject(RejectKind::TcpReset),
            None,
        ),
    ];
    let rs = ruleset(&fixture());
    for (name, packet, verdict, snat) in cases {
        let trace = rs.trace(&packet).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(trace.verdict, verdict, "{name}: {trace:?}");
        assert_eq!(trace.snat, snat, "{name}: {trace:?}");
    }
}

#[test]
fn chains_walked_for_a_vip_hit() {
    let trace: Trace = ruleset(&fixture())
        .trace(&pkt("10.0.0.2", Proto::Tcp, 80, true))
        .unwrap();
    assert_eq!(
        trace.chains,
        vec![
            "filter_prerouting",
            "nat_prerouting",
            "services",
            "vip_2",
            "vip_3",
            "nat_postrouting"
        ]
    );
}

#[test]
fn chains_walked_for_an_address_only_vip_hit() {
    let trace: Trace = ruleset(&fixture())
        .trace(&pkt("10.0.0.20", Proto::Udp, 53, true))
        .unwrap();
    assert_eq!(
        trace.chains,
        vec![
            "filter_prerouting",
            "nat_prerouting",
            "services",
            "vip_2",
            "vip_3",
            "vipa_1",
            "vipa_3",
            "nat_postrouting"
        ]
    );
}

#[test]
fn snat_to_a_fixed_address() {
    let spec = valid(Snat::To(ip("10.0.1.250")), services());
    let trace = ruleset(&spec)
        .trace(&pkt("10.0.0.2", Proto::Tcp, 80, true))
        .unwrap();
    assert_eq!(trace.snat, Some(SourceNat::To(ip("10.0.1.250"))));
}

#[test]
fn many_weights_spread_by_slot() {
    let spec = valid(
        Snat::Masquerade,
        vec![vip(
            "10.0.0.2",
            80,
            Proto::Tcp,
            vec![
                be("10.1.0.1", 80, 10),
                be("10.1.0.2", 80, 30),
                be("10.1.0.3", 80, 1000),
            ],
        )],
    );
    let trace = ruleset(&spec)
        .trace(&pkt("10.0.0.2", Proto::Tcp, 80, true))
        .unwrap();
    let Verdict::Dnat { targets, slots } = trace.verdict else {
        panic!("{trace:?}");
    };
    assert_eq!(slots, 64);
    let counts: Vec<u32> = targets.iter().map(|t| t.slots).collect();
    // gcd 10 -> 1:3:100, normalised to 64 slots by largest remainder.
    assert_eq!(counts, vec![1, 3, 60]);
}

#[test]
fn tracer_refuses_what_it_does_not_understand() {
    let full = plan(&fixture()).full_sync_script();
    let cases = [
        (
            "limit",
            full.replace(
                "ct status dnat masquerade",
                "ct status dnat limit rate 10/second masquerade",
            ),
        ),
        ("log", full.replace("jump services", "log jump services")),
        ("other command", format!("{full}list ruleset\n")),
        (
            "named priority",
            full.replace("priority -100", "priority dstnat"),
        ),
        (
            "unknown set type",
            full.replace("inet_proto . inet_service", "ether_addr"),
        ),
    ];
    for (name, text) in cases {
        assert!(Ruleset::parse(&text).is_err(), "{name} was accepted");
    }
    // Failing at trace time: a map hole would let some slots fall through.
    let holed = full.replace("\t\t\t10.0.0.2 . tcp . 80 . 1 : 10.1.0.2 . 8080,\n", "");
    let err = Ruleset::parse(&holed)
        .unwrap()
        .trace(&pkt("10.0.0.2", Proto::Tcp, 80, true))
        .unwrap_err();
    assert!(
        err.to_string().contains("slot 1 of 3 would fall through"),
        "{err}"
    );
}

/// Incremental scripts applied on top of the full one must give exactly the table a full sync
/// of the final spec gives, through every kind of change.
#[test]
fn incremental_syncs_converge_to_full() {
    use Proto::Tcp;
    let steps: Vec<ValidLbSpec> = vec![
        fixture(),
        // one backend swapped
        valid(Snat::Masquerade, {
            let mut s = services();
            s[0].backends[2] = be("10.1.0.9", 8080, 1);
            s
        }),
        // scale 3 -> 4 (new group), 2-backend service gone (group emptied)
        valid(Snat::Masquerade, {
            let mut s = services();
            s[0].backends.push(be("10.1.0.10", 8080, 1));
            s.remove(1);
            s
        }),
        // everything draining, plus a brand-new service
        valid(Snat::To(ip("10.0.1.250")), {
            let mut s = services();
            for svc in &mut s {
                for b in &mut svc.backends {
                    b.weight = 0;
                }
            }
            s.push(vip("10.0.0.50", 80, Tcp, vec![be("10.1.0.50", 80, 1)]));
            s
        }),
        valid(Snat::Masquerade, vec![]),
        fixture(),
        // address-only VIP: one backend swapped (elements only)
        valid(Snat::Masquerade, {
            let mut s = services();
            let i = s.len() - 5;
            s[i].backends[1] = be("10.2.0.9", 0, 1);
            s
        }),
        // address-only VIP scaled 3 -> 4 (new group), the 1-slot one gone (group emptied),
        // the backendless one given a backend (out of no_backend_vipa)
        valid(Snat::Masquerade, {
            let mut s = services();
            let i = s.len() - 5;
            s[i].backends.push(be("10.2.0.10", 0, 1));
            s.pop();
            let last = s.len() - 1;
            s[last].backends.push(be("10.2.0.11", 0, 1));
            s
        }),
        fixture(),
    ];
    let mut backend = NftBackend::new(FakeNft::new());
    let mut applied = Ruleset::default();
    for (i, spec) in steps.iter().enumerate() {
        backend.sync(spec).unwrap();
        if let Some(script) = backend.nft().last_script() {
            applied
                .apply(&script)
                .unwrap_or_else(|e| panic!("step {i}: {e}\n{script}"));
        }
        // The whole plan, with the groups that emptied on the way kept (until full syncs).
        let kept = plan_keeping(spec, &backend.empty_groups());
        assert_eq!(
            applied,
            Ruleset::parse(&kept.full_sync_script()).unwrap(),
            "step {i}"
        );
    }
    assert_eq!(backend.nft().scripts().len(), steps.len());
}

#[test]
fn removed_service_leaves_no_element() {
    let mut backend = NftBackend::new(FakeNft::new());
    let mut applied = Ruleset::default();
    backend.sync(&fixture()).unwrap();
    applied
        .apply(&backend.nft().last_script().unwrap())
        .unwrap();
    let mut s = services();
    s.remove(0);
    backend.sync(&valid(Snat::Masquerade, s)).unwrap();
    applied
        .apply(&backend.nft().last_script().unwrap())
        .unwrap();
    let left: Vec<String> = applied
        .elements()
        .into_iter()
        .filter(|e| e.contains("Addr(10.0.0.2)") || e.contains("Addr(10.1.0.1), Port(8080)"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
