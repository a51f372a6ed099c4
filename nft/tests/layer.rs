//! The nft layer on its own: what the renderer spells, what the check refuses, what the diff
//! sends, what the fake records, and a packet followed across three namespaces.

use std::net::Ipv4Addr;

use routemesh_nft::trace::net::Iface;
use routemesh_nft::trace::{End, Flow, Network, Ruleset};
use routemesh_nft::*;
use routemesh_types::Proto;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A router table: published port 8080 DNATed to a server, masquerade out of `wan`.
fn router(server: &str, ports: &[u16]) -> Table {
    let mut t = Table::new("edge");
    t.collections.push(
        Collection::set(
            "ports",
            KeyDecl::Type(vec![DataType::InetProto, DataType::InetService]),
        )
        .with_elements(
            ports
                .iter()
                .map(|p| Element::key(vec![Value::Proto(Proto::Tcp), Value::Port(*p)]))
                .collect(),
        ),
    );
    t.chains.push(Chain::base(
        "pre",
        BaseChain::new(ChainType::Nat, Hook::Prerouting, Priority::Dstnat),
        vec![Rule::new(
            vec![
                Match::Eq(Expr::FibDaddrType, Value::AddrType(AddrType::Local)),
                Match::InSet(vec![Expr::L4proto, Expr::Dport], "ports".into()),
            ],
            vec![Stmt::DnatTo {
                addr: ip(server),
                port: Some(80),
            }],
        )],
    ));
    t.chains.push(Chain::base(
        "post",
        BaseChain::new(ChainType::Nat, Hook::Postrouting, Priority::Srcnat),
        vec![Rule::new(
            vec![
                Match::Eq(Expr::CtStatus, Value::CtStatus(CtStatus::Dnat)),
                Match::Ne(Expr::Iifname, Value::Iface("lo".into())),
            ],
            vec![Stmt::Masquerade],
        )],
    ));
    t
}

#[test]
fn renders_every_form_and_the_tracer_reads_it_back() {
    let t = router("10.0.2.10", &[8080, 8443]);
    let script = t.full_sync_script();
    assert_eq!(
        script,
        "add table ip edge\n\
         delete table ip edge\n\
         table ip edge {\n\
         \tset ports {\n\
         \t\ttype inet_proto . inet_service\n\
         \t\telements = {\n\
         \t\t\ttcp . 8080,\n\
         \t\t\ttcp . 8443\n\
         \t\t}\n\
         \t}\n\
         \tchain pre {\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tfib daddr type local meta l4proto . th dport @ports dnat ip to 10.0.2.10:80\n\
         \t}\n\
         \tchain post {\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tct status dnat iifname != \"lo\" masquerade\n\
         \t}\n\
         }\n"
    );
    Ruleset::parse(&script).unwrap();
}

#[test]
fn check_refuses_what_nft_would_misread() {
    let fake = FakeNft::new();
    let mut bad_name = router("10.0.2.10", &[8080]);
    bad_name.name = "edge; flush ruleset".into();
    let mut bad_iface = router("10.0.2.10", &[8080]);
    bad_iface.chains[1].rules[0].matches[1] =
        Match::Ne(Expr::Iifname, Value::Iface("x\" accept".into()));
    let mut bad_priority = router("10.0.2.10", &[8080]);
    if let Some(base) = bad_priority.chains[0].base.as_mut() {
        base.hook = Hook::Output;
    }
    for (what, table) in [
        ("name", bad_name),
        ("interface", bad_iface),
        ("priority", bad_priority),
    ] {
        let err = fake.apply(&Transaction::replace(table)).unwrap_err();
        assert!(matches!(err, NftError::Invalid { .. }), "{what}: {err}");
    }
    // Nothing was sent for them.
    assert!(fake.transactions().is_empty());
    assert!(fake
        .apply(&Transaction::replace(router("10.0.2.10", &[8080])))
        .is_ok());
}

#[test]
fn diff_sends_only_changed_elements_and_refuses_base_chain_changes() {
    let old = router("10.0.2.10", &[8080, 8443]);
    let new = router("10.0.2.10", &[8080, 9000]);
    let txn = diff::incremental(&old, &new).unwrap();
    assert_eq!(
        txn.render(),
        "delete element ip edge ports { tcp . 8443 }\n\
         add element ip edge ports { tcp . 9000 }\n"
    );
    assert_eq!((txn.elements_added(), txn.elements_removed()), (1, 1));
    assert!(diff::incremental(&old, &old).unwrap().is_empty());
    // A changed rule: its chain is flushed and refilled.
    let moved = router("10.0.2.11", &[8080, 8443]);
    assert_eq!(
        diff::incremental(&old, &moved).unwrap().render(),
        "flush chain ip edge pre\n\
         add rule ip edge pre fib daddr type local meta l4proto . th dport @ports dnat ip to 10.0.2.11:80\n"
    );
    let mut other_hook = router("10.0.2.10", &[8080]);
    if let Some(base) = other_hook.chains[1].base.as_mut() {
        base.priority = Priority::Num(110);
    }
    assert!(diff::incremental(&old, &other_hook).is_none());
}

#[test]
fn the_fake_records_fails_on_demand_and_keeps_what_nft_would_hold() {
    let fake = FakeNft::new();
    fake.fail_next("Error: injected");
    let txn = Transaction::replace(router("10.0.2.10", &[8080]));
    let err = fake.apply(&txn).unwrap_err();
    assert_eq!(err.to_string(), "Error: injected");
    assert!(fake.ruleset().table_names().is_empty());
    fake.apply(&txn).unwrap();
    assert_eq!(fake.ruleset().table_names(), ["edge"]);
    assert_eq!(fake.scripts().len(), 2);
    // Deleting an element that is not there is refused, as nft refuses it.
    let mut gone = Transaction::new();
    gone.push(Op::DeleteElements {
        table: "edge".into(),
        collection: "ports".into(),
        keys: vec![vec![Value::Proto(Proto::Tcp), Value::Port(1)]],
    });
    assert!(matches!(fake.apply(&gone), Err(NftError::Rejected { .. })));
}

fn iface(name: &str, addr: &str, segment: &str) -> Iface {
    Iface {
        name: name.into(),
        addrs: vec![addr.parse().unwrap()],
        segment: segment.into(),
    }
}

/// client (wan) -- router (DNAT 8080 -> server:80, masquerade) -- server (lan)
fn network(router_forwards: bool) -> Network {
    let mut net = Network::new();
    let client = net.add("client", "a", Ruleset::default());
    client.ifaces.push(iface("eth0", "192.0.2.2/24", "wan"));
    let rules = Ruleset::parse(&router("10.0.2.10", &[8080]).full_sync_script()).unwrap();
    let r = net.add("router", "a", rules);
    r.forwarding = router_forwards;
    r.ifaces.push(iface("wan0", "192.0.2.1/24", "wan"));
    r.ifaces.push(iface("lan0", "10.0.2.1/24", "lan"));
    let server = net.add("server", "a", Ruleset::default());
    server.ifaces.push(iface("eth0", "10.0.2.10/24", "lan"));
    server.default_via = Some(ip("10.0.2.1"));
    net
}

fn flow(dst: &str, dport: u16) -> Flow {
    Flow {
        src: ip("192.0.2.2"),
        dst: ip(dst),
        proto: Proto::Tcp,
        dport,
    }
}

#[test]
fn a_packet_crosses_namespaces_by_address() {
    let net = network(true);
    let ways = net.send("client", flow("192.0.2.1", 8080)).unwrap();
    assert_eq!(ways.len(), 1);
    let way = &ways[0];
    assert_eq!(way.end, End::Delivered("server".into()));
    assert_eq!(
        (way.src, way.dst, way.dport),
        (ip("10.0.2.1"), ip("10.0.2.10"), 80)
    );
    let names: Vec<&str> = way.hops.iter().map(|h| h.ns.as_str()).collect();
    assert_eq!(names, ["client", "router", "server"]);
    assert_eq!(way.hops[1].dnat, Some((ip("10.0.2.10"), 80)));
    assert_eq!(way.hops[1].snat, Some(ip("10.0.2.1")));

    // Not a published port: the router itself takes it.
    let local = net.send("client", flow("192.0.2.1", 22)).unwrap();
    assert_eq!(local[0].end, End::Delivered("router".into()));
    // No route from the client to the LAN.
    let lan = net.send("client", flow("10.0.2.10", 80)).unwrap();
    assert_eq!(lan[0].end, End::Unroutable("client".into()));
    // A router that does not forward drops what it would DNAT.
    let off = network(false)
        .send("client", flow("192.0.2.1", 8080))
        .unwrap();
    assert_eq!(off[0].end, End::Dropped("router".into()));
}
